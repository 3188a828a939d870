"""Tests for avaf.extract.decode.backends (DESIGN.md §3 "Sampling" and "Decoding").

Generated clips (PyAV's encoders) carry their own ground truth: frame i is coloured with its index (red and
green, 16 levels each) and its second (blue), and second t of audio is a pure tone of a known frequency.
Real clips are in tests/data/videos/ (see SOURCE.md there). The clip generator is
`write_clip` in conftest.py (the pipeline tests use it too).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avaf.extract.decode import backends as dec
from avaf.extract.decode.backends import (
    DecodeError,
    decode_video,
    decode_with_fallback,
    find_media,
    scan_media,
    video_id,
)
from avaf.extract.decode.sampling import NearestFramePicker, clip_resize, nearest_indices, whole_seconds
from avaf.extract.decode.worker import IsolatedDecoder, decode_isolated

from conftest import AMP, TONES, write_audio_only, write_clip

VIDEOS = Path(__file__).parent / "data" / "videos"
SR = 16_000
# decord is an optional extra (wheels for x86-64 Linux and Windows only); its cases skip where it is missing
needs_decord = pytest.mark.skipif(
    dec.backend_problem("decord") is not None, reason="decord: pip install 'avaf[decord]'"
)
DECORD = pytest.param("decord", marks=needs_decord)
AUTO_ORDER = ("pyav", "decord")  # what "auto" tries, in order


def frame_index(frame: np.ndarray) -> int:
    r, g, _ = frame[80:144, 80:144].reshape(-1, 3).mean(axis=0)
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * SR / len(samples)


def audio_lag(audio: np.ndarray) -> int:
    """Samples by which decoded audio (T, 16000) lags the tones written into the clip (+-20 ms searched)."""
    decoded = audio.reshape(-1).astype(np.float64)
    t = np.arange(len(decoded)) / SR
    written = AMP * np.sin(2 * np.pi * np.asarray(TONES)[np.minimum(t.astype(int), len(TONES) - 1)] * t)
    lags = np.arange(-320, 321)
    inner = slice(400, len(decoded) - 400)
    score = [np.dot(np.roll(decoded, -lag)[inner], written[inner]) for lag in lags]
    return int(lags[int(np.argmax(score))])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "five": write_clip(root / "five.mp4", 5),
        "three": write_clip(root / "three.mp4", 3, fps=30),
        "pcm": write_clip(root / "pcm.mkv", 3, acodec="pcm_s16le"),
        "ts": write_clip(root / "five.ts", 5, fmt="mpegts"),
        "avi": write_clip(root / "five.avi", 5, acodec="mp3"),
        "short_audio": write_clip(root / "short_audio.mp4", 4, audio_seconds=2.3),
        "tiny": write_clip(root / "tiny.mp4", 0.4),
    }


@pytest.fixture(scope="module")
def isolated():
    with IsolatedDecoder() as decoder:
        yield decoder


# --- sampling rules ---------------------------------------------------------------------------------------


def test_whole_seconds_forgives_under_one_frame():
    assert [whole_seconds(d) for d in (0.4, 0.94, 1.0, 59.993, 60.0, 60.9)] == [0, 0, 1, 60, 60, 60]


def test_nearest_indices_prefers_the_earlier_frame_on_a_tie():
    times = np.arange(125) / 25  # 25 fps: t + 0.5 lies exactly between frames 25t + 12 and 25t + 13
    assert nearest_indices(times, np.arange(5) + 0.5).tolist() == [12, 37, 62, 87, 112]
    assert nearest_indices(np.array([0.1, 0.9, 2.7]), np.array([0.5, 1.5, 2.5])).tolist() == [0, 1, 2]


def test_streaming_picker_equals_nearest_indices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        times = np.sort(rng.uniform(0, 10, rng.integers(3, 60)))
        picker = NearestFramePicker(10, convert=lambda i: np.array([i]))
        for i, t in enumerate(times):
            picker.feed(float(t), i)
        frames, _ = picker.finish(10)
        assert frames[:, 0].tolist() == nearest_indices(times, np.arange(10) + 0.5).tolist()


def test_clip_resize_equals_open_clip_preprocess():
    open_clip = pytest.importorskip("open_clip")
    preprocess = open_clip.image_transform(224, is_train=False)
    mean, std = np.array(preprocess.transforms[-1].mean), np.array(preprocess.transforms[-1].std)
    rng = np.random.default_rng(1)
    for height, width in [(360, 640), (300, 200), (224, 224), (101, 333)]:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours = (clip_resize(rgb, 224) / 255.0 - mean) / std  # (224, 224, 3)
        theirs = preprocess(Image.fromarray(rgb)).numpy().transpose(1, 2, 0)
        assert ours.shape == (224, 224, 3)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


# --- generated clips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["pyav", DECORD])
def test_frames_and_audio_align_second_by_second(clips, backend):
    video = decode_video(clips["five"], backend=backend)
    assert video.decoder == backend and video.num_seconds == 5
    # the frame nearest t + 0.5 at 25 fps is frame 25t + 12 (t + 0.48 s; the earlier one of a tie)
    assert [frame_index(f) for f in video.frames] == [25 * t + 12 for t in range(5)]
    np.testing.assert_allclose(video.timestamps, np.arange(5) + 0.48, atol=1e-6)
    blue = video.frames[:, 80:144, 80:144, 2].mean(axis=(1, 2))
    np.testing.assert_allclose(blue, 40 * np.arange(5) + 20, atol=4)
    assert video.audio_valid.all() and video.has_audio
    for t, tone in enumerate(TONES):
        assert abs(dominant_hz(video.audio[t]) - tone) <= 1.0
        rms = np.sqrt(np.mean(video.audio[t, 2000:14000] ** 2))
        assert rms == pytest.approx(AMP / np.sqrt(2), rel=0.05)  # stereo averaged, not summed
    assert abs(audio_lag(video.audio)) <= 16  # AAC priming handled: within 1 ms of where it was written


def test_three_second_clip_gives_three_frames_and_48000_samples(clips):
    video = decode_video(clips["three"])
    assert video.frames.shape == (3, 224, 224, 3) and video.frames.dtype == np.uint8
    assert video.audio.shape == (3, SR) and video.audio.size == 48_000 and video.audio.dtype == np.float32
    assert video.audio_valid.tolist() == [True] * 3
    assert video.timestamps.tolist() == [0.5, 1.5, 2.5]  # 30 fps: frames exactly at t + 0.5
    assert [frame_index(f) for f in video.frames] == [15, 45, 75]
    assert video.duration == pytest.approx(3.0) and video.streams["fps"] == 30.0


def test_resampled_audio_matches_librosa(clips):
    librosa = pytest.importorskip("librosa")
    video = decode_video(clips["pcm"], backend="pyav")
    n = np.arange(3 * 44100)
    original = AMP * np.sin(2 * np.pi * np.asarray(TONES)[n // 44100] * n / 44100)
    reference = librosa.resample(original, orig_sr=44100, target_sr=SR)[: 3 * SR]
    ours = video.audio.reshape(-1)
    inner = slice(200, 3 * SR - 200)
    assert np.sqrt(np.mean((ours[inner] - reference[inner]) ** 2)) < 0.005  # 16-bit PCM, two resamplers
    assert np.corrcoef(ours[inner], reference[inner])[0, 1] > 0.999


def test_audio_shorter_than_video_is_zero_and_flagged(clips):
    video = decode_video(clips["short_audio"])
    assert video.num_seconds == 4 and video.has_audio
    assert video.audio_valid.tolist() == [True, True, False, False]  # 2.3 s of audio: second 2 is 30% covered
    assert np.abs(video.audio[1]).max() > 0.4
    assert not video.audio[2, int(0.4 * SR) :].any() and not video.audio[3].any()


@needs_decord
@pytest.mark.parametrize("name, container", [("ts", "mpegts"), ("avi", "avi")])
def test_containers_decord_gets_wrong_are_served_by_pyav(clips, name, container):
    with pytest.raises(DecodeError, match=f"wrong frames from {container}"):
        decode_video(clips[name], backend="decord")
    video = decode_with_fallback(clips[name], order=("decord", "pyav"))
    assert video.decoder == "pyav"
    # AVI: H.264 B-frames come out with scrambled pts, so frames are timed by their output index
    assert [frame_index(f) for f in video.frames] == [25 * t + 12 for t in range(5)]
    assert [round(dominant_hz(second)) for second in video.audio] == [round(f) for f in TONES]


# --- real files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["pyav", DECORD])
def test_nasa_clip_takes_the_best_streams(backend):
    video = decode_video(VIDEOS / "nasa_13013.mp4", backend=backend)
    assert video.num_seconds == 13 and video.frames.shape == (13, 224, 224, 3)
    streams = video.streams
    assert (streams["video_streams"], streams["audio_streams"]) == (2, 2)
    assert (streams["video_index"], streams["width"], streams["height"]) == (3, 480, 270)
    assert (streams["audio_index"], streams["sample_rate"], streams["channels"]) == (4, 16000, 2)
    assert video.has_audio and video.audio_valid.all()
    rms = np.sqrt((video.audio.astype(np.float64) ** 2).mean(axis=1))
    assert (rms > 0.01).sum() >= 10  # real sound in most seconds
    np.testing.assert_allclose(video.timestamps, (np.arange(13) * 30 + 15) * 1001 / 30000, atol=1e-6)
    assert video.frames.std() > 10


@needs_decord
def test_both_backends_give_the_same_nasa_frames():
    pyav = decode_video(VIDEOS / "nasa_13013.mp4", backend="pyav")
    decord = decode_video(VIDEOS / "nasa_13013.mp4", backend="decord")
    assert np.abs(pyav.frames.astype(int) - decord.frames).mean() < 1.0
    np.testing.assert_array_equal(pyav.audio, decord.audio)


@needs_decord
def test_av1_falls_back_to_pyav_and_has_no_audio():
    with pytest.raises(DecodeError, match="decord cannot open it"):
        decode_video(VIDEOS / "av1_video.mkv", backend="decord")
    fallback = decode_with_fallback(VIDEOS / "av1_video.mkv", order=("decord", "pyav"))
    for video in (decode_video(VIDEOS / "av1_video.mkv"), fallback):
        assert video.decoder == "pyav" and video.num_seconds == 5
        assert video.frames.shape == (5, 224, 224, 3) and video.frames.std() > 5
        assert not video.has_audio and not video.audio.any() and not video.audio_valid.any()
        assert video.streams["video_codec"] == "libdav1d"


@pytest.mark.parametrize("name, pix_fmt", [("h265_video.mp4", "yuv420p"), ("h264_10bits.mp4", "yuv420p10le")])
@pytest.mark.parametrize("backend", ["pyav", DECORD])
def test_hevc_and_10_bit_clips_decode(name, pix_fmt, backend):
    video = decode_video(VIDEOS / name, backend=backend)
    assert video.num_seconds == 1 and video.frames.shape == (1, 224, 224, 3)
    assert video.streams["pix_fmt"] == pix_fmt and video.frames.std() > 5
    assert not video.has_audio


# --- audio-only files ------------------------------------------------------------------------------------


def test_wav_loads_through_librosa_without_frames(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    n = np.arange(int(2.5 * 22050))
    soundfile.write(tmp_path / "tone.wav", 0.4 * np.sin(2 * np.pi * 1000 * n / 22050), 22050)
    audio = decode_video(tmp_path / "tone.wav")
    assert audio.decoder == "librosa" and not audio.has_video and audio.has_audio
    assert audio.frames.shape == (0, 224, 224, 3) and audio.audio.shape == (2, SR)
    assert audio.audio_valid.tolist() == [True, True]
    assert abs(dominant_hz(audio.audio[1]) - 1000) <= 1
    assert np.abs(audio.audio).max() == pytest.approx(0.4, rel=0.02)


def test_m4a_loads_without_a_video_stream(tmp_path):
    with av.open(str(tmp_path / "song.m4a"), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        for start in range(0, 3 * 44100, 1024):
            wave = 0.3 * np.sin(2 * np.pi * 660 * np.arange(start, start + 1024) / 44100)
            frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    audio = decode_video(tmp_path / "song.m4a")
    assert audio.decoder in ("librosa", "pyav") and not audio.has_video
    assert audio.num_seconds == 3 and audio.audio_valid.all()
    assert [round(dominant_hz(s)) for s in audio.audio] == [660] * 3


# --- bad inputs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clips) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n" * 50)
    nasa = (VIDEOS / "nasa_13013.mp4").read_bytes()
    (root / "half.mp4").write_bytes(nasa[: len(nasa) // 2])
    write_audio_only(root / "sound.mp4")  # audio only, behind a video extension
    return {
        "zero-byte": (root / "empty.mp4", "zero-byte file"),
        "text": (root / "notes.mp4", "not a readable media file"),
        "truncated": (root / "half.mp4", "truncated"),
        "short": (clips["tiny"], "shorter than one second"),
        "missing": (root / "nowhere.mp4", "cannot read the file"),
        "no video": (root / "sound.mp4", "no video stream"),
    }


@pytest.mark.parametrize("case", ["zero-byte", "text", "truncated", "short", "missing", "no video"])
@pytest.mark.parametrize("how", ["in-process", "isolated"])
def test_bad_inputs_raise_decode_error_naming_the_file(bad_files, case, how):
    path, problem = bad_files[case]
    with pytest.raises(DecodeError) as caught:
        if how == "isolated":
            decode_isolated(path, timeout_s=60)
        else:
            decode_video(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_truncated_file_with_its_index_up_front(tmp_path):
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        noise = np.random.default_rng(0).integers(0, 256, (150, 48, 64, 3), dtype=np.uint8)
        for image in noise:  # noise, so the bytes are spread evenly over the 6 s
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"truncated: the header declares 6.000 s but the video frames end"):
        decode_video(tmp_path / "cut.mp4", backend="pyav")


def test_unknown_backend_is_a_value_error(clips):
    with pytest.raises(ValueError, match="unknown backend"):
        decode_video(clips["three"], backend="opencv")


# --- isolation -------------------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A named pipe nobody writes to: opening it blocks for ever, inside the real decoder."""
    path = tmp_path / "stalled.mp4"
    os.mkfifo(path)
    return path


def test_isolated_result_equals_in_process(clips, isolated):
    here, there = decode_video(clips["five"]), isolated.decode(clips["five"], timeout_s=60)
    np.testing.assert_array_equal(here.frames, there.frames)
    np.testing.assert_array_equal(here.audio, there.audio)
    assert there.decoder == here.decoder == AUTO_ORDER[0]
    assert decode_isolated(clips["three"], timeout_s=60).num_seconds == 3  # the shared per-process decoder


def test_a_hung_decoder_times_out_and_the_next_video_decodes(fifo, clips, isolated):
    started = time.monotonic()
    with pytest.raises(DecodeError, match=r"stalled.mp4: pyav: timed out after 1.5 s"):
        isolated.decode(fifo, timeout_s=1.5, backend="pyav")
    assert 1.5 <= time.monotonic() - started < 10
    assert isolated.decode(clips["three"], timeout_s=60).num_seconds == 3


def test_auto_retries_a_timeout_with_the_other_backend(fifo, isolated):
    with pytest.raises(DecodeError) as caught:
        isolated.decode(fifo, timeout_s=1.0)
    message = str(caught.value)
    assert f"{AUTO_ORDER[0]}: timed out after 1 s; {AUTO_ORDER[1]}: timed out after 1 s" in message


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_a_crashed_decoder_costs_one_video(fifo, clips, signum):
    with IsolatedDecoder() as decoder:
        decoder.decode(clips["three"], timeout_s=60)  # the child is up
        first_pid, outcome = decoder.pid, {}

        def run() -> None:
            try:
                decoder.decode(fifo, timeout_s=60, backend="pyav")
            except DecodeError as err:
                outcome["error"] = str(err)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)  # the child is now blocked opening the pipe
        os.kill(first_pid, signum)
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert f"decoder crashed (killed by signal {signum.name})" in outcome["error"]
        assert decoder.decode(clips["three"], timeout_s=60).num_seconds == 3
        assert decoder.pid != first_pid


def _make_backend_segfault(backend: str) -> None:
    """Runs in the decode child (IsolatedDecoder's initializer): ``backend`` kills its own process."""
    segfault = lambda *args: os.kill(os.getpid(), signal.SIGSEGV)
    dec.BACKENDS[backend] = dataclasses.replace(dec.BACKENDS[backend], decode=segfault)


@pytest.mark.parametrize("first, second", [("decord", "pyav"), ("pyav", "decord")])
def test_auto_retries_a_crashed_backend_in_a_fresh_process(clips, monkeypatch, first, second):
    first_here = {name: dec.BACKENDS[name] for name in (first, second)} | dec.BACKENDS
    monkeypatch.setattr(dec, "BACKENDS", first_here)  # "auto" now tries `first`, then `second`
    assert dec.attempts("auto") == (first, second)
    with IsolatedDecoder(initializer=_make_backend_segfault, initargs=(first,)) as decoder:
        video = decoder.decode(clips["five"], timeout_s=60)
    assert video.decoder == second
    assert video.streams["failed_attempts"] == [f"{first}: decoder crashed (killed by signal SIGSEGV)"]
    assert [frame_index(f) for f in video.frames] == [25 * t + 12 for t in range(5)]


# --- finding media ---------------------------------------------------------------------------------------


def test_find_media_recurses_sorts_and_skips_other_files(tmp_path, caplog):
    for name in [
        "b/x.mp4",
        "a/deep/y.MKV",
        "c.wav",
        "a/z.webm",
        "notes.txt",
        "a/.DS_Store",
        "a/clip.mp4.part",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        media = find_media(tmp_path)
    assert media == [
        tmp_path / "a/deep/y.MKV",
        tmp_path / "a/z.webm",
        tmp_path / "b/x.mp4",
        tmp_path / "c.wav",
    ]
    assert [video_id(p) for p in media] == ["y", "z", "x", "c"]
    _, skipped = scan_media(tmp_path)
    assert skipped == [tmp_path / "a/.DS_Store", tmp_path / "a/clip.mp4.part", tmp_path / "notes.txt"]
    assert "skipped 3 files" in caplog.text and "notes.txt" in caplog.text


def test_find_media_refuses_two_files_with_one_video_id(tmp_path):
    for name in ["one/00001.mp4", "two/00001.webm"]:
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="00001") as caught:
        find_media(tmp_path)
    assert str(tmp_path / "one/00001.mp4") in str(caught.value)
    assert str(tmp_path / "two/00001.webm") in str(caught.value)

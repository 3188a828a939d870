"""Timing that stays true (DESIGN.md §3 "Sampling"): audio gaps, rotation, variable frame rate, late streams.

Every clip is written here with PyAV and explicit timestamps, so each carries its own ground truth: frame i is
coloured with its index (red and green, 16 levels each); audio is 16 kHz mono, and the samples written for
second k of the timeline are the constant ``level(k)`` (16-bit PCM: decoded exactly) or, in AAC, a tone of
``TONE_HZ[k]``. The tests assert which frame and which written second landed in each decoded second.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avaf.extract.decode import backends as dec
from avaf.extract.decode.backends import decode_video, decode_with_fallback
from avaf.extract.decode.sampling import DecodeError, orientation, upright

SR = 16_000
TONE_HZ = [300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0, 1500.0]
needs_decord = pytest.mark.skipif(
    dec.backend_problem("decord") is not None, reason="decord: pip install 'avaf[decord]'"
)
BACKENDS = ["pyav", pytest.param("decord", marks=needs_decord)]


def index_image(i: int, size=(64, 48)) -> np.ndarray:
    rgb = (16 * (i % 16) + 8, 16 * (i // 16) + 8, 128)
    return np.broadcast_to(np.array(rgb, np.uint8), (size[1], size[0], 3)).copy()


def frame_index(frame: np.ndarray) -> int:
    r, g, _ = frame[80:144, 80:144].reshape(-1, 3).mean(axis=0)
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def level(k: int) -> int:
    """The int16 value written for every sample of second k of the timeline (PCM clips)."""
    return 1000 * (k + 1)


def audio_samples(first: int, n: int, acodec: str) -> np.ndarray:
    """(1, n) samples from sample ``first`` of the timeline: ``level`` per second (PCM) or ``TONE_HZ`` (AAC)."""
    idx = np.arange(first, first + n)
    if acodec == "pcm_s16le":
        return (level(0) * (idx // SR + 1)).astype(np.int16)[None]
    tone = np.asarray(TONE_HZ)[idx // SR]
    return (0.5 * np.sin(2 * np.pi * tone * idx / SR)).astype(np.float32)[None]


def write_timed(
    path, video_times, audio_spans=(), fmt=None, acodec="pcm_s16le", rotation=None, image=index_image
):
    """Frame i at ``video_times[i]`` s; audio over each (start s, end s) of ``audio_spans`` only. A compressed
    codec encodes the whole stretch and the packets outside the spans are dropped, as a lossy capture does."""
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=25, options={"crf": "8", "bf": "0"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(*rotation)
        audio = out.add_stream(acodec, rate=SR, layout="mono") if audio_spans else None
        for i, t in enumerate(video_times):
            frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        pcm = acodec == "pcm_s16le"
        step, fmt_in = (1600, "s16") if pcm else (audio.frame_size if audio else 0, "fltp")
        kept = lambda packets: [p for p in packets if any(a * SR <= p.pts < b * SR for a, b in audio_spans)]
        for start, end in audio_spans if pcm else [(audio_spans[0][0], audio_spans[-1][1])] if audio else []:
            first, last = round(start * SR), round(end * SR)
            for at in range(first, last, step):
                frame = av.AudioFrame.from_ndarray(
                    audio_samples(at, min(step, last - at), acodec), format=fmt_in, layout="mono"
                )
                frame.sample_rate, frame.pts, frame.time_base = SR, at, Fraction(1, SR)
                out.mux(kept(audio.encode(frame)))
        if audio is not None:
            out.mux(kept(audio.encode()))
    return Path(path)


def levels(audio: np.ndarray) -> np.ndarray:
    """(T, 4) the int16 values decoded at 0, 0.25, 0.5 and 0.75 s of each second (PCM clips)."""
    return np.round(audio[:, ::4000] * 32768).astype(int)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * SR / len(samples)


# --- audio gaps ---------------------------------------------------------------------------------------------

TEN_FPS = [i / 10 for i in range(61)]  # 10 fps, the last frame at 6.0 s: T = 6


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timing")
    vfr = [0, 0.1, 0.2, 0.9, 1.0, 1.05, 1.1, 1.15, 1.6, 2.7, 3.3, 3.45, 3.5, 4.6, 5.0, 5.9]
    late_video = [1.5 + i / 10 for i in range(45)]
    return {
        # audio missing over [1.6, 3.7) s: seconds 2 (0% covered) and 3 (30%) are invalid, 1 (60%) is not
        "gap": write_timed(root / "gap.mkv", TEN_FPS, [(0, 1.6), (3.7, 6)]),
        "gap_aac_ts": write_timed(root / "gap.ts", TEN_FPS, [(0, 2), (4, 6)], fmt="mpegts", acodec="aac"),
        "late_audio_mp4": write_timed(root / "late_audio.mp4", TEN_FPS, [(1.5, 6)]),  # an edit list
        "late_audio_mkv": write_timed(root / "late_audio.mkv", TEN_FPS, [(1.5, 6)]),
        "late_video_mp4": write_timed(root / "late_video.mp4", late_video, [(0, 6)]),
        "late_video_mkv": write_timed(root / "late_video.mkv", late_video, [(0, 6)]),
        "vfr_mp4": write_timed(root / "vfr.mp4", vfr, [(0, 6)]),
        "vfr_mkv": write_timed(root / "vfr.mkv", vfr, [(0, 6)]),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_audio_gap_stays_a_gap_and_its_seconds_are_invalid(clips, backend):
    video = decode_video(clips["gap"], backend=backend)
    assert video.decoder == backend and video.num_seconds == 6
    assert video.audio_valid.tolist() == [True, True, False, False, True, True]
    assert video.streams["audio_gaps"] == 1
    # every written sample sits at its own second; the gap [1.6 s, 3.7 s) is exact zeros
    expected = np.zeros(6 * SR)
    for start, end in [(0, 1.6), (3.7, 6)]:
        expected[round(start * SR) : round(end * SR)] = audio_samples(
            round(start * SR), round((end - start) * SR), "pcm_s16le"
        )[0]
    np.testing.assert_array_equal(video.audio.reshape(-1), (expected / 32768).astype(np.float32))
    assert levels(video.audio).tolist()[1:5] == [[2000, 2000, 2000, 0], [0] * 4, [0, 0, 0, 4000], [5000] * 4]
    # the frames are untouched by the audio: frame 10t + 5 at t + 0.5 s
    assert [frame_index(f) for f in video.frames] == [10 * t + 5 for t in range(6)]


def test_an_aac_gap_in_mpeg_ts_keeps_each_tone_in_its_second(clips):
    video = decode_video(clips["gap_aac_ts"], backend="pyav")
    assert video.num_seconds == 6 and video.streams["audio_gaps"] == 1
    assert video.audio_valid.tolist() == [True, True, False, False, True, True]
    # packets from 2.0 s to 4.0 s were dropped: the one before (from 1.984 s) plays to 2.048 s, then zeros
    assert video.audio[2, :700].any() and not video.audio[2, 800:].any() and not video.audio[3].any()
    for t in (0, 1, 4, 5):  # the tone written for second t, found in second t (closed up, 4 would be in 2)
        assert abs(dominant_hz(video.audio[t, 800:15200]) - TONE_HZ[t]) <= 1.0
        assert np.sqrt(np.mean(video.audio[t, 800:15200] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


# --- late audio, late video, variable frame rate --------------------------------------------------------------


@pytest.mark.parametrize("name", ["late_audio_mp4", "late_audio_mkv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_that_starts_late_is_placed_at_its_start(clips, name, backend):
    video = decode_video(clips[name], backend=backend)
    assert video.num_seconds == 6 and video.streams["audio_start"] == pytest.approx(1.5)
    assert video.streams["video_start"] == 0.0
    assert video.audio_valid.tolist() == [False, True, True, True, True, True]  # second 1 is 50% covered
    assert levels(video.audio).tolist()[:3] == [[0] * 4, [0, 0, 2000, 2000], [3000] * 4]
    assert [frame_index(f) for f in video.frames] == [10 * t + 5 for t in range(6)]
    np.testing.assert_allclose(video.timestamps, np.arange(6) + 0.5, atol=1e-9)


@pytest.mark.parametrize("name", ["late_video_mp4", "late_video_mkv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_video_that_starts_after_its_audio_keeps_the_audio(clips, name, backend):
    video = decode_video(clips[name], backend=backend)
    # time 0 is the audio's start: the video starts at 1.5 s and ends at 5.94 s, so T = 5
    assert video.num_seconds == 5 and video.streams["video_start"] == pytest.approx(1.5)
    assert video.streams["audio_start"] == 0.0 and video.duration == pytest.approx(5.94, abs=0.07)
    assert [frame_index(f) for f in video.frames] == [0, 0, 10, 20, 30]  # seconds 0, 1 show the first frame
    np.testing.assert_allclose(video.timestamps, [1.5, 1.5, 2.5, 3.5, 4.5], atol=1e-9)
    assert video.audio_valid.all()
    assert levels(video.audio)[:, 0].tolist() == [level(t) for t in range(5)]  # second t's audio, none lost


@pytest.mark.parametrize("name", ["vfr_mp4", "vfr_mkv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_takes_the_frame_nearest_each_half_second(clips, name, backend):
    times = np.array([0, 0.1, 0.2, 0.9, 1.0, 1.05, 1.1, 1.15, 1.6, 2.7, 3.3, 3.45, 3.5, 4.6, 5.0, 5.9])
    video = decode_video(clips[name], backend=backend)
    assert video.num_seconds == 5  # the last frame's time (5.9 s) plus its 0.1 s mean duration: 5.94 s < 6
    # nearest to 0.5: 0.2 (frame 2); 1.5: 1.6 (8); 2.5: 2.7 (9); 3.5: 3.5 (12); 4.5: 4.6 (13)
    assert [frame_index(f) for f in video.frames] == [2, 8, 9, 12, 13]
    np.testing.assert_allclose(video.timestamps, times[[2, 8, 9, 12, 13]], atol=1e-9)
    error = np.abs(video.timestamps - (np.arange(5) + 0.5))
    np.testing.assert_allclose(error, [0.3, 0.1, 0.2, 0.0, 0.1], atol=1e-9)
    assert levels(video.audio)[:, 0].tolist() == [level(t) for t in range(5)]


@needs_decord
@pytest.mark.parametrize(
    "name", ["gap", "late_audio_mp4", "late_video_mp4", "late_video_mkv", "vfr_mp4", "vfr_mkv"]
)
def test_both_backends_agree_on_the_timeline(clips, name):
    pyav, decord = (decode_video(clips[name], backend=b) for b in ("pyav", "decord"))
    assert [frame_index(f) for f in pyav.frames] == [frame_index(f) for f in decord.frames]
    np.testing.assert_array_equal(pyav.timestamps, decord.timestamps)
    np.testing.assert_array_equal(pyav.audio, decord.audio)
    np.testing.assert_array_equal(pyav.audio_valid, decord.audio_valid)


# --- rotation -------------------------------------------------------------------------------------------------


def corner_image(i: int) -> np.ndarray:
    """64x48, grey, with a red block in the top-left corner and a blue one in the top-right."""
    image = np.full((48, 64, 3), 128, np.uint8)
    image[:16, :16] = (255, 0, 0)
    image[:16, -16:] = (0, 0, 255)
    return image


def corners(frame: np.ndarray) -> dict[str, str]:
    """Colour names at the four corners of a decoded (224, 224, 3) frame: red, blue or grey."""
    names = {}
    for name, (y, x) in {"tl": (8, 8), "tr": (8, -9), "bl": (-9, 8), "br": (-9, -9)}.items():
        r, _, b = frame[y, x].astype(int)
        names[name] = "red" if r > 200 and b < 60 else "blue" if b > 200 and r < 60 else "grey"
    return names


# (rotation, hflip) as written by PyAV -> where the red (top-left) and blue (top-right) blocks are shown.
# The 64x48 picture shown upright at a quarter turn is 48x64 (portrait): CLIP's centre crop of a 224x298
# resize keeps the blocks' corners only when they lie on the long side's ends, so the crop is checked on
# the short side's corners.
ROTATIONS = {
    (90, False): {"tl": "blue", "bl": "red"},  # a quarter turn counter-clockwise
    (-90, False): {"tr": "red", "br": "blue"},  # clockwise: a phone held upright
    (180, False): {"br": "red", "bl": "blue"},
    (0, True): {"tl": "blue", "tr": "red"},  # mirrored
}


@pytest.mark.parametrize("rotation", list(ROTATIONS))
def test_a_rotated_video_is_turned_upright_before_the_resize(tmp_path, rotation):
    path = write_timed(
        tmp_path / "rotated.mp4", [i / 10 for i in range(20)], [(0, 2)], rotation=rotation, image=corner_image
    )
    video = decode_with_fallback(path, order=("pyav",))
    turns, mirrored = {
        (90, False): (1, False),
        (-90, False): (3, False),
        (180, False): (2, False),
        (0, True): (0, True),
    }[rotation]
    assert (video.streams["rotation"], video.streams["mirrored"]) == (90 * turns, mirrored)
    for frame in video.frames:
        shown = corners(frame)
        assert {k: shown[k] for k in ROTATIONS[rotation]} == ROTATIONS[rotation]


@needs_decord
def test_decord_refuses_a_rotated_video_and_auto_falls_back_to_pyav(tmp_path):
    path = write_timed(
        tmp_path / "phone.mp4", [i / 10 for i in range(20)], [(0, 2)], rotation=(-90,), image=corner_image
    )
    with pytest.raises(DecodeError, match="rotated video"):
        decode_video(path, backend="decord")
    video = decode_with_fallback(path, order=("decord", "pyav"))
    assert video.decoder == "pyav" and video.streams["rotation"] == 270
    assert corners(video.frames[0])["tr"] == "red"


def test_upright_follows_ffmpegs_display_matrix_convention():
    picture = np.arange(6).reshape(2, 3)  # [[0 1 2] [3 4 5]]
    q = 1 << 16
    # av_display_rotation_set(m, -90) (PyAV: 90 counter-clockwise): FFmpeg's command line applies transpose=cclock
    assert orientation([0, -q, 0, q, 0, 0, 0, 0, 1 << 30]) == (1, False)
    assert upright(picture, 1, False).tolist() == [[2, 5], [1, 4], [0, 3]]
    assert orientation([0, q, 0, -q, 0, 0, 0, 0, 1 << 30]) == (3, False)  # transpose=clock
    assert upright(picture, 3, False).tolist() == [[3, 0], [4, 1], [5, 2]]
    assert orientation([q, 0, 0, 0, -q, 0, 0, 0, 1 << 30]) == (2, True)  # vflip
    assert upright(picture, 2, True).tolist() == [[3, 4, 5], [0, 1, 2]]
    assert orientation([0, q, 0, q, 0, 0, 0, 0, 1 << 30]) == (3, True)  # transpose=cclock_flip: a transpose
    assert upright(picture, 3, True).tolist() == [[0, 3], [1, 4], [2, 5]]
    assert (
        orientation(None) == (0, False)
        and orientation([46341, -46341, 0, 46341, 46341, 0, 0, 0, 1 << 30]) is None
    )

"""Decoding only what the sampling rule needs (extract/decode/plan.py) gives exactly the frames of a full decode.

Every generated clip has reference frames and B-frames and texture that moves, so the encoder really predicts;
its top band is coloured with the frame's index (red and green, 16 levels each), so a test can read which
frame was taken. The default decode (the packet plan) is compared with PyAV decoding every packet, the exact
reference: equal frames (bit for bit), equal timestamps, equal audio. Also here: the torchcodec backends'
fallback to PyAV when torchcodec, the system's FFmpeg or CUDA is missing, and their GPU case (marked gpu).
"""

from __future__ import annotations

import logging
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avaf.extract.decode import backends as dec
from avaf.extract.decode.backends import check_backend, decode_video
from avaf.extract.decode.plan import NONREF, SEND, SKIP, PacketScan, plan_packets, scan_packets
from avaf.extract.decode.pyav_backend import decode_pyav
from avaf.extract.decode.torchcodec_backend import TORCHCODEC_MISSING, torchcodec_problem
from avaf.extract.decode.worker import IsolatedDecoder

VIDEOS = Path(__file__).parent / "data" / "videos"
WIDTH, HEIGHT = 128, 72


def moving_image(i: int, rng_texture: np.ndarray) -> np.ndarray:
    """Top band: frame i's index colour; bottom band: a texture sliding 3 px per frame."""
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    rgb[: HEIGHT // 2] = (16 * (i % 16) + 8, 16 * (i // 16) + 8, 128)
    rgb[HEIGHT // 2 :] = np.roll(rng_texture, 3 * i, axis=1)
    return rgb


def frame_index(frame: np.ndarray) -> int:
    """The index coloured into a decoded (224, 224, 3) frame's top band."""
    r, g, _ = frame[20:80, 60:160].reshape(-1, 3).mean(axis=0)
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def write_moving(path: Path, times: list[float], codec: str = "libx264", options: dict | None = None) -> Path:
    """Frame i shown at ``times[i]`` s (millisecond timestamps), in ``codec`` with its default B-frames."""
    texture = np.random.default_rng(0).integers(0, 256, (HEIGHT - HEIGHT // 2, WIDTH, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25, options={"crf": "12", **(options or {})})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(moving_image(i, texture), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode())
    return path


def vfr_times(count: int, seed: int) -> list[float]:
    """Irregular frame times: gaps of 10-230 ms, so the nearest frame is often far from t + 0.5."""
    gaps = np.random.default_rng(seed).uniform(0.01, 0.23, count)
    return np.round(np.concatenate([[0.0], np.cumsum(gaps)[:-1]]), 3).tolist()


X265 = "log-level=error:keyint=12:min-keyint=12:open-gop=1:bframes=4:scenecut=0"
# frames 1.. shifted by 0.1 s, so frame 35 (a leading picture of the keyframe at frame 36) is second 1's
HEVC_TIMES = [0.0] + [i / 25 + 0.1 for i in range(1, 200)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast")
    cfr = [i / 25 for i in range(200)]  # 8 s
    made = {
        "h264 gop 250": write_moving(root / "long.mp4", cfr, options={"g": "250"}),
        "h264 gop 12": write_moving(root / "dense.mp4", cfr, options={"g": "12"}),
        "h264 vfr": write_moving(root / "vfr.mkv", vfr_times(90, 1), options={"g": "30"}),
        "h264 vfr gop 250": write_moving(root / "vfr_long.mp4", vfr_times(90, 2)),
    }
    if "libx265" in av.codecs_available:  # open GOPs: CRA keyframes with leading (RASL) pictures
        made["hevc open gop"] = write_moving(root / "hevc.mp4", HEVC_TIMES, "libx265", {"x265-params": X265})
    return made


CLIPS = ["h264 gop 250", "h264 gop 12", "h264 vfr", "h264 vfr gop 250", "hevc open gop"]


def assert_same(fast, full) -> None:
    assert fast.num_seconds == full.num_seconds and fast.duration == full.duration
    np.testing.assert_array_equal(fast.timestamps, full.timestamps)
    np.testing.assert_array_equal(fast.frames, full.frames)
    np.testing.assert_array_equal(fast.audio, full.audio)


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("name", CLIPS)
def test_default_decode_equals_decoding_every_frame(clips, name, threads):
    if name not in clips:
        # The open-GOP HEVC clip is made with libx265, which PyAV's wheels for x86-64 Linux ship (so it runs
        # here and in CI); a PyAV built without it cannot make the clip, and there is nothing else to test.
        pytest.skip("this PyAV build cannot encode HEVC (libx265)")
    full = decode_pyav(clips[name], plan=False, threads=threads)
    fast = decode_video(clips[name], threads=threads)
    assert fast.decoder == "pyav"
    assert_same(fast, full)
    sent, total = fast.streams["packets_sent"]
    assert sent < total  # something really was left out


def test_the_frames_taken_are_the_nearest_ones(clips):
    long = decode_video(clips["h264 gop 250"])
    assert [frame_index(f) for f in long.frames] == [
        25 * t + 12 for t in range(8)
    ]  # t + 0.48 s, the tie's first
    last = np.flatnonzero(np.isclose(scan_packets(clips["h264 gop 250"], 0, 0.0).times, 7.48))[0]
    assert long.streams["packets_sent"] == [last + 1, 200]  # nothing after the last needed packet (frame 187)
    dense = decode_video(clips["h264 gop 12"])
    assert [frame_index(f) for f in dense.frames] == [25 * t + 12 for t in range(8)]
    assert dense.streams["packets_sent"][0] <= 100  # half the keyframe intervals hold no needed frame
    times = np.asarray(vfr_times(90, 1))
    vfr = decode_video(clips["h264 vfr"])
    nearest = [int(np.argmin(np.abs(times - (t + 0.5)))) for t in range(vfr.num_seconds)]
    assert [frame_index(f) for f in vfr.frames] == nearest
    np.testing.assert_allclose(vfr.timestamps, times[nearest])


def test_a_needed_leading_picture_gets_its_previous_segment(clips):
    """In the open-GOP HEVC clip second 1 takes frame 35, shown before its keyframe (frame 36) and predicted
    from the segment before, which the plan then decodes in full (else frame 35 would come out wrong)."""
    if "hevc open gop" not in clips:
        # Needs the open-GOP HEVC clip, made with libx265: runs wherever PyAV's wheel has it (this machine, CI).
        pytest.skip("this PyAV build cannot encode HEVC (libx265)")
    scan = scan_packets(clips["hevc open gop"], 0, 0.0)
    shown = np.searchsorted(HEVC_TIMES, scan.times - 1e-6)  # frame index of each packet, decode order
    segment = np.cumsum(scan.keys) - 1
    key_shown = shown[np.flatnonzero(scan.keys)][segment]
    assert 35 in shown[shown < key_shown] and 36 in shown[scan.keys]
    video = decode_video(clips["hevc open gop"])
    assert frame_index(video.frames[1]) == 35 and video.timestamps[1] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "name", ["nasa_13013.mp4", "h265_video.mp4", "h264_10bits.mp4", "av1_video.mkv"], ids=lambda n: n[:-4]
)
def test_real_videos_decode_as_with_every_frame(name):
    assert_same(decode_video(VIDEOS / name), decode_pyav(VIDEOS / name, plan=False))


def test_plan_of_a_hand_made_stream():
    # decode order; shown at: I0 P4 B2 b1 b3 | I8 b6 b7 P12 b10   (keyframe every 5 packets, open GOP)
    times = np.array([0, 4, 2, 1, 3, 8, 6, 7, 12, 10]) * 0.25
    keys = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    scan = PacketScan(times, keys, end=3.25)
    # targets 0.5 s (frame 2), 1.5 s (frame 6, a leading picture of the second segment), 2.5 s (frame 10)
    actions = plan_packets(scan, np.array([0.5, 1.5, 2.5]))
    assert actions.tolist() == [NONREF, NONREF, SEND, NONREF, NONREF, NONREF, SEND, NONREF, NONREF, SEND]
    # only the first second: the second segment is never sent, nor what follows frame 2 in the first
    assert plan_packets(scan, np.array([0.5])).tolist() == [NONREF, NONREF, SEND] + [SKIP] * 7


# --- torchcodec --------------------------------------------------------------------------------------------

TORCHCODEC = dec.backend_problem("torchcodec")
TORCHCODEC_CUDA = dec.backend_problem("torchcodec-cuda")
NVDEC = dec.backend_problem("pyav-cuda")


@pytest.mark.skipif(TORCHCODEC_CUDA is None, reason="torchcodec decodes on a GPU here")
@pytest.mark.parametrize("backend", ["torchcodec", "torchcodec-cuda"])
def test_torchcodec_missing_falls_back_to_pyav_saying_why(clips, backend, caplog):
    if backend == "torchcodec" and TORCHCODEC is None:
        # Nothing to fall back from: torchcodec works on the CPU here, and its counterpart,
        # test_torchcodec_cpu_takes_the_same_frames, asserts its frames instead. The torchcodec-cuda case
        # of this test still runs wherever there is no GPU (this machine and CI: no torchcodec at all).
        pytest.skip("torchcodec decodes on the CPU here")
    problem = dec.backend_problem(backend)
    with caplog.at_level(logging.WARNING):
        check_backend(backend)  # no error: one line, then PyAV
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"--decoder {backend}: {problem}; decoding with PyAV instead"]
    video = decode_video(clips["h264 gop 250"], backend=backend)
    assert video.decoder == "pyav" and video.streams["failed_attempts"] == [f"{backend}: {problem}"]
    assert_same(video, decode_video(clips["h264 gop 250"]))
    with IsolatedDecoder() as isolated:
        there = isolated.decode(clips["h264 gop 250"], timeout_s=60, backend=backend)
    assert there.decoder == "pyav" and there.streams["failed_attempts"] == [f"{backend}: {problem}"]
    assert dec.attempts("auto") == ("pyav", "decord")  # auto does not try it


def test_torchcodec_problem_names_the_fix(monkeypatch):
    """Wherever torchcodec is installed or not: made unimportable, the problem is the one-line fix; and the
    problem found here (if any) names a fix too."""
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` now raises ImportError
    assert torchcodec_problem.__wrapped__("cpu") == TORCHCODEC_MISSING
    assert "pip install 'avaf[torchcodec]'" in TORCHCODEC_MISSING
    if TORCHCODEC is not None:
        assert "pip install 'avaf[torchcodec]'" in TORCHCODEC or "FFmpeg" in TORCHCODEC
        assert "\n" not in TORCHCODEC


# torchcodec is an optional extra (avaf[torchcodec]: torch >= 2.11 and the system's FFmpeg), not installed by
# '.[test]', so this skips here and in CI; where it is missing, test_torchcodec_missing_falls_back_to_pyav_saying_why
# asserts the fallback instead, and this runs wherever the extra is installed.
@pytest.mark.skipif(TORCHCODEC is not None, reason=f"torchcodec: {TORCHCODEC}")
def test_torchcodec_cpu_takes_the_same_frames(clips):
    for name in ("h264 gop 250", "h264 vfr"):
        ours, theirs = decode_video(clips[name]), decode_video(clips[name], backend="torchcodec")
        assert theirs.decoder == "torchcodec"
        np.testing.assert_array_equal(theirs.timestamps, ours.timestamps)
        assert [frame_index(f) for f in theirs.frames] == [frame_index(f) for f in ours.frames]
        assert np.abs(theirs.frames.astype(int) - ours.frames).mean() < 1.0


@pytest.mark.gpu
@pytest.mark.skipif(NVDEC is not None, reason=f"pyav-cuda: {NVDEC}")
def test_pyav_cuda_decodes_with_nvdec_the_same_frames(clips):
    """NVDEC through PyAV, the same packet plan: the same frames and timestamps as the CPU decode, kept on
    the GPU; converted and resized there within a grey level or two."""
    for name in clips:
        ours, theirs = decode_video(clips[name], "pyav"), decode_video(clips[name], backend="pyav-cuda")
        if name == "hevc open gop":  # 128x72: under NVDEC's HEVC minimum (144x144) it falls back, saying why
            assert theirs.decoder == "pyav" and theirs.streams["failed_attempts"][0].startswith(
                "pyav-cuda: NVDEC"
            )
            continue
        assert theirs.decoder == "pyav-cuda" and theirs.frames.is_cuda, name
        assert tuple(theirs.frames.shape) == ours.frames.shape
        np.testing.assert_array_equal(theirs.timestamps, ours.timestamps)
        np.testing.assert_array_equal(theirs.audio, ours.audio)
        frames = theirs.frames.cpu().numpy()
        assert [frame_index(f) for f in frames] == [frame_index(f) for f in ours.frames], name
        assert np.abs(frames.astype(int) - ours.frames).mean() < 2.0, name
        assert theirs.streams["packets_sent"] == ours.streams["packets_sent"]
    with IsolatedDecoder() as isolated:  # across a process the frames come back as a NumPy array
        there = isolated.decode(clips["h264 gop 250"], timeout_s=120, backend="pyav-cuda")
    assert there.decoder == "pyav-cuda" and isinstance(there.frames, np.ndarray)


@pytest.mark.gpu
@pytest.mark.skipif(TORCHCODEC_CUDA is not None, reason=f"torchcodec-cuda: {TORCHCODEC_CUDA}")
def test_torchcodec_cuda_decodes_on_the_gpu(clips):
    for name in ("h264 gop 250", "h264 vfr"):
        ours, theirs = decode_video(clips[name], "pyav"), decode_video(clips[name], backend="torchcodec-cuda")
        assert theirs.decoder == "torchcodec-cuda" and theirs.frames.is_cuda
        assert tuple(theirs.frames.shape) == ours.frames.shape
        np.testing.assert_array_equal(theirs.timestamps, ours.timestamps)
        frames = theirs.frames.cpu().numpy()
        assert [frame_index(f) for f in frames] == [frame_index(f) for f in ours.frames]
        assert np.abs(frames.astype(int) - ours.frames).mean() < 2.0  # GPU bicubic against PIL's
    with IsolatedDecoder() as isolated:  # across a process the frames come back as a NumPy array
        there = isolated.decode(clips["h264 gop 250"], timeout_s=120, backend="torchcodec-cuda")
    assert there.decoder == "torchcodec-cuda" and isinstance(there.frames, np.ndarray)

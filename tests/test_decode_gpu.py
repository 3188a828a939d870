"""pyav-cuda: NVDEC decoding through PyAV's own FFmpeg, the frames converted and resized on the GPU.

The conversion and resize are plain torch, so they are checked here on CPU tensors against the CPU path
(swscale's YUV -> RGB, PIL's resize, NumPy's rotations). Without CUDA, "pyav-cuda" falls back to PyAV on the
CPU and says why; extraction with it decodes in the encoding process, several videos at once. The decode on
a real GPU is marked gpu (tests/test_decode_fast.py, beside torchcodec-cuda's).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import av
import numpy as np
import pytest
import torch
from test_extract import tiny_cfg

from avaf.extract.decode import backends as dec
from avaf.extract.decode.backends import decode_video
from avaf.extract.decode.gpu_frames import resize_cuda, upright_cuda, yuv_to_rgb
from avaf.extract.decode.pyav_backend import frame_to_rgb, nvdec_problem
from avaf.extract.decode.sampling import clip_resize, upright
from avaf.extract.engine import decodes_on_gpu
from avaf.extract.pipeline import run_extract
from avaf.shared.store.reader import FeatureStore

from conftest import DATA, write_clip

CUDA = torch.cuda.is_available()


def _frame(colorspace: str | None, color_range: int, seed: int = 0) -> av.VideoFrame:
    """A yuv420p frame of smooth colour ramps and noise, tagged with a matrix and range like a decoder's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:160]
    rgb = np.stack([xx * 255 // 159, yy * 255 // 95, (xx + yy) * 255 // 254], -1) + rng.integers(
        -20, 21, (96, 160, 3)
    )
    frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv420p", dst_colorspace=colorspace, dst_color_range=color_range)
    frame.color_range = color_range
    return frame


def _planes(frame: av.VideoFrame, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame as NVDEC hands it over: luma (H, W) and interleaved chroma (H/2, W/2, 2), 8 bits (NV12) or
    the same values in the top bits of 16 (P010)."""
    a = frame.reformat(format="nv12").to_ndarray()  # (3H/2, W): luma rows, then the interleaved chroma rows
    if fmt == "p010le":
        a = a.astype(np.uint16) << 8
    h, w = frame.height, frame.width
    return torch.from_numpy(a[:h].copy()), torch.from_numpy(a[h:].reshape(h // 2, w // 2, 2).copy())


@pytest.mark.parametrize("colorspace", [None, "ITU709"])
@pytest.mark.parametrize("color_range", [1, 2])  # limited (MPEG), full (JPEG)
@pytest.mark.parametrize("fmt", ["nv12", "p010le"])
def test_yuv_to_rgb_matches_swscale(colorspace, color_range, fmt):
    frame = _frame(colorspace, color_range)
    if colorspace == "ITU709":
        frame.colorspace = 1  # AVCOL_SPC_BT709, as a decoder tags it
    ours = yuv_to_rgb(*_planes(frame, fmt), frame.colorspace, frame.color_range).numpy().astype(int)
    ref = frame_to_rgb(frame).astype(int)
    assert ours.shape == ref.shape == (96, 160, 3)
    diff = np.abs(ours - ref)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 2, (diff.mean(), diff.max())


def test_the_matrix_follows_the_tag():
    """A BT.709 frame converted as BT.601 is off by several levels: the tag is read, not guessed."""
    frame = _frame("ITU709", 1)
    frame.colorspace = 1
    planes = _planes(frame, "nv12")
    right = yuv_to_rgb(*planes, 1, 1).numpy().astype(int)
    wrong = yuv_to_rgb(*planes, 5, 1).numpy().astype(int)
    ref = frame_to_rgb(frame).astype(int)
    assert np.abs(wrong - ref).mean() > 3 * np.abs(right - ref).mean() + 1


@pytest.mark.parametrize("size", [(72, 128), (360, 640), (480, 360), (1080, 1920)])
def test_resize_on_the_device_is_within_a_grey_level_of_pil(size):
    h, w = size
    rgb = _frame(None, 1).to_ndarray(format="rgb24")
    big = np.asarray(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(w, h).to_ndarray())
    ours = resize_cuda(torch.from_numpy(big)[None], 224)[0].numpy().astype(int)
    ref = clip_resize(big, 224).astype(int)
    assert ours.shape == ref.shape == (224, 224, 3)
    assert np.abs(ours - ref).mean() < 1.0


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("mirrored", [False, True])
def test_upright_on_the_device_equals_numpy(turns, mirrored):
    rgb = np.random.default_rng(turns).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        upright_cuda(torch.from_numpy(rgb), turns, mirrored).numpy(), upright(rgb, turns, mirrored)
    )


@pytest.mark.skipif(CUDA, reason="the fallback needs a machine without CUDA")
def test_without_cuda_pyav_cuda_falls_back_to_pyav_and_says_why(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", seconds=2)
    assert nvdec_problem() == "no CUDA device is visible to this process"
    video = decode_video(clip, backend="pyav-cuda")
    assert video.decoder == "pyav" and isinstance(video.frames, np.ndarray)
    assert video.streams["failed_attempts"] == ["pyav-cuda: no CUDA device is visible to this process"]
    np.testing.assert_array_equal(video.frames, decode_video(clip, backend="pyav").frames)


def test_gpu_decoders_decode_where_they_are_encoded_and_auto_never_picks_one():
    assert decodes_on_gpu("pyav-cuda") and decodes_on_gpu("torchcodec-cuda")
    assert not decodes_on_gpu("auto") and not decodes_on_gpu("pyav")
    assert dec.attempts("auto") == ("pyav", "decord")


@pytest.mark.skipif(CUDA, reason="the fallback needs a machine without CUDA")
def test_extract_with_pyav_cuda_decodes_in_the_encoding_process(tmp_path):
    """In process, a GPU decoder decodes the batch's videos on threads of this process (no child); without
    CUDA each falls back to PyAV, and the store equals a PyAV extraction's."""
    videos = tmp_path / "videos"
    for i in range(3):
        write_clip(videos / f"clip{i}.mp4", seconds=2 + i)
    shutil.copy(DATA / "videos" / "h265_video.mp4", videos / "h265_video.mp4")
    cfg = tiny_cfg(videos, tmp_path / "gpu.h5", videos_per_call=3)
    cfg = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, backend="pyav-cuda"))
    summary = run_extract(cfg, progress=False)
    assert summary.written == 4 and not summary.failed
    ref = run_extract(tiny_cfg(videos, tmp_path / "cpu.h5", videos_per_call=3), progress=False)
    assert ref.written == 4
    with FeatureStore(tmp_path / "gpu.h5") as got, FeatureStore(tmp_path / "cpu.h5") as want:
        for vid in want.video_ids:
            a, b = got.video(vid), want.video(vid)
            assert a["decoder"] == "pyav"
            for key in ("visual_tokens", "audio", "timestamp"):
                np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or nvdec_problem() is not None, reason=f"pyav-cuda: {nvdec_problem()}")
def test_extract_on_the_gpu_decodes_with_nvdec_in_process(tmp_path):
    """--in-process --decoder pyav-cuda on a GPU: NVDEC decodes in this process and the frames go to the
    encoders on the GPU; the features are the CPU decode's within the resize's grey level."""
    videos = tmp_path / "videos"
    for i in range(3):
        write_clip(videos / f"clip{i}.mp4", seconds=3 + i, size=(320, 180))
    runtime = {"videos_per_call": 3}
    cfg = tiny_cfg(videos, tmp_path / "gpu.h5", **runtime)
    nvdec = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, backend="pyav-cuda"))
    gpu = run_extract(nvdec, progress=False)
    cpu = run_extract(tiny_cfg(videos, tmp_path / "cpu.h5", **runtime), progress=False)
    assert gpu.written == cpu.written == 3
    with FeatureStore(tmp_path / "gpu.h5") as got, FeatureStore(tmp_path / "cpu.h5") as want:
        for vid in want.video_ids:
            a, b = got.video(vid), want.video(vid)
            assert a["decoder"] == "pyav-cuda" and b["decoder"] == "pyav"
            np.testing.assert_array_equal(a["timestamp"], b["timestamp"])
            np.testing.assert_array_equal(a["audio"], b["audio"])
            diff = np.abs(a["visual_tokens"].astype(np.float32) - b["visual_tokens"].astype(np.float32))
            assert diff.mean() < 0.05, (vid, diff.mean())


def test_on_ray_a_gpu_decoder_decodes_in_the_encoder_actor(tmp_path):
    """--decoder pyav-cuda on Ray: no decode tasks; the encoder actor, placed on a GPU (declared here), decodes
    its batch itself. Without CUDA in the actor each video falls back to PyAV there and records the attempt;
    the arrays equal an in-process PyAV run's."""
    import ray

    videos = tmp_path / "videos"
    for i in range(3):
        write_clip(videos / f"clip{i}.mp4", seconds=2 + i)
    ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        cfg = tiny_cfg(videos, tmp_path / "ray.h5", in_process=False, videos_per_call=3)
        cfg = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, backend="pyav-cuda"))
        summary = run_extract(cfg, progress=False)
    finally:
        ray.shutdown()
    assert summary.written == 3 and not summary.failed
    assert all(n["decode_node"] == n["encode_node"] for n in summary.nodes.values())
    run_extract(tiny_cfg(videos, tmp_path / "cpu.h5", videos_per_call=3), progress=False)
    with FeatureStore(tmp_path / "ray.h5") as got, FeatureStore(tmp_path / "cpu.h5") as want:
        for vid in want.video_ids:
            a, b = got.video(vid), want.video(vid)
            assert a["decoder"] == "pyav" and "pyav-cuda: no CUDA" in json.dumps(a["streams"])
            for key in ("visual_tokens", "audio", "timestamp"):
                np.testing.assert_array_equal(a[key], b[key])

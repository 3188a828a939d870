"""torchcodec decode backend (DESIGN.md §3 "Decoding"): frames via ``torchcodec.decoders.VideoDecoder``, on the
CPU ("torchcodec") or on the GPU with NVDEC ("torchcodec-cuda"); audio via PyAV.

torchcodec is optional (``pip install 'avaf[torchcodec]'``) and loads the system's FFmpeg libraries (not the
ones PyAV bundles): where either is missing, ``torchcodec_problem`` says so in one line and the backends
fall back to PyAV. PyAV probes the file first (streams, timeline, declared duration: the same checks and
errors as the PyAV backend) and demuxes the packet timestamps (plan.py), so the frames taken are exactly the
rule's (the frame nearest t + 0.5 s); torchcodec's "exact" seek mode numbers frames in that same order,
which is checked against the timestamps it returns. Rotated videos and AVI (timestamps in decode order)
are refused, and "auto" falls back to PyAV.

"torchcodec" resizes with the same PIL bicubic as the other backends. "torchcodec-cuda" resizes on the GPU
(bicubic with antialiasing, within a grey level or two of PIL) and returns the frames as a uint8 CUDA
tensor (T, S, S, 3): in the process that will encode them they never leave the GPU. A decode in a child
process (``decode_isolated``) hands them back as a NumPy array.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from avaf.extract.decode.gpu_frames import resize_cuda
from avaf.extract.decode.plan import scan_packets
from avaf.extract.decode.probe import (
    FRAME_COUNT_CONTAINERS,
    choose_streams,
    declared_end,
    describe_streams,
    first_orientation,
    open_container,
    stream_origin,
    timeline_info,
)
from avaf.extract.decode.pyav_backend import read_audio
from avaf.extract.decode.sampling import (
    SAMPLE_RATE,
    DecodedVideo,
    DecodeError,
    check_seconds,
    clip_resize,
    nearest_indices,
    sample_times,
    seconds_decoded,
)

logger = logging.getLogger(__name__)

TORCHCODEC_MISSING = "torchcodec is not installed: pip install 'avaf[torchcodec]' (and the system's FFmpeg)"
BATCH = 16  # frames per get_frames_at call: bounds the full-resolution frames held at once


@functools.cache
def torchcodec_problem(device: str = "cpu") -> str | None:
    """None when torchcodec can decode on ``device`` here, else why not (one line, the fix included)."""
    try:
        from torchcodec import _core

        load = getattr(_core, "get_ffmpeg_library_versions", None)
        if load is not None:
            load()  # torchcodec loads its FFmpeg libraries on first use: do it now
    except ImportError:
        return TORCHCODEC_MISSING
    except Exception as err:  # RuntimeError: no usable FFmpeg; a broken install must not break the PyAV path
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"torchcodec cannot load its FFmpeg libraries ({text.removesuffix(' Likely causes:')[:120]}): "
            "install the system's FFmpeg (4 or later), or a torchcodec built for this torch"
        )
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device is visible to this process"
    return None


def _read_frames(decoder, indices: np.ndarray, image_size: int, cuda: bool, path):
    """The frames at ``indices`` (presentation order), resized; also the times torchcodec gives them."""
    import torch

    out, times = [], []
    for lo in range(0, len(indices), BATCH):
        try:
            batch = decoder.get_frames_at(indices=indices[lo : lo + BATCH].tolist())
        except Exception as err:  # torchcodec raises RuntimeError / IndexError
            raise DecodeError(path, f"torchcodec failed reading frames ({err})") from None
        times.append(batch.pts_seconds.cpu().numpy().astype(np.float64))
        if cuda:
            out.append(resize_cuda(batch.data, image_size))  # (B, S, S, 3) on the GPU
        else:
            out.extend(clip_resize(rgb, image_size) for rgb in batch.data.numpy())
    frames = torch.cat(out) if cuda else np.stack(out)
    return frames, np.concatenate(times)


def decode_torchcodec(
    path: str | Path, image_size: int = 224, device: str = "cpu", threads: int = 0
) -> DecodedVideo:
    """Decode ``path``'s frames with torchcodec on ``device`` ("cpu" or "cuda") and its audio with PyAV."""
    problem = torchcodec_problem(device)
    if problem:
        raise DecodeError(path, problem)
    from torchcodec.decoders import VideoDecoder

    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        streams = describe_streams(container, video, audio)
        if container.format.name in FRAME_COUNT_CONTAINERS:
            raise DecodeError(path, f"torchcodec is not used on {container.format.name} containers")
        if first_orientation(path, video.index) != (0, False):
            raise DecodeError(path, "rotated video (display matrix): decoded with PyAV")
        origin = stream_origin(video, audio)
        declared = declared_end(container, video, origin)
        if declared is not None:
            check_seconds(path, declared)
        scan = scan_packets(path, video.index, origin)
        if scan is None:
            raise DecodeError(path, "video packets without timestamps: decoded with PyAV")
        seconds, duration = seconds_decoded(path, declared, scan.end)
        times = np.sort(scan.times)
        indices = nearest_indices(times, sample_times(seconds))
        try:
            decoder = VideoDecoder(
                str(path),
                stream_index=video.index,
                dimension_order="NHWC",
                seek_mode="exact",
                device=device,
                num_ffmpeg_threads=threads,
            )
        except Exception as err:
            raise DecodeError(path, f"torchcodec cannot open it ({err})") from None
        frames, got = _read_frames(decoder, indices, image_size, device == "cuda", path)
        if not np.allclose(got - origin, times[indices], atol=1e-4):
            raise DecodeError(path, "torchcodec's frames are not at the packet timestamps")
        if audio is not None:
            wave, valid = read_audio(container, audio, origin, seconds, path, streams)
        else:
            wave, valid = np.zeros((seconds, SAMPLE_RATE), np.float32), np.zeros(seconds, bool)
            streams["audio_gaps"] = 0
    streams |= timeline_info(video, audio, origin) | {"rotation": 0, "mirrored": False}
    streams["corrupt_packets"] = None  # torchcodec does not report them
    name = "torchcodec-cuda" if device == "cuda" else "torchcodec"
    return DecodedVideo(frames, wave, valid, times[indices], duration, audio is not None, name, streams)

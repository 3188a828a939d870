"""torchcodec decode backend (DESIGN.md §3 "Decoding"): the frames nearest t + 0.5 s through
``torchcodec.decoders.VideoDecoder``, on the CPU ("torchcodec") or on the GPU with NVDEC ("torchcodec-cuda");
the probe and the audio through PyAV (by_index.py).

torchcodec is optional (``pip install 'avaf[torchcodec]'``) and loads the system's FFmpeg libraries, not the
ones PyAV bundles: where either is missing, ``torchcodec_problem`` says so in one line and the backend falls
back to PyAV. The frame times are PyAV's packet timestamps (plan.py's demux pass), so the frames taken are
exactly the rule's; torchcodec's "exact" seek mode numbers frames in that same order, which is checked
against the times it returns. Rotated videos and AVI (timestamps in decode order) are refused: PyAV decodes
them. "torchcodec" resizes with PIL like the other backends; "torchcodec-cuda" resizes on the GPU (within a
grey level or two of PIL) and returns a uint8 CUDA tensor (T, S, S, 3), a NumPy array across a process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from avaf.extract.decode.by_index import BATCH, ByIndex, decode_by_index
from avaf.extract.decode.gpu_frames import resize_cuda
from avaf.extract.decode.plan import scan_packets
from avaf.extract.decode.probe import FRAME_COUNT_CONTAINERS
from avaf.extract.decode.sampling import DecodedVideo, DecodeError
from avaf.extract.decode.views import Views, make_views, stack_views

TORCHCODEC_MISSING = "torchcodec is not installed: pip install 'avaf[torchcodec]' (and the system's FFmpeg)"


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


def _read_frames(decoder, indices: np.ndarray, views: Views, cuda: bool, path):
    """The frames at ``indices`` (presentation order), one array per view, each view made from the frame;
    also the times torchcodec gives them."""
    import torch

    out, times = [], []
    for lo in range(0, len(indices), BATCH):
        try:
            batch = decoder.get_frames_at(indices=indices[lo : lo + BATCH].tolist())
        except Exception as err:  # torchcodec raises RuntimeError / IndexError
            raise DecodeError(path, f"torchcodec failed reading frames ({err})") from None
        times.append(batch.pts_seconds.cpu().numpy().astype(np.float64))
        if cuda:
            out.append(tuple(resize_cuda(batch.data, v) for v in views))  # (B, S, S, 3) per view, on the GPU
        else:
            out.extend(make_views(rgb, views) for rgb in batch.data.numpy())
    if cuda:
        frames = tuple(torch.cat([o[i] for o in out]) for i in range(len(views)))
    else:
        frames = stack_views(out, views)
    return frames, np.concatenate(times)


class TorchcodecReader:
    """torchcodec's frames of the video stream PyAV chose, timed by PyAV's packets (a ``by_index.FrameReader``)."""

    def __init__(
        self, path: str | Path, video, streams: dict, origin: float, device: str = "cpu", threads: int = 0
    ) -> None:
        self.path, self.index, self.origin = path, video.index, origin
        self.device, self.threads = device, threads
        self.starts = np.zeros(0)

    def times(self) -> tuple[np.ndarray, float]:
        scan = scan_packets(self.path, self.index, self.origin)
        if scan is None:
            raise DecodeError(self.path, "video packets without timestamps: decoded with PyAV")
        self.starts = np.sort(scan.times)
        return self.starts, scan.end

    def frames(self, indices: np.ndarray, views: Views):
        from torchcodec.decoders import VideoDecoder

        try:
            decoder = VideoDecoder(
                str(self.path),
                stream_index=self.index,
                dimension_order="NHWC",
                seek_mode="exact",
                device=self.device,
                num_ffmpeg_threads=self.threads,
            )
        except Exception as err:
            raise DecodeError(self.path, f"torchcodec cannot open it ({err})") from None
        frames, got = _read_frames(decoder, indices, views, self.device == "cuda", self.path)
        if not np.allclose(got - self.origin, self.starts[indices], atol=1e-4):
            raise DecodeError(self.path, "torchcodec's frames are not at the packet timestamps")
        return frames


def decode_torchcodec(
    path: str | Path, image_size: int | Views = 224, threads: int = 0, device: str = "cpu"
) -> DecodedVideo:
    """Decode ``path``'s frames with torchcodec on ``device`` ("cpu" or "cuda") and its audio with PyAV."""
    backend = ByIndex(
        "torchcodec-cuda" if device == "cuda" else "torchcodec",
        functools.partial(TorchcodecReader, device=device, threads=threads),
        containers=FRAME_COUNT_CONTAINERS,
        container_problem="torchcodec is not used on {} containers",
        rotated_problem="rotated video (display matrix): decoded with PyAV",
    )
    return decode_by_index(path, image_size, backend)

"""decord decode backend (DESIGN.md §3 "Decoding"): the frames nearest t + 0.5 s through ``decord.VideoReader``,
the probe and the audio through PyAV (by_index.py).

decord is optional (``pip install 'avaf[decord]'``: wheels for x86-64 Linux and Windows only) and unmaintained
since 2021: no AV1, broken stereo audio, a known deadlock and memory growth (worker.py isolates it). Its frame
timestamps count from the video stream's start, so they are shifted onto the PyAV backend's timeline. It
refuses, so that "auto" decodes them with PyAV: a rotated video (decord turns it itself, wrongly: a quarter
turn comes out with 4 channels), a video stream other than PyAV's choice, and the containers it returns
wrong frames from with at most a log line (MPEG transport and program streams: duplicated or black frames on
sparse reads; AVI holding H.264 with B-frames: frames from the wrong second; measured with decord 0.6.0).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from avaf.extract.decode.by_index import BATCH, ByIndex, decode_by_index
from avaf.extract.decode.probe import stream_start
from avaf.extract.decode.sampling import DecodedVideo, DecodeError
from avaf.extract.decode.views import Views, make_views, stack_views

# FFmpeg demuxer names (PyAV's container.format.name) whose frames decord returns wrongly
UNRELIABLE_CONTAINERS = frozenset({"mpegts", "mpeg", "mpegvideo", "avi"})
DECORD_MISSING = (
    "decord is not installed: pip install 'avaf[decord]' (wheels for x86-64 Linux and Windows only)"
)


@functools.cache
def decord_problem() -> str | None:
    """None when decord imports, else why not (the fix included); checked once per process."""
    try:
        import decord  # noqa: F401  (imported only to see whether it can be)
    except ImportError:
        return DECORD_MISSING
    except Exception as err:  # a broken install (missing shared library, ...) must not break the PyAV path
        return f"decord is installed but fails to import ({type(err).__name__}: {err}); PyAV still works"
    return None


def _reason(err: Exception) -> str:
    """decord's message without its '[hh:mm:ss] /path/file.cc:123: ' prefix."""
    last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", last)[:200]


def _open_reader(path: str | Path, width: int, height: int):
    import decord  # imported here: a broken decord install must not break the PyAV path

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
    except Exception as err:  # decord raises its own DECORDError, or RuntimeError
        raise DecodeError(path, f"decord cannot open it ({_reason(err)})") from None
    if len(reader) == 0:
        raise DecodeError(path, "decord found no video frames")
    shape = reader[0].shape  # (H, W, 3)
    if (shape[1], shape[0]) != (width, height):
        raise DecodeError(
            path, f"decord chose a {shape[1]}x{shape[0]} video stream, PyAV's best is {width}x{height}"
        )
    return reader


def _read_frames(reader, indices: np.ndarray, views: Views, path: str | Path) -> tuple[np.ndarray, ...]:
    """(T, S, S, 3) uint8 per view: the frames at ``indices``, fetched BATCH at a time, each view made from
    the frame."""
    chosen = []
    for lo in range(0, len(indices), BATCH):
        try:
            batch = reader.get_batch(indices[lo : lo + BATCH].tolist()).asnumpy()  # (B, H, W, 3)
        except Exception as err:
            raise DecodeError(path, f"decord failed reading frames ({_reason(err)})") from None
        chosen += [make_views(rgb, views) for rgb in batch]
    return stack_views(chosen, views)


def _frame_times(reader, path: str | Path) -> tuple[np.ndarray, float]:
    """(start of every frame, end of the last) in seconds from the stream start."""
    stamps = reader.get_frame_timestamp(np.arange(len(reader))).astype(np.float64)  # (N, 2) start, end
    if not (np.isfinite(stamps).all() and stamps[0, 0] >= -1.0 and (np.diff(stamps[:, 0]) >= 0).all()):
        raise DecodeError(path, "decord reports invalid frame timestamps")
    # decord keeps float32 seconds: round to the microsecond so ties break as in the PyAV backend
    return np.round(stamps[:, 0], 6), float(stamps[-1, 1])


class DecordReader:
    """decord's frames of the video stream PyAV chose (a ``by_index.FrameReader``)."""

    def __init__(self, path: str | Path, video, streams: dict, origin: float) -> None:
        self.path = path
        self.reader = _open_reader(path, streams["width"], streams["height"])
        self.shift = stream_start(video) - origin  # decord's zero on our timeline: 0.0 unless the audio leads

    def times(self) -> tuple[np.ndarray, float]:
        starts, end = _frame_times(self.reader, self.path)
        if self.shift:
            starts, end = starts + self.shift, end + self.shift
        return starts, end

    def frames(self, indices: np.ndarray, views: Views) -> tuple[np.ndarray, ...]:
        return _read_frames(self.reader, indices, views, self.path)


DECORD = ByIndex(
    "decord",
    DecordReader,
    containers=UNRELIABLE_CONTAINERS,
    container_problem="decord returns wrong frames from {} containers",
    rotated_problem="rotated video (display matrix): decord turns it wrongly",
)


def decode_decord(path: str | Path, image_size: int | Views = 224, threads: int = 0) -> DecodedVideo:
    """Decode ``path`` with decord (frames) and PyAV (probe and audio); decord picks its own threads."""
    return decode_by_index(path, image_size, DECORD)

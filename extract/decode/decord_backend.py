"""decord decode backend (DESIGN.md §3 "Decoding"): frames via ``decord.VideoReader``, audio via PyAV.

decord (unmaintained since 2021) has no AV1 and broken stereo audio, so PyAV first probes the file (streams,
declared duration: the same checks and errors as the PyAV backend), decord then reads the frames nearest
t + 0.5 s with ``get_batch`` (its timestamps count from the video stream's start: shifted onto the PyAV
backend's timeline, so a video that starts after its audio gets the same frames), and PyAV decodes the audio.
decord turns a rotated video itself, wrongly (a quarter turn comes out with 4 channels), so a video whose
first frame carries a display matrix is refused and "auto" falls back to PyAV, which turns it upright. decord must choose the same video stream as PyAV; if it does not, this backend fails and
"auto" falls back to PyAV. decord also returns wrong frames, with at most a log line, from MPEG transport and
program streams (.ts, .mpg: duplicated or black frames on sparse reads) and from AVI holding H.264 with
B-frames (frames from the wrong second), measured with decord 0.6.0, so this backend refuses those containers.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from avaf.extract.decode.probe import (
    choose_streams,
    declared_end,
    describe_streams,
    first_orientation,
    open_container,
    stream_origin,
    stream_start,
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

# FFmpeg demuxer names (PyAV's container.format.name) whose frames decord returns wrongly
UNRELIABLE_CONTAINERS = frozenset({"mpegts", "mpeg", "mpegvideo", "avi"})
BATCH = 16  # frames per get_batch call: bounds the full-resolution frames held at once (16 x 720p = 44 MB)


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


def _read_frames(reader, indices: np.ndarray, image_size: int, path: str | Path) -> np.ndarray:
    """(T, S, S, 3) uint8: the frames at ``indices``, CLIP-resized, fetched BATCH at a time."""
    out = np.empty((len(indices), image_size, image_size, 3), dtype=np.uint8)
    for lo in range(0, len(indices), BATCH):
        try:
            batch = reader.get_batch(indices[lo : lo + BATCH].tolist()).asnumpy()  # (B, H, W, 3)
        except Exception as err:
            raise DecodeError(path, f"decord failed reading frames ({_reason(err)})") from None
        for k, rgb in enumerate(batch):
            out[lo + k] = clip_resize(rgb, image_size)
    return out


def _frame_times(reader, path: str | Path) -> tuple[np.ndarray, float]:
    """(start of every frame, end of the last) in seconds from the stream start."""
    stamps = reader.get_frame_timestamp(np.arange(len(reader))).astype(np.float64)  # (N, 2) start, end
    if not (np.isfinite(stamps).all() and stamps[0, 0] >= -1.0 and (np.diff(stamps[:, 0]) >= 0).all()):
        raise DecodeError(path, "decord reports invalid frame timestamps")
    # decord keeps float32 seconds: round to the microsecond so ties break as in the PyAV backend
    return np.round(stamps[:, 0], 6), float(stamps[-1, 1])


def decode_decord(path: str | Path, image_size: int = 224) -> DecodedVideo:
    """Decode ``path`` with decord (frames) and PyAV (probe and audio)."""
    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        streams = describe_streams(container, video, audio)
        if container.format.name in UNRELIABLE_CONTAINERS:
            raise DecodeError(path, f"decord returns wrong frames from {container.format.name} containers")
        origin = stream_origin(video, audio)
        declared = declared_end(container, video, origin)
        if declared is not None:
            check_seconds(path, declared)
        if first_orientation(path, video.index) != (0, False):
            raise DecodeError(path, "rotated video (display matrix): decord turns it wrongly")
        reader = _open_reader(path, streams["width"], streams["height"])
        starts, end = _frame_times(reader, path)
        shift = stream_start(video) - origin  # decord's zero on our timeline: 0.0 unless the audio leads
        if shift:
            starts, end = starts + shift, end + shift
        seconds, duration = seconds_decoded(path, declared, end)
        indices = nearest_indices(starts, sample_times(seconds))
        frames = _read_frames(reader, indices, image_size, path)
        del reader
        if audio is not None:
            wave, valid = read_audio(container, audio, origin, seconds, path, streams)
        else:
            wave, valid = np.zeros((seconds, SAMPLE_RATE), np.float32), np.zeros(seconds, bool)
            streams["audio_gaps"] = 0
    streams |= timeline_info(video, audio, origin) | {"rotation": 0, "mirrored": False}
    streams["corrupt_packets"] = None  # decord does not report them
    return DecodedVideo(frames, wave, valid, starts[indices], duration, audio is not None, "decord", streams)

"""PyAV's look at a media file before any frame is kept (DESIGN.md §3 "Sampling", "Decoding").

Every backend probes with these, so every backend refuses the same files with the same errors: open the file
(``open_container``: a missing, empty or non-media file is a MediaError), choose FFmpeg's best streams
(``choose_streams``: ``av_find_best_stream``, for video the largest picture among default streams, audio in
the same program), place them on one timeline (``stream_origin``: the video's start, or the audio's when it
leads by more than 0.1 s; see ``sampling.timeline_origin``), read the duration the file declares
(``declared_end``: the stream's own, a Matroska DURATION tag, else the container's) and the orientation of
the first frame (``first_orientation``: the display matrix of phone videos). ``describe_streams`` is the
per-video stream record the feature store keeps.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import av
import numpy as np

from avaf.extract.decode.sampling import MediaError, orientation, timeline_origin

# Containers whose video timestamps count frames in decode order: H.264 with B-frames comes out with scrambled
# pts (measured on AVI), so frames are timed by their output index instead, with every frame decoded.
FRAME_COUNT_CONTAINERS = frozenset({"avi"})


def open_container(path: str | Path, hwaccel=None) -> av.container.InputContainer:
    """Open ``path`` with PyAV (decoding video with ``hwaccel`` when given), or raise MediaError naming what is
    wrong with the file."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise MediaError(path, f"cannot read the file ({err.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(path, "is a folder, not a media file")
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise MediaError(path, "zero-byte file")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore", hwaccel=hwaccel)
    except av.error.FFmpegError as err:
        reason = err.strerror or type(err).__name__
        raise MediaError(path, f"not a readable media file, or truncated or corrupt ({reason})") from None


def choose_streams(container, path: str | Path, need_video: bool = True):
    """(video stream or None, audio stream or None): FFmpeg's best of each kind."""
    video = container.streams.best("video") if container.streams.video else None
    if need_video and video is None:
        raise MediaError(path, "no video stream")
    audio = None
    if container.streams.audio:
        audio = container.streams.best("audio", related=video) if video is not None else None
        audio = audio or container.streams.best("audio")
    return video, audio


def stream_start(stream) -> float:
    """Seconds at which ``stream`` starts, in stream time."""
    if stream is None or stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def stream_origin(video, audio) -> float:
    """Time 0 of the timeline in stream time, for the chosen streams (see ``timeline_origin``)."""
    audio_start = stream_start(audio) if audio is not None and audio.start_time is not None else None
    return timeline_origin(stream_start(video), audio_start)


def timeline_info(video, audio, origin: float) -> dict:
    """Where each chosen stream starts on the timeline, for the per-video stream info."""
    starts = {"video_start": video, "audio_start": audio}
    return {k: None if s is None else round(stream_start(s) - origin, 6) for k, s in starts.items()}


def _parse_clock(text: str) -> float | None:
    """'HH:MM:SS.fffffffff' (Matroska's per-stream DURATION tag) -> seconds."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def declared_end(container, stream, origin: float) -> float | None:
    """Where the file declares ``stream`` ends, on the timeline: its own duration from its start, a Matroska
    DURATION tag (an end time), else the container's end."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base) + (stream_start(stream) - origin)
    tagged = _parse_clock(stream.metadata.get("DURATION", ""))
    if tagged is not None:
        return tagged - origin
    if container.duration is not None:  # AV_TIME_BASE units, from the container's start
        return container.duration / 1e6 + ((container.start_time or 0) / 1e6 - origin)
    return None


def header_duration(container, stream) -> float | None:
    """The duration the file declares for ``stream``: its own, a Matroska tag, else the container's."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tagged = _parse_clock(stream.metadata.get("DURATION", ""))
    if tagged is not None:
        return tagged
    if container.duration is not None:
        return container.duration / 1e6  # AV_TIME_BASE units
    return None


def describe_streams(container, video, audio) -> dict:
    """What was found and chosen, for the feature store's per-video stream info."""
    info = {
        "container": container.format.name,
        "video_streams": len(container.streams.video),
        "audio_streams": len(container.streams.audio),
        "video_index": None if video is None else video.index,
        "audio_index": None if audio is None else audio.index,
    }
    if video is not None:
        ctx = video.codec_context
        rate = video.average_rate or video.guessed_rate
        info |= {"video_codec": ctx.name, "width": ctx.width, "height": ctx.height}
        info |= {"fps": float(rate) if rate else None, "pix_fmt": ctx.pix_fmt}
    if audio is not None:
        ctx = audio.codec_context
        info |= {"audio_codec": ctx.name, "sample_rate": ctx.sample_rate, "channels": ctx.channels}
    return info


def display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix (9 int32, FFmpeg's layout), or None when it has none."""
    for side in frame.side_data:
        if str(getattr(side.type, "name", side.type)).upper() == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side), dtype=np.int32)
    return None


def first_orientation(path: str | Path, index: int) -> tuple[int, bool] | None:
    """The orientation of the first frame of video stream ``index`` (decoded alone; (0, False) if none)."""
    with open_container(path) as container:
        try:
            for frame in container.decode(container.streams[index]):
                return orientation(display_matrix(frame))
        except av.error.FFmpegError:
            pass  # the decode proper reports what is wrong
    return 0, False

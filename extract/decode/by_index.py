"""The body shared by the backends that read frames by index (decord, torchcodec; DESIGN.md §3 "Decoding").

PyAV probes the file with the PyAV backend's checks and errors (probe.py: streams, timeline, declared
duration, a clip under one second); a container or a rotated video the backend gets wrong is refused with a
DecodeError, so "auto" and the fallbacks go on to PyAV. The backend's ``FrameReader`` gives the time of
every frame; the sampling rule takes the frame nearest each t + 0.5 s (``sampling.nearest_indices``); the
reader fetches and resizes those frames; PyAV decodes the audio onto the same timeline. A backend of this
kind is a ``FrameReader`` ("the frames and their times at these indices") and a ``ByIndex`` record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from avaf.extract.decode.probe import (
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
    DecodedVideo,
    DecodeError,
    assemble_audio,
    check_seconds,
    nearest_indices,
    sample_times,
    seconds_decoded,
)
from avaf.extract.decode.views import Views, as_views

BATCH = 16  # frames per read: bounds the full-resolution frames held at once (16 x 720p = 44 MB)


class FrameReader(Protocol):
    """One backend's view of the video stream PyAV chose."""

    def times(self) -> tuple[np.ndarray, float]:
        """(start of every frame in presentation order, end of the last), in seconds on the timeline."""

    def frames(self, indices: np.ndarray, views: Views) -> tuple:
        """(T, S, S, 3) uint8 per view: the frames at ``indices``, each view made from the frame (NumPy
        arrays, or CUDA tensors)."""


@dataclass(frozen=True)
class ByIndex:
    """A backend that reads frames by index: what it is called and which files it refuses."""

    name: str  # the decoder each video records
    open: Callable[[str | Path, Any, dict, float], FrameReader]  # (path, video stream, streams, origin)
    containers: frozenset[str]  # FFmpeg demuxers (``container.format.name``) it is not used on
    container_problem: str  # why not: "{}" stands for the demuxer
    rotated_problem: str  # why a video with a display matrix is refused


def decode_by_index(path: str | Path, image_size: int | Views, backend: ByIndex) -> DecodedVideo:
    """Decode ``path``: PyAV probes it and decodes its audio, ``backend`` reads the frames taken and makes
    the views (``image_size``: CLIP's side, or views.py's views)."""
    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        streams = describe_streams(container, video, audio)
        origin, declared = _probe(path, container, video, audio, backend)
        reader = backend.open(path, video, streams, origin)
        times, end = reader.times()
        seconds, duration = seconds_decoded(path, declared, end)
        indices = nearest_indices(times, sample_times(seconds))
        views = as_views(image_size)
        per_view = reader.frames(indices, views)
        del reader  # its decoder's memory goes before the audio pass
        if audio is not None:
            wave, valid = read_audio(container, audio, origin, seconds, path, streams)
        else:
            wave, valid = assemble_audio([], seconds)  # silence, every second invalid
            streams["audio_gaps"] = 0
    streams |= timeline_info(video, audio, origin) | {"rotation": 0, "mirrored": False}
    streams["corrupt_packets"] = None  # these decoders do not report them
    return DecodedVideo(
        per_view[0], wave, valid, times[indices], duration, audio is not None, backend.name, streams,
        views=dict(zip(views, per_view)),
    )  # fmt: skip


def _probe(path: str | Path, container, video, audio, backend: ByIndex) -> tuple[float, float | None]:
    """(timeline origin, declared end); MediaError for a clip under one second, DecodeError for a file
    ``backend`` gets wrong."""
    if container.format.name in backend.containers:
        raise DecodeError(path, backend.container_problem.format(container.format.name))
    origin = stream_origin(video, audio)
    declared = declared_end(container, video, origin)
    if declared is not None:
        check_seconds(path, declared)
    if first_orientation(path, video.index) != (0, False):
        raise DecodeError(path, backend.rotated_problem)
    return origin, declared

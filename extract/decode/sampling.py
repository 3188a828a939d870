"""The sampling rules every decode backend shares (DESIGN.md §3 "Sampling"): one frame and one second of audio
per second of video, and the result and error types they produce.

T = the whole seconds of the video (``whole_seconds``); second t is represented by the frame nearest t + 0.5 s
(``nearest_indices``, or ``NearestFramePicker`` for frames that arrive in order) and by the audio samples
[t * 16000, (t + 1) * 16000) (``assemble_audio``), both on one presentation timeline (``timeline_origin``).
Frames are turned upright (the display matrix: ``orientation``, ``upright``), then each encoder's view is
made from the frame (views.py; ``clip_resize`` for CLIP) and kept as uint8, so an encoder only has to
normalise. ``DecodedVideo``
and the errors live here because these rules raise them (a clip under one second, a truncated file). The
public entry points are in ``avaf.extract.decode.backends``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avaf.extract.decode.views import View, geometry, resize_view, stack_views
from avaf.shared.store.schema import SAMPLE_RATE

# A duration this close under a whole second counts as that second: a 29.97 fps clip of 1798 frames lasts
# 59.993 s and has 60 seconds, not 59. Just over one frame at 25 fps.
DURATION_TOLERANCE_S = 0.05
# A second of audio is valid when decoded samples cover at least this fraction of it.
MIN_VALID_FRACTION = 0.5
# A video whose frames stop more than this before the duration its header declares is truncated.
TRUNCATION_TOLERANCE_S = 1.0
# Two frames whose distances to a target differ by less than this are a tie; the earlier one wins.
TIE_EPS_S = 1e-6
# An audio stream that starts less than this before the video is encoder priming, not content: MPEG-TS and
# other containers without edit lists show AAC's 1024 (MP3's 1105) priming samples as a 23-48 ms lead.
PRIMING_LEAD_S = 0.1


class DecodeError(Exception):
    """A video that cannot be decoded; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(str(path), problem)  # both in args, so the error pickles across processes
        self.path = str(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class MediaError(DecodeError):
    """The file itself is unusable (empty, not media, no stream, too short): no other backend can help."""


@dataclass
class DecodedVideo:
    """One video, sampled at one frame and one second of audio per second.

    frames: (T, S, S, 3) uint8 RGB, resized and centre-cropped like CLIP's preprocess (the first view asked
        for); (0, S, S, 3) for an audio-only file (``has_video`` False).
    audio: (T, 16000) float32 mono at 16 kHz; row t is second t, zero where the audio is missing. The VGGish
        example for second t is ``audio[t, :15360]`` (0.96 s from t), so no sample past T seconds is kept.
    audio_valid: (T,) bool, True where decoded audio covers at least half of the second.
    timestamps: (T,) float64, time in seconds on the timeline (``timeline_origin``) of the frame used for
        second t; t + 0.5 for an audio-only file.
    duration: where the video ends on the timeline (of audio for an audio-only file): T was computed from it.
    decoder: the backend that produced the frames (``backends.BACKENDS``), or "librosa" for an audio-only
        file (audio: always PyAV or librosa).
    streams: the streams chosen and found (``describe_streams`` in pyav_backend), and what the timing rules
        did: ``video_start`` / ``audio_start`` (s on the timeline), ``audio_gaps`` (timestamp jumps the audio
        was re-placed at), ``rotation`` (degrees counter-clockwise) and ``mirrored`` (the display matrix
        applied to the frames).
    views: every view asked for (`views.View` -> (T, S, S, 3) uint8), each made from the decoded frame;
        ``frames`` is the first one's.
    cpu: CPU-seconds spent making it, by phase (``decode``: the decoding process, all its threads; ``rgb``,
        ``resize``: the PyAV backend's frame conversion and views, part of it; ``receive``: the caller taking
        it from the isolated child). Measured, never stored.
    """

    frames: np.ndarray
    audio: np.ndarray
    audio_valid: np.ndarray
    timestamps: np.ndarray
    duration: float
    has_audio: bool
    decoder: str
    streams: dict = field(default_factory=dict)
    has_video: bool = True
    views: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)

    @property
    def num_seconds(self) -> int:
        """T: rows of ``audio`` (and of ``frames`` when there is video)."""
        return int(self.audio.shape[0])


def timeline_origin(video_start: float, audio_start: float | None) -> float:
    """Time 0 of the timeline, in stream time: the video's start, or the audio's when it leads by more than
    PRIMING_LEAD_S (a video stream that starts after its audio keeps that audio, and its first second shows
    the first frame)."""
    if audio_start is not None and audio_start < video_start - PRIMING_LEAD_S:
        return audio_start
    return video_start


# The display matrix's 2x2 part (signs of entries 0, 1, 3, 4 of FFmpeg's 3x3 int32 matrix) -> (k, mirrored):
# the upright picture is np.rot90(picture, k) (k quarter turns counter-clockwise), then mirrored left-right
# when ``mirrored``. As FFmpeg's command line turns it (fftools autorotate: transpose / hflip / vflip).
ORIENTATIONS = {
    (1, 0, 0, 1): (0, False),
    (0, -1, 1, 0): (1, False),
    (-1, 0, 0, -1): (2, False),
    (0, 1, -1, 0): (3, False),
    (-1, 0, 0, 1): (0, True),
    (0, -1, -1, 0): (1, True),
    (1, 0, 0, -1): (2, True),
    (0, 1, 1, 0): (3, True),
}


def orientation(matrix) -> tuple[int, bool] | None:
    """(quarter turns counter-clockwise, mirrored) for a display matrix; None: not a multiple of 90 degrees."""
    if matrix is None:
        return 0, False
    m = np.asarray(matrix, dtype=np.int64)
    return ORIENTATIONS.get(tuple(int(np.sign(m[i])) for i in (0, 1, 3, 4)))


def upright(rgb: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """The picture as it is meant to be shown: ``turns`` quarter turns counter-clockwise, then the mirror."""
    out = np.rot90(rgb, turns) if turns else rgb
    return np.ascontiguousarray(out[:, ::-1] if mirrored else out)


def whole_seconds(duration: float) -> int:
    """T for a clip of ``duration`` seconds: floor, forgiving a shortfall of under one frame."""
    return max(0, math.floor(duration + DURATION_TOLERANCE_S))


def check_seconds(path: str | Path, duration: float) -> int:
    """T for ``duration``, or DecodeError when the clip is shorter than one second."""
    seconds = whole_seconds(duration)
    if seconds < 1:
        raise MediaError(path, f"shorter than one second ({duration:.3f} s); nothing to sample")
    return seconds


def seconds_decoded(path: str | Path, header_duration: float | None, frames_end: float) -> tuple[int, float]:
    """(T, duration) once the frames are known to end at ``frames_end`` seconds.

    A header that promises more than the frames deliver by over TRUNCATION_TOLERANCE_S means a truncated
    file (DecodeError); a smaller shortfall trusts the frames.
    """
    if header_duration is None or frames_end + DURATION_TOLERANCE_S >= header_duration:
        duration = header_duration if header_duration is not None else frames_end
        return check_seconds(path, duration), duration
    if header_duration - frames_end > TRUNCATION_TOLERANCE_S:
        raise DecodeError(
            path,
            f"truncated: the header declares {header_duration:.3f} s but the video frames end at "
            f"{frames_end:.3f} s",
        )
    return check_seconds(path, frames_end), frames_end


def sample_times(seconds: int) -> np.ndarray:
    """The instants (s) the frames represent: t + 0.5 for t in 0..T-1."""
    return np.arange(seconds, dtype=np.float64) + 0.5


def nearest_indices(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the index of the nearest time; the earliest on a tie (within TIE_EPS_S)."""
    times = np.asarray(times, dtype=np.float64)
    dist = np.abs(times[None, :] - np.asarray(targets, dtype=np.float64)[:, None])  # (T, N)
    best = dist.min(axis=1, keepdims=True)
    return np.argmax(dist <= best + TIE_EPS_S, axis=1)


class NearestFramePicker:
    """Streaming version of ``nearest_indices`` for frames that arrive in presentation order.

    ``feed`` each (time, frame); it keeps, for every target t + 0.5, the nearest frame (the earlier on a
    tie), converted with ``convert`` as soon as it is chosen so decoded frames are not held.
    """

    def __init__(self, max_seconds: int | None, convert, views=None) -> None:
        self.max_seconds = max_seconds
        self.convert = convert
        self.views = views  # the views `convert` returns, one tuple per frame (None: one array per frame)
        self.chosen: list[np.ndarray] = []
        self.times: list[float] = []
        self._prev: tuple[float, object] | None = None

    @property
    def done(self) -> bool:
        return self.max_seconds is not None and len(self.chosen) >= self.max_seconds

    def _target(self) -> float:
        return len(self.chosen) + 0.5

    def _take(self, time: float, frame) -> None:
        self.chosen.append(self.convert(frame))
        self.times.append(time)

    def feed(self, time: float, frame) -> None:
        while not self.done and time >= self._target():
            target = self._target()
            if self._prev is not None and target - self._prev[0] <= time - target + TIE_EPS_S:
                self._take(*self._prev)
            else:
                self._take(time, frame)
        self._prev = (time, frame)

    def finish(self, seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames, times) for T = ``seconds``; targets past the last frame get the last frame. With
        ``views`` (the converter returns a tuple per frame), frames is a tuple: (T, S, S, 3) per view."""
        while len(self.chosen) < seconds and self._prev is not None:
            self._take(*self._prev)
        self._prev = None
        times = np.asarray(self.times[:seconds], dtype=np.float64)
        if self.views is not None:
            return stack_views(self.chosen[:seconds], self.views), times
        frames, stack = self.chosen[:seconds], np.stack
        if frames and not isinstance(frames[0], np.ndarray):  # CUDA tensors (pyav-cuda)
            import torch

            stack = torch.stack
        return stack(frames), times


def clip_geometry(width: int, height: int, image_size: int) -> tuple[int, int, int, int]:
    """(new width, new height, top, left) of CLIP's preprocess: torchvision's Resize(S) (shorter side to S,
    longer side int(S * long / short)), then CenterCrop(S) at offsets int(round((size - S) / 2))."""
    return geometry(width, height, View(image_size))


def clip_resize(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8 exactly as CLIP / open_clip preprocess before normalising:
    `views.resize_view` of `View(S)` (bit-identical to the full resize then the crop, tests/test_resize.py)."""
    return resize_view(rgb, View(image_size))


def assemble_audio(chunks: list[tuple[int, np.ndarray]], seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """Place mono chunks (start sample, samples) on a (T, 16000) grid; return (audio, audio_valid)."""
    total = seconds * SAMPLE_RATE
    audio = np.zeros(total, dtype=np.float32)
    covered = np.zeros(total, dtype=bool)
    for start, samples in chunks:
        lo, hi = max(start, 0), min(start + len(samples), total)
        if hi > lo:
            audio[lo:hi] = samples[lo - start : hi - start]
            covered[lo:hi] = True
    valid = covered.reshape(seconds, SAMPLE_RATE).mean(axis=1) >= MIN_VALID_FRACTION
    return audio.reshape(seconds, SAMPLE_RATE), valid

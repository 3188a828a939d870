"""PyAV decode backend (DESIGN.md §3 "Decoding"), and all audio decoding.

One sequential pass over the chosen video and audio streams (``thread_type="AUTO"``): frames are picked by
timestamp (never by seeking, a trap when keyframes are far apart), converted and resized only when chosen,
non-reference frames far from every t + 0.5 s are not decoded at all (FFmpeg's skip_frame), and decoding
stops once the last needed frame and second of audio are in. AVI timestamps count frames in decode order
(B-frames come out with scrambled pts), so AVI frames are timed by their output index. Streams are FFmpeg's
"best" (``av_find_best_stream``: for video the largest picture among default streams, audio in the same
program).
Audio is resampled to 16 kHz keeping its channels, then averaged to mono: FFmpeg's own downmix would scale a
stereo tone by sqrt(2); the mean keeps amplitudes, like librosa.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import av
import numpy as np

from avaf.extract.decode.common import (
    SAMPLE_RATE,
    DecodedVideo,
    DecodeError,
    MediaError,
    NearestFramePicker,
    assemble_audio,
    check_seconds,
    clip_resize,
    seconds_decoded,
)

logger = logging.getLogger(__name__)

AUDIO_MARGIN_S = 0.2  # keep decoding audio this far past T so the resampler has emitted second T - 1
# Containers whose video timestamps count frames in decode order: H.264 with B-frames comes out with scrambled
# pts (measured on AVI), so frames are timed by their output index instead, with every frame decoded.
FRAME_COUNT_CONTAINERS = frozenset({"avi"})


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` with PyAV, or raise MediaError naming what is wrong with the file."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise MediaError(path, f"cannot read the file ({err.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(path, "is a folder, not a media file")
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise MediaError(path, "zero-byte file")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
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
    """Seconds at which ``stream`` starts: the zero of every timestamp we report."""
    if stream is None or stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _parse_clock(text: str) -> float | None:
    """'HH:MM:SS.fffffffff' (Matroska's per-stream DURATION tag) -> seconds."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
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


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, honouring a full-range flag on formats that do not imply it (yuv420p + JPEG)."""
    if frame.color_range in (1, 2):  # MPEG (limited) or JPEG (full); 0 leaves it to the pixel format
        return frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
    return frame.to_ndarray(format="rgb24")


class AudioCollector:
    """Decoded audio frames -> 16 kHz mono chunks placed at their time from ``origin``."""

    def __init__(self, stream, origin: float) -> None:
        self.stream = stream
        self.origin = origin
        # keeps the input layout; one-second output frames halve the per-frame overhead of ~23 ms AAC frames
        self.resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE, frame_size=SAMPLE_RATE)
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.next_start: int | None = None
        self.input_end = -math.inf  # seconds from origin reached by the decoded input

    def feed(self, frame: av.AudioFrame) -> None:
        start = (frame.time - self.origin) if frame.time is not None else max(self.input_end, 0.0)
        if self.next_start is None:
            self.next_start = round(start * SAMPLE_RATE)
        self.input_end = start + frame.samples / frame.sample_rate
        for out in self.resampler.resample(frame):
            self._add(out)

    def _add(self, out: av.AudioFrame) -> None:
        planes = out.to_ndarray()  # (channels, n) float32
        mono = planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0]
        self.chunks.append((self.next_start, mono))
        self.next_start += mono.shape[0]

    def done(self, seconds: int | None) -> bool:
        return seconds is not None and self.input_end >= seconds + AUDIO_MARGIN_S

    def finish(self, seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """Flush the resampler and return (audio (T, 16000), audio_valid (T,))."""
        if self.next_start is not None:
            for out in self.resampler.resample(None):
                self._add(out)
        return assemble_audio(self.chunks, seconds)


def decode_packet(packet, path: str | Path, errors: list[str]) -> list:
    """Frames of one packet; a corrupt packet is logged and skipped, as FFmpeg's command line does."""
    try:
        return packet.decode()
    except av.error.FFmpegError as err:
        errors.append(str(err))
        logger.debug("%s: skipped a corrupt %s packet: %s", path, packet.stream.type, err)
        return []


def read_audio(container, stream, origin: float, seconds: int, path: str | Path):
    """Decode ``stream`` alone (a second pass, for the decord backend and audio-only files)."""
    collector = AudioCollector(stream, origin)
    errors: list[str] = []
    for packet in container.demux(stream):
        for frame in decode_packet(packet, path, errors):
            collector.feed(frame)
        if collector.done(seconds):
            break
    if errors:
        logger.warning("%s: %d corrupt audio packets skipped", path, len(errors))
    return collector.finish(seconds)


class _SkipPlan:
    """Which video packets may skip decoding: FFmpeg's skip_frame=NONREF on packets far from every target.

    A non-reference frame (most B-frames) that no other frame needs is dropped unless its timestamp lies
    within ``window`` of some t + 0.5, so the nearest frame is always decoded. Saves about a third of the
    decode time of typical H.264; reference frames are always decoded, so the picture stays exact.
    """

    def __init__(self, video, origin: float, max_seconds: int | None, frame_step: float) -> None:
        self.ctx, self.origin, self.max_seconds = video.codec_context, origin, max_seconds
        self.time_base = float(video.time_base) if video.time_base else None
        self.window = max(2 * frame_step, 0.1)
        self.enabled = frame_step > 0 and self.time_base is not None

    def before(self, packet) -> None:
        needed = True
        if self.enabled and packet.pts is not None:
            time = packet.pts * self.time_base - self.origin
            second = round(time - 0.5)
            in_range = self.max_seconds is None or second < self.max_seconds
            needed = abs(time - (second + 0.5)) <= self.window and in_range
        self.ctx.skip_frame = "DEFAULT" if needed else "NONREF"


def _packet_end(packet, origin: float) -> float | None:
    if packet.pts is None or packet.time_base is None:
        return None
    return float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin


def _decode_pass(container, video, picker, collector, max_seconds, path) -> tuple[float | None, int]:
    """One demux pass feeding ``picker`` and ``collector``; returns (end of the video, bad packets)."""
    origin = stream_start(video)
    rate = video.average_rate or video.guessed_rate
    frame_step = 1.0 / float(rate) if rate else 0.0
    by_index = container.format.name in FRAME_COUNT_CONTAINERS
    skip = _SkipPlan(video, origin, max_seconds, 0.0 if by_index else frame_step)
    frames_end, packets_end, index, errors = None, None, 0, []
    streams = [video] + ([collector.stream] if collector is not None else [])
    for packet in container.demux(streams):
        if packet.stream.index == video.index:
            if picker.done:
                continue
            skip.before(packet)
            for frame in decode_packet(packet, path, errors):
                by_pts = frame.time is not None and not by_index
                time = frame.time - origin if by_pts else index * frame_step
                picker.feed(time, frame)
                index += 1
                frames_end = max(frames_end or 0.0, time + frame_step)
            if skip.enabled and packet.size and (end := _packet_end(packet, origin)) is not None:
                packets_end = max(packets_end or 0.0, end)  # skipped frames still count for the duration
        elif not collector.done(max_seconds):
            for frame in decode_packet(packet, path, errors):
                collector.feed(frame)
        if picker.done and (collector is None or collector.done(max_seconds)):
            break
    if frames_end is not None and packets_end is not None:
        frames_end = max(frames_end, packets_end)
    return frames_end, len(errors)


def decode_pyav(path: str | Path, image_size: int = 224) -> DecodedVideo:
    """Decode ``path`` with PyAV: T frames at t + 0.5 s and T seconds of 16 kHz mono audio."""
    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        streams = describe_streams(container, video, audio)
        declared = header_duration(container, video)
        max_seconds = check_seconds(path, declared) if declared is not None else None
        video.thread_type = "AUTO"
        picker = NearestFramePicker(max_seconds, lambda frame: clip_resize(frame_to_rgb(frame), image_size))
        collector = AudioCollector(audio, stream_start(video)) if audio is not None else None
        frames_end, errors = _decode_pass(container, video, picker, collector, max_seconds, path)
        if frames_end is None:
            raise DecodeError(path, f"no video frame could be decoded ({errors} corrupt packets)")
        if errors:
            logger.warning("%s: %d corrupt packets skipped", path, errors)
        if picker.done:
            seconds, duration = max_seconds, declared
        else:
            seconds, duration = seconds_decoded(path, declared, frames_end)
        frames, times = picker.finish(seconds)
        if collector is not None:
            wave, valid = collector.finish(seconds)
        else:
            wave, valid = np.zeros((seconds, SAMPLE_RATE), np.float32), np.zeros(seconds, bool)
    streams["corrupt_packets"] = errors
    return DecodedVideo(frames, wave, valid, times, duration, audio is not None, "pyav", streams)

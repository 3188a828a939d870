"""PyAV decode backend (DESIGN.md §3 "Decoding"), and all audio decoding.

One sequential pass over the chosen video and audio streams (FFmpeg's threads, or one: ``threads``): frames
are picked by timestamp (never by seeking, a trap when keyframes are far apart), turned upright, converted
and resized only when chosen. A demux pass first plans which video packets the frames taken need (plan.py,
exact): the rest are not decoded, and decoding stops once the last needed frame and second of audio are in.
AVI timestamps count frames in decode order, so AVI frames are timed by their output index. Audio is placed
by its timestamps on the video's timeline (a gap stays a gap, flagged invalid), resampled to 16 kHz keeping
its channels, then averaged to mono: FFmpeg's own downmix would scale a stereo tone by sqrt(2), the mean keeps
amplitudes, like librosa. ``device="cuda"`` decodes with NVDEC (pyav-cuda; gpu_frames.py). How much this
saves: docs/extraction.md, "Decoding only what is needed".
"""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel

from avaf.extract.decode.gpu_frames import resize_cuda, upright_cuda, yuv_to_rgb
from avaf.extract.decode.plan import NONREF, SEND, PacketFeeder, PacketScan, plan_packets, scan_packets
from avaf.extract.decode.probe import (
    FRAME_COUNT_CONTAINERS,
    choose_streams,
    declared_end,
    describe_streams,
    display_matrix,
    open_container,
    stream_origin,
    stream_start,
    timeline_info,
)
from avaf.extract.decode.sampling import (
    SAMPLE_RATE,
    DecodedVideo,
    DecodeError,
    NearestFramePicker,
    assemble_audio,
    check_seconds,
    orientation,
    sample_times,
    seconds_decoded,
    upright,
    whole_seconds,
)
from avaf.extract.decode.views import Views, as_views, make_views

logger = logging.getLogger(__name__)

AUDIO_MARGIN_S = 0.2  # keep decoding audio this far past T so the resampler has emitted second T - 1
# Audio timestamps further than this from where the samples already decoded put them are a gap (or an
# overlap): the audio is re-placed at its timestamp. Under one video frame at 25 fps; Matroska rounds to 1 ms.
AUDIO_JUMP_S = 0.04


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, honouring a full-range flag on formats that do not imply it (yuv420p + JPEG)."""
    if frame.color_range in (1, 2):  # MPEG (limited) or JPEG (full); 0 leaves it to the pixel format
        return frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
    return frame.to_ndarray(format="rgb24")


def frame_to_cuda_rgb(frame: av.VideoFrame, path: str | Path):
    """(H, W, 3) uint8 RGB CUDA tensor from an NVDEC frame that stayed on the GPU (DLPack, no copy to the CPU)."""
    import torch

    if frame.format.name != "cuda":
        raise DecodeError(path, f"NVDEC handed back a {frame.format.name} frame, not a GPU one")
    torch.cuda.synchronize()  # FFmpeg's copy out of the decoder's surface is done before torch reads it
    # the capsule itself: PyAV refuses the stream torch would pass to __dlpack__ (synchronised above)
    luma, chroma = (torch.from_dlpack(plane.__dlpack__()) for plane in frame.planes[:2])
    return yuv_to_rgb(luma, chroma, frame.colorspace, frame.color_range)


class Upright:
    """Frames -> upright RGB by their display matrix; remembers the first orientation for the video's record.

    On ``cuda`` the frames are NVDEC's, and the RGB a CUDA tensor."""

    def __init__(self, path: str | Path, cuda: bool = False) -> None:
        self.path = path
        self.cuda = cuda
        self.seen: tuple[int, bool] | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame_to_cuda_rgb(frame, self.path) if self.cuda else frame_to_rgb(frame)
        matrix = display_matrix(frame)
        turn = orientation(matrix)
        if turn is None:
            logger.warning(
                "%s: display matrix %s is not a quarter turn; frames left as coded", self.path, matrix
            )
            turn = (0, False)
        if self.seen is None:
            self.seen = turn
        return upright_cuda(rgb, *turn) if self.cuda else upright(rgb, *turn)

    def info(self) -> dict:
        turns, mirrored = self.seen or (0, False)
        return {"rotation": 90 * turns, "mirrored": mirrored}


def _resampler() -> av.AudioResampler:
    # keeps the input layout; one-second output frames halve the per-frame overhead of ~23 ms AAC frames
    return av.AudioResampler(format="fltp", rate=SAMPLE_RATE, frame_size=SAMPLE_RATE)


class AudioCollector:
    """Decoded audio frames -> 16 kHz mono chunks placed at their time from ``origin``.

    Samples run on contiguously from the first frame's timestamp while the timestamps agree with them (within
    AUDIO_JUMP_S of the anchor plus the samples since, so small jitter never accumulates); a frame whose
    timestamp jumps flushes the resampler and starts a new run at its own time, so a gap stays a gap.
    """

    def __init__(self, stream, origin: float) -> None:
        self.stream = stream
        self.origin = origin
        self.resampler = _resampler()
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.next_start: int | None = None
        self.input_end = -math.inf  # seconds from origin reached by the decoded input
        self.gaps = 0  # timestamp jumps the audio was re-placed at
        self._anchor = (0.0, 0, 1)  # (time of the run's first sample, input samples since, input rate)

    def feed(self, frame: av.AudioFrame) -> None:
        start = (frame.time - self.origin) if frame.time is not None else max(self.input_end, 0.0)
        rate = frame.sample_rate
        if self.next_start is None:
            self.next_start, self._anchor = round(start * SAMPLE_RATE), (start, 0, rate)
        else:
            anchor, fed, was = self._anchor
            if frame.time is not None and abs(start - (anchor + fed / was)) > AUDIO_JUMP_S:
                self._jump(start, rate)
            elif rate != was:  # the same run at another input rate: move the anchor to here
                self._anchor = (anchor + fed / was, 0, rate)
        anchor, fed, _ = self._anchor
        self._anchor = (anchor, fed + frame.samples, rate)
        self.input_end = start + frame.samples / rate
        for out in self.resampler.resample(frame):
            self._add(out)

    def _jump(self, start: float, rate: int) -> None:
        """The timestamps jump to ``start``: finish the current run and begin the next one there."""
        for out in self.resampler.resample(None):
            self._add(out)
        self.resampler = _resampler()
        self.next_start, self._anchor = round(start * SAMPLE_RATE), (start, 0, rate)
        self.gaps += 1

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


def read_audio(container, stream, origin: float, seconds: int, path: str | Path, info: dict | None = None):
    """Decode ``stream`` alone (a second pass, for the by-index backends and audio-only files); the number of
    timestamp jumps goes to ``info["audio_gaps"]``."""
    collector = AudioCollector(stream, origin)
    errors: list[str] = []
    for packet in container.demux(stream):
        for frame in decode_packet(packet, path, errors):
            collector.feed(frame)
        if collector.done(seconds):
            break
    if errors:
        logger.warning("%s: %d corrupt audio packets skipped", path, len(errors))
    if info is not None:
        info["audio_gaps"] = collector.gaps
    return collector.finish(seconds)


def _decode_pass(container, video, picker, collector, plan, path, origin) -> tuple[float | None, int]:
    """One demux pass feeding ``picker`` and ``collector``; returns (end of the video, bad packets)."""
    rate = video.average_rate or video.guessed_rate
    frame_step = 1.0 / float(rate) if rate else 0.0
    by_index = container.format.name in FRAME_COUNT_CONTAINERS
    feeder = PacketFeeder(video.codec_context, plan)
    first = stream_start(video) - origin  # where an AVI's frame 0 sits on the timeline
    frames_end, index, errors, video_done = None, 0, [], False
    streams = [video] + ([collector.stream] if collector is not None else [])

    def take(frames) -> None:
        nonlocal index, frames_end
        for frame in frames:
            by_pts = frame.time is not None and not by_index
            time = frame.time - origin if by_pts else first + index * frame_step
            picker.feed(time, frame)
            index += 1
            frames_end = max(frames_end or 0.0, time + frame_step)

    for packet in container.demux(streams):
        if packet.stream.index == video.index:
            if video_done or picker.done:
                continue
            if feeder.wants(packet):
                take(decode_packet(packet, path, errors))
            if feeder.finished:  # the rest is not needed: drain the frames the decoder still holds
                take(_drain(video, path, errors))
                video_done = True
        elif not collector.done(picker.max_seconds):
            for frame in decode_packet(packet, path, errors):
                collector.feed(frame)
        if (picker.done or video_done) and (collector is None or collector.done(picker.max_seconds)):
            break
    return frames_end, len(errors)


def _drain(video, path: str | Path, errors: list[str]) -> list:
    try:
        frames = video.codec_context.decode(None)
    except av.error.FFmpegError as err:
        errors.append(str(err))
        return []
    for frame in frames:  # PyAV leaves the time base of drained frames unset (their time would be NaN)
        frame.time_base = video.time_base
    return frames


def decode_pyav(
    path: str | Path,
    image_size: int | Views = 224,
    threads: int = 0,
    plan: bool = True,
    device: str = "cpu",
) -> DecodedVideo:
    """Decode ``path`` with PyAV: T frames at t + 0.5 s and T seconds of 16 kHz mono audio.

    image_size: CLIP's side, or the views to make of each frame taken (views.py), each from the frame.

    threads: 0 lets FFmpeg choose (frame and slice threads: the shortest wall time on idle cores), 1 decodes
    on one thread (the fewest CPU-seconds, for machines whose cores all decode), n uses n threads.
    plan: decode only the packets the sampling rule needs (plan.py; exact); False decodes every packet (the
    reference the tests compare with).
    device: "cuda" decodes the video on the GPU with NVDEC (FFmpeg's hwaccel, in the FFmpeg PyAV bundles) and
    converts, turns and resizes the frames there: ``frames`` is a uint8 CUDA tensor. The same packet plan and
    frames as on the CPU; DecodeError (the PyAV CPU path takes over) where NVDEC cannot decode the stream.
    """
    cuda = device == "cuda"
    if cuda and (problem := nvdec_problem()):
        raise DecodeError(path, problem)
    with open_container(path, _nvdec() if cuda else None) as container:
        video, audio = choose_streams(container, path)
        streams = describe_streams(container, video, audio)
        origin = stream_origin(video, audio)
        declared = declared_end(container, video, origin)
        max_seconds = check_seconds(path, declared) if declared is not None else None
        _set_threads(video, 1 if cuda else threads)  # NVDEC decodes; the CPU only parses
        scan = scan_packets(path, video.index, origin) if _plans(container, plan) else None
        actions = _packet_plan(scan, max_seconds)
        turn, views, cpu = Upright(path, cuda), as_views(image_size), {"rgb": 0.0, "resize": 0.0}
        picker = NearestFramePicker(max_seconds, _converter(turn, cuda, views, cpu), views)
        collector = AudioCollector(audio, origin) if audio is not None else None
        frames_end, errors = _decode_pass(container, video, picker, collector, actions, path, origin)
        _check_decoded(path, cuda, frames_end, errors)
        seconds, duration = max_seconds, declared
        if not picker.done:  # packets that were not decoded still count for where the video ends
            end = max(frames_end, scan.end) if scan is not None else frames_end
            seconds, duration = seconds_decoded(path, declared, end)
        per_view, times = picker.finish(seconds)
        wave, valid = collector.finish(seconds) if collector is not None else assemble_audio([], seconds)
    streams |= timeline_info(video, audio, origin) | turn.info()
    streams["audio_gaps"] = collector.gaps if collector is not None else 0
    streams["corrupt_packets"] = errors
    if actions is not None:
        streams["packets_sent"] = [int((actions == SEND).sum() + (actions == NONREF).sum()), len(actions)]
    name = "pyav-cuda" if cuda else "pyav"
    return DecodedVideo(
        per_view[0], wave, valid, times, duration, audio is not None, name, streams,
        views=dict(zip(views, per_view)), cpu=cpu,
    )  # fmt: skip


def _plans(container, plan: bool) -> bool:
    """Whether to plan the packets: asked for, and the container's timestamps are presentation times."""
    return plan and container.format.name not in FRAME_COUNT_CONTAINERS


def _packet_plan(scan: PacketScan | None, max_seconds: int | None) -> np.ndarray | None:
    """What to do with each video packet (plan.py), or None (no scan: decode every packet)."""
    if scan is None:
        return None
    count = max_seconds if max_seconds is not None else whole_seconds(scan.end) + 1
    return plan_packets(scan, sample_times(count))


def _converter(turn: Upright, cuda: bool, views: Views, cpu: dict[str, float]):
    """A chosen frame -> one (S, S, 3) uint8 per view, upright, each view made from the frame (on the GPU for
    NVDEC's frames). Adds this thread's CPU-seconds to ``cpu["rgb"]`` (to RGB, upright) and ``cpu["resize"]``
    (the views): a few microseconds a frame."""
    if cuda:
        return lambda frame: _cuda_views(turn(frame)[None], views)

    def convert(frame) -> tuple:
        start = time.thread_time()
        rgb = turn(frame)
        middle = time.thread_time()
        out = make_views(rgb, views)
        cpu["rgb"] += middle - start
        cpu["resize"] += time.thread_time() - middle
        return out

    return convert


def _cuda_views(frames, views: Views) -> tuple:
    return tuple(resize_cuda(frames, v)[0] for v in views)


def _check_decoded(path: str | Path, cuda: bool, frames_end: float | None, errors: int) -> None:
    """DecodeError when no frame came out, or NVDEC refused packets; a log line for corrupt packets."""
    if cuda and errors:  # NVDEC refused packets (or the file is corrupt): the CPU decode tells which
        raise DecodeError(path, f"NVDEC failed on {errors} packets")
    if frames_end is None:
        raise DecodeError(path, f"no video frame could be decoded ({errors} corrupt packets)")
    if errors:
        logger.warning("%s: %d corrupt packets skipped", path, errors)


def _nvdec():
    """PyAV's hardware decoding on the current CUDA device, the frames kept there (DLPack).

    FFmpeg runs in torch's CUDA context (current_ctx), made current on this thread first: asked for the
    primary context instead, FFmpeg refuses it once torch holds it (other scheduling flags: EOPNOTSUPP)."""
    import torch

    index = torch.cuda.current_device()
    torch.cuda.synchronize(index)  # the runtime makes the device's primary context current on this thread
    options = {"primary_ctx": "0", "current_ctx": "1"}
    return HWAccel("cuda", str(index), allow_software_fallback=False, options=options, is_hw_owned=True)


@functools.cache
def nvdec_problem() -> str | None:
    """None when PyAV can decode H.264 with NVDEC into CUDA frames here, else why not (one line); tried once
    per process on a tiny clip made on the spot."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to this process"
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        return "this PyAV's FFmpeg has no CUDA hardware decoding"
    clip = io.BytesIO()
    with av.open(clip, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": "4"})
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for i in range(8):
            image = np.full((128, 128, 3), 30 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    try:
        with av.open(io.BytesIO(clip.getvalue()), hwaccel=_nvdec()) as container:
            frames = list(container.decode(container.streams.video[0]))
            frame_to_cuda_rgb(frames[-1], "NVDEC test clip")
    except Exception as err:  # FFmpegError (no libnvcuvid, no NVDEC on this GPU), DecodeError, DLPack errors
        return f"NVDEC does not decode here ({type(err).__name__}: {str(err)[:160]})"
    return None


def _set_threads(video, threads: int) -> None:
    if threads == 1:
        video.thread_type = "NONE"
    else:
        video.thread_type = "AUTO"
        video.thread_count = threads  # 0: FFmpeg's choice (one per core)

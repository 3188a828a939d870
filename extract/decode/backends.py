"""Decode videos into what the encoders need: one CLIP-ready frame and one second of 16 kHz audio per second.

DESIGN.md §3 "Sampling" and "Decoding". ``decode_video(path)`` returns a ``DecodedVideo``:

* T = whole seconds of the video stream (floor of its duration, forgiving a shortfall under 0.05 s, so a
  29.97 fps clip of 59.993 s has 60). A clip under one second raises DecodeError: there is nothing to sample,
  and a sub-second AVQA clip is almost always a broken download. A file whose frames stop more than 1 s
  before the duration its header declares is truncated (DecodeError).
* Second t: the frame nearest t + 0.5 s (the earlier on a tie), resized like CLIP's preprocess (shorter side
  to 224, PIL bicubic, centre crop) and kept uint8; audio samples [t * 16000, (t + 1) * 16000) of the mono
  16 kHz waveform. Only T * 16000 samples are kept: VGGish example t is ``audio[t, :15360]``.
* One timeline per video, from the presentation timestamps: time 0 is the video stream's start, or the
  audio's when it starts over 0.1 s earlier (``timeline_origin``). Variable frame rate, late audio (start
  offsets, edit lists) and a video that starts after its audio all keep second t of audio with second t of
  video; ``timestamps`` records the time of each frame taken. Frames are turned upright by their display
  matrix before the resize (``streams["rotation"]``, ``streams["mirrored"]``).
* Audio always comes from PyAV (or librosa for audio-only files): FFmpeg's best audio stream, resampled to
  16 kHz per channel then averaged to mono, placed by its timestamps (a gap stays a gap). Missing audio is
  zeros with ``audio_valid`` False for every second less than half covered; no audio stream gives
  ``has_audio`` False.
* Audio-only files (wav, flac, mp3, m4a, ...) load through librosa (PyAV when librosa cannot read the
  format): ``has_video`` False, ``frames`` of shape (0, S, S, 3), T from the audio's duration.
* Backends: "pyav" (one sequential pass, frames picked by timestamp; a demux pass plans which packets the
  frames taken need and only those are decoded, exactly: plan.py; stops after the last needed frame),
  "decord" (``get_batch`` at the nearest indices; refuses MPEG-TS/PS and AVI, whose frames it gets wrong,
  and rotated videos, which it turns wrongly), "pyav-cuda" (PyAV's pass and packet plan with NVDEC, the
  frames converted and resized on the GPU and left there as a CUDA tensor), "torchcodec" and
  "torchcodec-cuda" (the plan's frame indices; on the GPU the frames stay a CUDA tensor). The last three
  fall back to PyAV, with one line, where torchcodec, the system's FFmpeg, CUDA or NVDEC is missing.
  "auto" tries ``auto_order()`` (AUTO_ORDER: never a GPU decoder, see there) and falls back on a backend
  failure; ``decoder`` records which one served, and ``streams["failed_attempts"]`` the failures before it.
* decord is optional (``pip install 'avaf[decord]'``: its wheels exist for x86-64 Linux and Windows only).
  Without it "auto" uses PyAV alone (``check_backend`` logs it; a video PyAV cannot decode fails with the
  fix in its error), and asking for "decord" is a one-line error naming the fix, before any work
  (``check_backend``), or this video's ``DecodeError`` on a Ray worker that lacks decord.

Speed, from ``tests/benchmarks/bench_decode.py`` (generated 60 s H.264 High CRF 23 + AAC clips at 25 and 30
fps, a keyframe every 250 or every 12 frames; CPU-seconds per video, one video at a time, 1 pass; 2-core AMD
EPYC VM, 1-minute load 1.0-2.0 with the benchmark's own ~1, 2026-11-30; PyAV 18.1 / FFmpeg 8; decord 0.6.0
from an earlier run at load 5-12; naive = the AVQA repositories' ffmpeg -> 1-fps JPEG (-q:v 2) + 16 kHz WAV,
read back, reproduced with PyAV):

    keyframe every 250 frames      640x360   1280x720   1920x1080     every 12 frames: 360p   720p   1080p
    pyav, 1 thread (a Ray task)      0.98       2.49       5.24                        1.01   2.41    5.14
    pyav, FFmpeg threads (alone)     1.18       3.14       6.20                        1.09   2.88    5.67
    pyav decoding every frame        1.44       4.08       8.87                        2.37   7.11   13.84
    decord (earlier run)             1.48       4.21       9.56                        2.09   5.51   11.29
    naive ffmpeg -> JPEG + WAV       1.88       5.15       9.83                        2.73   7.88   16.86

so "auto" starts with PyAV. ``decode_isolated`` (worker.py) runs the same decode in a child process
with a timeout, so a hung or crashing decoder costs one video.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avaf.extract.decode.decord_backend import DECORD_MISSING, decord_problem
from avaf.extract.decode.probe import (
    choose_streams,
    describe_streams,
    header_duration,
    open_container,
    stream_start,
)
from avaf.extract.decode.pyav_backend import decode_pyav, nvdec_problem, read_audio
from avaf.extract.decode.sampling import (
    SAMPLE_RATE,
    DecodedVideo,
    DecodeError,
    MediaError,
    assemble_audio,
    check_seconds,
    sample_times,
    whole_seconds,
)
from avaf.extract.decode.torchcodec_backend import TORCHCODEC_MISSING, decode_torchcodec, torchcodec_problem

__all__ = [
    "AUTO_ORDER",
    "AUDIO_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DECORD_MISSING",
    "GPU_BACKENDS",
    "TORCHCODEC_MISSING",
    "DecodeError",
    "DecodedVideo",
    "MediaError",
    "auto_order",
    "backend_problem",
    "check_backend",
    "decode_audio_file",
    "decode_video",
    "decode_with_fallback",
    "find_media",
    "scan_media",
    "torchcodec_problem",
    "video_id",
    "whole_seconds",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .qt .flv .f4v .mpg .mpeg .m2v .ts .mts .m2ts .wmv .asf .3gp .3g2 .ogv "
    ".vob .mxf .divx".split()
)
AUDIO_EXTENSIONS = frozenset(".wav .flac .mp3 .m4a .aac .ogg .oga .opus .wma .aif .aiff .aifc".split())
AUTO_ORDER = ("pyav", "decord")  # fastest first: see the benchmark above


def require_known_backend(backend: str) -> None:
    """ValueError unless `backend` is "auto" or one of BACKENDS."""
    if backend != "auto" and backend not in BACKENDS:
        known = ", ".join(repr(b) for b in ("auto", *BACKENDS))
        raise ValueError(f"unknown backend {backend!r}: expected one of {known}")


def check_backend(backend: str) -> None:
    """Refuse, before any work, a backend that is unknown or not installed here (ValueError, one line).

    torchcodec and pyav-cuda are the exception: without torchcodec (or the system's FFmpeg), CUDA or NVDEC
    one line says so and PyAV decodes on the CPU instead; each video records which decoder served it.
    """
    require_known_backend(backend)
    problem = decord_problem() if backend in ("auto", "decord") else None
    if problem and backend == "decord":
        raise ValueError(f"--decoder decord: {problem}; or use --decoder auto (PyAV)")
    if problem:
        logger.info("--decoder auto uses PyAV alone (%s)", problem)
    if backend in FALLBACKS and (problem := backend_problem(backend)):
        logger.warning("--decoder %s: %s; decoding with PyAV instead", backend, problem)


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` (one of FALLBACKS) cannot decode in this process, or None."""
    if backend == "pyav-cuda":
        return nvdec_problem()
    return torchcodec_problem(TORCHCODEC_DEVICE[backend])


def auto_order() -> tuple[str, ...]:
    """The backends "auto" tries, in order. Never a GPU decoder: on an H200 node NVDEC through PyAV decoded
    1.6-2.1 videos/s at any concurrency, where its CPU cores decode ~12 (360p) and the encoders take ~80
    (docs/benchmarks.md); pyav-cuda and torchcodec-cuda are there when asked for."""
    return tuple(AUTO_ORDER)


def _decode_decord(path: str | Path, image_size: int = 224) -> DecodedVideo:
    problem = decord_problem()
    if problem:  # e.g. a Ray worker without decord: this video fails with the fix, the job goes on
        raise DecodeError(path, problem)
    from avaf.extract.decode.decord_backend import decode_decord  # decord is imported only when asked for

    return decode_decord(path, image_size)


def _decode_torchcodec_cpu(path: str | Path, image_size: int = 224, threads: int = 0) -> DecodedVideo:
    return decode_torchcodec(path, image_size, "cpu", threads)


def _decode_torchcodec_cuda(path: str | Path, image_size: int = 224, threads: int = 0) -> DecodedVideo:
    return decode_torchcodec(path, image_size, "cuda", threads)


def _decode_pyav_cuda(path: str | Path, image_size: int = 224, threads: int = 0) -> DecodedVideo:
    return decode_pyav(path, image_size, device="cuda")


def _decode_decord_any(path: str | Path, image_size: int = 224, threads: int = 0) -> DecodedVideo:
    return _decode_decord(path, image_size)


BACKENDS: dict[str, Callable[..., DecodedVideo]] = {
    "pyav": decode_pyav,
    "decord": _decode_decord_any,
    "torchcodec": _decode_torchcodec_cpu,
    "torchcodec-cuda": _decode_torchcodec_cuda,
    "pyav-cuda": _decode_pyav_cuda,
}
TORCHCODEC_DEVICE = {"torchcodec": "cpu", "torchcodec-cuda": "cuda"}
GPU_BACKENDS = ("pyav-cuda", "torchcodec-cuda")  # their frames come back as CUDA tensors
# asked for by name, these fall back to PyAV on a failure (missing library, FFmpeg, GPU or NVDEC; a refused
# file)
FALLBACKS = {name: (name, "pyav") for name in (*TORCHCODEC_DEVICE, "pyav-cuda")}


def is_audio_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _run(backend: str, path: str | Path, image_size: int, threads: int) -> DecodedVideo:
    # a backend is called (path, image_size) unless threads are asked for: a plain two-argument decode
    # function can stand in for one (tests do)
    run = BACKENDS[backend]
    return run(path, image_size, threads) if threads else run(path, image_size)


def decode_with_fallback(
    path: str | Path,
    order: tuple[str, ...] | None = None,
    image_size: int = 224,
    on_attempt: Callable[[str], None] | None = None,
    threads: int = 0,
) -> DecodedVideo:
    """Try the backends in ``order`` (default ``auto_order()``); a backend failure moves on, a MediaError (the
    file itself) does not. The failures before the one that served go to ``streams["failed_attempts"]``."""
    problems = []
    for backend in order if order is not None else auto_order():
        if on_attempt is not None:
            on_attempt(backend)
        try:
            video = _run(backend, path, image_size, threads)
        except MediaError:
            raise
        except DecodeError as err:
            logger.info("%s: %s failed (%s), trying the next backend", path, backend, err.problem)
            problems.append(f"{backend}: {err.problem}")
            continue
        if problems:
            video.streams["failed_attempts"] = problems
        return video
    raise DecodeError(path, "every backend failed: " + "; ".join(problems))


def decode_video(
    path: str | Path, backend: str = "auto", image_size: int = 224, threads: int = 0
) -> DecodedVideo:
    """Decode one video (or audio-only file, by extension) into T frames and T seconds of audio.

    threads: FFmpeg decoding threads (0: FFmpeg's choice; 1: the fewest CPU-seconds), PyAV and torchcodec.
    """
    require_known_backend(backend)
    if is_audio_file(path):
        return decode_audio_file(path)
    if backend == "auto":
        return decode_with_fallback(path, auto_order(), image_size, threads=threads)
    if backend in FALLBACKS:
        return decode_with_fallback(path, FALLBACKS[backend], image_size, threads=threads)
    return _run(backend, path, image_size, threads)


def _librosa_load(path: str | Path) -> np.ndarray | None:
    """Mono 16 kHz samples through librosa's soundfile path, or None when it cannot read the file."""
    import librosa

    try:
        with warnings.catch_warnings():  # its audioread fallback warns, then fails without ffmpeg
            warnings.simplefilter("ignore")
            samples, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True)
    except Exception as err:  # soundfile and audioread raise many types
        logger.debug("%s: librosa cannot read it (%s), using PyAV", path, err)
        return None
    return samples.astype(np.float32, copy=False)


def decode_audio_file(path: str | Path, image_size: int = 224) -> DecodedVideo:
    """An audio-only file: T seconds of 16 kHz mono audio and no frames (``has_video`` False)."""
    with open_container(path) as container:
        _, audio = choose_streams(container, path, need_video=False)
        if audio is None:
            raise MediaError(path, "no audio stream")
        streams = describe_streams(container, None, audio)
        samples = _librosa_load(path)
        if samples is not None:
            duration, decoder = len(samples) / SAMPLE_RATE, "librosa"
            seconds = check_seconds(path, duration)
            wave, valid = assemble_audio([(0, samples)], seconds)
        else:
            duration, decoder = header_duration(container, audio) or 0.0, "pyav"
            seconds = check_seconds(path, duration)
            wave, valid = read_audio(container, audio, stream_start(audio), seconds, path, streams)
    frames = np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    times = sample_times(seconds)
    return DecodedVideo(frames, wave, valid, times, duration, True, decoder, streams, has_video=False)


def video_id(path: str | Path) -> str:
    """The id a video is stored under: its file name without the extension."""
    return Path(path).stem


def scan_media(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(media files, other files) under ``folder``, recursively, each sorted.

    Raises ValueError naming both files when two media files share a video id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    media, skipped, seen = [], [], {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in VIDEO_EXTENSIONS | AUDIO_EXTENSIONS:
            skipped.append(path)
            continue
        other = seen.setdefault(video_id(path), path)
        if other != path:
            raise ValueError(f"two files have the video id {video_id(path)!r}: {other} and {path}")
        media.append(path)
    return media, skipped


def find_media(folder: str | Path) -> list[Path]:
    """Video and audio files under ``folder`` (recursive, sorted); logs the other files it skips."""
    media, skipped = scan_media(folder)
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        logger.warning(
            "%s: skipped %d files that are not media by extension (%s); extensions read: %s",
            folder,
            len(skipped),
            shown,
            " ".join(sorted(VIDEO_EXTENSIONS | AUDIO_EXTENSIONS)),
        )
    return media

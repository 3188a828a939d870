"""The decode backends and how one is chosen (DESIGN.md §3 "Decoding"): ``decode_video(path, backend)`` turns a
video (or an audio-only file, by extension) into a ``DecodedVideo``: T frames at t + 0.5 s and T seconds of
16 kHz mono audio (sampling.py).

``BACKENDS`` is the one table of them: each one's decode function, why it cannot decode here (None when it
can), the backend that takes over a video it fails on, whether its frames come back on the GPU, and whether
"auto" tries it. ``attempts`` answers "what to try, in what order" for this process and for the isolated
decode (worker.py) alike. "auto" is PyAV, then decord when PyAV fails on a video, never a GPU decoder;
pyav-cuda and the torchcodec ones fall back to PyAV, saying why. A new backend is its own module and one
line of the table. Why this order, and what each backend costs: docs/extraction.md, "Decoders".
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avaf.extract.decode.decord_backend import decode_decord, decord_problem
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
)
from avaf.extract.decode.torchcodec_backend import decode_torchcodec, torchcodec_problem
from avaf.extract.decode.views import Views, as_views, empty_views

__all__ = [
    "AUDIO_EXTENSIONS",
    "BACKENDS",
    "GPU_BACKENDS",
    "VIDEO_EXTENSIONS",
    "Backend",
    "DecodeError",
    "DecodedVideo",
    "MediaError",
    "attempts",
    "backend_problem",
    "check_backend",
    "decode_audio_file",
    "decode_video",
    "decode_with_fallback",
    "find_media",
    "scan_media",
    "video_id",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .qt .flv .f4v .mpg .mpeg .m2v .ts .mts .m2ts .wmv .asf .3gp .3g2 .ogv "
    ".vob .mxf .divx".split()
)
AUDIO_EXTENSIONS = frozenset(".wav .flac .mp3 .m4a .aac .ogg .oga .opus .wma .aif .aiff .aifc".split())


def _no_problem() -> str | None:
    return None  # PyAV: a dependency, always there


@dataclass(frozen=True)
class Backend:
    """One decode backend, as ``--decoder`` names it."""

    name: str  # the --decoder choice, and the decoder each video it serves records
    decode: Callable[[str | Path, int | Views, int], DecodedVideo]  # (path, image_size or views, threads)
    # why it cannot decode in this process (one line, the fix included), or None
    problem: Callable[[], str | None] = _no_problem
    fallback: str | None = None  # the backend that takes over a video this one fails on
    gpu: bool = False  # its frames come back as a CUDA tensor: it decodes in the process that encodes
    auto: bool = False  # "auto" tries it, in the table's order
    label: str = ""  # how messages name it (default: its name)

    @property
    def shown(self) -> str:
        return self.label or self.name


# "auto": PyAV first (the fastest on the CPU), decord when PyAV fails; never a GPU decoder, slower than the
# CPU cores of the same node (docs/extraction.md, "GPU decoding, and torchcodec")
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("pyav", decode_pyav, auto=True, label="PyAV"),
        Backend("decord", decode_decord, decord_problem, auto=True),
        Backend(
            "torchcodec",
            functools.partial(decode_torchcodec, device="cpu"),
            functools.partial(torchcodec_problem, "cpu"),
            fallback="pyav",
        ),
        Backend(
            "torchcodec-cuda",
            functools.partial(decode_torchcodec, device="cuda"),
            functools.partial(torchcodec_problem, "cuda"),
            fallback="pyav",
            gpu=True,
        ),
        Backend("pyav-cuda", functools.partial(decode_pyav, device="cuda"), nvdec_problem, "pyav", gpu=True),
    )
}
GPU_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.gpu)


def attempts(backend: str) -> tuple[str, ...]:
    """The backends to try for ``backend``, in order: for "auto" those the table marks ``auto``, else
    ``backend`` and its fallbacks. ValueError for a name that is not in the table."""
    if backend == "auto":
        return tuple(name for name, b in BACKENDS.items() if b.auto)
    if backend not in BACKENDS:
        known = ", ".join(repr(b) for b in ("auto", *BACKENDS))
        raise ValueError(f"unknown backend {backend!r}: expected one of {known}")
    order = [backend]
    while (after := BACKENDS[order[-1]].fallback) is not None and after not in order:
        order.append(after)
    return tuple(order)


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot decode in this process (one line, the fix included), or None."""
    return BACKENDS[backend].problem()


def check_backend(backend: str) -> None:
    """Refuse, before any work, a backend that is unknown or cannot decode here (ValueError, one line).

    Where another backend takes over (a fallback of pyav-cuda or torchcodec; "auto" without decord) one line
    says so instead; each video records which decoder served it.
    """
    order = attempts(backend)
    problems = {name: problem for name in order if (problem := backend_problem(name)) is not None}
    usable = [BACKENDS[name].shown for name in order if name not in problems]
    if backend == "auto" and problems:
        logger.info("--decoder auto uses %s alone (%s)", " and ".join(usable), "; ".join(problems.values()))
    elif backend in problems and usable:
        logger.warning("--decoder %s: %s; decoding with %s instead", backend, problems[backend], usable[0])
    elif backend in problems:
        auto = " and ".join(BACKENDS[n].shown for n in attempts("auto") if backend_problem(n) is None)
        raise ValueError(f"--decoder {backend}: {problems[backend]}; or use --decoder auto ({auto})")


def is_audio_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _run(backend: str, path: str | Path, image_size: int | Views, threads: int) -> DecodedVideo:
    """One backend on one video; DecodeError naming the fix where it cannot decode here (a Ray worker without
    decord: this video fails, the job goes on)."""
    problem = backend_problem(backend)
    if problem is not None:
        raise DecodeError(path, problem)
    return BACKENDS[backend].decode(path, image_size, threads)


def decode_with_fallback(
    path: str | Path,
    order: tuple[str, ...] | None = None,
    image_size: int | Views = 224,
    on_attempt: Callable[[str], None] | None = None,
    threads: int = 0,
) -> DecodedVideo:
    """Try the backends in ``order`` (default ``attempts("auto")``); a backend failure moves on, a MediaError
    (the file itself) does not. The failures before the one that served go to ``streams["failed_attempts"]``."""
    problems = []
    for backend in order if order is not None else attempts("auto"):
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
    path: str | Path,
    backend: str = "auto",
    image_size: int | Views = 224,
    threads: int = 0,
    order: tuple[str, ...] | None = None,
    on_attempt: Callable[[str], None] | None = None,
) -> DecodedVideo:
    """Decode one video (or audio-only file, by extension) into T frames and T seconds of audio.

    image_size: CLIP's side, or the views to make of each frame (views.py: one encoder's input each).
    threads: FFmpeg decoding threads (0: FFmpeg's choice; 1: the fewest CPU-seconds), PyAV and torchcodec.
    A backend with nothing to fall back on runs alone and raises its own error; otherwise
    ``decode_with_fallback`` tries ``order`` (default ``attempts(backend)``; the isolated decode passes those
    left after a crash), calling ``on_attempt`` with each backend as it starts.
    """
    chain = attempts(backend)
    if is_audio_file(path):
        return decode_audio_file(path, image_size)
    if len(chain) == 1:
        return _run(backend, path, image_size, threads)
    return decode_with_fallback(path, chain if order is None else order, image_size, on_attempt, threads)


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


def decode_audio_file(path: str | Path, image_size: int | Views = 224) -> DecodedVideo:
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
    views = as_views(image_size)
    frames = empty_views(views)
    times = sample_times(seconds)
    return DecodedVideo(
        frames[0], wave, valid, times, duration, True, decoder, streams, has_video=False,
        views=dict(zip(views, frames)),
    )  # fmt: skip


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

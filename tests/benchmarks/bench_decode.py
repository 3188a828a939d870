"""Benchmark: decode speed of avaf's backends against the naive approach of AVQA repositories.

Generates a handful of realistic clips with PyAV (60 s, 640x360, H.264 High CRF 23 with B-frames and a
keyframe every 250 frames, AAC stereo 44.1 kHz; textured scenes panning with sensor noise and a scene cut
every 10 s, 25 and 30 fps), then times, per video, in this process:

* pyav / decord: ``avaf.extract.decode.backends.decode_video(path, backend)`` (frames CLIP-resized + 16 kHz audio);
* pyav isolated: the same through ``decode_isolated`` (a reused child process; CPU read from /proc);
* naive: what AVQA repositories do — the ffmpeg CLI writes 1-fps JPEG frames and a 16 kHz mono WAV to disk,
  then they are read back (PIL + the same CLIP resize, soundfile). Needs an ffmpeg binary: ``--ffmpeg``,
  else ``ffmpeg`` on PATH, else the one shipped in the imageio-ffmpeg wheel; skipped when there is none.

Prints the machine, then videos/s (wall clock, one video at a time), CPU-seconds per video and the 1-minute
load average after each method (other work on the machine inflates wall times). Not a test: it never
asserts a time.

    python tests/benchmarks/bench_decode.py --videos 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} usable cores ({os.cpu_count()} online), {model}, {platform.platform()}"


def _scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured image twice the frame size: smooth colour blobs plus fine detail."""
    coarse = Image.fromarray((rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((width * 2, height * 2), Image.BICUBIC), dtype=np.int16)
    detail = rng.integers(-20, 21, size=smooth.shape, dtype=np.int16)
    return np.clip(smooth + detail, 0, 255).astype(np.int16)


def make_video(path: Path, seconds: int, width: int, height: int, fps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "fast", "g": "250"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=44100, layout="stereo")
        scene = _scene(rng, width, height)
        for i in range(seconds * fps):
            t = i / fps
            if i and i % (10 * fps) == 0:
                scene = _scene(rng, width, height)  # a cut: the encoder inserts a keyframe
            x = int(width / 2 * (1 + np.sin(2 * np.pi * t / 17)))
            y = int(height / 2 * (1 + np.sin(2 * np.pi * t / 11)))
            window = scene[y : y + height, x : x + width] + rng.integers(-3, 4, (height, width, 3), np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(window, 0, 255).astype(np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
        rate, hop = 44100, 1024
        notes = rng.uniform(110, 880, size=seconds * 2 + 2)
        for start in range(0, seconds * rate, hop):
            n = np.arange(start, start + hop)
            tone = np.sin(2 * np.pi * notes[n // (rate // 2)] * n / rate) * 0.3
            noisy = (tone + rng.normal(0, 0.02, (2, hop))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(noisy, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())


def find_ffmpeg(explicit: str | None) -> tuple[str | None, str]:
    if explicit:
        return explicit, "--ffmpeg"
    if shutil.which("ffmpeg"):
        return shutil.which("ffmpeg"), "PATH"
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe(), f"imageio-ffmpeg {imageio_ffmpeg.__version__}"
    except ImportError:
        return None, "none found"


def naive(path: Path, ffmpeg: str, work: Path) -> None:
    """ffmpeg -> 1 fps JPEGs + 16 kHz WAV on disk, then read back and CLIP-resized."""
    import soundfile

    from avaf.extract.decode.common import clip_resize

    frames_dir = work / path.stem
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir()
    quiet = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(path)]
    subprocess.run([*quiet, "-vf", "fps=1", str(frames_dir / "%06d.jpg")], check=True)
    subprocess.run([*quiet, "-ac", "1", "-ar", "16000", str(frames_dir / "audio.wav")], check=True)
    frames = [
        clip_resize(np.asarray(Image.open(f).convert("RGB")), 224) for f in sorted(frames_dir.glob("*.jpg"))
    ]
    wave, _ = soundfile.read(frames_dir / "audio.wav", dtype="float32")
    assert len(frames) > 0 and len(wave) > 0


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_now(extra) -> float:
    return time.process_time() + _child_cpu_s() + extra()


def timed(methods: dict[str, tuple], videos: list[Path], repeat: int) -> None:
    """Times every method on every video, interleaved (video by video) so load changes hit all alike."""
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    for run, _ in methods.values():
        run(videos[0])  # warm-up: imports, first-call costs
    for _ in range(repeat):
        for path in videos:
            for name, (run, extra) in methods.items():
                w0, c0 = time.perf_counter(), _cpu_now(extra)
                run(path)
                wall[name] += time.perf_counter() - w0
                cpu[name] += _cpu_now(extra) - c0
    n = len(videos) * repeat
    print(f"{'method':<16} {'videos/s':>8} {'s/video':>10} {'CPU-s/video':>12}")
    for name in methods:
        print(f"{name:<16} {n / wall[name]:8.3f} {wall[name] / n:10.2f} {cpu[name] / n:12.2f}")
    print(f"(1-minute load average at the end: {os.getloadavg()[0]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=5, help="how many clips to generate")
    parser.add_argument("--seconds", type=int, default=60, help="length of each clip")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the clips")
    parser.add_argument("--ffmpeg", help="ffmpeg binary for the naive baseline")
    parser.add_argument("--workdir", type=Path, help="keep the clips here (default: a temporary folder)")
    args = parser.parse_args()

    import decord

    from avaf.extract.decode.backends import decode_video
    from avaf.extract.decode.worker import IsolatedDecoder

    print(f"machine: {machine()}")
    print(
        f"PyAV {av.__version__} (libavcodec {av.library_versions['libavcodec']}), decord {decord.__version__}"
    )
    ffmpeg, origin = find_ffmpeg(args.ffmpeg)
    print(f"ffmpeg CLI for the naive baseline: {ffmpeg} ({origin})")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="avaf-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0, videos = time.perf_counter(), []
    for i in range(args.videos):
        path = work / f"clip{i}_{args.width}x{args.height}_{args.seconds}s.mp4"
        if not path.exists():
            make_video(path, args.seconds, args.width, args.height, fps=(25, 30)[i % 2], seed=i)
        videos.append(path)
    mbps = np.mean([p.stat().st_size * 8 / args.seconds / 1e6 for p in videos])
    print(
        f"{len(videos)} clips of {args.seconds} s {args.width}x{args.height}, {mbps:.2f} Mbit/s on average",
        end="",
    )
    print(f" (made in {time.perf_counter() - t0:.0f} s) in {work}; {args.repeat} passes\n")
    methods = {
        "pyav": (lambda p: decode_video(p, backend="pyav"), lambda: 0.0),
        "decord": (lambda p: decode_video(p, backend="decord"), lambda: 0.0),
    }
    with IsolatedDecoder() as isolated:
        child_cpu = lambda: _proc_cpu_s(isolated.pid)  # noqa: E731
        methods["pyav isolated"] = (lambda p: isolated.decode(p, 600, backend="pyav"), child_cpu)
        if ffmpeg:
            (work / "naive").mkdir(exist_ok=True)
            methods["naive ffmpeg"] = (lambda p: naive(p, ffmpeg, work / "naive"), lambda: 0.0)
        timed(methods, videos, args.repeat)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

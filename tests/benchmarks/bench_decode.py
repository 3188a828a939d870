"""Benchmark: CPU-seconds per video of avaf's decoders against the naive route of the AVQA repositories.

Generates realistic clips with PyAV (60 s, H.264 High CRF 23 with B-frames, textured scenes panning with
sensor noise and a scene cut every 10 s, 25 and 30 fps, AAC stereo 44.1 kHz) at each ``--sizes``, with a
keyframe every 250 frames (``--gops 250``, like YouTube) and, as a dense-keyframe variant, every 12; then
times every route on every clip, interleaved clip by clip so load changes hit all alike:

* naive: what AVQA repositories do, ``ffmpeg -i x.mp4 -vf fps=1 -q:v 2 %04d.jpg`` plus a 16 kHz mono WAV,
  then the JPEGs and the WAV read back (PIL + the same CLIP resize, soundfile). With the ffmpeg CLI
  (``--ffmpeg``, else on PATH) its processes are counted; without one, the route is reproduced in this
  process with PyAV: every frame decoded (FFmpeg's threads, as the CLI), FFmpeg's fps=1 filter, an MJPEG
  encode at qscale 2 per kept frame written to disk, the audio resampled to a 16 kHz WAV.
* avaf-extract on Ray (1 thread per decode task): ``decode_video(path, "pyav", threads=1)``, as each Ray
  decode task runs it on a machine without a GPU (the task holds one CPU and decodes its own video; PyAV,
  only the packets the sampling rule needs);
* one video alone (FFmpeg threads): ``decode_video(path, "pyav")``, the same decode on FFmpeg's threads
  (the shortest wall time on idle cores, more CPU-seconds);
* every frame: PyAV decoding every packet on FFmpeg's threads (the exact reference the tests compare with);
* decord, torchcodec: when installed (torchcodec needs the system's FFmpeg libraries).

``--device cuda`` adds torchcodec-cuda and pyav-cuda (NVDEC decode, frames kept on the GPU, resize there)
and counts their GPU wall time too (``torch.cuda.synchronize``); a route that cannot run here (no CUDA, no
NVDEC, a fall-back to the CPU) prints one line and the others go on.

CPU-seconds are user + system time of this process and its children (every thread), not wall time; the
1-minute load average is printed before and after each table (others' work inflates wall times more than
CPU-seconds). Not a test: it never asserts a time.

    python tests/benchmarks/bench_decode.py --sizes 640x360,1280x720,1920x1080 --gops 250,12 --workdir /tmp/clips
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


def make_video(
    path: Path, seconds: int, width: int, height: int, fps: int, seed: int, gop: int = 250
) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "fast", "g": str(gop)})
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


def make_videos(jobs: list[tuple[Path, int, int, int, int, int]]) -> None:
    """`make_video` for each (path, seconds, width, height, fps, seed) whose file is not there yet, one
    process per core (bench_extract.py and bench_feed.py generate their clips with it)."""
    from concurrent.futures import ProcessPoolExecutor

    todo = [j for j in jobs if not j[0].exists()]
    with ProcessPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        list(pool.map(_make_one, todo))


def _make_one(job: tuple[Path, int, int, int, int, int]) -> None:
    path, seconds, width, height, fps, seed = job
    make_video(path, seconds, width, height, fps=fps, seed=seed)


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


def naive_cli(path: Path, ffmpeg: str, work: Path) -> None:
    """The ffmpeg CLI writes 1-fps JPEGs at -q:v 2 and a 16 kHz mono WAV; both are read back."""
    folder = _fresh(work / path.stem)
    quiet = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(path)]
    subprocess.run([*quiet, "-vf", "fps=1", "-q:v", "2", str(folder / "%04d.jpg")], check=True)
    subprocess.run([*quiet, "-ac", "1", "-ar", "16000", str(folder / "audio.wav")], check=True)
    _read_back(folder)


def naive_pyav(path: Path, work: Path) -> None:
    """The same route reproduced with PyAV (no ffmpeg CLI here): every frame decoded with FFmpeg's threads,
    FFmpeg's fps=1 filter, an MJPEG at qscale 2 (-q:v 2) per kept frame written to disk, a 16 kHz mono WAV."""
    folder = _fresh(work / path.stem)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=video), graph.add("fps", "1"), graph.add("buffersink")]
        graph.link_nodes(*chain).configure()
        jpeg = av.CodecContext.create("mjpeg", "w")
        jpeg.width, jpeg.height, jpeg.pix_fmt = video.width, video.height, "yuvj420p"
        jpeg.time_base = video.time_base
        jpeg.options = {"flags": "+qscale", "qmin": "2", "qmax": "2"}  # -q:v 2
        count = 0

        def write(frame) -> None:
            nonlocal count
            for packet in jpeg.encode(frame.reformat(format="yuvj420p")):
                count += 1
                (folder / f"{count:04d}.jpg").write_bytes(bytes(packet))

        for frame in container.decode(video):
            graph.push(frame)
            while True:
                try:
                    write(graph.pull())
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
        graph.push(None)
        while True:
            try:
                write(graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                break
    with av.open(str(path)) as container, av.open(str(folder / "audio.wav"), "w") as out:
        audio = container.streams.audio[0]
        pcm = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in container.decode(audio):
            for piece in resampler.resample(frame):
                out.mux(pcm.encode(piece))
        for piece in resampler.resample(None):
            out.mux(pcm.encode(piece))
        out.mux(pcm.encode(None))
    _read_back(folder)


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _read_back(folder: Path) -> None:
    import soundfile

    from avaf.extract.decode.sampling import clip_resize

    jpegs = sorted(folder.glob("*.jpg"))
    frames = [clip_resize(np.asarray(Image.open(f).convert("RGB")), 224) for f in jpegs]
    wave, _ = soundfile.read(folder / "audio.wav", dtype="float32")
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


def timed(methods: dict[str, tuple], videos: list[Path], repeat: int) -> dict[str, float]:
    """Times every method on every video, interleaved (video by video); returns CPU-s per video by method."""
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    print(f"(1-minute load average before: {os.getloadavg()[0]:.2f})")
    for name, (run, _) in list(methods.items()):
        try:
            run(videos[0])  # warm-up: imports, first-call costs
        except Exception as err:  # a GPU route on a machine where it cannot run: say so, time the others
            print(f"{name}: skipped ({type(err).__name__}: {str(err)[:200]})")
            del methods[name], wall[name], cpu[name]
    for _ in range(repeat):
        for path in videos:
            for name, (run, extra) in methods.items():
                w0, c0 = time.perf_counter(), _cpu_now(extra)
                run(path)
                wall[name] += time.perf_counter() - w0
                cpu[name] += _cpu_now(extra) - c0
    n = len(videos) * repeat
    naive = next((cpu[k] for k in cpu if k.startswith("naive")), None)
    width = max(map(len, methods))
    print(f"{'route':<{width}} {'videos/s':>8} {'s/video':>8} {'CPU-s/video':>12} {'of naive':>9}")
    for name in methods:
        share = f"{cpu[name] / naive:9.0%}" if naive else ""
        print(f"{name:<{width}} {n / wall[name]:8.3f} {wall[name] / n:8.2f} {cpu[name] / n:12.2f} {share}")
    print(f"(1-minute load average after: {os.getloadavg()[0]:.2f})\n")
    return {k: v / n for k, v in cpu.items()}


def _ue(bits: str, at: int) -> tuple[int, int]:
    """An unsigned Exp-Golomb value at bit `at` of `bits` (a string of 0/1): (value, next bit)."""
    zeros = bits.index("1", at) - at
    end = at + 2 * zeros + 1
    return int(bits[at + zeros : end], 2) - 1, end


def h264_frame_kind(packet: bytes, length_size: int = 4) -> str:
    """The kind of one H.264 packet: I, P, B-ref or B (a B-frame nothing refers to) of one H.264 packet in MP4's length-prefixed
    form, from its first slice's NAL header (nal_ref_idc) and slice header (slice_type); "" without one."""
    at = 0
    while at + length_size < len(packet):
        size = int.from_bytes(packet[at : at + length_size], "big")
        nal = packet[at + length_size : at + length_size + size]
        at += length_size + size
        if not nal or nal[0] & 0x1F not in (1, 5):  # only coded slices (non-IDR, IDR)
            continue
        head = nal[1:16].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention bytes
        bits = "".join(f"{b:08b}" for b in head)
        _, at_type = _ue(bits, 0)  # first_mb_in_slice
        kind = "PBI"[_ue(bits, at_type)[0] % 5] if _ue(bits, at_type)[0] % 5 < 3 else "I"  # SP as P, SI as I
        return f"{kind}-ref" if kind == "B" and nal[0] >> 5 else kind
    return ""


def decode_floor(path: Path) -> dict:
    """The least decoding that reaches the frames avaf takes (the frame nearest each t + 0.5 s) in one H.264
    clip: the packets avaf's plan sends (plan.py: every reference frame from a taken frame's keyframe up to
    it, and the taken frames), decoded on one thread with nothing else: no RGB, no resize, no audio.

    Returns the frames by kind ("I", "P", "B-ref", "B") in the clip and among those decoded, the frames taken
    ("taken"), the frames the decoder gave back ("decoded") and the CPU-seconds of that decode ("cpu_s"); and
    what else avaf's decode does, apart: the packet scan that plans it ("scan_s", plan.py) and decoding and
    resampling the audio ("audio_s", pyav_backend.read_audio)."""
    from avaf.extract.decode.plan import NONREF, SEND, PacketFeeder, plan_packets, scan_packets
    from avaf.extract.decode.probe import choose_streams, declared_end, open_container, stream_origin
    from avaf.extract.decode.pyav_backend import read_audio
    from avaf.extract.decode.sampling import check_seconds, sample_times

    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        origin = stream_origin(video, audio)
        seconds = check_seconds(path, declared_end(container, video, origin))
        start = time.process_time()
        scan = scan_packets(path, video.index, origin)
        scan_s = time.process_time() - start
        actions = plan_packets(scan, sample_times(seconds))
        length_size = (video.codec_context.extradata[4] & 3) + 1  # avcC's lengthSizeMinusOne
        kinds = [h264_frame_kind(bytes(p), length_size) for p in container.demux(video) if p.size]
    clip = {k: kinds.count(k) for k in ("I", "P", "B-ref", "B")}
    sent = [k for k, a in zip(kinds, actions, strict=True) if a == SEND or (a == NONREF and k != "B")]
    with open_container(path) as container:
        video = container.streams.video[0]
        video.thread_type = "NONE"
        feeder, decoded, start = PacketFeeder(video.codec_context, actions), 0, time.process_time()
        for packet in container.demux(video):
            if feeder.wants(packet):
                decoded += len(packet.decode())
            if feeder.finished:
                decoded += len(video.codec_context.decode(None))
                break
        cpu = time.process_time() - start
    with open_container(path) as container:
        video, audio = choose_streams(container, path)
        start = time.process_time()
        if audio is not None:
            read_audio(container, audio, origin, seconds, path)
        audio_s = time.process_time() - start
    floor = {k: sent.count(k) for k in ("I", "P", "B-ref", "B")}
    return {
        "clip": clip,
        "floor": floor,
        "taken": int((actions == SEND).sum()),
        "decoded": decoded,
        "cpu_s": cpu,
        "scan_s": scan_s,
        "audio_s": audio_s,
    }


RAY = "avaf-extract on Ray (1 thread per decode task)"
ALONE = "one video alone (FFmpeg threads)"


def routes(args, work: Path) -> dict[str, tuple]:
    """The decode routes to time: name -> (run(path), extra CPU-seconds counter)."""
    from avaf.extract.decode import backends
    from avaf.extract.decode.pyav_backend import decode_pyav

    none = lambda: 0.0  # noqa: E731
    ffmpeg, origin = find_ffmpeg(args.ffmpeg)
    (work / "naive").mkdir(exist_ok=True)
    if ffmpeg:
        methods = {"naive (ffmpeg CLI)": (lambda p: naive_cli(p, ffmpeg, work / "naive"), none)}
    else:
        methods = {"naive (PyAV replica)": (lambda p: naive_pyav(p, work / "naive"), none)}
    print(f"naive route: {ffmpeg or 'no ffmpeg CLI here, reproduced with PyAV'} ({origin})")
    methods[RAY] = (lambda p: backends.decode_video(p, "pyav", threads=1), none)
    methods[ALONE] = (lambda p: backends.decode_video(p, "pyav"), none)
    methods["every frame (FFmpeg threads)"] = (lambda p: decode_pyav(p, plan=False), none)
    if backends.backend_problem("decord") is None and not args.no_decord:
        methods["decord"] = (lambda p: backends.decode_video(p, "decord"), none)
    problem = backends.backend_problem("torchcodec")
    if problem is None:
        methods["torchcodec"] = (lambda p: backends.decode_video(p, "torchcodec"), none)
    else:
        print(f"torchcodec: skipped ({problem})")
    if args.device == "cuda":
        for name, backend in (("torchcodec-cuda", "torchcodec-cuda"), ("pyav-cuda (NVDEC)", "pyav-cuda")):
            problem = backends.backend_problem(backend)
            if problem is None:
                methods[name] = (lambda p, b=backend: _cuda_run(backends, p, b), none)
            else:
                print(f"{name}: skipped ({problem})")
    return methods


def _cuda_run(backends, path: Path, backend: str) -> None:
    """One GPU decode, waited for (the GPU's work is asynchronous); an error if it fell back to the CPU."""
    import torch

    video = backends.decode_video(path, backend)
    if not getattr(video.frames, "is_cuda", False):
        raise RuntimeError(f"{backend} fell back to {video.decoder} on the CPU")
    torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=2, help="clips per size and keyframe interval")
    parser.add_argument("--seconds", type=int, default=60, help="length of each clip")
    parser.add_argument("--sizes", default="640x360,1280x720,1920x1080", help="WIDTHxHEIGHT,...")
    parser.add_argument("--gops", default="250,12", help="keyframe intervals (frames), one table each")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the clips")
    parser.add_argument("--ffmpeg", help="ffmpeg binary for the naive route (default: on PATH, else PyAV)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: add the GPU decoders")
    parser.add_argument("--no-decord", action="store_true", help="leave decord out")
    parser.add_argument("--workdir", type=Path, help="keep the clips here (default: a temporary folder)")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"PyAV {av.__version__} (libavcodec {av.library_versions['libavcodec']})")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="avaf-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    methods = routes(args, work)
    summary = []
    for size in args.sizes.split(","):
        width, height = (int(x) for x in size.split("x"))
        for gop in (int(g) for g in args.gops.split(",")):
            t0, videos = time.perf_counter(), []
            for i in range(args.videos):
                path = work / f"clip{i}_{width}x{height}_gop{gop}_{args.seconds}s.mp4"
                if not path.exists():
                    make_video(path, args.seconds, width, height, (25, 30)[i % 2], i, gop)
                videos.append(path)
            mbps = np.mean([p.stat().st_size * 8 / args.seconds / 1e6 for p in videos])
            print(
                f"{len(videos)} clips of {args.seconds} s {width}x{height}, keyframe every {gop} frames, ",
                end="",
            )
            print(f"{mbps:.2f} Mbit/s (ready in {time.perf_counter() - t0:.0f} s); {args.repeat} passes")
            cpu = timed(methods, videos, args.repeat)
            naive = next(v for k, v in cpu.items() if k.startswith("naive"))
            summary.append((f"{width}x{height} gop {gop}", naive, cpu[RAY], cpu[ALONE]))
    print(f"CPU-s/video: {RAY} = Ray; {ALONE} = alone")
    print(f"{'clips':<22} {'naive':>7} {'Ray':>7} {'alone':>7} {'Ray/naive':>10} {'alone/naive':>12}")
    for name, naive, ray, alone in summary:
        print(f"{name:<22} {naive:7.2f} {ray:7.2f} {alone:7.2f} {ray / naive:10.0%} {alone / naive:12.0%}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

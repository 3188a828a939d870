"""Benchmark: videos/s of avaf's extraction stage against the naive approach of AVQA repositories.

The figures of docs/benchmarks.md ("Whole extraction stage", "Local Ray against in-process", the GPU
sizing model). Generates N realistic 60 s 640x360 H.264 + AAC clips (bench_decode's generator:
textured panning scenes with noise and cuts, 25/30 fps), then, in one run, on the same clips:

1. decode alone: avaf's decoder, backend "auto", in its isolated child process (as the pipeline runs it);
2. the whole stage in-process: ``run_extract`` with ``RuntimeConfig(in_process=True)``;
3. the whole stage on a local Ray instance (``in_process=False``): decode tasks and the encoder actor
   overlap, one CPU each. The last line says which of the two ``avaf-extract`` picks for these videos
   when neither is asked for (``pipeline.choose_mode``);
4. naive, as the AVQA repositories do it: the ffmpeg CLI writes 1-fps JPEGs (``-vf fps=1``) and a 16 kHz
   mono WAV to disk; each JPEG is loaded with PIL, put through open_clip's preprocess transform and
   encoded alone (batch 1) by the same CLIP; the WAV goes through torchvggish's
   ``vggish_input.wavfile_to_examples`` and the same VGGish;
5. phases (stage_phases.py): the in-process stage's CPU-seconds per video split by phase (decode in the
   child, of which RGB and the views; send and receive of its result; CLIP; VGGish; write), beside avaf's
   decode alone, the decode floor and the naive route's decode (ffmpeg -> 1-fps JPEG + WAV) on the same clips.
   With ``--clip-model tests/benchmarks/ViT-tiny-224.json`` (one layer of width 32 on ViT-B/32's 224-px input:
   the same views and frames as the default) the encoders are not what it measures.

Full-size encoders (open_clip ViT-B-32, VGGish) with random weights: the released ones' FLOPs, no
download. Also the encoders alone (CLIP frames/s at the pipeline's batch and at batch 1, VGGish
audio-seconds/s) on CPU, and on the GPU (fp16) when there is one. Stage figures are end to end (encoder
loading, shards and feats.h5 included; Ray's start-up timed apart); the naive models load before its
clock. Per mode: CPU-seconds of this run's processes (Ray's included), the share of the machine's CPU
that other work took meanwhile, and the 1-minute load, since other work inflates wall times. Not a test.

The ffmpeg binary for the naive baseline: ``--ffmpeg``, else ``ffmpeg`` on PATH, else the imageio-ffmpeg
wheel (``pip download imageio-ffmpeg -d /tmp/x``, unzip it, pass its ``binaries/ffmpeg-*``).

    python tests/benchmarks/bench_extract.py --ffmpeg /tmp/x/imageio_ffmpeg/binaries/ffmpeg-linux-*
    python tests/benchmarks/bench_extract.py --videos 8 --skip naive --skip ray --workdir /tmp/clips
    python tests/benchmarks/bench_extract.py --videos 3 --size 1280x720 --clip-model tests/benchmarks/ViT-tiny-224.json \
        --skip decode --skip inprocess --skip ray --skip naive --skip encoders --skip sizing  # phases alone

``--videos-per-call`` defaults to 1, not the pipeline's 4: 4 clips at 4 per call leave Ray nothing to
overlap; on a long run batch k's encoding overlaps batch k+1's decoding, as 1 per call does on 4 clips.

Last run, 2026-11-25 20:52: 2 cores of an AMD EPYC VM (24 GB, no GPU), torch 2.14.1 CPU (2 threads),
open_clip 3.3.0, Ray 2.60.0, PyAV 18.1, ffmpeg 9.0.2 (imageio-ffmpeg 0.8.1); 4 clips of 0.63 Mbit/s;
1-minute load 1.0-1.8 (this run's own ~2 threads), other work <= 1% of the CPU during every mode. Two
more quiet runs (20:34, 20:40) were within 8 %.

    mode                              videos/s   s/video   CPU-s/video
    decode alone (auto: PyAV)           1.261      0.79        0.96
    avaf stage, in-process              0.186      5.38        9.56
    avaf stage, local Ray               0.095     10.52       13.35     (encoder actor: 1 torch thread)
    naive ffmpeg JPEG + WAV, batch 1    0.131      7.66       14.67     (ffmpeg 0.8, CLIP 6.0, VGGish 0.9 s)
    encoders alone: CLIP 17.4 frames/s at batch 64 (3.4 s per video), 10.3 at batch 1; VGGish 78 audio-s/s

Figures of every benchmark and what they mean: tests/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from bench_decode import find_ffmpeg, machine, make_videos

from avaf.extract.config import ClipConfig, ExtractConfig, InputConfig, RuntimeConfig, VGGishConfig

SECONDS, WIDTH, HEIGHT = 60, 640, 360  # MUSIC-AVQA's clips, the size every figure is given for: never shrink
SKIPPABLE = ("decode", "inprocess", "ray", "naive", "phases", "encoders", "gpu", "sizing")
# Dense fp16/bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, for the sizing
# model's estimates; the GPU this script runs on is measured instead.
GPU_CLASSES = {
    "T4": 65,
    "L4": 121,
    "A10": 125,
    "RTX 4090": 165,  # fp32 accumulation, as torch's fp16 matmuls use
    "A100": 312,
    "L40S": 362,
    "H100 SXM / H200": 989,
}


@dataclass
class Row:
    """One measured mode: `videos` videos in `wall` seconds, using `cpu` CPU-seconds (this process and
    every process it started) while other work on the machine used `others` CPU-seconds."""

    name: str
    videos: int
    wall: float
    cpu: float
    others: float
    load: tuple[float, float]
    notes: list[str] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=4, help="clips to generate (60 s, --size each)")
    p.add_argument(
        "--size", default=f"{WIDTH}x{HEIGHT}", help="WIDTHxHEIGHT of the clips (keyframe every 250)"
    )
    p.add_argument(
        "--clip-model",
        default="ViT-B-32",
        help="the stage's CLIP: an open_clip name or a config file (tiny: "
        "tests/benchmarks/ViT-tiny-224.json, so the split shows the rest of the stage)",
    )
    p.add_argument("--skip", action="append", default=[], choices=SKIPPABLE, help="repeatable")
    p.add_argument("--ffmpeg", help="ffmpeg binary for the naive baseline")
    p.add_argument("--workdir", type=Path, help="keep (and reuse) the clips here; default: a temp folder")
    p.add_argument("--videos-per-call", type=int, default=1, help="RuntimeConfig.videos_per_call")
    p.add_argument("--batch-size", type=int, default=RuntimeConfig().batch_size, help="frames per CLIP pass")
    p.add_argument("--decode-passes", type=int, default=2, help="passes over the clips for decode alone")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="encoders alone")
    p.add_argument(
        "--sizing-sizes",
        default="640x360,1280x720",
        help="clip sizes whose CPU decode cost the sizing model measures (2 clips each, 60 s)",
    )
    p.add_argument("--nvdec-threads", default="1,4,8,16", help="concurrent pyav-cuda decodes to time (GPU)")
    return p.parse_args()


def _load() -> float:
    return os.getloadavg()[0]


def _processes() -> dict[int, list[tuple[int, float]]]:
    """parent pid -> [(pid, CPU seconds of it and of the children it has reaped)], from /proc."""
    tick, children = os.sysconf("SC_CLK_TCK"), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        cpu = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
        children.setdefault(int(fields[1]), []).append((int(stat.parent.name), cpu))
    return children


def _descendants_cpu_s() -> float:
    """CPU seconds of every process started from this one, live or exited: the decode child, ffmpeg, and
    Ray's local instance (its raylet and workers descend from the driver that started it)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # exited children, and what they reaped
    total, children, todo = usage.ru_utime + usage.ru_stime, _processes(), [os.getpid()]
    while todo:
        for pid, cpu in children.get(todo.pop(), []):
            total += cpu
            todo.append(pid)
    return total


def _machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat, steal excluded)."""
    user, nice, system, _idle, _iowait, irq, softirq = Path("/proc/stat").read_text().split()[1:8]
    return sum(int(x) for x in (user, nice, system, irq, softirq)) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    return time.process_time() + _descendants_cpu_s()


class Clock:
    """Started at creation; `row` reads wall time, this run's CPU, other work's CPU and the load."""

    def __init__(self) -> None:
        self.load, self.wall, self.cpu, self.busy = _load(), time.perf_counter(), _cpu_s(), _machine_busy_s()

    def row(self, name: str, videos: int, notes: list[str]) -> Row:
        wall, cpu = time.perf_counter() - self.wall, _cpu_s() - self.cpu
        others = max(0.0, _machine_busy_s() - self.busy - cpu)
        return Row(name, videos, wall, cpu, others, (self.load, _load()), notes)


def make_clips(work: Path, n: int, width: int = WIDTH, height: int = HEIGHT) -> list[Path]:
    """n clips in work/clips (a folder holding nothing else, since the stage scans it), reused if there."""
    folder = work / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = [folder / f"clip{i}_{width}x{height}_{SECONDS}s.mp4" for i in range(n)]
    make_videos([(p, SECONDS, width, height, (25, 30)[i % 2], i) for i, p in enumerate(paths)])
    for extra in set(folder.iterdir()) - set(paths):
        raise SystemExit(f"{extra}: {folder} must hold only the generated clips")
    mbps = np.mean([p.stat().st_size * 8 / SECONDS / 1e6 for p in paths])
    print(f"{n} clips, {SECONDS} s {width}x{height} H.264 + AAC, {mbps:.2f} Mbit/s on average, ", end="")
    print(f"ready in {time.perf_counter() - t0:.0f} s, in {folder}")
    return paths


def bench_decode_alone(videos: list[Path], passes: int) -> Row:
    """avaf's decoder as the pipeline calls it: backend auto, in the shared isolated child process."""
    from avaf.extract.decode.worker import decode_isolated

    decode_isolated(videos[0], 600, backend="auto")  # warm-up: starts the child, imports PyAV there
    clock, backends = Clock(), set()
    for _ in range(passes):
        for path in videos:
            backends.add(decode_isolated(path, 600, backend="auto").decoder)
    return clock.row("decode alone (auto, isolated)", len(videos) * passes, [f"served by {backends}"])


def stage_config(clips: Path, out: Path, in_process: bool, args: argparse.Namespace) -> ExtractConfig:
    """--clip-model (full-size ViT-B-32 by default) + VGGish with random weights, otherwise the pipeline's
    defaults."""
    return ExtractConfig(
        out=str(out),
        input=InputConfig(videos=str(clips)),
        clip=ClipConfig(model=args.clip_model, pretrained="random"),
        vggish=VGGishConfig(weights="random"),
        runtime=RuntimeConfig(
            in_process=in_process, videos_per_call=args.videos_per_call, batch_size=args.batch_size
        ),
    )


def bench_stage(clips: Path, work: Path, in_process: bool, args: argparse.Namespace) -> Row:
    """One `run_extract` over every clip into a fresh output (so nothing is skipped as already done)."""
    from avaf.extract.pipeline import run_extract

    out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    cfg = stage_config(clips, out_dir / "feats.h5", in_process, args)
    clock = Clock()
    summary = run_extract(cfg, progress=False)
    name = "avaf stage, in-process" if in_process else "avaf stage, local Ray"
    notes = [f"written {summary.written}, failed {len(summary.failed)}"]
    row = clock.row(name, summary.written, notes + [f"FAILED {v}: {e}" for v, e in summary.failed.items()])
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def _worker_threads() -> tuple[int, str | None]:
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def default_mode(videos: int) -> str:
    """Where `avaf-extract` runs a local job of `videos` videos when neither mode is asked for."""
    from avaf.extract.pipeline import choose_mode

    return choose_mode(RuntimeConfig(), videos)[1]


def start_ray() -> list[str]:
    """Start the local Ray instance as run_extract does, timed apart; what a 1-CPU worker gets."""
    import ray

    from avaf.extract.ray_engine import start_ray as extraction_start  # the Ray engine's own, same settings

    t0 = time.perf_counter()
    extraction_start(None)
    started = time.perf_counter() - t0
    threads, omp = ray.get(ray.remote(num_cpus=1)(_worker_threads).remote())
    return [
        f"Ray {ray.__version__} local instance started in {started:.1f} s (not in the figure), "
        f"{ray.cluster_resources().get('CPU', 0):g} CPUs; a num_cpus=1 worker (the encoder actor) "
        f"runs torch with {threads} thread(s), OMP_NUM_THREADS={omp}"
    ]


def naive_models() -> tuple:
    """The same CLIP and VGGish networks as the stage, and open_clip's eval transform for that CLIP."""
    import open_clip

    from avaf.extract.encoders.clip_encoder import load_clip
    from avaf.extract.encoders.vggish_encoder import load_vggish

    clip = load_clip("ViT-B-32", "random")
    preprocess = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    return clip.model, preprocess, load_vggish("random").model


def naive_video(path: Path, ffmpeg: str, work: Path, models: tuple) -> dict[str, float]:
    """ffmpeg -> JPEGs + WAV on disk; each JPEG encoded alone; the WAV through torchvggish's front end."""
    from PIL import Image
    from torchvggish import vggish_input

    folder = work / path.stem
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    quiet = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(path)]
    subprocess.run([*quiet, "-vf", "fps=1", str(folder / "%06d.jpg")], check=True)
    subprocess.run([*quiet, "-ac", "1", "-ar", "16000", str(folder / "audio.wav")], check=True)
    t1, (clip, preprocess, vggish) = time.perf_counter(), models
    with torch.no_grad():
        frames = sorted(folder.glob("*.jpg"))
        visual = [clip.encode_image(preprocess(Image.open(f)).unsqueeze(0)) for f in frames]  # T x (1, D)
        np.save(folder / "visual.npy", torch.cat(visual).numpy())
        t2 = time.perf_counter()
        examples = vggish_input.wavfile_to_examples(str(folder / "audio.wav"))  # (T', 1, 96, 64)
        np.save(folder / "audio.npy", vggish(examples).numpy())  # (T', 128)
    t3 = time.perf_counter()
    return {"ffmpeg": t1 - t0, "clip": t2 - t1, "vggish": t3 - t2, "frames": len(frames)}


def bench_naive(videos: list[Path], ffmpeg: str, work: Path) -> Row:
    models = naive_models()  # loaded before the clock starts: the baseline is not charged for it
    (work / "naive").mkdir(exist_ok=True)
    clock = Clock()
    parts = [naive_video(p, ffmpeg, work / "naive", models) for p in videos]
    mean = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
    note = (
        f"per video: ffmpeg {mean['ffmpeg']:.1f} s, CLIP {mean['frames']:.0f} frames at batch 1 "
        f"{mean['clip']:.1f} s, VGGish {mean['vggish']:.1f} s"
    )
    row = clock.row("naive: ffmpeg JPEG+WAV, batch 1", len(videos), [note])
    shutil.rmtree(work / "naive", ignore_errors=True)
    return row


def _best_s(fn, repeats: int, cuda: bool) -> float:
    """Best wall time of `repeats` calls (the least disturbed by other work), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bench_encoders(device: str, batch: int, repeats: int = 2) -> list[str]:
    """CLIP frames/s at `batch` and at batch 1, VGGish audio-seconds/s of one video per call."""
    clock = Clock()
    rates = encoder_rates(device, (batch, 1), repeats, vggish_videos=1)
    batched, single, vgg = rates[batch], rates[1], rates["vggish"]
    threads = f", {torch.get_num_threads()} torch threads" if device != "cuda" else ""
    r = clock.row(device, 1, [])
    others = r.others / (r.wall * len(os.sched_getaffinity(0)))
    return [
        f"encoders alone on {device} ({rates['precision']}{threads}; best of {repeats}; others {others:.0%}, "
        f"load {r.load[0]:.2f} -> {r.load[1]:.2f}):",
        f"  CLIP ViT-B-32 images  {batched:8.2f} frames/s at batch {batch}, {single:.2f} at batch 1"
        f"  -> {SECONDS / batched:.1f} s per 60 s video",
        f"  VGGish (with log-mel) {vgg:8.1f} audio-seconds/s  -> {SECONDS / vgg:.1f} s per 60 s video",
    ]


def encoder_devices(choice: str, skip: list[str]) -> tuple[list[str], list[str]]:
    """Devices for the encoders-alone measurement, and notes on what was skipped."""
    devices = [] if "encoders" in skip else ["cpu"]
    if choice == "cpu" or "gpu" in skip:
        return devices, []
    if torch.cuda.is_available():
        return [*devices, "cuda"], []
    return devices, ["no CUDA device on this machine: encoders on GPU not measured"]


def print_rows(rows: list[Row]) -> None:
    if not rows:
        return
    cores = len(os.sched_getaffinity(0))
    print(f"\n{'mode':<32} {'videos':>6} {'videos/s':>9} {'s/video':>8} {'CPU-s/video':>12} ", end="")
    print(f"{'others':>7}  load 1-min")
    for r in rows:
        n = max(r.videos, 1)
        print(
            f"{r.name:<32} {r.videos:6d} {r.videos / r.wall:9.3f} {r.wall / n:8.2f} {r.cpu / n:12.2f} ",
            end="",
        )
        print(f"{r.others / (r.wall * cores):7.0%}  {r.load[0]:.2f} -> {r.load[1]:.2f}")
        for note in r.notes:
            print(f"{'':<34}{note}")
    print(
        "CPU-s: this run's processes (Ray's included); others: the machine's CPU used by other work meanwhile"
    )


def print_machine(ffmpeg: str | None, origin: str) -> None:
    import av
    import open_clip

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # a GPU box measured for the sizing model alone (--skip ray)
        ray_version = "not installed"
    gpu = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no CUDA"
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, machine: {machine()}")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), open_clip {open_clip.__version__}, "
        f"Ray {ray_version}, PyAV {av.__version__}, {gpu}"
    )
    print(f"ffmpeg for the naive baseline: {ffmpeg} ({origin}); 1-minute load average {_load():.2f}")


def flops_per_second_of_video() -> tuple[float, float]:
    """FLOPs (2 per multiply-add, torch's FlopCounterMode) of one frame through ViT-B/32's image tower and of
    one VGGish example (its network; the log-mel front end is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from avaf.extract.encoders.clip_encoder import load_clip
    from avaf.extract.encoders.vggish_encoder import load_vggish

    clip, vggish = load_clip("ViT-B-32", "random"), load_vggish("random")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel is invisible to the counter
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            clip.model.encode_image(torch.zeros(2, 3, 224, 224))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    with FlopCounterMode(display=False) as audio, torch.no_grad():
        vggish.model(torch.zeros(2, 1, 96, 64))  # the network alone: encode_examples pads to its batch
    return counter.get_total_flops() / 2, audio.get_total_flops() / 2


def encoder_rates(device: str, batches: tuple[int, ...], repeats: int = 3, vggish_videos: int = 8) -> dict:
    """CLIP frames/s at each batch size (4 passes' worth of frames) and VGGish audio-seconds/s with
    `vggish_videos` 60 s videos per call, as the pipeline calls them (fp16 on a GPU)."""
    from avaf.extract.encoders.clip_encoder import load_clip
    from avaf.extract.encoders.vggish_encoder import load_vggish

    cuda = device == "cuda"
    precision = "fp16" if cuda else "fp32"
    rng, rates = np.random.default_rng(0), {"precision": precision}
    for batch in batches:
        clip = load_clip("ViT-B-32", "random", device=device, precision=precision, batch_size=batch)
        frames = torch.from_numpy(rng.integers(0, 256, (batch * 4, 224, 224, 3), dtype=np.uint8))
        rates[batch] = len(frames) / _best_s(lambda c=clip, f=frames: c.encode_images(f), repeats, cuda)
    # passes of the pipeline's batch, as load_encoders makes them (--batch-size examples per VGGish pass)
    vggish = load_vggish("random", device=device, precision=precision, batch_size=batches[0])
    audio = [rng.uniform(-1, 1, (SECONDS, 16000)).astype(np.float32) for _ in range(vggish_videos)]
    per_call = lambda: vggish.encode_batch(audio, [SECONDS] * vggish_videos)
    rates["vggish"] = vggish_videos * SECONDS / _best_s(per_call, repeats, cuda)
    return rates


def decode_costs(work: Path, sizes: list[tuple[int, int]]) -> dict[str, float]:
    """CPU-seconds per 60 s clip of the CPU decode as a Ray decode task runs it (PyAV, one thread), per size."""
    from avaf.extract.decode.pyav_backend import decode_pyav

    costs = {}
    (work / "sizing").mkdir(parents=True, exist_ok=True)
    clips_of = {(w, h): [work / "sizing" / f"clip{i}_{w}x{h}.mp4" for i in range(2)] for w, h in sizes}
    make_videos(
        [
            (p, SECONDS, w, h, (25, 30)[i], 100 + i)
            for (w, h), ps in clips_of.items()
            for i, p in enumerate(ps)
        ]
    )
    for width, height in sizes:
        clips = clips_of[(width, height)]
        decode_pyav(clips[0], threads=1)  # warm-up
        clock = Clock()
        for path in clips:
            decode_pyav(path, threads=1)
        costs[f"{height}p"] = clock.row("", len(clips), []).cpu / len(clips)
    return costs


def nvdec_rates(work: Path, sizes: list[tuple[int, int]], threads: list[int]) -> list[str]:
    """pyav-cuda (NVDEC) decodes of the sizing clips, k at a time on threads as an encoder actor runs them."""
    from concurrent.futures import ThreadPoolExecutor

    from avaf.extract.decode.backends import backend_problem, decode_video

    problem = backend_problem("pyav-cuda")
    if problem:
        return [f"  pyav-cuda (NVDEC): not measured ({problem})"]
    lines = []
    for width, height in sizes:
        paths = sorted((work / "sizing").glob(f"*_{width}x{height}.mp4"))
        decode_video(paths[0], "pyav-cuda")  # warm-up: the CUDA context, NVDEC's first session
        for k in threads:
            jobs = [paths[i % len(paths)] for i in range(max(k, 4) * 2)]
            clock = Clock()
            with ThreadPoolExecutor(k) as pool:
                served = set(pool.map(lambda p: decode_video(p, "pyav-cuda").decoder, jobs))
            torch.cuda.synchronize()
            r = clock.row("", len(jobs), [])
            lines.append(
                f"  pyav-cuda (NVDEC) {height}p, {k:2d} at a time: {len(jobs) / r.wall:7.2f} videos/s, "
                f"{r.cpu / len(jobs):.2f} CPU-s/video (served by {', '.join(sorted(served))})"
            )
    return lines


def sizing_model(args: argparse.Namespace, work: Path) -> list[str]:
    """The throughput model: encoder appetite per GPU class, and the decode cores it takes to feed one."""
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizing_sizes.split(",") if s]
    costs = decode_costs(work, sizes)
    clip_flops, vggish_flops = flops_per_second_of_video()
    video_flops = SECONDS * (clip_flops + vggish_flops)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    batches = (args.batch_size, 256) if cuda else (args.batch_size,)
    rates = encoder_rates(device, batches)
    video_s = SECONDS / rates[args.batch_size] + SECONDS / rates["vggish"]  # encoder-seconds per video
    cost_text = ", ".join(f"{k} {v:.2f}" for k, v in costs.items())
    lines = [
        "",
        "throughput model (a 60 s video: 60 frames through ViT-B/32, 60 examples through VGGish)",
        f"  per frame {clip_flops / 1e9:.2f} GFLOP (ViT-B/32 image tower), per second of audio "
        f"{vggish_flops / 1e9:.2f} GFLOP (VGGish network): {video_flops / 1e9:.0f} GFLOP per video",
        f"  CPU decode as a Ray decode task runs it (PyAV, 1 thread), CPU-s per video: {cost_text}",
        f"  encoders here on {device} ({rates['precision']}): CLIP "
        + ", ".join(f"{rates[b]:,.0f} frames/s at batch {b}" for b in batches)
        + f"; VGGish {rates['vggish']:,.0f} audio-s/s (8 videos per call) -> {1 / video_s:,.1f} videos/s",
    ]
    if cuda:
        lines += nvdec_rates(work, sizes, [int(k) for k in args.nvdec_threads.split(",") if k])
    name = torch.cuda.get_device_name() if cuda else "this CPU"
    header = f"  {'GPU':<26} {'TFLOP/s':>8} {'videos/s':>9}" + "".join(f" {'cores @' + k:>11}" for k in costs)
    lines += ["", header]
    util = 0.25
    if cuda:
        peak = next((v for k, v in GPU_CLASSES.items() if any(p in name for p in k.split(" / "))), None)
        if peak:
            util = video_flops / video_s / (peak * 1e12)
        lines.append(_model_row(f"{name} (measured)", peak or 0, 1 / video_s, costs))
    for gpu, peak in GPU_CLASSES.items():
        lines.append(_model_row(f"{gpu} (est.)", peak, util * peak * 1e12 / video_flops, costs))
    basis = f"{util:.1%} of peak, as measured on {name}" if util != 0.25 else "25% of peak (no GPU measured)"
    lines += [
        f"  estimates: the encoders at {basis}, at batch {args.batch_size}. cores: CPU cores of PyAV decode",
        "  tasks (one thread and 1 GiB reserved each) that keep one such GPU busy = videos/s x CPU-s/video.",
    ]
    return lines


def _model_row(name: str, peak: float, videos: float, costs: dict[str, float]) -> str:
    return f"  {name:<26} {peak:8.0f} {videos:9,.1f}" + "".join(
        f" {videos * c:11,.0f}" for c in costs.values()
    )


def run_modes(args: argparse.Namespace, work: Path, videos: list[Path], ffmpeg: str | None) -> list[Row]:
    rows, clips = [], videos[0].parent
    if "decode" not in args.skip:
        rows.append(bench_decode_alone(videos, args.decode_passes))
    if "inprocess" not in args.skip:
        rows.append(bench_stage(clips, work, True, args))
    if "ray" not in args.skip:
        for line in start_ray():
            print(line)
        rows.append(bench_stage(clips, work, False, args))
        import ray

        ray.shutdown()  # frees its processes' memory and CPU for the naive baseline
    if "naive" not in args.skip and ffmpeg:
        rows.append(bench_naive(videos, ffmpeg, work))
    elif "naive" not in args.skip:
        print("no ffmpeg binary: naive baseline skipped (pass --ffmpeg)")
    return rows


def run_phases(args: argparse.Namespace, work: Path, videos: list[Path], ffmpeg: str | None) -> list[str]:
    """The in-process stage's CPU-seconds per video by phase, beside its decode alone, the decode floor and the
    naive route's decode, on the same clips (stage_phases.py)."""
    from stage_phases import report

    cfg = stage_config(videos[0].parent, work / "unused.h5", True, args)
    return report(cfg, videos, ffmpeg, work, _cpu_s, Clock)


def main() -> None:
    args = parse_args()
    ffmpeg, origin = find_ffmpeg(args.ffmpeg)
    print_machine(ffmpeg, origin)
    print(f"stage: {args.clip_model} + VGGish, random weights, batch {args.batch_size}, ", end="")
    print(f"{args.videos_per_call} video(s) per encoder call")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="avaf-bench-extract-"))
    width, height = (int(x) for x in args.size.split("x"))
    videos = make_clips(work, args.videos, width, height)
    rows = run_modes(args, work, videos, ffmpeg)
    print_rows(rows)
    print(
        f"avaf-extract without --in-process or --address, {len(videos)} videos: {default_mode(len(videos))}"
    )
    if "phases" not in args.skip:
        print("\n".join(run_phases(args, work, videos, ffmpeg)))
    devices, notes = encoder_devices(args.device, args.skip)
    for device in devices:
        print("\n".join(["", *bench_encoders(device, args.batch_size)]))
    for note in notes:
        print(note)
    if "sizing" not in args.skip:
        print("\n".join(sizing_model(args, work)))
    print(f"\n1-minute load average at the end: {_load():.2f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

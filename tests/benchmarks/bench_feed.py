"""Is the extraction stage fed? `avaf-extract` on local Ray against the rate this machine's cores decode, in
one run.

A script, not a test: it prints figures and asserts nothing about time. For each size it generates a few
H.264 + AAC clips (B-frames, a keyframe every 250 frames, cuts every 10 s) and links each of them many
times into one folder (each link a video of its own; the page cache holds the files, so the decode, not
the disk, is what is measured). Then, on the same clips:

1. the cores' decode rate: avaf's decode of a Ray decode task (`decode.worker.decode_row`: PyAV on one
   thread, in an isolated child, the frames made for the asked packs), in one process per core;
2. `avaf-extract --no-in-process` (local Ray: decode tasks on the cores, one encoder actor on the GPU)
   with random weights, as a user runs it: the command's wall time, and its steady rate read off the
   shards' times (from the first shard written to the last: Ray's start-up and the merge left out);
3. with `--decoders auto,pyav-cuda`, the same command with each decoder (pyav-cuda: the encoder actor
   decodes on NVDEC).

It prints one table last: videos/s of each row and the stage's steady rate over the cores' decode rate.

    python tests/benchmarks/bench_feed.py                                    # 360p and 720p, 60 s clips
    python tests/benchmarks/bench_feed.py --sizes 640x360 --decoders pyav-cuda   # NVDEC, on a GPU node
    python tests/benchmarks/bench_feed.py --sizes 640x360 --features tspm       # the tspm pack
    python tests/benchmarks/bench_feed.py --sizes 640x360 --seconds 10 --unique 2 --videos 8 \\
        --clip-model tests/data/ViT-avaf-tiny.json                           # a rehearsal on a small CPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_decode import make_videos  # noqa: E402


def make_clips(work: Path, width: int, height: int, seconds: int, unique: int, videos: int) -> Path:
    """`videos` links in work/WxH/videos to `unique` generated clips (made once, one process per core)."""
    made, folder = work / f"{width}x{height}" / "clips", work / f"{width}x{height}" / "videos"
    made.mkdir(parents=True, exist_ok=True)
    paths = [made / f"clip{i}_{seconds}s.mp4" for i in range(unique)]
    start = time.perf_counter()
    make_videos([(p, seconds, width, height, (25, 30)[i % 2], i) for i, p in enumerate(paths)])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(videos):
        (folder / f"v{i:05d}.mp4").symlink_to(paths[i % unique])
    for p in paths:  # into the page cache
        p.read_bytes()
    print(
        f"{width}x{height}: {unique} clips of {seconds} s made in {time.perf_counter() - start:.0f} s, {videos} videos"
    )
    return folder


def decode_settings(args: argparse.Namespace) -> dict:
    """The decode settings a Ray decode task gets for these packs (pipeline.py: the decode config and the
    views of each pack)."""
    from avaf.extract.config import ClipConfig, ExtractConfig, RuntimeConfig
    from avaf.extract.packs import config_views
    from avaf.shared.config import to_dict

    cfg = ExtractConfig(
        features=args.features,
        clip=ClipConfig(model=args.clip_model),
        runtime=RuntimeConfig(random_weights=True),
    )
    return to_dict(cfg.decode) | {"views": config_views(cfg)}


def _decode(job: tuple) -> str:
    from avaf.extract.decode.worker import decode_row

    path, settings = job
    return decode_row(path.stem, str(path), settings)["error"]


def cores_decode_rate(folder: Path, settings: dict, cores: int) -> tuple[float, int]:
    """Videos/s of the decode alone, one process (and its isolated child) per core, every video once."""
    videos = sorted(folder.iterdir())
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode, [(videos[0], settings)] * cores))  # each worker's child started, PyAV imported
        start = time.perf_counter()
        errors = [e for e in pool.map(_decode, [(v, settings) for v in videos]) if e]
        wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"decode failed: {errors[0]}")
    return len(videos) / wall, len(videos)


def stage(folder: Path, out: Path, args: argparse.Namespace, decoder: str) -> dict:
    """`avaf-extract` on local Ray as a user runs it: wall time, and the steady rate from the shards."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["avaf-extract", "--videos", str(folder), "--out", str(out / "feats.h5"), "--no-in-process", "-q"]
    cmd += ["--features", args.features, "--clip-model", args.clip_model, "--random-weights"]
    cmd += ["--shard-videos", str(args.shard_videos)]
    cmd += ["--batch-size", str(args.batch_size), "--videos-per-call", str(args.videos_per_call)]
    cmd += ["--decoder", decoder]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"avaf-extract ended with {done.returncode}")
    shards = sorted((out / "feats.h5.shards").glob("*.h5"), key=lambda p: p.stat().st_mtime)
    times = [p.stat().st_mtime for p in shards]
    videos = len(list(folder.iterdir()))
    steady = None
    # from the first shard to the last: the videos of every shard but the first; not with too few shards or
    # when they came together (a call of --videos-per-call videos fills several shards at once)
    if len(times) >= 3 and times[-1] - times[0] > 1.0:
        steady = (videos - args.shard_videos) / (times[-1] - times[0])
    return {
        "wall": wall,
        "rate": videos / wall,
        "steady": steady,
        "first_shard_s": times[0] - start if times else None,
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="640x360,1280x720")
    p.add_argument("--seconds", type=int, default=60, help="length of each clip")
    p.add_argument("--unique", type=int, default=16, help="clips generated per size")
    p.add_argument(
        "--videos", type=int, default=0, help="videos per size (links to the clips); 0: 24 per core"
    )
    p.add_argument("--features", default="avaf", help="the packs, as avaf-extract --features")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument(
        "--batch-size", type=int, default=256, help="frames per CLIP pass (configs/extract-gpu.yaml)"
    )
    p.add_argument("--videos-per-call", type=int, default=8)
    p.add_argument("--shard-videos", type=int, default=16)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="decode processes of the baseline")
    p.add_argument("--decoders", default="auto", help="comma list: the stage's --decoder, each in a run")
    p.add_argument("--workdir", type=Path, default=Path("bench-out/feed"))
    return p.parse_args()


def main() -> None:
    args = parse_args()
    videos = args.videos or 8 * args.cores
    settings = decode_settings(args)
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(x) for x in size.split("x"))
        folder = make_clips(args.workdir, width, height, args.seconds, args.unique, videos)
        rate, n = cores_decode_rate(folder, settings, args.cores)
        print(f"  decode alone on {args.cores} cores: {rate:.2f} videos/s ({n} videos)", flush=True)
        rows.append((size, f"decode alone, {args.cores} processes", n / rate, rate, None, rate))
        for decoder in args.decoders.split(","):
            s = stage(folder, args.workdir / "out", args, decoder)
            name = f"avaf-extract on local Ray, --decoder {decoder}, {args.features}"
            print(f"  {name}: {s}", flush=True)
            rows.append((size, name, s["wall"], s["rate"], s["steady"], rate))
    print(
        f"\nmachine: {os.cpu_count()} cores; {videos} videos of {args.seconds} s per size; {args.clip_model}"
    )
    print("| size | what | wall s | videos/s | steady videos/s | steady / cores' decode |")
    print("|---|---|---:|---:|---:|---:|")
    for size, name, wall, rate, steady, decode in rows:
        ratio = f"{steady / decode:.2f}" if steady else "–"
        steady_text = f"{steady:.2f}" if steady else "–"
        print(f"| {size} | {name} | {wall:.1f} | {rate:.2f} | {steady_text} | {ratio} |")


if __name__ == "__main__":
    main()

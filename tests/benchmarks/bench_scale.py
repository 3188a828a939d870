"""MUSIC-AVQA at full size: a store of the real shape, and what it costs to write, inspect, read and train on.

A script, not a test: it prints figures and asserts nothing about time. It writes, through the store
writer, 9,288 videos and 45,867 questions (the original release: train 32,087, val 4,595, test 9,185) with
random float16 features in schema v1's layout: visual tokens (T, 50, 512), pooled (T, 512), VGGish (T, 128),
words (L, 512), sentence (512). T is 60 s for 92% of the videos and 20-59 s for the rest (MUSIC-AVQA reports
9,288 videos and over 150 hours, i.e. at least 58.1 s on average; this draw gives ~58.4 s), L is 7-20 BPE
tokens. Videos go to train / val / test in the proportions of their questions. Then it measures:

* the time to write the shards and to merge them into feats.h5, and the disk they use;
* `avaf-inspect` (a fresh process);
* FeatureStore: random single-video reads (videos/s, MB/s) and a bulk load of 500 videos (MB/s), warm cache;
* avaf-train's data path and training step for a slice of an epoch (`--steps` optimizer steps, batch 32, the
  paper's model on the CPU), in a fresh process each: samples/s, the time to get the data ready, peak RSS,
  and, under a cgroup v1 memory cap (`--cap`), the cgroup's peak usage. Rows: in memory (no cap), streamed
  (under the cap). Evaluation is left out: on this CPU it would take longer than the slice.

    python tests/benchmarks/bench_scale.py --dir /data/bench                 # full size (~58 GB of disk)
    python tests/benchmarks/bench_scale.py --dir /tmp/b --scale 0.01 --steps 2   # a quick look
    python tests/benchmarks/bench_scale.py --dir /tmp/b --scale 0.41 --cap 6G    # a file twice the cap
    python tests/benchmarks/bench_scale.py --dir /tmp/b --scale 0.5 --store-only  # the store alone (bench_gpu.sh)

The cap needs root and cgroup v1 (/sys/fs/cgroup/memory); without it the streamed row runs uncapped and
says so. The page cache is warmed from outside the cgroup first ("when the page cache holds the file").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VIDEOS = 9_288
QUESTIONS = {"train": 32_087, "val": 4_595, "test": 9_185}
TOKENS, WIDTH, AUDIO = 50, 512, 128
SHARD_VIDEOS = 64
CGROUP = Path("/sys/fs/cgroup/memory/avaf-bench-scale")


def durations(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.full(n, 60, dtype=np.int64)
    short = rng.random(n) < 0.08
    t[short] = rng.integers(20, 60, short.sum())
    return t


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


class Pool:
    """A pool of random float16 values; each array takes a random window of it (generating 29 GB of fresh
    random numbers would time the generator, not the store)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.values = rng.standard_normal(64 << 20, dtype=np.float32).astype(np.float16)

    def window(self, n: int) -> np.ndarray:
        a = int(self.rng.integers(0, len(self.values) - n))
        return self.values[a : a + n]


def video_splits(n_videos: int, counts: dict) -> np.ndarray:
    """Each video's split: train, then val, then test, in the proportions of their questions."""
    total = sum(counts.values())
    cut = np.cumsum([round(n_videos * counts[s] / total) for s in ("train", "val")])
    return np.array(["train"] * cut[0] + ["val"] * (cut[1] - cut[0]) + ["test"] * (n_videos - cut[1]))


def generated_video(pool: Pool, v: int, t: int):
    """Video v, t seconds long, in schema v1's layout."""
    from avaf.shared.store.writer import VideoFeatures

    tokens = pool.window(t * TOKENS * WIDTH).reshape(t, TOKENS, WIDTH)
    return VideoFeatures(
        video_id=f"{v:08d}",
        source_path=f"/videos/{v:08d}.mp4",
        visual_tokens=tokens,
        visual_pooled=tokens[:, 0].copy(),
        audio=pool.window(t * AUDIO).reshape(t, AUDIO),
        audio_valid=np.ones(t, bool),
        timestamp=np.arange(t) + 0.5,
        source_size=t * 200_000,
        duration=float(t),
        has_audio=True,
        decoder="generated",
        streams={},
    )


def generated_question(pool: Pool, qid: int, split: str, videos: np.ndarray):
    """Question qid of this split, on a random one of `videos`, with 7-20 word tokens."""
    from avaf.shared.avqa.answers import ANSWERS
    from avaf.shared.avqa.question_types import TYPES
    from avaf.shared.store.writer import QuestionFeatures

    rng = pool.rng
    length = int(rng.integers(7, 21))
    return QuestionFeatures(
        question_id=qid,
        video_id=f"{int(rng.choice(videos)):08d}",
        split=split,
        text=f"generated question {qid}",
        type=TYPES[qid % len(TYPES)],
        answer=ANSWERS[int(rng.integers(len(ANSWERS)))],
        words=pool.window(length * WIDTH).reshape(length, WIDTH),
        sentence=pool.window(WIDTH),
    )


def write_video_shard(shards: Path, config: dict, pool: Pool, seconds: dict[int, int]) -> None:
    """One shard of generated videos: video v lasts seconds[v]."""
    from avaf.shared.store.writer import ShardWriter, new_shard_path

    with ShardWriter(new_shard_path(shards), config, random_weights=["generated"]) as w:
        for v, t in seconds.items():
            w.add_video(generated_video(pool, v, t))


def write_question_shards(shards: Path, config: dict, pool: Pool, counts: dict, splits: np.ndarray) -> None:
    """One shard of generated questions a split, counts[split] of them, on that split's videos."""
    from avaf.shared.store.writer import ShardWriter, new_shard_path

    qid = 0
    for split, n in counts.items():
        videos = np.flatnonzero(splits == split)
        with ShardWriter(new_shard_path(shards, "questions"), config, random_weights=["generated"]) as w:
            for _ in range(n):
                w.add_question(generated_question(pool, qid, split, videos))
                qid += 1


def merge_seconds(shards: Path, feats: Path) -> float:
    """build_store from the complete shards into feats (a first merge, or an append); its seconds."""
    from avaf.shared.store.merge import build_store
    from avaf.shared.store.writer import complete_shards

    start = time.perf_counter()
    build_store(complete_shards(shards), feats)
    return time.perf_counter() - start


def write_store(folder: Path, scale: float, seed: int = 0) -> dict:
    """Shards of the real shape through ShardWriter, then build_store; returns the timings."""
    from avaf.shared.store.writer import shard_dir

    rng = np.random.default_rng(seed)
    n_videos = max(3, round(VIDEOS * scale))
    counts = {s: max(1, round(n * scale)) for s, n in QUESTIONS.items()}
    seconds = durations(rng, n_videos)
    pool = Pool(rng)
    feats = folder / "feats.h5"
    shards = shard_dir(feats)
    shutil.rmtree(shards, ignore_errors=True)
    feats.unlink(missing_ok=True)
    config = {"generated": "bench_scale", "scale": scale}
    start = time.perf_counter()
    for a in range(0, n_videos, SHARD_VIDEOS):
        batch = range(a, min(a + SHARD_VIDEOS, n_videos))
        write_video_shard(shards, config, pool, {v: int(seconds[v]) for v in batch})
    write_question_shards(shards, config, pool, counts, video_splits(n_videos, counts))
    written = time.perf_counter() - start
    merged = merge_seconds(shards, feats)
    # a resumed run that adds 1% more videos: appended to feats.h5 in place
    extra = max(1, n_videos // 100)
    write_video_shard(shards, config, pool, dict.fromkeys(range(n_videos, n_videos + extra), 60))
    return {
        "append_videos": extra,
        "append_s": merge_seconds(shards, feats),
        "videos": n_videos,
        "seconds": int(seconds.sum()),
        "questions": counts,
        "write_s": written,
        "merge_s": merged,
        "shards_bytes": disk_bytes(shards),
        "store_bytes": disk_bytes(feats),
        "feats": str(feats),
    }


def inspect_seconds(feats: str) -> float:
    start = time.perf_counter()
    subprocess.run(["avaf-inspect", feats], check=True, capture_output=True)
    return time.perf_counter() - start


def read_throughput(feats: str, seed: int = 0) -> dict:
    from avaf.shared.store.reader import FeatureStore

    rng = np.random.default_rng(seed)
    with FeatureStore(feats) as fs:
        ids = fs.video_ids
        pick = [ids[i] for i in rng.choice(len(ids), size=min(200, len(ids)), replace=False)]
        start, nbytes = time.perf_counter(), 0
        for v in pick:
            nbytes += fs.video(v, fields=("visual_tokens", "audio"))["visual_tokens"].nbytes
        random_s = time.perf_counter() - start
        bulk_ids = ids[: min(500, len(ids))]
        start = time.perf_counter()
        bulk = fs.load_videos(bulk_ids, fields=("visual_tokens", "audio"))
        bulk_s = time.perf_counter() - start
        bulk_bytes = sum(a.nbytes for a in bulk.arrays.values())
    return {
        "random_videos_per_s": len(pick) / random_s,
        "random_mb_per_s": nbytes / random_s / 1e6,
        "bulk_mb_per_s": bulk_bytes / bulk_s / 1e6,
        "bulk_videos": len(bulk_ids),
    }


def child_train(feats: str, budget: str, steps: int, threads: int) -> None:
    """In a fresh process: avaf-train's data loading and `steps` training steps; prints one JSON line."""
    import torch

    from avaf.train.config import load_config
    from avaf.train.loop import Run, load_data, train_epoch
    from avaf.train.model import build_model

    torch.set_num_threads(threads)
    cfg = load_config(
        None,
        {
            "data.feats": feats,
            "data.memory_budget": budget,
            "run.out_dir": "unused",
            "optim.max_steps": steps,
        },
    )
    start = time.perf_counter()
    splits, shape = load_data(cfg, torch.device("cpu"))
    ready = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    stats = train_epoch(model, opt, splits["train"], Run(cfg, Path("unused"), shape, amp=None), 0, steps)
    print(
        json.dumps(
            {
                "mode": type(splits["train"].features).__name__,  # Features (in memory), StreamedFeatures
                "ready_s": ready,
                "samples_per_s": stats["samples_per_s"],
                "steps": stats["steps"],
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            }
        )
    )


def make_cgroup(cap: int) -> Path | None:
    try:
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(cap))
        (CGROUP / "memory.max_usage_in_bytes").write_text("0")
        return CGROUP
    except OSError as e:
        print(f"  (no cgroup v1 memory cap here: {e}; the streamed row runs uncapped)")
        return None


def run_train(feats: str, budget: str, steps: int, threads: int, group: Path | None) -> dict:
    def enter() -> None:
        if group is not None:
            (group / "tasks").write_text(str(os.getpid()))

    cmd = [sys.executable, __file__, "--child", feats, "--budget", budget, "--steps", str(steps)]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, preexec_fn=enter)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if group is not None:
        row["cgroup_peak_gb"] = int((group / "memory.max_usage_in_bytes").read_text()) / 1e9
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="where the store is written (needs ~2x the store's size)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of MUSIC-AVQA's size")
    ap.add_argument("--steps", type=int, default=10, help="training steps per row (batch 32)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cap", default="6G", help="cgroup memory cap of the streamed row")
    ap.add_argument("--in-memory", action=argparse.BooleanOptionalAction, default=None,
                    help="also train in memory (default: when the file fits in half of this machine's RAM)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the store and shards afterwards")
    ap.add_argument("--store-only", action="store_true",
                    help="write DIR/feats.h5, delete its shards and stop (for bench_gpu.sh)")  # fmt: skip
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--budget", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_train(args.child, args.budget, args.steps, args.threads)
        return

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bench_scale: scale {args.scale}, {os.cpu_count()} CPUs, dir {folder}")
    w = write_store(folder, args.scale)
    if args.store_only:
        shutil.rmtree(Path(w["feats"] + ".shards"), ignore_errors=True)
        print(f"  store: {w['videos']} videos, questions {w['questions']}, {w['store_bytes'] / 1e9:.2f} GB")
        print(f"  write shards {w['write_s']:.1f} s, merge {w['merge_s']:.1f} s: {w['feats']}")
        return
    report_store(w)
    subprocess.run(["cat", w["feats"]], stdout=subprocess.DEVNULL, check=True)  # page cache, charged here
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    in_memory = args.in_memory if args.in_memory is not None else w["store_bytes"] < ram / 2
    report_train(train_rows(w["feats"], args, in_memory))
    if not args.keep:
        shutil.rmtree(Path(w["feats"] + ".shards"), ignore_errors=True)
        Path(w["feats"]).unlink(missing_ok=True)


def report_store(w: dict) -> None:
    """Prints the store's size, the times to write, merge and append it, avaf-inspect's, and read speeds."""
    gb = w["store_bytes"] / 1e9
    print(f"  store: {w['videos']} videos, {w['seconds']} seconds, questions {w['questions']}")
    print(f"  write shards {w['write_s']:.1f} s ({w['shards_bytes'] / 1e9:.2f} GB on disk)")
    print(f"  merge into feats.h5 {w['merge_s']:.1f} s ({gb:.2f} GB, {gb / w['merge_s']:.2f} GB/s)")
    print(
        f"  resume adding {w['append_videos']} videos (1%): feats.h5 appended in {w['append_s']:.2f} s "
        f"({w['append_s'] / w['merge_s']:.1%} of the first merge)"
    )
    print(f"  avaf-inspect {inspect_seconds(w['feats']):.2f} s")
    r = read_throughput(w["feats"])
    print(
        f"  FeatureStore random video reads: {r['random_videos_per_s']:.0f} videos/s "
        f"({r['random_mb_per_s']:.0f} MB/s); bulk load of {r['bulk_videos']} videos: {r['bulk_mb_per_s']:.0f} MB/s"
    )


def train_rows(feats: str, args: argparse.Namespace, in_memory: bool) -> list[tuple[str, dict]]:
    """The training rows, each in a fresh process: in memory (when asked), then streamed under the cap."""
    from avaf.train.stream import parse_bytes

    rows = []
    if in_memory:
        rows.append(("in memory, no cap", run_train(feats, "1T", args.steps, args.threads, None)))
    group = make_cgroup(parse_bytes(args.cap))
    rows.append((f"streamed, cap {args.cap}", run_train(feats, "auto", args.steps, args.threads, group)))
    if group is not None:
        group.rmdir()
    return rows


def report_train(rows: list[tuple[str, dict]]) -> None:
    """Prints each training row, and the streamed row's speed as a share of the in-memory one's."""
    for name, row in rows:
        peak = f", cgroup peak {row['cgroup_peak_gb']:.2f} GB" if "cgroup_peak_gb" in row else ""
        print(
            f"  train ({name}): {row['mode']}, data ready in {row['ready_s']:.1f} s, "
            f"{row['samples_per_s']:.2f} samples/s over {row['steps']} steps, peak RSS {row['peak_rss_gb']:.2f} GB{peak}"
        )
    if len(rows) == 2:
        print(f"  streamed / in memory: {rows[1][1]['samples_per_s'] / rows[0][1]['samples_per_s']:.0%}")


if __name__ == "__main__":
    main()

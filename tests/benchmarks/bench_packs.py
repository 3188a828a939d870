"""Feature packs: videos/s and CPU-s per video of `avaf`, `tspm` and both in one run, each stage's seconds,
and the disk per MUSIC-AVQA video of each set (docs/extraction.md, "Feature packs").

Each configuration loads its encoders once (full-size architectures, random weights: the released weights'
FLOPs), then decodes and encodes the videos exactly as avaf-extract in process does (InProcessEngine.rows:
each video decoded once in the isolated decode child, into every enabled encoder's view; each encoder run
once per batch of videos), and writes them through the shard writer into a real store, with real MUSIC-AVQA
val questions. CPU-s count this process and the decode child. The disk per set comes from that store's
datasets (shape and dtype of a row), scaled to a 60 s video and MUSIC-AVQA's questions per video.

Run: python tests/benchmarks/bench_packs.py [--videos nasa_13013,av1_video] [--questions 40]
Prints numbers, asserts nothing (not collected by pytest). ~10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig, InputConfig, RuntimeConfig, TspmConfig
from avaf.extract.decode import worker
from avaf.extract.decode.backends import decode_video
from avaf.extract.engine import InProcessEngine
from avaf.extract.packs import encoder_views, parse_features
from avaf.extract.todo import QuestionJob, VideoJob
from avaf.shared.avqa.annotations import load_questions
from avaf.shared.config import to_dict
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, new_shard_path

DATA = Path(__file__).resolve().parents[1] / "data"
MUSIC_AVQA_VIDEOS, MUSIC_AVQA_QUESTIONS, SECONDS = 9_288, 45_624, 60  # json_update: train + val + test
CONFIGS = ("avaf", "tspm", "avaf,tspm")


def child_cpu() -> float:
    """CPU-seconds used so far by this process's decode child (worker.decode_isolated's), 0 before it starts."""
    pid = worker._shared.pid if worker._shared is not None else None
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(features: str, videos: Path, out: Path, questions: list, batch: int) -> dict:
    """Load, extract `videos` and `questions` into `out`; the figures of one configuration."""
    cfg = ExtractConfig(
        out=str(out),
        features=features,
        input=InputConfig(videos=str(videos)),
        tspm=TspmConfig(clip_batch_size=batch, tome_batch_size=batch),
        runtime=RuntimeConfig(in_process=True, random_weights=True, batch_size=batch, precision="fp32"),
    )
    t0 = time.perf_counter()
    engine = InProcessEngine(cfg)
    load = time.perf_counter() - t0
    jobs = [VideoJob(p.stem, str(p), engine.encoders.packs) for p in sorted(videos.iterdir())]
    decode = to_dict(cfg.decode) | {"views": engine.views}
    shortest = min(jobs, key=lambda j: Path(j.path).stat().st_size)
    list(engine.rows([shortest], decode))  # warm-up: first passes (kernel selection), not counted
    engine.encoders.timings.clear()
    wall, cpu, child = time.perf_counter(), time.process_time(), child_cpu()
    rows = list(engine.rows(jobs, decode))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu + child_cpu() - child
    stages: dict[str, float] = {}
    for r in rows:
        assert r["features"] is not None, r["error"]
        for k, v in r["timing"].items():
            if not k.startswith("cpu_"):  # wall seconds only (`cpu_` keys: CPU-seconds, stage_phases.py)
                stages[k] = stages.get(k, 0.0) + v
    facts = engine.facts()
    meta = {"config": to_dict(cfg), **{k: facts[k] for k in ("signature", "random_weights", "feature_sets")}}
    folder = out.parent / "shards"
    with ShardWriter(new_shard_path(folder), **meta) as w:
        for r in rows:
            w.add_video(r["features"])
    qjobs = [QuestionJob(q, engine.encoders.packs) for q in questions]
    specs = question_stage.batches(qjobs, 64)
    encoded = engine.question_batches(specs)
    question_stage.write(qjobs, [len(s["texts"]) for s in specs], encoded, folder, meta, progress=False)
    build_store(sorted(folder.iterdir()), out)
    n = len(rows)
    seconds = sum(int(r["features"].length) for r in rows)
    return {"load": load, "wall": wall, "cpu": cpu, "videos": n, "seconds": seconds, "stages": stages}


def decode_alone(videos: Path, repeats: int) -> dict[str, float]:
    """CPU-s per video of the decode alone, in this process, making the views of each configuration's
    encoders (the best of `repeats`): one decode for both packs costs one decode and the extra resizes."""
    out = {}
    for features in CONFIGS:
        packs = parse_features(features)
        views = tuple(sorted(set(encoder_views(ExtractConfig(features=features), packs).values())))
        total = 0.0
        for path in sorted(videos.iterdir()):
            best = float("inf")
            for _ in range(repeats):
                t = time.process_time()
                decode_video(path, "pyav", views)
                best = min(best, time.process_time() - t)
            total += best
        out[features] = total / len(list(videos.iterdir()))
    return out


def disk_per_video(store: Path) -> dict[str, dict[str, float]]:
    """Bytes per 60 s MUSIC-AVQA video of each set's arrays, from the store's datasets (row shape, dtype)."""
    q_per_video = MUSIC_AVQA_QUESTIONS / MUSIC_AVQA_VIDEOS
    with FeatureStore(store) as fs, h5py.File(store, "r") as f:
        words = float(np.mean(fs.questions()["word_length"]))  # real BPE tokens per question (avaf words)
        out: dict[str, dict[str, float]] = {}
        for s, arrays in fs.sets.items():
            for name, a in arrays.items():
                ds = f[a.path]
                row = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
                per = {"seconds": SECONDS, "questions": q_per_video, "words": q_per_video * words}[a.table]
                out.setdefault(s, {})[name] = row * per
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", default="nasa_13013,av1_video,h265_video,h264_10bits")
    p.add_argument("--questions", type=int, default=40, help="MUSIC-AVQA val questions encoded per run")
    p.add_argument("--batch", type=int, default=4, help="frames per pass of every image encoder (and VGGish)")
    p.add_argument("--repeats", type=int, default=5, help="decodes per video for the decode-alone figure")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="bench_packs_"))
    videos = work / "videos"
    videos.mkdir()
    for name in args.videos.split(","):
        shutil.copy(next((DATA / "videos").glob(f"{name}.*")), videos)
    questions = load_questions((str(DATA / "music-avqa/json_update/avqa-val.json"),))[: args.questions]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, fp32, CPU), load average {os.getloadavg()[0]:.1f}; "
          f"videos {args.videos}; passes of {args.batch}")  # fmt: skip
    worker.decode_isolated(next(videos.iterdir()), 300.0)  # the decode child started before any timing
    alone = decode_alone(videos, args.repeats)
    print("decode alone, CPU-s per video (views of): " + ", ".join(f"{k} {v:.3f}" for k, v in alone.items()))
    results = {}
    for features in CONFIGS:
        out = work / features.replace(",", "+") / "feats.h5"
        r = results[features] = run(features, videos, out, questions, args.batch)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items())
        print(f"--features {features}: load {r['load']:.1f} s; {r['videos']} videos ({r['seconds']} s of video) "
              f"in {r['wall']:.1f} s = {r['videos'] / r['wall']:.3f} videos/s, {r['cpu'] / r['videos']:.1f} "
              f"CPU-s/video ({r['cpu'] / r['seconds']:.2f} CPU-s per second of video); stages: {stages}")  # fmt: skip
    both, avaf, tspm = results["avaf,tspm"], results["avaf"], results["tspm"]
    one = both["stages"]["decode"] + sum(v for k, v in both["stages"].items() if k != "decode")
    print(f"avaf,tspm: one decode {both['stages']['decode']:.1f} s + the encoders "
          f"{one - both['stages']['decode']:.1f} s = {one:.1f} s; measured {both['wall']:.1f} s; "
          f"avaf and tspm in two runs: {avaf['wall'] + tspm['wall']:.1f} s")  # fmt: skip
    print(
        f"disk per MUSIC-AVQA video ({SECONDS} s, {MUSIC_AVQA_QUESTIONS / MUSIC_AVQA_VIDEOS:.2f} questions):"
    )
    for s, arrays in disk_per_video(work / "avaf+tspm" / "feats.h5").items():
        parts = ", ".join(f"{n} {b / 1e3:.1f} KB" for n, b in arrays.items())
        total = sum(arrays.values())
        print(f"  {s}: {total / 1e6:.2f} MB ({parts}); MUSIC-AVQA {total * MUSIC_AVQA_VIDEOS / 1e9:.1f} GB")
    print(json.dumps({k: {**v, "stages": v["stages"]} for k, v in results.items()}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

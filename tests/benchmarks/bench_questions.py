"""Question encoding: questions/s in process and on 1 and 2 encoder actors, and the driver's peak memory.

A script, not a test: it prints figures and asserts nothing about time. It encodes the first N questions of
MUSIC-AVQA's val file (json_update, tests/data) with CLIP ViT-B/32's text tower at full size, on random weights (no
download here: the numbers are the speed, not the features), through `avaf-extract`'s own code
(`run_extract` with annotations only), each mode in a fresh process so its peak RSS is its own:

* in process: this process loads the encoders and encodes;
* Ray, 1 actor with every core; Ray, 2 actors with one core each: the driver loads no encoder.

    python tests/benchmarks/bench_questions.py               # 512 and 2,048 questions
    python tests/benchmarks/bench_questions.py --questions 1024 --batch 128

Each mode runs twice, on N and on 4N questions: the rate printed is the marginal one, (4N - N) / (t4N - tN)
with t the time `run_extract` spent on the questions, so the actors' start and model loads (the same in both)
drop out; the N run's total time, Ray's start-up included, is shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANNOTATIONS = Path(__file__).parents[1] / "data" / "music-avqa" / "json_update" / "avqa-val.json"


def child(mode: str, n: int, batch: int, out: str) -> None:
    from avaf.extract.config import ClipConfig, ExtractConfig, InputConfig, RuntimeConfig, VGGishConfig
    from avaf.extract.pipeline import run_extract

    rows = json.loads(ANNOTATIONS.read_text())[:n]
    ann = Path(out).with_name("avqa-val.json")
    ann.write_text(json.dumps(rows))
    cores = os.cpu_count() or 1
    runtime = {
        "in-process": {"in_process": True},
        "ray-1": {"in_process": False, "encoders": 1, "num_cpus": cores, "encoder_threads": cores},
        "ray-2": {
            "in_process": False,
            "encoders": 2,
            "num_cpus": max(1, cores // 2),
            "encoder_threads": max(1, cores // 2),
        },
    }[mode]
    cfg = ExtractConfig(
        out=out,
        input=InputConfig(annotations=(str(ann),)),
        clip=ClipConfig(model="ViT-B-32", pretrained="random"),
        vggish=VGGishConfig(weights="random"),
        runtime=RuntimeConfig(batch_size=batch, **runtime),
    )
    start = time.perf_counter()
    summary = run_extract(cfg, progress=False)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        json.dumps(
            {
                "questions": summary.questions,
                "seconds": seconds,
                "encode_seconds": summary.question_seconds,
                "driver_peak_rss_gb": rss,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.questions, args.batch, args.child[1])
        return
    print(
        f"bench_questions: {args.questions} questions, batch {args.batch}, CLIP ViT-B/32 text tower "
        f"(random weights), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    for mode in ("in-process", "ray-1", "ray-2"):
        runs = [run(mode, n, args.batch) for n in (args.questions, 4 * args.questions)]
        d = runs[1]["encode_seconds"] - runs[0]["encode_seconds"]
        rate = (runs[1]["questions"] - runs[0]["questions"]) / d
        print(
            f"  {mode:<10} {rate:7.1f} questions/s; {runs[0]['questions']} questions took "
            f"{runs[0]['seconds']:.1f} s with start-up; driver peak RSS {max(r['driver_peak_rss_gb'] for r in runs):.2f} GB"
        )


def run(mode: str, n: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--questions", str(n), "--batch", str(batch), "--child", mode]
        out = subprocess.run([*cmd, f"{tmp}/feats.h5"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()

"""avaf-sweep's cost (docs/sweeps.md, "Measured"): trials/hour with 1 and 2 concurrent trials, and the sweep
layer's overhead against the same trials run with plain avaf-train one after another (a shell loop).

On a generated feature file (tests/conftest.py `known_answer_store`: audio and visual counting questions
with known answers) and the tiny model of tests/test_train.py (D = 32, FFN 64), every mode trains the same
N trials (α ∈ the alpha grid's first N values, 1 seed):

    loop        avaf-train N times, one after another, each a fresh process, --threads C
    sweep x1    avaf-sweep --cpus-per-trial C: one trial at a time, C torch threads (the same work as loop)
    sweep x2    avaf-sweep --cpus-per-trial C/2: two trials at once

Wall times include everything a user waits for (process start, Ray's start, the report and plots). Prints
figures, asserts nothing. `--table` instead runs the ablations grid (Table 3) with 2 seeds and prints
its table.md: the README's example table on generated data.

    python tests/benchmarks/bench_sweep.py [--trials 6] [--epochs 4] [--videos 300] [--cpus 2]
    python tests/benchmarks/bench_sweep.py --table [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest
from avaf.train.sweep.grids import ALPHAS  # noqa: E402

from conftest import known_answer_store  # noqa: E402

TINY = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "-q"]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def loop(feats: Path, out: Path, alphas, epochs: int, cpus: int, tiny: Path) -> float:
    total = 0.0
    for a in alphas:
        cmd = ["avaf-train", "--feats", str(feats), "--out", str(out / f"alpha-{a:g}"), "--alpha", str(a)]
        total += timed([*cmd, "--epochs", str(epochs), "--threads", str(cpus), "--config", str(tiny), *TINY])
    return total


def sweep(feats: Path, out: Path, grid: Path, epochs: int, cpus: float, tiny: Path, seeds: int = 1) -> float:
    cmd = ["avaf-sweep", "--feats", str(feats), "--out", str(out), "--grid", str(grid), "--seeds", str(seeds)]
    return timed(
        [*cmd, "--epochs", str(epochs), "--cpus-per-trial", f"{cpus:g}", "--config", str(tiny), *TINY]
    )


def trial_seconds(out: Path) -> list[float]:
    return [json.loads(p.read_text())["seconds"] for p in sorted(out.rglob("trial.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--table", action="store_true", help="run the ablations grid (2 seeds) and print its table"
    )
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}, load {os.getloadavg()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        feats = known_answer_store(tmp / "feats.h5", n_videos=args.videos)
        tiny = tmp / "tiny.yaml"
        tiny.write_text("model:\n  ffn_dim: 64\n")
        if args.table:
            wall = timed(
                ["avaf-sweep", "--feats", str(feats), "--out", str(tmp / "t3"), "--grid", "ablations", "--seeds", "2",
                 "--epochs", str(args.epochs), "--config", str(tiny), *TINY]
            )  # fmt: skip
            print(f"# ablations x 2 seeds, {args.epochs} epochs, {args.videos} videos: {wall:.0f} s\n")
            print((tmp / "t3" / "table.md").read_text())
            return
        alphas = ALPHAS[: args.trials]
        grid = tmp / "alpha.yaml"
        grid.write_text(f"name: alpha\ngrid:\n  alpha: {list(alphas)}\n")
        print(f"# {len(alphas)} trials (alpha {list(alphas)}), {args.epochs} epochs, {args.videos} videos\n")
        rows = [
            ("avaf-train loop", f"1 at a time, {args.cpus} threads", loop(feats, tmp / "loop", alphas, args.epochs, args.cpus, tiny), None),
            ("avaf-sweep x1", f"--cpus-per-trial {args.cpus}", sweep(feats, tmp / "s1", grid, args.epochs, args.cpus, tiny), tmp / "s1"),
            ("avaf-sweep x2", f"--cpus-per-trial {args.cpus / 2:g}", sweep(feats, tmp / "s2", grid, args.epochs, args.cpus / 2, tiny), tmp / "s2"),
        ]  # fmt: skip
        base = rows[0][2]
        print("| mode | trials | wall s | trials/hour | vs loop | mean s in train() per trial |")
        print("|---|---|---:|---:|---:|---:|")
        for name, how, wall, out in rows:
            inner = trial_seconds(out) if out else []
            mean = f"{sum(inner) / len(inner):.1f}" if inner else "–"
            print(
                f"| {name} | {how} | {wall:.1f} | {3600 * len(alphas) / wall:.0f} | {wall / base:.2f}x | {mean} |"
            )
        over = rows[1][2] - base
        print(
            f"\nsweep layer overhead (x1 - loop): {over:+.1f} s in all, {over / len(alphas):+.1f} s per trial"
        )
        print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Choosing α, the weight of TACL's temporal loss in eq. 14 (docs/training.md "Choosing α").

The paper never gives α (the authors' code weighs a loss of another scale by 100). This script trains the
tiny paper-variant model (tests/order_features.py: D = 32, 3 patches, dropout 0) with Adam on generated
questions whose answers need time order ("first", "second", "third", "before X", "after X") or place
("Where is the X?"), once per α and seed, and prints the held-out accuracy per question kind and overall.
Deterministic: fixed seeds, one thread.

    python tests/benchmarks/bench_alpha.py [--alphas 0.1,0.3,1,3,10] [--seeds 0,1] [--steps 1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: order_features
from order_features import BLIND, N_ANSWERS, ORDER_KINDS, accuracy_by_kind, generate, train  # noqa: E402

from avaf.train.config import ModelConfig  # noqa: E402

KINDS = (*ORDER_KINDS, "where")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alphas", default="0.1,0.3,1,3,10")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    alphas = [float(a) for a in args.alphas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, load {os.getloadavg()}"
    )
    print(f"# {args.seconds} s, {args.steps} Adam steps of 64 at lr {args.lr} (linear fall), seeds {seeds}")
    train_set = generate(3000, KINDS, seed=100, seconds=args.seconds)
    test_set = generate(1200, KINDS, seed=101, seconds=args.seconds)
    cfg = ModelConfig(dim=32, heads=2, ffn_dim=64, n_answers=N_ANSWERS, max_seconds=args.seconds, dropout=0.0)
    print("| α | " + " | ".join(KINDS) + " | order | all | CPU-s/run |")
    print("|---" * (len(KINDS) + 4) + "|")
    print("| blind rate | " + " | ".join(f"{BLIND[k]:.2f}" for k in KINDS) + " | | | |")
    for alpha in alphas:
        runs, cpu = [], time.process_time()
        for seed in seeds:
            model = train(cfg, train_set, args.steps, alpha=alpha, lr=args.lr, seed=seed)
            runs.append(accuracy_by_kind(model, test_set, KINDS))
        acc = {k: sum(r[k] for r in runs) / len(runs) for k in KINDS}
        order = sum(acc[k] for k in ORDER_KINDS) / len(ORDER_KINDS)
        overall = sum(acc.values()) / len(KINDS)  # kinds come in turn: equal counts
        cells = " | ".join(f"{acc[k]:.2f}" for k in KINDS)
        per_run = (time.process_time() - cpu) / len(seeds)
        print(f"| {alpha:g} | {cells} | {order:.3f} | {overall:.3f} | {per_run:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""Does the paper variant learn time order and place at full width, at the learning rates users run?

Trains AVAF-Net (D = 512, FFN 2048, 4 heads) on generated 10-second scenes (tests/order_scenes.py) under two
initialisations, avaf's ("aligned": identity patch projection, cross-attention keys starting as their
queries, time positions of std 1) and PyTorch's defaults (positions of std 0.02), at lr 5e-4 and at the
recipe's 1e-4 (x0.1 after 8 epochs), with avaf-train's linear warm-up (150 steps per 5e-4 of lr; --warmup), and prints per question kind: accuracy as played, how often the
answer on the video played backwards is still the forward one (order-blind models keep it), and the
majority answer. docs/training.md, "Order and place at full width", has the table.

    python tests/benchmarks/bench_order.py                   # ~20 min per row, one thread each
    python tests/benchmarks/bench_order.py --init aligned --schedule 5e-4 --seed 1 --warmup 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from order_scenes import KINDS, N_ANSWERS, T, generate, table, train  # noqa: E402

from avaf.train.config import ModelConfig, OptimConfig  # noqa: E402
from avaf.train.config import warmup as avaf_warmup  # noqa: E402
from avaf.train.model import AVAFNet  # noqa: E402
from avaf.train.variants import MODELS  # noqa: E402

SCHEDULES = {"5e-4": (5e-4, 8, 0), "recipe": (1e-4, 10, 8)}  # lr, epochs, decay at


class DefaultInit(AVAFNet):
    """AVAF-Net with PyTorch's default init where avaf's differs (the model before it did)."""

    @torch.no_grad()
    def _start_aligned(self) -> None:
        self.tacl.visual_proj.reset_parameters()
        for block in (self.avcm.visual, self.avcm.audio, self.qoaf.visual, self.qoaf.audio):
            block.attn.k.reset_parameters()  # a draw of its own, not its query's
        if self.time.positions is not None:
            self.time.positions.normal_(0.0, 0.02)


def run(init: str, schedule: str, videos: int, seed: int, warmup: int = 0) -> dict:
    lr, epochs, decay = SCHEDULES[schedule]
    MODELS["paper"] = AVAFNet if init == "aligned" else DefaultInit
    cfg = ModelConfig(n_answers=N_ANSWERS, max_seconds=T)
    start = time.perf_counter()
    steps = warmup if warmup >= 0 else avaf_warmup(OptimConfig(lr=lr))  # -1: avaf-train's for this lr
    model = train(
        cfg, generate(videos, seed=0), epochs=epochs, lr=lr, decay_at=decay, seed=seed, warmup=steps
    )
    result = table(model, generate(150, seed=1))
    return {"seconds": time.perf_counter() - start, "table": result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default="aligned,default", help="aligned, default or both (comma list)")
    ap.add_argument(
        "--schedule", default="5e-4,recipe", help="5e-4 (8 epochs), recipe (1e-4, x0.1 at 8 of 10)"
    )
    ap.add_argument("--videos", type=int, default=600, help="training videos (4 questions each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--warmup",
        type=int,
        default=OptimConfig().warmup_steps,
        help="linear lr warm-up steps (-1: avaf-train's for the lr: 150 at 5e-4, 30 at 1e-4)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.videos} videos x {len(KINDS)} questions, batch 32, seed {args.seed}; test: 150 other videos"
    )
    print("cells: accuracy as played / answer kept when played backwards (majority answer in the header)")
    for init in args.init.split(","):
        for schedule in args.schedule.split(","):
            r = run(init, schedule, args.videos, args.seed, args.warmup)
            cells = "  ".join(
                f"{k} {v['played']:.2f}/{v['backwards_kept']:.2f} (maj {v['majority']:.2f})"
                for k, v in r["table"].items()
            )
            print(f"{init:8s} {schedule:7s} {cells}  [{r['seconds']:.0f} s]", flush=True)


if __name__ == "__main__":
    main()

"""avaf-train end to end: what a user sees from `avaf-train --feats F` to the results table, in one run beside
its baselines: the steps alone (bench_train_step.py on resident random batches of the same shapes), the
device's matrix-product ceiling measured now, and the FLOPs of one question counted by torch.

A script, not a test: it prints figures and asserts nothing about time. It runs the real command in a fresh
process (`avaf-train --feats F --out DIR --epochs E ...`), reads the run's metrics.jsonl (each epoch's steps,
evaluation, checkpoints and wall time) and results.json (loading the features, the epochs, the report), and
prints one table last:

* MFU: the counted FLOPs of a training question x the questions per second of the epoch's steps, over the
  ceiling (bf16 on a GPU, as autocast runs the step; fp32 on a CPU);
* the epoch's wall time over the time of its steps (evaluation and checkpoints included);
* 30 epochs, projected from the epochs measured (load + 30 x the mean wall time of the epochs after the
  first + the report) and marked as projected: this script never prints an estimate as a measurement.

    python tests/benchmarks/bench_scale.py --dir /data/b --scale 0.5 --store-only
    python tests/benchmarks/bench_train_e2e.py --feats /data/b/feats.h5 --epochs 3 --device cuda
    python tests/benchmarks/bench_train_e2e.py --feats /data/b/feats.h5 --epochs 3 --device cuda --batch 128 --compile
    python tests/benchmarks/bench_train_e2e.py --feats /tmp/b/feats.h5 --epochs 1 --device cpu   # a rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
EPOCHS = 30


def matmul_ceiling(device: torch.device) -> tuple[float, str]:
    """FLOP/s of square matrix products on `device`, measured now: bf16 8192^3 on a GPU (as the step's
    autocast), fp32 2048^3 on a CPU; the best of 10 after 3 warm-ups."""
    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for i in range(13):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize(device)
        if i >= 3:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best, f"{str(dtype).removeprefix('torch.')} {n}^3"


def store_shape(feats: str) -> dict:
    """T and M as avaf-train pads them (train/loop.padding), N patches, and the questions per split."""
    from avaf.shared.store.index import QuestionIndex
    from avaf.shared.store.reader import FeatureStore
    from avaf.shared.store.schema import SECONDS
    from avaf.train.config import ModelConfig
    from avaf.train.data import columns

    with FeatureStore(feats) as fs:
        tokens = fs.shape(SECONDS, columns(fs)["visual"])[-2]
        index = {s: QuestionIndex.build(fs, s) for s in ("train", "val", "test")}
    present = [i for i in index.values() if len(i)]
    return {
        "seconds": min(ModelConfig().max_seconds, max(int(i.seconds_length.max()) for i in present)),
        "words": max(int(i.word_length.max()) for i in present),
        "patches": int(tokens) - 1,  # CLS first
        "questions": {s: len(i) for s, i in index.items()},
    }


def counted_flops(variant: str, shape: dict) -> dict:
    """FLOPs of one question counted by torch's FlopCounterMode: training (forward + losses + backward) and
    evaluation (forward), at the store's shapes."""
    sys.path.insert(0, str(HERE))
    from bench_train_step import flops_per_sample, make_batch
    from torch.utils.flop_counter import FlopCounterMode

    from avaf.train.config import LossConfig, ModelConfig
    from avaf.train.model import build_model
    from avaf.train.variants import model_class

    cfg = ModelConfig(variant=variant)
    loss = LossConfig(**model_class(variant).recipe.get("loss", {}))
    model = build_model(cfg)
    dims = (shape["seconds"], shape["patches"], shape["words"])
    train = flops_per_sample(model, cfg, loss, *dims)
    inputs, _ = make_batch(2, *dims, cfg, torch.device("cpu"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(inputs)
    return {"train": train, "eval": counter.get_total_flops() / 2}


def steps_only(args: argparse.Namespace, shape: dict) -> float:
    """Questions/s of the training step alone (bench_train_step.py, resident batches), in a fresh process."""
    cmd = [sys.executable, str(HERE / "bench_train_step.py"), "--device", args.device, "--no-flops"]
    cmd += ["--variant", args.variant, "--batch", str(args.batch), "--steps", str(args.step_samples)]
    cmd += [
        "--seconds",
        str(shape["seconds"]),
        "--patches",
        str(shape["patches"]),
        "--words",
        str(shape["words"]),
    ]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    print(text, end="", flush=True)
    return float(re.search(r"throughput\s+([\d.]+)", text)[1])


def user_run(args: argparse.Namespace) -> tuple[float, list[dict], dict]:
    """`avaf-train` as a user runs it: its wall time, its metrics lines and its results."""
    out = Path(args.out)
    cmd = [
        "avaf-train",
        "--feats",
        args.feats,
        "--out",
        str(out),
        "--overwrite",
        "--epochs",
        str(args.epochs),
    ]
    cmd += ["--device", args.device, "--variant", args.variant, "--batch-size", str(args.batch), "-q"]
    cmd += ["--compile"] if args.compile else []
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return wall, lines, json.loads((out / "results.json").read_text())


def report(args, device_name: str, ceiling: tuple[float, str], shape, flops, step_rate, run) -> dict:
    wall, lines, results = run
    peak, how = ceiling
    seconds = results["seconds"]
    rows = []
    for x in lines:
        rate = x["samples_per_s"]
        rows.append(
            {
                "epoch": x["epoch"] + 1,
                "steps_s": x["epoch_s"],
                "questions_per_s": rate,
                "mfu": flops["train"] * rate / peak,
                "eval_s": x["eval_s"],
                "checkpoint_s": x["checkpoint_s"],
                "wall_s": x["wall_s"],
                "wall_over_steps": x["wall_s"] / x["epoch_s"],
            }
        )
    steady = rows[1:] or rows  # the first epoch holds the warm-up (and compiling, with --compile)
    which = "the first left out" if len(rows) > 1 else "the first, warm-up included"
    mean_wall = sum(r["wall_s"] for r in steady) / len(steady)
    projected = seconds["load"] + EPOCHS * mean_wall + seconds["report"]
    print(f"\n== bench_train_e2e, batch {args.batch}{', --compile' if args.compile else ''} ==")
    print(f"device          {device_name}; torch {torch.__version__}")
    print(f"ceiling         {peak / 1e12:.3g} TFLOP/s ({how} matrix product, measured in this run)")
    print(
        f"store           {args.feats}: questions {shape['questions']}, T {shape['seconds']}, "
        f"N {shape['patches']}+CLS, M {shape['words']}"
    )
    print(
        f"counted         {flops['train'] / 1e9:.1f} GFLOP per training question (forward, losses, backward), "
        f"{flops['eval'] / 1e9:.1f} per evaluated question"
    )
    print(
        f"steps alone     {step_rate:.1f} questions/s (bench_train_step.py, resident batches of {args.batch}): "
        f"MFU {flops['train'] * step_rate / peak:.1%}"
    )
    print(
        f"avaf-train      {wall:.1f} s for the command: load {seconds['load']:.1f} s, "
        f"{len(lines)} epochs {seconds['epochs']:.1f} s, report {seconds['report']:.1f} s"
    )
    print("\n| epoch | steps s | questions/s | MFU | eval s | checkpoint s | wall s | wall / steps |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['epoch']} | {r['steps_s']:.1f} | {r['questions_per_s']:.1f} | {r['mfu']:.1%} | "
            f"{r['eval_s']:.1f} | {r['checkpoint_s']:.2f} | {r['wall_s']:.1f} | {r['wall_over_steps']:.2f} |"
        )
    print(
        f"\n30 epochs, projected from {len(steady)} measured epoch(s) ({which}): {projected / 60:.1f} min "
        f"(load + 30 x {mean_wall:.1f} s + report; not a measurement of 30 epochs)"
    )
    return {
        "device": device_name,
        "ceiling_flops": peak,
        "ceiling": how,
        "shape": shape,
        "flops_per_question": flops,
        "steps_alone_questions_per_s": step_rate,
        "command_s": wall,
        "seconds": seconds,
        "epochs": rows,
        "projected_30_epochs_s": projected,
        "batch": args.batch,
        "compile": args.compile,
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats", required=True, help="a store, e.g. from bench_scale.py --store-only")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="questions per batch (the recipe's 32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", default="paper", choices=["paper", "authors"])
    p.add_argument("--compile", action="store_true", help="avaf-train --compile")
    p.add_argument("--step-samples", type=int, default=20, help="timed steps of the steps-alone baseline")
    p.add_argument("--out", default="bench-out/train-e2e", help="the run folder (replaced)")
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    shape = store_shape(args.feats)
    flops = counted_flops(args.variant, shape)
    ceiling = matmul_ceiling(device)
    step_rate = steps_only(args, shape)
    figures = report(args, name, ceiling, shape, flops, step_rate, user_run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training-step speed of AVAF-Net at the paper's shapes: samples/s, peak memory, 30-epoch extrapolation.

A script, not a test: it prints figures and never asserts a time. One step = forward, the variant's losses,
backward and an Adam step, on random features in the feature store's layout (float16 visual tokens with
CLS, T = 60 seconds, 49 patches, D = 512; paper: up to 24 words; authors: 76 word positions masked after
the template's 4-14 words). The reference (docs/training.md "Variants"): the authors' public training
code, measured 2026-11-30 on a 2-core AMD EPYC VM of this kind (2 threads, AVX2-only CPU, T = 60, batch 8),
did 0.55 samples/s at 4.66 GB peak; at batch 32 it is killed for memory above 23 GB. It is printed with its
date and machine, never as a ratio: measure both side by side for one.

    python tests/benchmarks/bench_train_step.py                      # CPU, batch 32, 3 timed steps
    python tests/benchmarks/bench_train_step.py --variant authors --batch 64
    python tests/benchmarks/bench_train_step.py --suite              # paper b8, b32, authors b8, b64: one
                                                                     # fresh process each (peak RSS), AVX2-only
    python tests/benchmarks/bench_train_step.py --suite --compare-with /tmp/before   # and each on another
                                                # checkout (git worktree add /tmp/before REV), interleaved
    python tests/benchmarks/bench_train_step.py --device cuda        # GPU with bf16 autocast
    python tests/benchmarks/bench_train_step.py --order standard     # attention without the folding
    python tests/benchmarks/bench_train_step.py --device cuda --batch 128 --profile 25   # where a step's time goes

Figures, with the machine's load: docs/training.md ("Variants") and tests/benchmarks/README.md. The
machine is shared: read the "contention" line before trusting a figure.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import time
from pathlib import Path

import torch

from avaf.train.attention import CrossAttention
from avaf.train.config import LossConfig, ModelConfig
from avaf.train.inputs import Batch
from avaf.train.model import build_model
from avaf.train.variants import model_class

# The reference named in the output, with where and when it was measured; no ratio is printed against it:
# its rate moves with the machine and the day (0.55 here, 0.79 in a side-by-side run on another machine of
# this kind), so a ratio is only worth what a run of both, side by side, gives.
REFERENCE = (
    "the authors' public code, measured 2026-11-30 on a 2-core AMD EPYC VM of this project's kind (2 threads, "
    "AVX2-only settings, T = 60, batch 8): 0.55 samples/s, 4.66 GB peak; not measured in this run"
)
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SUITE = (("paper", 8), ("paper", 32), ("authors", 8), ("authors", 64))

TRAIN_QUESTIONS = 31_927  # MUSIC-AVQA json_update train split
EPOCHS = 30


def make_batch(
    b: int, t: int, n: int, m: int, cfg: ModelConfig, device: torch.device
) -> tuple[Batch, torch.Tensor]:
    """Random inputs shaped like a batch read from the store; word counts vary as real questions do."""
    g = torch.Generator().manual_seed(0)
    if cfg.variant == "authors":  # all 77 text positions stored, as their code reads them; n = 4-14 words
        m, words = 77, torch.randint(4, 15, (b,), generator=g)
        words_mask = torch.ones(b, m, dtype=torch.bool)
    else:
        lengths = torch.randint(m // 2, m + 1, (b,), generator=g)
        words_mask, words = torch.arange(m)[None, :] < lengths[:, None], lengths - 2
    batch = Batch(
        visual=torch.randn(b, t, n + 1, cfg.dim, generator=g).half().to(device),
        audio=torch.randn(b, t, cfg.audio_dim, generator=g).half().to(device),
        seconds_mask=torch.ones(b, t, dtype=torch.bool, device=device),
        words=torch.randn(b, m, cfg.dim, generator=g).half().to(device),
        words_mask=words_mask.to(device),
        sentence=torch.randn(b, cfg.dim, generator=g).half().to(device),
        template_words=words.to(device),
    )
    answers = torch.randint(0, cfg.n_answers, (b,), generator=g)
    return batch, answers.to(device)


def flops_per_sample(
    model: torch.nn.Module, cfg: ModelConfig, loss: LossConfig, t: int, n: int, m: int
) -> float:
    """Forward + backward FLOPs of one question as executed, counted by torch on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs, answers = make_batch(2, t, n, m, cfg, torch.device("cpu"))
    model = model.cpu()
    with FlopCounterMode(display=False) as counter:
        losses = model.losses(model(inputs), answers, loss)
        losses["total"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def peak_memory_gb(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB GPU (max_memory_allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB RSS (whole process)"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="paper", choices=["paper", "authors"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=int, default=60, help="T")
    p.add_argument("--patches", type=int, default=49, help="N patches (a CLS token is added on top)")
    p.add_argument("--words", type=int, default=24, help="M, the padded word count")
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (bf16 autocast on GPU)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads on CPU")
    p.add_argument("--order", default="auto", choices=["auto", "standard", "fold_keys", "fold_queries"])
    p.add_argument("--no-flops", action="store_true", help="skip counting the FLOPs per sample")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then profile 2 steps: the N ops that take the most time",
    )
    p.add_argument("--suite", action="store_true", help="paper b8/b32, authors b8/b64, a fresh process each")
    p.add_argument("--native-isa", action="store_true", help="--suite without the AVX2-only settings")
    p.add_argument(
        "--compare-with",
        metavar="TREE",
        help="--suite: run each configuration on the avaf code of this checkout too, just before this tree's",
    )
    return p.parse_args()


def time_steps(model: torch.nn.Module, loss: LossConfig, inputs: Batch, answers: torch.Tensor, steps: int):
    """Wall and CPU seconds of each of `steps` training steps (forward, losses, backward, Adam), after a warm-up."""
    device = answers.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as train/loop.py
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> float:
        with amp:
            losses = model.losses(model(inputs), answers, loss)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return losses["total"].item()  # .item() synchronises the GPU

    step()  # warm-up: allocator, kernels
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def profile(model: torch.nn.Module, loss: LossConfig, inputs: Batch, answers: torch.Tensor, top: int) -> None:
    """Where a step's time goes: torch.profiler over 2 steps (after the timed ones), the `top` ops by their
    own time on the device (the GPU's kernels; the CPU's ops on a CPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    cuda = answers.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profiler(activities=activities) as prof:
        time_steps(model, loss, inputs, answers, 1)  # its warm-up step and one more
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"profile       2 steps, the {top} ops with the most own {'GPU' if cuda else 'CPU'} time:")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60))


def report(args: argparse.Namespace, device: torch.device, times: list, cpu_times: list, gflops, load: float):
    per_step = sorted(times)[len(times) // 2]
    rate, threads = args.batch / per_step, torch.get_num_threads()
    print(f"step times    {', '.join(f'{x:.2f}' for x in times)} s (median {per_step:.2f} s)")
    print(f"throughput    {rate:.2f} samples/s")
    print(f"reference     {REFERENCE}")
    print(f"best step     {args.batch / min(times):.2f} samples/s (the least disturbed by other processes)")
    if gflops is not None:
        print(
            f"cost          {gflops:.1f} GFLOP/sample forward+backward, {gflops * rate:.0f} GFLOP/s achieved"
        )
    print(f"peak memory   {peak_memory_gb(device)}")
    if device.type == "cpu":  # other processes on the machine slow a step; these show how much
        busy = sum(cpu_times) / (sum(times) * threads)
        print(f"contention    load average {load:.2f} -> {os.getloadavg()[0]:.2f}, ", end="")
        print(f"this process used {busy:.0%} of its {threads} threads' wall time")
        # with the machine to itself a step would take about its CPU time / threads (not a bound: spin-waits
        # count as CPU time, single-threaded stretches leave a core idle)
        best_cpu = min(cpu_times) / threads
        print(f"uncontended   ~{args.batch / best_cpu:.2f} samples/s from CPU time ({best_cpu:.1f} s/step)")
    hours = EPOCHS * TRAIN_QUESTIONS / rate / 3600
    print(f"30 epochs     {EPOCHS} x {TRAIN_QUESTIONS} questions -> {hours:.1f} h at this rate")


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.suite:
        return suite(args)
    cfg = ModelConfig(variant=args.variant, max_seconds=args.seconds)
    loss = LossConfig(**model_class(args.variant).recipe.get("loss", {}))
    model = build_model(cfg)
    for module in model.modules():
        if isinstance(module, CrossAttention):
            module.order = args.order
    n_params = sum(p.numel() for p in model.parameters())
    shapes = (args.seconds, args.patches, args.words)
    gflops = None if args.no_flops else flops_per_sample(model, cfg, loss, *shapes) / 1e9
    inputs, answers = make_batch(args.batch, *shapes, cfg, device)
    load = os.getloadavg()[0]
    times, cpu_times = time_steps(model.to(device).train(), loss, inputs, answers, args.steps)
    print(f"device        {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(
        f"shapes        batch {args.batch}, T {args.seconds}, N {args.patches}+CLS, D {cfg.dim}, "
        + ("M 76 (masked after 4-14)" if args.variant == "authors" else f"M {args.words}")
    )
    print(f"model         {args.variant}, {n_params / 1e6:.2f} M parameters, attention order {args.order}")
    print(f"cpu isa       {torch.backends.cpu.get_cpu_capability()}")
    print(f"code          {Path(inspect.getfile(build_model)).parent}")
    report(args, device, times, cpu_times, gflops, load)
    if args.profile:
        profile(model, loss, inputs, answers, args.profile)


def shadow(tree: str) -> str:
    """A folder that, first on PYTHONPATH, makes `import avaf` load the packages of another checkout."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="avaf-shadow-"))
    (root / "avaf").mkdir()
    for package in ("train", "shared", "extract"):
        (root / "avaf" / package).symlink_to(Path(tree).resolve() / package)
    return str(root)


def run_one(variant: str, batch: int, args: argparse.Namespace, env: dict) -> tuple[str, dict]:
    """One configuration in a fresh process: its printout and the figures parsed from it."""
    import re
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(batch), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--no-flops"]
    load = os.getloadavg()[0]
    text = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    figures = {
        "rate": float(re.search(r"throughput\s+([\d.]+)", text)[1]),
        "best": float(re.search(r"best step\s+([\d.]+)", text)[1]),
        "peak": float(re.search(r"peak memory\s+([\d.]+)", text)[1]),
        "isa": re.search(r"cpu isa\s+(\S+)", text)[1],
        "load": f"{load:.2f} -> {os.getloadavg()[0]:.2f}",
    }
    return text, figures


def suite(args: argparse.Namespace) -> None:
    """Each configuration of SUITE in a fresh process (so peak RSS is its own), AVX2-only unless asked; with
    --compare-with, each also on the other checkout's code, right before (the same load for both)."""
    env = os.environ | ({} if args.native_isa else AVX2_ONLY)
    trees = [("this tree", env)]
    if args.compare_with:
        before = env | {
            "PYTHONPATH": os.pathsep.join(filter(None, [shadow(args.compare_with), env.get("PYTHONPATH")]))
        }
        trees.insert(0, (args.compare_with, before))
    rows = []
    for variant, batch in SUITE:
        for code, tree_env in trees:
            text, figures = run_one(variant, batch, args, tree_env)
            print(f"--- {code}\n{text}", flush=True)
            rows.append((variant, batch, code, figures))
    print(f"reference: {REFERENCE}")
    print(
        "| variant | batch | code | samples/s (median) | best step | peak RSS GB | CPU ISA | load before -> after |"
    )
    print("|---|---:|---|---:|---:|---:|---|---|")
    for variant, batch, code, f in rows:
        print(
            f"| {variant} | {batch} | {code} | {f['rate']:.2f} | {f['best']:.2f} | {f['peak']:.2f} | {f['isa']} "
            f"| {f['load']} |"
        )


if __name__ == "__main__":
    main()

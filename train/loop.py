"""The training loop of `avaf-train` (DESIGN.md §5 "Recipe" and "Speed").

Adam, lr ×0.1 every 8 epochs, batch 32, 30 epochs, a fixed seed (each epoch reseeded from seed + epoch,
so a resumed run reproduces the uninterrupted one). Whatever model.variant builds, the loop trains it the
same way: the model takes a batch in the store's layout and its own `losses` give the objective (the
variant's recipe is already in the config). The checkpoint is selected on val and test is reported at that
checkpoint. Features are loaded once into memory on the training device (or streamed, train/stream.py);
batches are gathered there by index; mixed precision on GPU.

Run folder: config.json (resolved config), metrics.jsonl (one line per epoch: every loss term by name,
accuracies, samples/s, lr, and where the epoch's wall time went: steps, evaluation, checkpoints), best/ and
last/ checkpoints, results.json and results.md (the paper's table at the best checkpoint; results.json
counts the selected epoch from 1, as the console does, writes a type without questions as null, and gives
the invocation's seconds: loading the features, the epochs, the report), predictions.jsonl (per question:
prediction, correctness, δ), curves.png and delta.png (train/plots.py), and with --log tensorboard the
same scalars in tensorboard/. A folder that already holds any of these is refused unless the run is resumed
(--resume) or replaced (--overwrite).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from avaf.shared.avqa.answers import ANSWERS
from avaf.shared.files import (
    append_text,
    check_fresh_output,
    json_text,
    removing_new_empty_folders,
    write_text,
)
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import SECONDS, WORDS

from . import checkpoint
from .config import TrainConfig, warmup
from .data import Shape, SplitData, columns, gather
from .evaluate import Evaluation, evaluate, results_markdown
from .model import build_model
from .plots import log_epoch, summary_writer, write_run_plots
from .stream import open_splits

log = logging.getLogger(__name__)

#: what a run writes into its folder: the names --overwrite removes and whose presence refuses a new run
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    checkpoint.BEST,
    checkpoint.LAST,
    "results.json",
    "results.md",
    "predictions.jsonl",
    "curves.png",
    "delta.png",
    "tensorboard",
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None (full precision) on CPU."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class Run:
    """What every epoch and evaluation of one run shares: its config, its folder and how batches are made."""

    cfg: TrainConfig
    out: Path
    shape: Shape  # T and M the batches are padded to
    amp: torch.dtype | None  # autocast dtype on GPU, None for full precision
    progress: bool = False  # progress bars
    board: Any = None  # the tensorboard writer (--log tensorboard), else None

    def evaluate(self, model: torch.nn.Module, data: SplitData) -> Evaluation:
        return evaluate(model, data, self.shape, eval_batch(self.cfg), self.amp)


def load_data(cfg: TrainConfig, device: torch.device) -> tuple[dict[str, SplitData], Shape]:
    """train / val / test on `device`, in memory when they fit the memory budget, else streamed from the
    file (train/stream.py); and the padded T and M."""
    with FeatureStore(cfg.data.feats) as fs:
        key = columns(fs)  # the arrays it reads, by name: a store without one is refused in one line
        d_visual, d_words = fs.shape(SECONDS, key["visual"])[-1], fs.shape(WORDS, key["words"])[-1]
        if cfg.model.dim not in (d_visual, d_words) or d_visual != d_words:
            raise ValueError(
                f"{fs.path}: features are {d_visual}-D (visual) / {d_words}-D (words) but model.dim is "
                f"{cfg.model.dim}; set --dim to the features' width"
            )
        d_audio = fs.shape(SECONDS, key["audio"])[-1]
        if d_audio != cfg.model.audio_dim:
            raise ValueError(
                f"{fs.path}: audio features are {d_audio}-D but model.audio_dim is {cfg.model.audio_dim} "
                "(train() takes it from the store: fit_to_store)"
            )
        if fs.random_weights:
            log.warning(
                "%s was extracted with RANDOM WEIGHTS (%s): results are meaningless",
                fs.path,
                fs.random_weights,
            )
        present = [s for s in ("train", "val", "test") if _has(fs, s)]
    splits = open_splits(cfg.data.feats, present, cfg.data.subset, device, cfg.data.memory_budget)
    for needed in ("train", "val"):
        if needed not in splits:
            raise ValueError(f"{cfg.data.feats}: no {needed} questions (the checkpoint is selected on val)")
    return splits, padding(splits.values(), cfg.model.max_seconds)


def fit_to_store(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with model.audio_dim the width of the store's audio array (VGGish: 128): the store, not a
    flag, says which audio encoder made it. A store without the arrays avaf-train reads: one line."""
    with FeatureStore(cfg.data.feats) as fs:
        fs.require_videos("training")  # an empty video table's widths would blame the model config
        width = int(fs.shape(SECONDS, columns(fs)["audio"])[-1])
    return cfg if width == cfg.model.audio_dim else replace(cfg, model=replace(cfg.model, audio_dim=width))


def padding(splits, max_seconds: int) -> Shape:
    """T: the longest video of the splits, at most `max_seconds`; M: their longest stored question."""
    seconds = min(max_seconds, max(int(s.video_length.max()) for s in splits))
    return Shape(seconds, max(int(s.word_length.max()) for s in splits))


def eval_batch(cfg: TrainConfig) -> int:
    """Questions per evaluation batch: 4x the training batch (no gradients), at most 128 so that the
    authors' batch 64 does not evaluate 256 questions at once (~12 GB at T = 60 on a CPU)."""
    return min(4 * cfg.optim.batch_size, 128)


def _has(fs: FeatureStore, split: str) -> bool:
    return len(fs.questions(split=split)["question_id"]) > 0


def train_epoch(model, opt, data: SplitData, run: Run, epoch: int, max_steps: int = 0) -> dict:
    """One pass over the training split (at most `max_steps` optimizer steps when > 0); returns the mean of
    every loss term, the speed and the steps taken. Within the run's first `warmup_steps` steps the lr rises
    linearly to the epoch's (`_warmed_up`); the epoch's lr is back in place when it returns."""
    from tqdm import tqdm

    cfg, amp, device = run.cfg, run.amp, data.device
    gen = torch.Generator(device="cpu").manual_seed(cfg.optim.seed + epoch)
    torch.manual_seed(cfg.optim.seed + epoch)  # dropout: reproducible per epoch, so --resume is exact
    scaler = torch.amp.GradScaler(enabled=amp == torch.float16)
    sums: dict[str, torch.Tensor] = {}
    model.train()
    start = time.perf_counter()
    bs = cfg.optim.batch_size
    bar = tqdm(
        total=len(data), desc=f"epoch {epoch + 1}", unit="sample", disable=not run.progress, leave=False
    )
    seen = steps = 0
    first, epoch_lr = epoch * -(-len(data) // bs), [g["lr"] for g in opt.param_groups]  # the run's step
    for features, rows in data.parts(gen, cfg.optim.seed + epoch):  # one part in memory; blocks when streamed
        rows = rows.to(data.answer.device)  # once per part: slicing it then never waits for the GPU
        for a in range(0, len(rows), bs):
            if max_steps and steps >= max_steps:
                break
            batch, answers = gather(data, features, rows[a : a + bs], run.shape)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                losses = model.losses(model(batch), answers, cfg.loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            _warmed_up(opt, epoch_lr, first + steps, warmup(cfg.optim))
            scaler.step(opt)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * len(answers)
            seen, steps = seen + len(answers), steps + 1
            bar.update(len(answers))  # the bar's rate is samples/s
        if max_steps and steps >= max_steps:
            break
    bar.close()
    _warmed_up(opt, epoch_lr, 0, 0)  # the epoch's lr, for the scheduler and the log
    stats = {f"loss_{k}": float(v) / max(seen, 1) for k, v in sums.items()}  # waits for the last step
    seconds = time.perf_counter() - start
    return stats | {"epoch_s": round(seconds, 3), "samples_per_s": round(seen / seconds, 2), "steps": steps}


def _warmed_up(opt, epoch_lr: list[float], step: int, warmup: int) -> None:
    """The lr of optimizer step `step` (0-based, over the run): the epoch's lr times (step + 1) / warmup
    while step < warmup, else the epoch's. The paper variant's aligned start needs it at lr 5e-4
    (docs/training.md, "Order and place at full width")."""
    factor = (step + 1) / warmup if step < warmup else 1.0
    for group, lr in zip(opt.param_groups, epoch_lr, strict=True):
        group["lr"] = lr * factor


@dataclass
class Standing:
    """Where a run stands: the next epoch to run, the best val accuracy so far and its epoch. Epochs count
    from 0 here, in the resume state and in the checkpoints' metadata (as metrics.jsonl's "epoch" does);
    results.json and the console count from 1."""

    epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1


def _start(cfg: TrainConfig, out: Path, resume: bool, model, opt, sched) -> Standing:
    """Where the run starts; restores the state on --resume (a run killed before its first checkpoint
    starts again from epoch 1)."""
    if resume and not (out / checkpoint.LAST / checkpoint.WEIGHTS).is_file():
        log.info("%s: no checkpoint yet, starting from epoch 1", out)
        resume = False
    if not resume:
        write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        write_text(out / "metrics.jsonl", "")
        return Standing()
    meta = checkpoint.read_meta(out / checkpoint.LAST)
    if meta["config"].model != cfg.model or meta["config"].loss != cfg.loss:
        raise checkpoint.CheckpointError(
            f"{meta['path']}: was trained with another model or loss config; resume with the run's own config.json"
        )
    checkpoint.load_weights(model, meta["path"])
    state = checkpoint.load_state(out / checkpoint.LAST, meta["epoch"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if _epoch_of(ln) <= meta["epoch"]]  # drop epochs after the checkpoint
    write_text(out / "metrics.jsonl", "".join(ln + "\n" for ln in kept))
    log.info("resuming %s after epoch %d", out, meta["epoch"] + 1)
    return Standing(meta["epoch"] + 1, float(state["best_acc"]), int(state["best_epoch"]))


def _epoch_of(line: str) -> float:
    """The epoch of a metrics line; a line cut short by a kill counts as after every checkpoint."""
    try:
        return json.loads(line)["epoch"]
    except (json.JSONDecodeError, KeyError):
        return float("inf")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """Train on `train`, select on `val`, report `test` at the selected checkpoint; returns the results.

    A run folder that already holds a run is refused unless `resume` (continue it) or `overwrite`
    (delete its files first: `RUN_FILES`; nothing else in the folder is touched). A run that fails before
    writing anything leaves no empty folder behind (one that was there before stays)."""
    with removing_new_empty_folders(cfg.run.out_dir):
        return _train(cfg, resume, progress, overwrite)


def _train(cfg: TrainConfig, resume: bool, progress: bool, overwrite: bool) -> dict:
    began = time.perf_counter()
    out = Path(cfg.run.out_dir)
    _check_run_folder(out, resume, overwrite)
    writer = summary_writer() if cfg.run.log == "tensorboard" else None  # missing: an error before any work
    device = resolve_device(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    cfg = fit_to_store(cfg)  # model.audio_dim: the store's audio width
    splits, shape = load_data(cfg, device)
    if resume:
        out.mkdir(parents=True, exist_ok=True)
    else:  # --overwrite: the old run goes only now that the features have loaded and the new one can start
        _fresh_run_folder(out, overwrite)
    log.info("features in memory: %.1f MB on %s", sum(s.nbytes for s in splits.values()) / 1e6, device)
    torch.manual_seed(cfg.optim.seed)
    model = build_model(cfg.model).to(device)
    if cfg.run.compile:
        model.compile()  # in place: the checkpoint keys stay the model's own
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)  # one kernel: 5x faster on CPU
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.optim.lr_step_epochs, gamma=cfg.optim.lr_gamma)
    standing = _start(cfg, out, resume, model, opt, sched)
    board = writer(str(out / "tensorboard")) if writer else None
    run = Run(cfg, out, shape, amp_dtype(device, cfg.run.amp), progress, board)
    ready = time.perf_counter()
    _epochs(run, model, opt, sched, splits, standing)
    if board:
        board.close()
    trained = time.perf_counter()
    seconds = {"load": round(ready - began, 3), "epochs": round(trained - ready, 3)}
    results = final_report(run, model, splits, standing.best_epoch, seconds)
    write_run_plots(out)  # curves.png, delta.png
    return results


def _check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, a run that cannot start: both flags, nothing to resume, a run in the way."""
    if resume and overwrite:
        raise ValueError(f"{out}: --resume continues the run there and --overwrite replaces it: give one")
    if resume and not (out / "config.json").is_file():
        raise checkpoint.CheckpointError(
            f"{out}: no run to resume (no config.json); start one without --resume"
        )
    if not resume and not overwrite:
        _fresh_run_folder(out, overwrite=False)


def _epochs(run: Run, model, opt, sched, splits: dict[str, SplitData], standing: Standing) -> None:
    """The run's epochs from `standing`: train, evaluate on val, log, checkpoint (`standing` follows)."""
    cfg, out = run.cfg, run.out
    steps_left = cfg.optim.max_steps  # 0: no limit
    mark, saving = time.perf_counter(), 0.0  # when the last line was written; the checkpoint after it
    for epoch in range(standing.epoch, cfg.optim.epochs):
        lr = opt.param_groups[0]["lr"]
        stats = train_epoch(model, opt, splits["train"], run, epoch, steps_left)
        sched.step()
        evaluated = time.perf_counter()
        val = run.evaluate(model, splits["val"])
        now = time.perf_counter()
        times = {  # the lines add up to the run: each one's wall time runs from the line before, and its
            # checkpoints are those written in that time (the epoch before's, which follow its line)
            "eval_s": round(now - evaluated, 3),
            "checkpoint_s": round(saving, 3),
            "wall_s": round(now - mark, 3),
        }
        record = {"epoch": epoch, "lr": lr, **stats, **times, "val_accuracy": val.accuracy, "val": val.table}
        append_text(out / "metrics.jsonl", json_text(record) + "\n")  # before any checkpoint: resume keeps it
        mark = time.perf_counter()
        if run.board:
            log_epoch(run.board, record)
        if val.accuracy > standing.best_acc:
            standing.best_acc, standing.best_epoch = val.accuracy, epoch
            checkpoint.save(out / checkpoint.BEST, model, cfg, epoch, {"val_accuracy": val.accuracy})
        state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "best_acc": standing.best_acc,
            "best_epoch": standing.best_epoch,
        }
        checkpoint.save(out / checkpoint.LAST, model, cfg, epoch, {"val_accuracy": val.accuracy}, state)
        saving = time.perf_counter() - mark
        log.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if k != "val"})
        if cfg.optim.max_steps:
            steps_left -= stats["steps"]
            if steps_left <= 0:
                log.info("stopping after --max-steps %d optimizer steps", cfg.optim.max_steps)
                break


def _fresh_run_folder(out: Path, overwrite: bool) -> None:
    check_fresh_output(out, "a run", RUN_FILES, overwrite, "continue it with --resume or choose a new --out")


def final_report(
    run: Run, model, splits: dict[str, SplitData], best_epoch: int, seconds: dict[str, float] | None = None
) -> dict:
    """Evaluate the val-selected checkpoint on val and test; write results.json / .md / predictions.
    `seconds`: where this invocation's time went so far (load, epochs); the report's own time is added."""
    began = time.perf_counter()
    checkpoint.load_weights(model, run.out / checkpoint.BEST)
    evals = {s: run.evaluate(model, splits[s]) for s in ("val", "test") if s in splits}
    results = {
        "best_epoch": best_epoch + 1,  # counted from 1, as the console says it
        "selected_on": "val",
        "subset": run.cfg.data.subset,
        "tables": {s: e.table for s, e in evals.items()},
        "questions": {s: len(splits[s]) for s in splits},
        "delta_per_type": {s: e.delta_per_type for s, e in evals.items()},
    }
    note = next((e.delta_note for e in evals.values() if e.delta_note), None)
    if note:  # the model's δ cannot depend on the question: say so beside the numbers
        results["delta_note"] = note
    if seconds is not None:  # this invocation's wall time: loading the features, the epochs, the report
        results["seconds"] = seconds | {"report": round(time.perf_counter() - began, 3)}
    write_text(run.out / "results.json", json_text(results, indent=2) + "\n")
    write_text(run.out / "results.md", results_markdown(evals))
    write_predictions(run.out / "predictions.jsonl", evals)
    return results


def write_predictions(path: Path, evals: dict[str, Evaluation]) -> None:
    rows = []
    for split, e in evals.items():
        for i, qid in enumerate(e.question_id.tolist()):
            row = {
                "split": split,
                "question_id": qid,
                "predicted": ANSWERS[e.predicted[i]],
                "correct": bool(e.correct[i]),
            }
            if e.delta is not None:
                row["delta_visual"], row["delta_audio"] = (round(float(x), 4) for x in e.delta[i])
            rows.append(json_text(row) + "\n")
    write_text(path, "".join(rows))

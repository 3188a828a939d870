"""The pictures of a run and of a sweep (PNG, matplotlib's Agg canvas: headless, no pyplot state), and the
same per-epoch scalars for TensorBoard (`--log tensorboard`).

A run (`avaf-train`): `curves.png` (every loss term, val accuracy per modality and the lr, per epoch; the
selected epoch marked) and `delta.png` (QOAF's mean modality weights δ per question type, eq. 12-13).
A sweep (`avaf-sweep`): accuracy against a numeric knob per question group (Tables 4-5 as curves), bars for
any other grid (Table 3's ablations), and δ per question type for every point of every grid (Fig. 1's idea).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from avaf.shared.avqa.question_types import MODALITIES, OVERALL, TYPES
from avaf.shared.files import atomic_path

GROUPS = (*MODALITIES, OVERALL)  # the paper's averages: Audio, Visual, Audio-Visual, All
DPI = 110
MIN_LABELLED = 0.08  # delta.png: a bar segment narrower than this has no room for its number


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG atomically (a killed run never leaves half an image)."""
    if fig.get_layout_engine() is None:  # a figure made with layout="constrained" has placed itself
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _finite(values) -> bool:
    return any(v is not None and not math.isnan(v) for v in values)


def _nan(v) -> float:
    """A number to plot: metrics.jsonl writes an accuracy without questions as null."""
    return math.nan if v is None else v


def run_curves(metrics: Sequence[dict], best_epoch: int, path: Path) -> Path:
    """curves.png from a run's metrics.jsonl lines: loss terms, val accuracy per modality, lr; the selected
    epoch `best_epoch` (counted from 1, as results.json does) marked."""
    epochs = [m["epoch"] + 1 for m in metrics]
    fig = Figure(figsize=(12, 3.6))
    losses, acc, lr = fig.subplots(1, 3)
    for key in sorted({k for m in metrics for k in m if k.startswith("loss_")}):
        losses.plot(epochs, [m.get(key, math.nan) for m in metrics], marker=".", label=key[5:])
    positive = all(v > 0 for m in metrics for k, v in m.items() if k.startswith("loss_"))
    losses.set(title="training loss terms", xlabel="epoch", ylabel="mean per question")
    losses.set_yscale("log" if positive else "linear")  # the terms differ by orders of magnitude
    losses.legend(fontsize=8)
    for group in GROUPS:
        ys = [_nan(m["val"].get(group)) for m in metrics]
        if _finite(ys):
            acc.plot(epochs, ys, marker=".", label=group, lw=2.5 if group == OVERALL else 1.2)
    if best_epoch >= 1:
        acc.axvline(best_epoch, color="grey", ls="--", lw=1, label="selected")
    acc.set(title="val accuracy (%)", xlabel="epoch")
    acc.legend(fontsize=8)
    lr.plot(epochs, [m["lr"] for m in metrics], marker=".")
    lr.set(title="learning rate", xlabel="epoch", yscale="log")
    return save(fig, path)


def delta_bars(
    delta_per_type: Mapping[str, Sequence[float]], path: Path, title: str, note: str | None = None
) -> Path:
    """delta.png: per question type, δ_visual and δ_audio (summing to 1) as one stacked bar; `note` (the
    model's `delta_note`, e.g. δ constant by construction) goes under the title, and the bars turn grey."""
    return save(delta_figure(delta_per_type, title, note), path)


def delta_figure(
    delta_per_type: Mapping[str, Sequence[float]], title: str, note: str | None = None
) -> Figure:
    """delta.png's figure. Constrained layout places the type labels, the title and the legend inside the
    figure, and its size follows the number of types and title lines, so nothing is cut off and no part of
    it is left empty; a segment too narrow for its number shows none (the other segment's says it)."""
    types = [t for t in TYPES if t in delta_per_type]
    visual = [delta_per_type[t][0] for t in types]
    audio = [delta_per_type[t][1] for t in types]
    if note:
        title += "\n" + textwrap.fill(f"δ is {note}", 90)
    lines = title.count("\n") + 1
    fig = Figure(figsize=(7, 0.4 * len(types) + 1.1 + 0.2 * lines), layout="constrained")
    ax = fig.subplots()
    colors = ("tab:gray", "silver") if note else ("tab:blue", "tab:orange")
    ax.barh(types, visual, color=colors[0], label="δ visual")
    ax.barh(types, audio, left=visual, color=colors[1], label="δ audio")
    for y, (v, a) in enumerate(zip(visual, audio)):
        for middle, width in ((v / 2, v), (v + a / 2, a)):
            if width >= MIN_LABELLED:
                ax.text(middle, y, f"{width:.2f}", ha="center", va="center", fontsize=8, color="white")
    ax.axvline(0.5, color="black", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), xlabel="mean modality weight")
    ax.invert_yaxis()  # the paper's column order, top to bottom
    fig.suptitle(title, fontsize=9 if note else 10)  # over the figure's width, not only the axes'
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def write_run_plots(out: Path) -> list[Path]:
    """curves.png and (where the model has QOAF's weights) delta.png in a finished run folder."""
    metrics = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            metrics.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    results = json.loads((out / "results.json").read_text())
    written = [run_curves(metrics, results["best_epoch"], out / "curves.png")] if metrics else []
    deltas = results.get("delta_per_type", {})
    split = "test" if deltas.get("test") else "val"
    if deltas.get(split):
        whose = "the fusion weights" if results.get("delta_note") else "QOAF's"
        title = f"{whose} δ per question type ({split}, selected epoch {results['best_epoch']})"
        written.append(delta_bars(deltas[split], out / "delta.png", title, results.get("delta_note")))
    return written


def _bar_or_line_groups(points: Sequence[dict]) -> list[str]:
    return [g for g in GROUPS if _finite([p["test"][g]["mean"] for p in points])]


def sweep_curve(points: Sequence[dict], axis_label: str, title: str, path: Path) -> Path:
    """Test accuracy (mean ± std over seeds) against the grid's numeric value, one line per group."""
    points = sorted((p for p in points if p["x"] is not None), key=lambda p: p["x"])
    xs = [p["x"] for p in points]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for group in _bar_or_line_groups(points):
        ys = [_nan0(p["test"][group]["mean"]) for p in points]
        err = [p["test"][group]["std"] or 0.0 for p in points]
        (line,) = ax.plot(xs, ys, marker="o", label=group, lw=2.5 if group == OVERALL else 1.2)
        if any(err):  # ± std over seeds as a band
            lo, hi = [max(0.0, y - e) for y, e in zip(ys, err)], [min(100.0, y + e) for y, e in zip(ys, err)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    positive = [x for x in xs if x > 0]
    if positive and max(xs) / min(positive) > 20:  # e.g. α from 0 to 10
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=8)
    ax.set(title=title, xlabel=axis_label, ylabel="test accuracy (%, band: ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def sweep_bars(points: Sequence[dict], title: str, path: Path) -> Path:
    """Grouped bars: per point, test accuracy per group (mean ± std over seeds)."""
    groups = _bar_or_line_groups(points)
    fig = Figure(figsize=(max(6.4, 1.3 * len(points) + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / max(len(groups), 1)
    for j, group in enumerate(groups):
        xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(points))]
        ys = [_nan0(p["test"][group]["mean"]) for p in points]
        err = [p["test"][group]["std"] or 0.0 for p in points]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=group)
    ax.set_xticks(range(len(points)), [p["name"] for p in points], rotation=20, ha="right", fontsize=8)
    ax.set(title=title, ylabel="test accuracy (%, ± std over seeds)", ylim=(0, 104))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)


def _nan0(v) -> float:
    return 0.0 if v is None or math.isnan(v) else v


def sweep_delta(grids: Mapping[str, Sequence[dict]], path: Path) -> Path | None:
    """δ_audio per question type (δ_visual = 1 − δ_audio) for every point with QOAF's weights, one heatmap
    per grid: which modality each type leans on, and how a knob moves it. None if no point has δ."""
    panels = {}
    for name, points in grids.items():
        rows = [p for p in points if p["delta_per_type"]]
        if rows:
            panels[name] = rows
    if not panels:
        return None
    types = [t for t in TYPES if any(t in p["delta_per_type"] for rows in panels.values() for p in rows)]
    heights = [0.42 * len(rows) + 1.2 for rows in panels.values()]
    fig = Figure(figsize=(1.1 * len(types) + 3, sum(heights)))
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, rows) in zip(axes, panels.items()):
        grid = [[p["delta_per_type"].get(t, [math.nan, math.nan])[1] for t in types] for p in rows]
        image = ax.imshow(grid, cmap="coolwarm", vmin=0, vmax=1, aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), [p["name"] for p in rows], fontsize=8)
        ax.set_xticks(range(len(types)), [t.replace("/", "\n") for t in types], fontsize=7)
        ax.set_title(f"{name}: QOAF's mean δ_audio per question type (test; blue leans visual)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    return save(fig, path)


def summary_writer() -> type:
    """`--log tensorboard`'s writer class: torch.utils.tensorboard's when the tensorboard package is
    installed, else tensorboardX's. Neither is a dependency of avaf: without both, an error before training."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ValueError(
                "--log tensorboard needs the tensorboard (or tensorboardX) package: pip install tensorboard"
            ) from None
    return SummaryWriter


def log_epoch(writer, record: Mapping) -> None:
    """One metrics.jsonl record as TensorBoard scalars at step epoch + 1: loss/<term>, train/lr,
    train/samples_per_s, train/epoch_s, time/eval_s, time/checkpoint_s, time/wall_s, val/<group>."""
    step = record["epoch"] + 1
    for key, value in record.items():
        if key.startswith("loss_"):
            writer.add_scalar(f"loss/{key[5:]}", value, step)
        elif key in ("lr", "samples_per_s", "epoch_s"):
            writer.add_scalar(f"train/{key}", value, step)
        elif key in ("eval_s", "checkpoint_s", "wall_s"):
            writer.add_scalar(f"time/{key}", value, step)
    for group, value in record["val"].items():
        if group in GROUPS and not math.isnan(value):
            writer.add_scalar(f"val/{group}", value, step)
    writer.flush()

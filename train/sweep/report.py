"""What `avaf-sweep` writes into its --out: `table.md` and `results.json` in the paper's columns (one row
per grid point, test accuracy as mean ± std over seeds, the best row marked), and the PNG plots of
`plots.py` (a curve per numeric knob, bars otherwise, QOAF's δ per question type).

The best row is the point with the highest mean val accuracy ("All"): selected on val, as the trainer
selects its checkpoints, never on test. Every number comes from the run folders, so a second run of the
sweep that trains nothing writes the same report.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from avaf.shared.avqa.question_types import OVERALL, table_columns
from avaf.shared.files import json_text, write_text
from avaf.train import plots

from .grids import TRIAL_FILE, Grid, Trial


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def trial_row(t: Trial) -> dict:
    """One trial's outcome: done (with its val and test rows and δ) or failed (with the error)."""
    record = t.record or _read(t.folder / TRIAL_FILE)
    row = {
        "seed": t.seed,
        "folder": str(t.folder),
        "ran_now": t.status in ("new", "resume"),
        "resumed": t.status == "resume",
        "node_id": record.get("node_id", ""),
        "host": record.get("host", ""),
        "seconds": record.get("seconds"),
    }
    error = t.error or (record.get("error", "") if row["ran_now"] else "")
    results = _read(t.folder / "results.json") if not error else {}
    if not error and not results:
        error = "no results.json: the trial did not finish"
    if error:
        return row | {"status": "failed", "error": error}
    tables = results["tables"]
    return row | {
        "status": "done",
        "test": tables.get("test", {}),
        "val": tables.get("val", {}),
        "delta_per_type": results.get("delta_per_type", {}).get("test", {}),
    }


def _stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def point_summary(point, rows: list[dict]) -> dict:
    done = [r for r in rows if r["status"] == "done"]
    keys = [k for k, _ in table_columns()]
    types = sorted({t for r in done for t in r["delta_per_type"]})
    return {
        "name": point.name,
        "slug": point.slug,
        "overrides": point.overrides,
        "x": point.x,
        "test": {k: _stats([r["test"].get(k) for r in done]) for k in keys},
        "val": {k: _stats([r["val"].get(k) for r in done]) for k in keys},
        "delta_per_type": {
            t: [
                statistics.fmean(r["delta_per_type"][t][i] for r in done if t in r["delta_per_type"])
                for i in (0, 1)
            ]
            for t in types
        },
        "trials": rows,
    }


def grid_summary(grid: Grid, trials: list[Trial]) -> dict:
    points = [point_summary(p, [trial_row(t) for t in trials if t.point == p]) for p in grid.points]
    scored = [p for p in points if p["val"][OVERALL]["mean"] is not None]
    best = max(scored, key=lambda p: p["val"][OVERALL]["mean"])["name"] if scored else None
    return {"caption": grid.caption, "axis": grid.axis, "best": best, "points": points}


def _cell(s: dict, digits: int = 2) -> str:
    if s["mean"] is None:
        return "–"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def grid_markdown(name: str, g: dict, seeds: int) -> str:
    """The grid's table: the paper's columns where any point has questions, then val All and seeds done."""
    columns = [(k, h) for k, h in table_columns() if any(p["test"][k]["n"] for p in g["points"])]
    spread = "mean ± std over " if seeds > 1 else ""
    lines = [
        f"## {name}: {g['caption']}",
        "",
        f"Test accuracy (%), {spread}{seeds} seed{'s' if seeds > 1 else ''}; **best** = highest mean val All.",
        "",
        "| Method | " + " | ".join(h for _, h in columns) + " | val All | seeds |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    failures = []
    for p in g["points"]:
        n_done = sum(r["status"] == "done" for r in p["trials"])
        label = f"**{p['name']}** (best)" if p["name"] == g["best"] else p["name"]
        cells = [_cell(p["test"][k]) for k, _ in columns] + [_cell(p["val"][OVERALL])]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {n_done}/{len(p['trials'])} |")
        failures += [
            f"* {p['name']}, seed {r['seed']}: {r['error']}" for r in p["trials"] if r["status"] == "failed"
        ]
    dropped = len(table_columns()) - len(columns)
    if dropped:
        lines += ["", f"({dropped} columns without questions in this feature file are left out.)"]
    if failures:
        lines += ["", "Failed trials:", "", *failures]
    return "\n".join(lines) + "\n"


def write_report(out: Path, grids: list[Grid], trials: list[Trial], seeds: int) -> int:
    """table.md, results.json and the plots in `out`; returns how many trials failed."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {g.name: grid_summary(g, [t for t in trials if t.grid == g.name]) for g in grids}
    failed = sum(r["status"] == "failed" for g in summary.values() for p in g["points"] for r in p["trials"])
    ran = sum(t.status in ("new", "resume") for t in trials)
    doc = {"seeds": seeds, "trials": len(trials), "ran_now": ran, "failed": failed, "grids": summary}
    write_text(out / "results.json", json_text(doc, indent=2) + "\n")
    text = "\n".join(grid_markdown(name, g, seeds) for name, g in summary.items())
    write_text(out / "table.md", f"# avaf-sweep: {len(trials)} trials, {failed} failed\n\n{text}")
    write_plots(out, summary)
    return failed


def write_plots(out: Path, summary: dict) -> list[Path]:
    """<grid>.png per grid with a finished point (a curve against its knob, else bars) and delta.png."""
    written = []
    for name, g in summary.items():
        points = [p for p in g["points"] if p["test"][OVERALL]["n"]]
        if not points:
            continue
        title = f"{name}: {g['caption']}"
        if g["axis"] and all(p["x"] is not None for p in points):
            written.append(plots.sweep_curve(points, g["axis"], title, out / f"{name}.png"))
        else:
            written.append(plots.sweep_bars(points, title, out / f"{name}.png"))
    delta = plots.sweep_delta({n: g["points"] for n, g in summary.items()}, out / "delta.png")
    return written + ([delta] if delta else [])

"""What `avaf-sweep` runs: the built-in grids (the paper's Tables 3-5 and more), grids from YAML/TOML
files over avaf-train's options, and the plan: every (grid point, seed) as a trial with its resolved
`TrainConfig`, its run folder `<out>/<grid>/<point>/seed-<s>` and what to do with it.

A folder holding finished results of the same config is done (never run again); one holding a config.json
without results resumes from its last checkpoint; one holding a run of another config is never touched (the
trial fails, naming the first setting that differs); a point whose config does not resolve fails without
running. The settings of a trial: defaults, --config file, avaf-sweep's flags, then the point's own.

    ablations  AVAF-Net, w/o TACL, w/o AVCM, w/o SACL, w/o QOAF, w/o all    (Table 3)
    phi        φ = 0, 0.017, ..., 0.027                                      (Table 4)
    beta       β = 0.1, ..., 0.8                                             (Table 5)
    alpha      α = 0, 0.1, 0.3, 1, 3, 10                                     (not in the paper)
    variants   paper, authors                    subsets   all, real         (Tables 1-2)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avaf.shared.cli import one_line
from avaf.shared.config import read_file
from avaf.shared.errors import ConfigError
from avaf.train.config import TrainConfig, load_config

TRIAL_FILE = "trial.json"  # in each run folder: node, host, seconds, error of the trial's last attempt


@dataclass(frozen=True)
class Point:
    """One row of a table: a name, its folder name and the settings it changes (dotted config paths)."""

    name: str
    slug: str
    overrides: dict[str, Any]
    x: float | None = None  # the knob's value where the grid varies one number (plotted as a curve)


@dataclass(frozen=True)
class Grid:
    name: str
    points: tuple[Point, ...]
    axis: str = ""  # the knob's label for the curve; "" plots bars
    caption: str = ""


def _knob(name: str, key: str, values: tuple[float, ...], symbol: str, caption: str) -> Grid:
    points = tuple(Point(f"{symbol} = {v:g}", f"{name}-{v:g}", {key: v}, v) for v in values)
    return Grid(name, points, symbol, caption)


def _rows(name: str, rows: tuple[tuple[str, str, dict], ...], caption: str) -> Grid:
    return Grid(name, tuple(Point(label, slug, over) for label, slug, over in rows), "", caption)


PAPER_PHI = (0.0, 0.017, 0.019, 0.021, 0.023, 0.025, 0.027)  # Table 4, around 1/49
PAPER_BETA = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # Table 5
ALPHAS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)  # the paper gives no α: docs/training.md "Choosing α"
GRIDS: dict[str, Grid] = {
    "ablations": _rows(
        "ablations",
        (
            ("AVAF-Net", "full", {}),
            ("w/o TACL", "no-tacl", {"model.no_tacl": True}),
            ("w/o AVCM", "no-avcm", {"model.no_avcm": True}),
            ("w/o SACL", "no-sacl", {"model.no_sacl": True}),
            ("w/o QOAF", "no-qoaf", {"model.no_qoaf": True}),
            ("w/o all", "no-all", {"model.no_all": True}),
        ),
        "Table 3: the modules one at a time, and all of them",
    ),
    "phi": _knob("phi", "loss.sacl_phi", PAPER_PHI, "φ", "Table 4: SACL's threshold φ (eq. 7)"),
    "beta": _knob("beta", "loss.beta", PAPER_BETA, "β", "Table 5: the spatial loss weight β (eq. 14)"),
    "alpha": _knob(
        "alpha", "loss.alpha", ALPHAS, "α", "the temporal loss weight α (eq. 14; not in the paper)"
    ),
    "variants": _rows(
        "variants",
        (
            ("paper", "paper", {"model.variant": "paper"}),
            ("authors", "authors", {"model.variant": "authors"}),
        ),
        "the paper's model and the authors' public code (docs/training.md, Variants)",
    ),
    "subsets": _rows(
        "subsets",
        (("MUSIC-AVQA", "all", {"data.subset": "all"}), ("MUSIC-AVQA-Real", "real", {"data.subset": "real"})),
        "Tables 1-2: all questions against the real videos' only",
    ),
}


def config_keys() -> dict[str, str]:
    """Every name a grid may use for a setting -> its dotted config path: the dotted paths themselves
    ("loss.beta") and avaf-train's flag names ("beta", "no-tacl")."""
    keys: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            keys[prefix + f.name] = prefix + f.name
            if "help" in f.metadata:
                keys[f.metadata["flag"] or f.name.replace("_", "-")] = prefix + f.name

    walk(TrainConfig, "")
    return keys


def _settings(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {d!r}")
    keys, out = config_keys(), {}
    for k, v in d.items():
        path = keys.get(str(k).removeprefix("--"))
        if path is None:
            raise ConfigError(f"{where}: unknown setting {k!r}: not an avaf-train flag or config path")
        if path == "run.out_dir":
            raise ConfigError(f"{where}: {k!r}: the sweep places each trial's folder itself")
        out[path] = v
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "point"


def grid_from_file(path: str | Path) -> Grid:
    """A grid from YAML/TOML: `grid:` (every combination of the listed values) or `points:` (a list of
    settings, each with an optional `name`), plus `fixed:` settings that every point shares; keys are
    avaf-train's flag names or dotted config paths. `name:` names the grid (default: the file's stem)."""
    path = Path(path)
    d = read_file(path)
    unknown = set(d) - {"name", "fixed", "grid", "points"}
    if unknown or ("grid" in d) == ("points" in d):
        raise ConfigError(
            f"{path}: a sweep grid has name, fixed and exactly one of grid or points; got {sorted(d)}"
        )
    fixed = _settings(d.get("fixed") or {}, f"{path}: fixed")
    if "grid" in d:
        axes = _settings(d["grid"], f"{path}: grid")
        if not all(isinstance(v, list) and v for v in axes.values()):
            raise ConfigError(f"{path}: grid: every setting needs a non-empty list of values")
        flags = {p: k.removeprefix("--") for k, p in zip(d["grid"], axes)}
        points = []
        for combo in itertools.product(*axes.values()):
            over = dict(zip(axes, combo))
            name = ", ".join(f"{flags[p]}={v}" for p, v in over.items())
            numeric = len(over) == 1 and isinstance(combo[0], int | float) and not isinstance(combo[0], bool)
            points.append(
                Point(name, _slug(name.replace(", ", "_")), fixed | over, combo[0] if numeric else None)
            )
        axis = next(iter(flags.values())) if all(p.x is not None for p in points) else ""
        return Grid(str(d.get("name", path.stem)), tuple(points), axis, f"grid from {path.name}")
    if not isinstance(d["points"], list) or not d["points"]:
        raise ConfigError(f"{path}: points: expected a non-empty list of settings")
    points = []
    for i, p in enumerate(d["points"]):
        p = dict(p) if isinstance(p, dict) else p
        name = str(p.pop("name", "")) if isinstance(p, dict) else ""
        over = _settings(p, f"{path}: points[{i}]")
        name = name or ", ".join(f"{k}={v}" for k, v in over.items()) or "defaults"
        points.append(Point(name, _slug(name), fixed | over))
    return Grid(str(d.get("name", path.stem)), tuple(points), "", f"points from {path.name}")


def resolve_grid(name: str) -> Grid:
    """A built-in grid by name, or a grid file."""
    if name in GRIDS:
        return GRIDS[name]
    if Path(name).suffix in (".yaml", ".yml", ".toml", ".json"):
        return grid_from_file(name)
    raise ConfigError(f"--grid {name}: not a built-in grid ({', '.join(GRIDS)}) nor a .yaml/.toml file")


@dataclass
class Trial:
    grid: str
    point: Point
    seed: int | None
    folder: Path
    config: TrainConfig | None = None
    status: str = "new"  # new, resume, done (finished before: not run), failed (not runnable)
    error: str = ""
    record: dict = field(default_factory=dict)  # trial.json after the run

    @property
    def label(self) -> str:
        return f"{self.grid}/{self.point.slug}/seed-{self.seed}"


def plan(
    grids: list[Grid], config_file: str | None, flags: dict, out: Path, seeds: int, threads: int
) -> list[Trial]:
    """Every trial of every grid, with its resolved config and what to do with it (`Trial.status`)."""
    trials = []
    for grid, point in ((g, p) for g in grids for p in g.points):
        base = {**flags, **point.overrides}
        try:
            cfg0 = load_config(config_file, base)
            base |= {"data.feats": str(Path(cfg0.data.feats).resolve())}
            base.setdefault("run.threads", threads)
        except (ConfigError, ValueError) as e:
            cfg0, error = None, f"{type(e).__name__}: {one_line(e)}"
        for k in range(seeds):
            seed = cfg0.optim.seed + k if cfg0 else k
            folder = (out / grid.name / point.slug / f"seed-{seed}").resolve()
            t = Trial(grid.name, point, seed if cfg0 else None, folder)
            if cfg0 is None:
                t.status, t.error = "failed", error
            else:
                over = base | {"optim.seed": seed, "run.out_dir": str(folder)}
                t.config = load_config(config_file, over)
                t.status, t.error = _status(folder, t.config)
            trials.append(t)
    return trials


def _status(folder: Path, cfg: TrainConfig) -> tuple[str, str]:
    """done (finished results of this config), resume (a config.json: the run started), new, or failed
    when the folder holds a run of another config (it is never touched)."""
    if not (folder / "config.json").is_file():
        return "new", ""
    old = json.loads((folder / "config.json").read_text())
    diff = _differs(old, cfg.to_dict())
    if diff:
        return (
            "failed",
            f"{folder}: holds a run of another config ({diff}); move it away or choose another --out",
        )
    return ("done" if (folder / "results.json").is_file() else "resume"), ""


def _differs(old: dict, new: dict) -> str:
    """The first setting that differs, except where it runs (run.*) and its memory budget."""
    for section, values in new.items():
        if section == "run":
            continue
        for k, v in values.items():
            if (section, k) != ("data", "memory_budget") and old.get(section, {}).get(k) != v:
                return f"{section}.{k}: {old.get(section, {}).get(k)!r} there, {v!r} now"
    return ""

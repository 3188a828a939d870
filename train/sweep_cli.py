"""`avaf-sweep`: grids of avaf-train runs on Ray (train/sweep.py), aggregated into the paper's tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import click

from avaf.shared.cli import (
    CONTEXT,
    Command,
    common_options,
    config_file_option,
    config_options,
    from_flags,
    given,
    option,
)

from .config import TrainConfig

DEFAULT_OUT = "sweeps"


@dataclass(frozen=True)
class SweepConfig:
    """How avaf-sweep runs its grids; every other flag is avaf-train's and sets every trial."""

    grid: tuple[str, ...] = option(
        (),
        "A built-in grid (ablations, phi, beta, alpha, variants, subsets) or a YAML/TOML grid file; repeatable, "
        "each grid its own table.",
        required=True,
    )
    seeds: int = option(1, "Run every grid point with seeds --seed, --seed + 1, ... (mean ± std over them).")
    address: str = option("", "Ray cluster to run on (or RAY_ADDRESS); none: a local Ray instance.")
    cpus_per_trial: float = option(1.0, "CPUs (and torch threads) each trial takes.")
    gpus_per_trial: float = option(-1.0, "GPUs each trial takes; -1: one where the cluster has GPUs, else 0.")
    max_concurrent: int = option(0, "Trials at once at most (0: as many as the resources hold).")


@click.command("avaf-sweep", cls=Command, context_settings=CONTEXT)
@common_options(base=logging.INFO)
@config_file_option(
    "avaf-train YAML/TOML config for every trial; flags override it, grid points override both."
)
@config_options(SweepConfig)
@config_options(TrainConfig)
def main(config_file, **flags) -> None:
    """Train every point of every --grid (x --seeds) as its own avaf-train run folder under --out
    (default: sweeps/), on Ray Tune, then write table.md, results.json and PNG plots there. Running it
    again trains only what is not finished (killed trials resume from their last checkpoint). Exit status
    1 if any trial failed (its error is in the table); 2 for bad input."""
    from .grids import resolve_grid
    from .sweep import run_sweep

    s = from_flags(SweepConfig, flags)
    over = given(TrainConfig, flags)
    out = Path(over.pop("run.out_dir", DEFAULT_OUT))
    grids = [resolve_grid(g) for g in s.grid]
    summary = run_sweep(
        grids,
        out,
        config_file,
        over,
        s.seeds,
        s.address,
        s.cpus_per_trial,
        s.gpus_per_trial,
        s.max_concurrent,
    )
    click.echo((out / "table.md").read_text())
    click.echo(
        f"{summary.ran} trials run, {summary.skipped} done before, {summary.failed} failed, "
        f"{summary.seconds:.0f} s; outputs in {out}/"
    )
    if summary.failed:
        click.get_current_context().exit(1)


for _param in main.params:  # --out is avaf-train's option, with the sweep's meaning and default
    if _param.name == "out":
        _param.help = "The sweep's folder: one run folder per trial, table.md, results.json and the PNGs."
        _param.default = DEFAULT_OUT

"""`avaf-sweep`: grids of avaf-train runs on Ray (`runner.run_sweep`), aggregated into the paper's tables."""

from __future__ import annotations

import logging
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
)
from avaf.shared.config import read_file
from avaf.train.cli import check_feats
from avaf.train.config import TrainConfig

from .config import SweepConfig

DEFAULT_OUT = "sweeps"


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

    s = from_flags(SweepConfig, flags)
    over = given(TrainConfig, flags)
    out = Path(over.pop("run.out_dir", DEFAULT_OUT))
    grids = [resolve_grid(g) for g in s.grid]
    # the features every trial reads, before torch and Ray load (a grid point may change anything else)
    feats = over.get("data.feats") or (
        read_file(config_file).get("data", {}).get("feats") if config_file else ""
    )
    if feats:
        check_feats(feats)
    from .runner import run_sweep

    summary = run_sweep(grids, out, config_file, over, s)
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

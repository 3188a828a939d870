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
@config_file_option("avaf-train config for every trial; flags override it, grid points both.")
@config_options(SweepConfig)
@config_options(TrainConfig)
def main(config_file, **flags) -> None:
    """Train every point of every --grid (x --seeds) as an avaf-train run under --out, on Ray Tune, and
    write table.md, results.json and plots there. Every avaf-train flag works here too and sets every trial
    (avaf-train --help lists them). Run it again to finish what is unfinished. Exit status 1 if a trial
    failed, 2 for bad input. Grids, files, clusters: docs/sweeps.md."""
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
        check_feats(feats, "avaf-sweep")
    from .runner import run_sweep

    summary = run_sweep(grids, out, config_file, over, s)
    click.echo((out / "table.md").read_text())
    click.echo(
        f"{summary.ran} trials run, {summary.skipped} done before, {summary.failed} failed, "
        f"{summary.seconds:.0f} s; outputs in {out}/"
    )
    if summary.failed:
        click.get_current_context().exit(1)


#: avaf-train's flags the help lists; the others work the same but are listed by avaf-train --help only, so
#: that this help fits on a screen (docs/sweeps.md explains the rest)
SHOWN = {"feats", "out", "epochs"}
TRAIN_FLAGS = {p.name for p in click.command()(config_options(TrainConfig)(lambda **_: None)).params}

for _param in main.params:
    if _param.name == "out":  # avaf-train's option, with the sweep's meaning and default
        _param.help = "The sweep's folder: a run folder per trial, table.md, results.json, PNGs."
        _param.default = DEFAULT_OUT
    elif _param.name == "feats":
        _param.help = "Feature file from avaf-extract (or data.feats in --config)."
    elif _param.name in TRAIN_FLAGS - SHOWN:
        _param.hidden = True

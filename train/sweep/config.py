"""`avaf-sweep`'s own settings: which grids, how many seeds, where and how wide its trials run."""

from __future__ import annotations

from dataclasses import dataclass

from avaf.shared.cli import option


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

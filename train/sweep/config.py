"""`avaf-sweep`'s own settings: which grids, how many seeds, where and how wide its trials run."""

from __future__ import annotations

from dataclasses import dataclass

from avaf.shared.cli import option


@dataclass(frozen=True)
class SweepConfig:
    """How avaf-sweep runs its grids; every other flag is avaf-train's and sets every trial."""

    grid: tuple[str, ...] = option(
        (),
        "ablations, phi, beta, alpha, variants, subsets, or a grid file; repeatable.",
        required=True,
    )
    seeds: int = option(1, "Seeds per point: --seed, --seed + 1, ... (mean ± std).")
    address: str = option("", "Ray cluster (or RAY_ADDRESS); none: a local Ray.")
    cpus_per_trial: float = option(1.0, "CPUs (and torch threads) per trial.")
    gpus_per_trial: float = option(-1.0, "GPUs per trial; -1: one where there are GPUs.")
    max_concurrent: int = option(0, "Trials at once at most (0: all that fit).")

"""The one typed config of `avaf-train` (DESIGN.md §5, STYLE.md "One typed config per stage").

Frozen dataclasses nested by concern (ModelConfig and LossConfig in model_config.py); every default lives
in them. Override order: defaults, then the variant's recipe (its model class's `recipe`), then a YAML or
TOML file, then overrides (the CLI flags), each validated against the fields: an unknown key or a value
of the wrong type is a `ConfigError` that names the key.

    cfg = load_config("run.yaml", {"model.no_sacl": True, "optim": {"lr": 3e-4}})
    cfg.to_dict()  # saved in every checkpoint and in the run folder
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avaf.shared.cli import option
from avaf.shared.config import ConfigError, from_dict, merge, nest, read_file, resolve, to_dict

from .model_config import LossConfig, ModelConfig
from .variants import MODELS, model_class

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_config",
    "load_config",
]


LOGS = ("none", "tensorboard")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's recipe: Adam, lr 1e-4, x0.1 every 8 epochs, batch 32, 30 epochs, a fixed seed; and a linear
    warm-up whose length grows with the lr (`warmup`), without which the paper variant's aligned start is lost
    at lr 5e-4 (docs/training.md, "Order and place at full width")."""

    lr: float = option(1e-4, "Adam learning rate.")
    lr_step_epochs: int = option(8, "Multiply the lr by --lr-gamma every this many epochs.", flag="lr-step")
    lr_gamma: float = option(0.1, "Step decay factor.")
    batch_size: int = option(32, "Questions per batch (the authors variant's recipe: 64).")
    epochs: int = option(30, "Epochs.")
    seed: int = option(0, "Random seed; runs are deterministic on CPU given it (authors' recipe: 42).")
    warmup_steps: int = option(
        -1,
        "Raise the lr linearly over the run's first this many optimizer steps: -1 (auto) 150 per 5e-4 of lr "
        "(30 at 1e-4, 150 at 5e-4); 0 none (the authors variant's recipe).",
        flag="warmup-steps",
    )
    max_steps: int = option(0, "Stop after this many optimizer steps (0: no limit), for smoke tests.")


WARMUP_SLOPE = 5e-4 / 150  # lr per step at most while warming up: 150 steps at 5e-4 kept order and place


def warmup(optim: OptimConfig) -> int:
    """The run's warm-up in optimizer steps: `warmup_steps`, or with -1 the steps that climb to `lr` at
    WARMUP_SLOPE (measured by tests/benchmarks/bench_order.py: 150 at 5e-4)."""
    return optim.warmup_steps if optim.warmup_steps >= 0 else round(optim.lr / WARMUP_SLOPE)


@dataclass(frozen=True)
class DataConfig:
    """Where the features come from and which questions to use (extended by the data loader)."""

    feats: str = option(
        "",
        "Feature file from avaf-extract (required: here, in --config, or the run's own with --resume).",
        path={"exists": True, "dir_okay": False},
    )
    subset: str = option("all", "all, or real (MUSIC-AVQA-Real: real videos only).", choices=("all", "real"))
    memory_budget: str = option(
        "auto",
        "Feature bytes held in memory at most, e.g. 6G or 500M; splits that need more are streamed from "
        "the file in blocks of videos. auto: the memory this process may use less 6 GiB for training, at "
        "least a quarter of it.",
    )


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and what runs the model."""

    out_dir: str = option(
        "runs/avaf",
        "Run folder. One that already holds a run is refused: --resume continues it, --overwrite replaces it.",
        flag="out",
        path={"file_okay": False},
    )
    device: str = option("auto", "auto (GPU if present), cpu, cuda, cuda:1, ...")
    amp: bool = option(True, "bf16/fp16 autocast on GPU (ignored on CPU; the authors' recipe: off).")
    threads: int = option(0, "Torch CPU threads (0: all cores).")
    compile: bool = option(
        False,
        "torch.compile the model's forward and backward (fewer, fused kernels on a GPU; each new batch shape "
        "compiles first, about a minute in all). The same maths, not the same bits.",
    )
    log: str = option(
        "none",
        "tensorboard: also write the per-epoch scalars to <out>/tensorboard/ (needs the tensorboard or "
        "tensorboardX package, not installed with avaf).",
        choices=LOGS,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (JSON/YAML-safe)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) nested dict; missing keys take the defaults."""
        return from_dict(cls, dict(d))


def check_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The config as given, before any recipe: defaults, then the file, then `overrides`, every key, type and
    the variant checked. A mistake in a file or a flag is found here without importing torch."""
    cfg = resolve(TrainConfig, path, dict(overrides or {}))  # errors name the file and the key
    if cfg.model.variant not in MODELS:
        raise ConfigError(
            f"{path or 'config'}: model.variant must be one of {list(MODELS)}, got {cfg.model.variant!r}"
        )
    return cfg


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve the config: defaults, then the file at `path` (if any), then `overrides`.

    The variant's recipe (its model class's `recipe`, chosen by model.variant wherever it is set) sits
    between the defaults and the file: `--variant authors` trains at batch 64 with seed 42 unless the user
    says otherwise.

    `overrides` may be nested ({"model": {"dim": 8}}) or dotted ({"model.dim": 8}); None values are
    skipped so unset CLI flags don't override the file.
    """
    flags = dict(overrides or {})
    cfg = check_config(path, flags)
    # the model's class imports torch: only once the config is known to be right, so a typo is quick
    recipe = model_class(cfg.model.variant).recipe
    if not recipe:
        return cfg
    given = merge(read_file(path) if path is not None else {}, nest(flags))  # what the user set wins
    return from_dict(TrainConfig, merge(merge(to_dict(TrainConfig()), recipe), given), "config")

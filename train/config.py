"""The one typed config of `avaf-train` (DESIGN.md §5, STYLE.md "One typed config per stage").

Frozen dataclasses nested by concern; every default lives here and nowhere else. Override order:
defaults, then a YAML or TOML file, then overrides (the CLI flags), each validated against the fields:
an unknown key or a value of the wrong type is a `ConfigError` that names the key.

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

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
]


VARIANTS = ("paper", "authors")
LOGS = ("none", "tensorboard")
#: What each variant changes in the defaults (a layer between the defaults and the file/flags): the authors'
#: recipe (DESIGN.md §5b) is batch 64, seed 42, their temporal weight 100 and fp32 (no autocast on GPU);
#: the rest (Adam 1e-4, x0.1 every 8 epochs, 30 epochs, spatial weight 0.2) equals the paper's.
VARIANT_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "authors": {"optim": {"batch_size": 64, "seed": 42}, "loss": {"alpha": 100.0}, "run": {"amp": False}},
}


@dataclass(frozen=True)
class ModelConfig:
    """AVAF-Net's sizes and the ablation switches, one per row of the paper's Table 3."""

    variant: str = option(
        "paper",
        "paper: AVAF-Net as published; authors: the authors' public code (DESIGN.md §5b) with its recipe "
        "(batch 64, seed 42, temporal weight 100, fp32). Saved in the checkpoint.",
        choices=VARIANTS,
    )
    dim: int = option(512, "Feature width D (512 for CLIP ViT-B/32), also the model width.")
    audio_dim: int = 128  # VGGish embedding width
    heads: int = 4
    ffn_dim: int = 2048
    dropout: float = 0.1
    n_answers: int = 42  # C: the fixed answer vocabulary in manifests/
    max_seconds: int = option(60, "Seconds T used per video (longer videos are cut).", flag="seconds")
    visual_cls: bool = True  # visual input is the store's layout: token 0 is CLIP's CLS, dropped by the model
    time_positions: bool = option(
        True, "Learned per-second positions in the audio time attention (off: the order-blind control)."
    )
    no_tacl: bool = option(False, "Ablation: without temporal alignment contrastive learning.")
    no_avcm: bool = option(False, "Ablation: without audio-visual clue mining (F'_p = F_p, F'_a = F_a).")
    no_sacl: bool = option(False, "Ablation: without spatial alignment contrastive learning.")
    no_qoaf: bool = option(False, "Ablation: without QOAF's adaptive weights (plain concatenation).")
    no_all: bool = option(False, "Ablation: without all modules (pooled inputs -> classifier).")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.variant != "paper":
            ablations = [
                k for k in ("no_tacl", "no_avcm", "no_sacl", "no_qoaf", "no_all") if getattr(self, k)
            ]
            if ablations:
                raise ValueError(f"model.{ablations[0]}: the ablation switches belong to the paper variant")
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("dim", "audio_dim", "heads", "ffn_dim", "n_answers", "max_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class LossConfig:
    """Eq. 14: CE + alpha * L_temp + beta * L_spat, and SACL's threshold and temperature (eq. 7-8)."""

    alpha: float = option(0.1, "Weight of the temporal alignment loss (TACL, eq. 14).")
    beta: float = option(0.2, "Weight of the spatial alignment loss (SACL, eq. 14).")
    sacl_phi: float = option(  # just under 1/49: every second has a positive patch (Table 4's best)
        0.019, "SACL threshold for positive patches (eq. 7).", flag="phi"
    )
    sacl_tau: float = option(0.4, "SACL temperature (eq. 8).", flag="tau")

    def __post_init__(self) -> None:
        if self.sacl_tau <= 0:
            raise ValueError(f"loss.sacl_tau must be positive, got {self.sacl_tau}")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's recipe: Adam, lr 1e-4, x0.1 every 8 epochs, batch 32, 30 epochs, a fixed seed."""

    lr: float = option(1e-4, "Adam learning rate.")
    lr_step_epochs: int = option(8, "Multiply the lr by --lr-gamma every this many epochs.", flag="lr-step")
    lr_gamma: float = option(0.1, "Step decay factor.")
    batch_size: int = option(32, "Questions per batch (the authors variant's recipe: 64).")
    epochs: int = option(30, "Epochs.")
    seed: int = option(0, "Random seed; runs are deterministic on CPU given it (authors' recipe: 42).")
    max_steps: int = option(0, "Stop after this many optimizer steps (0: no limit), for smoke tests.")


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


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve the config: defaults, then the file at `path` (if any), then `overrides`.

    The variant's recipe (`VARIANT_RECIPES`, chosen by model.variant wherever it is set) sits between the
    defaults and the file: `--variant authors` trains at batch 64 with seed 42 unless the user says otherwise.

    `overrides` may be nested ({"model": {"dim": 8}}) or dotted ({"model.dim": 8}); None values are
    skipped so unset CLI flags don't override the file.
    """
    flags = dict(overrides or {})
    cfg = resolve(TrainConfig, path, flags)  # checks the file and the flags; errors name the file
    recipe = VARIANT_RECIPES[cfg.model.variant]
    if not recipe:
        return cfg
    given = merge(read_file(path) if path is not None else {}, nest(flags))  # what the user set wins
    return from_dict(TrainConfig, merge(merge(to_dict(TrainConfig()), recipe), given), "config")

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

    variant: str = "paper"  # "paper" (AVAF-Net as published) or "authors" (their public code, DESIGN.md §5b)
    dim: int = 512  # D: CLIP ViT-B/32 token width, also the model width
    audio_dim: int = 128  # VGGish embedding width
    heads: int = 4
    ffn_dim: int = 2048
    dropout: float = 0.1
    n_answers: int = 42  # C: the fixed answer vocabulary in manifests/
    max_seconds: int = 60  # T: longer inputs are refused by the model; the data side pads to at most this
    visual_cls: bool = True  # visual input is the store's layout: token 0 is CLIP's CLS, dropped by the model
    time_positions: bool = True  # learned per-second positions in the audio time attention; off = order-blind
    no_tacl: bool = False  # without TACL: no temporal alignment loss
    no_avcm: bool = False  # without AVCM: F'_p = F_p, F'_a = F_a (both projected)
    no_sacl: bool = False  # without SACL: no spatial alignment loss
    no_qoaf: bool = False  # without QOAF's adaptive weights: plain concatenation of F''_p and F''_a
    no_all: bool = False  # without everything: pooled inputs -> linear classifier

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

    alpha: float = 0.1  # measured: docs/training.md "Choosing α"
    beta: float = 0.2
    sacl_phi: float = 0.019  # just under 1/49: every second has a positive patch (Table 4's best)
    sacl_tau: float = 0.4

    def __post_init__(self) -> None:
        if self.sacl_tau <= 0:
            raise ValueError(f"loss.sacl_tau must be positive, got {self.sacl_tau}")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's recipe: Adam, lr 1e-4, x0.1 every 8 epochs, batch 32, 30 epochs, a fixed seed."""

    lr: float = 1e-4
    lr_step_epochs: int = 8
    lr_gamma: float = 0.1
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the features come from and which questions to use (extended by the data loader)."""

    feats: str = ""  # path to feats.h5
    subset: str = "all"  # "all" or "real" (MUSIC-AVQA-Real: all-digit video ids)


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and what runs the model."""

    out_dir: str = "runs/avaf"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # autocast on GPU; ignored on CPU
    threads: int = 0  # torch threads on CPU; 0 = all cores


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

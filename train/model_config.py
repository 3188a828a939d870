"""The settings a model and its objective are built from: `ModelConfig` and `LossConfig` (docs/training.md).

Part of `avaf-train`'s one typed config (`config.TrainConfig` nests them; STYLE.md "One typed config per
stage"). They live below the models, apart from config.py, because config.py looks a variant's recipe up
in the models' table (`model.MODELS`) and the models are built from these: no module imports its importer.
`model.variant` names a row of that table; load_config checks it there.
"""

from __future__ import annotations

from dataclasses import dataclass

from avaf.shared.cli import option


@dataclass(frozen=True)
class ModelConfig:
    """AVAF-Net's sizes and the ablation switches, one per row of the paper's Table 3."""

    variant: str = option(
        "paper",
        "paper: AVAF-Net as published; authors: the authors' public code with its recipe (batch 64, seed 42, "
        "temporal weight 100, fp32; docs/training.md, Variants). Saved in the checkpoint.",
    )
    dim: int = option(512, "Feature width D (512 for CLIP ViT-B/32), also the model width.")
    audio_dim: int = 128  # audio feature width A; avaf-train takes it from the store (VGGish: 128)
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

"""The training objective of AVAF-Net, eq. 14: L = CE + alpha * L_temp + beta * L_spat.

`AVAFOutput` is what `AVAFNet` returns: the answer and one slot per loss term for that term's inputs,
None when its component is ablated. `compute_losses` is the one place where the terms are combined; it
returns every term by name, so each is logged by name, and a term whose component is ablated (TACL or
SACL off, or "without all") is absent from the dict rather than a zero that looks measured. A new term:
its inputs and its loss in its component module, a slot here, its weight in `LossConfig`, one `if` below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .inputs import ModelOutput, upcast
from .model_config import LossConfig
from .sacl import SaclInputs, spatial_alignment_loss
from .tacl import TaclInputs, temporal_alignment_loss


@dataclass
class AVAFOutput(ModelOutput):
    """`AVAFNet.forward`'s result; delta is QOAF's (δ_visual, δ_audio), None without its weights."""

    temporal: TaclInputs | None = None  # L_temp's inputs (tacl.py); None without TACL
    spatial: SaclInputs | None = None  # L_spat's inputs (sacl.py); None without SACL


def compute_losses(out: AVAFOutput, answers: Tensor, cfg: LossConfig) -> dict[str, Tensor]:
    """{"ce", "temporal" (if TACL is on), "spatial" (if SACL is on), "total"} for one batch.

    answers: (B,) answer indices; cfg: eq. 14's weights and SACL's threshold and temperature. Computed in
    float32 even under autocast: the cosine matrices and the log-sum-exps are where half precision would hurt.
    """
    with torch.autocast(device_type=out.logits.device.type, enabled=False):
        losses = {"ce": F.cross_entropy(out.logits.float(), answers)}
        total = losses["ce"]
        if out.temporal is not None:
            losses["temporal"] = temporal_alignment_loss(*upcast(out.temporal))
            total = total + cfg.alpha * losses["temporal"]
        if out.spatial is not None:
            losses["spatial"] = spatial_alignment_loss(*upcast(out.spatial), cfg.sacl_phi, cfg.sacl_tau)
            total = total + cfg.beta * losses["spatial"]
        losses["total"] = total
    return losses

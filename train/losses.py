"""The training objective of AVAF-Net, eq. 14: L = CE + alpha * L_temp + beta * L_spat.

The one place where the loss terms are combined. `compute_losses` takes the model's output dict and
returns every term by name, so each is logged by name; a term whose component is ablated (TACL or
SACL off, or "without all") is absent from the dict rather than a zero that looks measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .sacl import spatial_alignment_loss
from .tacl import temporal_alignment_loss


def compute_losses(
    outputs: Mapping[str, Any], answers: Tensor, alpha: float, beta: float, phi: float, tau: float
) -> dict[str, Tensor]:
    """{"ce", "temporal" (if TACL is on), "spatial" (if SACL is on), "total"} for one batch.

    outputs: the dict of `AVAFNet.forward`; answers: (B,) answer indices; alpha, beta: eq. 14's weights;
    phi, tau: SACL's threshold and temperature. Computed in float32 even under autocast: the cosine
    matrices and the log-sum-exps are where half precision would hurt.
    """
    logits = outputs["logits"]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        losses = {"ce": F.cross_entropy(logits.float(), answers)}
        total = losses["ce"]
        if "tacl_audio" in outputs:
            a, v, s = (outputs[k].float() for k in ("tacl_audio", "tacl_visual", "tacl_sounding"))
            losses["temporal"] = temporal_alignment_loss(a, v, s, outputs["seconds_mask"])
            total = total + alpha * losses["temporal"]
        if "sacl_patches" in outputs:
            q, p, a = (outputs[k].float() for k in ("sacl_sentence", "sacl_patches", "sacl_audio"))
            losses["spatial"] = spatial_alignment_loss(q, p, a, outputs["seconds_mask"], phi, tau)
            total = total + beta * losses["spatial"]
        losses["total"] = total
    return losses

"""The training objective of the authors' variant (DESIGN.md §5b): CE + 0.2 * spatial + 100 * temporal.

The one place where the authors' loss terms are combined; the counterpart of `losses.compute_losses`
with the same signature, so the training loop calls either. The weights come from the config (the
authors' recipe sets loss.alpha = 100 for the temporal term and keeps loss.beta = 0.2, loss.sacl_phi =
0.019 and loss.sacl_tau = 0.4 for the spatial term; see `config.VARIANT_RECIPES`); the FNAC temperature
(0.03) and foreground threshold (0.6) are §5b's constants in `authors_temporal.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .authors_spatial import authors_spatial_loss
from .authors_temporal import fnac_loss


def compute_authors_losses(
    outputs: Mapping[str, Any], answers: Tensor, alpha: float, beta: float, phi: float, tau: float
) -> dict[str, Tensor]:
    """{"ce", "temporal", "spatial", "total"} for one batch of `AuthorsNet` outputs.

    alpha: the temporal (FNAC) weight; beta: the spatial weight; phi, tau: the spatial threshold and
    temperature. Computed in float32 even under autocast.
    """
    logits, mask = outputs["logits"], outputs["seconds_mask"]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        losses = {"ce": F.cross_entropy(logits.float(), answers)}
        losses["temporal"] = fnac_loss(outputs["fnac_audio"].float(), outputs["fnac_patches"].float(), mask)
        q, p, a = (outputs[k].float() for k in ("spatial_sentence", "spatial_patches", "spatial_audio"))
        losses["spatial"] = authors_spatial_loss(q, p, a, mask, phi, tau)
        losses["total"] = losses["ce"] + alpha * losses["temporal"] + beta * losses["spatial"]
    return losses

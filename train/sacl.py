"""Spatial Alignment Contrastive Learning (SACL): paper §"Spatial Alignment Contrastive Learning", eq. 6-9.

For each second t, a query (the sentence feature F_q, or the mined audio f'_a of second t) is compared
with the N patches of second t of the mined visual tokens F'_p:

    s_t = softmax_n(cos(query, f'_p[t, n]))                          (eq. 6)
    positives = {n : s_t[n] > phi}, negatives = the others           (eq. 7)
    l_t = -log( sum_pos exp(s_t / tau) / sum_all exp(s_t / tau) )    (eq. 8)

L_spat1 (question-patches) and L_spat2 (audio-patches) average l_t over the valid seconds of a sample,
then over the batch; L_spat = L_spat1 + L_spat2 (eq. 9).

No positive: with phi < 1/N this cannot happen (the largest of N softmax values is >= 1/N), but a
larger phi, or a second whose patches are all alike, can leave a second without positives, where
eq. 8 is -log 0. Such a second carries no contrast, so it is left out of the mean; a sample with no
such second at all contributes 0. With phi = 0 every patch is positive and the loss is exactly 0,
which matches the paper's Table 4 (phi = 0.000 scores the same 75.50 as "w/o SACL").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class SaclInputs(NamedTuple):
    """What L_spat reads from the model: `spatial_alignment_loss(*inputs, phi, tau)`."""

    sentence: Tensor  # (B, D) F_q
    patches: Tensor  # (B, T, N, D) F'_p
    audio: Tensor  # (B, T, D) F'_a
    mask: Tensor  # (B, T) True where the second exists


def spatial_contrast(query: Tensor, patches: Tensor, mask: Tensor, phi: float, tau: float) -> Tensor:
    """One SACL term (eq. 6-8): query (B, T, D) against the patches (B, T, N, D) of its second.

    mask: (B, T), True where the second exists. Returns the batch mean of the per-sample means.
    """
    # cosine as dot / |patch| rather than normalising the patches: no unit-norm copy of the largest
    # tensor of the model is made and kept for backward
    dots = torch.einsum("btd,btnd->btn", F.normalize(query, dim=-1), patches)  # (B, T, N)
    sim = dots / patches.norm(dim=-1).clamp_min(1e-12)  # (B, T, N)
    s = sim.softmax(dim=-1)  # (B, T, N)
    positive = s > phi  # (B, T, N); a selection, so no gradient flows through it
    has_positive = positive.any(dim=-1)  # (B, T)
    # a second without positives counts all its patches as positive, so its term is 0 rather than
    # -log 0 = inf (no inf is ever formed, so no inf * 0 = NaN can appear); it is left out of the mean below
    positive = positive | ~has_positive[..., None]  # (B, T, N)
    logits = s / tau  # (B, T, N)
    pos_logits = logits.masked_fill(~positive, float("-inf"))  # (B, T, N)
    loss = logits.logsumexp(dim=-1) - pos_logits.logsumexp(dim=-1)  # (B, T)
    valid = mask & has_positive  # (B, T)
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    count = valid.sum(dim=1)  # (B,)
    per_sample = loss.sum(dim=1) / count.clamp_min(1)  # (B,)
    return per_sample.mean()  # ()


def spatial_alignment_loss(
    sentence: Tensor, patches: Tensor, audio: Tensor, mask: Tensor, phi: float, tau: float
) -> Tensor:
    """SACL, eq. 9: question-vs-patches plus audio-vs-patches contrast.

    sentence: F_q (B, D); patches: F'_p (B, T, N, D); audio: F'_a (B, T, D); mask: (B, T) seconds.
    """
    question = sentence[:, None, :].expand(-1, patches.shape[1], -1)  # (B, T, D)
    return spatial_contrast(question, patches, mask, phi, tau) + spatial_contrast(
        audio, patches, mask, phi, tau
    )

"""The authors' spatial loss (weight 0.2), DESIGN.md §5b: the paper's SACL as their code computes it.

Two terms, (patches, sentence repeated T times) and (patches, AVCM audio), each, for a query x (B, T, D)
and the patches p (B, T, N, D) of the same second:

    c[b, t, n]  = cos(p[b, t, n], x[b, t]);   s = softmax_n(c);   e = exp(s / tau),  tau = 0.4
    first       = sum_n e where s >= phi  (phi = 0.019; 1e-3 when no patch reaches phi)
    second      = sum_n e
    neg[b, t]   = mean over the other samples b' != b and patches n of cos(p[b', t, n], x[b, t])
    term        = max(1e-3, mean_b (1/T) sum_t -log(first / (second + neg)))

Unlike the paper's eq. 8 (ours in sacl.py) the denominator carries the other samples' patches of the
same second, as plain cosines (not exponentials), and the threshold is inclusive (>=).

Our readings where §5b is silent: padded seconds are left out (the 1/T becomes 1 / the sample's valid
seconds, and a padded second of another sample is no negative); a batch of one sample has no negatives
(neg = 0, where a mean over nothing would be NaN). With every second present and B > 1 this is §5b exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FLOOR = 1e-3  # the smallest value a term returns
NO_POSITIVE = 1e-3  # "first" of a second without any patch at or above phi


def spatial_term(query: Tensor, patches: Tensor, mask: Tensor, phi: float, tau: float) -> Tensor:
    """One term: query (B, T, D) against the patches (B, T, N, D) of its second; mask (B, T) seconds."""
    inv_norm = 1.0 / patches.norm(dim=-1).clamp_min(1e-12)  # (B, T, N); no unit-norm copy of the patches
    x = F.normalize(query, dim=-1)  # (B, T, D)
    cos = torch.einsum("btnd,btd->btn", patches, x) * inv_norm  # (B, T, N)
    s = cos.softmax(dim=-1)  # (B, T, N)
    e = (s / tau).exp()  # (B, T, N)
    positive = s >= phi  # (B, T, N); a selection, no gradient through it
    first = (e * positive).sum(dim=-1)  # (B, T)
    first = torch.where(positive.any(dim=-1), first, torch.full_like(first, NO_POSITIVE))
    second = e.sum(dim=-1)  # (B, T)
    valid = mask.to(patches.dtype)  # (B, T)
    own = torch.einsum("btn,btnd->btd", inv_norm * valid[..., None], patches)  # (B, T, D): sum_n p^
    total = own.sum(dim=0)  # (T, D): every valid sample's unit patches of second t
    others = valid.sum(dim=0) - valid  # (B, T): samples b' != b having second t
    neg_sum = ((total - own) * x).sum(dim=-1)  # (B, T)
    neg = torch.where(others > 0, neg_sum / (others * patches.shape[2]).clamp_min(1), 0.0)  # (B, T)
    per_second = (second + neg).log() - first.log()  # (B, T): -log(first / (second + neg))
    per_sample = (per_second * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1)  # (B,)
    return per_sample.mean().clamp_min(FLOOR)  # ()


def authors_spatial_loss(
    sentence: Tensor, patches: Tensor, audio: Tensor, mask: Tensor, phi: float, tau: float
) -> Tensor:
    """Both terms summed: sentence (B, D), patches (B, T, N, D), audio (B, T, D), mask (B, T)."""
    question = sentence[:, None, :].expand(-1, patches.shape[1], -1)  # (B, T, D)
    return spatial_term(question, patches, mask, phi, tau) + spatial_term(audio, patches, mask, phi, tau)

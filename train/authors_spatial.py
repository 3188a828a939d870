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


def spatial_terms(queries: Tensor, patches: Tensor, mask: Tensor, phi: float, tau: float) -> Tensor:
    """The terms of Q queries at once: queries (B, T, Q, D) against the patches (B, T, N, D) of their
    second; mask (B, T) seconds. Returns (Q,), each term floored. The patches' norms, their unit sum
    and the cosine products are shared by the queries (one pass over the patches, not one per term)."""
    inv_norm = 1.0 / patches.norm(dim=-1).clamp_min(1e-12)  # (B, T, N); no unit-norm copy of the patches
    x = F.normalize(queries, dim=-1)  # (B, T, Q, D)
    cos = torch.einsum("btnd,btqd->btqn", patches, x) * inv_norm[:, :, None]  # (B, T, Q, N)
    s = cos.softmax(dim=-1)  # (B, T, Q, N)
    e = (s / tau).exp()  # (B, T, Q, N)
    positive = s >= phi  # (B, T, Q, N); a selection, no gradient through it
    first = (e * positive).sum(dim=-1)  # (B, T, Q)
    first = torch.where(positive.any(dim=-1), first, torch.full_like(first, NO_POSITIVE))
    second = e.sum(dim=-1)  # (B, T, Q)
    valid = mask.to(patches.dtype)  # (B, T)
    own = torch.einsum("btn,btnd->btd", inv_norm * valid[..., None], patches)  # (B, T, D): sum_n p^
    others = (valid.sum(dim=0) - valid)[..., None]  # (B, T, 1): samples b' != b having second t
    neg_sum = torch.einsum("btd,btqd->btq", own.sum(dim=0) - own, x)  # (B, T, Q)
    neg = torch.where(others > 0, neg_sum / (others * patches.shape[2]).clamp_min(1), 0.0)  # (B, T, Q)
    per_second = (second + neg).log() - first.log()  # (B, T, Q): -log(first / (second + neg))
    per_sample = (per_second * valid[..., None]).sum(dim=1) / valid.sum(dim=1, keepdim=True).clamp_min(1)
    return per_sample.mean(dim=0).clamp_min(FLOOR)  # (Q,)


def spatial_term(query: Tensor, patches: Tensor, mask: Tensor, phi: float, tau: float) -> Tensor:
    """One term: query (B, T, D) against the patches (B, T, N, D) of its second; mask (B, T) seconds."""
    return spatial_terms(query[:, :, None], patches, mask, phi, tau)[0]


def authors_spatial_loss(
    sentence: Tensor, patches: Tensor, audio: Tensor, mask: Tensor, phi: float, tau: float
) -> Tensor:
    """Both terms summed: sentence (B, D), patches (B, T, N, D), audio (B, T, D), mask (B, T)."""
    question = sentence[:, None, :].expand(-1, patches.shape[1], -1)  # (B, T, D)
    return spatial_terms(torch.stack((question, audio), dim=2), patches, mask, phi, tau).sum()

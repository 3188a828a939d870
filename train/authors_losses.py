"""The objective of the authors' variant (docs/training.md, "Variants"): CE + 0.2 * spatial + 100 * temporal.

Their public code replaces the paper's TACL (eq. 1-3) with an FNAC-style temporal loss over all (B*T)^2 second
pairs of the batch (`fnac_loss`) and computes SACL its own way (`authors_spatial_loss`); both are written here
from a description of their code, each function's docstring giving its formula and our readings where that
description is silent. `AuthorsOutput` is what `AuthorsNet` returns, one slot per term;
`compute_authors_losses` combines the terms by name. The weights and the spatial threshold and temperature
come from `LossConfig` (the variant's recipe sets alpha = 100, authors_model.py); FNAC's temperature 0.03 and
foreground threshold 0.6 are their code's constants below. FNAC's (B*T)^2 * 49 similarity tensor (2.9 GB at
batch 64, T = 60) is never built whole: `max_pair_logits` computes it in blocks of rows and keeps one byte per
pair for backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .inputs import ModelOutput, upcast
from .model_config import LossConfig

TAU = 0.03  # the temperature of every similarity matrix of the loss
LOC_THRESHOLD = 0.6  # patches above this normalised score form the foreground
BLOCK_BYTES = 96 << 20  # one block of S: rows * n * 49 floats; 96 MB keeps batch 64 (n = 3840) fast and small
FLOOR = 1e-3  # the smallest value a term returns
NO_POSITIVE = 1e-3  # "first" of a second without any patch at or above phi


class FnacInputs(NamedTuple):
    """What the temporal loss reads from the model: `fnac_loss(*inputs)`."""

    audio: Tensor  # (B, T, D) the audio after the time attention
    patches: Tensor  # (B, T, N, D) the projected patches
    mask: Tensor  # (B, T) True where the second exists


class AuthorsSpatialInputs(NamedTuple):
    """What the spatial loss reads from the model: `authors_spatial_loss(*inputs, phi, tau)`."""

    sentence: Tensor  # (B, D) the start token's output
    patches: Tensor  # (B, T, N, D) AVCM's patches
    audio: Tensor  # (B, T, D) AVCM's audio
    mask: Tensor  # (B, T)


@dataclass
class AuthorsOutput(ModelOutput):
    """`AuthorsNet.forward`'s result; delta is the fusion weights as (visual, audio)."""

    temporal: FnacInputs | None = None
    spatial: AuthorsSpatialInputs | None = None


def compute_authors_losses(out: AuthorsOutput, answers: Tensor, cfg: LossConfig) -> dict[str, Tensor]:
    """{"ce", "temporal", "spatial", "total"} for one batch: cfg.alpha weighs the temporal (FNAC) term,
    cfg.beta the spatial one (cfg.sacl_phi, cfg.sacl_tau its threshold and temperature). Computed in
    float32 even under autocast."""
    with torch.autocast(device_type=out.logits.device.type, enabled=False):
        losses = {"ce": F.cross_entropy(out.logits.float(), answers)}
        losses["temporal"] = fnac_loss(*upcast(out.temporal))
        losses["spatial"] = authors_spatial_loss(*upcast(out.spatial), cfg.sacl_phi, cfg.sacl_tau)
        losses["total"] = losses["ce"] + cfg.alpha * losses["temporal"] + cfg.beta * losses["spatial"]
    return losses


# ------------------------------------------------------------------------------------------ temporal


class _NormaliseDim1(torch.autograd.Function):
    """F.normalize(x, dim=1), eps 1e-12, with a leaner backward: it keeps y and 1/|x| (not x, |x| and
    the clamped, expanded denominator) and computes g/|x| - y (g . y)/|x| in three passes over x."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        norm = x.norm(dim=1, keepdim=True)  # (B, 1, ...)
        inv = 1.0 / norm.clamp_min(1e-12)
        y = x * inv
        ctx.save_for_backward(y, inv, norm > 1e-12)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        y, inv, unclamped = ctx.saved_tensors
        along = (g * y).sum(dim=1, keepdim=True) * unclamped  # a clamped norm is a constant: no projection
        return torch.addcmul(g, y, along, value=-1.0).mul_(inv)


def normalise_over_time(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T, ...) L2-normalised over T (dim 1), as their code does; padded seconds are zeroed first."""
    if not bool(mask.all()):  # no copy when every second exists (their case: T fixed at 60)
        x = x.masked_fill(~mask.view(*mask.shape, *([1] * (x.dim() - 2))), 0.0)
    return _NormaliseDim1.apply(x)  # (B, T, ...)


class _MaxPairLogits(torch.autograd.Function):
    """logits[n, m] = max_k p[n, k] . a[m] / tau, in blocks of rows; saves the arg max as uint8."""

    @staticmethod
    def forward(ctx, p: Tensor, a: Tensor, tau: float, rows: int) -> Tensor:
        n, k, d = p.shape
        logits = p.new_empty(n, a.shape[0])  # (n, m)
        arg = torch.empty(n, a.shape[0], dtype=torch.uint8, device=p.device)  # k < 256
        for r in range(0, n, rows):
            s = (p[r : r + rows].reshape(-1, d) @ a.t()).view(-1, k, a.shape[0])  # (rows, K, m)
            best = s.max(dim=1)
            logits[r : r + rows] = best.values
            arg[r : r + rows] = best.indices.to(torch.uint8)
        ctx.save_for_backward(p, a, arg)
        ctx.tau, ctx.rows = tau, rows
        return logits / tau

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        p, a, arg = ctx.saved_tensors
        n, k, d = p.shape
        grad = grad / ctx.tau  # (n, m)
        grad_p = torch.empty_like(p) if ctx.needs_input_grad[0] else None
        grad_a = torch.zeros_like(a) if ctx.needs_input_grad[1] else None
        for r in range(0, n, ctx.rows):
            g = grad[r : r + ctx.rows]  # (rows, m)
            w = g.new_zeros(g.shape[0], k, g.shape[1])  # (rows, K, m): g at the arg max, 0 elsewhere
            w.scatter_(1, arg[r : r + ctx.rows, None].long(), g[:, None])
            if grad_p is not None:
                grad_p[r : r + ctx.rows] = w @ a  # (rows, K, D)
            if grad_a is not None:
                grad_a.addmm_(w.reshape(-1, w.shape[2]).t(), p[r : r + ctx.rows].reshape(-1, d))  # (m, D)
        return grad_p, grad_a, None, None


def max_pair_logits(p: Tensor, a: Tensor, tau: float = TAU, block_bytes: int = BLOCK_BYTES) -> Tensor:
    """max over the K positions of p[n, k] . a[m] / tau for all pairs: p (n, K, D), a (m, D) -> (n, m)."""
    if p.shape[1] > 255:
        raise ValueError(f"max_pair_logits: at most 255 positions per row, got {p.shape[1]}")
    rows = max(1, block_bytes // (4 * p.shape[1] * a.shape[0]))
    return _MaxPairLogits.apply(p, a, tau, rows)


def _l1(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).abs().mean()


def fnac_loss(
    audio: Tensor, patches: Tensor, mask: Tensor, tau: float = TAU, block_bytes: int = BLOCK_BYTES
) -> Tensor:
    """The authors' temporal loss: audio (B, T, D), patches (B, T, N, D), mask (B, T) seconds.

    Their public code's temporal loss. With a = the audio (B*T, D) and p = the patches (B*T, N, D) (N = 49
    = 7x7 positions h, w), both L2-normalised over the *time* axis (an axis slip in their code, kept for
    parity: each feature channel of each sample is a unit vector over its T seconds), tau = 0.03:

        A[n, m]       = a[n] . a[m] / tau                                audio-audio       (B*T, B*T)
        I[n, m]       = mean_hw p[n] . mean_hw p[m] / tau                visual-visual
        S[n, m, hw]   = p[n, hw] . a[m] / tau                            (B*T, B*T, 49)
        logits[n, m]  = max_hw S[n, m, hw]                               visual-audio
        loc[n]        = S[n, n] min-max normalised over hw: (S - min) / (max - min + 1e-5)
        fg[n]         = mean_hw(p[n, hw] * [loc[n, hw] > 0.6])           "foreground" feature
        F[n, m]       = fg[n] . fg[m] / tau
        L = l1(sm(A), sm(logits)) + l1(sm(A), sm(F)) + l1(sm(I), sm(logits)),  sm = softmax over m,
        l1 = mean absolute difference over the (B*T)^2 entries.

    Our readings where the description is silent: "+1e-5" goes in the denominator of the min-max
    normalisation; the foreground mask is a selection (no gradient through the threshold); padded seconds
    (zeros, so they do not change the time-axis norms) are left out of the (B*T)^2 pairs; with every second
    present this is their formula exactly. It takes the audio after the time attention and the projected
    patches (authors_model.py).
    """
    full = bool(mask.all())
    a = normalise_over_time(audio, mask)  # (B, T, D)
    p = normalise_over_time(patches, mask)  # (B, T, N, D)
    a, p = (a.flatten(0, 1), p.flatten(0, 1)) if full else (a[mask], p[mask])  # (n, D), (n, N, D)
    v = p.mean(dim=1)  # (n, D)
    sim_a = a @ a.t() / tau  # (n, n)
    sim_i = v @ v.t() / tau  # (n, n)
    logits = max_pair_logits(p, a, tau, block_bytes)  # (n, n)
    with torch.no_grad():  # the foreground is a selection
        own = torch.einsum("nkd,nd->nk", p, a) / tau  # (n, N): S[n, n]
        lo, hi = own.min(dim=1, keepdim=True).values, own.max(dim=1, keepdim=True).values
        fg_mask = (own - lo) / (hi - lo + 1e-5) > LOC_THRESHOLD  # (n, N)
    fg = torch.einsum("nk,nkd->nd", fg_mask.to(p.dtype), p) / p.shape[1]  # (n, D): mean_hw(p * mask)
    sim_f = fg @ fg.t() / tau  # (n, n)
    sm_a, sm_l = sim_a.softmax(dim=1), logits.softmax(dim=1)
    return _l1(sm_a, sm_l) + _l1(sm_a, sim_f.softmax(dim=1)) + _l1(sim_i.softmax(dim=1), sm_l)


# ------------------------------------------------------------------------------------------- spatial


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
    """Both terms summed: sentence (B, D), patches (B, T, N, D), audio (B, T, D), mask (B, T).

    Their SACL (weight 0.2): two terms, (patches, sentence repeated T times) and (patches, AVCM audio),
    each, for a query x (B, T, D) and the patches p (B, T, N, D) of the same second:

        c[b, t, n]  = cos(p[b, t, n], x[b, t]);   s = softmax_n(c);   e = exp(s / tau),  tau = 0.4
        first       = sum_n e where s >= phi  (phi = 0.019; 1e-3 when no patch reaches phi)
        second      = sum_n e
        neg[b, t]   = mean over the other samples b' != b and patches n of cos(p[b', t, n], x[b, t])
        term        = max(1e-3, mean_b (1/T) sum_t -log(first / (second + neg)))

    Unlike the paper's eq. 8 (sacl.py) the denominator carries the other samples' patches of the same second,
    as plain cosines, and the threshold is inclusive (>=). Our readings where the description is silent:
    padded seconds are left out (the 1/T becomes 1 / the sample's valid seconds, and a padded second of
    another sample is no negative); a batch of one sample has no negatives (neg = 0, where a mean over nothing
    would be NaN). With every second present and B > 1 this is their formula exactly.
    """
    question = sentence[:, None, :].expand(-1, patches.shape[1], -1)  # (B, T, D)
    return spatial_terms(torch.stack((question, audio), dim=2), patches, mask, phi, tau).sum()

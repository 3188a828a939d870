"""The authors' temporal loss ("FNAC", weight 100), DESIGN.md §5b, computed in blocks.

Their public code replaces the paper's TACL (eq. 1-3) with this loss. With a = the audio (B*T, D) and
p = the patches (B*T, N, D) (N = 49 = 7x7 positions h, w), both L2-normalised over the *time* axis (an
axis slip in their code, kept for parity: each feature channel of each sample is a unit vector over its
T seconds), tau = 0.03:

    A[n, m]       = a[n] . a[m] / tau                                audio-audio       (B*T, B*T)
    I[n, m]       = mean_hw p[n] . mean_hw p[m] / tau                visual-visual
    S[n, m, hw]   = p[n, hw] . a[m] / tau                            (B*T, B*T, 49)
    logits[n, m]  = max_hw S[n, m, hw]                               visual-audio
    loc[n]        = S[n, n] min-max normalised over hw: (S - min) / (max - min + 1e-5)
    fg[n]         = mean_hw(p[n, hw] * [loc[n, hw] > 0.6])           "foreground" feature
    F[n, m]       = fg[n] . fg[m] / tau
    L = l1(sm(A), sm(logits)) + l1(sm(A), sm(F)) + l1(sm(I), sm(logits)),  sm = softmax over m,
    l1 = mean absolute difference over the (B*T)^2 entries.

Cost. S is (B*T)^2 * 49 floats: 2.9 GB at batch 64, T = 60, and autograd would keep it (and the max's
index) for backward. `max_pair_logits` computes `logits` in blocks of rows n and keeps only the argmax
over hw, one byte per pair (15 MB at batch 64); its backward rebuilds the one-hot weights of a block and
uses two matrix products per block. Same values, same gradients (max's gradient goes to the arg max),
never more than one block of S in memory. Everything else is (B*T)^2 at most (59 MB at batch 64).

Our readings where §5b is silent: "+1e-5" goes in the denominator of the min-max normalisation; the
foreground mask is a selection (no gradient through the threshold, as with any comparison); padded seconds
(zeros, so they do not change the time-axis norms) are left out of the (B*T)^2 pairs; with every second
present this is §5b exactly. Which tensors feed it (the audio after the time attention, the projected
patches) is wired in `authors_model.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

TAU = 0.03  # the temperature of every similarity matrix of the loss
LOC_THRESHOLD = 0.6  # patches above this normalised score form the foreground
BLOCK_BYTES = 96 << 20  # one block of S: rows * n * 49 floats; 96 MB keeps batch 64 (n = 3840) fast and small


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
    """The authors' temporal loss (§5b): audio (B, T, D), patches (B, T, N, D), mask (B, T) seconds."""
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

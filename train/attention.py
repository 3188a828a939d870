"""Fused attention kernels: the post-norm cross-attention block of AVCM, QOAF and the authors' variant.

    x = LN(x + drop(MultiHead(x, ctx, ctx)));  x = LN(x + drop(FFN(x)))      (`CrossAttentionBlock`)

4 heads, FFN 2048 with ReLU, dropout 0.1 on each residual branch; padded context positions are masked out
as keys. AVCM (eq. 4-5, avcm.py), QOAF (eq. 10-11, qoaf.py) and the authors' model (authors_model.py) use it;
the authors' also drop the attention weights and the FFN's hidden state (`attn_dropout`, `ffn_dropout`).

Cost. `CrossAttention` is torch's MultiheadAttention computed in the cheapest association order: with few
keys (AVCM: 2,940 patch queries against M <= 24 words) W_q folds into the keys and W_o into the values,
with few queries (QOAF) W_k, W_v fold into the queries; about 5x fewer FLOPs in those attentions (tests
check it against torch). No key bias: it adds the same constant to every score of a query, which softmax
ignores. Memory: `_FeedForwardFn` keeps one copy of the 2048-wide hidden state (the largest activation)
and applies the ReLU mask to its gradient in place; its dropout needs no mask at all (a dropped unit is
a zero of the one hidden copy, as a ReLU-cut one is); the other dropouts keep 1-byte masks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _masked_softmax(scores: Tensor, key_mask: Tensor) -> Tensor:
    """Softmax over the last axis (keys) with the keys where key_mask is False removed."""
    return scores.masked_fill(~key_mask, float("-inf")).softmax(dim=-1)


def drop(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout keeping a 1-byte mask for backward; F.dropout keeps a float32 one on CPU (4x the memory)."""
    if not training or p == 0.0:
        return x
    return torch.native_dropout(x, p, True)[0]


class CrossAttention(nn.Module):
    """Multi-head attention of queries x over a context, computed in the cheapest association order.

    `order` is "auto" (the cheapest by a FLOP estimate) or one of "standard", "fold_keys", "fold_queries",
    which give the same result up to rounding. Every sample must have at least one valid context position.
    `dropout` drops attention weights in training (nn.MultiheadAttention's dropout); 0: none.
    """

    order: str = "auto"

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """x: (B, Lq, D) queries; ctx: (B, Lk, D); ctx_mask: (B, Lk) True where valid -> (B, Lq, D)."""
        order = self.cheapest(x.shape[1], ctx.shape[1]) if self.order == "auto" else self.order
        return getattr(self, f"_{order}")(x, ctx, ctx_mask)

    def cheapest(self, n_q: int, n_k: int) -> str:
        """The association order with the fewest multiply-adds for n_q queries and n_k keys."""
        d, h = self.q.in_features, self.heads
        cost = {
            "standard": 2 * n_q * d * d + 2 * n_k * d * d + 2 * n_q * n_k * d,
            "fold_keys": 4 * n_k * d * d + 2 * h * n_q * n_k * d,
            "fold_queries": 4 * n_q * d * d + 2 * h * n_q * n_k * d,
        }
        return min(cost, key=cost.__getitem__)

    def _weights(self, scores: Tensor, key_mask: Tensor) -> Tensor:
        """The attention weights: a softmax over the valid keys, then dropout in training."""
        return drop(_masked_softmax(scores, key_mask), self.dropout, self.training)

    def _standard(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """Textbook order: project queries, keys and values, attend, project out."""
        (b, n_q, d), n_k, h = x.shape, ctx.shape[1], self.heads
        q = self.q(x).view(b, n_q, h, d // h).transpose(1, 2)  # (B, H, Lq, E)
        k = self.k(ctx).view(b, n_k, h, d // h).transpose(1, 2)  # (B, H, Lk, E)
        v = self.v(ctx).view(b, n_k, h, d // h).transpose(1, 2)  # (B, H, Lk, E)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)  # (B, H, Lq, Lk)
        attn = self._weights(scores, ctx_mask[:, None, None, :])  # (B, H, Lq, Lk)
        return self.o((attn @ v).transpose(1, 2).reshape(b, n_q, d))  # (B, Lq, D)

    def _fold_keys(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """Few keys: scores = x (K_h W_q,h)^T and out = attn (V_h W_o,h^T), never projecting x itself."""
        (b, n_q, d), n_k, h = x.shape, ctx.shape[1], self.heads
        scale = 1.0 / math.sqrt(d // h)
        k = self.k(ctx).view(b, n_k, h, d // h)  # (B, Lk, H, E)
        kq = torch.einsum("bkhe,hed->bhkd", k, self.q.weight.view(h, d // h, d)) * scale  # (B, H, Lk, D)
        kb = torch.einsum("bkhe,he->bhk", k, self.q.bias.view(h, d // h)) * scale  # (B, H, Lk)
        scores = torch.baddbmm(kb.reshape(b, 1, h * n_k), x, kq.reshape(b, h * n_k, d).transpose(1, 2))
        attn = self._weights(scores.view(b, n_q, h, n_k), ctx_mask[:, None, None, :])  # (B, Lq, H, Lk)
        v = self.v(ctx).view(b, n_k, h, d // h)  # (B, Lk, H, E)
        vo = torch.einsum("bkhe,dhe->bhkd", v, self.o.weight.view(d, h, d // h))  # (B, H, Lk, D)
        return torch.baddbmm(self.o.bias, attn.reshape(b, n_q, h * n_k), vo.reshape(b, h * n_k, d))

    def _fold_queries(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """Few queries: scores = (Q_h W_k,h) ctx^T and out_h = (attn_h ctx) W_v,h^T, never projecting ctx."""
        (b, n_q, d), n_k, h = x.shape, ctx.shape[1], self.heads
        q = self.q(x).view(b, n_q, h, d // h) / math.sqrt(d // h)  # (B, Lq, H, E)
        qk = torch.einsum("bqhe,hed->bhqd", q, self.k.weight.view(h, d // h, d))  # (B, H, Lq, D)
        scores = qk.reshape(b, h * n_q, d) @ ctx.transpose(1, 2)  # (B, H*Lq, Lk)
        attn = self._weights(scores.view(b, h, n_q, n_k), ctx_mask[:, None, None, :])  # (B, H, Lq, Lk)
        z = (attn.reshape(b, h * n_q, n_k) @ ctx).view(b, h, n_q, d)  # (B, H, Lq, D)
        heads = torch.einsum("bhqd,hed->bqhe", z, self.v.weight.view(h, d // h, d))  # (B, Lq, H, E)
        heads = heads + self.v.bias.view(h, d // h)  # attention rows sum to 1, so the bias passes through
        return self.o(heads.reshape(b, n_q, d))  # (B, Lq, D)


class _FeedForwardFn(torch.autograd.Function):
    """relu(x W1^T + b1) W2^T + b2, dropout p on the hidden state, with a hand-written backward that reuses
    the hidden gradient's buffer.

    The 2048-wide hidden state is the model's largest activation (0.77 GB at batch 32). Autograd's ReLU
    backward would allocate a second hidden-sized gradient next to the first; here the ReLU mask is
    applied in place, and the forward keeps a single hidden copy (in-place ReLU). Dropout zeroes units of
    that copy in place and its 1/(1-p) goes into the second product, so a unit's gradient is zero exactly
    where the copy is zero (cut by the ReLU or dropped): backward needs no dropout mask.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, p: float) -> Tensor:
        hidden = torch.addmm(b1, x, w1.t()).relu_()  # (B*L, F); under autocast addmm runs in half precision
        ctx.scale = 1.0 / (1.0 - p)
        if p > 0.0:
            _drop_(hidden, p)
        ctx.save_for_backward(x, w1, hidden, w2)
        if p > 0.0:
            return torch.addmm(b2, hidden, w2.t(), alpha=ctx.scale)  # (B*L, D)
        return torch.addmm(b2, hidden, w2.t())  # (B*L, D)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        # compute in the forward's precision, autocast or not (autograd casts the gradients back to
        # each input's dtype), so the same code serves float32 on CPU and bf16 autocast on GPU
        x, w1, hidden, w2 = ctx.saved_tensors
        dt = hidden.dtype
        grad_out = grad_out.to(dt)
        grad_w2, grad_b2 = grad_out.t() @ hidden, grad_out.sum(dim=0)  # (D, F), (D,)
        w2 = w2.to(dt)
        if ctx.scale != 1.0:  # dropout's 1/(1-p) on the (D, F) matrices, not a (B*L, D) copy of grad_out
            grad_w2, w2 = grad_w2.mul_(ctx.scale), w2 * ctx.scale
        grad_hidden = (grad_out @ w2).masked_fill_(hidden == 0, 0.0)  # (B*L, F); relu' = 0 at z <= 0
        grad_w1, grad_b1 = grad_hidden.t() @ x.to(dt), grad_hidden.sum(dim=0)  # (F, D), (F,)
        grad_x = grad_hidden @ w1.to(dt) if ctx.needs_input_grad[0] else None  # (B*L, D)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None


def _drop_(hidden: Tensor, p: float, block_bytes: int = 32 << 20) -> None:
    """Zero each element of hidden (R, F) with probability p, in place, a block of rows at a time (the
    uniform draws are float32 whatever hidden's dtype, and never more than block_bytes at once)."""
    rows = max(1, block_bytes // (4 * hidden.shape[1]))
    for r in range(0, hidden.shape[0], rows):
        block = hidden[r : r + rows]  # (rows, F)
        block.masked_fill_(torch.rand(block.shape, device=block.device) < p, 0.0)


class FeedForward(nn.Module):
    """Linear - ReLU - (dropout) - Linear over the token axis (the parameters of two nn.Linear, fc1 and fc2).

    `dropout` drops the hidden state in training (as nn.TransformerEncoderLayer does); 0: none."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)"""
        flat = x.reshape(-1, x.shape[-1])  # (B*L, D)
        p = self.dropout if self.training else 0.0
        out = _FeedForwardFn.apply(flat, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, p)
        return out.view(x.shape)  # (B, L, D)


class CrossAttentionBlock(nn.Module):
    """x = LN(x + drop(attn(x, ctx))); x = LN(x + drop(FFN(x))): post-norm, as in the original Transformer.

    `dropout` drops the two residual branches; `attn_dropout` the attention weights and `ffn_dropout` the
    FFN's hidden state (0 by default: the paper variant drops the residual branches only)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, heads, attn_dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, ffn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """x: (B, Lq, D) attends over ctx: (B, Lk, D) where ctx_mask: (B, Lk) is True -> (B, Lq, D)."""
        x = self.norm1(x + drop(self.attn(x, ctx, ctx_mask), self.dropout, self.training))
        return self.norm2(x + drop(self.ffn(x), self.dropout, self.training))

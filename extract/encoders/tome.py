"""Token Merging (ToMe) for a timm VisionTransformer, written from the paper.

Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023, §3. In a block, between the attention and
the MLP, r tokens are merged away:

* matching (bipartite soft matching): the attention keys of the block, averaged over heads, are compared by
  cosine similarity; the tokens are split alternately into set A (even positions) and set B (odd positions);
  each A token draws one edge to its most similar B token; the r most similar edges are kept and each of
  their A tokens is merged into its B token. The class token (position 0, in A) is protected: never merged.
  r is capped at half the unprotected tokens, (N - 1) // 2.
* merging: tokens carry a size (how many patches they stand for); a merged token is the size-weighted
  average of its parts and its size their sum.
* proportional attention: softmax(q kᵀ / √d + log s), s the sizes of the keys, so a merged token weighs as
  much as the tokens it replaced.

Token order after a merge (the paper's "concatenate the two sets back together"): the kept A tokens in their
original order (class token first), then the B tokens in their original order.

    tokens, sizes = tome_forward(model, pixels, r=[25] * 23)   # vit_large_patch16_384: 577 -> 14 tokens
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor


@dataclass(frozen=True)
class Matching:
    """One merge step. Indices into set A (positions 0, 2, 4, ...) or set B (positions 1, 3, 5, ...)."""

    src: Tensor  # (B, r) A tokens merged away, most similar edge first
    dst: Tensor  # (B, r) the B token each of them merges into
    keep: Tensor  # (B, NA - r) A tokens kept, ascending


def merge_cap(n_tokens: int, class_token: bool = True) -> int:
    """The most tokens one merge may remove: half the unprotected tokens."""
    return (n_tokens - int(class_token)) // 2


def token_schedule(n_tokens: int, r: Sequence[int], class_token: bool = True) -> list[int]:
    """Token count after each block when block i merges min(r[i], cap) tokens."""
    counts = []
    for step in r:
        n_tokens -= min(int(step), merge_cap(n_tokens, class_token))
        counts.append(n_tokens)
    return counts


def bipartite_soft_matching(keys: Tensor, r: int, class_token: bool = True) -> Matching:
    """The r most similar A -> B edges by cosine similarity of `keys` (B, N, C); r is capped (`merge_cap`).

    Ties are broken by position: the lower index wins, both for the best B token and among edges.
    """
    r = min(r, merge_cap(keys.shape[1], class_token))
    k = F.normalize(keys.float(), dim=-1)
    a, b = k[:, ::2], k[:, 1::2]  # (B, NA, C), (B, NB, C)
    scores = a @ b.transpose(1, 2)  # (B, NA, NB)
    if class_token:
        scores[:, 0, :] = -torch.inf
    best, best_b = scores.max(dim=-1)  # (B, NA)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (B, NA)
    src = order[:, :r]  # (B, r)
    dst = best_b.gather(1, src)  # (B, r)
    merged = torch.zeros_like(best, dtype=torch.bool).scatter_(1, src, True)  # (B, NA)
    keep = torch.sort(merged.to(torch.uint8), dim=-1, stable=True).indices[:, : a.shape[1] - r]
    return Matching(src=src, dst=dst, keep=keep)


def merge_tokens(x: Tensor, size: Tensor, m: Matching) -> tuple[Tensor, Tensor]:
    """Size-weighted average of each B token with the A tokens merged into it; sizes add up.

    x: (B, N, D), size: (B, N) -> (B, N - r, D), (B, N - r). Kept A tokens first, then B (module docstring).
    """
    if m.src.shape[1] == 0:
        return x, size
    d = x.shape[-1]
    s = size.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    xs = x * s  # (B, N, D)
    a_xs, b_xs, a_s, b_s = xs[:, ::2], xs[:, 1::2], s[:, ::2], s[:, 1::2]
    src, dst, keep = m.src.unsqueeze(-1), m.dst.unsqueeze(-1), m.keep.unsqueeze(-1)  # (B, r | NA - r, 1)
    b_xs = b_xs.scatter_add(1, dst.expand(-1, -1, d), a_xs.gather(1, src.expand(-1, -1, d)))  # (B, NB, D)
    b_s = b_s.scatter_add(1, dst, a_s.gather(1, src))  # (B, NB, 1)
    got = torch.zeros_like(b_s, dtype=torch.bool).scatter_(1, dst, True)  # (B, NB, 1) B tokens that grew
    b_x = torch.where(got, b_xs / b_s, x[:, 1::2])  # tokens that merged nothing pass through unchanged
    a_x, a_s = x[:, ::2].gather(1, keep.expand(-1, -1, d)), a_s.gather(1, keep)  # (B, NA - r, D | 1)
    x = torch.cat((a_x, b_x), dim=1)  # (B, N - r, D)
    return x, torch.cat((a_s, b_s), dim=1).squeeze(-1).to(size.dtype)


def proportional_attention_bias(size: Tensor) -> Tensor:
    """log s as an additive attention mask (B, 1, 1, N): added to every query's logits over the keys."""
    return size.log()[:, None, None, :]


def check_tome_model(model: VisionTransformer) -> None:
    """Refuse a model whose blocks or tokens this module cannot merge correctly."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"ToMe needs a timm VisionTransformer, got {type(model).__name__}")
    if model.cls_token is None or model.num_prefix_tokens != 1:
        raise ValueError(
            f"ToMe protects exactly one class token at position 0; this model has cls_token="
            f"{model.cls_token is not None} and {model.num_prefix_tokens} prefix tokens"
        )
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise TypeError(
                f"block {i} is {type(blk).__name__} with {type(blk.attn).__name__}: ToMe here needs timm's "
                "pre-norm Block with its standard Attention"
            )
    if "attn_mask" not in inspect.signature(Attention.forward).parameters:
        raise RuntimeError("timm's Attention takes no attn_mask in this timm version; install timm >= 1.0.15")


def _keys(attn: Attention, qkv: Tensor) -> Tensor:
    """The block's keys (B, N, head_dim) averaged over heads, from the qkv projection's output (B, N, 3 H hd)."""
    b, n, _ = qkv.shape
    k = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim)[:, :, 1]  # (B, N, H, hd)
    return attn.k_norm(k).mean(dim=2)  # (B, N, hd)


def tome_block(blk: Block, x: Tensor, size: Tensor | None, r: int) -> tuple[Tensor, Tensor | None]:
    """timm's Block.forward with proportional attention and a merge of r tokens between attention and MLP.

    size None means every token has size 1 (nothing merged yet): the attention then runs exactly as timm's.
    """
    kept: list[Tensor] = []
    hook = blk.attn.qkv.register_forward_hook(lambda mod, inp, out: kept.append(out))
    mask = None if size is None else proportional_attention_bias(size)
    try:
        x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x), attn_mask=mask)))  # (B, N, D)
    finally:
        hook.remove()
    if r > 0:
        if size is None:
            size = x.new_ones(x.shape[:2], dtype=torch.float32)  # (B, N)
        x, size = merge_tokens(x, size, bipartite_soft_matching(_keys(blk.attn, kept[0]), r))  # (B, N - r, D)
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x)))), size


def tome_forward(model: VisionTransformer, pixels: Tensor, r: Sequence[int]) -> tuple[Tensor, Tensor]:
    """timm's `forward_features` with ToMe: block i merges min(r[i], cap) tokens (r shorter than the depth:
    the remaining blocks merge none). Returns the final-norm tokens (B, K, D) and their sizes (B, K)."""
    check_tome_model(model)
    r = [int(v) for v in r]
    if len(r) > len(model.blocks) or any(v < 0 for v in r):
        raise ValueError(f"r needs at most {len(model.blocks)} values >= 0, got {r}")
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(pixels))))  # (B, N, D)
    size = None
    for i, blk in enumerate(model.blocks):
        x, size = tome_block(blk, x, size, r[i] if i < len(r) else 0)
    if size is None:
        size = x.new_ones(x.shape[:2], dtype=torch.float32)
    return model.norm(x), size

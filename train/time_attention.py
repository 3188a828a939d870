"""Time order: one self-attention layer over the T audio seconds with a learned position embedding.

The paper never says how AVAF-Net knows which second comes first; its temporal questions (first / last /
before / after) cannot be answered without it (DESIGN.md §5 "Time order"). The authors' code gives it
through the audio, right after the audio projection: one post-norm transformer self-attention layer
(1 head, FFN 2048 with ReLU, dropout 0.1) whose queries and keys, not values, get a learned vector per
second. Both variants (`paper` and `authors`) use this module; the constructor's defaults are the paper
variant's, the authors' model sets its own position init and dropout sites (authors_model.py).

    x = LN(x + drop(Attn(x + pos, x + pos, x)));  x = LN(x + drop(FFN(x)))      x: (B, T, D)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import FeedForward, drop


class AudioTimeAttention(nn.Module):
    """Self-attention over the seconds of the projected audio, position-aware through its queries and keys.

    `positions=False` keeps the layer but drops the position embedding: the model is then blind to the
    order of the seconds again (what the tests and the ablation compare against). `position_std`: the
    embedding's init, normal with that std. `dropout` drops the two residual branches, `attn_dropout` the
    attention weights, `ffn_dropout` the FFN's hidden state.
    """

    def __init__(
        self,
        dim: int,
        max_seconds: int,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        positions: bool = True,
        position_std: float = 0.02,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.randn(max_seconds, dim) * position_std) if positions else None
        self.q = nn.Linear(dim, dim)
        # no key bias: it would shift all of a query's scores alike, which softmax ignores
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, ffn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, audio: Tensor, seconds_mask: Tensor) -> Tensor:
        """audio: (B, T, D); seconds_mask: (B, T) True where the second exists -> (B, T, D)."""
        t = audio.shape[1]
        keyed = audio if self.positions is None else audio + self.positions[:t]  # (B, T, D)
        scores = self.q(keyed) @ self.k(keyed).transpose(1, 2) / math.sqrt(audio.shape[-1])  # (B, T, T)
        attn = scores.masked_fill(~seconds_mask[:, None, :], float("-inf")).softmax(dim=-1)  # (B, T, T)
        attn = drop(attn, self.attn_dropout, self.training)  # (B, T, T)
        x = self.norm1(audio + self.dropout(self.o(attn @ self.v(audio))))  # (B, T, D)
        x = self.norm2(x + self.dropout(self.ffn(x)))  # (B, T, D)
        return x.masked_fill(~seconds_mask[:, :, None], 0.0)  # padded seconds stay zero

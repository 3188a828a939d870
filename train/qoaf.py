"""Question-Oriented Adaptive Fusion (QOAF): paper §"Question-Oriented Adaptive Fusion", eq. 10-13.

    F''_p = FFN(MultiHead(F_w, F'_p, F'_p))           (eq. 10)  the M words over all T*N mined patches
    F''_a = FFN(MultiHead(F_w, F'_a, F'_a))           (eq. 11)  the M words over the T mined seconds
    delta_1, delta_2 = Weight(F_q)                      (eq. 12)  softmax(MLP(F_q)): two weights summing to 1
    F_fuse = FC(Concat(delta_1 F''_p, delta_2 F''_a))   (eq. 13)  (B, M, D)

The attention blocks are AVCM's (post-norm cross-attention + FFN) with padded seconds masked out as
keys. Weight is Linear(D, D) - ReLU - Linear(D, 2) - softmax: the paper only names it. The ablation
"w/o QOAF" ("we directly fuse the visual and audio modalities without assigning weights") keeps eq.
10-11 and the FC and drops Weight: F_fuse = FC(Concat(F''_p, F''_a)), and delta is None.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import CrossAttentionBlock


class QuestionOrientedFusion(nn.Module):
    """Eq. 10-13: words attend over the mined patches and audio, then a question-weighted fusion."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, adaptive: bool = True) -> None:
        super().__init__()
        self.visual = CrossAttentionBlock(dim, heads, ffn_dim, dropout)
        self.audio = CrossAttentionBlock(dim, heads, ffn_dim, dropout)
        self.weight = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 2)) if adaptive else None
        )
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(
        self, words: Tensor, patches: Tensor, audio: Tensor, seconds_mask: Tensor, sentence: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """F_fuse (B, M, D) and delta (B, 2) (None without the adaptive weights).

        words: F_w (B, M, D); patches: F'_p (B, T, N, D); audio: F'_a (B, T, D);
        seconds_mask: (B, T) True where the second exists; sentence: F_q (B, D).
        """
        b, t, n, d = patches.shape
        patch_mask = seconds_mask[:, :, None].expand(b, t, n).reshape(b, t * n)  # (B, T*N)
        visual = self.visual(words, patches.reshape(b, t * n, d), patch_mask)  # (B, M, D)
        audio = self.audio(words, audio, seconds_mask)  # (B, M, D)
        if self.weight is None:
            return self.fuse(torch.cat((visual, audio), dim=-1)), None  # (B, M, 2D) -> (B, M, D)
        delta = self.weight(sentence).softmax(dim=-1)  # (B, 2)
        weighted = (delta[:, 0, None, None] * visual, delta[:, 1, None, None] * audio)  # (B, M, D) each
        fused = self.fuse(torch.cat(weighted, dim=-1))  # (B, M, 2D) -> (B, M, D)
        return fused, delta  # (B, M, D), (B, 2)

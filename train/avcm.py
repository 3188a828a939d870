"""Audio-Visual Clue Mining (AVCM): paper §"Audio-Visual Clue Mining", eq. 4-5.

    F'_p = FFN(MultiHead(F_p, F_w, F_w))     (eq. 4)  queries: all T*N patch tokens
    F'_a = FFN(MultiHead(F_a, F_w, F_w))     (eq. 5)  queries: the T seconds of audio

Each is a post-norm cross-attention block (`attention.CrossAttentionBlock`: 4 heads, FFN 2048 with ReLU,
dropout 0.1); padded words are masked out as keys. Most of the model's FLOPs are the visual block's FFN
over T*N = 2,940 queries per question: the paper's design, kept.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import CrossAttentionBlock


class AudioVisualClueMining(nn.Module):
    """Eq. 4-5: the patch tokens and the audio each attend over the question's words."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.visual = CrossAttentionBlock(dim, heads, ffn_dim, dropout)
        self.audio = CrossAttentionBlock(dim, heads, ffn_dim, dropout)

    def forward(
        self, patches: Tensor, audio: Tensor, words: Tensor, words_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """patches: (B, T, N, D), audio: (B, T, D), words: (B, M, D), words_mask: (B, M) -> F'_p, F'_a."""
        b, t, n, d = patches.shape
        mined_patches = self.visual(patches.reshape(b, t * n, d), words, words_mask)  # (B, T*N, D)
        mined_audio = self.audio(audio, words, words_mask)  # (B, T, D)
        return mined_patches.view(b, t, n, d), mined_audio  # (B, T, N, D), (B, T, D)

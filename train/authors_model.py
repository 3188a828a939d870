"""The authors' variant of AVAF-Net (`--variant authors`): their public model as DESIGN.md §5b describes it.

Written by us from that description (their repository has no license; none of its code is here). It is
what the published numbers come from, so users can tell how much of a difference to them is ours.

    patches (B, T, 49, D) --Linear(D, D)--> p      audio (B, T, 128) --Linear(128, D)--> time attention --> a
    p, a --(FNAC loss, authors_temporal.py)
    AVCM: p and a each attend over the words 1..n (n = the template's word count)       -> p', a'
    (spatial loss on p' with the sentence and with a', authors_spatial.py)
    fusion: the words attend over a' and over p'; w = softmax(ReLU(Linear(D, 2)(sentence)))
            fused = w0 * (words over a') + w1 * (words over p')                          (B, M, D)
    answer: MCAN's AttFlat over the words 1..n, Linear(D, 42)                             (B, C)

Inputs are those of `AVAFNet.forward`, laid out by the data loader for this variant (`train/data.py`):
`sentence` is CLIP's text output at position 0 (the start token, the same for every question), `words`
the outputs at positions 1, 2, ..., and `words_mask` is True at positions 1..n.

Blocks reused from the paper variant. The time attention is `time_attention.AudioTimeAttention` (1 head, FFN
2048, post-norm, dropout 0.1, learned positions on queries and keys). The four cross-attention blocks are
`attention.CrossAttentionBlock` (4 heads, FFN 2048, dropout 0.1, post-norm). Their key projections (these
blocks' and the time attention's) have no bias where theirs have one: a key bias b_k adds q . b_k to
every score of query q, the same for all its keys, so softmax cancels it and the function is the same (it
would also never receive a gradient; tests/test_authors.py checks it against nn.MultiheadAttention with a
key bias). The cross-attention is computed in the cheapest association order of the same products.

Init: Xavier-uniform for every weight matrix inside those five blocks (each of W_q, W_k, W_v, W_o, FFN),
PyTorch defaults elsewhere (the projections, the fusion weights, the answer head; biases; the position
embedding keeps AudioTimeAttention's small normal init).

Exactness. Word positions after n are keys of nothing (masked in AVCM) and weigh 0 in AttFlat; as fusion
queries they are unmasked but each query's output depends only on itself, so the model drops the
positions after the batch's largest n before any work: the logits are those of all 76 positions.

Where §5b does not say, our reading (documented, not verified against their code): the FNAC loss takes
the audio after the time attention and the projected patches (the inputs of AVCM); the spatial loss
takes the AVCM outputs p' and a' (as the paper's SACL takes F'_p); padded seconds (their T is fixed at 60)
are zeroed on entry and masked as keys and in both losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .attention import CrossAttentionBlock
from .config import ModelConfig
from .inputs import prepare_inputs
from .time_attention import AudioTimeAttention


class AttFlat(nn.Module):
    """MCAN's AttFlat with one glimpse: a masked softmax over the words of an MLP score, then Linear(D, C)."""

    def __init__(self, dim: int, n_answers: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(dim, 1)
        )
        self.classifier = nn.Linear(dim, n_answers)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, M, D); mask: (B, M) True where the word counts -> logits (B, C)."""
        scores = self.mlp(x).squeeze(-1).masked_fill(~mask, -1e9)  # (B, M); MCAN's fill value
        return self.classifier(torch.einsum("bm,bmd->bd", scores.softmax(dim=-1), x))  # (B, C)


class AuthorsNet(nn.Module):
    """The authors' model (§5b); build it with `build_model` and `ModelConfig(variant="authors")`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, block = cfg.dim, (cfg.dim, cfg.heads, cfg.ffn_dim, cfg.dropout)
        self.audio_proj = nn.Linear(cfg.audio_dim, d)
        self.visual_proj = nn.Linear(d, d)
        self.time = AudioTimeAttention(d, cfg.max_seconds, cfg.ffn_dim, cfg.dropout)
        self.avcm_audio, self.avcm_visual = CrossAttentionBlock(*block), CrossAttentionBlock(*block)
        self.fuse_audio, self.fuse_visual = CrossAttentionBlock(*block), CrossAttentionBlock(*block)
        self.weights = nn.Linear(d, 2)
        self.head = AttFlat(d, cfg.n_answers, cfg.dropout)
        for block_ in (self.time, self.avcm_audio, self.avcm_visual, self.fuse_audio, self.fuse_visual):
            for module in block_.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)

    def forward(
        self,
        visual: Tensor,
        audio: Tensor,
        seconds_mask: Tensor,
        words: Tensor,
        words_mask: Tensor,
        sentence: Tensor,
    ) -> dict[str, Any]:
        """Answer logits and what the losses need.

        visual: (B, T, N, D) (CLS first if cfg.visual_cls); audio: (B, T, audio_dim); seconds_mask:
        (B, T); words: (B, M, D) text positions 1..M; words_mask: (B, M) True at positions 1..n;
        sentence: (B, D) the start-token output. Returns "logits" (B, C), "delta" (B, 2) the fusion
        weights as (visual, audio), "seconds_mask", "fnac_audio" (B, T, D), "fnac_patches" (B, T, N, D),
        "spatial_sentence" (B, D), "spatial_patches" (B, T, N, D), "spatial_audio" (B, T, D).
        """
        patches, audio, words, words_mask, sentence = self._prepare(
            visual, audio, seconds_mask, words, words_mask, sentence
        )
        b, t, n, d = patches.shape
        patches = self.visual_proj(patches)  # (B, T, N, D)
        audio = self.time(self.audio_proj(audio), seconds_mask)  # (B, T, D)
        out: dict[str, Any] = {"seconds_mask": seconds_mask, "fnac_audio": audio, "fnac_patches": patches}
        mined_p = self.avcm_visual(patches.view(b, t * n, d), words, words_mask)  # (B, T*N, D)
        mined_a = self.avcm_audio(audio, words, words_mask)  # (B, T, D)
        out.update(spatial_sentence=sentence, spatial_patches=mined_p.view(b, t, n, d), spatial_audio=mined_a)
        patch_mask = seconds_mask[:, :, None].expand(b, t, n).reshape(b, t * n)  # (B, T*N)
        by_audio = self.fuse_audio(words, mined_a, seconds_mask)  # (B, M, D)
        by_visual = self.fuse_visual(words, mined_p, patch_mask)  # (B, M, D)
        w = self.weights(sentence).relu().softmax(dim=-1)  # (B, 2): (audio, visual)
        fused = w[:, 0, None, None] * by_audio + w[:, 1, None, None] * by_visual  # (B, M, D)
        out["logits"] = self.head(fused, words_mask)  # (B, C)
        out["delta"] = w.flip(-1)  # (B, 2) as (visual, audio), the order evaluation reports
        return out

    def _prepare(
        self,
        visual: Tensor,
        audio: Tensor,
        seconds_mask: Tensor,
        words: Tensor,
        words_mask: Tensor,
        sentence: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """`prepare_inputs`, then word positions after the largest n dropped (they change no logit)."""
        m = int(words_mask.any(dim=0).nonzero().max()) + 1  # (module doc)
        words, words_mask = words[:, :m], words_mask[:, :m]
        dtype = self.head.classifier.weight.dtype
        patches, audio, words, sentence = prepare_inputs(
            self.cfg, dtype, visual, audio, seconds_mask, words, words_mask, sentence
        )
        return patches, audio, words, words_mask, sentence

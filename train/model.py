"""AVAF-Net (Zhao, Wang, Jin, AAAI 2025; paper §Method, Fig. 2): the wiring of TACL, AVCM, SACL and QOAF.

    F_p, F_a --TACL projections--> (f_v, f_s for L_temp) --AVCM with F_w--> F'_p, F'_a (L_spat with F_q)
            --QOAF with F_w, F_q--> F_fuse (B, M, D) --masked attention pooling over words--> (B, D) --> (B, C)

Inputs are the feature store's layout (DESIGN.md §2): visual tokens (B, T, N, D) whose token 0 is CLIP's
CLS when `ModelConfig.visual_cls` (the default; the model drops it and uses the N-1 = 49 patches, as
the paper's SACL threshold 0.019 ~ 1/49 implies), VGGish audio (B, T, 128), word features (B, M, D),
the sentence feature (B, D), and two masks. Padded seconds and words are zeroed on entry and masked
everywhere after (attention keys, pooling, TACL and SACL), so what they hold never matters.

Time order (DESIGN.md §5, issue 11). Everything after the projections treats the seconds as a set, so the
audio time attention (`time_attention.py`, the authors' placement: right after TACL's audio projection, before
TACL's pooling, AVCM and QOAF) is the one place order enters; `ModelConfig.time_positions=False` keeps
the layer without positions, the order-blind control. Measured on generated features where only order
answers (tests/order_features.py, tests/test_order_learning.py; D = 32, 3 patches, one question kind per
model, 300 Adam steps of 64, lr 1e-3 falling to 0): with positions "first", "second" and "before X" all
1.00 on held-out questions (seeds 0-2), without them 0.33-0.36 / 0.51-0.52, the order-blind rates; at
T = 6 with gaps (slow test, 2,000 steps) "first" / "before" 1.00 / 1.00 against 0.30 / 0.52. "Where is
the X?" is learned without any position (1.00): CLIP's patches carry their place in their content. A
per-second position added to the patches as well (tried: "which X makes the sound first", where only the
visual playing cue tells left from right) stayed at chance (0.43 vs 0.51) and slowed the audio-order kinds
(first 0.30 at 2,000 steps), so the patches get none: those questions need a second's
audio bound to that second's patches, which no part of the paper's forward path does.

    model = build_model(cfg.model)
    out = model(visual, audio, seconds_mask, words, words_mask, sentence)
    losses = compute_losses(out, answers, alpha=..., beta=..., phi=..., tau=...)   # train/losses.py
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .authors_model import AuthorsNet
from .avcm import AudioVisualClueMining
from .config import ModelConfig
from .inputs import prepare_inputs
from .qoaf import QuestionOrientedFusion
from .tacl import TemporalAlignment
from .time_attention import AudioTimeAttention


class AVAFNet(nn.Module):
    """AVAF-Net and its ablations (the `no_*` switches of `ModelConfig`); build it with `build_model`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if cfg.no_all:  # Table 3 "w/o all": only the input features, pooled, and a classifier
            self.classifier = nn.Linear(2 * d + cfg.audio_dim, cfg.n_answers)
            return
        self.tacl = TemporalAlignment(d, cfg.audio_dim)
        self.time = AudioTimeAttention(
            d, cfg.max_seconds, cfg.ffn_dim, cfg.dropout, positions=cfg.time_positions
        )
        self.avcm = None if cfg.no_avcm else AudioVisualClueMining(d, cfg.heads, cfg.ffn_dim, cfg.dropout)
        self.qoaf = QuestionOrientedFusion(d, cfg.heads, cfg.ffn_dim, cfg.dropout, adaptive=not cfg.no_qoaf)
        self.pool = nn.Linear(d, 1, bias=False)  # a score per word; softmax would cancel a bias
        self.classifier = nn.Linear(d, cfg.n_answers)

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

        visual: (B, T, N, D) tokens (with CLS first if cfg.visual_cls); audio: (B, T, audio_dim);
        seconds_mask: (B, T) True where the second exists; words: (B, M, D); words_mask: (B, M) True
        where the word exists; sentence: (B, D). Any float dtype (the store's float16 is upcast).
        Every sample needs at least one second and one word.

        Returns "logits" (B, C), "delta" (B, 2) QOAF's modality weights or None, "seconds_mask", and
        the loss inputs of the components that are on: "tacl_audio", "tacl_visual", "tacl_sounding"
        (B, T, D); "sacl_sentence" (B, D), "sacl_patches" (B, T, N, D), "sacl_audio" (B, T, D), where N
        counts the patches only (CLS dropped).
        """
        patches, audio, words, sentence = prepare_inputs(
            self.cfg, self.classifier.weight.dtype, visual, audio, seconds_mask, words, words_mask, sentence
        )
        out: dict[str, Any] = {"seconds_mask": seconds_mask, "delta": None}
        if self.cfg.no_all:
            out["logits"] = self.classifier(_pooled_inputs(patches, audio, seconds_mask, sentence))  # (B, C)
            return out
        patches, audio = self.tacl(patches, audio)  # (B, T, N, D), (B, T, D)
        audio = self.time(audio, seconds_mask)  # (B, T, D): each second now knows where it sits
        if not self.cfg.no_tacl:
            visual_mean, sounding = self.tacl.pooled(patches, audio)  # (B, T, D) each
            out.update(tacl_audio=audio, tacl_visual=visual_mean, tacl_sounding=sounding)
        if self.avcm is not None:
            patches, audio = self.avcm(patches, audio, words, words_mask)  # F'_p, F'_a
        if not self.cfg.no_sacl:
            out.update(sacl_sentence=sentence, sacl_patches=patches, sacl_audio=audio)
        fused, out["delta"] = self.qoaf(words, patches, audio, seconds_mask, sentence)  # (B, M, D)
        out["logits"] = self.classifier(self._attention_pool(fused, words_mask))  # (B, C)
        return out

    def _attention_pool(self, fused: Tensor, words_mask: Tensor) -> Tensor:
        """Weighted sum of F_fuse over the valid words, the weights a learned softmax over words."""
        scores = self.pool(fused).squeeze(-1)  # (B, M)
        weights = scores.masked_fill(~words_mask, float("-inf")).softmax(dim=-1)  # (B, M)
        return torch.einsum("bm,bmd->bd", weights, fused)  # (B, D)


def _pooled_inputs(patches: Tensor, audio: Tensor, seconds_mask: Tensor, sentence: Tensor) -> Tensor:
    """For "w/o all": the mean patch token and mean audio over the valid seconds, with the sentence feature."""
    seconds = seconds_mask.sum(dim=1, keepdim=True).clamp_min(1).to(patches.dtype)  # (B, 1)
    visual = patches.mean(dim=2).sum(dim=1) / seconds  # (B, D); padded seconds are zero
    audio = audio.sum(dim=1) / seconds  # (B, audio_dim)
    return torch.cat((visual, audio, sentence), dim=-1)  # (B, 2D + audio_dim)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The one constructor: cfg.variant selects the paper's AVAF-Net or the authors' model (DESIGN.md §5b),
    the switches select the ablation."""
    if cfg.variant == "authors":
        return AuthorsNet(cfg)
    return AVAFNet(cfg)

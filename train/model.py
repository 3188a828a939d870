"""AVAF-Net (Zhao, Wang, Jin, AAAI 2025; paper §Method, Fig. 2): the wiring of TACL, AVCM, SACL and QOAF.

    F_p, F_a --TACL projections--> (f_v, f_s for L_temp) --AVCM with F_w--> F'_p, F'_a (L_spat with F_q)
            --QOAF with F_w, F_q--> F_fuse (B, M, D) --masked attention pooling over words--> (B, D) --> (B, C)

Inputs are a `Batch` in the store's layout (inputs.py): the model drops CLS and uses the N-1 = 49 patches
(the paper's SACL threshold 0.019 ~ 1/49 implies it), the stored words and the sentence feature. Time
order enters in one place, the audio time attention (time_attention.py, DESIGN.md §5 "Time order"); what
was measured about it is in docs/training.md, "Time order". `variants.MODELS` is the one table of variants.

    model = build_model(cfg.model)
    out = model(batch)                                   # AVAFOutput: logits, delta, each term's inputs
    losses = model.losses(out, answers, cfg.loss)        # {"ce", "temporal", "spatial", "total"}
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .avcm import AudioVisualClueMining
from .inputs import Batch, prepare_inputs
from .losses import AVAFOutput, compute_losses
from .model_config import ModelConfig
from .qoaf import QuestionOrientedFusion
from .sacl import SaclInputs
from .tacl import TaclInputs, TemporalAlignment
from .time_attention import AudioTimeAttention
from .variants import model_class


class AVAFNet(nn.Module):
    """AVAF-Net and its ablations (the `no_*` switches of `ModelConfig`); build it with `build_model`."""

    #: what this variant changes in the training defaults: nothing, the defaults are the paper's recipe
    recipe: ClassVar[dict[str, dict[str, Any]]] = {}
    #: eq. 14, the objective of this model's outputs
    losses = staticmethod(compute_losses)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if cfg.no_all:  # Table 3 "w/o all": only the input features, pooled, and a classifier
            self.classifier = nn.Linear(2 * d + cfg.audio_dim, cfg.n_answers)
            return
        self.tacl = TemporalAlignment(d, cfg.audio_dim)
        self.time = AudioTimeAttention(
            d, cfg.max_seconds, cfg.ffn_dim, cfg.dropout, positions=cfg.time_positions, position_std=1.0
        )
        self.avcm = None if cfg.no_avcm else AudioVisualClueMining(d, cfg.heads, cfg.ffn_dim, cfg.dropout)
        self.qoaf = QuestionOrientedFusion(d, cfg.heads, cfg.ffn_dim, cfg.dropout, adaptive=not cfg.no_qoaf)
        self.pool = nn.Linear(d, 1, bias=False)  # a score per word; softmax would cancel a bias
        self.classifier = nn.Linear(d, cfg.n_answers)
        self._start_aligned()

    @torch.no_grad()
    def _start_aligned(self) -> None:
        """Start where CLIP's alignment is (docs/training.md, "Order and place at full width"): the patch
        projection is the identity, so patches stay in the space the words share with them, and every
        cross-attention's keys start as its queries (W_k = W_q), so a word first attends to the patches
        like it. The time positions start at std 1 (above). With PyTorch's defaults, neither time order
        nor place was learned at D = 512 and the recipe's learning rates."""
        nn.init.eye_(self.tacl.visual_proj.weight)
        nn.init.zeros_(self.tacl.visual_proj.bias)
        blocks = [self.qoaf.visual, self.qoaf.audio]
        blocks += [self.avcm.visual, self.avcm.audio] if self.avcm is not None else []
        for block in blocks:
            block.attn.k.weight.copy_(block.attn.q.weight)

    def forward(self, batch: Batch) -> AVAFOutput:
        """Answer logits, QOAF's δ and the loss terms' inputs. Every sample needs at least one second and
        one word; the store's float16 is upcast."""
        patches, audio, words, sentence = prepare_inputs(self.cfg, self.classifier.weight.dtype, batch)
        seconds_mask, words_mask = batch.seconds_mask, batch.words_mask
        if self.cfg.no_all:
            pooled = _pooled_inputs(patches, audio, seconds_mask, sentence)  # (B, 2D + audio_dim)
            return AVAFOutput(logits=self.classifier(pooled), delta=None)  # (B, C)
        patches, audio = self.tacl(patches, audio)  # (B, T, N, D), (B, T, D)
        audio = self.time(audio, seconds_mask)  # (B, T, D): each second now knows where it sits
        temporal = None
        if not self.cfg.no_tacl:
            visual_mean, sounding = self.tacl.pooled(patches, audio)  # (B, T, D) each
            temporal = TaclInputs(audio, visual_mean, sounding, seconds_mask)
        if self.avcm is not None:
            patches, audio = self.avcm(patches, audio, words, words_mask)  # F'_p, F'_a
        spatial = None if self.cfg.no_sacl else SaclInputs(sentence, patches, audio, seconds_mask)
        fused, delta = self.qoaf(words, patches, audio, seconds_mask, sentence)  # (B, M, D), (B, 2)
        logits = self.classifier(self._attention_pool(fused, words_mask))  # (B, C)
        return AVAFOutput(logits=logits, delta=delta, temporal=temporal, spatial=spatial)

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
    """The one constructor: cfg.variant selects the class in variants.py's `MODELS`, the switches select
    the ablation."""
    return model_class(cfg.variant)(cfg)

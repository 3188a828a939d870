"""Temporal Alignment Contrastive Learning (TACL): paper §"Temporal Alignment Contrastive Learning", eq. 1-3.

Two linear layers project the patch tokens F_p and the VGGish audio F_a to the model width D; their
outputs feed the rest of the network (AVCM, or QOAF directly when AVCM is ablated). From them TACL
derives, per second,

* f_v: the frame-level visual feature, the mean of the patch tokens;
* f_s: the "vocalization visual feature": the paper calculates "the interaction matrix of F_p and F_a and
  averages it". We read this as audio-attended pooling: the scaled dot products between the projected
  audio of second t and each projected patch of second t, a softmax over the patches, and the
  weighted average of the patches. So f_s is what the frame looks like where it sounds.

The loss compares the T x T cosine-similarity matrices of these sequences (`temporal_alignment_loss`).
We implement the paper's loss, not the authors' public code (an FNAC-style softmax over (B*T)^2 pairs
with O((B*T)^2 * 49) memory, weight 100, normalised over the time axis).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TaclInputs(NamedTuple):
    """What L_temp reads from the model: `temporal_alignment_loss(*inputs)`."""

    audio: Tensor  # (B, T, D) the projected audio after the time attention
    visual: Tensor  # (B, T, D) f_v
    sounding: Tensor  # (B, T, D) f_s
    mask: Tensor  # (B, T) True where the second exists


class TemporalAlignment(nn.Module):
    """The projections of F_p and F_a into the shared space, and f_v, f_s for the loss."""

    def __init__(self, dim: int, audio_dim: int) -> None:
        super().__init__()
        self.visual_proj = nn.Linear(dim, dim)
        self.audio_proj = nn.Linear(audio_dim, dim)

    def forward(self, patches: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Project patches (B, T, N, D) and audio (B, T, audio_dim) to D; shapes are kept otherwise."""
        return self.visual_proj(patches), self.audio_proj(audio)  # (B, T, N, D), (B, T, D)

    @staticmethod
    def pooled(patches: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """f_v (mean of the patches) and f_s (audio-attended average of the patches), per second."""
        visual = patches.mean(dim=2)  # (B, T, D)
        logits = torch.einsum("btnd,btd->btn", patches, audio) / math.sqrt(patches.shape[-1])  # (B, T, N)
        weights = logits.softmax(dim=-1)
        sounding = torch.einsum("btn,btnd->btd", weights, patches)  # (B, T, D)
        return visual, sounding


def _cosine_matrix(x: Tensor, y: Tensor) -> Tensor:
    """sim(x^i, y^j) for all pairs of seconds i, j."""
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)  # (B, T, T)


def temporal_alignment_loss(a: Tensor, v: Tensor, s: Tensor, mask: Tensor) -> Tensor:
    """TACL, eq. 1-3: L1 distances between the cosine-similarity matrices of audio, visual and sounding.

    L_temp = mean|S_av - S_aa| + mean|S_av - S_vv| + mean|S_aa - S_ss| with S_xy[i, j] = sim(x^i, y^j).
    a, v, s: (B, T, D); mask: (B, T), True where the second exists. Each mean runs over the valid (i, j)
    pairs of one sample (eq. 1-2's 1/T sums, then the mean over i); the batch value is the mean of the
    per-sample values, like the cross-entropy. Padded seconds never enter, whatever they hold.
    """
    s_av = _cosine_matrix(a, v)  # (B, T, T)
    s_aa = _cosine_matrix(a, a)  # (B, T, T)
    s_vv = _cosine_matrix(v, v)  # (B, T, T)
    s_ss = _cosine_matrix(s, s)  # (B, T, T)
    dist = (s_av - s_aa).abs() + (s_av - s_vv).abs() + (s_aa - s_ss).abs()  # (B, T, T)
    pairs = mask[:, :, None] & mask[:, None, :]  # (B, T, T)
    dist = torch.where(pairs, dist, torch.zeros((), dtype=dist.dtype, device=dist.device))
    per_sample = dist.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp_min(1)  # (B,)
    return per_sample.mean()  # ()

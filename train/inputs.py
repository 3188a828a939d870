"""The inputs both variants take, checked and made safe in one place.

visual (B, T, N, D) tokens (CLS first when cfg.visual_cls), audio (B, T, audio_dim), seconds_mask (B, T),
words (B, M, D), words_mask (B, M), sentence (B, D): any float dtype (the store's float16 is upcast).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import ModelConfig


def prepare_inputs(
    cfg: ModelConfig,
    dtype: torch.dtype,
    visual: Tensor,
    audio: Tensor,
    seconds_mask: Tensor,
    words: Tensor,
    words_mask: Tensor,
    sentence: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, drop CLS, upcast to `dtype`, and zero the padding (so NaN or garbage there cannot leak).

    Returns patches (B, T, N, D) (N = 49 patches for ViT-B/32), audio, words and sentence; one copy each,
    never a write into the caller's tensors. A shape error names the input and both shapes.
    """
    b, t = seconds_mask.shape
    expected = {
        "visual": (visual, (b, t, None, cfg.dim)),
        "audio": (audio, (b, t, cfg.audio_dim)),
        "words": (words, (b, None, cfg.dim)),
        "words_mask": (words_mask, (b, words.shape[1])),
        "sentence": (sentence, (b, cfg.dim)),
    }
    for name, (x, shape) in expected.items():
        if x.ndim != len(shape) or any(s is not None and s != xs for s, xs in zip(shape, x.shape)):
            raise ValueError(
                f"{cfg.variant} model input {name}: expected shape {shape} (None = any), got {tuple(x.shape)}"
            )
    if t > cfg.max_seconds:
        raise ValueError(
            f"{cfg.variant} model input has T = {t} seconds, more than model.max_seconds = {cfg.max_seconds}"
        )
    patches = visual[:, :, 1:] if cfg.visual_cls else visual  # (B, T, N, D)
    patches, audio, words = (x.to(dtype, copy=True) for x in (patches, audio, words))
    if not bool(seconds_mask.all()):  # MUSIC-AVQA (T = 60 everywhere) has no padded second to zero
        patches.masked_fill_(~seconds_mask[:, :, None, None], 0.0)
        audio.masked_fill_(~seconds_mask[:, :, None], 0.0)
    words.masked_fill_(~words_mask[:, :, None], 0.0)
    return patches, audio, words, sentence.to(dtype)

"""The model interface: the `Batch` every model takes, the `ModelOutput` every model returns, and the checks.

A `Batch` is the feature store's layout, padded (docs/schema.md): visual tokens with CLS first, audio, the
stored words (start token, BPE tokens, end token) with their mask, the sentence feature, and the question
text's word count, from which a variant derives its own word layout (the authors' model, authors_model.py).
Each model turns it into its inputs with `prepare_inputs`, which checks the shapes, drops CLS, upcasts and
zeroes the padding. A model returns a `ModelOutput` subclass: the answer logits, the modality weights δ,
and one slot per loss term for the inputs of that term (its variant's objective reads them).

    logits = build_model(cfg)(Batch.of(collate(items))).logits   # (B, C)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from .model_config import ModelConfig

T = TypeVar("T")


@dataclass
class Batch:
    """One batch in the store's layout, padded; masks are True where the second or the word exists."""

    visual: Tensor  # (B, T, N, D) visual tokens, CLS first
    audio: Tensor  # (B, T, A)
    seconds_mask: Tensor  # (B, T)
    words: Tensor  # (B, L, D) the stored words: start token, BPE tokens, end token
    words_mask: Tensor  # (B, L)
    sentence: Tensor  # (B, D) the store's sentence feature (CLIP's end-of-text output)
    template_words: Tensor | None = None  # (B,) words of the question text (the authors' word mask)

    @classmethod
    def of(cls, tensors: Mapping[str, Any]) -> Batch:
        """The batch's fields picked by name from a dict, e.g. `avaf.shared.dataset.collate`'s."""
        return cls(**{f.name: tensors[f.name] for f in dataclasses.fields(cls) if f.name in tensors})


@dataclass
class ModelOutput:
    """What every model returns; a variant's output type adds one slot per loss term."""

    logits: Tensor  # (B, C)
    delta: Tensor | None  # (B, 2) modality weights as (visual, audio); None where the model has none


def upcast(inputs: T) -> T:
    """A loss term's inputs (a NamedTuple of tensors) with every floating tensor in float32."""
    return type(inputs)(*(x.float() if x.is_floating_point() else x for x in inputs))


def prepare_inputs(
    cfg: ModelConfig, dtype: torch.dtype, batch: Batch
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, drop CLS, upcast to `dtype`, and zero the padding (so NaN or garbage there cannot leak).

    Returns patches (B, T, N, D) (N = 49 patches for ViT-B/32), audio, words and sentence; one copy each,
    never a write into the caller's tensors. A shape error names the input and both shapes.
    """
    b, t = batch.seconds_mask.shape
    words, words_mask = batch.words, batch.words_mask
    expected = {
        "visual": (batch.visual, (b, t, None, cfg.dim)),
        "audio": (batch.audio, (b, t, cfg.audio_dim)),
        "words": (words, (b, None, cfg.dim)),
        "words_mask": (words_mask, (b, words.shape[1])),
        "sentence": (batch.sentence, (b, cfg.dim)),
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
    patches = batch.visual[:, :, 1:] if cfg.visual_cls else batch.visual  # (B, T, N, D)
    patches, audio, words = (x.to(dtype, copy=True) for x in (patches, batch.audio, words))
    # MUSIC-AVQA (T = 60 everywhere) has no padded second to zero: a CPU skips the pass; a GPU zeroes
    # anyway, since asking would wait for every step queued before it
    if patches.device.type != "cpu" or not bool(batch.seconds_mask.all()):
        patches.masked_fill_(~batch.seconds_mask[:, :, None, None], 0.0)
        audio.masked_fill_(~batch.seconds_mask[:, :, None], 0.0)
    words.masked_fill_(~words_mask[:, :, None], 0.0)
    return patches, audio, words, batch.sentence.to(dtype)

"""Features in memory, batches by index (DESIGN.md §5 "Speed").

A split is loaded once from the store in a few large reads (`FeatureStore.load_videos`), moved to the
training device (GPU memory where it fits), and every batch is gathered there by index: no per-question
file read, no DataLoader workers, no Python loop over the batch. Videos shorter than the model's T and
questions shorter than M are padded with zeros and masked.

Word layout per variant. `paper`: the store's L BPE-token outputs (start and end tokens included) are the
words, all unmasked, and the sentence is the store's sentence feature (the end-of-text output). `authors`
(DESIGN.md §5b): the sentence is the start token's output (store row 0 of the question's words), the words
are the outputs at positions 1, 2, ... (rows 1..L-1), and the mask keeps positions 1..n with n the number of
space-separated words of the question template. The store keeps the filled-in text, not the template; n is
counted on that text, which gives the template's count on every released MUSIC-AVQA file (each placeholder
is one word and every templ_values filler is one word: checked on every annotation file shipped in
tests/data by tests/test_authors.py, and by hand on the 16 released files). Their code reads CLIP's output
at all 77 positions; the store keeps only the L real tokens, which suffices: n <= L - 2 (a word is at least
one BPE token; on json_update val + test L - 2 - n is 0..4), so positions 1..n are always stored, and the
positions after n change no logit (see authors_model.py). Were n ever larger, the mask stops at the stored rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avaf.shared.avqa.answers import answer_indices
from avaf.shared.avqa.question_types import type_index
from avaf.shared.dataset import pad_ragged
from avaf.shared.store import schema
from avaf.shared.store.reader import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split in memory: per-second and per-word arrays stacked, plus per-question indices."""

    name: str
    visual: Tensor  # (S, N, D) float16, all seconds of the split's videos
    audio: Tensor  # (S, 128) float16
    video_offset: Tensor  # (Q,) int64: first second of the question's video
    video_length: Tensor  # (Q,) int64
    audio_offset: Tensor  # (Q,) int64: first second of the video whose audio goes with the question
    audio_length: Tensor  # (Q,) int64 (the same video, except MUSIC-AVQA-v2.0's unmatch_audio rows)
    words: Tensor  # (W, D) float16
    word_offset: Tensor  # (Q,) int64
    word_length: Tensor  # (Q,) int64
    sentence: Tensor  # (Q, D) float16
    answer: Tensor  # (Q,) int64 index into ANSWERS
    qtype: Tensor  # (Q,) int64 index into TYPES
    question_id: np.ndarray  # (Q,)
    template_words: Tensor  # (Q,) int64: space-separated words of the question (the authors' word mask)
    device: torch.device  # where batches go; the arrays above live there too unless they did not fit
    variant: str = "paper"  # word layout of `gather`: "paper" or "authors" (module docstring)

    def __len__(self) -> int:
        return len(self.answer)

    def parts(self, gen: torch.Generator | None = None, layout_seed: int = 0):
        """(part, order, rows) as `stream.StreamedSplit.parts`: in memory, the one part is the split itself,
        visited in the order `gen` draws (else as stored)."""
        order = torch.randperm(len(self), generator=gen) if gen is not None else torch.arange(len(self))
        yield self, order, torch.arange(len(self))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, Tensor))


def load_split(
    fs: FeatureStore,
    split: str,
    subset: str | None,
    device: torch.device | str,
    variant: str = "paper",
    streamed: bool = False,
) -> SplitData:
    """The questions of one split whose video is in the store, with everything they need, on `device`;
    `variant` ("paper" or "authors") chooses the word layout of the batches. streamed=True leaves the visual
    tokens and the word features out (empty arrays; word_offset then points into the file's /words):
    `stream.StreamedSplit` reads them block by block."""
    q = fs.questions_with_videos(split=split, subset=subset)
    if not len(q["question_id"]):
        raise ValueError(f"{fs.path}: no {split} questions with features (subset={subset or 'all'})")
    fields = ("audio",) if streamed else ("visual_tokens", "audio")
    bulk = fs.load_videos(np.union1d(q["video_id"], q["audio_video_id"]), fields=fields)
    rows = np.array([bulk.index[v] for v in q["video_id"]], dtype=np.int64)
    audio_rows = np.array([bulk.index[v] for v in q["audio_video_id"]], dtype=np.int64)
    if streamed:
        tokens = np.zeros((0, *fs.shape(schema.SECONDS, "visual_tokens")[1:]), np.float16)
        words, word_offset = (
            np.zeros((0, fs.shape(schema.WORDS, "features")[1]), np.float16),
            q["word_offset"],
        )
    else:
        tokens = bulk.arrays["visual_tokens"]
        words, word_offset = fs.load_words(q["word_offset"], q["word_length"])
    answers = answer_indices(q["answer"], where=str(fs.path))

    device = torch.device(device)
    store_on = _fits(device, tokens.nbytes + words.nbytes, split)

    def t(x, dtype=None) -> Tensor:
        x = torch.as_tensor(np.asarray(x), dtype=dtype)
        return x.to(store_on) if store_on.type != "cpu" else (x.pin_memory() if device.type == "cuda" else x)

    return SplitData(
        name=split,
        visual=t(tokens),
        audio=t(bulk.arrays["audio"]),
        video_offset=t(bulk.offset[rows], torch.int64),
        video_length=t(bulk.length[rows], torch.int64),
        audio_offset=t(bulk.offset[audio_rows], torch.int64),
        audio_length=t(bulk.length[audio_rows], torch.int64),
        words=t(words),
        word_offset=t(word_offset, torch.int64),
        word_length=t(q["word_length"], torch.int64),
        sentence=t(q["sentence"]),
        answer=t(answers, torch.int64),
        qtype=t([type_index(x, where=str(fs.path)) for x in q["type"]], torch.int64),
        question_id=np.asarray(q["question_id"]),
        template_words=t([len(str(x).split()) for x in q["text"]], torch.int64),
        device=device,
        variant=variant,
    )


def _fits(device: torch.device, nbytes: int, split: str) -> torch.device:
    """The device itself when the split fits in its free memory (with room to train), else the CPU."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes < 0.8 * free - (4 << 30):  # leave ~4 GB for the model, activations and the other splits
        return device
    log.warning(
        "%s features (%.1f GB) do not fit in GPU memory: kept in pinned CPU memory", split, nbytes / 1e9
    )
    return torch.device("cpu")


def gather(
    data: SplitData, idx: Tensor, seconds: int, max_words: int, dtype: torch.dtype
) -> dict[str, Tensor]:
    """The batch of questions `idx`, padded and masked, as the model's inputs (float in `dtype`)."""
    idx = idx.to(data.answer.device)
    vo, vl = data.video_offset[idx], data.video_length[idx]  # (B,)
    visual, seconds_mask = pad_ragged(data.visual, vo, vl, seconds)  # (B, T, N, D), (B, T)
    ao, al = data.audio_offset[idx], torch.minimum(data.audio_length[idx], vl)  # audio stops with the video
    audio, _ = pad_ragged(data.audio, ao, al, seconds)  # (B, T, 128)
    if data.variant == "authors":  # positions 1.., masked after the template's n; sentence = start token
        wo, wl = data.word_offset[idx], data.word_length[idx]  # (B,)
        words, stored = pad_ragged(data.words, wo + 1, wl - 1, max_words - 1)  # (B, M, D), M = max_words - 1
        n = torch.minimum(data.template_words[idx], wl - 1)  # (B,)
        words_mask = stored & (torch.arange(max_words - 1, device=n.device)[None, :] < n[:, None])  # (B, M)
        sentence = data.words[wo]  # (B, D)
    else:
        words, words_mask = pad_ragged(
            data.words, data.word_offset[idx], data.word_length[idx], max_words
        )  # (B, M, D)
        sentence = data.sentence[idx]  # (B, D)
    batch = {
        "visual": visual,
        "audio": audio,
        "seconds_mask": seconds_mask,
        "words": words,
        "words_mask": words_mask,
        "sentence": sentence,
        "answer": data.answer[idx],  # (B,)
    }
    out = {k: v.to(data.device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}

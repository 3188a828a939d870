"""A PyTorch `Dataset` over `feats.h5` for any AVQA model: one item per question (DESIGN.md §2).

The only module of `avaf.shared` that imports torch: the store's reader and writer stay h5py + numpy.

    from torch.utils.data import DataLoader
    from avaf.shared.dataset import AVQADataset, collate

    train = AVQADataset("feats.h5", split="train", subset="all", in_memory=True)
    loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate)
    for batch in loader:
        visual, audio = batch["visual"], batch["audio"]  # (B, T, N, D), (B, T, 128) float32
        words, sentence = batch["words"], batch["sentence"]  # (B, L, D), (B, D)
        masks = batch["seconds_mask"], batch["words_mask"]  # (B, T), (B, L): True where real
        loss = F.cross_entropy(model(visual, audio, words, sentence, *masks), batch["answer"])

`in_memory=True` (default, the fast path) reads every video the split needs and every question's words once,
in a few large reads (`FeatureStore.load_videos`); items are then slices of those arrays. `in_memory=False`
reads one video and one question per item (one contiguous read each), for files larger than memory; with
DataLoader workers each worker opens its own HDF5 handle on first use (a handle is never shared across a fork).
Questions whose video is not in the store are left out, with a logged count.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avaf.shared.avqa.answers import answer_indices
from avaf.shared.avqa.question_types import type_index
from avaf.shared.store import schema
from avaf.shared.store.index import QuestionIndex
from avaf.shared.store.reader import FeatureStore

log = logging.getLogger(__name__)

READS = ("visual_tokens", "audio", "words", "sentence")  # the arrays of the store's avaf set items hold


class AVQADataset(Dataset):
    """The questions of one split (all splits when `split` is None) of a feature store, with their features.

    Items are dicts: visual (T, N, D), audio (T, 128), words (L, D), sentence (D,) as stored (float16
    tensors), answer (index into `avaf.shared.avqa.answers.ANSWERS`), template_words (the question's word
    count, which the authors' model masks its words with), type ("Audio/Counting", ...), type_index
    (into `avaf.shared.avqa.question_types.TYPES`), question_id, video_id, audio_video_id (the video the audio
    comes from: video_id, except MUSIC-AVQA-v2.0's unmatch_audio questions).
    """

    def __init__(
        self, feats: str | os.PathLike, split: str | None = None, subset: str = "all", in_memory: bool = True
    ):
        self.path, self.split, self.subset, self.in_memory = Path(feats), split, subset, in_memory
        self._fs: FeatureStore | None = None  # lazy mode: opened per process on first item
        self._pid: int | None = None
        with FeatureStore(self.path) as fs:
            fs.require([(schema.AVAF, n) for n in READS], "AVQADataset")  # one line naming what is missing
            index = QuestionIndex.build(fs, split, subset)
            q = index.questions
            self.question_id, self.video_id, self.type = q["question_id"], q["video_id"], q["type"]
            self.audio_video_id = q["audio_video_id"]
            self.answer = answer_indices(q["answer"], where=str(fs.path))
            self.type_index = np.array([type_index(t, str(fs.path)) for t in q["type"]], dtype=np.int64)
            self.sentence = q["sentence"]  # (Q, D)
            self.word_length, self.template_words = q["word_length"], index.template_words
            self.second_length = index.seconds_length[index.video]
            self.audio_length = index.seconds_length[index.audio_video]
            if in_memory:  # offsets into the stacked arrays of every video the split needs
                bulk = fs.load_videos(index.video_ids, fields=("visual_tokens", "audio"))
                self._visual, self._audio = bulk.arrays["visual_tokens"], bulk.arrays["audio"]
                self._words, self.word_offset = fs.load_words(index.word_offset, index.word_length)
                offset = index.packed_offset()
            else:  # offsets into the file
                self.word_offset, offset = index.word_offset, index.seconds_offset
            self.second_offset, self.audio_offset = offset[index.video], offset[index.audio_video]

    def __len__(self) -> int:
        return len(self.question_id)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fs"], state["_pid"] = None, None  # an h5py handle cannot cross a process boundary
        return state

    def _store(self) -> FeatureStore:
        if self._fs is None or self._pid != os.getpid():  # first item in this process (or a forked worker)
            self._fs, self._pid = FeatureStore(self.path), os.getpid()
        return self._fs

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """visual (T, N, D), audio (T, 128) and words (L, D) of question i; the audio is the first T seconds
        of its audio's video (zeros past that video's end): the question's own video but for v2.0's
        unmatch_audio rows."""
        a, n = int(self.second_offset[i]), int(self.second_length[i])
        b, k = int(self.audio_offset[i]), min(int(self.audio_length[i]), n)
        w, m = int(self.word_offset[i]), int(self.word_length[i])
        if self.in_memory:
            visual, audio, words = self._visual[a : a + n], self._audio[b : b + k], self._words[w : w + m]
        else:
            fs = self._store()
            visual = fs.dataset(schema.SECONDS, "visual_tokens")[a : a + n]
            audio = fs.dataset(schema.SECONDS, "audio")[b : b + k]
            words = fs.dataset(schema.WORDS, "features")[w : w + m]
        if k < n:
            audio = np.concatenate([audio, np.zeros((n - k, *audio.shape[1:]), audio.dtype)])
        return visual, audio, words

    def __getitem__(self, i: int) -> dict:
        visual, audio, words = self._arrays(i)
        return {
            "visual": torch.from_numpy(visual),  # (T, N, D)
            "audio": torch.from_numpy(audio),  # (T, 128)
            "words": torch.from_numpy(words),  # (L, D)
            "sentence": torch.from_numpy(self.sentence[i]),  # (D,)
            "answer": int(self.answer[i]),
            "template_words": int(self.template_words[i]),
            "type": str(self.type[i]),
            "type_index": int(self.type_index[i]),
            "question_id": int(self.question_id[i]),
            "video_id": str(self.video_id[i]),
            "audio_video_id": str(self.audio_video_id[i]),
        }


def pad_ragged(flat: torch.Tensor, offset: torch.Tensor, length: torch.Tensor, size: int):
    """Rows offset[b] .. offset[b] + min(length[b], size) of `flat`, zero-padded to `size`, and the mask.

    The one padding routine of avaf: the trainer gathers its batches with it from a split in memory, and
    `collate` pads a DataLoader's items with it. flat: (S, ...); offset, length: (B,) -> (B, size, ...), (B, size).
    """
    steps = torch.arange(size, device=flat.device)  # (T,)
    mask = steps[None, :] < length[:, None]  # (B, T)
    index = (offset[:, None] + steps[None, :]).clamp(min=0, max=max(flat.shape[0] - 1, 0))  # (B, T)
    out = flat[index]  # (B, T, ...)
    out = out * mask.view(*mask.shape, *([1] * (out.dim() - 2))).to(out.dtype)
    return out, mask


def _pad_items(arrays: list[torch.Tensor], dtype: torch.dtype):
    """Per-item (L_i, ...) tensors -> (B, max L_i, ...) zero-padded, and the (B, max L_i) mask."""
    length = torch.tensor([a.shape[0] for a in arrays], dtype=torch.int64)  # (B,)
    offset = torch.cumsum(length, 0) - length  # (B,)
    return pad_ragged(torch.cat(arrays).to(dtype), offset, length, int(length.max()))


def collate(items: list[dict], dtype: torch.dtype | None = torch.float32) -> dict:
    """Stack items into a batch, zero-padding T and L to the batch's longest; masks are True where real.

    dtype: of the feature tensors (float32 by default; None keeps the stored float16). For a DataLoader
    that keeps fp16: `collate_fn=functools.partial(collate, dtype=None)`.
    """
    dtype = dtype or items[0]["visual"].dtype
    visual, seconds_mask = _pad_items([it["visual"] for it in items], dtype)  # (B, T, N, D), (B, T)
    audio, _ = _pad_items([it["audio"] for it in items], dtype)  # (B, T, 128)
    words, words_mask = _pad_items([it["words"] for it in items], dtype)  # (B, L, D), (B, L)
    return {
        "visual": visual,
        "audio": audio,
        "seconds_mask": seconds_mask,
        "words": words,
        "words_mask": words_mask,
        "sentence": torch.stack([it["sentence"] for it in items]).to(dtype),  # (B, D)
        "answer": torch.tensor([it["answer"] for it in items], dtype=torch.long),
        "template_words": torch.tensor([it["template_words"] for it in items], dtype=torch.long),
        "type_index": torch.tensor([it["type_index"] for it in items], dtype=torch.long),
        "question_id": torch.tensor([it["question_id"] for it in items], dtype=torch.long),
        "type": [it["type"] for it in items],
        "video_id": [it["video_id"] for it in items],
        "audio_video_id": [it["audio_video_id"] for it in items],
    }

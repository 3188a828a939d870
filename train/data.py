"""Features in memory, batches by index (DESIGN.md §5 "Speed").

A split is loaded once from the store in a few large reads (`FeatureStore.load_videos`, sliced by the
store's one question index, `avaf.shared.store.index`), moved to the training device (GPU memory where it
fits), and every batch is gathered there by index: no per-question file read, no DataLoader workers, no
Python loop over the batch. Videos shorter than T and questions shorter than M are padded with zeros and
masked. A batch is the store's layout (`inputs.Batch`) plus each question's word count; each model turns
it into its own inputs, so nothing here knows which variant trains. A split too large for memory keeps
its visual tokens and words in the file and reads them block by block (stream.py): a `SplitData` whose
`features` come in parts. The arrays it reads are named in ARRAYS (the store's avaf set); a store that
lacks one is refused in one line naming it and the sets the store holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from avaf.shared.avqa.answers import answer_indices
from avaf.shared.avqa.question_types import type_index
from avaf.shared.dataset import pad_ragged
from avaf.shared.store.index import QuestionIndex
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import AVAF

from .inputs import Batch

log = logging.getLogger(__name__)

#: the arrays avaf-train reads, by (set, name): visual tokens F_p, audio F_a, words F_w, sentence F_q
ARRAYS = {
    "visual": (AVAF, "visual_tokens"),
    "audio": (AVAF, "audio"),
    "words": (AVAF, "words"),
    "sentence": (AVAF, "sentence"),
}


def columns(fs: FeatureStore) -> dict[str, str]:
    """The store's column of each array of ARRAYS (its key in its table); a store that lacks one is a
    one-line StoreError naming the missing arrays and the sets the store holds."""
    fs.require(ARRAYS.values(), "avaf-train")
    return {role: fs.array(*pair).key for role, pair in ARRAYS.items()}


@dataclass(frozen=True)
class Shape:
    """What batches are padded to: T seconds and M stored words."""

    seconds: int
    words: int


@dataclass
class Features:
    """The large arrays a batch is gathered from, and where each question's rows start in them. In memory
    they cover the whole split; a streamed block covers its own questions only (the others' offsets are
    never read)."""

    visual: Tensor  # (S, N, D) float16, the seconds of the videos held
    words: Tensor  # (W, D) float16, the words of the questions held
    video_offset: Tensor  # (Q,) int64: first row in `visual` of each question's video
    word_offset: Tensor  # (Q,) int64: first row in `words` of each question's words

    def parts(self, questions: int, gen: torch.Generator | None, layout_seed: int):
        """The one part of a split in memory: itself, its questions in the order `gen` draws (else stored)."""
        yield self, torch.randperm(questions, generator=gen) if gen is not None else torch.arange(questions)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self).values())


class FeatureSource(Protocol):
    """Where a split's `Features` come from: `Features` itself in memory, `stream.StreamedFeatures` else."""

    nbytes: int

    def parts(
        self, questions: int, gen: torch.Generator | None, layout_seed: int
    ) -> Iterator[tuple[Features, Tensor]]: ...


@dataclass
class SplitData:
    """One split: its per-question tensors and the audio (all in memory), and where its features come from."""

    name: str
    device: torch.device  # where batches go; the tensors live there too unless they did not fit
    question_id: np.ndarray  # (Q,)
    answer: Tensor  # (Q,) int64 index into ANSWERS
    qtype: Tensor  # (Q,) int64 index into TYPES
    sentence: Tensor  # (Q, D) float16
    video_length: Tensor  # (Q,) int64 seconds of the question's video
    audio_offset: Tensor  # (Q,) int64: first row in `audio` of the video whose audio goes with the question
    audio_length: Tensor  # (Q,) int64 (the same video, except MUSIC-AVQA-v2.0's unmatch_audio rows)
    word_length: Tensor  # (Q,) int64 stored words: start token, BPE tokens, end token
    template_words: Tensor  # (Q,) int64 words of the question text (the authors' word mask)
    audio: Tensor  # (S, A) float16, the seconds of every video the split needs (A = 128: VGGish)
    features: FeatureSource

    def __len__(self) -> int:
        return len(self.answer)

    def parts(
        self, gen: torch.Generator | None = None, layout_seed: int = 0
    ) -> Iterator[tuple[Features, Tensor]]:
        """(features, rows): the features of one part and the split rows of its questions, in the order to
        visit them (shuffled by `gen`, else as stored). In memory the one part is the whole split."""
        return self.features.parts(len(self), gen, layout_seed)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (a streamed split's blocks come on top)."""
        own = sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, Tensor))
        return own + self.features.nbytes


def split_index(fs: FeatureStore, split: str, subset: str | None) -> QuestionIndex:
    """The store's question index of one split; a split without questions with features is an error, and
    so is a store without the arrays avaf-train reads (`columns`)."""
    columns(fs)
    index = QuestionIndex.build(fs, split, subset)
    if not len(index):
        raise ValueError(f"{fs.path}: no {split} questions with features (subset={subset or 'all'})")
    return index


def load_split(
    fs: FeatureStore,
    split: str,
    subset: str | None,
    device: torch.device | str,
    index: QuestionIndex | None = None,
) -> SplitData:
    """The questions of one split whose video is in the store, with everything they need, on `device`."""
    index = index or split_index(fs, split, subset)
    key = columns(fs)
    bulk = fs.load_videos(index.video_ids, fields=(key["visual"], key["audio"]))
    words, word_offset = fs.load_words(index.word_offset, index.word_length, key["words"])
    device = torch.device(device)
    place = placer(device, _fits(device, bulk.arrays[key["visual"]].nbytes + words.nbytes, split))
    features = Features(
        visual=place(bulk.arrays[key["visual"]]),
        words=place(words),
        video_offset=place(index.packed_offset()[index.video]),
        word_offset=place(word_offset),
    )
    return split_data(fs, split, device, index, place, bulk.arrays[key["audio"]], features)


def split_data(
    fs: FeatureStore,
    name: str,
    device: torch.device,
    index: QuestionIndex,
    place: Callable[[Any], Tensor],
    audio: np.ndarray,
    features: FeatureSource,
) -> SplitData:
    """The `SplitData` of `index` whose audio is `audio` (every video of the index stacked in file order),
    its tensors put where `place` puts them; batches go to `device`."""
    q, where = index.questions, str(fs.path)
    return SplitData(
        name=name,
        device=device,
        question_id=np.asarray(q["question_id"]),
        answer=place(answer_indices(q["answer"], where=where)),
        qtype=place([type_index(x, where=where) for x in q["type"]]),
        sentence=place(q[columns(fs)["sentence"]]),
        video_length=place(index.seconds_length[index.video]),
        audio_offset=place(index.packed_offset()[index.audio_video]),
        audio_length=place(index.seconds_length[index.audio_video]),
        word_length=place(index.word_length.astype(np.int64)),
        template_words=place(index.template_words),
        audio=place(audio),
        features=features,
    )


def placer(device: torch.device, store_on: torch.device) -> Callable[[Any], Tensor]:
    """Arrays -> tensors on `store_on` (pinned CPU memory when batches go to a GPU from the CPU)."""

    def place(x: Any) -> Tensor:
        x = torch.as_tensor(np.asarray(x))
        return x.to(store_on) if store_on.type != "cpu" else (x.pin_memory() if device.type == "cuda" else x)

    return place


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
    data: SplitData, features: Features, rows: Tensor, shape: Shape, dtype: torch.dtype = torch.float32
) -> tuple[Batch, Tensor]:
    """The batch of questions `rows` (split rows held by `features`), padded and masked, in the store's
    layout (float in `dtype`), on the split's device; and their answers (B,)."""
    rows = rows.to(data.answer.device)
    vo, vl = features.video_offset[rows], data.video_length[rows]  # (B,)
    visual, seconds_mask = pad_ragged(features.visual, vo, vl, shape.seconds)  # (B, T, N, D), (B, T)
    ao, al = data.audio_offset[rows], torch.minimum(data.audio_length[rows], vl)  # audio stops with the video
    audio, _ = pad_ragged(data.audio, ao, al, shape.seconds)  # (B, T, A)
    wo, wl = features.word_offset[rows], data.word_length[rows]  # (B,)
    words, words_mask = pad_ragged(features.words, wo, wl, shape.words)  # (B, M, D), (B, M)
    on = {"device": data.device, "non_blocking": True}
    batch = Batch(
        visual=visual.to(**on).to(dtype),
        audio=audio.to(**on).to(dtype),
        seconds_mask=seconds_mask.to(**on),
        words=words.to(**on).to(dtype),
        words_mask=words_mask.to(**on),
        sentence=data.sentence[rows].to(**on).to(dtype),
        template_words=data.template_words[rows].to(**on),
    )
    return batch, data.answer[rows].to(**on)

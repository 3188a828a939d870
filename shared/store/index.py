"""The question -> video -> words index of a feature store, built once with numpy (DESIGN.md §2).

Every reader of questions needs the same index: the questions of a split whose videos are in the store,
the videos they need (their own and, for MUSIC-AVQA-v2.0's unmatch_audio rows, the one their audio comes
from) in file order, where each video's seconds are and where each question's words are. The PyTorch
`Dataset` (avaf.shared.dataset), the trainer's in-memory splits and its streamed blocks (avaf.train) all
slice this one index. h5py + numpy only, like the reader.

    index = QuestionIndex.build(fs, split="train")
    bulk = fs.load_videos(index.video_ids)          # stacked in file order
    first = index.packed_offset()[index.video]      # (Q,) each question's first second in `bulk`
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avaf.shared.store.reader import FeatureStore


@dataclass(frozen=True)
class QuestionIndex:
    """The questions of one split (or all), each pointing at its video's seconds and at its words."""

    questions: dict[str, np.ndarray]  # the store's question columns at these Q rows
    video_ids: list[str]  # (V,) every video the questions need, in file order, each once
    seconds_offset: np.ndarray  # (V,) int64: first row of each video in the file's per-second arrays
    seconds_length: np.ndarray  # (V,) int64: its seconds
    video: np.ndarray  # (Q,) int64: position in video_ids of the question's video
    audio_video: np.ndarray  # (Q,) int64: position in video_ids of the video its audio comes from
    template_words: np.ndarray  # (Q,) int64: space-separated words of the question's text

    @classmethod
    def build(cls, fs: FeatureStore, split: str | None = None, subset: str | None = None) -> QuestionIndex:
        """The index of `split` (all splits when None) and `subset` ("real" or all); questions whose
        video is not in the store are left out (`FeatureStore.questions_with_videos` logs them)."""
        q = fs.questions_with_videos(split=split, subset=subset)
        n = len(q["question_id"])
        rows, position = np.unique(
            np.concatenate([fs.rows(q["video_id"]), fs.rows(q["audio_video_id"])]), return_inverse=True
        )  # (V,) file rows, sorted: file order; (2Q,) where each question's two videos are among them
        return cls(
            questions=q,
            video_ids=[fs.video_ids[r] for r in rows.tolist()],
            seconds_offset=fs.videos["offset"][rows].astype(np.int64),
            seconds_length=fs.videos["length"][rows].astype(np.int64),
            video=position[:n].astype(np.int64),
            audio_video=position[n:].astype(np.int64),
            template_words=np.array([len(str(t).split()) for t in q["text"]], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.video)

    @property
    def word_offset(self) -> np.ndarray:
        """(Q,) first row of each question's words in the file's /words."""
        return self.questions["word_offset"]

    @property
    def word_length(self) -> np.ndarray:
        """(Q,) its stored words: start token, BPE tokens, end token."""
        return self.questions["word_length"]

    def packed_offset(self, positions: np.ndarray | None = None) -> np.ndarray:
        """(V,) int64: where each video's seconds start once the videos at `positions` (default: all) are
        loaded with `FeatureStore.load_videos`, which stacks them in file order; -1 for the others."""
        chosen = np.arange(len(self.video_ids)) if positions is None else np.unique(positions)
        lengths = self.seconds_length[chosen]
        out = np.full(len(self.video_ids), -1, dtype=np.int64)
        out[chosen] = np.cumsum(lengths) - lengths
        return out

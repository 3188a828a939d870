"""Questions into the store (DESIGN.md §2, §4): parse annotation files, encode with CLIP's text tower.

Each question keeps its word-level features (one row per real BPE token) and the sentence feature (the
end-of-text token's projected output). Questions already in a complete shard with the same text, split,
type, answer and audio video are not encoded again, so adding a new annotation file to an existing store costs only
the new questions, and never touches its videos.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avaf.shared.avqa.annotations import Question
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import QuestionFeatures, ShardWriter, complete_shards, new_shard_path

log = logging.getLogger(__name__)

# What makes a stored question the same as a parsed one (its features depend only on the text).
KEY = ("question_id", "text", "split", "type", "answer", "audio_video_id")


def _already_encoded(folder: Path) -> set[tuple]:
    done = set()
    for p in complete_shards(folder):
        with FeatureStore(p) as s:
            q = s.questions()
            done.update(zip(q["question_id"].tolist(), *(q[k] for k in KEY[1:])))
    return done


def pending(questions: list[Question], folder: Path) -> list[Question]:
    """The questions not yet in a complete shard (with the same text, split, type, answer, audio video)."""
    done = _already_encoded(folder)
    todo = [q for q in questions if tuple(getattr(q, k) for k in KEY) not in done]
    log.info("%d questions, %d already encoded", len(questions), len(questions) - len(todo))
    return todo


def batches(todo: list[Question], batch_size: int) -> list[list[str]]:
    """The texts in fixed batches, in order: whoever encodes a batch (this process or any encoder actor)
    sees the same batch, so the features are the same bits (a batch's length sets the passes' shape)."""
    return [[q.text for q in todo[a : a + batch_size]] for a in range(0, len(todo), batch_size)]


def encode_batch(clip, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(words (L, D), sentence (D,)) float16 per text, with CLIP's text tower."""
    return [
        (np.asarray(wd.float().cpu(), dtype=np.float16), np.asarray(st.float().cpu(), dtype=np.float16))
        for wd, st in clip.encode_text(texts, batch_size=len(texts))
    ]


def write(
    todo: list[Question],
    encoded: Iterator[tuple[int, list[tuple[np.ndarray, np.ndarray]]]],
    folder: Path,
    meta: dict,
    batch_size: int,
    progress: bool = True,
) -> int:
    """One new shard of the questions `todo`, from `encoded`: (batch number, its features) in any order,
    batch b holding todo[b * batch_size : (b + 1) * batch_size] (`batches`); returns how many were written.

    The shard keeps the annotation order whatever order the batches arrive in (two encoder actors finish
    in either order): a batch that arrives early waits in memory for the ones before it."""
    if not todo:
        return 0
    n = 0
    early: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    with (
        ShardWriter(
            new_shard_path(folder, "questions"),
            meta["config"],
            meta["signature"],
            meta["random_weights"],
            meta.get("feature_sets"),  # None: the avaf set as the signature describes it
        ) as w,
        tqdm(total=len(todo), unit="question", disable=not progress, dynamic_ncols=True) as bar,
    ):
        for b, features in encoded:
            early[b] = features
            bar.update(len(features))
            while n // batch_size in early:
                ready = early.pop(n // batch_size)
                for q, (wd, st) in zip(todo[n : n + len(ready)], ready, strict=True):
                    w.add_question(
                        QuestionFeatures(
                            question_id=q.question_id,
                            video_id=q.video_id,
                            audio_video_id=q.audio_video_id,
                            split=q.split,
                            text=q.text,
                            type=q.type,
                            answer=q.answer,
                            words=wd,
                            sentence=st,
                        )
                    )
                n += len(ready)
    if early:
        raise RuntimeError(f"question batches {sorted(early)} arrived without the ones before them")
    return n

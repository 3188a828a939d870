"""Questions into the store (DESIGN.md §2, §4): parse annotation files, encode with CLIP's text tower.

Each question keeps its word-level features (one row per real BPE token) and the sentence feature (the
end-of-text token's projected output). Questions already in a complete shard with the same text, split,
type, answer and audio video are not encoded again, so adding a new annotation file to an existing store costs only
the new questions, and never touches its videos.
"""

from __future__ import annotations

import logging
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


def write(
    questions: list[Question], encoders, folder: Path, meta: dict, batch_size: int, progress: bool = True
) -> int:
    """Encode the questions not yet in a shard into one new shard; returns how many were encoded."""
    done = _already_encoded(folder)
    todo = [q for q in questions if tuple(getattr(q, k) for k in KEY) not in done]
    log.info("%d questions, %d already encoded", len(questions), len(questions) - len(todo))
    if not todo:
        return 0
    with (
        ShardWriter(
            new_shard_path(folder, "questions"), meta["config"], meta["signature"], meta["random_weights"]
        ) as w,
        tqdm(total=len(todo), unit="question", disable=not progress, dynamic_ncols=True) as bar,
    ):
        for a in range(0, len(todo), batch_size):
            batch = todo[a : a + batch_size]
            encoded = encoders.clip.encode_text([q.text for q in batch])  # [(words (L, D), sentence (D,))]
            bar.update(len(batch))
            for q, (wd, st) in zip(batch, encoded, strict=True):
                w.add_question(
                    QuestionFeatures(
                        question_id=q.question_id,
                        video_id=q.video_id,
                        audio_video_id=q.audio_video_id,
                        split=q.split,
                        text=q.text,
                        type=q.type,
                        answer=q.answer,
                        words=np.asarray(wd.float().cpu(), dtype=np.float16),
                        sentence=np.asarray(st.float().cpu(), dtype=np.float16),
                    )
                )
    return len(todo)

"""Questions into the store (DESIGN.md §2, §4): parse annotation files, encode with each pack's text tower.

The avaf pack keeps each question's word-level features (one row per real BPE token) and the sentence feature
(the end-of-text token's projected output); the tspm pack its sentence, all 77 word positions and, with a
QA-prompt table, the prompt sentence (encoders/tspm_pack.py). Questions already in a complete shard with the
same text, split, type, answer and audio video are not encoded again (todo.py), so adding an annotation file
costs only the new questions, and never touches the videos; a pack the store lacks is encoded for the stored
questions alone, their other arrays copied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avaf.extract.encoders import tspm_pack
from avaf.extract.todo import Kept, QuestionJob
from avaf.shared.store.schema import AVAF
from avaf.shared.store.sets import TSPM
from avaf.shared.store.writer import QuestionFeatures, ShardWriter, new_shard_path

log = logging.getLogger(__name__)

Encoded = list[dict[str, dict[str, np.ndarray | None]]]  # per question: set -> array -> value


def batches(jobs: list[QuestionJob], batch_size: int, prompts=None) -> list[dict]:
    """The jobs in fixed batches, in order, each of consecutive jobs with the same packs: {"packs": comma
    list, "texts", "prompts": the QA prompt per question (None: the table lacks its template), or None
    without a table or the tspm pack}. The batches only share the work out: a question's features are the
    same bits in any batch (the text passes have fixed shapes, batching.text_passes)."""
    out, a = [], 0
    while a < len(jobs):
        packs = jobs[a].packs
        b = a
        while b < len(jobs) and b - a < batch_size and jobs[b].packs == packs:
            b += 1
        part = [j.question for j in jobs[a:b]]
        with_prompts = prompts is not None and TSPM in packs
        out.append(
            {
                "packs": ",".join(packs),
                "texts": [q.text for q in part],
                "prompts": [prompts.prompt(q) for q in part] if with_prompts else None,
            }
        )
        a = b
    return out


def encode_batch(encoders, batch: dict) -> Encoded:
    """Each question's arrays for the batch's packs, with the loaded `encoders` (stage.Encoders)."""
    packs, texts = batch["packs"].split(","), list(batch["texts"])
    out: Encoded = [{} for _ in texts]
    if AVAF in packs:
        for row, (wd, st) in zip(out, encoders.clip.encode_text(texts), strict=True):
            row[AVAF] = {"words": _f16(wd), "sentence": _f16(st)}
    if TSPM in packs:
        prompts = batch.get("prompts")
        rows = tspm_pack.encode_questions(encoders.models["tspm_clip"], texts, prompts)
        for row, arrays in zip(out, rows, strict=True):
            row[TSPM] = arrays
    return out


def _f16(x) -> np.ndarray:
    return np.asarray(x.float().cpu(), dtype=np.float16)


def write(
    jobs: list[QuestionJob],
    sizes: list[int],
    encoded: Iterator[tuple[int, Encoded]],
    folder: Path,
    meta: dict,
    progress: bool = True,
) -> int:
    """One new shard of the questions of `jobs`, from `encoded`: (batch number, its features) in any order,
    batch b holding the next sizes[b] jobs; the arrays a job keeps are copied from its shard (todo.Kept).
    Returns how many were written.

    The shard keeps the jobs' order whatever order the batches arrive in (two encoder actors finish in
    either order): a batch that arrives early waits in memory for the ones before it."""
    if not jobs:
        return 0
    n, b_next, kept = 0, 0, Kept()
    early: dict[int, Encoded] = {}
    with (
        ShardWriter(
            new_shard_path(folder, "questions"),
            meta["config"],
            meta["signature"],
            meta["random_weights"],
            meta.get("feature_sets"),  # None: the avaf set as the signature describes it
        ) as w,
        tqdm(total=len(jobs), unit="question", disable=not progress, dynamic_ncols=True) as bar,
    ):
        for b, features in encoded:
            early[b] = features
            bar.update(len(features))
            while b_next in early:
                for job, arrays in zip(jobs[n : n + sizes[b_next]], early.pop(b_next), strict=True):
                    w.add_question(_question(job, arrays, kept))
                n, b_next = n + sizes[b_next], b_next + 1
    kept.close()
    if early:
        raise RuntimeError(f"question batches {sorted(early)} arrived without the ones before them")
    return n


def _question(job: QuestionJob, arrays: dict, kept: Kept) -> QuestionFeatures:
    q, avaf = job.question, arrays.get(AVAF, {})
    out = QuestionFeatures(
        question_id=q.question_id,
        video_id=q.video_id,
        audio_video_id=q.audio_video_id,
        split=q.split,
        text=q.text,
        type=q.type,
        answer=q.answer,
        words=avaf.get("words"),
        sentence=avaf.get("sentence"),
        sets={s: a for s, a in arrays.items() if s != AVAF},
    )
    return kept.question(job, out) if job.kept else out

"""Extraction engines (DESIGN.md §3 "Parallelism"): who decodes and encodes a run's videos and questions.

`run_extract` (pipeline.py) plans the work, takes an engine from `choose_mode` and writes what it returns:

    facts()                  what every shard records: the encoders' signature, random flags, frame size
    rows(todo, decode)       one row per video: its features, or the error that stopped it
    question_batches(texts)  (batch number, features) for each fixed batch of question texts, in any order

`InProcessEngine` (here) encodes in this process, without Ray; `RayEngine` (ray_engine.py) on a local Ray
instance or a cluster. Both decode and encode with the functions below, so they write the same arrays. A
GPU decoder (``--decoder pyav-cuda``) decodes where its videos are encoded: the frames never leave the GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Protocol

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig
from avaf.extract.decode.backends import GPU_BACKENDS
from avaf.extract.decode.worker import decode_row
from avaf.extract.encoders.stage import Encoders, encode_videos, load_encoders

log = logging.getLogger(__name__)


class JobLost(Exception):
    """The Ray job stopped before every video came back (a node lost for good, no progress, a Ray error)."""


class Engine(Protocol):
    """Decodes and encodes a run's videos and questions; started by its constructor, `Engine(cfg)`."""

    in_process: ClassVar[bool]  # what the file's config records as `runtime.in_process`
    frame_size: int  # the frames' side in pixels, known before the encoders load

    def facts(self) -> dict:
        """{"signature", "random_weights", "feature_sets", "image_size"} of the encoders that encode
        (`encoder_facts`)."""
        ...

    def rows(self, todo: list[tuple[str, str]], decode: dict) -> Iterator[dict]:
        """{"video_id", "path", "features" (None on failure), "error"} per (video id, path) of `todo`, in
        any order; a row may come twice (a retried task) or never (`JobLost` ends the iteration)."""
        ...

    def question_batches(self, texts: list[list[str]]) -> Iterator[tuple[int, list]]:
        """(b, [(words, sentence)] of texts[b]) for every batch b, in any order (`questions.write`)."""
        ...


def encoder_facts(encoders: Encoders) -> dict:
    """What a run records of its encoders: the signature, the random-weight flags, the feature sets they
    write (with their encoders and preprocessing), the frame size."""
    return {
        "signature": encoders.signature(),
        "random_weights": encoders.random_weights,
        "feature_sets": encoders.feature_sets(),
        "image_size": encoders.image_size,
    }


def decodes_on_gpu(backend: str) -> bool:
    """Whether videos are decoded where they are encoded, on the encoders' GPU, their frames never leaving it
    (a GPU decoder asked for)."""
    return backend in GPU_BACKENDS


def decode_rows_here(rows: list[dict], cfg_decode: dict) -> list[dict]:
    """A GPU decoder's videos, decoded by the process that encodes them, all at once on threads, their frames
    left on the GPU for the encoders (how fast: docs/cluster.md, "How the work is laid out")."""
    with ThreadPoolExecutor(max(1, len(rows))) as pool:
        return list(pool.map(lambda r: decode_row(r["video_id"], r["path"], cfg_decode, False), rows))


def encode_rows(encoders: Encoders, rows: list[dict]) -> list[dict]:
    """Encode decoded videos together; rows that failed to decode pass their error on.

    If the shared batch fails (e.g. out of memory), each video is retried alone so one bad video is
    recorded with its error and the others still get features.
    """
    ok = [r for r in rows if r["decoded"] is not None]
    feats, errors = {}, {}
    groups = [ok] if ok else []
    for group in groups:  # grows while iterating: a failed shared batch is queued again video by video
        try:
            done = encode_videos(encoders, [(r["video_id"], r["path"], r["decoded"]) for r in group])
            feats.update({r["video_id"]: f for r, f in zip(group, done, strict=True)})
        except Exception as e:  # recorded per video, never fatal
            if len(group) > 1:
                groups += [[r] for r in group]
                continue
            log.exception("encoding failed for %s", group[0]["path"])
            errors[group[0]["video_id"]] = f"encoding failed: {type(e).__name__}: {e}"
    return [
        {
            "video_id": r["video_id"],
            "path": r["path"],
            "features": feats.get(r["video_id"]),
            "error": r["error"] or errors.get(r["video_id"], ""),
        }
        for r in rows
    ]


class InProcessEngine:
    """This process loads the encoders (a missing weight file fails here, before any work) and encodes
    `videos_per_call` videos at a time; each video is decoded in an isolated child, or on a thread here for
    a GPU decoder."""

    in_process = True

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg
        self.encoders = load_encoders(cfg)
        self.frame_size = self.encoders.image_size

    def facts(self) -> dict:
        return encoder_facts(self.encoders)

    def rows(self, todo: list[tuple[str, str]], decode: dict) -> Iterator[dict]:
        step = self.cfg.runtime.videos_per_call
        for a in range(0, len(todo), step):
            part = todo[a : a + step]
            if decodes_on_gpu(decode["backend"]):
                rows = decode_rows_here([{"video_id": v, "path": p} for v, p in part], decode)
            else:
                rows = [decode_row(v, p, decode) for v, p in part]
            yield from encode_rows(self.encoders, rows)

    def question_batches(self, texts: list[list[str]]) -> Iterator[tuple[int, list]]:
        return ((b, question_stage.encode_batch(self.encoders.clip, t)) for b, t in enumerate(texts))

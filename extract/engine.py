"""Extraction engines (DESIGN.md §3 "Parallelism"): who decodes and encodes a run's videos and questions.

`run_extract` (pipeline.py) plans the work, takes an engine from `choose_mode` and writes what it returns:

    facts()                  what every shard records: the encoders' signature, random flags, feature sets
    rows(jobs, decode)       one row per video job (todo.VideoJob): its features, or the error that stopped it
    question_batches(specs)  (batch number, features) for each fixed batch of questions, in any order

`InProcessEngine` (here) encodes in this process, without Ray; `RayEngine` (ray_engine.py) on a local Ray
instance or a cluster. Both decode and encode with the functions below, so they write the same arrays. Each
video is decoded once for all its packs, into the views their encoders take (decode/views.py), and each
encoder runs once per batch of videos. A GPU decoder (``--decoder pyav-cuda``) decodes where its videos are
encoded: the frames never leave the GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar, Protocol

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig
from avaf.extract.decode.backends import GPU_BACKENDS
from avaf.extract.decode.sampling import DecodedVideo
from avaf.extract.decode.worker import decode_row
from avaf.extract.encoders.stage import Encoders, encode_videos, load_encoders
from avaf.extract.todo import VideoJob

log = logging.getLogger(__name__)


class JobLost(Exception):
    """The Ray job stopped before every video came back (a node lost for good, no progress, a Ray error)."""


class Engine(Protocol):
    """Decodes and encodes a run's videos and questions; started by its constructor, `Engine(cfg)`."""

    in_process: ClassVar[bool]  # what the file's config records as `runtime.in_process`
    views: dict  # {pack: [[size, resize], ...]}: what decoding makes of each frame, known before loading

    def facts(self) -> dict:
        """{"signature", "random_weights", "feature_sets", "views"} of the encoders that encode
        (`encoder_facts`)."""
        ...

    def rows(self, jobs: list[VideoJob], decode: dict) -> Iterator[dict]:
        """{"video_id", "path", "features" (None on failure), "error", "timing"} per job, in any order; a row
        may come twice (a retried task) or never (`JobLost` ends the iteration)."""
        ...

    def question_batches(self, specs: list[dict]) -> Iterator[tuple[int, list]]:
        """(b, per question {set: {array: value}}) of specs[b] for every batch b, in any order
        (`questions.batches`, `questions.write`)."""
        ...

    def watch_head(self, lost: Callable[[float], None]) -> AbstractContextManager:
        """While in the context, `lost(seconds)` is called if the cluster's head stops answering
        (`ray_session.HeadWatch`); nothing to watch in process."""
        ...


def encoder_facts(encoders: Encoders) -> dict:
    """What a run records of its encoders: the signature, the random-weight flags, the feature sets they
    write (with their encoders and preprocessing), the views of the frame they take."""
    return {
        "signature": encoders.signature(),
        "random_weights": encoders.random_weights,
        "feature_sets": encoders.feature_sets(),
        "views": encoders.pack_views(),
    }


def job_rows(jobs: list[VideoJob]) -> list[dict]:
    """The rows a decode starts from: {"video_id", "path", "packs": comma list}."""
    return [{"video_id": j.video_id, "path": j.path, "packs": ",".join(j.packs)} for j in jobs]


def decodes_on_gpu(backend: str) -> bool:
    """Whether videos are decoded where they are encoded, on the encoders' GPU, their frames never leaving it
    (a GPU decoder asked for)."""
    return backend in GPU_BACKENDS


def decode_rows_here(rows: list[dict], cfg_decode: dict) -> list[dict]:
    """A GPU decoder's videos, decoded by the process that encodes them, all at once on threads, their frames
    left on the GPU for the encoders (how fast: docs/cluster.md, "How the work is laid out")."""
    with ThreadPoolExecutor(max(1, len(rows))) as pool:
        return list(
            pool.map(lambda r: decode_row(r["video_id"], r["path"], cfg_decode, False, r["packs"]), rows)
        )


def encode_rows(encoders: Encoders, rows: list[dict]) -> list[dict]:
    """Encode decoded videos together, those of the same packs in one group; rows that failed to decode pass
    their error on. Each row's "timing": its decode's seconds and its share (by seconds of video) of each
    encoder's time on its group; `cpu_` keys: CPU-seconds, of its decode's phases and of the encoders.

    If a shared group fails (e.g. out of memory), each video is retried alone so one bad video is
    recorded with its error and the others still get features.
    """
    # a failed decode's None may reach here as NaN: Ray Data turns a batch column of only None into floats
    ok = [r for r in rows if isinstance(r["decoded"], DecodedVideo)]
    feats, errors, timing = {}, {}, {}
    groups = [[r for r in ok if r["packs"] == p] for p in dict.fromkeys(r["packs"] for r in ok)]
    for group in groups:  # grows while iterating: a failed shared group is queued again video by video
        before = dict(encoders.timings)
        try:
            packs = tuple(group[0]["packs"].split(","))
            done = encode_videos(encoders, [(r["video_id"], r["path"], r["decoded"]) for r in group], packs)
            feats.update({r["video_id"]: f for r, f in zip(group, done, strict=True)})
        except Exception as e:  # recorded per video, never fatal
            if len(group) > 1:
                groups += [[r] for r in group]
                continue
            log.exception("encoding failed for %s", group[0]["path"])
            errors[group[0]["video_id"]] = f"encoding failed: {type(e).__name__}: {e}"
        timing.update(_shares(group, before, encoders.timings))
    return [
        {
            "video_id": r["video_id"],
            "path": r["path"],
            "features": feats.get(r["video_id"]),
            "error": r["error"] or errors.get(r["video_id"], ""),
            "timing": {
                "decode": float(r.get("decode_s", 0.0)),
                **_decode_cpu(r),
                **timing.get(r["video_id"], {}),
            },
        }
        for r in rows
    ]


def _decode_cpu(row: dict) -> dict[str, float]:
    """The CPU-seconds of a row's decode by phase (`DecodedVideo.cpu`), as `cpu_` + phase."""
    decoded = row["decoded"]
    return {f"cpu_{k}": float(v) for k, v in decoded.cpu.items()} if isinstance(decoded, DecodedVideo) else {}


def _shares(group: list[dict], before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Each video's share of the seconds every encoder spent on its group, by seconds of video."""
    seconds = [max(1, r["decoded"].num_seconds) for r in group]
    spent = {k: v - before.get(k, 0.0) for k, v in after.items() if k != "videos"}
    return {
        r["video_id"]: {k: v * t / sum(seconds) for k, v in spent.items() if v}
        for r, t in zip(group, seconds, strict=True)
    }


class InProcessEngine:
    """This process loads the encoders (a missing weight file fails here, before any work) and encodes
    `videos_per_call` videos at a time; each video is decoded in an isolated child, or on a thread here for
    a GPU decoder."""

    in_process = True

    def __init__(self, cfg: ExtractConfig, prompt_table: dict | None = None):
        self.cfg = cfg
        self.encoders = load_encoders(cfg, prompt_table=prompt_table)
        self.views = self.encoders.pack_views()

    def facts(self) -> dict:
        return encoder_facts(self.encoders)

    def rows(self, jobs: list[VideoJob], decode: dict) -> Iterator[dict]:
        step = self.cfg.runtime.videos_per_call
        for a in range(0, len(jobs), step):
            part = job_rows(jobs[a : a + step])
            if decodes_on_gpu(decode["backend"]):
                rows = decode_rows_here(part, decode)
            else:
                rows = [decode_row(r["video_id"], r["path"], decode, packs=r["packs"]) for r in part]
            yield from encode_rows(self.encoders, rows)

    def question_batches(self, specs: list[dict]) -> Iterator[tuple[int, list]]:
        return ((b, question_stage.encode_batch(self.encoders, spec)) for b, spec in enumerate(specs))

    def watch_head(self, lost: Callable[[float], None]) -> AbstractContextManager:
        return nullcontext()

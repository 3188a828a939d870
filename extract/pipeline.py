"""The extraction pipeline (DESIGN.md §3): videos -> decode (CPU) -> encode (GPU/CPU) -> shards -> feats.h5.

The only module that imports Ray. On Ray Data: a manifest of the videos still to do, a CPU decode stage
(each decode isolated in a child process with a timeout), an encoder actor pool (one actor per GPU), and
the driver as the single shard writer. `in_process=True` runs the same functions without Ray, for
debugging; both give identical arrays.

    from avaf.extract.config import ExtractConfig
    from avaf.extract.pipeline import run_extract
    summary = run_extract(ExtractConfig(out="feats.h5", input=InputConfig(videos="videos/")))

Resumable: videos already in a complete shard are skipped, failed and missing ones are (re)tried, and a
killed job loses at most the shard in flight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig
from avaf.extract.decode.backends import DecodeError, check_backend, find_media, video_id
from avaf.extract.decode.worker import decode_isolated
from avaf.extract.encoders.stage import Encoders, encode_videos, load_encoders
from avaf.shared.avqa.annotations import load_questions
from avaf.shared.config import to_dict
from avaf.shared.files import TMP_MARK
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

log = logging.getLogger(__name__)

DECODE_MEMORY = 1 << 30  # bytes a decode task may use (its worker measured ~550 MB on a 224² clip)


@dataclass
class ExtractSummary:
    """What one run did; `failed` maps video id to the error."""

    out: str
    written: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    questions: int = 0
    questions_without_video: int = 0
    random_weights: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def run_extract(cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Extract every video not yet done and every question given, then rebuild `cfg.out`."""
    start = time.perf_counter()
    if cfg.input.videos:
        check_backend(cfg.decode.backend)  # e.g. --decoder decord without decord: one line, before any work
    out = Path(cfg.out)
    folder = shard_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    questions = load_questions(cfg.input.annotations, cfg.input.split)  # bad files fail before hours of work
    encoders = load_encoders(cfg)
    summary = ExtractSummary(out=str(out), random_weights=encoders.random_weights)
    meta = {
        "config": to_dict(cfg),
        "signature": encoders.signature(),
        "random_weights": encoders.random_weights,
    }
    if cfg.input.videos:
        todo, summary.skipped = _plan_videos(cfg, folder)
        dec = to_dict(cfg.decode) | {"image_size": encoders.image_size}
        rows = (
            _run_in_process(cfg, dec, encoders, todo)
            if cfg.runtime.in_process
            else _run_on_ray(cfg, dec, todo)
        )
        _write_shards(rows, folder, meta, cfg.runtime.shard_videos, summary, len(todo), progress)
    if questions:
        summary.questions = question_stage.write(
            questions, encoders, folder, meta, cfg.runtime.batch_size, progress
        )
    shards = complete_shards(folder)
    if shards:
        build_store(shards, out)
        with FeatureStore(out) as fs:
            known = set(fs.video_ids)
            summary.questions_without_video = int(sum(v not in known for v in fs.questions()["video_id"]))
    summary.seconds = time.perf_counter() - start
    return summary


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files of killed writers: never complete, never read, only taking space."""
    for p in folder.iterdir():
        if TMP_MARK in p.name:
            log.info("removing %s, left by a writer that was killed", p)
            p.unlink(missing_ok=True)


def _plan_videos(cfg: ExtractConfig, folder: Path) -> tuple[list[tuple[str, str]], int]:
    """(video_id, path) still to do, and how many are skipped as already done."""
    media = find_media(cfg.input.videos)
    if cfg.input.limit is not None:
        media = media[: cfg.input.limit]
    done: set[str] = set()
    for p in complete_shards(folder):
        with FeatureStore(p) as s:
            done.update(s.video_ids)
    todo = [(video_id(p), str(p)) for p in media if video_id(p) not in done]
    return todo, len(media) - len(todo)


def _decode_row(vid: str, path: str, cfg_decode: dict) -> dict:
    """Decode one video; a failure becomes an error string on the row, never an exception."""
    try:
        decoded = decode_isolated(
            path, cfg_decode["timeout_s"], backend=cfg_decode["backend"], image_size=cfg_decode["image_size"]
        )
        return {"video_id": vid, "path": path, "decoded": decoded, "error": ""}
    except DecodeError as e:
        return {"video_id": vid, "path": path, "decoded": None, "error": str(e)}
    except Exception as e:  # a decoder bug must cost one video, not the job: record it with its type
        log.exception("unexpected error decoding %s", path)
        return {"video_id": vid, "path": path, "decoded": None, "error": f"{type(e).__name__}: {e}"}


def _encode_rows(encoders: Encoders, rows: list[dict]) -> list[dict]:
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


def _run_in_process(
    cfg: ExtractConfig, dec: dict, encoders: Encoders, todo: list[tuple[str, str]]
) -> Iterator[dict]:
    step = cfg.runtime.videos_per_call
    for a in range(0, len(todo), step):
        yield from _encode_rows(encoders, [_decode_row(v, p, dec) for v, p in todo[a : a + step]])


class _EncoderActor:
    """One per GPU (or per `encoders` on CPU): loads the frozen encoders once, encodes batches of videos."""

    def __init__(self, cfg: ExtractConfig):
        import torch

        # Ray pins a 1-CPU worker to one thread; an encoder on a CPU node wants them all.
        if not torch.cuda.is_available():
            torch.set_num_threads(cfg.runtime.encoder_threads or os.cpu_count() or 1)
        self.encoders = load_encoders(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        out = _encode_rows(self.encoders, rows)
        return {k: _objects([o[k] for o in out]) for k in ("video_id", "path", "features", "error")}


def _objects(values: list) -> np.ndarray:
    """A 1-D object array (np.array would try to stack arrays inside the objects)."""
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


def _actor_pool(size: int) -> dict:
    """Ray Data's actor-pool argument: `concurrency=` up to 2.50, `compute=ActorPoolStrategy` from 2.51.

    The pipeline test passed on Ray 2.40.0, 2.50.0 and 2.60.0; pyproject.toml admits >= 2.40, < 3.
    """
    import ray
    from ray.data import ActorPoolStrategy

    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    return {"concurrency": size} if (major, minor) < (2, 51) else {"compute": ActorPoolStrategy(size=size)}


def _run_on_ray(cfg: ExtractConfig, dec: dict, todo: list[tuple[str, str]]) -> Iterator[dict]:
    import ray

    if not todo:
        return iter(())
    _init_ray(cfg.runtime.address)
    rt = cfg.runtime
    gpus = rt.num_gpus if rt.num_gpus >= 0 else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
    ds = ray.data.from_items([{"video_id": v, "path": p} for v, p in todo], override_num_blocks=len(todo))
    # The memory reservation is a scheduling hint for clusters, and it keeps Ray from fusing the decode
    # tasks into the encoder actor (fused, every decode would run serially inside that one actor).
    ds = ds.map(lambda r: _decode_row(r["video_id"], r["path"], dec), num_cpus=1, memory=DECODE_MEMORY)
    ds = ds.map_batches(
        _EncoderActor,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=rt.videos_per_call,
        batch_format="numpy",
        num_gpus=gpus,
        num_cpus=rt.num_cpus,
        **_actor_pool(rt.encoders),
    )
    return ds.iter_rows()


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # the embedded default: a local instance on this machine
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _write_shards(
    rows, folder: Path, meta: dict, per_shard: int, summary: ExtractSummary, total: int, progress: bool
) -> None:
    """The single writer: rows -> shards of `per_shard` videos, each committed atomically."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="video", disable=not progress, dynamic_ncols=True)
    writer, n = None, 0
    for row in rows:
        if writer is None:
            writer = ShardWriter(
                new_shard_path(folder), meta["config"], meta["signature"], meta["random_weights"]
            )
        if row["features"] is None:
            writer.add_failure(row["video_id"], row["path"], row["error"])
            summary.failed[row["video_id"]] = row["error"]
        else:
            writer.add_video(row["features"])
            summary.written += 1
        n += 1
        bar.update(1)
        bar.set_postfix(failed=len(summary.failed))
        if n % per_shard == 0:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
    bar.close()

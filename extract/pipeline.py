"""The extraction pipeline (DESIGN.md §3): videos -> decode (CPU) -> encode (GPU/CPU) -> shards -> feats.h5.

The module that runs Ray (its decode tasks are `decode.worker.decode_on_node`, so decode workers import
PyAV, not torch). On Ray Data: a manifest of the videos still to do, a CPU decode stage
(each decode isolated in a child process with a timeout), an encoder actor pool (one actor per GPU), and
the driver as the single shard writer. `in_process=True` runs the same functions without Ray; both give
identical arrays. Unset, a local job runs in process below `local_ray_min_videos` videos (`choose_mode`).
A GPU decoder (``--decoder pyav-cuda``) has no decode stage: the encoder actor (or this process) decodes
its batch of videos itself, on threads, so the frames never leave the GPU.

    from avaf.extract.config import ExtractConfig, InputConfig
    from avaf.extract.pipeline import run_extract
    summary = run_extract(ExtractConfig(out="feats.h5", input=InputConfig(videos="videos/")))

Resumable: videos already in a complete shard are skipped, failed and missing ones are (re)tried, and a
killed job loses at most the shard in flight. On a cluster (docs/cluster.md) Ray retries the work of a lost
node; the driver writes each video once per run and records any video that never comes back as failed
("lost: ..."), so the next run re-runs it and none goes missing in silence.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig, RuntimeConfig
from avaf.extract.decode.backends import (
    GPU_BACKENDS,
    check_backend,
    find_media,
    video_id,
)
from avaf.extract.decode.worker import decode_on_node, decode_row, node_id
from avaf.extract.encoders.stage import Encoders, encode_videos, find_weights, frame_size, load_encoders
from avaf.shared.avqa.annotations import load_questions
from avaf.shared.config import to_dict
from avaf.shared.files import TMP_MARK
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

log = logging.getLogger(__name__)

# bytes a decode task may use: its worker (180 MB peak on a 60 s 360p clip) and its child
DECODE_MEMORY = 1 << 30


class JobLost(Exception):
    """The Ray job stopped before every video came back (a node lost for good, no progress, a Ray error)."""


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
    questions_lost: str = ""  # why the questions of this run were not written (the Ray job stopped)
    question_seconds: float = 0.0  # encoding and writing the questions (on Ray: the actors' start included)
    # Ray runs only: where each video went ({"decode_node", "encode_node": Ray node id, "device": torch's})
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    duplicates: int = 0  # rows Ray handed back twice (a retried task); each video is written once
    mode: str = ""  # where the work ran and why (`choose_mode`); empty when there was nothing to do

    @property
    def ok(self) -> bool:
        return not self.failed and not self.questions_lost


def run_extract(
    cfg: ExtractConfig, progress: bool = True, echo: Callable[[str], None] | None = None
) -> ExtractSummary:
    """Extract every video not yet done and every question given, then rebuild `cfg.out`; `echo` is told
    the mode chosen (`choose_mode`) before the work starts."""
    start = time.perf_counter()
    if cfg.input.videos:
        check_backend(cfg.decode.backend)  # e.g. --decoder decord without decord: one line, before any work
    out = Path(cfg.out)
    folder = shard_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    questions = load_questions(cfg.input.annotations, cfg.input.split)  # bad files fail before hours of work
    todo, skipped = _plan_videos(cfg, folder) if cfg.input.videos else ([], 0)
    pending = question_stage.pending(questions, folder) if questions else []
    summary = ExtractSummary(out=str(out), skipped=skipped)
    if todo or pending:
        # In process, this process encodes. On Ray the encoder actors do, and this driver loads no weights:
        # what the shards record comes from a probe task that loads them where an actor would, started
        # first so that it loads while the job starts; the frames' size is read from the model's config.
        in_process, summary.mode = choose_mode(cfg.runtime, len(todo))
        log.info("mode: %s", summary.mode)
        if echo is not None:
            echo(f"mode: {summary.mode}")
        # the file's config says which mode ran, not the flag left unset
        ran = replace(cfg, runtime=replace(cfg.runtime, in_process=in_process))
        encoders = load_encoders(cfg) if in_process else None
        if encoders is None and not _ray_address(cfg.runtime.address):  # the actors will look on this machine
            find_weights(cfg)  # a missing file stops the run here, in one line, before Ray starts
        facts = functools.partial(_facts, encoders) if encoders is not None else _probe_on_ray(cfg)
        size = encoders.image_size if encoders is not None else frame_size(cfg)

        def meta() -> dict:
            f = facts()
            if f["image_size"] != size:
                raise RuntimeError(
                    f"{cfg.clip.model} takes {f['image_size']} px frames, its config says {size}"
                )
            return {k: f[k] for k in ("signature", "random_weights")} | {"config": to_dict(ran)}

        if todo:
            dec = to_dict(cfg.decode) | {"image_size": size}
            rows = _run_in_process(cfg, dec, encoders, todo) if encoders else _run_on_ray(cfg, dec, todo)
            _write_shards(rows, todo, _Shards(folder, meta, cfg.runtime.shard_videos), summary, progress)
        if pending:
            texts = question_stage.batches(pending, cfg.runtime.batch_size)
            encoded = (
                ((b, question_stage.encode_batch(encoders.clip, t)) for b, t in enumerate(texts))
                if encoders
                else _encode_text_on_ray(cfg, texts, facts()["signature"])
            )
            begin = time.perf_counter()
            try:
                summary.questions = question_stage.write(
                    pending, encoded, folder, meta(), cfg.runtime.batch_size, progress
                )
            except JobLost as e:  # the videos' shards stand; the questions are encoded by the next run
                summary.questions_lost = f"lost: {e}"
            summary.question_seconds = time.perf_counter() - begin
        summary.random_weights = facts()["random_weights"]
    shards = complete_shards(folder)
    if shards:
        build_store(shards, out)
        with FeatureStore(out) as fs:
            known = set(fs.video_ids)
            summary.questions_without_video = int(sum(v not in known for v in fs.questions()["video_id"]))
    summary.seconds = time.perf_counter() - start
    return summary


def choose_mode(rt: RuntimeConfig, videos: int) -> tuple[bool, str]:
    """(in process?, the reason, said to the user) for a job of `videos` videos to do.

    `rt.in_process` decides when set. Unset, a cluster address means Ray; on this machine a job below
    `rt.local_ray_min_videos` videos with one encoder runs in process. Measured on 2 cores with clips of
    60 s (docs/benchmarks.md): local Ray writes its first video 18-25 s after this process (its worker
    processes import torch and load the weights anew), then each 0.1-0.9 s sooner; on 100 videos the two
    took 599 and 593 s.
    """
    address = _ray_address(rt.address)
    ray = f"on the Ray cluster at {address}" if address else "on a local Ray instance"
    if rt.in_process is not None:
        return (
            rt.in_process,
            "in this process (--in-process)" if rt.in_process else f"{ray} (--no-in-process)",
        )
    if address:
        return False, ray
    if rt.encoders > 1:
        return False, f"{ray} ({rt.encoders} encoder actors asked for)"
    if videos < rt.local_ray_min_videos:
        return True, (
            f"in this process, without Ray: {videos} videos to do, fewer than --local-ray-min-videos "
            f"{rt.local_ray_min_videos}, where local Ray's start-up costs more than it saves "
            "(--no-in-process: Ray all the same)"
        )
    return False, f"{ray}: {videos} videos to do (--in-process: without Ray)"


def _facts(encoders: Encoders) -> dict:
    """What a run records of its encoders: the signature, the random-weight flags, the frame size."""
    return {
        "signature": encoders.signature(),
        "random_weights": encoders.random_weights,
        "image_size": encoders.image_size,
    }


def _probe(cfg: ExtractConfig) -> dict:
    return _facts(load_encoders(cfg))


def _gpus(cfg: ExtractConfig) -> float:
    import ray

    rt = cfg.runtime
    return rt.num_gpus if rt.num_gpus >= 0 else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)


def _probe_on_ray(cfg: ExtractConfig) -> Callable[[], dict]:
    """Starts a task placed like an encoder actor that loads the weights there, never in the driver, and
    returns the wait for its `_facts` (a missing weight file raises there, in one line).

    Started before the job, the probe loads while the job's actors start: on 2 cores, probing first and
    then starting the job put 5.7 s more before the first video (on a GPU the actor waits for the probe's
    GPU, as before)."""
    import ray

    _init_ray(cfg.runtime.address)
    task = ray.remote(_probe).options(num_gpus=_gpus(cfg), num_cpus=cfg.runtime.num_cpus, max_retries=0)
    ref = task.remote(cfg)

    @functools.cache
    def facts() -> dict:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else e) from None

    return facts


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


def _decode_rows_here(rows: list[dict], cfg_decode: dict) -> list[dict]:
    """A GPU decoder's videos, decoded by the process that encodes them, all at once on threads, their frames
    left on the GPU for the encoders. (On an H200, NVDEC through PyAV gave 1.6-2.1 videos/s however many
    decoded at once: something serialises them; docs/extraction.md.)"""
    with ThreadPoolExecutor(max(1, len(rows))) as pool:
        return list(pool.map(lambda r: decode_row(r["video_id"], r["path"], cfg_decode, False), rows))


def decodes_on_gpu(backend: str) -> bool:
    """Whether videos are decoded where they are encoded, on the encoders' GPU, their frames never leaving it
    (a GPU decoder asked for)."""
    return backend in GPU_BACKENDS


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
        part = todo[a : a + step]
        if decodes_on_gpu(dec["backend"]):
            rows = _decode_rows_here([{"video_id": v, "path": p} for v, p in part], dec)
        else:
            rows = [decode_row(v, p, dec) for v, p in part]
        yield from _encode_rows(encoders, rows)


class _EncoderActor:
    """One per GPU (or per `encoders` on CPU): loads the frozen encoders once, encodes batches of videos."""

    def __init__(self, cfg: ExtractConfig, decode: dict | None = None):
        import torch

        # Ray pins a 1-CPU worker to one thread; an encoder on a CPU node wants them all.
        if not torch.cuda.is_available():
            torch.set_num_threads(cfg.runtime.encoder_threads or os.cpu_count() or 1)
        self.encoders = load_encoders(cfg)
        self.where = {"encode_node": node_id(), "device": str(self.encoders.clip.device)}
        self.signature = json.dumps(self.encoders.signature(), sort_keys=True)  # the driver checks it per row
        self.decode = decode  # a GPU decoder's settings: this actor decodes its videos itself

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        if self.decode is not None:
            rows = _decode_rows_here(rows, self.decode)
            batch = batch | {"decode_node": _objects([self.where["encode_node"]] * len(rows))}
        out = _encode_rows(self.encoders, rows)
        cols = {k: _objects([o[k] for o in out]) for k in ("video_id", "path", "features", "error")}
        return (
            cols
            | {"decode_node": batch["decode_node"]}
            | {k: _objects([v] * len(out)) for k, v in self.where.items()}
            | {"signature": _objects([self.signature] * len(out))}
        )


class _TextActor(_EncoderActor):
    """An encoder actor for questions: each row is one batch of texts (`questions.batches`), encoded whole."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [question_stage.encode_batch(self.encoders.clip, list(texts)) for texts in batch["texts"]]
        return {
            "batch": batch["batch"],
            "features": _objects(out),
            "signature": _objects([self.signature] * len(out)),
        }


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
    """The rows of a Ray Data job. The work of a lost node is redone by Ray Data's defaults (checked on
    2.60, tests/test_cluster.py): tasks retried without limit, encoder actors restarted without limit on a
    node with their resources, their calls retried, lost blocks rebuilt from their lineage. Passing those as
    remote args is deprecated from 2.60. A job that makes no progress for `RAY_DATA_EXECUTION_NO_PROGRESS_
    TIMEOUT_S` (default 30 min), e.g. when no node left can hold an encoder, is stopped by Ray Data.
    """
    import ray

    if not todo:
        return iter(())
    _init_ray(cfg.runtime.address)
    rt = cfg.runtime
    gpus = _gpus(cfg)
    ds = ray.data.from_items([{"video_id": v, "path": p} for v, p in todo], override_num_blocks=len(todo))
    here = decodes_on_gpu(dec["backend"])
    if here and not gpus:
        log.warning(
            "--decoder %s: the encoders have no GPU here; decoding with PyAV on the CPU", dec["backend"]
        )
        dec, here = dec | {"backend": "pyav"}, False
    if not here:
        # Each decode task holds one CPU and decodes its own video: FFmpeg's threads ("auto", 0) would only
        # oversubscribe the cores, so auto is one thread per task. The memory reservation is a scheduling
        # hint for clusters, and it keeps Ray from fusing the decode tasks into the encoder actor (fused,
        # every decode would run serially inside that one actor).
        task = functools.partial(decode_on_node, cfg_decode=dec | {"threads": dec["threads"] or 1})
        ds = ds.map(task, num_cpus=1, memory=DECODE_MEMORY)
    ds = ds.map_batches(
        _EncoderActor,
        fn_constructor_kwargs={"cfg": cfg, "decode": dec if here else None},
        batch_size=rt.videos_per_call,
        batch_format="numpy",
        num_gpus=gpus,
        num_cpus=rt.num_cpus,
        **_actor_pool(rt.encoders),
    )
    return _stream(ds)


def _encode_text_on_ray(
    cfg: ExtractConfig, texts: list[list[str]], signature: dict
) -> Iterator[tuple[int, list]]:
    """(batch number, features) of every batch of texts, encoded by `runtime.encoders` text actors."""
    import ray

    rt = cfg.runtime
    items = [{"batch": b, "texts": t} for b, t in enumerate(texts)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * max(1, rt.encoders))))
    ds = ds.map_batches(
        _TextActor,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=1,
        batch_format="numpy",
        num_gpus=_gpus(cfg),
        num_cpus=rt.num_cpus,
        **_actor_pool(rt.encoders),
    )
    expected = json.dumps(signature, sort_keys=True)
    for row in _stream(ds):
        if row["signature"] != expected:
            raise JobLost(
                f"an encoder actor loaded other weights or settings than the probe: {row['signature']}"
            )
        yield int(row["batch"]), list(row["features"])


def _stream(ds) -> Iterator[dict]:
    """The rows of `ds`; a failure of the job itself becomes JobLost, so the driver keeps what it has."""
    try:
        yield from ds.iter_rows()
    except Exception as e:  # lost nodes, actors or objects beyond retry, Ray Data's no-progress timeout
        log.exception("the Ray job stopped")
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise JobLost(f"{type(e).__name__}: {first[:300]}") from e


def _ray_address(address: str | None) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS); None: a local instance on this machine."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = _ray_address(address)
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # the embedded default: a new local instance, never a cluster that happens to run on this machine
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # Ray Data's plan per job: only with -vv
        logging.getLogger("ray.data").setLevel(logging.WARNING)


class _Shards:
    """Rows -> shards of `per_shard` videos, each committed atomically; `close` commits the one in flight.
    `meta` (what every shard records) is asked for once, at the first row."""

    def __init__(self, folder: Path, meta: Callable[[], dict], per_shard: int):
        self.folder, self.meta, self.per_shard = folder, functools.cache(meta), per_shard
        self.writer: ShardWriter | None = None
        self.n = 0

    def add(self, row: dict, summary: ExtractSummary) -> None:
        if self.writer is None:
            m = self.meta()
            path = new_shard_path(self.folder)
            self.writer = ShardWriter(path, m["config"], m["signature"], m["random_weights"])
        if row["features"] is None:
            self.writer.add_failure(row["video_id"], row["path"], row["error"])
            summary.failed[row["video_id"]] = row["error"]
        else:
            self.writer.add_video(row["features"])
            summary.written += 1
        self.n += 1
        if self.n % self.per_shard == 0:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_shards(
    rows: Iterator[dict],
    todo: list[tuple[str, str]],
    shards: _Shards,
    summary: ExtractSummary,
    progress: bool,
) -> None:
    """The single writer. Each video is written once, however often Ray hands it back (a retried task);
    a video that never comes back (its node lost for good, the job stopped) is recorded as failed with an
    error starting "lost:", so no video goes missing in silence and the next run re-runs it.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    lost = "lost: the Ray job ended without returning this video"
    seen: set[str] = set()
    try:
        for row in rows:
            vid = row["video_id"]
            expected = json.dumps(shards.meta()["signature"], sort_keys=True)
            if row.get("signature", expected) != expected and row["features"] is not None:
                row = row | {
                    "features": None,
                    "error": f"encoded with other weights or settings than the job's: {row['signature']}",
                }
            if vid in seen:
                log.warning("%s came back twice (a retried task?): written once", vid)
                summary.duplicates += 1
                continue
            seen.add(vid)
            shards.add(row, summary)
            if "decode_node" in row:
                summary.nodes[vid] = {k: str(row[k]) for k in ("decode_node", "encode_node", "device")}
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed))
    except JobLost as e:
        lost = f"lost: {e}"
    for vid, path in todo:
        if vid not in seen:
            shards.add({"video_id": vid, "path": path, "features": None, "error": lost}, summary)
    shards.close()
    bar.close()

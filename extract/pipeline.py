"""The extraction pipeline (DESIGN.md §3): videos -> decode (CPU) -> encode (GPU/CPU) -> shards -> feats.h5.

`run_extract` plans the work (todo.py: videos and questions not yet done for every pack of `--features`), takes
an engine from `choose_mode` (engine.py: in this process; ray_engine.py: on Ray), writes what the engine
returns into shards as their single writer, and merges the complete shards into `cfg.out`. Both engines give
identical arrays. A pack the store lacks is added to every video and question: decoded again once, encoded
for that pack only, the stored arrays copied (todo.py).

    from avaf.extract.config import ExtractConfig, InputConfig
    from avaf.extract.pipeline import run_extract
    summary = run_extract(ExtractConfig(out="feats.h5", input=InputConfig(videos="videos/")))

Resumable: videos already in a complete shard are skipped, failed and missing ones are (re)tried, and a
killed job loses at most the shard in flight. Each video is written once per run, and one that never comes
back (docs/cluster.md, "When a node dies") is recorded as failed ("lost: ..."), so the next run re-runs it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from avaf.extract import questions as question_stage
from avaf.extract import todo
from avaf.extract.config import ExtractConfig, RuntimeConfig
from avaf.extract.decode.backends import check_backend, find_media, video_id
from avaf.extract.engine import Engine, InProcessEngine, JobLost
from avaf.extract.packs import parse_features
from avaf.extract.preflight import Inputs, read_inputs
from avaf.extract.ray_engine import RayEngine
from avaf.shared.config import to_dict
from avaf.shared.files import TMP_MARK
from avaf.shared.ray_session import end_with_line, ray_address
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    """What one run did; `failed` maps video id to the error."""

    out: str
    written: int = 0
    skipped: int = 0
    extended: int = 0  # videos already stored that gained the packs they lacked
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
    packs: tuple[str, ...] = ()
    prompts_missing: int = 0  # questions whose template the --qa-prompts table lacks (no prompt value)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode and each encoder, all videos
    # CPU-seconds by phase, all videos: decode (the decoding child; rgb and resize, part of it), receive
    # (taking its frames from the child), each encoder, write (the shards); merge (feats.h5, once a run)
    cpu: dict[str, float] = field(default_factory=dict)
    unmerged: str = ""  # why feats.h5 was not rebuilt (shards still lacking a pack)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.questions_lost and not self.unmerged


def run_extract(
    cfg: ExtractConfig,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    inputs: Inputs | None = None,
) -> ExtractSummary:
    """Extract every video and question not yet done for every pack of `cfg.features`, then rebuild
    `cfg.out`; `echo` is told the mode chosen (`choose_mode`) before the work starts. `inputs`: the questions
    and prompt table the preflight read (`check_extract`); read here when not given."""
    start = time.perf_counter()
    packs = parse_features(cfg.features)  # an unknown pack: one line, before any work
    if inputs is None:
        inputs = read_inputs(cfg)  # likewise a malformed table or annotation file
    prompts = inputs.prompts
    if cfg.input.videos:
        check_backend(cfg.decode.backend)  # e.g. --decoder decord without decord: one line, before any work
    out = Path(cfg.out)
    folder = shard_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    index = todo.index_shards(folder)
    todo.check_sets(index, packs, str(out))
    if todo.remove_outgrown(folder, todo.outgrown(index, packs)):  # left by a run killed while adding a pack
        index = todo.index_shards(folder)
    todo.check_settings(index, to_dict(cfg), folder)  # a changed --batch-size: one line, before any work
    jobs, skipped = todo.plan_videos(_media(cfg) if cfg.input.videos else [], packs, index)
    pending = todo.plan_questions(inputs.questions, packs, index, prompts is not None)
    summary = ExtractSummary(out=str(out), skipped=skipped, packs=packs)
    if jobs or pending:
        make_engine, summary.mode = choose_mode(cfg.runtime, len(jobs))
        log.info("mode: %s", summary.mode)
        if echo is not None:
            echo(f"mode: {summary.mode}")
        engine = make_engine(cfg, _prompt_info(prompts))
        with engine.watch_head(functools.partial(_head_lost, cfg, folder, summary)):
            if index.signature:  # the stored shards and this run's must belong together, before any decode
                todo.check_signature(index, engine.facts()["signature"], folder)
            meta = _shard_meta(cfg, engine)
            if jobs:
                shards = _Shards(folder, meta, cfg.runtime.shard_videos, {j.video_id: j for j in jobs})
                decode = to_dict(cfg.decode) | {"views": engine.views}
                _write_shards(engine.rows(jobs, decode), shards, summary, progress)
            if pending:
                _write_questions(
                    engine, pending, folder, meta, cfg.runtime.batch_size, prompts, summary, progress
                )
            summary.random_weights = engine.facts()["random_weights"]
    left = todo.outgrown(todo.index_shards(folder), packs)
    if left and todo.remove_outgrown(folder, left) != left:
        summary.unmerged = (
            f"{len(left)} shards still lack {','.join(packs)}: the same command adds it to the rest"
        )
    else:
        cpu = time.process_time()
        _merge(folder, out, summary)
        summary.cpu["merge"] = time.process_time() - cpu
    summary.seconds = time.perf_counter() - start
    return summary


def _media(cfg: ExtractConfig) -> list[tuple[str, str]]:
    """(video_id, path) of every video under --videos (the first --limit)."""
    media = find_media(cfg.input.videos)
    if cfg.input.limit is not None:
        media = media[: cfg.input.limit]
    return [(video_id(p), str(p)) for p in media]


def _prompt_info(prompts) -> dict | None:
    """What the tspm set records of the prompt table: its file name, sha256 and rows (None: no table)."""
    if prompts is None:
        return None
    return {"file": Path(prompts.path).name, "sha256": prompts.sha256, "templates": len(prompts)}


def choose_mode(rt: RuntimeConfig, videos: int) -> tuple[Callable[[ExtractConfig], Engine], str]:
    """(the engine, the reason said to the user) for a job of `videos` videos to do; `engine(cfg)` starts it.

    `rt.in_process` decides when set. Unset, a cluster address means Ray; on this machine a job below
    `rt.local_ray_min_videos` videos with one encoder runs in process, where local Ray's start-up costs
    more than it saves (measured: docs/benchmarks.md, "Local Ray against in-process").
    """
    address = ray_address(rt.address)
    ray = f"on the Ray cluster at {address}" if address else "on a local Ray instance"
    if rt.in_process is not None:
        if rt.in_process:
            return InProcessEngine, "in this process (--in-process)"
        return RayEngine, f"{ray} (--no-in-process)"
    if address:
        return RayEngine, ray
    if rt.encoders > 1:
        return RayEngine, f"{ray} ({rt.encoders} encoder actors asked for)"
    if videos < rt.local_ray_min_videos:
        return InProcessEngine, (
            f"in this process, without Ray: {videos} videos to do, fewer than --local-ray-min-videos "
            f"{rt.local_ray_min_videos}, where local Ray's start-up costs more than it saves "
            "(--no-in-process: Ray all the same)"
        )
    return RayEngine, f"{ray}: {videos} videos to do (--in-process: without Ray)"


def _shard_meta(cfg: ExtractConfig, engine: Engine) -> Callable[[], dict]:
    """What every shard records, asked for once, when the first shard opens: the encoders' signature,
    random-weight flags and feature sets (from the engine) and the config, which records the mode that ran,
    not the flag."""
    ran = replace(cfg, runtime=replace(cfg.runtime, in_process=engine.in_process))

    @functools.cache
    def meta() -> dict:
        facts = engine.facts()
        if facts["views"] != engine.views:
            raise RuntimeError(
                f"the encoders take the views {facts['views']}, their configs say {engine.views}"
            )
        return {k: facts[k] for k in ("signature", "random_weights", "feature_sets")} | {
            "config": to_dict(ran)
        }

    return meta


def _write_questions(
    engine: Engine,
    pending: list[todo.QuestionJob],
    folder: Path,
    meta: Callable[[], dict],
    batch_size: int,
    prompts,
    summary: ExtractSummary,
    progress: bool,
) -> None:
    """One shard of the questions not yet encoded (for every pack, or for the packs they lack), in fixed
    batches whoever encodes them; questions whose template the prompt table lacks are counted."""
    specs = question_stage.batches(pending, batch_size, prompts)
    summary.prompts_missing = sum(p is None for s in specs for p in s["prompts"] or ())
    if summary.prompts_missing:
        log.warning(
            "%d questions have a template the QA-prompt table lacks: no prompt value", summary.prompts_missing
        )
    encoded = engine.question_batches(specs)
    begin = time.perf_counter()
    try:
        sizes = [len(s["texts"]) for s in specs]
        summary.questions = question_stage.write(pending, sizes, encoded, folder, meta(), progress)
    except JobLost as e:  # the videos' shards stand; the questions are encoded by the next run
        summary.questions_lost = f"lost: {e}"
    summary.question_seconds = time.perf_counter() - begin


def _head_lost(cfg: ExtractConfig, folder: Path, summary: ExtractSummary, seconds: float) -> None:
    """The cluster's head stopped answering (`HeadWatch`): one line, and the command ends now (exit 1). The
    complete shards stay; the shard in flight is lost, as when a job is killed. Ray cannot go on without
    its head, so the same command against a new head resumes from the shards (docs/reliability.md)."""
    where = ray_address(cfg.runtime.address) or "the local Ray instance"
    end_with_line(
        f"avaf-extract: lost the Ray cluster's head ({where}): no answer for {seconds:.0f} s. Kept: "
        f"{len(complete_shards(folder))} complete shards in {folder} ({summary.written} videos written by "
        f"this run; {cfg.out} not rebuilt). Start a new head and run the same command to resume from them",
        1,
    )


def _merge(folder: Path, out: Path, summary: ExtractSummary) -> None:
    """`out` rebuilt from the complete shards, and how many of its questions have no video in it."""
    shards = complete_shards(folder)
    if shards:
        build_store(shards, out)
        with FeatureStore(out) as fs:
            known = set(fs.video_ids)
            summary.questions_without_video = int(sum(v not in known for v in fs.questions()["video_id"]))


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary files of killed writers: never complete, never read, only taking space."""
    for p in folder.iterdir():
        if TMP_MARK in p.name:
            log.info("removing %s, left by a writer that was killed", p)
            p.unlink(missing_ok=True)


class _Shards:
    """Rows -> shards of `per_shard` videos, each committed atomically; `close` commits the one in flight.
    `meta` (what every shard records, `_shard_meta`) is first asked for at the first row. A video that keeps
    stored sets (`jobs`, todo.VideoJob.kept) gets them copied in. Each row's `cpu_` timings go to the
    summary's `cpu`, the others to its `timings`."""

    def __init__(
        self, folder: Path, meta: Callable[[], dict], per_shard: int, jobs: dict[str, todo.VideoJob]
    ):
        self.folder, self.meta, self.per_shard, self.jobs = folder, meta, per_shard, jobs
        self.writer: ShardWriter | None = None
        self.kept = todo.Kept()
        self.n = 0
        self.write_cpu = 0.0  # CPU-seconds of this process in the writer (a video's rows, the shards)

    def add(self, row: dict, summary: ExtractSummary) -> None:
        cpu = time.process_time()
        self._add(row, summary)
        self.write_cpu += time.process_time() - cpu
        for k, v in (row.get("timing") or {}).items():  # from Ray: a struct, None where a row had no key
            into, k = (summary.cpu, k[4:]) if k.startswith("cpu_") else (summary.timings, k)
            into[k] = into.get(k, 0.0) + (v or 0.0)
        self.n += 1
        if self.n % self.per_shard == 0:
            self.close()

    def _add(self, row: dict, summary: ExtractSummary) -> None:
        if self.writer is None:
            m = self.meta()
            path = new_shard_path(self.folder)
            self.writer = ShardWriter(
                path, m["config"], m["signature"], m["random_weights"], m["feature_sets"]
            )
        job, features = self.jobs.get(row["video_id"]), row["features"]
        if features is not None and job is not None and job.kept:
            features = self.kept.video(job, features)  # an error string when the timeline changed
        if features is None or isinstance(features, str):
            error = row["error"] if features is None else features
            self.writer.add_failure(row["video_id"], row["path"], error)
            summary.failed[row["video_id"]] = error
        else:
            self.writer.add_video(features)
            if job is not None and job.kept:
                summary.extended += 1
            else:
                summary.written += 1

    def close(self) -> None:
        cpu = time.process_time()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.kept.close()
        self.write_cpu += time.process_time() - cpu


def _write_shards(rows: Iterator[dict], shards: _Shards, summary: ExtractSummary, progress: bool) -> None:
    """The single writer. Each video is written once, however often Ray hands it back (a retried task);
    a video that never comes back (its node lost for good, the job stopped) is recorded as failed with an
    error starting "lost:", so no video goes missing in silence and the next run re-runs it.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(shards.jobs), unit="video", disable=not progress, dynamic_ncols=True)
    lost = "lost: the Ray job ended without returning this video"
    seen: set[str] = set()
    try:
        for row in rows:
            vid = row["video_id"]
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
    for vid, job in shards.jobs.items():
        if vid not in seen:
            shards.add({"video_id": vid, "path": job.path, "features": None, "error": lost}, summary)
    shards.close()
    summary.cpu["write"] = shards.write_cpu
    bar.close()

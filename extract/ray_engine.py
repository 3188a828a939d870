"""The Ray engine (DESIGN.md §3 "Parallelism"): a run's videos and questions as Ray Data jobs.

The only module of `extract/` that starts Ray or gives it work (`decode.worker.node_id` only asks a running
task where it is). A manifest of the videos to do; a CPU decode stage of `decode.worker.decode_on_node`
tasks (decode workers import PyAV, not torch; each decode isolated in a child with a timeout); a pool of
encoder actors, one per GPU; the driver as the single shard writer. The driver loads no weights: what the
shards record comes from a probe task placed like an actor and started with the job (docs/benchmarks.md,
"Local Ray against in-process"). A GPU decoder has no decode stage: the encoder actor decodes its batch.
Ray redoes the work of a lost node (docs/cluster.md, "When a node dies"); a job that stops raises `JobLost`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator

import numpy as np

from avaf.extract import questions as question_stage
from avaf.extract.config import ExtractConfig
from avaf.extract.decode.worker import decode_on_node, node_id
from avaf.extract.encoders.stage import find_weights, load_encoders
from avaf.extract.engine import (
    JobLost,
    decode_rows_here,
    decodes_on_gpu,
    encode_rows,
    encoder_facts,
    job_rows,
)
from avaf.extract.packs import config_views
from avaf.extract.todo import VideoJob
from avaf.shared.ray_session import HeadWatch, init_ray, quiet_console, ray_address, ray_verbose

log = logging.getLogger(__name__)

# bytes a decode task may use: its worker (180 MB peak on a 60 s 360p clip) and its child
DECODE_MEMORY = 1 << 30


class RayEngine:
    """On the Ray cluster at `runtime.address` (or RAY_ADDRESS), else a new local Ray instance.

    Started here: on this machine the weights are looked for first (loading nothing: a missing file is one
    line, before Ray starts), then Ray and the probe task, which loads them where an actor would."""

    in_process = False

    def __init__(self, cfg: ExtractConfig, prompt_table: dict | None = None):
        self.cfg = cfg
        if not ray_address(cfg.runtime.address):  # the actors will look on this machine
            find_weights(cfg)
        self.prompt_table = prompt_table
        self._facts = _start_probe(cfg, prompt_table)
        self.views = config_views(cfg)  # from the models' configs: decode tasks start while the probe loads

    def facts(self) -> dict:
        return self._facts()  # the probe's, waited for once (cached)

    def rows(self, jobs: list[VideoJob], decode: dict) -> Iterator[dict]:
        """The rows of the Ray Data job; a row encoded with other weights or settings than the probe's
        (an actor that loaded something else) is turned into a failure."""
        for row in _run_on_ray(self.cfg, decode, jobs, self.prompt_table):
            expected = json.dumps(self.facts()["signature"], sort_keys=True)
            if row["signature"] != expected and row["features"] is not None:
                row = row | {
                    "features": None,
                    "error": f"encoded with other weights or settings than the job's: {row['signature']}",
                }
            yield row

    def question_batches(self, specs: list[dict]) -> Iterator[tuple[int, list]]:
        return _encode_text_on_ray(self.cfg, specs, self.facts()["signature"], self.prompt_table)

    def watch_head(self, lost: Callable[[float], None]) -> HeadWatch:
        return HeadWatch(lost)


def _probe(cfg: ExtractConfig, prompt_table: dict | None) -> dict:
    return encoder_facts(load_encoders(cfg, prompt_table=prompt_table))


def _gpus(cfg: ExtractConfig) -> float:
    import ray

    rt = cfg.runtime
    return rt.num_gpus if rt.num_gpus >= 0 else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)


def start_ray(address: str | None) -> None:
    """Ray for an extraction (`init_ray`). In a session this call started, Ray Data draws no progress bars
    (avaf's bar counts videos) and, unless -v, prints nothing on the console: its plan, warnings and the
    tracebacks of a failed job stay in its log files, and avaf says what failed in one line."""
    if init_ray(address):
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        if not ray_verbose():
            quiet_console("ray.data")


def _start_probe(cfg: ExtractConfig, prompt_table: dict | None):
    """Starts a task placed like an encoder actor that loads the weights there, never in the driver, and
    returns the wait for its `encoder_facts` (a missing weight file raises there, in one line)."""
    import ray

    start_ray(cfg.runtime.address)
    task = ray.remote(_probe).options(num_gpus=_gpus(cfg), num_cpus=cfg.runtime.num_cpus, max_retries=0)
    ref = task.remote(cfg, prompt_table)

    @functools.cache
    def facts() -> dict:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else e) from None

    return facts


class _EncoderActor:
    """One per GPU (or per `encoders` on CPU): loads the frozen encoders once, encodes batches of videos."""

    def __init__(self, cfg: ExtractConfig, decode: dict | None = None, prompt_table: dict | None = None):
        import torch

        # Ray pins a 1-CPU worker to one thread; an encoder on a CPU node wants them all.
        if not torch.cuda.is_available():
            torch.set_num_threads(cfg.runtime.encoder_threads or os.cpu_count() or 1)
        self.encoders = load_encoders(cfg, prompt_table=prompt_table)  # every pack's: they share the device
        self.where = {"encode_node": node_id(), "device": self.encoders.device}
        self.signature = json.dumps(self.encoders.signature(), sort_keys=True)  # the driver checks it per row
        self.decode = decode  # a GPU decoder's settings: this actor decodes its videos itself

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        if self.decode is not None:
            rows = decode_rows_here(rows, self.decode)
            batch = batch | {"decode_node": _objects([self.where["encode_node"]] * len(rows))}
        out = encode_rows(self.encoders, rows)
        cols = {k: _objects([o[k] for o in out]) for k in ("video_id", "path", "features", "error", "timing")}
        return (
            cols
            | {"decode_node": batch["decode_node"]}
            | {k: _objects([v] * len(out)) for k, v in self.where.items()}
            | {"signature": _objects([self.signature] * len(out))}
        )


class _TextActor(_EncoderActor):
    """An encoder actor for questions: each row is one batch of questions (`questions.batches`, as JSON),
    encoded whole."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [question_stage.encode_batch(self.encoders, json.loads(spec)) for spec in batch["spec"]]
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


def _run_on_ray(
    cfg: ExtractConfig, dec: dict, jobs: list[VideoJob], prompt_table: dict | None
) -> Iterator[dict]:
    """The rows of a Ray Data job. The work of a lost node is redone by Ray Data's defaults (checked on
    2.60, tests/test_cluster.py): tasks retried without limit, encoder actors restarted without limit on a
    node with their resources, their calls retried, lost blocks rebuilt from their lineage. Passing those as
    remote args is deprecated from 2.60. A job that makes no progress for `RAY_DATA_EXECUTION_NO_PROGRESS_
    TIMEOUT_S` (default 30 min), e.g. when no node left can hold an encoder, is stopped by Ray Data.
    """
    import ray

    if not jobs:
        return iter(())
    start_ray(cfg.runtime.address)
    rt = cfg.runtime
    gpus = _gpus(cfg)
    ds = ray.data.from_items(job_rows(jobs), override_num_blocks=len(jobs))
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
        fn_constructor_kwargs={"cfg": cfg, "decode": dec if here else None, "prompt_table": prompt_table},
        batch_size=rt.videos_per_call,
        batch_format="numpy",
        num_gpus=gpus,
        num_cpus=rt.num_cpus,
        **_actor_pool(rt.encoders),
    )
    return _stream(ds)


def _encode_text_on_ray(
    cfg: ExtractConfig, specs: list[dict], signature: dict, prompt_table: dict | None
) -> Iterator[tuple[int, list]]:
    """(batch number, features) of every batch of questions, encoded by `runtime.encoders` text actors."""
    import ray

    rt = cfg.runtime
    items = [{"batch": b, "spec": json.dumps(s)} for b, s in enumerate(specs)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * max(1, rt.encoders))))
    ds = ds.map_batches(
        _TextActor,
        fn_constructor_kwargs={"cfg": cfg, "prompt_table": prompt_table},
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
        log.debug("the Ray job stopped", exc_info=True)  # its message goes on in the JobLost
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise JobLost(f"{type(e).__name__}: {first[:300]}") from e

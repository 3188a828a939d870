"""Runs a sweep's trials on Ray Tune (docs/sweeps.md, "Where trials run"), then writes its report.

Each trial trains with `avaf.train.loop.train` in its own Ray worker and reads the feature file itself
(nothing goes through the object store): one per GPU on GPU nodes, `cpus_per_trial` CPUs each otherwise.
A trial whose folder holds a config.json without results resumes from its last checkpoint (`train(cfg,
resume=True)`). A trial that raises is recorded (`trial.json` in its folder) and the others go on; a worker
or node that dies is retried by Tune, resuming from the trial's checkpoint. Tune's own experiment folder is
scratch (`<out>/.tune`, removed afterwards): the run folders are the record, so a second run of the same
command needs nothing of Tune's. The plan: `grids.py`; the report: `report.py`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from avaf.shared.cli import one_line
from avaf.shared.files import json_text, write_text
from avaf.shared.ray_session import init_ray
from avaf.train.config import TrainConfig
from avaf.train.loop import train

from .config import SweepConfig
from .grids import TRIAL_FILE, Grid, Trial, plan
from .report import write_report

log = logging.getLogger(__name__)

RETRIES = 2  # Tune restarts a trial whose worker or node died this many times (it resumes from last/)


def run_trial(spec: dict) -> dict:
    """Train one trial in this process (a Ray worker): resume its run if it started, record how it went in
    its folder's trial.json, and return that record. An exception of the training is recorded, not raised."""
    import ray

    cfg = TrainConfig.from_dict(spec["config"])
    out = Path(cfg.run.out_dir)
    resumed = (out / "config.json").is_file()
    start, error, accuracy = time.time(), "", None
    try:
        results = train(cfg, resume=resumed, progress=False)
        accuracy = results["tables"].get("test", results["tables"]["val"])["All"]
    except Exception as e:  # the sweep goes on; the trial's record says why it failed
        log.exception("%s failed", out)
        error = f"{type(e).__name__}: {one_line(e)}"
    record = {
        "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",
        "host": socket.gethostname(),
        "resumed": resumed,
        "seconds": round(time.time() - start, 2),
        "error": error,
        "test_all": accuracy,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / TRIAL_FILE, json_text(record, indent=2) + "\n")
    return record


def _trainable(config: dict) -> None:
    from ray import tune

    tune.report(run_trial(config["trial"]))


def trial_resources(cpus: float, gpus: float) -> dict[str, float]:
    """What each trial asks of Ray: `gpus` < 0 means one GPU where the cluster has any, else none. A trial no
    node can hold is refused here rather than left waiting forever."""
    import ray

    if gpus < 0:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
        raise ValueError(f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for a trial (nodes: {have})")
    return {"cpu": cpus, "gpu": gpus}


def run_on_tune(trials: list[Trial], resources: dict, max_concurrent: int, scratch: Path) -> None:
    """Run `trials` as Ray Tune trials; each one's record (trial.json, or Tune's error when its worker died
    beyond the retries) lands in `Trial.record`."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no status tables on the console
    from ray import tune

    by_folder = {str(t.folder): t for t in trials}
    specs = [{"folder": str(t.folder), "label": t.label, "config": t.config.to_dict()} for t in trials]
    tuner = tune.Tuner(
        tune.with_resources(_trainable, resources),
        param_space={"trial": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent or None,
            reuse_actors=True,  # a worker trains trial after trial: torch and the model code import once
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="trials",
            storage_path=str(scratch),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=RETRIES),
            callbacks=[_progress(len(trials))],
        ),
    )
    for result in tuner.fit():
        t = by_folder[result.config["trial"]["folder"]]
        if result.error is not None:
            t.record = {"error": f"worker lost: {one_line(getattr(result.error, 'cause', result.error))}"}
        else:
            t.record = json.loads((t.folder / TRIAL_FILE).read_text())


def _progress(total: int):
    from ray import tune

    class Progress(tune.Callback):
        """One log line per finished trial."""

        def __init__(self):
            self.n = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.n += 1
            label = trial.config["trial"]["label"]
            if result.get("error"):
                log.warning("[%d/%d] %s failed: %s", self.n, total, label, result["error"])
            else:
                log.info(
                    "[%d/%d] %s: All %.2f in %.0f s on %s",
                    self.n, total, label, result["test_all"], result["seconds"], result["host"],
                )  # fmt: skip

        def on_trial_error(self, iteration, trials, trial, **info):
            self.n += 1
            label = trial.config["trial"]["label"]
            log.warning("[%d/%d] %s: its worker died beyond %d retries", self.n, total, label, RETRIES)

    return Progress()


@dataclass(frozen=True)
class SweepSummary:
    ran: int
    skipped: int
    failed: int
    seconds: float


def run_sweep(
    grids: list[Grid],
    out: str | Path,
    config_file: str | None = None,
    flags: dict | None = None,
    settings: SweepConfig | None = None,
) -> SweepSummary:
    """Plan, run what is not done on Ray Tune, and aggregate into `out` (table.md, results.json, PNGs).
    `flags` set every trial (dotted config paths); `settings` says how the trials run (its `grid` names
    are `grids`, already resolved)."""
    start = time.perf_counter()
    out, s = Path(out), settings or SweepConfig()
    if s.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {s.seeds}")
    names = [g.name for g in grids]
    if len(set(names)) < len(names):
        raise ValueError(f"--grid: two grids named {max(names, key=names.count)!r} would share their folders")
    threads = max(1, int(s.cpus_per_trial))
    trials = plan(grids, config_file, dict(flags or {}), out, s.seeds, threads)
    todo = [t for t in trials if t.status in ("new", "resume")]
    skipped = sum(t.status == "done" for t in trials)
    log.info("%d trials: %d to run (%d to resume), %d done before, %d failed to configure",
             len(trials), len(todo), sum(t.status == "resume" for t in todo), skipped,
             sum(t.status == "failed" for t in trials))  # fmt: skip
    if todo:
        import ray

        started = init_ray(s.address)
        try:
            resources = trial_resources(s.cpus_per_trial, s.gpus_per_trial)
            scratch = (out / ".tune").resolve()
            run_on_tune(todo, resources, s.max_concurrent, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
        finally:
            if started:
                ray.shutdown()
    failed = write_report(out, grids, trials, s.seeds)
    return SweepSummary(len(todo), skipped, failed, round(time.perf_counter() - start, 2))

"""avaf-sweep on generated features (CPU, tiny model): grids of avaf-train runs on a local Ray instance and on
a simulated cluster, resumed and aggregated; and the pictures every run writes (curves.png, delta.png)."""

from __future__ import annotations

import json
import statistics
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from avaf.train.cli import eval_main
from avaf.train.config import load_config
from avaf.train.loop import train
from avaf.train.sweep import runner
from avaf.train.sweep.cli import main as sweep_main
from avaf.train.sweep.config import SweepConfig
from avaf.train.sweep.grids import GRIDS, PAPER_BETA, PAPER_PHI, grid_from_file, plan
from avaf.train.sweep.runner import run_sweep

from conftest import known_answer_store, local_cluster

TINY = {
    "model.dim": 32,
    "model.ffn_dim": 64,
    "optim.lr": 1e-3,
    "optim.lr_step_epochs": 100,
    "optim.epochs": 2,
    "optim.warmup_steps": 0,  # a few dozen steps: no warm-up
}
EXAMPLES = Path(__file__).parent.parent / "configs" / "sweeps"
FLAGS = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "--epochs", "2", "--warmup-steps", "0", "-q"]


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return known_answer_store(tmp_path_factory.mktemp("ka") / "feats.h5", n_videos=60)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module's sweeps, which use it rather than start their own."""
    import ray

    ray.shutdown()
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    yield
    ray.shutdown()


@pytest.fixture
def tiny_yaml(tmp_path):
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    return str(tmp_path / "tiny.yaml")


def assert_png(path, min_width=400, min_height=200):
    """A readable PNG of at least this size that is not blank (its pixels vary, and not just a little)."""
    pixels = imread(path)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[1] >= min_width and pixels.shape[0] >= min_height, pixels.shape
    assert pixels.std() > 0.05, f"{path} looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines, text and fills, not one flat colour


def sweep(args):
    return CliRunner().invoke(sweep_main, args)


def test_the_help_fits_a_screen_and_every_avaf_train_flag_still_sets_every_trial(tmp_path, monkeypatch):
    """`avaf-sweep --help | wc -l` (an 80-column pipe: 78 wide) was 97 lines; avaf-train's flags beyond
    --feats, --out and --epochs are left to avaf-train --help, and still work."""
    help_text = CliRunner().invoke(sweep_main, ["--help"], terminal_width=78).output
    assert len(help_text.splitlines()) <= 40, help_text  # measured 31
    assert "avaf-train --help" in help_text and "docs/sweeps.md" in help_text
    assert "--lr " not in help_text and "--no-tacl" not in help_text and "--epochs" in help_text
    seen = {}

    def fake_sweep(grids, out, config_file, flags, settings):
        seen.update(grids=[g.name for g in grids], flags=flags, seeds=settings.seeds)
        (Path(out) / "table.md").write_text("")
        return runner.SweepSummary(0, 0, 0, 0.0)

    monkeypatch.setattr(runner, "run_sweep", fake_sweep)
    args = ["--grid", "phi", "--seeds", "2", "--lr", "3e-3", "--no-tacl", "--batch-size", "8"]
    res = sweep([*args, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert seen == {
        "grids": ["phi"],
        "flags": {"optim.lr": 3e-3, "model.no_tacl": True, "optim.batch_size": 8},
        "seeds": 2,
    }


def test_built_in_grids_hold_the_papers_values():
    phi = [p.overrides["loss.sacl_phi"] for p in GRIDS["phi"].points]
    beta = [p.overrides["loss.beta"] for p in GRIDS["beta"].points]
    assert phi == list(PAPER_PHI) == [0.0, 0.017, 0.019, 0.021, 0.023, 0.025, 0.027]  # Table 4
    assert beta == list(PAPER_BETA) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # Table 5
    ablations = {p.name: p.overrides for p in GRIDS["ablations"].points}
    assert ablations["AVAF-Net"] == {} and ablations["w/o QOAF"] == {"model.no_qoaf": True}
    assert len(ablations) == 6  # Table 3's rows
    # every built-in point resolves to a valid config
    for grid in GRIDS.values():
        for p in grid.points:
            load_config(None, {"data.feats": "x.h5", **p.overrides})


def test_grid_files_take_flag_names_or_config_paths_and_refuse_unknown_keys(tmp_path, feats):
    f = tmp_path / "g.yaml"
    f.write_text(
        "name: mine\nfixed: {epochs: 3}\ngrid:\n  lr: [1.0e-3, 3.0e-3]\n  model.no_sacl: [false, true]\n"
    )
    g = grid_from_file(f)
    assert g.name == "mine" and len(g.points) == 4 and g.axis == ""  # two knobs: bars, not a curve
    assert g.points[1].overrides == {"optim.epochs": 3, "optim.lr": 1e-3, "model.no_sacl": True}
    assert g.points[1].name == "lr=0.001, model.no_sacl=True"
    assert g.points[1].slug == "lr=0.001_model.no_sacl=True"
    f.write_text("grid:\n  betta: [0.1]\n")
    res = sweep(["--feats", str(feats), "--grid", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown setting 'betta'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing planned, nothing written


def test_the_example_grids_load_and_every_point_resolves():
    grids = {g.name: g for g in map(grid_from_file, sorted(EXAMPLES.glob("*.yaml")))}
    assert sorted(grids) == ["lr-batch", "tau", "time-order"]
    assert len(grids["lr-batch"].points) == 6 and grids["lr-batch"].axis == ""
    assert [p.x for p in grids["tau"].points] == [0.1, 0.2, 0.4, 0.8] and grids["tau"].axis == "tau"
    blind = grids["time-order"].points[2].overrides
    assert blind == {"model.time_positions": False, "model.no_tacl": True}
    for g in grids.values():
        for p in g.points:
            load_config(None, {"data.feats": "x.h5", **p.overrides})


def test_a_folder_holding_another_config_is_never_touched(tmp_path, feats):
    g = grid_from_file(_write(tmp_path / "g.yaml", "grid:\n  alpha: [0.5]\n"))
    flags = {**TINY, "data.feats": str(feats)}
    (t,) = plan([g], None, flags, tmp_path / "out", seeds=1, threads=1)
    assert t.status == "new" and t.folder == (tmp_path / "out" / "g" / "alpha=0.5" / "seed-0").resolve()
    t.folder.mkdir(parents=True)
    old = load_config(None, {**flags, "loss.alpha": 0.25, "run.out_dir": str(t.folder)})
    (t.folder / "config.json").write_text(json.dumps(old.to_dict()))
    (t,) = plan([g], None, flags, tmp_path / "out", seeds=1, threads=1)
    assert t.status == "failed" and "loss.alpha: 0.25 there, 0.5 now" in t.error


def _write(path, text):
    path.write_text(text)
    return path


def _assert_point_aggregates_its_seeds(out, p):
    """A point of the lr grid: its two seeds done, their mean and spread in results.json and table.md, and
    every trial an ordinary run folder with its pictures."""
    assert [t["seed"] for t in p["trials"]] == [0, 1] and {t["status"] for t in p["trials"]} == {"done"}
    runs = [json.loads((out / "lr" / p["slug"] / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    alls = [r["tables"]["test"]["All"] for r in runs]
    assert p["test"]["All"]["mean"] == pytest.approx(statistics.fmean(alls))
    assert p["test"]["All"]["std"] == pytest.approx(statistics.stdev(alls))
    assert p["test"]["All"]["n"] == 2
    d = [r["delta_per_type"]["test"]["Audio/Counting"][1] for r in runs]
    assert p["delta_per_type"]["Audio/Counting"][1] == pytest.approx(statistics.fmean(d))
    cell = f"{statistics.fmean(alls):.2f} ± {statistics.stdev(alls):.2f}"
    assert cell in (out / "table.md").read_text()
    for s in (0, 1):
        run = out / "lr" / p["slug"] / f"seed-{s}"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["optim"]["seed"] == s and cfg["run"]["threads"] == 1 and cfg["optim"]["epochs"] == 2
        assert_png(run / "curves.png", 900, 250)
        assert_png(run / "delta.png", 400, 100)


def _trial_stamps(out):
    """The modification time of every file in the sweep's trial folders."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "seed-" in str(p)}


def _assert_rerun_trains_nothing(args, out, points):
    """The same sweep again: every trial found done, no trial file touched, the same aggregates."""
    stamps = _trial_stamps(out)
    again = sweep([*args, *FLAGS])
    assert again.exit_code == 0, again.output
    assert "0 trials run, 4 done before, 0 failed" in again.output
    assert stamps == _trial_stamps(out)
    for p, q in zip(points, json.loads((out / "results.json").read_text())["grids"]["lr"]["points"]):
        assert (q["test"], q["val"], q["delta_per_type"]) == (p["test"], p["val"], p["delta_per_type"])
        assert [t["ran_now"] for t in q["trials"]] == [False, False]  # the same numbers, from the folders


def test_two_points_two_seeds_aggregated_then_a_second_run_trains_nothing(
    feats, tmp_path, tiny_yaml, local_ray
):
    grid = _write(tmp_path / "lr.yaml", "grid:\n  lr: [1.0e-3, 3.0e-3]\n")
    out = tmp_path / "sweep"
    args = ["--feats", str(feats), "--grid", str(grid), "--seeds", "2", "--out", str(out)]
    args += ["--config", tiny_yaml]
    res = sweep([*args, *FLAGS])
    assert res.exit_code == 0, res.output
    assert "4 trials run, 0 done before, 0 failed" in res.output
    doc = json.loads((out / "results.json").read_text())
    points = doc["grids"]["lr"]["points"]
    assert [p["name"] for p in points] == ["lr=0.001", "lr=0.003"]
    assert [p["x"] for p in points] == [1e-3, 3e-3]
    for p in points:
        _assert_point_aggregates_its_seeds(out, p)
    val = [p["val"]["All"]["mean"] for p in points]
    best = points[int(np.argmax(val))]["name"]
    assert doc["grids"]["lr"]["best"] == best and f"**{best}** (best)" in (out / "table.md").read_text()
    assert_png(out / "lr.png")
    assert_png(out / "delta.png", 300, 150)
    # avaf-eval works on a trial's folder and agrees with it
    ev = CliRunner().invoke(
        eval_main, ["--feats", str(feats), "--checkpoint", str(out / "lr/lr=0.001/seed-1/best"), "--json"]
    )
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["table"]["All"] == pytest.approx(points[0]["trials"][1]["test"]["All"])
    _assert_rerun_trains_nothing(args, out, points)


def test_a_killed_trial_resumes_from_its_checkpoint(feats, tmp_path, local_ray):
    """The state a kill after epoch 1 of 2 leaves (config.json, metrics of epoch 1, last/, no results): the
    sweep resumes it, trains epoch 2 only, and ends where an uninterrupted run ends."""
    grid = grid_from_file(_write(tmp_path / "one.yaml", "points:\n  - {name: one}\n"))
    base = {**TINY, "data.feats": str(feats), "run.threads": 1}
    folder = tmp_path / "sweep" / "one" / "one" / "seed-0"
    train(load_config(None, {**base, "optim.epochs": 1, "run.out_dir": str(folder)}), progress=False)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["optim"]["epochs"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    for name in ("results.json", "results.md", "predictions.jsonl", "curves.png", "delta.png"):
        (folder / name).unlink()
    summary = run_sweep([grid], tmp_path / "sweep", flags=base)
    assert (summary.ran, summary.failed) == (1, 0)
    record = json.loads((folder / "trial.json").read_text())
    assert record["resumed"] is True and record["error"] == ""
    epochs = [json.loads(x)["epoch"] for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    whole = train(load_config(None, {**base, "run.out_dir": str(tmp_path / "whole")}), progress=False)
    resumed = json.loads((folder / "results.json").read_text())
    assert resumed["tables"]["test"]["All"] == pytest.approx(whole["tables"]["test"]["All"])
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_a_trial_that_raises_is_recorded_and_the_rest_of_the_table_is_filled(
    feats, tmp_path, tiny_yaml, local_ray
):
    grid = _write(
        tmp_path / "mixed.yaml",
        "points:\n  - {name: fine}\n  - {name: wrong width, dim: 48}\n  - {name: bad dropout, model.dropout: 1.5}\n",
    )
    out = tmp_path / "sweep"
    res = sweep(
        ["--feats", str(feats), "--grid", str(grid), "--out", str(out), "--config", tiny_yaml, *FLAGS]
    )
    assert res.exit_code == 1, res.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["failed"] == 2 and doc["trials"] == 3
    fine, wide, dropout = doc["grids"]["mixed"]["points"]
    assert fine["trials"][0]["status"] == "done" and fine["test"]["All"]["mean"] > 0
    assert "model.dim is 48" in wide["trials"][0]["error"]  # raised inside the trial, on its worker
    assert json.loads((out / "mixed/wrong-width/seed-0/trial.json").read_text())["error"].startswith(
        "ValueError"
    )
    assert "dropout must be in [0, 1)" in dropout["trials"][0]["error"]  # refused while planning: never ran
    assert not (out / "mixed" / "bad-dropout").exists()
    table = (out / "table.md").read_text()
    assert (
        "| wrong width | – |" in table
        and "| 0/1 |" in table
        and f"{fine['test']['All']['mean']:.2f}" in table
    )
    assert "* wrong width, seed 0: ValueError:" in table
    assert doc["grids"]["mixed"]["best"] == "fine"
    assert_png(out / "mixed.png")


def test_tensorboard_scalars_equal_the_metrics(feats, tmp_path):
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    cfg = load_config(
        None,
        {**TINY, "data.feats": str(feats), "run.out_dir": str(tmp_path / "run"), "run.log": "tensorboard"},
    )
    train(cfg, progress=False)
    scalars: dict[str, dict[int, float]] = {}
    for path in (tmp_path / "run" / "tensorboard").iterdir():
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecord: length, its CRC, the event, its CRC
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(scalars["val/All"]) == [1, 2]
    for m in metrics:
        assert scalars["val/All"][m["epoch"] + 1] == pytest.approx(m["val_accuracy"], rel=1e-6)
        assert scalars["loss/ce"][m["epoch"] + 1] == pytest.approx(m["loss_ce"], rel=1e-6)
        assert scalars["train/lr"][m["epoch"] + 1] == pytest.approx(m["lr"])


@pytest.mark.slow
def test_a_sweep_on_a_cluster_spreads_its_trials_over_the_nodes(feats, tmp_path, tiny_yaml):
    """Three nodes of one CPU each (a head and two workers): three one-CPU trials run one per node."""
    import ray

    grid = grid_from_file(_write(tmp_path / "a.yaml", "grid:\n  alpha: [0.0, 0.1, 1.0]\n"))
    flags = {**TINY, "data.feats": str(feats), "optim.epochs": 3}
    with local_cluster({"num_cpus": 1}, {"num_cpus": 1}) as (cluster, _):
        summary = run_sweep(
            [grid], tmp_path / "sweep", tiny_yaml, flags, SweepConfig(address=cluster.address)
        )
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert (summary.ran, summary.failed) == (3, 0)
    doc = json.loads((tmp_path / "sweep" / "results.json").read_text())
    used = [p["trials"][0]["node_id"] for p in doc["grids"]["a"]["points"]]
    assert set(used) <= nodes and len(nodes) == 3
    assert len(set(used)) >= 2, used  # observed: 3 (each node holds one one-CPU trial at a time)

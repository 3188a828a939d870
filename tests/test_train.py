"""avaf-train end to end on generated feature files whose answers are known (CPU, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avaf.shared.store.reader import FeatureStore
from avaf.train import checkpoint
from avaf.train.cli import eval_main
from avaf.train.cli import main as train_main
from avaf.train.config import load_config
from avaf.train.data import gather, load_split
from avaf.train.loop import train

from conftest import known_answer_store

TINY = {"model.dim": 32, "model.ffn_dim": 64, "optim.lr": 1e-3, "optim.lr_step_epochs": 100, "run.threads": 2}
TINY_FLAGS = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "--threads", "2"]  # + --config tiny.yaml


def tiny_cfg(feats, out, **over):
    return load_config(None, {**TINY, "data.feats": str(feats), "run.out_dir": str(out), **over})


@pytest.fixture
def tiny_flags(tmp_path):
    """The TINY config as a user gives it: a YAML file for what has no flag, then flags."""
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    return [*TINY_FLAGS, "--config", str(tmp_path / "tiny.yaml")]


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return known_answer_store(tmp_path_factory.mktemp("ka") / "feats.h5", n_videos=300)


def per_type_accuracy(results, split="test"):
    t = results["tables"][split]
    return t["Audio/Counting"], t["Visual/Counting"]


def test_learns_audio_and_visual_questions_well_above_majority(feats, tmp_path):
    with FeatureStore(feats) as fs:
        answers = fs.questions(split="test")["answer"]
    majority = 100 * max(np.mean(answers == a) for a in set(answers))
    assert majority < 35  # four balanced answers
    results = train(tiny_cfg(feats, tmp_path / "run", **{"optim.epochs": 12}), progress=False)
    audio, visual = per_type_accuracy(results)
    # observed: 100 / 98.3; both kinds need their own modality, chosen by the question
    assert audio > majority + 40 and visual > majority + 40, results["tables"]["test"]
    assert results["selected_on"] == "val" and results["questions"] == {"train": 360, "val": 120, "test": 120}
    # QOAF's weights lean to the modality each question type needs
    d = results["delta_per_type"]["test"]
    assert d["Audio/Counting"][1] > d["Visual/Counting"][1]  # δ_audio larger for audio questions
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(12))
    assert {"loss_ce", "loss_temporal", "loss_spatial", "loss_total", "samples_per_s", "lr"} <= set(lines[0])
    assert lines[-1]["loss_ce"] < lines[0]["loss_ce"] / 4
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| Audio Count |" in md and md.count("\n") == 4  # header, rule, val, test
    preds = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 240 and "delta_audio" in json.loads(preds[0])


def test_without_audio_the_audio_questions_fall_to_chance(tmp_path):
    silent = known_answer_store(tmp_path / "silent.h5", n_videos=300, audio=False)
    # 20 epochs: at 12, seed 0 sat at 67% visual (seeds 1, 2: 97, 100) while the audio time attention
    # learned to ignore silent seconds; at 20 it is 100%
    results = train(tiny_cfg(silent, tmp_path / "run", **{"optim.epochs": 20}), progress=False)
    audio, visual = per_type_accuracy(results)
    assert audio < 45, results["tables"]["test"]  # chance is 25; nothing in the inputs carries the answer
    assert visual > 80, results["tables"]["test"]


def test_padding_is_masked_in_batches(feats):
    with FeatureStore(feats) as fs:
        data = load_split(fs, "train", None, "cpu")
    idx = torch.arange(16)
    batch = gather(data, idx, seconds=6, max_words=9, dtype=torch.float32)
    lengths = data.video_length[idx]
    assert batch["visual"].shape == (16, 6, 5, 32) and batch["audio"].shape == (16, 6, 128)
    assert torch.equal(batch["seconds_mask"].sum(1), lengths)
    assert batch["visual"][~batch["seconds_mask"]].abs().sum() == 0
    assert batch["words_mask"].sum(1).tolist() == [6] * 16 and batch["words"].shape == (16, 9, 32)
    first = int(data.video_offset[0])
    assert torch.equal(batch["visual"][0, : lengths[0]], data.visual[first : first + lengths[0]].float())


def test_cli_equals_library_and_eval_prints_the_table(feats, tmp_path, tiny_flags):
    res = CliRunner().invoke(
        train_main, ["--feats", str(feats), "--out", str(tmp_path / "cli"), "--epochs", "3", *tiny_flags]
    )
    assert res.exit_code == 0, res.output
    assert "| test |" in res.output
    lib = train(tiny_cfg(feats, tmp_path / "lib", **{"optim.epochs": 3}), progress=False)
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert cli["tables"] == json.loads(json.dumps(lib["tables"]))
    out = CliRunner().invoke(
        eval_main, ["--feats", str(feats), "--checkpoint", str(tmp_path / "cli" / "best"), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["table"]["All"] == pytest.approx(cli["tables"]["test"]["All"])
    assert json.loads(out.output)["questions"] == 120


def test_checkpoints_of_another_vocabulary_or_config_are_refused(feats, tmp_path):
    train(tiny_cfg(feats, tmp_path / "run", **{"optim.epochs": 1}), progress=False)
    weights = tmp_path / "run" / "best" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    meta = checkpoint.read_meta(weights)
    raw = {
        "format": "avaf-checkpoint",
        "config": json.dumps(meta["config"].to_dict()),
        "epoch": "0",
        "metrics": "{}",
    }
    save_file(
        tensors, str(tmp_path / "vocab.safetensors"), metadata=raw | {"answers": json.dumps(["yes", "no"])}
    )
    with pytest.raises(checkpoint.CheckpointError, match="another answer vocabulary"):
        checkpoint.load_model(tmp_path / "vocab.safetensors")
    other = meta["config"].to_dict()
    other["model"]["ffn_dim"] = 128
    from avaf.shared.avqa.answers import ANSWERS

    fake = raw | {"config": json.dumps(other), "answers": json.dumps(list(ANSWERS))}
    save_file(tensors, str(tmp_path / "config.safetensors"), metadata=fake)
    with pytest.raises(checkpoint.CheckpointError, match="do not fit this model's config"):
        checkpoint.load_model(tmp_path / "config.safetensors")
    wide = load_config(None, {"data.feats": str(feats), "run.out_dir": str(tmp_path / "w")})  # dim 512
    with pytest.raises(ValueError, match="model.dim is 512"):
        train(wide, progress=False)


RUN = "import sys; from avaf.train.cli import main; sys.exit(main())"


def _metrics(path):
    drop = ("epoch_s", "samples_per_s")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()]


def test_resume_after_a_real_kill_reproduces_the_uninterrupted_run(feats, tmp_path, tiny_flags):
    args = ["--feats", str(feats), "--epochs", "8", *tiny_flags]
    whole = subprocess.run(
        [sys.executable, "-c", RUN, *args, "--out", str(tmp_path / "whole")], capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    victim = subprocess.Popen(
        [sys.executable, "-c", RUN, *args, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    victim.kill()
    victim.wait()
    done = len(metrics.read_text().splitlines())
    assert done < 8
    again = subprocess.run(
        [sys.executable, "-c", RUN, *args, "--out", str(run), "--resume"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert _metrics(metrics) == _metrics(tmp_path / "whole" / "metrics.jsonl")
    assert json.loads((run / "results.json").read_text()) == json.loads(
        (tmp_path / "whole" / "results.json").read_text()
    )

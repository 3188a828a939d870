"""avaf-train end to end on generated feature files whose answers are known (CPU, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from unittest.mock import ANY

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.optim.optimizer import register_optimizer_step_pre_hook

from avaf.shared.avqa.question_types import TYPES
from avaf.shared.files import json_text
from avaf.shared.store.reader import FeatureStore
from avaf.train import checkpoint
from avaf.train.cli import eval_main
from avaf.train.cli import main as train_main
from avaf.train.config import LossConfig, ModelConfig, load_config
from avaf.train.data import Shape, gather, load_split
from avaf.train.inputs import Batch, ModelOutput, prepare_inputs
from avaf.train.loop import train
from avaf.train.variants import MODELS

from conftest import known_answer_store

# tiny runs of a few hundred steps at lr 1e-3: no warm-up (the default's 300 steps would take most of them)
TINY = {"model.dim": 32, "model.ffn_dim": 64, "optim.lr": 1e-3, "optim.lr_step_epochs": 100, "run.threads": 2}
TINY |= {"optim.warmup_steps": 0}
TINY_FLAGS = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "--threads", "2", "--warmup-steps", "0"]


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
    began = time.perf_counter()
    results = train(tiny_cfg(feats, tmp_path / "run", **{"optim.epochs": 12}), progress=False)
    elapsed = time.perf_counter() - began
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
    for x in lines:  # an epoch's wall time holds its steps, its evaluation and its checkpoints
        assert x["epoch_s"] + x["eval_s"] + x["checkpoint_s"] <= x["wall_s"] + 0.002  # each rounded to 1 ms
        assert x["eval_s"] > 0 and (x["checkpoint_s"] > 0) == (x["epoch"] > 0)  # the epoch before's
    assert sum(x["wall_s"] for x in lines) <= results["seconds"]["epochs"] + 0.012  # 12 lines, 1 ms each
    assert set(results["seconds"]) == {"load", "epochs", "report"}
    assert sum(results["seconds"].values()) < elapsed
    assert lines[-1]["loss_ce"] < lines[0]["loss_ce"] / 4
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| Audio Count |" in md and md.count("\n") == 4  # header, rule, val, test: no δ note
    assert "delta_note" not in results  # QOAF's δ depends on the question
    preds = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 240 and "delta_audio" in json.loads(preds[0])


def test_the_lr_rises_over_the_warmup_steps_and_the_decay_steps_from_the_epochs_lr(feats, tmp_path):
    """Linear warm-up over the run's first steps (the default, 150 per 5e-4 of lr, protects the paper
    variant's aligned start at lr 5e-4, docs/training.md), across an epoch boundary, then StepLR's decay from the epoch's lr,
    not from a ramped one. 360 questions at batch 32: 12 steps an epoch."""
    lrs: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        over = {"optim.warmup_steps": 20, "optim.epochs": 3, "optim.lr_step_epochs": 2}
        train(tiny_cfg(feats, tmp_path / "run", **over), progress=False)
    finally:
        hook.remove()
    expected = [1e-3 * (i + 1) / 20 for i in range(20)] + [1e-3] * 4 + [1e-4] * 12
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr"] for x in lines] == [1e-3, 1e-3, pytest.approx(1e-4)]  # each epoch's lr, as scheduled


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
    batch, answers = gather(data, data.features, idx, Shape(seconds=6, words=9))
    lengths = data.video_length[idx]
    assert batch.visual.shape == (16, 6, 5, 32) and batch.audio.shape == (16, 6, 128)
    assert torch.equal(batch.seconds_mask.sum(1), lengths)
    assert batch.visual[~batch.seconds_mask].abs().sum() == 0
    assert batch.words_mask.sum(1).tolist() == [6] * 16 and batch.words.shape == (16, 9, 32)
    first = int(data.features.video_offset[0])
    assert torch.equal(
        batch.visual[0, : lengths[0]], data.features.visual[first : first + lengths[0]].float()
    )
    assert torch.equal(answers, data.answer[idx]) and batch.template_words.tolist() == [1] * 16  # "...?"


def test_the_optimizer_steps_at_the_decayed_rate_after_a_decay_step(tmp_path):
    """StepLR: with --lr-step 1 the second epoch runs at lr x 0.1. From the same weights after epoch 1,
    the second epoch moves them a tenth as far as without the decay (Adam's step is lr times a ratio of
    moments that both runs share at the decay: measured 0.100)."""
    from safetensors.torch import load_file

    feats = known_answer_store(tmp_path / "ka.h5", n_videos=40)  # 48 training questions: 2 steps an epoch
    runs = {"one": (1, 100), "decayed": (2, 1), "flat": (2, 100)}  # epochs, lr step
    threads = torch.get_num_threads()
    try:  # one thread: 3 s here against 25-40 s at 2 threads on 2 busy cores
        for name, (epochs, step) in runs.items():
            over = {"optim.epochs": epochs, "optim.lr_step_epochs": step, "run.threads": 1}
            train(tiny_cfg(feats, tmp_path / name, **over), progress=False)
    finally:
        torch.set_num_threads(threads)
    weights = {name: load_file(str(tmp_path / name / "last" / "model.safetensors")) for name in runs}
    lines = {
        n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in runs
    }
    timing = dict.fromkeys(("epoch_s", "samples_per_s", "eval_s", "checkpoint_s", "wall_s"), ANY)
    assert lines["decayed"][0] == {**lines["one"][0], **timing}  # epoch 1 alike
    assert [x["lr"] for x in lines["decayed"]] == pytest.approx([1e-3, 1e-4])
    assert [x["lr"] for x in lines["flat"]] == pytest.approx([1e-3, 1e-3])

    def moved(name: str) -> float:
        return sum(float((weights[name][k] - w).abs().sum()) for k, w in weights["one"].items())

    assert moved("flat") > 0 and moved("decayed") / moved("flat") == pytest.approx(0.1, rel=0.1)


# ---------------------------------------------------------------- a third variant: one class, one line


@dataclass
class GateOutput(ModelOutput):
    gate: torch.Tensor | None = None  # (B, 2) the slot of its own loss term


def gate_losses(out: GateOutput, answers: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """CE plus a made-up term: the gate's entropy, weighted by loss.beta."""
    ce = F.cross_entropy(out.logits.float(), answers)
    entropy = -(out.gate * out.gate.clamp_min(1e-9).log()).sum(dim=1).mean()
    return {"ce": ce, "gate": entropy, "total": ce + cfg.beta * entropy}


class GateNet(torch.nn.Module):
    """A throw-away variant: a linear answer from the mean audio and one from the mean patch, mixed by a
    gate on the sentence. Its module would hold this class; `MODELS` gets one line."""

    recipe = {"optim": {"batch_size": 16}, "loss": {"beta": 0.01}}
    losses = staticmethod(gate_losses)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio, self.visual = (
            torch.nn.Linear(cfg.audio_dim, cfg.n_answers),
            torch.nn.Linear(cfg.dim, cfg.n_answers),
        )
        self.gate = torch.nn.Linear(cfg.dim, 2)

    def forward(self, batch: Batch) -> GateOutput:
        patches, audio, _, sentence = prepare_inputs(self.cfg, self.gate.weight.dtype, batch)
        seconds = batch.seconds_mask.sum(dim=1, keepdim=True)  # (B, 1)
        gate = self.gate(sentence).softmax(dim=-1)  # (B, 2): (visual, audio)
        visual = self.visual(patches.mean(dim=2).sum(dim=1) / seconds)  # (B, C)
        heard = self.audio(audio.sum(dim=1) / seconds)  # (B, C)
        logits = gate[:, :1] * visual + gate[:, 1:] * heard
        return GateOutput(logits=logits, delta=gate, gate=gate)


def test_a_third_variant_trains_through_the_real_loop(feats, tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "gate", GateNet)  # the one line of a new variant
    cfg = tiny_cfg(feats, tmp_path / "run", **{"model.variant": "gate", "optim.lr": 3e-2, "optim.epochs": 4})
    assert (cfg.optim.batch_size, cfg.loss.beta) == (16, 0.01)  # its recipe, under what the user set
    results = train(cfg, progress=False)
    audio, visual = per_type_accuracy(results)
    assert audio > 90 and visual > 90, results["tables"]["test"]  # chance is 25; measured 100 / 100
    d = results["delta_per_type"]["test"]  # the gate picks the modality: measured 0.89 audio, 0.94 visual
    assert d["Audio/Counting"][1] > 0.75 and d["Visual/Counting"][0] > 0.75, d
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_ce", "loss_gate", "loss_total"} <= set(lines[0]) and "loss_temporal" not in lines[0]
    assert lines[-1]["loss_gate"] < lines[0]["loss_gate"]  # its own term is minimised too
    model, meta = checkpoint.load_model(tmp_path / "run" / "best")
    assert isinstance(model, GateNet) and meta["config"].model.variant == "gate"


def test_cli_equals_library_and_eval_prints_the_table(feats, tmp_path, tiny_flags):
    res = CliRunner().invoke(
        train_main, ["--feats", str(feats), "--out", str(tmp_path / "cli"), "--epochs", "3", *tiny_flags]
    )
    assert res.exit_code == 0, res.output
    assert "| test |" in res.output
    lib = train(tiny_cfg(feats, tmp_path / "lib", **{"optim.epochs": 3}), progress=False)
    cli = strict_json((tmp_path / "cli" / "results.json").read_text())
    assert cli["tables"] == json.loads(json_text(lib["tables"]))
    # the selected epoch counts from 1 in results.json as on the console: 1 + the epoch of the best val
    val = [
        strict_json(x)["val_accuracy"] for x in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()
    ]
    assert cli["best_epoch"] == lib["best_epoch"] == int(np.argmax(val)) + 1
    assert f"best epoch {cli['best_epoch']} (selected on val)" in res.output
    # a type without questions is null (strict JSON), not NaN: the store asks 2 of the 9 types
    empty = {k for k, v in cli["tables"]["test"].items() if v is None}
    assert empty == {*NO_QUESTIONS, "Audio-Visual"} and cli["tables"]["test"]["Audio"] > 0
    for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines():
        assert {k for k, v in strict_json(line)["val"].items() if v is None} == empty
    for line in (tmp_path / "cli" / "predictions.jsonl").read_text().splitlines():
        strict_json(line)
    out = CliRunner().invoke(
        eval_main, ["--feats", str(feats), "--checkpoint", str(tmp_path / "cli" / "best"), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert strict_json(out.output)["table"]["All"] == pytest.approx(cli["tables"]["test"]["All"])
    assert strict_json(out.output)["questions"] == 120
    assert strict_json(out.output)["table"]["Audio-Visual/Temporal"] is None


NO_QUESTIONS = [t for t in TYPES if t not in ("Audio/Counting", "Visual/Counting")]


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict JSON readers (jq, JavaScript) do."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


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
    drop = ("epoch_s", "samples_per_s", "eval_s", "checkpoint_s", "wall_s")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()]


def test_resume_after_a_real_kill_reproduces_the_uninterrupted_run(feats, tmp_path, tiny_flags):
    args = ["--feats", str(feats), "--epochs", "8", *tiny_flags, "--lr-step", "3"]  # the resumed part decays
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
    resumed, whole = (json.loads((r / "results.json").read_text()) for r in (run, tmp_path / "whole"))
    assert resumed.pop("seconds")["epochs"] < whole.pop("seconds")["epochs"]  # this invocation's epochs only
    assert resumed == whole


@pytest.mark.slow
def test_compiled_run_trains_as_the_eager_one_and_its_checkpoint_evaluates_without_compiling(feats, tmp_path):
    """--compile: the same maths (losses within float rounding of the eager run's), and a checkpoint whose
    keys are the model's own, so avaf-eval reads it without compiling. CPU inductor: ~4 min to compile."""
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        over = {"optim.epochs": 2, "run.compile": compiled}
        runs[name] = train(tiny_cfg(feats, tmp_path / name, **over), progress=False)
    lines = {
        n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in runs
    }
    for eager, compiled in zip(lines["eager"], lines["compiled"], strict=True):
        assert compiled["loss_total"] == pytest.approx(eager["loss_total"], rel=2e-3)
    assert lines["eager"][-1]["loss_total"] < lines["eager"][0]["loss_total"]
    out = CliRunner().invoke(
        eval_main, ["--feats", str(feats), "--checkpoint", str(tmp_path / "compiled" / "best"), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert strict_json(out.output)["table"]["All"] == pytest.approx(runs["compiled"]["tables"]["test"]["All"])

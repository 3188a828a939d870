"""The example configs in configs/ load with the real loaders and say what their comments claim (docs/)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from avaf.extract.config import ExtractConfig
from avaf.shared.config import read_file, resolve
from avaf.train.authors_model import AuthorsNet
from avaf.train.config import LossConfig, load_config, warmup

CONFIGS = Path(__file__).parent.parent / "configs"
TESTED = {"extract-gpu.yaml", "train-paper.yaml", "train-authors.yaml"}


def test_every_example_config_is_tested_here():
    assert {p.name for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".yml", ".toml")} == TESTED


def test_extract_gpu_config_runs_fp16_encoders_one_per_gpu():
    cfg = resolve(ExtractConfig, CONFIGS / "extract-gpu.yaml")
    rt = cfg.runtime
    assert (rt.num_gpus, rt.num_cpus, rt.encoders, rt.precision) == (1.0, 1.0, 1, "fp16")
    assert (rt.batch_size, rt.videos_per_call, rt.shard_videos, rt.weights_dir) == (256, 8, 32, None)
    assert (cfg.clip.model, cfg.clip.pretrained, cfg.vggish.weights) == ("ViT-B-32", "openai", "default")
    assert (cfg.decode.backend, cfg.decode.timeout_s, cfg.out) == ("auto", 300.0, "feats.h5")
    assert cfg.features == "avaf" and (cfg.tspm.clip_weights, cfg.tspm.tome_weights) == ("openai", "default")
    for size in (
        cfg.tspm.clip_batch_size,
        cfg.tspm.tome_batch_size,
    ):  # 8 videos x 60 s: 5 passes, none padded
        assert rt.videos_per_call * 60 == 5 * size
    assert cfg.input.videos is None and cfg.input.annotations == ()  # given as flags
    flags = resolve(
        ExtractConfig, CONFIGS / "extract-gpu.yaml", {"runtime.encoders": 4, "input.videos": "v/"}
    )
    assert (flags.runtime.encoders, flags.runtime.precision, flags.input.videos) == (4, "fp16", "v/")


def test_paper_config_is_the_papers_recipe():
    cfg = load_config(CONFIGS / "train-paper.yaml")
    assert cfg.model.variant == "paper"
    assert (cfg.model.dim, cfg.model.audio_dim, cfg.model.heads, cfg.model.ffn_dim) == (512, 128, 4, 2048)
    assert not any(
        (cfg.model.no_tacl, cfg.model.no_avcm, cfg.model.no_sacl, cfg.model.no_qoaf, cfg.model.no_all)
    )
    o = cfg.optim
    assert (o.lr, o.lr_step_epochs, o.lr_gamma, o.batch_size, o.epochs, o.seed) == (1e-4, 8, 0.1, 32, 30, 0)
    assert o.warmup_steps == -1 and warmup(o) == 30  # 150 steps per 5e-4 of lr (docs/training.md)
    assert warmup(replace(o, lr=5e-4)) == 150 and warmup(replace(o, lr=5e-4, warmup_steps=0)) == 0
    assert (cfg.loss.beta, cfg.loss.sacl_phi, cfg.loss.sacl_tau) == (0.2, 0.019, 0.4)
    assert cfg.loss.alpha == LossConfig().alpha  # left to the default on purpose (docs/training.md)
    assert (cfg.run.out_dir, cfg.run.amp) == ("runs/paper", True)
    assert load_config(CONFIGS / "train-paper.yaml", {"optim.epochs": 5}).optim.epochs == 5


def test_authors_config_matches_the_authors_variant_recipe():
    cfg = load_config(CONFIGS / "train-authors.yaml")
    implied = load_config(None, {"model.variant": "authors"})  # what the variant alone sets
    assert cfg.model.variant == "authors"
    assert (cfg.optim.batch_size, cfg.optim.seed, cfg.loss.alpha, cfg.run.amp) == (64, 42, 100.0, False)
    assert (cfg.optim.lr, cfg.optim.lr_step_epochs, cfg.optim.epochs, cfg.loss.beta) == (1e-4, 8, 30, 0.2)
    assert cfg.optim == implied.optim and cfg.loss == implied.loss and cfg.model == implied.model
    assert cfg.run.out_dir == "runs/authors"
    # the recipe has one home, the variant's class: the file names the variant and does not repeat it
    assert read_file(CONFIGS / "train-authors.yaml") == {
        "model": {"variant": "authors"},
        "run": {"out_dir": "runs/authors"},
    }
    assert AuthorsNet.recipe["optim"] == {"batch_size": 64, "seed": 42, "warmup_steps": 0}
    assert cfg.optim.warmup_steps == 0  # their code has no warm-up


@pytest.mark.parametrize("name", sorted(TESTED))
def test_a_typo_in_a_config_is_refused_with_the_file_name(tmp_path, name):
    typos = {"seed:": "sed:", "shard_videos:": "shard_vidoes:", "out_dir:": "out_dri:"}
    text = (CONFIGS / name).read_text()
    for right, wrong in typos.items():
        text = text.replace(right, wrong)
    bad = tmp_path / name
    bad.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*unknown setting"):
        if name.startswith("extract"):
            resolve(ExtractConfig, bad)
        else:
            load_config(bad)

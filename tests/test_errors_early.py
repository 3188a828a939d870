"""Bad input is reported before torch and Ray load: the real console commands, each in a
fresh process under `python -X importtime`, so the test sees every module the process imported before it
printed its error and exited. tests/benchmarks/bench_errors.py times the same five inputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks.bench_errors import ANNOTATIONS, make_inputs

HEAVY = ("torch", "ray", "open_clip", "timm")  # what took a bad input ~5-20 s to report before
N_CASES = 16


def _more_inputs(d: Path) -> list[tuple[str, str, list[str]]]:
    """Beyond the benchmark's five: a malformed row, a typo of a choice, a missing weight file, a demo."""
    rows = json.loads(ANNOTATIONS.read_text())[:2]
    del rows[1]["type"]
    (d / "avqa-test.json").write_text(json.dumps(rows))
    videos = ["--videos", str(d / "videos"), "--out", str(d / "feats.h5")]
    return [
        ("avaf-extract", "missing key 'type'", ["--annotations", str(d / "avqa-test.json")]),
        ("avaf-extract", "--vggish-weights", [*videos, "--vggish-weights", str(d / "vggish.pth")]),
        ("avaf-extract", "--clip-pretrained", [*videos, "--clip-pretrained", str(d / "clip.safetensors")]),
        (
            "avaf-train",
            "model.variant must be one of",
            ["--feats", str(d / "questions.json"), "--variant", "x"],
        ),
        ("avaf-demo", "videos must be at least 1", ["--out", str(d / "demo"), "--num-videos", "0"]),
        *_empty_inputs(d),
        *_prompt_tables(d),
    ]


def _prompt_tables(d: Path) -> list[tuple[str, str, list[str]]]:
    """A --qa-prompts table without TSPM's template column (was: reported after torch had loaded, ~5 s),
    and a table given without the tspm pack."""
    (d / "prompts.csv").write_text("No.,Template,Sentence\n1,Where is the <Object>?,The <Object> is there.\n")
    (d / "avqa-val.json").write_text(json.dumps(json.loads(ANNOTATIONS.read_text())[:2]))
    args = ["--annotations", str(d / "avqa-val.json"), "--out", str(d / "feats.h5")]
    return [
        (
            "avaf-extract",
            f"{d / 'prompts.csv'}: row 1: no column 'Question Template' or 'Declarative Sentence Text "
            "Prompt' (the header has ['No.', 'Template', 'Sentence'])",
            [*args, "--features", "avaf,tspm", "--qa-prompts", str(d / "prompts.csv")],
        ),
        (
            "avaf-extract",
            f"--qa-prompts {d / 'prompts.csv'}: QA prompts belong to the tspm pack, which --features avaf "
            "leaves out",
            [*args, "--qa-prompts", str(d / "prompts.csv")],
        ),
    ]


def _empty_inputs(d: Path) -> list[tuple[str, str, list[str]]]:
    """A --videos folder without a video (was: exit 0, "written 0" and no feats.h5), and a store of
    questions without videos (was: avaf-train said to set --dim, or model.audio_dim)."""
    from conftest import fake_question, write_store

    (d / "empty" / "sub").mkdir(parents=True, exist_ok=True)
    (d / "empty" / "notes.txt").write_text("no video here")
    rng = np.random.default_rng(0)
    questions = [fake_question(rng, i, f"{i:08d}", split) for i, split in enumerate(("train", "val", "test"))]
    feats = d / "questions-only" / "feats.h5"
    if not feats.exists():
        feats.parent.mkdir()
        write_store(feats, (), questions)
    empty = ["--videos", str(d / "empty"), "--out", str(d / "new" / "feats.h5")]
    exts = "looked for the extensions .3g2 .3gp .aac"
    return [
        (
            "avaf-extract",
            f"--videos {d / 'empty'}: no video files under {d / 'empty'} (it holds 1 other",
            empty,
        ),
        ("avaf-extract", exts, empty),
        (
            "avaf-extract",
            ".wma .wmv; for the questions alone leave --videos out",
            [*empty, "--annotations", str(d / "avqa-test.json")],
        ),
        (
            "avaf-train",
            f"{feats}: holds no videos, so avaf-train has no features to read; extract some into it first: "
            f"avaf-extract --videos DIR --out {feats}",
            ["--feats", str(feats), "--out", str(d / "run")],
        ),
    ]


def _cases(tmp: Path) -> list[tuple[str, str, list[str]]]:
    bench = make_inputs(tmp)
    expected = ("names no split", "--weights-dir", "--clip-model 'ViT-Nope-32'", "not an HDF5 file",
                "not an HDF5 file")  # fmt: skip
    return [(cmd, want, args) for (cmd, _, args), want in zip(bench, expected, strict=True)] + _more_inputs(
        tmp
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    assert len(_cases(d)) == N_CASES  # and the files are written
    return d


@pytest.mark.parametrize("case", range(N_CASES))
def test_bad_input_is_one_line_exit_2_before_torch_and_ray(inputs, case):
    command, problem, args = _cases(inputs)[case]
    before = sorted(p.name for p in inputs.iterdir())
    script = shutil.which(command)
    assert script, f"{command} is not installed"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", script, *args], capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == "" and len(lines) == 1, (proc.stdout, lines)
    assert lines[0].startswith(f"{command}: ") and problem in lines[0], lines[0]
    imported = re.findall(r"^import time:.*\|\s+(\S+)$", proc.stderr, re.M)
    assert len(imported) > 50  # -X importtime did report
    heavy = [name for name in imported if name.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    assert sorted(p.name for p in inputs.iterdir()) == before  # nothing written either (no folder, no shard)


def test_the_variants_table_names_each_model_class_without_importing_torch():
    from avaf.train.authors_model import AuthorsNet
    from avaf.train.model import AVAFNet
    from avaf.train.variants import MODELS, model_class

    assert [model_class(name) for name in MODELS] == [AVAFNet, AuthorsNet]
    code = "import sys, avaf.train.config, avaf.train.variants; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_vv_shows_the_traceback_behind_the_one_line(inputs):
    proc = subprocess.run(
        [shutil.which("avaf-train"), "--feats", str(inputs / "questions.json"), "-vv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "StoreError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("avaf-train: ")

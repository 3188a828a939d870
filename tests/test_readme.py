"""The README and docs/ say what is true (DESIGN.md §6: a command a newcomer can run from the README): the
README fits on two screens, CI runs its test command, its commands exist, its links resolve, and its Python
examples run on a small feature file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import fake_question, fake_video, write_store

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_fits_on_two_screens():
    assert len(README.splitlines()) <= 120


def test_ci_runs_exactly_the_readme_set_up_and_test_commands():
    setup = blocks(README, "bash")[0].strip().splitlines()
    assert setup == ["python -m pip install -e '.[test]'", "python -m pytest"]
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert setup[0] in ci and ci[-1] == setup[1]
    assert ci.index("ruff check .") < ci.index("ruff format --check .") < ci.index(setup[1])


def _help(script: str) -> str:
    """`script --help` in-process, as an 80-column terminal shows it."""
    from importlib import import_module

    from click.testing import CliRunner

    module, name = SCRIPTS[script].split(":")
    res = CliRunner().invoke(getattr(import_module(module), name), ["--help"], terminal_width=80)
    assert res.exit_code == 0, res.output
    return res.output


def test_the_commands_the_readme_says_take_config_are_exactly_those_that_do():
    (sentence,) = [s for s in re.split(r"(?<=\.)\s", " ".join(README.split())) if "`--config FILE`" in s]
    named = set(re.findall(r"`(avaf-[a-z-]+)`", sentence))
    takes = {script for script in SCRIPTS if re.search(r"^\s+--config\b", _help(script), flags=re.M)}
    assert named == takes == {"avaf-extract", "avaf-train", "avaf-sweep"}, (named, takes)
    assert "Every command explains itself with `--help`" in sentence  # and every one does: _help checks it


def test_the_readme_says_how_to_install_the_cpu_build_of_torch():
    text = " ".join(README.split())
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert f"`{cpu}`" in text and "First" in text.split(cpu)[0][-12:]
    assert text.index("python -m pip install -e '.[test]'") < text.index(
        cpu
    )  # after the set-up block it extends


def test_no_help_text_or_doc_cites_design_md():
    """DESIGN.md is not shipped with avaf: what users read cites docs/ instead."""
    for path in [ROOT / "README.md", *DOCS]:
        assert "DESIGN.md" not in path.read_text() and "§5b" not in path.read_text(), path.name
    for script in SCRIPTS:
        assert "DESIGN.md" not in _help(script) and "§" not in _help(script), script


def test_every_command_the_docs_name_is_installed():
    scripts = set(SCRIPTS)
    for path in [ROOT / "README.md", *DOCS]:
        named = set(re.findall(r"\b(avaf-[a-z-]+[a-z])\b", path.read_text())) - {
            "avaf-features",
            "avaf-demo/",
        }
        assert named <= scripts, f"{path.name}: {sorted(named - scripts)}"
    assert "avaf-extract fetch-weights" not in README + "".join(p.read_text() for p in DOCS)


def test_relative_links_resolve():
    for path in [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name} links to {target}"


@pytest.fixture
def small_store(tmp_path, monkeypatch):
    """feats.h5 in the working directory at CLIP ViT-B/32 shapes (N = 50, D = 512): 3 videos, 8 questions."""
    rng = np.random.default_rng(0)
    videos = [fake_video(rng, f"0000000{i}", seconds=3 + i, n_tokens=50, width=512) for i in range(3)]
    questions = [
        fake_question(rng, q, f"0000000{q % 3}", ("train", "test")[q % 2], width=512) for q in range(8)
    ]
    write_store(tmp_path / "feats.h5", videos, questions)
    monkeypatch.chdir(tmp_path)


def test_the_readme_reuse_example_runs(small_store, capsys):
    (example,) = blocks(README, "python")
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip() == "(3, 50, 512)"
    assert tuple(scope["logits"].shape) == (4, 42)


def test_the_reuse_page_examples_run_in_order(small_store):
    scope: dict = {}
    for i, example in enumerate(blocks((ROOT / "docs/reuse.md").read_text(), "python")):
        exec(compile(example, f"docs/reuse.md block {i}", "exec"), scope)
    assert tuple(scope["out"].logits.shape) == (len(scope["answer"]), 42)
    assert scope["loss"].ndim == 0

"""A failed run leaves no empty folder behind (shared/files.removing_new_empty_folders): the helper itself,
and avaf-extract and avaf-train failing on a bad input after they created their output folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avaf.extract.cli import main as extract_main
from avaf.shared.files import removing_new_empty_folders
from avaf.train.cli import main as train_main

from conftest import fake_question, fake_video, write_clip, write_store

TINY_CLIP = str(Path(__file__).parent / "data" / "ViT-avaf-tiny.json")


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_only_new_folders_that_stay_empty_go(tmp_path):
    (tmp_path / "old").mkdir()
    with (
        pytest.raises(RuntimeError),
        removing_new_empty_folders(tmp_path / "old" / "a" / "b", tmp_path / "c" / "d"),
    ):
        (tmp_path / "old" / "a" / "b").mkdir(parents=True)
        (tmp_path / "c" / "d").mkdir(parents=True)
        (tmp_path / "c" / "kept.txt").write_text("a file: c/ stays, d/ goes")
        raise RuntimeError("a failed run")
    assert _tree(tmp_path) == ["c", "c/kept.txt", "old"]  # old/ was there before: it stays, empty
    with removing_new_empty_folders(tmp_path / "e"):  # no failure: nothing is removed
        (tmp_path / "e").mkdir()
    assert (tmp_path / "e").is_dir()


def test_avaf_extract_failing_after_making_its_folders_removes_them(tmp_path):
    """A weights file that is no VGGish state dict fails when the encoders load, after the run made
    new/dir/ and its shard folder; an --out folder that existed stays, and so does everything else."""
    write_clip(tmp_path / "videos" / "v1.mp4", 3)
    (tmp_path / "vggish.pth").write_text("not a state dict")
    (tmp_path / "was-here").mkdir()
    before = _tree(tmp_path)
    args = ["--videos", str(tmp_path / "videos"), "--clip-model", TINY_CLIP, "--clip-pretrained", "random"]
    args += ["--vggish-weights", str(tmp_path / "vggish.pth"), "--in-process", "-q"]
    for out in (tmp_path / "new" / "dir" / "feats.h5", tmp_path / "was-here" / "feats.h5"):
        res = CliRunner().invoke(extract_main, [*args, "--out", str(out)])
        assert res.exit_code == 2 and res.stderr.startswith(
            f"avaf-extract: {tmp_path / 'vggish.pth'} is not a VGGish state dict"
        )
        assert len(res.stderr.splitlines()) == 1, res.stderr
        assert _tree(tmp_path) == before  # no new/, no new/dir/, no feats.h5.shards/; was-here/ stays


def test_avaf_train_failing_before_its_first_epoch_removes_its_run_folder(tmp_path):
    """A store without val questions fails once the features load, after the run folder was made."""
    rng = np.random.default_rng(0)
    videos = [fake_video(rng, f"{i:08d}", 4) for i in range(3)]
    questions = [fake_question(rng, i, f"{i:08d}", "train") for i in range(3)]
    feats = write_store(tmp_path / "feats.h5", videos, questions)
    (tmp_path / "was-here").mkdir()
    before = _tree(tmp_path)
    for out in (tmp_path / "runs" / "new", tmp_path / "was-here"):
        res = CliRunner().invoke(train_main, ["--feats", str(feats), "--out", str(out), "--dim", "8", "-q"])
        assert res.exit_code == 2
        assert res.stderr == f"avaf-train: {feats}: no val questions (the checkpoint is selected on val)\n"
        assert _tree(tmp_path) == before  # no runs/, no runs/new/; was-here/ stays

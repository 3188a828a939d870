"""Nothing lost (docs/reliability.md, "Runs and outputs"; DESIGN.md §6): a run folder is never overwritten
unasked, and bad input, a full disk or a read-only place ends every command with one line naming the path and
the cause (exit 2), earlier outputs intact, the next run completing.

A full disk is simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so that writes fail with
EFBIG); a read-only folder with chmod in a process without CAP_DAC_OVERRIDE (setpriv), so it also holds
when the tests run as root.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avaf.extract.cli import demo as demo_main
from avaf.extract.cli import fetch_weights as fetch_main
from avaf.extract.cli import main as extract_main
from avaf.extract.synth.cli import main as synth_main
from avaf.shared import files
from avaf.shared.exchange.cli import export_main, import_main
from avaf.shared.exchange.npy_folders import export_npy
from avaf.shared.store.inspect_cli import main as inspect_main
from avaf.shared.store.reader import FeatureStore
from avaf.train.cli import eval_main
from avaf.train.cli import main as train_main

from conftest import fake_question, fake_video, known_answer_store, write_clip, write_store

TINY = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "--threads", "2", "-qq"]
TINY_CLIP = str(Path(__file__).parent / "data" / "ViT-avaf-tiny.json")
RANDOM_ENCODERS = ["--clip-model", TINY_CLIP, "--clip-pretrained", "random", "--vggish-weights", "random"]
BIN = Path(sys.executable).parent  # the installed console scripts: avaf-train, ...


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return known_answer_store(tmp_path_factory.mktemp("ka") / "feats.h5", n_videos=60)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The training flags of a model that trains in a few seconds."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text("model:\n  ffn_dim: 64\n")
    return [*TINY, "--config", str(path)]


@pytest.fixture(scope="module")
def run(feats, tiny, tmp_path_factory):
    """A finished two-epoch run."""
    out = tmp_path_factory.mktemp("runs") / "run"
    res = CliRunner().invoke(train_main, ["--feats", str(feats), "--out", str(out), "--epochs", "2", *tiny])
    assert res.exit_code == 0, res.output
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line(stderr: str) -> str:
    """The single line a failed command prints; fails the test unless there is exactly one."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---- §2: a run folder is never overwritten by accident -------------------------------------------------


def test_a_second_train_into_the_same_folder_is_refused_and_loses_nothing(feats, tiny, run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = snapshot(out)
    res = CliRunner().invoke(train_main, ["--feats", str(feats), "--out", str(out), "--epochs", "1", *tiny])
    assert res.exit_code == 2
    line = one_line(res.stderr)
    assert f": {out}: already holds a run (best/, config.json, curves.png, delta.png and 5 more);" in line
    assert "--resume" in line and "new --out" in line and "--overwrite" in line
    assert snapshot(out) == before  # metrics.jsonl, best/, last/, results, predictions: byte for byte


def test_overwrite_clears_the_old_run_and_keeps_other_files(feats, tiny, run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "notes.txt").write_text("mine")
    (out / "last" / "state-7.pt").write_bytes(b"stale")  # a stale file inside a run folder goes with it
    args = ["--feats", str(feats), "--out", str(out), "--epochs", "1", "--overwrite", *tiny]
    res = CliRunner().invoke(train_main, args)
    assert res.exit_code == 0, res.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's 2 epochs are gone
    assert sorted(p.name for p in (out / "last").iterdir()) == ["model.safetensors", "state-0.pt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_still_continues_the_run(feats, tiny, run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    first = (out / "metrics.jsonl").read_text().splitlines()
    resume = ["--feats", str(feats), "--resume", *TINY]
    res = CliRunner().invoke(train_main, ["--out", str(out), "--epochs", "3", *resume])
    assert res.exit_code == 0, res.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == first and [json.loads(x)["epoch"] for x in lines] == [0, 1, 2]
    # the best epoch restored from the checkpoint's state (counted from 0) is reported from 1, as the console
    val = [json.loads(x)["val_accuracy"] for x in lines]
    assert json.loads((out / "results.json").read_text())["best_epoch"] == int(np.argmax(val)) + 1
    assert f"best epoch {int(np.argmax(val)) + 1} (selected on val)" in res.output
    both = CliRunner().invoke(train_main, ["--out", str(out), "--overwrite", *resume])
    assert both.exit_code == 2 and "give one" in one_line(both.stderr)
    missing = CliRunner().invoke(train_main, ["--out", str(tmp_path / "nothing"), *resume])
    line = one_line(missing.stderr)  # the run's own config.json is read first
    assert missing.exit_code == 2 and "nothing/config.json: cannot read config file (No such file" in line


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    videos = [fake_video(rng, f"v{i}", 3) for i in range(3)]
    questions = [fake_question(rng, i, f"v{i}", "test") for i in range(3)]
    return write_store(tmp_path_factory.mktemp("small") / "feats.h5", videos, questions)


def test_export_into_an_earlier_export_is_refused_unless_overwrite(small_store, tmp_path):
    out = tmp_path / "npy"
    export_npy(small_store, out)
    (out / "vggish" / "old-video.npy").write_bytes(b"stale")
    (out / "README").write_text("mine")
    before = snapshot(out)
    args = ["--feats", str(small_store), "--out", str(out)]
    res = CliRunner().invoke(export_main, args)
    assert res.exit_code == 2 and "--overwrite" in one_line(res.stderr) and str(out) in res.stderr
    assert snapshot(out) == before
    res = CliRunner().invoke(export_main, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "vggish" / "old-video.npy").exists() and (out / "README").read_text() == "mine"
    assert len(list((out / "vggish").iterdir())) == 3


def test_synth_and_demo_refuse_a_folder_that_holds_their_outputs(tmp_path):
    out = tmp_path / "synth"
    args = ["--out", str(out), "--num-videos", "1", "--duration", "3", "--size", "48x48"]
    args += ["--workers", "1", "-q"]
    assert CliRunner().invoke(synth_main, args).exit_code == 0
    (out / "videos" / "00000099.mp4").write_bytes(b"a video of another set")
    before = snapshot(out)
    res = CliRunner().invoke(synth_main, args)
    assert res.exit_code == 2 and "already holds a generated set" in one_line(res.stderr)
    assert snapshot(out) == before
    assert CliRunner().invoke(synth_main, [*args, "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["00000001.mp4"]  # no stale video left
    demo = tmp_path / "demo"
    (demo / "run").mkdir(parents=True)
    (demo / "run" / "metrics.jsonl").write_text("{}\n")
    res = CliRunner().invoke(demo_main, ["--out", str(demo), "--weights", "random"])
    assert res.exit_code == 2 and "already holds files a demo writes, but no demo.json (run/)" in one_line(
        res.stderr
    )
    assert sorted(p.name for p in demo.iterdir()) == ["run"]  # refused before generating anything


# ---- §4: bad input is one line naming the file, exit 2 --------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.h5").write_text("not HDF5\n")
    (d / "folder.h5").mkdir()
    (d / "a-file").write_text("x")
    (d / "avqa-test.json").write_text("not JSON\n")
    return d


def _cases(bad: Path, feats: Path, run: Path):
    """(command, args, the path the line must name, a word of the cause) for every command."""
    notes, folder, missing, file = bad / "notes.h5", bad / "folder.h5", bad / "missing", bad / "a-file"
    out = ["--out", str(bad / "out.h5")]
    return [
        (train_main, ["--feats", str(notes), "--out", str(bad / "r")], notes, "not an HDF5 file"),
        (train_main, ["--feats", str(missing)], missing, "does not exist"),
        (train_main, ["--feats", str(folder)], folder, "is a directory"),
        (train_main, ["--feats", str(feats), "--out", str(file)], file, "is a file"),
        (eval_main, ["--feats", str(notes), "--checkpoint", str(run / "best")], notes, "not an HDF5 file"),
        (eval_main, ["--feats", str(feats), "--checkpoint", str(notes)], notes, "not a safetensors"),
        (eval_main, ["--feats", str(feats), "--checkpoint", str(missing)], missing, "does not exist"),
        (inspect_main, [str(notes)], notes, "not an HDF5 file"),
        (inspect_main, [str(missing)], missing, "no such feature file"),
        (inspect_main, [str(folder)], folder, "is a directory"),
        (export_main, ["--feats", str(notes), "--out", str(bad / "x")], notes, "not an HDF5 file"),
        (export_main, ["--feats", str(missing), "--out", str(bad / "x")], missing, "does not exist"),
        (export_main, ["--feats", str(feats), "--out", str(file)], file, "is a file"),
        (import_main, ["--npy", str(missing), *out], missing, "does not exist"),
        (import_main, ["--npy", str(file), *out], file, "is a file"),
        (import_main, ["--npy", str(bad), "--out", str(folder)], folder, "is a directory"),
        (import_main, ["--npy", str(bad), *out], bad, "no vggish/"),
        # the cheap checks come first: none of these gets as far as loading encoder weights
        (extract_main, ["--videos", str(missing), *out], missing, "does not exist"),
        (extract_main, ["--videos", str(file), *out], file, "is a file"),
        (extract_main, ["--annotations", str(missing), *out], missing, "does not exist"),
        (extract_main, ["--annotations", str(bad / "avqa-test.json"), *out], bad / "avqa-test.json", "JSON"),
        (extract_main, ["--videos", str(bad), "--out", str(folder)], folder, "is a directory"),
        (synth_main, ["--out", str(file), "--num-videos", "1"], file, "is a file"),
        (demo_main, ["--out", str(file)], file, "is a file"),
        (demo_main, ["--train-config", str(missing)], missing, "does not exist"),
        (fetch_main, [str(file)], file, "is a file"),
    ]


def test_every_command_says_bad_input_on_one_line(bad, feats, run):
    for command, args, path, cause in _cases(bad, feats, run):
        res = CliRunner().invoke(command, args)
        assert res.exit_code == 2, (command.name, args, res.output)
        line = one_line(res.stderr)
        assert str(path) in line and cause in line, (command.name, line)
        if command is extract_main:
            assert "weights" not in line.lower()


# ---- §4: a full disk or a read-only place ---------------------------------------------------------------


def _limited(max_bytes: int | None):
    """preexec_fn: a file-size limit, SIGXFSZ ignored (a write past it fails with EFBIG, as on a full disk)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply if max_bytes is not None else None


def command(script: str, args: list[str], max_bytes: int | None = None, readonly: bool = False):
    """Run an avaf command as a user does, in a fresh process, optionally on a 'full disk' or without the
    power to write where permissions forbid it (root included)."""
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if readonly else []
    return subprocess.run(
        [*prefix, str(BIN / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited(max_bytes),
    )


def test_a_checkpoint_on_a_full_disk_is_one_line_and_resume_completes(feats, tiny, tmp_path):
    out = tmp_path / "run"
    args = ["--feats", str(feats), "--out", str(out), "--epochs", "1", *tiny]
    full = command("avaf-train", args, max_bytes=100_000)  # the weights are ~226 kB
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert line == (
        f"avaf-train: {out / 'best' / 'model.safetensors'}: cannot write: File too large "
        "(this process may write files of at most 100.0 kB: ulimit -f)"
    ), line
    assert json.loads((out / "metrics.jsonl").read_text())["epoch"] == 0  # written before: readable
    assert [p.name for p in (out / "best").iterdir()] == []  # no half-written or temporary file
    again = command("avaf-train", [*args, "--resume"])
    assert again.returncode == 0, again.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and (out / "results.json").is_file()


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    """An export of 130 videos: avaf-import writes it as shards of 64 videos, then builds the store."""
    rng = np.random.default_rng(1)
    videos = [fake_video(rng, f"{i:08d}", 8, n_tokens=5, width=32) for i in range(130)]
    questions = [fake_question(rng, i, f"{i:08d}", "train", width=32) for i in range(130)]
    d = tmp_path_factory.mktemp("npy")
    export_npy(write_store(d / "source.h5", videos, questions), d / "npy")
    return d / "npy"


def test_a_shard_or_store_on_a_full_disk_is_one_line_and_the_next_run_completes(npy, tmp_path):
    out = tmp_path / "feats.h5"
    first = command("avaf-import", ["--npy", str(npy), "--out", str(out)])
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    size = len(before)
    again_args = ["--npy", str(npy), "--out", str(out), "--overwrite"]  # replaced only once complete
    shard = command("avaf-import", again_args, 50_000)
    assert shard.returncode == 2
    line = one_line(shard.stderr)
    assert f"{tmp_path}/.feats.h5.import-" in line and "-videos-" in line, line  # its first shard
    assert ".h5: cannot write about" in line and "File too large" in line, line
    store = command(
        "avaf-import", again_args, int(0.75 * size)
    )  # every 64-video shard fits, the store of all of them does not
    assert store.returncode == 2
    line = one_line(store.stderr)
    assert line.startswith(f"avaf-import: {out}: cannot write about") and "File too large" in line, line
    assert out.read_bytes() == before  # the earlier store is untouched and readable
    with FeatureStore(out) as fs:
        assert len(fs.video_ids) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.h5"]  # no temporary left behind
    again = command("avaf-import", again_args)
    assert again.returncode == 0, again.stderr


def test_an_export_on_a_full_disk_is_one_line_and_the_next_run_completes(npy, tmp_path):
    source = npy.parent / "source.h5"
    out = tmp_path / "npy"
    args = ["--feats", str(source), "--out", str(out), "-q"]
    full = command("avaf-export", args, 20_000)  # a video's tokens: 5 kB; manifest more
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert line == (
        f"avaf-export: {out / 'manifest.json'}: cannot write: File too large "
        "(this process may write files of at most 20.0 kB: ulimit -f)"
    ), line
    assert np.load(out / "vggish" / "00000000.npy").shape == (8, 128)  # written before: complete, readable
    assert not any(".tmp-" in p.name for p in out.rglob("*"))
    again = command("avaf-export", [*args, "--overwrite"])
    assert again.returncode == 0, again.stderr
    assert len(json.loads((out / "manifest.json").read_text())["videos"]) == 130


@pytest.mark.slow  # three runs, each loading the encoders (~40 s); avaf-import covers shards and stores
def test_an_extract_on_a_full_disk_is_one_line_and_the_next_run_completes(tmp_path):
    videos = tmp_path / "videos"
    write_clip(videos / "a.mp4", seconds=3)
    out = tmp_path / "feats.h5"
    args = ["--videos", str(videos), "--out", str(out), "--in-process", *RANDOM_ENCODERS, "-q"]
    assert command("avaf-extract", args).returncode == 0
    before = out.read_bytes()
    write_clip(videos / "b.mp4", seconds=3)
    full = command("avaf-extract", args, max_bytes=20_000)
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert f"{out}.shards/" in line and "cannot write about" in line and "File too large" in line, line
    assert out.read_bytes() == before
    again = command("avaf-extract", args)
    assert again.returncode == 0, again.stderr
    assert "written 1, skipped as done 1" in again.stdout
    with FeatureStore(out) as fs:
        assert sorted(fs.video_ids) == ["a", "b"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop CAP_DAC_OVERRIDE")
def test_read_only_places_are_one_line(feats, tiny, npy, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "feats.h5").write_bytes((npy.parent / "source.h5").read_bytes())
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        cases = [
            ("avaf-train", ["--feats", str(feats), "--out", str(locked / "run"), *tiny]),
            ("avaf-export", ["--feats", str(feats), "--out", str(locked / "npy")]),
            ("avaf-import", ["--npy", str(npy), "--out", str(locked / "feats.h5"), "--overwrite"]),
            ("avaf-synth", ["--out", str(locked / "s"), "--num-videos", "1", "--size", "48x48"]),
        ]
        for target, args in cases:
            res = command(target, args, readonly=True)
            assert res.returncode == 2, (target, res.stderr)
            line = one_line(res.stderr)
            assert str(locked) in line and "Permission denied" in line, line
        assert (locked / "feats.h5").read_bytes() == (npy.parent / "source.h5").read_bytes()
    finally:
        locked.chmod(stat.S_IRWXU)


def test_the_size_check_refuses_only_what_cannot_fit(tmp_path):
    """The HDF5 writers' estimate is an upper bound of the real size (HDF5 cannot survive a failed write)."""
    from avaf.shared.store.writer import ShardWriter, new_shard_path

    rng = np.random.default_rng(2)
    for n, seconds, tokens in ((0, 1, 1), (1, 3, 5), (5, 10, 50), (3, 60, 50)):
        w = ShardWriter(new_shard_path(tmp_path / str(n)), {"c": "x" * 3000})
        for i in range(n):
            w.add_video(fake_video(rng, f"v{i}", seconds, n_tokens=tokens, width=64))
        for q in range(2 * n):
            w.add_question(fake_question(rng, q, "v0", "train", width=64))
        estimate = w.nbytes()
        w.close()
        assert w.path.stat().st_size <= estimate <= 2 * w.path.stat().st_size + 200_000


# ---- file modes: what every output gets, checkpoints included ------------------------------------------


def test_every_file_of_a_run_has_the_mode_the_umask_gives(run):
    """safetensors creates its file 0600: the checkpoints were the only outputs others could not read."""
    written = [p for p in run.rglob("*") if p.is_file()]
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in written}
    checkpoints = {"best/model.safetensors", "last/model.safetensors", "last/state-1.pt"}
    assert checkpoints | {"results.json", "delta.png", "metrics.jsonl"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o666 & ~files._umask()), modes  # 0644 under umask 022


def test_atomic_writes_follow_the_umask(tmp_path):
    """Under umask 027 a safetensors file, a torch file and a text file all end 0640, as open() makes them."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o027)
    files._umask.cache_clear()
    try:
        with files.atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"a": torch.zeros(2)}, str(tmp))
        with files.atomic_path(tmp_path / "s.pt") as tmp:
            torch.save({"a": 1}, tmp)
        files.write_text(tmp_path / "r.json", "{}")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("made by open()")
    finally:
        os.umask(old)
        files._umask.cache_clear()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"w.safetensors": 0o640, "s.pt": 0o640, "r.json": 0o640, "plain.txt": 0o640}

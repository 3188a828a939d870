"""feats.h5 grows by appending new shards in place (docs/schema.md, "Self-contained, not links"), and a killed
append leaves the old store (docs/reliability.md, "Runs and outputs").

The append goes through a rollback journal (shared/store/journal.py): these tests kill real appender
processes at several moments and check that the store is then byte for byte the previous one, and that the
next build completes with the same arrays as a full rebuild.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avaf.shared.errors import StoreError
from avaf.shared.store.checksum import array_digest
from avaf.shared.store.journal import HEADER, MAGIC, JournaledFile, journal_path, recover
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import complete_shards, shard_dir

from conftest import fake_question, fake_video, write_shard


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_store(a: Path, b: Path) -> None:
    """Every video, question and run record of `a` equals `b`'s, in the same order: one array digest."""
    with FeatureStore(a) as x, FeatureStore(b) as y:
        assert x.video_ids == y.video_ids
        for vid in x.video_ids:
            u, v = x.video(vid), y.video(vid)
            for k in ("visual_tokens", "visual_pooled", "audio", "audio_valid", "timestamp", "length"):
                np.testing.assert_array_equal(u[k], v[k])
        qx, qy = x.questions(), y.questions()
        assert qx["question_id"].tolist() == qy["question_id"].tolist()
        for k in ("video_id", "audio_video_id", "text", "word_length"):
            assert qx[k].tolist() == qy[k].tolist()
        for qid in qx["question_id"].tolist():
            np.testing.assert_array_equal(x.question_words(qid), y.question_words(qid))
        rx, ry = x.runs(), y.runs()
        key = lambda r: sorted(zip(r["video_id"], r["status"], r["error"]))  # noqa: E731
        assert key(rx) == key(ry)
        assert x.random_weights == y.random_weights
    assert array_digest(a) == array_digest(b)


def rebuilt(out: Path, tmp: Path) -> Path:
    """The full rebuild of out's shards, for comparison."""
    ref = tmp / "reference.h5"
    ref.unlink(missing_ok=True)
    build_store(complete_shards(shard_dir(out)), ref)
    return ref


def test_new_shards_are_appended_in_place_and_equal_a_rebuild(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "feats.h5"
    folder = shard_dir(out)
    write_shard(
        folder,
        [fake_video(rng, f"v{i}", 2 + i % 3) for i in range(6)],
        [("v6", "/v/v6.mp4", "no video stream")],
    )
    write_shard(folder, questions=[fake_question(rng, i, f"v{i}", "train") for i in range(6)])
    build_store(complete_shards(folder), out)
    inode, size = out.stat().st_ino, out.stat().st_size
    # a resumed run: a new video, the failed one now decoded (ids after the stored ones), new questions
    write_shard(folder, [fake_video(rng, "v7", 4), fake_video(rng, "v6", 3)], random=["clip"])
    write_shard(folder, questions=[fake_question(rng, 10 + i, "v6", "val") for i in range(3)])
    counts = build_store(complete_shards(folder), out)
    assert out.stat().st_ino == inode  # appended in place, not rebuilt
    assert counts == {"videos": 8, "questions": 9, "runs": 8, "failed": 0}
    assert not journal_path(out).exists()
    with FeatureStore(out) as fs:
        assert fs.failed() == [] and fs.random_weights == ["clip"]
        assert fs.video_ids[-2:] == ["v6", "v7"]
    same_store(out, rebuilt(out, tmp_path))
    assert out.stat().st_size > size
    # nothing new: the store is left as it is
    before = sha(out)
    build_store(complete_shards(folder), out)
    assert sha(out) == before


def _rebuilt_after(tmp_path, first: list, then: list):
    """A store built from a shard of `first`, then built again after a shard of `then`: the second build
    must replace the file (a rebuild under a temporary name, renamed over), not append to it in place."""
    out = tmp_path / "feats.h5"
    folder = shard_dir(out)
    write_shard(folder, first)
    build_store(complete_shards(folder), out)
    inode = out.stat().st_ino
    write_shard(folder, then)
    build_store(complete_shards(folder), out)
    assert out.stat().st_ino != inode
    return out


def test_a_new_video_that_sorts_before_the_stored_ones_rebuilds_the_store_in_id_order(tmp_path):
    rng = np.random.default_rng(2)
    first = [fake_video(rng, "b", 2), fake_video(rng, "d", 3)]
    then = [fake_video(rng, "c", 2), fake_video(rng, "a", 4)]  # a resumed run's arrival order
    out = _rebuilt_after(tmp_path, first, then)  # rebuilt: an append would leave a and c after d
    with FeatureStore(out) as fs:
        assert fs.video_ids == ["a", "b", "c", "d"] and fs.runs()["video_id"].tolist() == ["a", "b", "c", "d"]
    same_store(out, rebuilt(out, tmp_path))


def test_replaced_features_rebuild_the_store(tmp_path):
    rng = np.random.default_rng(1)
    first = [fake_video(rng, "a", 2), fake_video(rng, "b", 3)]
    out = _rebuilt_after(tmp_path, first, [fake_video(rng, "a", 5)])  # a extracted again: its features change
    with FeatureStore(out) as fs:
        assert fs.video("a")["length"] == 5
    same_store(out, rebuilt(out, tmp_path))


APPENDER = """
import sys
sys.path.insert(0, {tests!r})
from avaf.shared.store.merge import build_store
from avaf.shared.store.writer import complete_shards, shard_dir
from pathlib import Path
out = Path({out!r})
print("go", flush=True)
build_store(complete_shards(shard_dir(out)), out)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A store of 40 videos, and a new shard of 120 larger videos (~40 MB) waiting to be appended."""
    tmp = tmp_path_factory.mktemp("grow")
    rng = np.random.default_rng(2)
    out = tmp / "feats.h5"
    write_shard(shard_dir(out), [fake_video(rng, f"old{i}", 3, n_tokens=50, width=64) for i in range(40)])
    build_store(complete_shards(shard_dir(out)), out)
    big = [fake_video(rng, f"new{i}", 60, n_tokens=50, width=64) for i in range(120)]
    write_shard(shard_dir(out), big)
    return out


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06])
def test_a_killed_append_leaves_the_previous_store_byte_for_byte(grown, tmp_path, delay):
    out = tmp_path / "feats.h5"
    shutil.copyfile(grown, out)
    (tmp_path / "feats.h5.shards").symlink_to(shard_dir(grown))
    before = sha(out)
    code = APPENDER.format(tests=str(Path(__file__).parent), out=str(out))
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "go"
    for _ in range(4000):  # wait for the journal: the append is under way
        if journal_path(out).exists():
            break
        time.sleep(0.002)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    journal = journal_path(out)
    if journal.exists():  # killed mid-append (delay 0 always is: the journal had just appeared)
        assert out.stat().st_size >= len(grown.read_bytes())  # the kill left a half-appended file
        # recover() (what every reader and writer does first) rolls back when the journal's header was
        # written; a kill before that (a loaded machine) left the file untouched and an empty journal to drop
        head = journal.read_bytes()[: len(MAGIC) + HEADER.size]
        assert recover(out) == (len(head) == len(MAGIC) + HEADER.size and head.startswith(MAGIC))
        assert sha(out) == before and not journal.exists()
        with FeatureStore(out) as fs:
            assert len(fs.video_ids) == 40
    else:  # the append committed before the kill: then it is whole, never half
        assert not recover(out)
        with FeatureStore(out) as fs:
            assert len(fs.video_ids) == 160
    build_store(complete_shards(shard_dir(out)), out)  # the next run completes
    with FeatureStore(out) as fs:
        assert len(fs.video_ids) == 160
    same_store(out, rebuilt(out, tmp_path))


def test_a_reader_rolls_back_a_killed_append_itself(tmp_path):
    rng = np.random.default_rng(3)
    out = tmp_path / "feats.h5"
    write_shard(shard_dir(out), [fake_video(rng, "a", 2)])
    build_store(complete_shards(shard_dir(out)), out)
    before = sha(out)
    jf = JournaledFile(out)  # an append that dies: the journal stays, the file is half changed
    jf.seek(0)
    jf.write(b"\0" * 9000)
    jf.seek(0, 2)
    jf.write(b"x" * 5000)
    jf.flush()
    jf._jh.close()  # the process is gone: its lock with it
    with FeatureStore(out) as fs:  # opening rolls back
        assert fs.video_ids == ["a"]
    assert sha(out) == before


def test_a_live_append_is_not_rolled_back_by_a_reader(tmp_path):
    rng = np.random.default_rng(4)
    out = tmp_path / "feats.h5"
    write_shard(shard_dir(out), [fake_video(rng, "a", 2)])
    build_store(complete_shards(shard_dir(out)), out)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from avaf.shared.store.journal import JournaledFile\n"
         f"j = JournaledFile({str(out)!r})\nprint('held', flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="is being appended to by another process"):
            FeatureStore(out)
    finally:
        holder.kill()
        holder.wait()
    with FeatureStore(out) as fs:  # the holder died: its journal is rolled back
        assert fs.video_ids == ["a"]


def test_a_journal_record_cut_short_is_ignored(tmp_path):
    path = tmp_path / "f.bin"
    original = bytes(range(256)) * 64  # 16 KiB
    path.write_bytes(original)
    jf = JournaledFile(path)
    jf.seek(100)
    jf.write(b"A" * 10)  # page 0 saved
    jf.seek(3 * 4096 + 5)
    jf.write(b"B" * 10)  # page 3 saved
    jf.flush()
    jf._jh.close()
    journal = journal_path(path)
    journal.write_bytes(journal.read_bytes()[:-100])  # the last record cut by the kill (never overwritten)
    with open(path, "r+b") as fh:  # so page 3 must still hold its original bytes
        fh.seek(3 * 4096 + 5)
        fh.write(original[3 * 4096 + 5 : 3 * 4096 + 15])
    assert recover(path)
    assert path.read_bytes() == original


@pytest.mark.parametrize("kept", [0, 5, len(MAGIC) + HEADER.size - 1])
def test_a_journal_killed_inside_its_header_is_dropped_and_the_file_left_alone(tmp_path, kept):
    """The appender died before its journal's header was whole: it had not touched the file yet."""
    path = tmp_path / "f.bin"
    original = bytes(range(256)) * 20
    path.write_bytes(original)
    journal_path(path).write_bytes((MAGIC + HEADER.pack(len(original)))[:kept])
    assert not recover(path)
    assert path.read_bytes() == original and not journal_path(path).exists()


def test_a_store_of_failures_only_is_built_and_then_grows_by_a_rebuild(tmp_path):
    """A first run where every video failed: the store has no feature width yet, so it cannot be chunked to
    grow; the next run with features rebuilds it (and later runs append)."""
    rng = np.random.default_rng(5)
    out = tmp_path / "feats.h5"
    folder = shard_dir(out)
    write_shard(folder, failures=[("a", "/v/a.mp4", "no video stream")])
    assert build_store(complete_shards(folder), out) == {"videos": 0, "questions": 0, "runs": 1, "failed": 1}
    write_shard(folder, [fake_video(rng, "a", 3)])
    assert build_store(complete_shards(folder), out)["failed"] == 0
    inode = out.stat().st_ino
    write_shard(folder, [fake_video(rng, "b", 2)])
    assert build_store(complete_shards(folder), out)["videos"] == 2
    assert out.stat().st_ino == inode  # appended
    same_store(out, rebuilt(out, tmp_path))

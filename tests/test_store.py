"""The feature store: bit-exact round trips, bulk reads, refusals, merge rules, and a real kill of a writer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from avaf.shared.errors import StoreError
from avaf.shared.store import schema
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, shard_dir

import conftest
from conftest import fake_question, fake_video

CONFIG = {"clip_model": "tiny", "fps": 1}


def write_shard(folder, videos=(), failures=(), questions=(), config=CONFIG, signature=None, random=()):
    return conftest.write_shard(folder, videos, failures, questions, config, signature, random)


@pytest.fixture
def store(tmp_path):
    """Two shards with videos of different lengths, a failure and questions, merged into feats.h5."""
    rng = np.random.default_rng(7)
    videos = [fake_video(rng, f"{i:08d}", seconds=2 + i) for i in range(5)]
    questions = [
        fake_question(rng, 100 + i, videos[i % 5].video_id, "test" if i % 3 else "val") for i in range(9)
    ]
    shards = shard_dir(tmp_path / "feats.h5")
    write_shard(shards, videos[:3], [("broken", "/videos/broken.mp4", "DecodeError: moov atom not found")])
    write_shard(shards, videos[3:], questions=questions)
    build_store(complete_shards(shards), tmp_path / "feats.h5")
    return tmp_path / "feats.h5", videos, questions


def test_write_then_read_is_bit_exact_for_every_field(store):
    path, videos, questions = store
    with FeatureStore(path) as fs:
        assert fs.video_ids == [v.video_id for v in videos]
        for v in videos:
            got = fs.video(v.video_id)
            for name in schema.SECONDS.names:
                want = np.asarray(getattr(v, name))
                assert got[name].dtype == np.dtype(schema.SECONDS.column(name).dtype)
                assert got[name].tobytes() == want.astype(got[name].dtype).tobytes(), name
            assert got["length"] == v.length
            assert got["source_path"] == v.source_path
            assert got["source_size"] == v.source_size
            assert got["duration"] == v.duration
            assert got["has_audio"] == v.has_audio
            assert got["audio_seconds"] == int(v.audio_valid.sum())
            assert got["decoder"] == v.decoder and got["streams"] == v.streams
        q = fs.questions()
        assert q["question_id"].tolist() == [x.question_id for x in questions]
        for i, x in enumerate(questions):
            for name in ("video_id", "split", "text", "type", "answer"):
                assert q[name][i] == getattr(x, name)
            assert q["sentence"][i].tobytes() == x.sentence.tobytes()
            assert fs.question_words(x.question_id).tobytes() == x.words.tobytes()
        assert fs.failed() == [("broken", "/videos/broken.mp4", "DecodeError: moov atom not found")]
        assert fs.config == CONFIG and fs.random_weights == [] and fs.kind == "store"


def test_bulk_load_equals_per_video_reads(store):
    path, videos, _ = store
    with FeatureStore(path) as fs:
        wanted = [videos[4].video_id, videos[1].video_id, videos[2].video_id, videos[1].video_id]
        bulk = fs.load_videos(wanted)
        assert bulk.video_ids == [videos[1].video_id, videos[2].video_id, videos[4].video_id]
        assert bulk.length.tolist() == [3, 4, 6] and bulk.offset.tolist() == [0, 3, 7]
        for vid in bulk.video_ids:
            one = fs.video(vid)
            for name in schema.SECONDS.names:
                np.testing.assert_array_equal(bulk.get(vid, name), one[name])
        everything = fs.load_videos()
        assert everything.arrays["visual_tokens"].shape == (sum(v.length for v in videos), 5, 8)
        q = fs.questions(split="test")
        words, offset = fs.load_words(q["word_offset"], q["word_length"])
        for i, qid in enumerate(q["question_id"]):
            np.testing.assert_array_equal(
                words[offset[i] : offset[i] + q["word_length"][i]], fs.question_words(qid)
            )


def test_split_and_real_subset_selection(store):
    path, _, questions = store
    with FeatureStore(path) as fs:
        assert len(fs.questions(split="val")["question_id"]) == 3  # i = 0, 3, 6
        assert len(fs.questions(split="test")["question_id"]) == 6
        assert len(fs.questions(subset="real")["question_id"]) == 9  # all ids are digits
        with pytest.raises(ValueError, match="unknown subset"):
            fs.questions(subset="fake")


def test_other_schema_version_is_refused_naming_both_versions(store, tmp_path):
    path, _, _ = store
    old = tmp_path / "old.h5"
    shutil.copy(path, old)
    with h5py.File(old, "a") as f:
        f.attrs["schema_version"] = 3
    with pytest.raises(StoreError) as e:
        FeatureStore(old)
    msg = str(e.value)
    assert str(old) in msg and "schema version 3" in msg and "reads schema versions 1 and 2" in msg


def test_truncated_file_is_refused(store, tmp_path):
    path, _, _ = store
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated or corrupt") as e:
        FeatureStore(cut)
    assert str(cut) in str(e.value)


def test_files_that_are_not_ours_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        FeatureStore(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not an avaf feature file") as e:
        FeatureStore(foreign)
    assert str(foreign) in str(e.value)
    with pytest.raises(StoreError, match="no such feature file"):
        FeatureStore(tmp_path / "missing.h5")


def test_merge_later_shards_win_and_success_is_never_hidden(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "shards"
    first = fake_video(rng, "a", 3)
    second = fake_video(rng, "a", 4)
    write_shard(folder, [first], [("b", "/v/b.mp4", "timed out")])
    write_shard(folder, [second, fake_video(rng, "b", 2)], [("c", "/v/c.mp4", "no video stream")])
    write_shard(folder, failures=[("a", "/v/a.mp4", "flaky failure")])
    counts = build_store(complete_shards(folder), tmp_path / "feats.h5")
    assert counts == {"videos": 2, "questions": 0, "runs": 3, "failed": 1}
    with FeatureStore(tmp_path / "feats.h5") as fs:
        np.testing.assert_array_equal(fs.video("a")["visual_tokens"], second.visual_tokens)
        runs = dict(zip(fs.runs()["video_id"], fs.runs()["status"]))
        assert runs == {"a": "ok", "b": "ok", "c": "failed"}
        assert fs.failed() == [("c", "/v/c.mp4", "no video stream")]


def test_shards_of_different_encoders_are_not_mixed(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "shards"
    a = write_shard(folder, [fake_video(rng, "a", 2)], signature={"clip": "ViT-B-32"})
    b = write_shard(folder, [fake_video(rng, "b", 2)], signature={"clip": "ViT-L-14"})
    with pytest.raises(StoreError) as e:
        build_store([a, b], tmp_path / "feats.h5")
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert "(clip ViT-L-14 vs ViT-B-32)" in str(e.value)


def test_shards_encoded_at_another_precision_are_refused_naming_the_key(tmp_path):
    """A GPU node's fp16 shard and a CPU node's fp32 shard: mixed, a video's features would depend on the
    node that encoded it, so the merge refuses and names the key (the README's mixed-precision decision)."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "shards"
    sig = {"clip": {"model_name": "ViT-B-32", "precision": "fp32"}, "vggish": {"precision": "fp32"}, "fps": 1}
    gpu = {"clip": {"model_name": "ViT-B-32", "precision": "fp16"}, "vggish": {"precision": "fp16"}, "fps": 1}
    a = write_shard(folder, [fake_video(rng, "a", 2)], signature=sig)
    b = write_shard(folder, [fake_video(rng, "b", 2)], signature=gpu)
    with pytest.raises(StoreError, match="--precision") as e:
        build_store([a, b], tmp_path / "feats.h5")
    assert "(clip.precision fp16 vs fp32; vggish.precision fp16 vs fp32)" in str(e.value)
    assert not (tmp_path / "feats.h5").exists()


def test_random_weights_are_recorded(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "shards"
    write_shard(folder, [fake_video(rng, "a", 2)], random=["vggish"])
    write_shard(folder, [fake_video(rng, "b", 2)], random=["clip"])
    build_store(complete_shards(folder), tmp_path / "feats.h5")
    with FeatureStore(tmp_path / "feats.h5") as fs:
        assert fs.random_weights == ["clip", "vggish"]


def test_mismatched_widths_in_one_shard_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    w = ShardWriter(tmp_path / "s.h5", CONFIG)
    w.add_video(fake_video(rng, "a", 2, width=8))
    with pytest.raises(StoreError, match="D = 16"):
        w.add_video(fake_video(rng, "b", 2, width=16))


def test_reader_needs_neither_torch_nor_ray():
    code = (
        "import sys, avaf.shared.store.reader, avaf.shared.store.writer, avaf.shared.store.describe;"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# A writer that adds one shard and rebuilds feats.h5 per step, announcing each phase on stdout.
WRITER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from conftest import fake_video
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir
from avaf.shared.store.merge import build_store
out, step = {out!r}, {step}
rng = np.random.default_rng(step)
w = ShardWriter(new_shard_path(shard_dir(out)), {{"step": "any"}})
for i in range(8):
    w.add_video(fake_video(rng, f"s{{step}}v{{i}}", 60, n_tokens=50, width=512))
print("shard", flush=True)
w.close()
print("build", flush=True)
build_store(complete_shards(shard_dir(out)), out)
print("done", flush=True)
"""


def _start_writer(out, step):
    from pathlib import Path

    code = WRITER.format(tests=str(Path(__file__).parent), out=str(out), step=step)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _assert_store_consistent(out):
    """feats.h5 opens, and every video in it equals the same video in a complete shard."""
    shards = complete_shards(shard_dir(out))
    by_id = {}
    for p in shards:
        with FeatureStore(p) as s:
            for vid in s.video_ids:
                by_id[vid] = (p, s.video(vid)["visual_tokens"][:, :2, :4].copy())
    with FeatureStore(out) as fs:
        for vid in fs.video_ids:
            np.testing.assert_array_equal(fs.video(vid)["visual_tokens"][:, :2, :4], by_id[vid][1])
        return set(fs.video_ids)


@pytest.mark.parametrize("phase", ["shard", "build"])
def test_a_killed_writer_loses_only_work_in_flight(tmp_path, phase):
    out = tmp_path / "feats.h5"
    ok = _start_writer(out, 0)
    assert ok.wait(timeout=120) == 0
    before = _assert_store_consistent(out)
    assert len(before) == 8
    victim = _start_writer(out, 1)
    while victim.stdout.readline().strip() != phase:
        pass
    # Kill as soon as a temporary file of this phase exists: the write is really in flight. A shard is
    # written under a temporary name; the new shard is appended to feats.h5 in place, with a journal.
    folder = shard_dir(out) if phase == "shard" else tmp_path
    mark = ".tmp-" if phase == "shard" else "-journal"
    for _ in range(2000):
        if any(mark in p.name for p in folder.iterdir()):
            break
        subprocess.run(["sleep", "0.005"])
    victim.kill()
    victim.wait()
    leftovers = [p for p in folder.iterdir() if mark in p.name]
    assert leftovers, "the kill came too late to interrupt a write"
    assert _assert_store_consistent(out) == before  # the previous feats.h5 is intact (rolled back)
    assert len(complete_shards(shard_dir(out))) == (1 if phase == "shard" else 2)
    # The next run picks up from there: the complete shards are merged, the leftovers ignored.
    again = _start_writer(out, 2)
    assert again.wait(timeout=120) == 0
    after = _assert_store_consistent(out)
    assert len(after) == (16 if phase == "shard" else 24)


def test_inspect_prints_counts(store):
    from click.testing import CliRunner

    from avaf.shared.store.inspect_cli import main

    path, videos, _ = store
    res = CliRunner().invoke(main, [str(path), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["counts"]["videos"] == 5 and d["counts"]["seconds"] == 2 + 3 + 4 + 5 + 6
    assert d["counts"]["questions"] == 9 and d["counts"]["failed_videos"] == 1
    assert d["questions_per_split"] == {"test": 6, "val": 3}
    assert d["questions_per_split_and_type"]["test"] == {"Audio-Visual/Existential": 6}
    assert d["datasets"]["seconds/visual_tokens"] == {"shape": [20, 5, 8], "dtype": "float16"}
    assert d["failed"][0]["error"] == "DecodeError: moov atom not found"
    text = CliRunner().invoke(main, [str(path)]).output
    assert "videos 5 (20 seconds" in text and "questions 9" in text and "broken" in text
    assert "RANDOM WEIGHTS" not in text


def test_inspect_warns_loudly_about_random_weights_and_refuses_bad_files(tmp_path):
    from click.testing import CliRunner

    from avaf.shared.store.inspect_cli import main

    rng = np.random.default_rng(5)
    write_shard(tmp_path / "s", [fake_video(rng, "a", 2)], random=["clip", "vggish"])
    build_store(complete_shards(tmp_path / "s"), tmp_path / "feats.h5")
    assert "RANDOM WEIGHTS: clip, vggish" in CliRunner().invoke(main, [str(tmp_path / "feats.h5")]).output
    (tmp_path / "bad.h5").write_text("nope")
    res = CliRunner().invoke(main, [str(tmp_path / "bad.h5")])
    assert res.exit_code == 2 and "bad.h5: not an HDF5 file" in res.output

"""Named feature sets (store schema 2, docs/schema.md): a second set of TSPM's shapes beside avaf through
shards, merge, append, reader and avaf-inspect; schema-1 files read as the avaf set; what the writer, the
merge and avaf-train refuse."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avaf.shared.errors import StoreError
from avaf.shared.store import schema
from avaf.shared.store.describe import describe_store
from avaf.shared.store.inspect_cli import main as inspect_main
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import Encoder, FeatureArray
from avaf.shared.store.sets import avaf_set
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

from conftest import fake_question, fake_video

L14 = Encoder("ViT-L-14-336", "openai", "b" * 64, False, "open_clip")
TSPM = {  # name: table, role, shape of a row, encoder: the tspm pack at its real widths
    "audio": ("seconds", "audio", (128,), Encoder("vggish", "default", "a" * 64, False, "avaf")),
    "frame": ("seconds", "visual", (768,), L14),
    "tome": (
        "seconds",
        "visual",
        (14, 1024),
        Encoder("vit_large_patch16_384", "in21k", "c" * 64, False, "timm"),
    ),
    "sentence": ("questions", "text", (768,), L14),
    "words": ("questions", "text", (77, 768), L14),
    "prompt": ("questions", "text", (768,), L14),
}
TOME_PRE = {"resize": "shorter side 438, bicubic", "crop": 384, "mean": [0.5] * 3, "std": [0.5] * 3, "r": 25}
SIGNATURE = {  # what avaf-extract records of ViT-B/32 and VGGish (encoders/stage.py), abridged
    "clip": {
        "name": "open_clip",
        "model_name": "ViT-B-32",
        "pretrained": "openai",
        "weights_sha256": "d" * 64,
    },
    "clip_sha256": "d" * 64,
    "vggish": {"name": "vggish", "weights": "default", "weights_sha256": "e" * 64, "random": False},
    "vggish_sha256": "e" * 64,
    "image_size": 224,
}


def tspm_set(names=tuple(TSPM)) -> dict[str, FeatureArray]:
    """The fabricated second set: TSPM's arrays, encoders and a preprocessing record."""
    return {
        n: FeatureArray(
            "tspm", n, TSPM[n][0], TSPM[n][1], TSPM[n][3], TOME_PRE if n == "tome" else {}, TSPM[n][2]
        )
        for n in names
    }


def with_tspm(rng, item, seconds: int | None = None, no_prompt: bool = False):
    """`item` (a VideoFeatures, or a QuestionFeatures when seconds is None) with random tspm arrays."""
    table = "seconds" if seconds is not None else "questions"
    lead = (seconds,) if seconds is not None else ()
    item.sets["tspm"] = {
        n: rng.standard_normal((*lead, *shape)).astype(np.float16)
        for n, (t, _, shape, _) in TSPM.items()
        if t == table
    }
    if no_prompt:
        item.sets["tspm"]["prompt"] = None  # a template the prompt table lacks
    return item


def write(folder, videos=(), questions=(), sets=None, signature=SIGNATURE):
    with ShardWriter(new_shard_path(folder), {"test": "sets"}, signature, feature_sets=sets) as w:
        for v in videos:
            w.add_video(v)
        for q in questions:
            w.add_question(q)
    return w.path


def both_sets() -> dict:
    return {"avaf": avaf_set(SIGNATURE), "tspm": tspm_set()}


@pytest.fixture
def two_sets(tmp_path):
    """feats.h5 of the avaf and tspm sets from two shards (videos of 2, 3 and 1 s; six questions, two
    without a prompt feature); and the records written."""
    rng = np.random.default_rng(25)
    videos = [with_tspm(rng, fake_video(rng, f"v{i}", t), t) for i, t in enumerate((2, 3, 1))]
    questions = [
        with_tspm(rng, fake_question(rng, i, f"v{i % 3}", "test" if i % 2 else "val"), no_prompt=i in (1, 4))
        for i in range(6)
    ]
    shards = shard_dir(tmp_path / "feats.h5")
    write(shards, videos[:2], sets=both_sets())
    write(shards, videos[2:], questions, sets=both_sets())
    build_store(complete_shards(shards), tmp_path / "feats.h5")
    return tmp_path / "feats.h5", videos, questions


def test_a_second_set_round_trips_through_shards_merge_and_reader(two_sets):
    path, videos, questions = two_sets
    with FeatureStore(path) as fs:
        assert fs.schema_version == 2 and sorted(fs.sets) == ["avaf", "tspm"]
        assert sorted(fs.sets["avaf"]) == ["audio", "sentence", "visual_pooled", "visual_tokens", "words"]
        for name, (table, role, shape, encoder) in TSPM.items():
            a = fs.sets["tspm"][name]
            assert (a.table, a.role, a.shape, a.encoder, a.path) == (
                table,
                role,
                shape,
                encoder,
                f"{table}/tspm/{name}",
            )
        tome, words = fs.sets["tspm"]["tome"], fs.sets["tspm"]["words"]
        assert (tome.tokens, tome.width, words.tokens, fs.sets["tspm"]["frame"].tokens) == (14, 1024, 77, 1)
        assert tome.preprocessing == TOME_PRE and fs.sets["avaf"]["audio"].shape == (128,)
        for v in videos:
            for name in ("audio", "frame", "tome"):
                np.testing.assert_array_equal(fs.video_array(v.video_id, "tspm", name), v.sets["tspm"][name])
            got = fs.video(v.video_id)
            for name in schema.SECONDS.names:  # the avaf set as before
                np.testing.assert_array_equal(got[name], getattr(v, name))
        bulk = fs.load_videos(fields=(fs.array("tspm", "tome").key,))
        np.testing.assert_array_equal(
            bulk.arrays["tspm/tome"], np.concatenate([v.sets["tspm"]["tome"] for v in videos])
        )
        for name in ("sentence", "words", "prompt"):
            want = np.stack(
                [
                    q.sets["tspm"][name]
                    if q.sets["tspm"][name] is not None
                    else np.full(TSPM[name][2], np.nan, np.float16)
                    for q in questions
                ]
            )
            np.testing.assert_array_equal(fs.question_array("tspm", name), want)  # NaN == NaN here
            np.testing.assert_array_equal(fs.question_array("tspm", name, split="test"), want[1::2])
        assert np.isnan(fs.question_array("tspm", "prompt")).all(axis=1).tolist() == [
            i in (1, 4) for i in range(6)
        ]
        q = fs.questions()
        assert "tspm/words" not in q  # another set's arrays are read by name only
        np.testing.assert_array_equal(q["sentence"], np.stack([x.sentence for x in questions]))
        np.testing.assert_array_equal(fs.question_words(3), questions[3].words)


def test_reading_by_name_refuses_what_the_store_lacks(two_sets):
    with FeatureStore(two_sets[0]) as fs:
        with pytest.raises(
            StoreError, match=r"no feature array tspm/patches; its feature sets: avaf \(audio, "
        ):
            fs.array("tspm", "patches")
        with pytest.raises(ValueError, match="per-question array, not per second"):
            fs.video_array("v0", "tspm", "sentence")


def test_appending_a_shard_of_both_sets_equals_a_rebuild(two_sets, tmp_path):
    path, videos, questions = two_sets
    rng = np.random.default_rng(1)
    out = tmp_path / "grown.h5"
    first = write(shard_dir(out), videos[:2], sets=both_sets())
    build_store([first], out)
    inode = out.stat().st_ino
    second = write(shard_dir(out), videos[2:], questions, sets=both_sets())
    later = write(shard_dir(out), [with_tspm(rng, fake_video(rng, "v9", 2), 2)], sets=both_sets())
    build_store([first, second, later], out)
    assert out.stat().st_ino == inode  # appended in place, through the journal
    with FeatureStore(out) as fs, FeatureStore(path) as ref:
        assert fs.sets == {s: {n: a for n, a in arrays.items()} for s, arrays in ref.sets.items()}
        for name in ("audio", "frame", "tome"):
            np.testing.assert_array_equal(
                fs.video_array("v2", "tspm", name), ref.video_array("v2", "tspm", name)
            )
        np.testing.assert_array_equal(fs.question_array("tspm", "words"), ref.question_array("tspm", "words"))
        assert fs.video_array("v9", "tspm", "tome").shape == (2, 14, 1024)


def test_inspect_lists_the_sets(two_sets):
    path = str(two_sets[0])
    text = CliRunner().invoke(inspect_main, [path]).output
    assert "schema v2" in text and "feature sets: avaf, tspm" in text
    lines = {
        line.split()[0]: line
        for line in text.splitlines()
        if line.startswith("    avaf/") or line.startswith("    tspm/")
    }
    assert lines["tspm/tome"].split() == [
        "tspm/tome",
        "visual",
        "per",
        "second",
        "(14,",
        "1024)",
        "vit_large_patch16_384",
        "(in21k)",
        "sha256",
        "c" * 12,
    ]
    assert "per question (77, 768)" in " ".join(lines["tspm/words"].split())
    assert (
        "per word (L, 512)" not in text
        and "avaf/words text per word (L, 8) ViT-B-32 (openai) sha256 dddddddddddd" in " ".join(text.split())
    )
    assert "seconds/tspm/tome" in text and "questions/tspm/prompt" in text
    d = json.loads(CliRunner().invoke(inspect_main, [path, "--json"]).output)
    assert d["feature_sets"]["tspm"]["words"]["shape"] == [77, 768]
    assert d["feature_sets"]["tspm"]["tome"]["encoder"]["weights_sha256"] == "c" * 64
    assert d["datasets"]["seconds/tspm/tome"] == {"shape": [6, 14, 1024], "dtype": "float16"}


def _as_schema_1(path):
    """The file as avaf 0.x wrote it: the same datasets, schema_version 1, no feature_sets attribute."""
    with h5py.File(path, "a") as f:
        del f.attrs[schema.SETS_ATTR]
        f.attrs["schema_version"] = 1


def test_a_schema_1_file_reads_as_the_avaf_set_without_being_rewritten(tmp_path):
    rng = np.random.default_rng(2)
    videos = [fake_video(rng, f"v{i}", 2 + i) for i in range(3)]
    questions = [fake_question(rng, i, f"v{i}", "test") for i in range(3)]
    out = tmp_path / "old.h5"
    write(shard_dir(out), videos, questions)
    build_store(complete_shards(shard_dir(out)), out)
    _as_schema_1(out)
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    with FeatureStore(out) as fs:
        assert fs.schema_version == 1 and sorted(fs.sets) == ["avaf"]
        avaf = fs.sets["avaf"]
        assert avaf["visual_tokens"].encoder == Encoder("ViT-B-32", "openai", "d" * 64, False, "open_clip")
        assert avaf["audio"].encoder == Encoder("vggish", "default", "e" * 64, False, "avaf")
        assert (avaf["audio"].width, avaf["visual_tokens"].tokens, avaf["words"].tokens) == (128, 5, None)
        assert avaf["visual_tokens"].preprocessing["image_size"] == 224
        for v in videos:
            np.testing.assert_array_equal(fs.video_array(v.video_id, "avaf", "audio"), v.audio)
            np.testing.assert_array_equal(fs.video(v.video_id)["visual_tokens"], v.visual_tokens)
        np.testing.assert_array_equal(
            fs.question_array("avaf", "sentence"), np.stack([q.sentence for q in questions])
        )
    assert describe_store(out)["feature_sets"]["avaf"]["audio"]["shape"] == [128]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before  # read, never rewritten


def test_schema_1_shards_and_stores_grow_with_new_shards(tmp_path):
    """A run resumed with this avaf over the shards and the store an older one wrote: the new shards are
    appended to the schema-1 store in place, which becomes schema 2; a rebuild merges old and new shards."""
    rng = np.random.default_rng(3)
    folder, out = shard_dir(tmp_path / "feats.h5"), tmp_path / "feats.h5"
    old = write(folder, [fake_video(rng, "a", 2)])
    build_store([old], out)
    _as_schema_1(old)
    _as_schema_1(out)
    inode = out.stat().st_ino
    write(folder, [fake_video(rng, "b", 3)])
    build_store(complete_shards(folder), out)
    assert out.stat().st_ino == inode  # appended in place
    _check_grown(out)
    out.unlink()
    build_store(complete_shards(folder), out)  # rebuilt from a schema-1 shard and a schema-2 one
    _check_grown(out)


def _check_grown(out):
    with FeatureStore(out) as fs:
        assert fs.schema_version == 2 and fs.video_ids == ["a", "b"] and sorted(fs.sets) == ["avaf"]
        assert fs.sets["avaf"]["visual_tokens"].encoder.model == "ViT-B-32"
    with h5py.File(out, "r") as f:  # the attribute records the shapes of the store's datasets
        assert json.loads(f.attrs[schema.SETS_ATTR])["avaf"]["visual_tokens"]["shape"] == [5, 8]


def test_shards_of_other_sets_are_not_merged(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "shards"
    first = write(folder, [fake_video(rng, "a", 2)])
    second = write(folder, [with_tspm(rng, fake_video(rng, "b", 2), 2)], sets=both_sets())
    with pytest.raises(StoreError) as e:
        build_store([first, second], tmp_path / "feats.h5")
    assert str(second) in str(e.value) and str(first) in str(e.value) and "tspm/tome" in str(e.value)


def test_the_writer_refuses_arrays_outside_its_sets_missing_ones_and_wrong_shapes(tmp_path):
    rng = np.random.default_rng(5)
    avaf_only = ShardWriter(tmp_path / "a.h5", {}, SIGNATURE)
    with pytest.raises(
        StoreError, match=r"gives tspm/audio, tspm/frame, tspm/tome, which this shard's feature sets \(avaf\)"
    ):
        avaf_only.add_video(with_tspm(rng, fake_video(rng, "a", 2), 2))
    both = ShardWriter(tmp_path / "b.h5", {}, SIGNATURE, feature_sets=both_sets())
    v = with_tspm(rng, fake_video(rng, "a", 2), 2)
    del v.sets["tspm"]["tome"]
    with pytest.raises(StoreError, match="video 'a' lacks tspm/tome, which this shard holds"):
        both.add_video(v)
    v.sets["tspm"]["tome"] = np.zeros((2, 13, 1024), np.float16)
    with pytest.raises(StoreError, match=r"tspm/tome has rows of shape \(13, 1024\), expected \(14, 1024\)"):
        both.add_video(v)
    q = with_tspm(rng, fake_question(rng, 1, "a", "val"))
    q.sets["tspm"]["sentence"] = None  # only another set's per-question arrays may lack a value
    both.add_question(q)
    q.words = None
    with pytest.raises(StoreError, match="question 1 lacks avaf/words"):
        both.add_question(q)
    for bad in ("audio", "Tspm", "avaf"):
        sets = {bad: {n: FeatureArray(bad, n, *TSPM[n][:2], TSPM[n][3]) for n in ("frame",)}}
        with pytest.raises(StoreError, match="feature set name|the avaf set's arrays are"):
            ShardWriter(tmp_path / "c.h5", {}, feature_sets=sets)


def _tspm_only_store(tmp_path):
    """A store of the tspm set alone (`--features tspm`): no avaf array."""
    rng = np.random.default_rng(6)
    out = tmp_path / "tspm.h5"
    videos = []
    for i in range(4):
        v = fake_video(rng, f"v{i}", 2)
        v.visual_tokens = v.visual_pooled = v.audio = None
        videos.append(with_tspm(rng, v, 2))
    questions = []
    for i in range(4):
        q = with_tspm(rng, fake_question(rng, i, f"v{i}", ("train", "val", "test", "test")[i]))
        q.words = q.sentence = None
        questions.append(q)
    write(shard_dir(out), videos, questions, sets={"tspm": tspm_set()})
    build_store(complete_shards(shard_dir(out)), out)
    return out


def test_a_store_of_another_set_alone_reads_and_avaf_train_refuses_it_in_one_line(tmp_path):
    from avaf.train.cli import main as train_main

    feats = _tspm_only_store(tmp_path)
    with FeatureStore(feats) as fs:
        assert sorted(fs.sets) == ["tspm"] and "sentence" not in fs.questions()
        assert fs.question_array("tspm", "words", split="test").shape == (2, 77, 768)
        assert not fs.has(schema.SECONDS, "visual_tokens")
    res = CliRunner().invoke(train_main, ["--feats", str(feats), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and str(feats) in res.output
    assert (
        "avaf-train needs avaf/visual_tokens, avaf/audio, avaf/words, avaf/sentence, which this store lacks"
        in res.output
    )
    assert "its feature sets: tspm (audio, frame, prompt, sentence, tome, words)" in res.output
    assert not (tmp_path / "run" / "config.json").exists()


def test_avaf_train_takes_the_audio_width_from_the_store(tmp_path):
    """An audio encoder of another width (16 here, VGGish 128): model.audio_dim follows the store."""
    from avaf.train.config import load_config
    from avaf.train.loop import train

    rng = np.random.default_rng(7)
    videos, questions = [], []
    for i in range(6):
        v = fake_video(rng, f"v{i}", 3)
        v.audio = rng.random((3, 16)).astype(np.float16)
        videos.append(v)
        questions.append(
            fake_question(rng, i, v.video_id, ("train", "train", "val", "val", "test", "test")[i])
        )
    out = tmp_path / "feats.h5"
    write(shard_dir(out), videos, questions, signature={"test": "audio width"})
    build_store(complete_shards(shard_dir(out)), out)
    flags = {"model.dim": 8, "model.ffn_dim": 16, "optim.epochs": 1, "optim.max_steps": 1, "run.threads": 1}
    cfg = load_config(None, {**flags, "data.feats": str(out), "run.out_dir": str(tmp_path / "run")})
    assert cfg.model.audio_dim == 128
    train(cfg, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["audio_dim"] == 16


def test_the_npy_export_reads_the_avaf_set_of_a_two_set_store(two_sets, tmp_path):
    from avaf.shared.exchange.npy_folders import export_npy

    path, videos, questions = two_sets
    report = export_npy(path, tmp_path / "npy")
    assert (report.videos, report.questions) == (3, 6)
    for v in videos:
        np.testing.assert_array_equal(
            np.load(tmp_path / "npy" / "vggish" / f"{v.video_id}.npy"), v.audio.astype(np.float32)
        )
        assert np.load(tmp_path / "npy" / "clip_vit_b32" / f"{v.video_id}.npy").shape == v.visual_tokens.shape
    with pytest.raises(StoreError, match="avaf-export .the avaf set. needs avaf/visual_tokens"):
        export_npy(_tspm_only_store(tmp_path), tmp_path / "npy2")

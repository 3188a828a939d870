"""avaf-export / avaf-import: the repositories' .npy layout, exact round trips, per-item import reports, CLI parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avaf.shared.exchange import EXPORTERS
from avaf.shared.exchange.cli import export_main, import_main
from avaf.shared.exchange.npy_folders import (
    ExchangeError,
    ExportOptions,
    ExportReport,
    ImportOptions,
    export_npy,
    import_npy,
)
from avaf.shared.store import schema
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

from conftest import fake_question, fake_video, write_store

CONFIG = {"clip": {"model_name": "ViT-B-32", "context_length": 77}, "fps": 1}
SIGNATURE = {"clip": "ViT-B-32/openai", "vggish": "torchvggish"}


@pytest.fixture
def source(tmp_path):
    """A store at the paper's shapes (50 tokens of width 512), three short videos, six questions."""
    rng = np.random.default_rng(5)
    videos = [
        fake_video(rng, vid, t, n_tokens=50, width=512) for vid, t in (("00000007", 2), ("va01", 3), ("3", 2))
    ]
    for v in videos:  # extraction pools separately: the pooled embedding may differ from token 0 by rounding
        v.visual_pooled = (v.visual_pooled.astype(np.float32) * 1.001).astype(np.float16)
    questions = [
        fake_question(rng, 40 + i, videos[i % 3].video_id, ("val", "test")[i % 2], 512) for i in range(6)
    ]
    questions[-1].words[-1] = 0  # a zero last row: only the manifest's L (not zero trimming) recovers it
    return write_store(tmp_path / "src.h5", videos, questions, CONFIG, SIGNATURE, ["clip"])


def test_export_writes_the_repositories_layout_and_a_manifest(source, tmp_path):
    out = tmp_path / "npy"
    report = export_npy(source, out)
    assert (report.videos, report.questions, report.files) == (3, 6, 3 * 3 + 6 * 2)
    with FeatureStore(source) as fs:
        for vid in fs.video_ids:
            v = fs.video(vid)
            audio, tokens = (
                np.load(out / "vggish" / f"{vid}.npy"),
                np.load(out / "clip_vit_b32" / f"{vid}.npy"),
            )
            pooled = np.load(out / "clip_vit_b32_pooled" / f"{vid}.npy")
            t = int(v["length"])
            assert audio.shape == (t, 128) and tokens.shape == (t, 50, 512) and pooled.shape == (t, 512)
            assert audio.dtype == tokens.dtype == pooled.dtype == np.float32
            np.testing.assert_array_equal(tokens, v["visual_tokens"].astype(np.float32))
            np.testing.assert_array_equal(pooled, v["visual_pooled"].astype(np.float32))
            assert np.abs(tokens[:, 0] - pooled).max() < 0.01 * np.abs(pooled).max()  # CLS first
            np.testing.assert_array_equal(audio, v["audio"].astype(np.float32))
        q = fs.questions()
        for qid, n, sentence in zip(q["question_id"], q["word_length"], q["sentence"]):
            words, qst = np.load(out / "clip_word" / f"{qid}.npy"), np.load(out / "clip_qst" / f"{qid}.npy")
            assert words.shape == (1, 77, 512) and qst.shape == (1, 512)
            np.testing.assert_array_equal(words[0, :n], fs.question_words(qid).astype(np.float32))
            assert not words[0, n:].any()
            np.testing.assert_array_equal(qst[0], sentence.astype(np.float32))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"] == CONFIG and manifest["signature"] == SIGNATURE
        assert manifest["random_weights"] == ["clip"] and manifest["source"] == str(source)
        assert [m["word_length"] for m in manifest["questions"]] == q["word_length"].tolist()
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.npy")}
    assert set(manifest["files"]) == on_disk and len(manifest["files"]) == 21


@pytest.mark.parametrize("dtype,layout", [("float32", "repos"), ("float16", "exact")])
def test_export_then_import_is_exact(source, tmp_path, dtype, layout):
    out = tmp_path / "npy"
    export_npy(source, out, ExportOptions(dtype=dtype, layout=layout))
    if layout == "exact":
        assert (
            np.load(out / "clip_word" / "40.npy").shape[0] < 77
            and np.load(out / "clip_qst" / "40.npy").ndim == 1
        )
    report = import_npy(out, tmp_path / "copy.h5")
    assert (report.videos, report.questions, report.skipped) == (3, 6, [])
    with FeatureStore(source) as a, FeatureStore(tmp_path / "copy.h5") as b:
        assert a.video_ids == b.video_ids
        for vid in a.video_ids:
            va, vb = a.video(vid), b.video(vid)
            for name in schema.SECONDS.names:
                assert va[name].dtype == vb[name].dtype and va[name].tobytes() == vb[name].tobytes(), name
            for name in schema.VIDEOS.names:
                assert va[name] == vb[name], name
        qa, qb = a.questions(), b.questions()
        for name in ("question_id", "video_id", "split", "text", "type", "answer", "word_length"):
            assert qa[name].tolist() == qb[name].tolist(), name
        assert qa["sentence"].tobytes() == qb["sentence"].tobytes()
        for qid in qa["question_id"]:
            assert a.question_words(qid).tobytes() == b.question_words(qid).tobytes()
        assert b.signature == SIGNATURE and b.random_weights == ["clip"]  # never laundered by a round trip
        assert b.config["imported_from"] == str(out.resolve()) and b.config["source_config"] == CONFIG
        assert b.failed() == []


def test_files_an_export_manifest_does_not_list_are_not_imported(source, tmp_path):
    out = tmp_path / "npy"
    export_npy(source, out)
    for d, shape in (("vggish", (2, 128)), ("clip_vit_b32", (2, 50, 512))):
        np.save(out / d / "stale.npy", np.ones(shape, np.float32))  # left over from an earlier export
    report = import_npy(out, tmp_path / "copy.h5")
    assert [(s.kind, s.id, s.reason) for s in report.skipped] == [
        ("video", "stale", "not listed in manifest.json (a file of an earlier export?)")
    ]
    assert report.videos == 3 and report.questions == 6


def test_export_warns_when_tokens_are_not_the_repositories_shape(tmp_path, caplog):
    rng = np.random.default_rng(1)
    path = tmp_path / "small.h5"
    with ShardWriter(new_shard_path(shard_dir(path)), CONFIG) as w:
        w.add_video(fake_video(rng, "1", 2))  # 5 tokens of width 8
    build_store(complete_shards(shard_dir(path)), path)
    with caplog.at_level("WARNING", logger="avaf.shared.exchange.npy_folders"):
        report = export_npy(path, tmp_path / "npy")
    assert "visual tokens are (5, 8) per second; the repositories expect (50, 512)" in caplog.text
    assert (report.videos, report.questions) == (1, 0) and np.load(
        tmp_path / "npy/clip_vit_b32/1.npy"
    ).shape == (2, 5, 8)


def test_export_refuses_questions_longer_than_the_context_before_writing(source, tmp_path):
    out = tmp_path / "npy"
    with pytest.raises(ExchangeError, match="more than --context-length 2"):
        export_npy(source, out, ExportOptions(context_length=2))
    assert not out.exists()  # refused before the folder is made: the corrected command needs no --overwrite
    export_npy(source, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ExchangeError, match="more than --context-length 2"):
        export_npy(source, out, ExportOptions(context_length=2, overwrite=True))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the earlier export stays


# ------------------------------------------------------------------------------------- foreign folders

TEMPLATES = {  # question_id -> (video, type, template, fillers, answer)
    1: ("a", '["Audio", "Counting"]', "How many instruments are sounding in the video?", "[]", "two"),
    2: ("b", '["Visual", "Location"]', "Where is the <Object>?", '["violin"]', "left"),
    3: ("c", '["Audio", "Counting"]', "How many instruments are sounding in the video?", "[]", "one"),
    4: ("d", '["Audio", "Counting"]', "How many instruments are sounding in the video?", "[]", "three"),
    5: ("e", '["Visual", "Location"]', "Where is the <Object>?", '["cello"]', "right"),
    6: (
        "e",
        '["Audio-Visual", "Existential"]',
        "Is the <Object> in the video always playing?",
        '["piano"]',
        "yes",
    ),
    7: ("a", '["Audio", "Counting"]', "How many sounding <Object> in the video?", '["guitar"]', "two"),
    8: ("e", '["Audio", "Counting"]', "How many sounding <Object> in the video?", '["flute"]', "four"),
}


def _f16(rng, *shape):
    """float32 values exactly representable in float16, as the repositories' files hold."""
    return rng.standard_normal(shape).astype(np.float16).astype(np.float32)


@pytest.fixture
def foreign(tmp_path):
    """A folder as a researcher downloads it (no manifest), width 16, with four broken videos:
    b has no audio file, c has visual width 12, d has 2 s of audio for 3 s of video, f has 64-wide audio;
    question 7 has no clip_qst file, question 8 has 12-wide words."""
    rng = np.random.default_rng(9)
    root = tmp_path / "feats"
    for d in ("vggish", "clip_vit_b32", "clip_word", "clip_qst"):
        (root / d).mkdir(parents=True)
    shapes = {
        "a": (3, 3, 16),
        "b": (2, 2, 16),
        "c": (3, 3, 12),
        "d": (3, 2, 16),
        "e": (4, 4, 16),
        "f": (3, 3, 16),
    }
    for vid, (t, ta, d) in shapes.items():
        np.save(root / "clip_vit_b32" / f"{vid}.npy", _f16(rng, t, 5, d))
        if vid != "b":
            np.save(root / "vggish" / f"{vid}.npy", _f16(rng, ta, 64 if vid == "f" else 128))
    lengths = {}
    for qid in TEMPLATES:
        lengths[qid] = n = int(rng.integers(4, 12))
        words = np.zeros((1, 77, 12 if qid == 8 else 16), np.float32)
        words[0, :n] = _f16(rng, n, words.shape[2])
        np.save(root / "clip_word" / f"{qid}.npy", words)
        if qid != 7:
            np.save(root / "clip_qst" / f"{qid}.npy", _f16(rng, 1, words.shape[2]))
    rows = [
        {
            "video_id": v,
            "question_id": qid,
            "type": ty,
            "question_content": c,
            "templ_values": tv,
            "anser": an,
        }
        for qid, (v, ty, c, tv, an) in TEMPLATES.items()
    ]
    (tmp_path / "avqa-val.json").write_text(json.dumps(rows))
    return root, tmp_path / "avqa-val.json", lengths


EXPECTED_SKIPS = [
    ("video", "b", "missing audio file vggish/b.npy"),
    ("video", "c", "the width of clip_vit_b32/c.npy is 12, earlier imported files have 16"),
    ("video", "d", "audio has T = 2 seconds, visual has T = 3"),
    ("video", "f", "the width of vggish/f.npy is 64, earlier imported files have 128"),
    ("question", "2", "its video b is not imported"),
    ("question", "3", "its video c is not imported"),
    ("question", "4", "its video d is not imported"),
    ("question", "7", "missing clip_qst file clip_qst/7.npy"),
    ("question", "8", "the width of clip_word/8.npy is 12, earlier imported files have 16"),
]


def test_import_reports_each_bad_item_and_imports_the_rest(foreign, tmp_path):
    root, annotations, lengths = foreign
    report = import_npy(root, tmp_path / "out.h5", ImportOptions(annotations=(annotations,)))
    assert [(s.kind, s.id, s.reason) for s in report.skipped] == EXPECTED_SKIPS
    assert (report.videos, report.questions) == (2, 3)
    assert report.lines()[-1].endswith("; skipped 4 videos and 5 questions")
    with FeatureStore(tmp_path / "out.h5") as fs:
        assert fs.video_ids == ["a", "e"]
        for vid in fs.video_ids:
            v, path = fs.video(vid), root / "clip_vit_b32" / f"{vid}.npy"
            tokens, t = np.load(path), np.load(path).shape[0]
            np.testing.assert_array_equal(v["visual_tokens"], tokens.astype(np.float16))
            np.testing.assert_array_equal(v["visual_pooled"], tokens[:, 0].astype(np.float16))
            np.testing.assert_array_equal(
                v["audio"], np.load(root / "vggish" / f"{vid}.npy").astype(np.float16)
            )
            assert v["timestamp"].tolist() == [s + 0.5 for s in range(t)] and v["audio_valid"].all()
            assert (v["source_path"], v["source_size"]) == (str(path), path.stat().st_size)
            assert (v["duration"], v["decoder"], v["streams"], v["has_audio"]) == (t, "imported", {}, True)
        q = fs.questions()
        assert q["question_id"].tolist() == [1, 5, 6] and set(q["split"]) == {"val"}
        assert q["text"].tolist()[1:] == ["Where is the cello", "Is the piano in the video always playing"]
        assert q["type"].tolist() == ["Audio/Counting", "Visual/Location", "Audio-Visual/Existential"]
        assert q["answer"].tolist() == ["two", "right", "yes"]
        for qid, sentence in zip(q["question_id"], q["sentence"]):
            words = np.load(root / "clip_word" / f"{qid}.npy")
            assert fs.question_words(qid).shape == (lengths[qid], 16)  # the zero padding is dropped
            np.testing.assert_array_equal(fs.question_words(qid), words[0, : lengths[qid]].astype(np.float16))
            np.testing.assert_array_equal(
                sentence, np.load(root / "clip_qst" / f"{qid}.npy")[0].astype(np.float16)
            )
        assert fs.config["imported_from"] == str(root.resolve()) and fs.config["encoders"].startswith(
            "unknown"
        )
        assert fs.random_weights == [] and fs.signature["encoders"] == "unknown"
        assert [(vid, err) for vid, _, err in fs.failed()] == [
            (s[1], f"avaf-import: {s[2]}") for s in EXPECTED_SKIPS if s[0] == "video"
        ]


def test_question_files_without_annotations_are_reported_not_guessed(foreign, tmp_path):
    root, _, _ = foreign
    report = import_npy(root, tmp_path / "out.h5")
    assert (report.videos, report.questions) == (2, 0)
    assert [(s.id, s.reason) for s in report.skipped if s.kind == "question"] == [
        (
            "clip_word/*.npy",
            "no --annotations and no manifest.json: nothing gives their text, type, answer and split",
        )
    ]


def test_short_audio_can_be_zero_filled_and_flagged(foreign, tmp_path):
    root, annotations, _ = foreign
    report = import_npy(root, tmp_path / "out.h5", ImportOptions((annotations,), pad_short_audio=True))
    assert [s.id for s in report.skipped if s.kind == "video"] == ["b", "c", "f"]
    with FeatureStore(tmp_path / "out.h5") as fs:
        d = fs.video("d")
        assert d["audio_valid"].tolist() == [True, True, False] and d["audio_seconds"] == 2
        np.testing.assert_array_equal(d["audio"][:2], np.load(root / "vggish" / "d.npy").astype(np.float16))
        assert not d["audio"][2].any()


def test_word_length_modes(foreign, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    root, annotations, _ = foreign
    rng = np.random.default_rng(2)
    np.save(root / "clip_word" / "1.npy", _f16(rng, 1, 77, 16))  # the repositories' files: no zero rows
    text = "How many instruments are sounding in the video"
    eot = int(open_clip.tokenize([text])[0].argmax())
    assert eot == 9  # start token, 8 BPE tokens, end token
    got = {}
    for mode in ("auto", "all", "tokenizer"):
        import_npy(root, tmp_path / f"{mode}.h5", ImportOptions((annotations,), word_length=mode))
        with FeatureStore(tmp_path / f"{mode}.h5") as fs:
            got[mode] = fs.question_words(1).shape[0]
    assert got == {"auto": 77, "all": 77, "tokenizer": eot + 1}


def test_folders_that_cannot_be_imported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExchangeError, match="no vggish/ or clip_vit_b32/ folder"):
        import_npy(tmp_path / "empty", tmp_path / "out.h5")
    (tmp_path / "empty" / "vggish").mkdir()
    np.save(tmp_path / "empty" / "vggish" / "x.npy", np.zeros((2, 128), np.float32))
    with pytest.raises(ExchangeError, match="nothing could be imported.*x: missing clip_vit_b32 file"):
        import_npy(tmp_path / "empty", tmp_path / "out.h5")
    (tmp_path / "empty" / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ExchangeError, match="not an avaf-export manifest"):
        import_npy(tmp_path / "empty", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists() and [p.name for p in tmp_path.iterdir()] == ["empty"]


# ------------------------------------------------------------------------------------------------ CLI


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.npy")}


def test_cli_export_equals_library_call(source, tmp_path):
    out = tmp_path / "npy"
    lines = export_npy(source, out, ExportOptions(dtype="float16")).lines()
    library_files, library_manifest = _files(out), json.loads((out / "manifest.json").read_text())
    result = CliRunner().invoke(
        export_main,
        ["--feats", str(source), "--format", "npy", "--out", str(out), "--dtype", "float16", "--overwrite"],
    )
    assert result.exit_code == 0, result.output
    assert result.output == "\n".join(lines) + "\n"
    assert _files(out) == library_files
    cli_manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v for k, v in cli_manifest.items() if k != "created"} == {
        k: v for k, v in library_manifest.items() if k != "created"
    }


def test_cli_export_calls_the_exporter_its_format_names(source, tmp_path, monkeypatch):
    """--format is read: avaf-export calls EXPORTERS[format] with the options its flags give; a format
    not in the table is refused by click before any work."""
    calls = []

    def exporter(feats, out, options):
        calls.append((feats, out, options))
        return ExportReport(Path(out), 1, 2, 7, options.dtype, options.layout, "(L, 8)")

    monkeypatch.setitem(EXPORTERS, "npy", exporter)
    out = tmp_path / "npy"
    args = ["--feats", str(source), "--out", str(out), "--layout", "exact", "--context-length", "5"]
    result = CliRunner().invoke(export_main, [*args, "--format", "npy"])
    assert result.exit_code == 0, result.output
    assert calls == [(str(source), str(out), ExportOptions(layout="exact", context_length=5))]
    assert result.output.startswith("wrote 1 videos and 2 questions to ") and not out.exists()
    refused = CliRunner().invoke(export_main, [*args, "--format", "mp4"])
    assert refused.exit_code == 2 and "'mp4' is not one of 'npy'," in refused.output
    assert len(calls) == 1 and not out.exists()


def test_cli_import_equals_library_call_and_exits_1_on_skips(foreign, tmp_path):
    root, annotations, _ = foreign
    out = tmp_path / "out.h5"
    lines = import_npy(root, out, ImportOptions((annotations,))).lines()
    with FeatureStore(out) as fs:
        library = fs.load_videos().arrays["visual_tokens"].tobytes(), fs.questions()["question_id"].tolist()
    args = ["--npy", str(root), "--out", str(out), "--annotations", str(annotations)]
    before = out.read_bytes()
    refused = CliRunner().invoke(import_main, args)  # an existing store is never replaced unasked
    assert refused.exit_code == 2 and refused.output == (
        f"avaf-import: {out}: already exists; choose a new --out, or pass --overwrite to replace it\n"
    )
    assert out.read_bytes() == before and not list(tmp_path.glob(".out.h5*"))  # no work was started
    result = CliRunner().invoke(import_main, [*args, "--overwrite"])
    assert result.exit_code == 1
    assert result.output == "\n".join(lines) + "\n" and len(lines) == len(EXPECTED_SKIPS) + 1
    with FeatureStore(out) as fs:
        assert (
            fs.load_videos().arrays["visual_tokens"].tobytes(),
            fs.questions()["question_id"].tolist(),
        ) == library


def test_cli_clean_import_exits_0_and_errors_exit_2(source, tmp_path):
    export_npy(source, tmp_path / "npy")
    ok = CliRunner().invoke(import_main, ["--npy", str(tmp_path / "npy"), "--out", str(tmp_path / "copy.h5")])
    assert ok.exit_code == 0 and ok.output.endswith("skipped 0 videos and 0 questions\n")
    (tmp_path / "bare").mkdir()
    bad = CliRunner().invoke(import_main, ["--npy", str(tmp_path / "bare"), "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "avaf-import:" in bad.output and "bare" in bad.output
    before = (tmp_path / "copy.h5").read_bytes()
    failed = CliRunner().invoke(  # --overwrite replaces only with a complete store: a failed import keeps it
        import_main, ["--npy", str(tmp_path / "bare"), "--out", str(tmp_path / "copy.h5"), "--overwrite"]
    )
    assert failed.exit_code == 2 and (tmp_path / "copy.h5").read_bytes() == before


@pytest.mark.parametrize("command", [export_main, import_main])
def test_help_explains_every_flag(command):
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for param in command.params:
        assert param.help and len(param.help) > 20, param.name
        assert param.opts[0] in result.output
    if command is export_main:
        for repo in ("GeWu-Lab/MUSIC-AVQA", "GeWu-Lab/PSTP-Net", "GeWu-Lab/TSPM", "AVAF-Net", "QA-TIGER"):
            assert repo in result.output

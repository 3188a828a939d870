"""avaf-export --format qa-tiger | tspm | av-master | stg: the layouts each repository's loader reads as is.

Stores are written by the real writer with the tspm set at its real row shapes and tiny T. Each format's files
are read back the way its loader reads them, as /tmp/avqa_layouts.md (the research notes for issue 25)
describes those loaders: np.load by `<video_id>.npy` / `str(question_id).npy` (h5py for STG, every key read
into memory), no cast where the loader casts none, default-collate stacking (one shape per kind), and the
model's squeeze of the leading axis. The reading functions are written here from those notes; no code of
the repositories is in this file. MANIFEST.json's checksums are recomputed from the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avaf.shared.exchange import EXPORTERS, ExportOptions, export_pack
from avaf.shared.exchange.cli import export_main
from avaf.shared.exchange.layouts import LAYOUTS, layout_bytes
from avaf.shared.exchange.packs_export import fit_seconds
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import AVAF, Encoder
from avaf.shared.store.sets import TSPM, TSPM_ARRAYS, avaf_set, tspm_array
from avaf.shared.store.writer import (
    QuestionFeatures,
    ShardWriter,
    VideoFeatures,
    complete_shards,
    new_shard_path,
    shard_dir,
)

from conftest import fake_question, fake_video, write_store

VIDEOS = {"00000093": 2, "va00000005": 3, "esa00000001": 5}  # seconds: one short, one shorter, one longer
QUESTIONS = {  # question_id -> (video, text): json_update's int ids, no zero padding
    12: ("00000093", "How many sounding erhu in the video"),
    7: ("va00000005", "Is the violin on the left louder than the piano on the right"),
    49431: (
        "esa00000001",
        "What is the instrument on the left of the instrument that sounds first after the acoustic_guitar "
        "stops playing in the whole video",
    ),
}
PAD = 4
ENCODERS = {
    "audio": Encoder("vggish", "default", "a" * 64, library="avaf"),
    "frame": Encoder("ViT-L-14-336", "openai", "b" * 64, library="open_clip"),
    "tome": Encoder("vit_large_patch16_384", "augreg_in21k_ft_in1k", "c" * 64, library="timm"),
}
TEXT = Encoder("ViT-L-14-336", "openai", "b" * 64, library="open_clip")


def tspm_store(
    path: Path, prompt_for=(12, 49431), random=False, shapes=None, arrays=tuple(TSPM_ARRAYS)
) -> Path:
    """A store holding the tspm set (`arrays` of it), written by the real writer: the real row shapes unless
    `shapes` overrides some, prompts for the questions `prompt_for` (NaN for the others)."""
    rng = np.random.default_rng(25)
    shapes = {**{n: a.shape for n, a in TSPM_ARRAYS.items()}, **(shapes or {})}
    encoder = lambda n: Encoder(**{**vars(ENCODERS.get(n, TEXT)), "random": random})  # noqa: E731
    sets = {TSPM: {n: tspm_array(n, encoder(n), {"made": "by the test"}, shapes[n]) for n in arrays}}
    per_second = [n for n in arrays if TSPM_ARRAYS[n].table == "seconds"]
    per_question = [n for n in arrays if n not in per_second]
    writer = ShardWriter(new_shard_path(shard_dir(path)), {"test": 1}, None, ["tome"] if random else [], sets)
    with writer as w:
        for vid, t in VIDEOS.items():
            own = {n: rng.standard_normal((t, *shapes[n])).astype(np.float16) for n in per_second}
            w.add_video(tspm_video(vid, t, own))
        for qid, (vid, text) in QUESTIONS.items():
            own = {n: rng.standard_normal(shapes[n]).astype(np.float16) for n in per_question}
            if "prompt" in own and qid not in prompt_for:
                own["prompt"] = None
            w.add_question(tspm_question(qid, vid, text, own))
    build_store(complete_shards(shard_dir(path)), path)
    return path


def tspm_video(vid: str, t: int, arrays: dict) -> VideoFeatures:
    """A video of the tspm set only (no avaf arrays)."""
    return VideoFeatures(
        video_id=vid,
        source_path=f"/v/{vid}.mp4",
        visual_tokens=None,
        visual_pooled=None,
        audio=None,
        audio_valid=np.ones(t, bool),
        timestamp=np.arange(t) + 0.5,
        sets={TSPM: arrays},
    )


def tspm_question(qid: int, vid: str, text: str, arrays: dict) -> QuestionFeatures:
    return QuestionFeatures(qid, vid, "test", text, "Audio/Counting", "two", None, None, sets={TSPM: arrays})


@pytest.fixture
def store(tmp_path) -> Path:
    return tspm_store(tmp_path / "feats.h5")


def stored(store: Path) -> tuple[dict, dict]:
    """The store's tspm arrays: {name: {video_id: (T, ...)}} and {name: {question_id: row}} (float16)."""
    with FeatureStore(store) as fs:
        per_video = {
            n: {v: fs.video_array(v, TSPM, n) for v in fs.video_ids} for n in ("audio", "frame", "tome")
        }
        ids = fs.questions()["question_id"].tolist()
        per_q = {n: dict(zip(ids, fs.question_array(TSPM, n))) for n in ("sentence", "words", "prompt")}
    return per_video, per_q


def padded(array: np.ndarray, n: int = PAD) -> np.ndarray:
    """The rule written out for the test: short -> repeat the last second, long -> the first n seconds."""
    rows = [array[min(i, len(array) - 1)] for i in range(n)]
    return np.stack(rows)


def check_manifest(out: Path, others: set[str] = frozenset()) -> dict:
    """MANIFEST.json lists every file written (all but `others`, and nothing else) with the sha256 of its
    bytes."""
    manifest = json.loads((out / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {
        "MANIFEST.json",
        *others,
    }
    assert set(manifest["files"]) == on_disk
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
    return manifest


# ------------------------------------------------------------------ each repository's loader, from the notes


def tspm_loader(root: Path, samples) -> dict[str, np.ndarray]:
    """TSPM's dataset: np.load per sample from server_path + its folder defaults, --audios_patch_dir pointed
    at vggish/ as the export says; only the visual patch is cast; default collate stacks each kind."""
    items = []
    for vid, qid in samples:
        load = lambda folder, name: np.load(root / folder / f"{name}.npy")  # noqa: E731
        items.append(
            {
                "audios_feat": load("vggish", vid),
                "visual_feat": load("clip_feats/frame_1fps_ViT-L14@336px", vid),
                "audios_patch_feat": load("vggish", vid),
                "visual_patch_feat": load("ToMe_feat/tome14", vid).astype(np.float32),
                "question_feat": load("clip_feats/qst_ViT-L14@336px", str(qid)),
                "question_prompt": load("clip_feats/qaPrompt_ViT-L14@336px", str(qid)),
            }
        )
    return {k: np.stack([item[k] for item in items]) for k in items[0]}


def qa_tiger_loader(data: Path, video_ids) -> dict[str, np.ndarray]:
    """QA-TIGER's dataset (configs/qa-tiger/vitl14.py): <data>/feats/<folder>/<video_id>.npy, [::1]."""
    folders = {"audio": "feats/vggish", "video": "feats/frame_ViT-L14@336px", "patch": "feats/visual_tome14"}
    return {k: np.stack([np.load(data / f / f"{v}.npy")[::1] for v in video_ids]) for k, f in folders.items()}


def av_master_loader(root: Path, samples) -> dict[str, np.ndarray]:
    """AV-Master's dataset with the README's flags: audio unsliced, frames [:60, :] (read twice: visual and
    patch), sentence and words by str(question_id); no cast; the model squeezes (-2) and (-3)."""
    items = []
    for vid, qid in samples:
        frames = np.load(root / "clip_vit_l14_336px" / f"{vid}.npy")
        items.append(
            {
                "audios_feat": np.load(root / "vggish_audio" / f"{vid}.npy"),
                "visual_feat": frames[:60, :],
                "patch_feat": frames[:60, :],
                "question": np.load(root / "clip_sentence_l14_336px" / f"{qid}.npy"),
                "qst_word": np.load(root / "clip_word_l14_336px" / f"{qid}.npy"),
            }
        )
    batch = {k: np.stack([item[k] for item in items]) for k in items[0]}
    batch["question"], batch["qst_word"] = batch["question"].squeeze(-2), batch["qst_word"].squeeze(-3)
    return batch


def stg_loader(root: Path) -> dict[str, dict]:
    """STG's load_data_into_memory: every top-level key of each file; words: the group's qst_feat, and a
    mask from its token strings (bytes decoded) that is 0 for start, end and '!', cut to 20."""
    out = {}
    for name in ("vggish", "frame_feat", "tomebl14", "clip_question_L14"):
        with h5py.File(root / f"{name}.h5", "r") as f:
            out[name] = {key: np.array(f[key]) for key in f.keys()}
    words, masks = {}, {}
    with h5py.File(root / "clip_word_vit_L14.h5", "r") as f:
        for key in f.keys():
            tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t in np.array(f[key]["tokens"])]
            masks[key] = [t not in ("<|startoftext|>", "<|endoftext|>", "!") for t in tokens][:20]
            words[key] = np.array(f[key]["qst_feat"])
    return out | {"words": words, "mask": masks}


# ------------------------------------------------------------------------------------- one test per format


def test_tspm_layout_reads_back_as_tspm_loads_it(store, tmp_path):
    out = tmp_path / "MUSIC-AVQA"
    report = export_pack("tspm", store, out, ExportOptions(pad_to=PAD))
    samples = [(vid, qid) for qid, (vid, _) in QUESTIONS.items() if qid != 7]  # 7 has no prompt
    batch = tspm_loader(out, samples)
    n = len(samples)
    assert batch["audios_feat"].shape == (n, PAD, 128) and batch["visual_feat"].shape == (n, PAD, 768)
    assert batch["visual_patch_feat"].shape == (n, PAD, 14, 1024)
    assert batch["question_feat"].shape == batch["question_prompt"].shape == (n, 1, 768)
    for key in ("audios_feat", "visual_feat", "question_feat", "question_prompt"):  # not cast by the loader
        assert batch[key].dtype == np.float32, key
    videos, questions = stored(store)
    for i, (vid, qid) in enumerate(samples):
        assert np.array_equal(batch["audios_feat"][i], padded(videos["audio"][vid]).astype(np.float32))
        assert np.array_equal(batch["visual_feat"][i], padded(videos["frame"][vid]).astype(np.float32))
        assert np.array_equal(batch["visual_patch_feat"][i], padded(videos["tome"][vid]).astype(np.float32))
        assert np.array_equal(batch["question_feat"][i, 0], questions["sentence"][qid].astype(np.float32))
        assert np.array_equal(batch["question_prompt"][i, 0], questions["prompt"][qid].astype(np.float32))
    assert not (out / "clip_feats/qaPrompt_ViT-L14@336px/7.npy").exists()  # no prompt value: no file
    assert not (out / "ToMe_feat/audio_tome14").exists()  # the loader is pointed at vggish/ instead
    manifest = check_manifest(out)
    assert len(manifest["files"]) == 3 * 3 + 3 + 2 == report.files
    assert manifest["not_written"]["clip_feats/qaPrompt_ViT-L14@336px"]["question_ids"] == [7]
    lines = report.lines()
    assert any("--audios_patch_dir" in line and f"{out}/vggish" in line for line in lines)
    assert any("for 1 questions without a prompt (e.g. 7" in line for line in lines)
    assert "WARNING" not in json.dumps(manifest) and manifest["random_weights"] is False


def test_qa_tiger_layout_reads_back_as_qa_tiger_loads_it(store, tmp_path):
    data = tmp_path / "QA-TIGER" / "data"
    report = export_pack("qa-tiger", store, data, ExportOptions(pad_to=PAD))
    batch = qa_tiger_loader(data, list(VIDEOS))
    assert batch["audio"].shape == (3, PAD, 128) and batch["video"].shape == (3, PAD, 768)
    assert batch["patch"].shape == (3, PAD, 14, 1024)
    assert {a.dtype for a in batch.values()} == {np.dtype(np.float32)}
    videos, _ = stored(store)
    for i, vid in enumerate(VIDEOS):
        assert np.array_equal(batch["patch"][i], padded(videos["tome"][vid]).astype(np.float32))
    assert sorted(p.name for p in data.iterdir()) == ["MANIFEST.json", "feats"]  # no question files
    assert sorted(p.name for p in (data / "feats").iterdir()) == [
        "frame_ViT-L14@336px",
        "vggish",
        "visual_tome14",
    ]
    manifest = check_manifest(data)
    assert len(manifest["files"]) == 9 == report.files and report.questions == 0


def test_av_master_layout_reads_back_as_av_master_loads_it(store, tmp_path):
    out = tmp_path / "feats" / "Music-AVQA"
    export_pack("av-master", store, out, ExportOptions(pad_to=PAD))
    samples = [(vid, qid) for qid, (vid, _) in QUESTIONS.items()]
    batch = av_master_loader(out, samples)
    assert batch["audios_feat"].shape == (3, PAD, 128) and batch["visual_feat"].shape == (3, PAD, 768)
    assert batch["question"].shape == (3, 768) and batch["qst_word"].shape == (3, 77, 768)
    assert {a.dtype for a in batch.values()} == {np.dtype(np.float32)}  # no cast anywhere: float32 files
    videos, questions = stored(store)
    for i, (vid, qid) in enumerate(samples):
        assert np.array_equal(batch["audios_feat"][i], padded(videos["audio"][vid]).astype(np.float32))
        assert np.array_equal(batch["qst_word"][i], questions["words"][qid].astype(np.float32))
        assert np.load(out / "clip_word_l14_336px" / f"{qid}.npy").shape == (1, 77, 768)
    assert not (out / "clip_patch_vit_l14_336px").exists()
    assert len(check_manifest(out)["files"]) == 2 * 3 + 2 * 3


def test_stg_layout_reads_back_as_stg_loads_it(store, tmp_path):
    out = tmp_path / "AVQA-data"
    report = export_pack("stg", store, out, ExportOptions(pad_to=PAD))
    data = stg_loader(out)
    assert sorted(data["vggish"]) == sorted(VIDEOS) and sorted(data["words"]) == sorted(map(str, QUESTIONS))
    videos, questions = stored(store)
    for vid in VIDEOS:
        for name, array, shape in (
            ("vggish", "audio", (128,)),
            ("frame_feat", "frame", (768,)),
            ("tomebl14", "tome", (14, 1024)),
        ):
            assert data[name][vid].shape == (PAD, *shape) and data[name][vid].dtype == np.float16
            assert np.array_equal(data[name][vid], padded(videos[array][vid]))
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    for qid, (_, text) in QUESTIONS.items():
        key = str(qid)
        assert (
            data["clip_question_L14"][key].shape == (1, 768)
            and data["clip_question_L14"][key].dtype == np.float16
        )
        assert data["words"][key].shape == (1, 20, 768) and data["words"][key].dtype == np.float16
        assert np.array_equal(data["words"][key][0], questions["words"][qid][:20])
        n = len(bpe.encode(text))  # real tokens sit at positions 1..n, after the start token
        assert data["mask"][key] == [0 < i <= n for i in range(20)], (qid, n)
    assert len(bpe.encode(QUESTIONS[49431][1])) > 19  # one question fills the 20 positions STG keeps
    manifest = check_manifest(out)
    assert sorted(manifest["files"]) == sorted(t.path for t in LAYOUTS["stg"].targets)
    assert [line for line in report.lines() if line.startswith("differs:")] == [
        f"differs: {d}" for d in LAYOUTS["stg"].differs
    ]
    assert manifest["differs"] == list(LAYOUTS["stg"].differs)


# --------------------------------------------------------------------------- padding, manifest, bad input


def test_pad_to_repeats_the_last_second_cuts_longer_videos_and_says_so(store, tmp_path):
    out = tmp_path / "out"
    report = export_pack("tspm", store, out, ExportOptions(pad_to=PAD))
    assert report.padded == {"00000093": 2, "va00000005": 3} and report.cut == {"esa00000001": 5}
    assert (
        "--pad-to 4: padded 2 shorter videos by repeating their last second; cut 1 longer ones"
        in "\n".join(report.lines())
    )
    audio = np.load(out / "vggish" / "00000093.npy")
    assert np.array_equal(audio[1], audio[2]) and np.array_equal(
        audio[1], audio[3]
    )  # seconds 2, 3 = second 1
    for t in (1, 2, 4, 5):
        assert np.array_equal(fit_seconds(np.arange(t)[:, None], PAD), padded(np.arange(t)[:, None]))
    manifest = check_manifest(out)
    padding = manifest["padding"]
    assert padding["pad_to"] == PAD and padding["padded"] == report.padded and padding["cut"] == report.cut
    tome = manifest["arrays"]["ToMe_feat/tome14"]
    assert (
        tome["written"] == {"dtype": "float32", "shape": [PAD, 14, 1024]} and tome["padding"]["pad_to"] == PAD
    )
    assert tome["encoder"] == {**vars(ENCODERS["tome"]), "random": False}
    assert tome["preprocessing"] == {"made": "by the test"} and tome["source"].startswith(
        "/seconds/tspm/tome"
    )
    assert manifest["arrays"]["clip_feats/qst_ViT-L14@336px"]["padding"] is None
    assert manifest["arrays"]["clip_feats/qst_ViT-L14@336px"]["written"]["shape"] == [1, 768]


def test_without_pad_to_videos_keep_their_seconds_and_uneven_lengths_are_said(store, tmp_path):
    report = export_pack("qa-tiger", store, tmp_path / "out", ExportOptions())
    for vid, t in VIDEOS.items():
        assert np.load(tmp_path / "out/feats/vggish" / f"{vid}.npy").shape == (t, 128)
    assert "videos have 2 to 5 seconds: the loader stacks a batch, so all need one T: pass --pad-to N" in (
        "\n".join(report.lines())
    )
    manifest = check_manifest(tmp_path / "out")
    assert (
        manifest["padding"]["pad_to"] is None
        and manifest["arrays"]["feats/vggish"]["written"]["shape"][0] == "T"
    )


def test_random_weights_are_said_first_in_the_summary_and_the_manifest(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", random=True)
    report = export_pack("av-master", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    assert report.lines()[0].startswith("WARNING: features from randomly initialised encoders (")
    manifest = check_manifest(tmp_path / "out")
    assert next(iter(manifest)) == "WARNING" and manifest["random_weights"] is True
    assert {"tome", "vggish", "ViT-L-14-336"} <= set(manifest["random_encoders"])
    assert manifest["arrays"]["clip_vit_l14_336px"]["encoder"]["random"] is True


@pytest.mark.parametrize(
    "fmt, lacking", [("tspm", "tspm/frame, tspm/tome, tspm/sentence"), ("qa-tiger", "tspm/frame, tspm/tome")]
)
def test_a_store_without_what_a_format_needs_is_one_line_exit_2(tmp_path, fmt, lacking):
    """An avaf-only store (VGGish would serve as the audio): the line names every missing array, nothing is
    written."""
    rng = np.random.default_rng(0)
    feats = write_store(
        tmp_path / "avaf.h5", [fake_video(rng, "00000001", 2)], [fake_question(rng, 1, "00000001", "test")]
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(export_main, ["--feats", str(feats), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"avaf-export: {feats}: avaf-export --format {fmt} needs {lacking}, ")
    assert "which this store lacks; its feature sets: avaf (" in result.output and not out.exists()


def test_a_store_without_prompts_exports_the_rest_and_says_what_is_absent(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", arrays=("audio", "frame", "tome", "sentence", "words"))
    report = export_pack("tspm", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    assert not (tmp_path / "out/clip_feats/qaPrompt_ViT-L14@336px").exists()
    assert any(
        line.startswith("no clip_feats/qaPrompt_ViT-L14@336px/ files: this store has no tspm/prompt")
        and "--qa-prompts FILE" in line
        for line in report.lines()
    )
    manifest = check_manifest(tmp_path / "out")
    assert "no tspm/prompt" in manifest["not_written"]["clip_feats/qaPrompt_ViT-L14@336px"]
    assert len(manifest["files"]) == 3 * 3 + 3


def test_vggish_of_the_avaf_set_serves_when_the_tspm_set_has_none(tmp_path):
    """One VGGish whichever set recorded it: a store with the avaf set and a tspm set without audio."""
    rng = np.random.default_rng(3)
    path = tmp_path / "both.h5"
    sets = {AVAF: avaf_set({}), TSPM: {n: tspm_array(n) for n in ("frame", "tome", "sentence", "words")}}
    with ShardWriter(new_shard_path(shard_dir(path)), {"t": 1}, None, [], sets) as w:
        v = fake_video(rng, "00000001", 2, n_tokens=50, width=512)
        v.sets = {TSPM: {"frame": np.ones((2, 768), np.float16), "tome": np.ones((2, 14, 1024), np.float16)}}
        w.add_video(v)
        q = fake_question(rng, 5, "00000001", "test", 512)
        q.sets = {TSPM: {"sentence": np.ones(768, np.float16), "words": np.ones((77, 768), np.float16)}}
        w.add_question(q)
    build_store(complete_shards(shard_dir(path)), path)
    export_pack("av-master", path, tmp_path / "out", ExportOptions())
    assert np.array_equal(np.load(tmp_path / "out/vggish_audio/00000001.npy"), v.audio.astype(np.float32))
    assert check_manifest(tmp_path / "out")["arrays"]["vggish_audio"]["source"].startswith("/seconds/audio ")


def test_a_tiny_stand_in_is_exported_and_its_shapes_are_said(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", shapes={"tome": (2, 16), "words": (77, 8), "sentence": (8,)})
    report = export_pack("stg", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    differs = [line for line in report.lines() if "not (14, 1024) as the real encoder gives them" in line]
    assert len(differs) == 1 and "/seconds/tspm/tome rows are (2, 16)" in differs[0]
    assert stg_loader(tmp_path / "out")["words"]["12"].shape == (1, 20, 8)


def test_an_earlier_export_is_refused_and_overwrite_replaces_only_its_own_files(store, tmp_path):
    out = tmp_path / "out"
    export_pack("tspm", store, out, ExportOptions(pad_to=PAD))
    mine = out / "clip_feats" / "frame_1fps_ViT-B32"  # the user's own features beside the export
    mine.mkdir()
    (mine / "x.npy").write_bytes(b"keep")
    args = ["--feats", str(store), "--format", "tspm", "--out", str(out), "--pad-to", "3"]
    refused = CliRunner().invoke(export_main, args)
    assert (
        refused.exit_code == 2 and "already holds a tspm export (MANIFEST.json, vggish/); " in refused.output
    )
    result = CliRunner().invoke(export_main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (
        np.load(out / "vggish" / "00000093.npy").shape == (3, 128)
        and (mine / "x.npy").read_bytes() == b"keep"
    )
    assert check_manifest(out, others={"clip_feats/frame_1fps_ViT-B32/x.npy"})["padding"]["pad_to"] == 3


@pytest.mark.parametrize(
    "fmt, flags, message",
    [
        ("tspm", ["--dtype", "float16"], "--dtype, --layout and --context-length apply to --format npy"),
        ("stg", ["--layout", "exact"], "the stg layout is float16, as its loader reads it"),
        ("npy", ["--pad-to", "60"], "--pad-to applies to the qa-tiger, tspm, av-master and stg layouts"),
        ("tspm", ["--pad-to", "0"], "Invalid value for '--pad-to'"),
    ],
)
def test_options_of_another_format_are_refused(store, tmp_path, fmt, flags, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        export_main, ["--feats", str(store), "--format", fmt, "--out", str(out), *flags]
    )
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
    assert not out.exists()


def test_cli_prints_the_library_report_and_writes_the_same_files(store, tmp_path):
    library = export_pack("stg", store, tmp_path / "lib", ExportOptions(pad_to=PAD))
    args = ["--feats", str(store), "--format", "stg", "--out", str(tmp_path / "cli"), "--pad-to", "4"]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 0
    assert (
        result.output
        == "\n".join(library.lines()).replace(str(tmp_path / "lib"), str(tmp_path / "cli")) + "\n"
    )
    assert check_manifest(tmp_path / "cli")["files"] == check_manifest(tmp_path / "lib")["files"]
    assert EXPORTERS["stg"].args == ("stg",) and set(EXPORTERS) == {"npy", *LAYOUTS}


@pytest.mark.parametrize("fmt", ["tspm", "qa-tiger", "av-master"])
def test_disk_per_layout_is_what_the_files_take(tmp_path, fmt):
    """layout_bytes (docs/feature-packs.md's table) = the bytes of the files an export writes."""
    feats = tspm_store(tmp_path / "feats.h5", prompt_for=tuple(QUESTIONS))
    out = tmp_path / "out"
    export_pack(fmt, feats, out, ExportOptions(pad_to=PAD))
    expected = layout_bytes(fmt, videos=len(VIDEOS), seconds=PAD, questions=len(QUESTIONS))
    for target, size in expected.items():
        assert sum(p.stat().st_size for p in (out / target).iterdir()) == size, target


def test_the_docs_table_gives_the_disk_the_layouts_take():
    """docs/feature-packs.md: each format's row and each file's row say what layout_bytes computes for
    MUSIC-AVQA (9,288 videos of 60 s; 45,624 questions of json_update)."""
    doc = (Path(__file__).parents[1] / "docs" / "feature-packs.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ")]
    for fmt in LAYOUTS:
        sizes = layout_bytes(fmt, videos=9288, seconds=60, questions=31927 + 4568 + 9129)
        assert any(f"`{fmt} --pad-to 60` | {sum(sizes.values()) / 1e9:.2f} GB" in row for row in rows), fmt
        for path, size in sizes.items():
            row = next(row for row in rows if row.startswith(f"| {fmt} | `{path}"))
            assert row.endswith(f"| {size / 1e9:.2f} GB |"), row

"""avaf-export --format qa-tiger | tspm | av-master | stg: the layouts each repository's loader reads as is.

Each format's files are read back the way its loader reads them, as docs/feature-packs.md
describes those loaders: np.load by `<video_id>.npy` / `str(question_id).npy` (h5py for STG,
every key read into memory), no cast where the loader casts none, default-collate stacking (one shape per
kind), and the model's squeeze of the leading axis. The reading functions are written here from those notes;
no code of the repositories is in this file. MANIFEST.json's checksums are recomputed from the files, and the
disk the docs give each layout is checked against layout_bytes and the bytes an export writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from pack_stores import PAD, QUESTIONS, VIDEOS, check_manifest, padded, stored, tspm_store

from avaf.shared.exchange import ExportOptions, export_pack
from avaf.shared.exchange.layouts import LAYOUTS, layout_bytes


@pytest.fixture
def store(tmp_path) -> Path:
    return tspm_store(tmp_path / "feats.h5")


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
        n = len(bpe.encode(text + "?"))  # the words encode TSPM's string; its tokens sit at 1..n
        assert data["mask"][key] == [0 < i <= n for i in range(20)], (qid, n)
    assert len(bpe.encode(QUESTIONS[49431][1])) > 19  # one question fills the 20 positions STG keeps
    manifest = check_manifest(out)
    assert sorted(manifest["files"]) == sorted(t.path for t in LAYOUTS["stg"].targets)
    assert [line for line in report.lines() if line.startswith("differs:")] == [
        f"differs: {d}" for d in LAYOUTS["stg"].differs
    ]
    assert manifest["differs"] == list(LAYOUTS["stg"].differs)


# --------------------------------------------------------------------------- padding, manifest, bad input


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

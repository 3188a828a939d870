"""MUSIC-AVQA-v2.0's unmatch_audio rows: the question pairs its video with another video's audio.

The annotation row's `unmatch_audio` becomes the question's `audio_video_id`, which the store keeps, the
trainer's batches, the Dataset and the .npy export/import honour, and avaf-inspect counts. Stores written
before the column existed read it as the question's own video.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avaf.shared.avqa.annotations import load_annotations
from avaf.shared.dataset import AVQADataset, collate
from avaf.shared.exchange.npy_folders import ExportOptions, export_npy, import_npy
from avaf.shared.store import schema
from avaf.shared.store.describe import describe_store
from avaf.shared.store.inspect_cli import main as inspect_main
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import complete_shards, shard_dir
from avaf.train.data import Shape, gather, load_split

from conftest import fake_question, fake_video, write_store


def test_unmatch_audio_rows_carry_the_audio_video(data_dir):
    """test_balance.json (v2.0): 226 of its 10,819 rows ask about another video's audio."""
    questions = load_annotations(data_dir / "music-avqa" / "v2.0" / "balance_full_set" / "test_balance.json")
    other = [q for q in questions if q.audio_video_id != q.video_id]
    assert len(other) == 226
    q = questions[104]  # video sa00006547 with the audio of 00008531: "no", the sound is not from it
    assert (q.video_id, q.audio_video_id, q.answer) == ("sa00006547", "00008531", "no")
    assert {p.type for p in other} == {"Audio-Visual/Existential"} and {p.answer for p in other} == {"no"}
    own = next(p for p in questions if p.question_id == 32429)  # the v1 row of the same question
    assert own.audio_video_id == own.video_id == "sa00006547"


def test_unmatch_audio_must_be_a_video_id(tmp_path):
    from avaf.shared.errors import AnnotationError

    row = {
        "video_id": "00000001",
        "question_id": 1,
        "type": '["Audio-Visual", "Existential"]',
        "question_content": "Is this sound from the instrument in the video?",
        "templ_values": "[]",
        "anser": "no",
        "unmatch_audio": 42,
    }
    path = tmp_path / "avqa-test.json"
    path.write_text(json.dumps([row]))
    with pytest.raises(AnnotationError, match=r"avqa-test.json: row 0 .*unmatch_audio must be a video id"):
        load_annotations(path)


@pytest.fixture
def store(tmp_path):
    """Video A (4 s), B (2 s), C (6 s): question 1 asks about A with B's audio (shorter than A), question 2
    about A with its own audio, question 3 about B with C's audio (longer than B), question 4 about A with
    the audio of a video never extracted."""
    rng = np.random.default_rng(3)
    videos = [fake_video(rng, vid, seconds=n) for vid, n in (("A", 4), ("B", 2), ("C", 6))]
    qs = [fake_question(rng, i, vid, "train") for i, vid in ((1, "A"), (2, "A"), (3, "B"), (4, "A"))]
    qs[0].audio_video_id, qs[2].audio_video_id, qs[3].audio_video_id = "B", "C", "Z"
    path = write_store(tmp_path / "feats.h5", videos, qs)
    return path, {v.video_id: v for v in videos}


def _expected_audio(videos, visual_of: str, audio_of: str, seconds: int) -> np.ndarray:
    """The audio a question should see: its audio video's first seconds, zero past either video's end."""
    out = np.zeros((seconds, 128), np.float16)
    n = min(len(videos[visual_of].audio), len(videos[audio_of].audio), seconds)
    out[:n] = videos[audio_of].audio[:n]
    return out


def test_store_keeps_the_audio_video_and_drops_questions_whose_audio_is_missing(store, caplog):
    path, _ = store
    with FeatureStore(path) as fs:
        q = fs.questions()
        assert dict(zip(q["question_id"].tolist(), q["audio_video_id"])) == {1: "B", 2: "A", 3: "C", 4: "Z"}
        kept = fs.questions_with_videos()
    assert kept["question_id"].tolist() == [1, 2, 3]
    assert "ask about 1 videos not in the store (e.g. Z)" in caplog.text


def test_trainer_batches_take_the_audio_of_the_audio_video(store):
    path, videos = store
    with FeatureStore(path) as fs:
        data = load_split(fs, "train", None, "cpu")
    batch, _ = gather(data, data.features, torch.arange(3), Shape(seconds=5, words=12))
    for row, (vis, aud) in enumerate((("A", "B"), ("A", "A"), ("B", "C"))):
        expected = _expected_audio(videos, vis, aud, 5).astype(np.float32)
        np.testing.assert_array_equal(batch.audio[row].numpy(), expected)
        n = len(videos[vis].visual_tokens)
        np.testing.assert_array_equal(batch.visual[row, :n].numpy(), videos[vis].visual_tokens)
        assert batch.seconds_mask[row].sum() == n  # the question's own video sets the time axis


@pytest.mark.parametrize("in_memory", [True, False])
def test_dataset_items_take_the_audio_of_the_audio_video(store, in_memory):
    path, videos = store
    ds = AVQADataset(path, in_memory=in_memory)
    assert len(ds) == 3
    for i, (vis, aud) in enumerate((("A", "B"), ("A", "A"), ("B", "C"))):
        item = ds[i]
        assert (item["video_id"], item["audio_video_id"]) == (vis, aud)
        n = len(videos[vis].visual_tokens)
        assert item["audio"].shape == (n, 128) and item["visual"].shape[0] == n
        np.testing.assert_array_equal(item["audio"].numpy(), _expected_audio(videos, vis, aud, n))
    assert collate([ds[0], ds[2]])["audio_video_id"] == ["B", "C"]


def test_export_and_import_keep_the_audio_video(store, tmp_path):
    path, _ = store
    export_npy(path, tmp_path / "npy", ExportOptions(layout="exact"))
    manifest = json.loads((tmp_path / "npy" / "manifest.json").read_text())
    assert {q["question_id"]: q["audio_video_id"] for q in manifest["questions"]} == {
        1: "B",
        2: "A",
        3: "C",
        4: "Z",
    }
    report = import_npy(tmp_path / "npy", tmp_path / "back.h5")
    assert report.questions == 3  # question 4: its audio's video Z is not in the folder
    assert any("the video of its audio, Z, is not imported" in s.reason for s in report.skipped)
    with FeatureStore(tmp_path / "back.h5") as fs:
        q = fs.questions()
        assert dict(zip(q["question_id"].tolist(), q["audio_video_id"])) == {1: "B", 2: "A", 3: "C"}


def test_inspect_counts_questions_with_another_videos_audio(store):
    path, _ = store
    d = describe_store(path)
    assert d["counts"]["questions_with_other_audio"] == 3
    assert d["counts"]["questions_without_video"] == 1  # question 4: no features for its audio
    out = CliRunner().invoke(inspect_main, [str(path)]).output
    assert "questions 4 (1 whose video is not in the store, 3 with another video's audio)" in out


def test_a_store_written_before_the_column_reads_as_its_own_video(store, tmp_path):
    """Delete the column from a shard, as a file of an earlier avaf lacks it: reader and merge fill it."""
    path, videos = store
    for shard in complete_shards(shard_dir(path)):
        with h5py.File(shard, "a") as f:
            del f[schema.QUESTIONS.path("audio_video_id")]
    old = tmp_path / "old.h5"
    build_store(complete_shards(shard_dir(path)), old)  # the merge reads the filled column too
    with h5py.File(old, "a") as f:
        del f[schema.QUESTIONS.path("audio_video_id")]
    with FeatureStore(old) as fs:
        assert not fs.has(schema.QUESTIONS, "audio_video_id")
        q = fs.questions()
        assert q["audio_video_id"].tolist() == q["video_id"].tolist() == ["A", "A", "B", "A"]
    assert describe_store(old)["counts"]["questions_with_other_audio"] == 0
    item = AVQADataset(old)[0]
    np.testing.assert_array_equal(item["audio"].numpy(), videos["A"].audio)

"""The PyTorch Dataset over feats.h5: items equal direct store reads, padding is masked, both modes agree."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avaf.shared.avqa.answers import ANSWERS
from avaf.shared.avqa.question_types import TYPES
from avaf.shared.dataset import AVQADataset, collate
from avaf.shared.store.index import QuestionIndex
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

from conftest import fake_question, fake_video, write_store

TYPES_USED = ("Audio/Counting", "Visual/Location", "Audio-Visual/Temporal")
ANSWERS_USED = ("two", "left", "yes")


@pytest.fixture
def store(tmp_path):
    """Videos of 2..5 seconds (one synthetic 'va' id), questions of varied length, type and answer, and one
    question about a video that is not in the store."""
    rng = np.random.default_rng(11)
    ids = ["00000001", "00000002", "va000003", "00000004"]
    videos = [fake_video(rng, vid, seconds=2 + i) for i, vid in enumerate(ids)]
    questions = []
    for i in range(10):
        q = fake_question(rng, 500 + i, ids[i % 4], "train" if i < 7 else "test")
        q.type, q.answer = TYPES_USED[i % 3], ANSWERS_USED[i % 3]
        questions.append(q)
    questions.append(fake_question(rng, 999, "00000404", "train"))  # its video was never extracted
    return write_store(tmp_path / "feats.h5", videos, questions, {"test": "dataset"})


def test_items_equal_direct_store_reads(store, caplog):
    with caplog.at_level(logging.WARNING, logger="avaf.shared.dataset"):
        ds = AVQADataset(store, split="train")
    assert "1 questions (split train, subset all) ask about 1 videos not in the store" in caplog.text
    assert len(ds) == 7 and 999 not in ds.question_id
    with FeatureStore(store) as fs:
        q = fs.questions(split="train")
        for i in range(len(ds)):
            item = ds[i]
            row = int(np.flatnonzero(q["question_id"] == item["question_id"])[0])
            video = fs.video(item["video_id"])
            assert item["video_id"] == q["video_id"][row]
            assert (
                item["visual"].dtype == torch.float16 and item["visual"].shape == video["visual_tokens"].shape
            )
            np.testing.assert_array_equal(item["visual"].numpy(), video["visual_tokens"])
            np.testing.assert_array_equal(item["audio"].numpy(), video["audio"])
            np.testing.assert_array_equal(item["words"].numpy(), fs.question_words(item["question_id"]))
            np.testing.assert_array_equal(item["sentence"].numpy(), q["sentence"][row])
            assert ANSWERS[item["answer"]] == q["answer"][row]
            assert item["type"] == q["type"][row] and TYPES[item["type_index"]] == item["type"]
            assert item["template_words"] == len(q["text"][row].split()) > 0
    assert [ds[i]["answer"] for i in range(3)] == [ANSWERS.index(a) for a in ANSWERS_USED]


def test_the_question_index_is_built_once_and_sliced(store):
    """The one index the Dataset and the trainer slice: videos in file order, each question's positions."""
    with FeatureStore(store) as fs:
        index = QuestionIndex.build(fs, "train")
        q = fs.questions(split="train")
        assert len(index) == 7 and 999 not in index.questions["question_id"]  # its video is not in the store
        assert index.video_ids == ["00000001", "00000002", "00000004", "va000003"]  # file (id) order, once
        assert [index.video_ids[v] for v in index.video] == list(index.questions["video_id"])
        assert [index.video_ids[v] for v in index.audio_video] == list(index.questions["audio_video_id"])
        assert index.seconds_length.tolist() == [2, 3, 5, 4]
        assert index.seconds_offset.tolist() == fs.videos["offset"][fs.rows(index.video_ids)].tolist()
        assert (
            index.packed_offset().tolist() == fs.load_videos(index.video_ids).offset.tolist() == [0, 2, 5, 10]
        )
        some = np.array(
            [3, 1]
        )  # a streamed block's videos: offsets into their own stacked read, -1 elsewhere
        assert index.packed_offset(some).tolist() == [-1, 0, -1, 3]
        keep = q["question_id"] != 999
        assert index.word_offset.tolist() == q["word_offset"][keep].tolist()
        assert index.template_words.tolist() == [len(t.split()) for t in q["text"][keep]]


def test_split_and_real_subset(store):
    assert len(AVQADataset(store, split="test")) == 3
    assert len(AVQADataset(store)) == 10  # every split; the question without a video left out
    real = AVQADataset(store, split="train", subset="real")
    assert len(real) == 5 and "va000003" not in set(real.video_id)  # questions 502 and 506 ask about va000003


def test_in_memory_and_lazy_items_are_identical(store):
    fast, lazy = AVQADataset(store, in_memory=True), AVQADataset(store, in_memory=False)
    assert len(fast) == len(lazy) == 10
    for i in range(len(fast)):
        a, b = fast[i], lazy[i]
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
            else:
                assert a[k] == b[k], k


def test_collate_pads_to_the_batch_max_and_masks(store):
    ds = AVQADataset(store)
    items = [ds[i] for i in range(4)]  # videos of 2, 3, 4 and 5 seconds
    seconds = [it["visual"].shape[0] for it in items]
    lengths = [it["words"].shape[0] for it in items]
    assert seconds == [2, 3, 4, 5] and len(set(lengths)) > 1
    batch = collate(items)
    t, m = max(seconds), max(lengths)
    assert batch["visual"].shape == (4, t, 5, 8) and batch["visual"].dtype == torch.float32
    assert batch["audio"].shape == (4, t, 128) and batch["words"].shape == (4, m, 8)
    assert batch["sentence"].shape == (4, 8) and batch["sentence"].dtype == torch.float32
    assert batch["seconds_mask"].tolist() == [[s < n for s in range(t)] for n in seconds]
    assert batch["words_mask"].tolist() == [[s < n for s in range(m)] for n in lengths]
    for i, it in enumerate(items):
        assert torch.equal(batch["visual"][i, : seconds[i]], it["visual"].float())
        assert torch.equal(batch["audio"][i, : seconds[i]], it["audio"].float())
        assert torch.equal(batch["words"][i, : lengths[i]], it["words"].float())
        assert (
            batch["visual"][i, seconds[i] :].abs().sum() == 0
            and batch["audio"][i, seconds[i] :].abs().sum() == 0
        )
        assert batch["words"][i, lengths[i] :].abs().sum() == 0
    assert batch["answer"].tolist() == [it["answer"] for it in items]
    assert batch["type_index"].tolist() == [it["type_index"] for it in items]
    assert batch["template_words"].tolist() == [it["template_words"] for it in items]
    assert batch["question_id"].tolist() == [500, 501, 502, 503]
    assert batch["video_id"] == ["00000001", "00000002", "va000003", "00000004"]
    half = collate(items, dtype=None)
    assert half["visual"].dtype == half["words"].dtype == half["sentence"].dtype == torch.float16
    assert torch.equal(half["visual"].float(), batch["visual"])


def test_dataloader_with_two_workers_in_lazy_mode(store):
    lazy = AVQADataset(store, in_memory=False)
    loader = DataLoader(lazy, batch_size=3, shuffle=False, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert lazy._fs is None  # the parent never opened the file: each worker opened its own
    assert [b["question_id"].shape[0] for b in batches] == [3, 3, 3, 1]
    fast = AVQADataset(store, in_memory=True)
    for k, got in enumerate(batches):
        want = collate([fast[i] for i in range(3 * k, min(3 * k + 3, len(fast)))])
        for name, value in want.items():
            same = torch.equal(got[name], value) if isinstance(value, torch.Tensor) else got[name] == value
            assert same, name


def test_unknown_answer_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "feats.h5"
    with ShardWriter(new_shard_path(shard_dir(path)), {}) as w:
        w.add_video(fake_video(rng, "00000001", 2))
        q = fake_question(rng, 1, "00000001", "train")
        q.answer = "purple"
        w.add_question(q)
    build_store(complete_shards(shard_dir(path)), path)
    with pytest.raises(ValueError, match=r"answers outside the 42 .*'purple'"):
        AVQADataset(path)

"""Training from a file larger than the memory budget: splits streamed in blocks of videos (train/stream.py).

Streaming must change nothing but the batch order: every question once per epoch, evaluation identical to
in-memory evaluation, and with one block the very same epoch as in memory. Memory is bounded by blocks.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from avaf.shared.store.reader import FeatureStore
from avaf.train.cli import eval_main
from avaf.train.cli import main as train_main
from avaf.train.config import load_config
from avaf.train.data import Shape, load_split
from avaf.train.evaluate import evaluate
from avaf.train.loop import Run, train_epoch
from avaf.train.model import build_model
from avaf.train.stream import parse_bytes, resolve_budget, streamed_split, visual_bytes

from conftest import known_answer_store

TINY = {"model.dim": 32, "model.ffn_dim": 64, "optim.lr": 1e-3, "optim.lr_step_epochs": 100, "run.threads": 2}
TINY |= {"optim.warmup_steps": 0}  # a few hundred steps: no warm-up
VIDEO_BYTES = 4 * 5 * 32 * 2  # known_answer_store: at most 4 seconds of 5 tokens of width 32, float16


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return known_answer_store(tmp_path_factory.mktemp("stream") / "feats.h5", n_videos=300)


@pytest.mark.parametrize(
    "text, expected",
    [("6G", 6 << 30), ("500M", 500 << 20), ("1.5G", 3 << 29), ("123456", 123456), ("64KiB", 64 << 10)],
)
def test_memory_budget_sizes(text, expected):
    assert parse_bytes(text) == expected
    assert resolve_budget(text) == expected


@pytest.mark.parametrize("text", ["six gigs", "", "-1G", "5X"])
def test_a_bad_memory_budget_names_itself(text):
    with pytest.raises(ValueError, match="memory budget"):
        parse_bytes(text)


def test_auto_budget_is_half_of_what_is_available():
    budget = resolve_budget("auto")
    assert 0 < budget < 1 << 50


def test_blocks_cover_every_question_once_and_move_between_epochs(feats):
    split = streamed_split(feats, "train", None, "cpu", block_bytes=20 * VIDEO_BYTES)
    stream = split.features
    assert len(stream.videos) == 180 and len(split) == 360
    blocks = stream.blocks()
    assert [v for b in blocks for v in b.tolist()] == list(range(180))  # file order, each video once
    size = [int(stream.video_bytes[b].sum()) for b in blocks]
    assert max(size) <= 20 * VIDEO_BYTES and len(blocks) == 8  # 627 s of tokens, at most 80 s per block
    for b, nxt in zip(blocks, blocks[1:]):  # greedy: the next video would not have fitted
        assert stream.video_bytes[b].sum() + stream.video_bytes[nxt[0]] > 20 * VIDEO_BYTES
    seen_by_epoch = []
    for epoch in range(2):
        gen = torch.Generator().manual_seed(epoch)
        seen, firsts = [], []
        for features, rows in split.parts(gen, layout_seed=epoch):
            assert (features.video_offset[rows] >= 0).all()  # the block holds its questions' videos
            assert len(features.words) == int(split.word_length[rows].sum())  # and their words, no other
            seen += rows.tolist()
            firsts.append(int(rows.min()))
        assert sorted(seen) == list(range(360))  # every question exactly once
        seen_by_epoch.append(firsts)
    assert seen_by_epoch[0] != seen_by_epoch[1]  # the blocks and their order change with the epoch
    assert stream.peak_resident <= 2 * 20 * VIDEO_BYTES  # the block in use and the one read ahead


def test_streamed_items_are_the_stored_features(feats):
    with FeatureStore(feats) as fs:
        whole = load_split(fs, "val", None, "cpu")
    split = streamed_split(feats, "val", None, "cpu", block_bytes=7 * VIDEO_BYTES)
    for features, rows in split.parts():
        for row in rows.tolist():
            a, n = int(features.video_offset[row]), int(split.video_length[row])
            b = int(whole.features.video_offset[row])
            assert n == int(whole.video_length[row]) and n in (3, 4)
            assert torch.equal(features.visual[a : a + n], whole.features.visual[b : b + n])
            w, m = int(features.word_offset[row]), int(split.word_length[row])
            v = int(whole.features.word_offset[row])
            assert torch.equal(features.words[w : w + m], whole.features.words[v : v + m])


def test_streamed_evaluation_equals_in_memory(feats):
    torch.manual_seed(0)
    model = build_model(load_config(None, TINY).model)
    with FeatureStore(feats) as fs:
        whole = load_split(fs, "test", None, "cpu")
    streamed = streamed_split(feats, "test", None, "cpu", block_bytes=9 * VIDEO_BYTES)
    shape = Shape(4, int(whole.word_length.max()))
    # batch 1: each question is computed alone in both, so the numbers are the same bits (in batches, which
    # questions share one differs at block borders, and float results depend on the batch's shape)
    a = evaluate(model, whole, shape, 1)
    b = evaluate(model, streamed, shape, 1)
    assert (a.predicted == b.predicted).all() and (a.question_id == b.question_id).all()
    assert a.delta is not None and (a.delta == b.delta).all()
    c = evaluate(model, streamed, shape, 16)  # in batches: the same up to rounding
    assert abs(c.delta - a.delta).max() < 1e-5


def test_one_block_trains_exactly_like_memory(feats, tmp_path):
    cfg = load_config(None, {**TINY, "data.feats": str(feats), "run.out_dir": str(tmp_path)})
    params = []
    for streamed in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if streamed:
            data = streamed_split(feats, "train", None, "cpu", block_bytes=1 << 30)
        else:
            with FeatureStore(feats) as fs:
                data = load_split(fs, "train", None, "cpu")
        run = Run(cfg, tmp_path, Shape(4, int(data.word_length.max())), amp=None)
        stats = train_epoch(model, opt, data, run, 0)
        assert stats["steps"] == 12  # 360 questions, batch 32
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(params[0], params[1])


def test_avaf_train_streams_under_a_small_budget_and_still_learns(feats, tmp_path, caplog):
    with FeatureStore(feats) as fs:
        need = sum(visual_bytes(fs, s, None) for s in ("train", "val", "test"))
        assert need == int(fs.videos["length"].sum()) * 5 * 32 * 2 == 336_960  # 1,053 s of 5 x 32 fp16 tokens
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    args = ["--feats", str(feats), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "tiny.yaml")]
    args += [
        "--dim",
        "32",
        "--lr",
        "1e-3",
        "--lr-step",
        "100",
        "--threads",
        "2",
        "--epochs",
        "12",
        "--warmup-steps",
        "0",
    ]
    r = CliRunner().invoke(train_main, [*args, "--memory-budget", "100K"])
    assert r.exit_code == 0, r.output
    assert "streaming them from the file in blocks" in caplog.text
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    table = results["tables"]["test"]
    # chance is 25%; the in-memory run of test_train reaches ~100 / 98 at 12 epochs
    assert table["Audio/Counting"] > 80 and table["Visual/Counting"] > 80, table


def test_max_steps_stops_a_smoke_run(feats, tmp_path):
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    args = ["--feats", str(feats), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "tiny.yaml")]
    r = CliRunner().invoke(train_main, [*args, "--dim", "32", "--threads", "2", "--max-steps", "15"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["steps"] for x in lines] == [12, 3]  # 12 steps per epoch, then 3 more, then stop
    assert (tmp_path / "run" / "results.md").is_file()


def test_avaf_eval_streams_a_large_split_to_the_same_table(feats, tmp_path):
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    args = ["--feats", str(feats), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "tiny.yaml")]
    r = CliRunner().invoke(train_main, [*args, "--dim", "32", "--threads", "2", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    ev = ["--feats", str(feats), "--checkpoint", str(tmp_path / "run" / "best"), "--json"]
    tables = []
    for budget in ("1G", "20K"):  # in memory; streamed in blocks of 5 kB (a video or two each)
        r = CliRunner().invoke(eval_main, [*ev, "--memory-budget", budget])
        assert r.exit_code == 0, r.output
        tables.append(json.loads(r.output[r.output.index("{") :]))
    assert tables[0]["questions"] == tables[1]["questions"] == 120
    for k, v in tables[0]["table"].items():  # batches of 128 vs per block: equal up to float rounding
        assert v == pytest.approx(tables[1]["table"][k], nan_ok=True), k

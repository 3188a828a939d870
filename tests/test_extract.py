"""avaf-extract end to end: real decoders, tiny random encoders, real shards, a real local Ray instance."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avaf.extract import questions as question_stage
from avaf.extract.cli import main as extract_main
from avaf.extract.config import ClipConfig, ExtractConfig, InputConfig, RuntimeConfig, VGGishConfig
from avaf.extract.decode.backends import find_media, video_id
from avaf.extract.decode.worker import decode_row
from avaf.extract.encoders.stage import encode_videos, load_encoders
from avaf.extract.engine import InProcessEngine
from avaf.extract.pipeline import choose_mode, run_extract
from avaf.extract.ray_engine import RayEngine
from avaf.extract.todo import QuestionJob
from avaf.shared.avqa.annotations import load_questions
from avaf.shared.config import to_dict
from avaf.shared.store import schema
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import Encoder
from avaf.shared.store.writer import complete_shards, shard_dir

from conftest import DATA, write_clip

TINY_CLIP = str(DATA / "ViT-avaf-tiny.json")
TINY_FLAGS = ["--clip-model", TINY_CLIP, "--clip-pretrained", "random", "--vggish-weights", "random"]
GOOD = {"nasa_13013": 13, "av1_video": 5, "h265_video": 1, "tones": 3}
BAD = ("empty", "truncated", "notes")


def tiny_cfg(videos, out, **runtime) -> ExtractConfig:
    return ExtractConfig(
        out=str(out),
        input=InputConfig(videos=str(videos)),
        clip=ClipConfig(model=TINY_CLIP, pretrained="random"),
        vggish=VGGishConfig(weights="random"),
        runtime=RuntimeConfig(**{"in_process": True, **runtime}),
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Real clips (two audio tracks, AV1, HEVC without audio), a generated one, and three broken files."""
    d = tmp_path_factory.mktemp("videos")
    for name in ("nasa_13013.mp4", "av1_video.mkv", "h265_video.mp4"):
        shutil.copy(DATA / "videos" / name, d / name)
    write_clip(d / "nested" / "tones.mp4", seconds=3)
    (d / "empty.mp4").write_bytes(b"")
    real = (DATA / "videos" / "nasa_13013.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(real[: len(real) // 3])
    (d / "notes.mp4").write_text("not a video\n")
    (d / "README.txt").write_text("skipped: not media\n")
    return d


@pytest.fixture(scope="module")
def extracted(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "feats.h5"
    return run_extract(tiny_cfg(videos, out), progress=False), out


def test_every_video_is_recorded_and_broken_ones_never_stop_the_run(extracted):
    summary, out = extracted
    assert summary.written == len(GOOD) and sorted(summary.failed) == sorted(BAD)
    for vid in BAD:
        assert f"{vid}.mp4" in summary.failed[vid]  # the error names the file
    with FeatureStore(out) as fs:
        assert sorted(fs.video_ids) == sorted(GOOD)
        for vid, t in GOOD.items():
            v = fs.video(vid)
            assert v["visual_tokens"].shape == (t, 5, 32) and v["audio"].shape == (t, 128)
            np.testing.assert_array_equal(
                v["visual_tokens"][:, 0], v["visual_pooled"]
            )  # token 0 = CLS = pooled
            np.testing.assert_allclose(v["timestamp"], np.arange(t) + 0.5, atol=0.051)
        nasa = fs.video("nasa_13013")
        assert nasa["has_audio"] and nasa["audio_valid"].all() and np.abs(nasa["audio"]).sum() > 0
        for silent in ("av1_video", "h265_video"):
            v = fs.video(silent)
            assert not v["has_audio"] and not v["audio_valid"].any() and not v["audio"].any()
        assert fs.random_weights == ["clip", "vggish"]
        assert sorted(v for v, _, _ in fs.failed()) == sorted(BAD)
        assert fs.signature["clip"]["model_name"] == "ViT-avaf-tiny"


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> Path:
    """Ten questions about nasa_13013, in fixed batches of 4: three batches to encode."""
    texts = ["How many sounding violin are in the video", "Where is the cello", "Is there a piano sound"]
    rows = [
        {"video_id": "nasa_13013", "question_id": i, "type": '["Audio", "Counting"]', "anser": "two",
         "question_content": texts[i % 3] + " number " + "one " * i, "templ_values": "[]"}
        for i in range(10)
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("annotations") / "avqa-test.json"
    path.write_text(json.dumps(rows))
    return path


def engine_cfg(videos, annotations, out, **runtime) -> ExtractConfig:
    cfg = tiny_cfg(videos, out, batch_size=4, num_cpus=0.5, **runtime)
    return replace(cfg, input=replace(cfg.input, annotations=(str(annotations),)))


@pytest.fixture(scope="module")
def direct(videos, annotations, tmp_path_factory):
    """What the encoders give when called directly, without an engine: each video decoded and encoded on its
    own, the questions in their fixed batches; and the encoders' signature."""
    cfg = engine_cfg(videos, annotations, tmp_path_factory.mktemp("direct") / "unused.h5")
    enc = load_encoders(cfg)
    dec = to_dict(cfg.decode) | {"views": enc.pack_views()}
    feats = {}
    for path in find_media(videos):
        row = decode_row(video_id(path), str(path), dec)
        if row["decoded"] is not None:
            (feats[row["video_id"]],) = encode_videos(enc, [(row["video_id"], row["path"], row["decoded"])])
    jobs = [QuestionJob(q, ("avaf",)) for q in load_questions((str(annotations),))]
    specs = question_stage.batches(jobs, cfg.runtime.batch_size)
    encoded = [r["avaf"] for spec in specs for r in question_stage.encode_batch(enc, spec)]
    questions = [(r["words"], r["sentence"]) for r in encoded]
    return feats, questions, json.loads(json.dumps(enc.signature()))


@pytest.mark.parametrize(
    "engine, runtime, mode",
    [
        (InProcessEngine, {}, "in this process, without Ray: 7 videos to do"),
        (RayEngine, {"local_ray_min_videos": 7}, "on a local Ray instance: 7 videos to do"),
    ],
)
def test_in_process_and_on_ray_the_same_arrays(
    engine, runtime, mode, videos, annotations, direct, tmp_path, monkeypatch
):
    """Each engine writes the arrays the encoders give when called directly, video by video, and the
    questions in the annotation order (batches that arrive out of order: the test after the last). Unset,
    `in_process` is chosen by the job's size (`choose_mode`); on Ray the driver loads no encoder: the
    actors and the probe, other processes, do."""
    feats, questions, signature = direct

    def tripwire(*_):
        raise AssertionError("the driver loaded the encoders")

    if engine is RayEngine:
        for module in ("avaf.extract.engine", "avaf.extract.ray_engine"):
            monkeypatch.setattr(f"{module}.load_encoders", tripwire)
    out = tmp_path / "feats.h5"
    summary = run_extract(engine_cfg(videos, annotations, out, in_process=None, **runtime), progress=False)
    assert summary.mode.startswith(mode)
    assert summary.written == len(GOOD) and sorted(summary.failed) == sorted(BAD)
    assert summary.questions == 10 and summary.random_weights == ["clip", "vggish"]
    # on Ray, where each video was decoded and encoded (docs/cluster.md); in process, nowhere to say
    assert sorted(summary.nodes) == (sorted([*GOOD, *BAD]) if engine is RayEngine else [])
    with FeatureStore(out) as fs:
        # the config records the mode that ran, not the unset flag
        assert fs.config["runtime"]["in_process"] is engine.in_process
        assert fs.signature == signature and fs.random_weights == ["clip", "vggish"]
        # the avaf set, each array with the encoder that made it (docs/schema.md, "Feature sets")
        avaf = fs.sets["avaf"]
        assert fs.schema_version == 2 and list(fs.sets) == ["avaf"]
        clip = Encoder(signature["clip"]["model_name"], "random", signature["clip_sha256"], True, "open_clip")
        assert avaf["visual_tokens"].encoder == avaf["words"].encoder == clip
        assert avaf["audio"].encoder == Encoder("vggish", "random", signature["vggish_sha256"], True, "avaf")
        assert avaf["visual_tokens"].preprocessing["image_size"] == signature["image_size"]
        assert avaf["audio"].preprocessing["log_mel"] == signature["vggish"]["log_mel"]
        assert sorted(fs.video_ids) == sorted(GOOD)  # in the order they were done: Ray's may differ
        for vid in fs.video_ids:
            for name in schema.SECONDS.names:
                np.testing.assert_array_equal(fs.video(vid)[name], getattr(feats[vid], name))
        q = fs.questions()
        assert q["question_id"].tolist() == list(range(10))
        np.testing.assert_array_equal(q["sentence"], np.stack([st for _, st in questions]))
        for qid in range(10):
            np.testing.assert_array_equal(fs.question_words(qid), questions[qid][0])


def test_cli_equals_library_and_exits_1_on_failures(videos, extracted, tmp_path):
    _, out = extracted
    res = CliRunner().invoke(
        extract_main, ["--videos", str(videos), "--out", str(tmp_path / "cli.h5"), *TINY_FLAGS]
    )
    assert res.exit_code == 1, res.output
    assert res.output.startswith(  # said first: neither --in-process nor --address, 7 videos
        "mode: in this process, without Ray: 7 videos to do, fewer than --local-ray-min-videos 100,"
    )
    assert "written 4, skipped as done 0, failed 3" in res.output and "RANDOM WEIGHTS" in res.output
    with FeatureStore(out) as a, FeatureStore(tmp_path / "cli.h5") as b:
        for vid in a.video_ids:
            np.testing.assert_array_equal(a.video(vid)["visual_tokens"], b.video(vid)["visual_tokens"])
            np.testing.assert_array_equal(a.video(vid)["audio"], b.video(vid)["audio"])
    again = CliRunner().invoke(
        extract_main,
        ["--videos", str(videos), "--out", str(tmp_path / "cli.h5"), "--in-process", *TINY_FLAGS],
    )
    assert "written 0, skipped as done 4, failed 3" in again.output  # only the failed ones are retried
    assert again.output.startswith("mode: in this process (--in-process)\n")


@pytest.mark.parametrize(
    "runtime, env, videos, expected",
    [
        ({}, None, 99, (InProcessEngine, "in this process, without Ray: 99 videos to do")),
        ({}, None, 100, (RayEngine, "on a local Ray instance: 100 videos to do")),
        ({"local_ray_min_videos": 5}, None, 5, (RayEngine, "on a local Ray instance: 5 videos to do")),
        ({}, None, 0, (InProcessEngine, "in this process, without Ray: 0 videos to do")),  # questions only
        ({"encoders": 2}, None, 3, (RayEngine, "on a local Ray instance (2 encoder actors asked for)")),
        ({"address": "10.0.0.1:6379"}, None, 3, (RayEngine, "on the Ray cluster at 10.0.0.1:6379")),
        ({}, "10.0.0.2:6379", 3, (RayEngine, "on the Ray cluster at 10.0.0.2:6379")),
        (
            {"in_process": True, "address": "h:1"},
            None,
            500,
            (InProcessEngine, "in this process (--in-process)"),
        ),
        ({"in_process": False}, None, 1, (RayEngine, "on a local Ray instance (--no-in-process)")),
        ({"in_process": False}, "h:2", 1, (RayEngine, "on the Ray cluster at h:2 (--no-in-process)")),
    ],
)
def test_the_mode_follows_the_flags_then_the_address_then_the_job_size(
    runtime, env, videos, expected, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    engine, why = choose_mode(RuntimeConfig(**runtime), videos)
    assert (engine, why[: len(expected[1])]) == expected


RUN = "import sys; from avaf.extract.cli import main; sys.exit(main())"


def test_resume_after_a_real_kill_equals_an_uninterrupted_run(tmp_path):
    src = tmp_path / "clips"
    for i in range(6):
        write_clip(src / f"clip{i}.mp4", seconds=2 + i % 3, tones=(300 + 50 * i, 500, 700, 900))
    args = [*TINY_FLAGS, "--videos", str(src), "--in-process", "--shard-videos", "1"]
    whole = subprocess.run(
        [sys.executable, "-c", RUN, *args, "--out", str(tmp_path / "whole.h5")], capture_output=True
    )
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    out = tmp_path / "killed.h5"
    victim = subprocess.Popen(
        [sys.executable, "-c", RUN, *args, "--out", str(out)], stderr=subprocess.DEVNULL
    )
    while len(complete_shards(shard_dir(out))) < 2:
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    victim.kill()
    victim.wait()
    assert len(complete_shards(shard_dir(out))) < 6
    again = subprocess.run(
        [sys.executable, "-c", RUN, *args, "--out", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipped as done" in again.stdout and "skipped as done 0" not in again.stdout
    shard_ids = []
    for p in complete_shards(shard_dir(out)):
        with FeatureStore(p) as s:
            shard_ids += s.video_ids
    assert sorted(shard_ids) == [f"clip{i}" for i in range(6)]  # every video encoded exactly once
    with FeatureStore(tmp_path / "whole.h5") as a, FeatureStore(out) as b:
        assert a.video_ids == b.video_ids
        for vid in a.video_ids:
            for name in schema.SECONDS.names:
                np.testing.assert_array_equal(a.video(vid)[name], b.video(vid)[name])


def test_questions_are_added_without_touching_the_videos(extracted, tmp_path):
    _, first = extracted
    out = tmp_path / "feats.h5"
    shutil.copytree(shard_dir(first), shard_dir(out))
    shutil.copy(first, out)
    rows = [
        {"video_id": "nasa_13013", "question_id": 1, "type": '["Audio", "Counting"]', "anser": "two",
         "question_content": "How many sounding <Object> are in the video?", "templ_values": '["violin"]'},
        {"video_id": "nasa_13013", "question_id": 2, "type": '["Visual", "Location"]', "anser": "left",
         "question_content": "Where is the <Object>?", "templ_values": '["cello"]'},
        {"video_id": "00000042", "question_id": 3, "type": '["Audio-Visual", "Existential"]', "anser": "yes",
         "question_content": "Is there a <Object> sound?", "templ_values": '["piano"]'},
    ]  # fmt: skip
    ann = tmp_path / "avqa-val.json"
    ann.write_text(json.dumps(rows))
    cfg = ExtractConfig(
        out=str(out), input=InputConfig(annotations=(str(ann),)),
        clip=ClipConfig(model=TINY_CLIP, pretrained="random"), vggish=VGGishConfig(weights="random"),
    )  # fmt: skip
    summary = run_extract(cfg, progress=False)
    assert summary.questions == 3 and summary.questions_without_video == 1
    clip = load_encoders(cfg).clip
    with FeatureStore(first) as a, FeatureStore(out) as b:
        for vid in a.video_ids:
            np.testing.assert_array_equal(a.video(vid)["visual_tokens"], b.video(vid)["visual_tokens"])
        q = b.questions(split="val")
        assert q["text"].tolist() == [
            "How many sounding violin are in the video",
            "Where is the cello",
            "Is there a piano sound",
        ]
        expected = clip.encode_text(q["text"].tolist())
        for i, qid in enumerate(q["question_id"]):
            words = b.question_words(qid)
            assert words.shape == (len(clip.tokenize([q["text"][i]])[0].nonzero()), 32)
            np.testing.assert_array_equal(words, expected[i][0].numpy().astype(np.float16))
            np.testing.assert_array_equal(q["sentence"][i], expected[i][1].numpy().astype(np.float16))
        assert not np.array_equal(q["sentence"][0], q["sentence"][1])
    assert run_extract(cfg, progress=False).questions == 0  # already encoded: nothing to do


@pytest.mark.parametrize("mode", ["--in-process", "--no-in-process"])
def test_missing_weights_say_what_to_do_and_lose_nothing(videos, tmp_path, mode):
    """In process the driver fails to load them; with local Ray the driver looks for them (on the machine
    the actors will run on) before Ray starts."""
    empty = tmp_path / "weights"
    empty.mkdir()
    args = ["--videos", str(videos), "--out", str(tmp_path / "f.h5"), mode, "--weights-dir", str(empty)]
    res = CliRunner().invoke(extract_main, [*args, "--clip-model", "ViT-B-32", "--vggish-weights", "random"])
    assert res.exit_code == 2
    assert "has no ViT-B-32 'openai' checkpoint" in res.output and "avaf-fetch-weights" in res.output
    assert not (tmp_path / "f.h5").exists() and not complete_shards(shard_dir(tmp_path / "f.h5"))


def test_weights_missing_on_the_cluster_are_the_probes_one_line_and_lose_nothing(
    videos, tmp_path, monkeypatch
):
    """With --address the driver cannot look: the probe and the job's actors start together and both fail.
    The probe's error is what is raised, not Ray's ActorDiedError or a JobLost, and no shard is written."""
    from avaf.extract.encoders.weights import WeightsUnavailable

    monkeypatch.setattr("avaf.extract.ray_engine.find_weights", lambda cfg: None)  # a driver not on the nodes
    (tmp_path / "weights").mkdir()
    cfg = ExtractConfig(
        out=str(tmp_path / "f.h5"), input=InputConfig(videos=str(videos)), clip=ClipConfig(model="ViT-B-32"),
        vggish=VGGishConfig(weights="random"),
        runtime=RuntimeConfig(in_process=False, weights_dir=str(tmp_path / "weights"), num_cpus=0.5),
    )  # fmt: skip
    with pytest.raises(WeightsUnavailable, match="has no ViT-B-32 'openai' checkpoint"):
        run_extract(cfg, progress=False)
    assert not (tmp_path / "f.h5").exists() and not complete_shards(shard_dir(tmp_path / "f.h5"))


def test_a_malformed_annotation_file_stops_before_any_work(extracted, tmp_path):
    _, first = extracted
    bad = tmp_path / "avqa-test.json"
    bad.write_text('[{"video_id": "nasa_13013"}]')
    before = first.read_bytes()
    res = CliRunner().invoke(extract_main, ["--annotations", str(bad), "--out", str(first), *TINY_FLAGS])
    assert res.exit_code == 2
    assert f"{bad}: row 0: missing key 'type'" in res.output
    assert first.read_bytes() == before  # the existing store is untouched


def test_questions_keep_the_annotation_order_whatever_order_the_batches_arrive_in(tmp_path):
    """Two encoder actors finish their batches in either order (CI once saw batch 2 before batch 1): the
    shard still lists the questions as the annotation file does, each with its own features."""
    from avaf.extract import questions as question_stage
    from avaf.shared.avqa.annotations import Question

    todo = [
        QuestionJob(Question(question_id=10 + i, video_id="v", split="test", text=f"q{i}", type="Audio/Counting",
                             answer="two", template=f"q{i}", templ_values=()), ("avaf",))
        for i in range(7)
    ]  # fmt: skip
    feats = [{"avaf": {"words": np.full((i + 1, 4), i, np.float16), "sentence": np.full(4, i, np.float16)}}
             for i in range(7)]  # fmt: skip
    batches = [(b, feats[3 * b : 3 * b + 3]) for b in range(3)]  # 3 + 3 + 1 questions
    meta = {"config": {}, "signature": {}, "random_weights": ["clip"]}
    sizes = [3, 3, 1]
    n = question_stage.write(todo, sizes, iter([batches[2], batches[0], batches[1]]), tmp_path, meta, False)
    assert n == 7
    (shard,) = complete_shards(tmp_path)
    with FeatureStore(shard) as s:
        q = s.questions()
        assert q["question_id"].tolist() == list(range(10, 17))
        assert q["sentence"][:, 0].tolist() == list(range(7))
        assert [s.question_words(10 + i).shape[0] for i in range(7)] == list(range(1, 8))
    with pytest.raises(RuntimeError, match=r"batches \[2\] arrived without"):
        question_stage.write(todo, sizes, iter([batches[0], batches[2]]), tmp_path / "b", meta, False)


def test_annotations_alone_still_encode_the_questions(tmp_path):
    """Without --videos a run encodes the questions alone (a store to add videos to later); only an empty
    --videos folder is refused (test_errors_early)."""
    rows = json.loads((DATA / "music-avqa" / "json_update" / "avqa-val.json").read_text())[:3]
    (tmp_path / "avqa-test.json").write_text(json.dumps(rows))
    out = tmp_path / "new" / "feats.h5"
    args = ["--annotations", str(tmp_path / "avqa-test.json"), "--out", str(out), "--in-process", *TINY_FLAGS]
    res = CliRunner().invoke(extract_main, args)
    assert res.exit_code == 0, res.output
    assert f"{out}: written 0, skipped as done 0, failed 0, questions 3 (" in res.output
    with FeatureStore(out) as fs:
        assert fs.video_ids == [] and len(fs.questions()["question_id"]) == 3


def test_each_input_file_is_read_once_per_run(tmp_path, monkeypatch):
    """The preflight reads the annotation file and the --qa-prompts table and hands them on: one read of
    each per run (was: the annotation file twice, in the preflight and again in the question stage)."""
    import pathlib

    write_clip(tmp_path / "videos" / "tones.mp4", seconds=2)
    rows = json.loads((DATA / "music-avqa" / "json_update" / "avqa-val.json").read_text())[:3]
    ann = tmp_path / "avqa-test.json"
    ann.write_text(json.dumps(rows))
    table = tmp_path / "prompts.csv"
    head = "No.,Modalities,Type,Question Template,Declarative Sentence Text Prompt\n"
    table.write_text(head + f"1,Audio,Counting,{rows[0]['question_content']},A sentence.\n")
    (tmp_path / "tspm.yaml").write_text(
        "tspm:\n  clip_model: " + str(DATA / "ViT-L-14-336-avaf-tiny.json") + "\n"
        "  tome_model_kwargs: {embed_dim: 32, num_heads: 2, mlp_ratio: 1.0}\n"
    )
    reads: list[str] = []
    for method in ("read_text", "read_bytes"):
        original = getattr(pathlib.Path, method)

        def counted(self, *args, _original=original, **kwargs):
            reads.append(str(self))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, method, counted)
    out = tmp_path / "feats.h5"
    args = [
        "--videos",
        str(tmp_path / "videos"),
        "--annotations",
        str(ann),
        "--out",
        str(out),
        "--in-process",
    ]
    res = CliRunner().invoke(extract_main, [*args, *TINY_FLAGS])
    assert res.exit_code == 0, res.output
    assert f"{out}: written 1, skipped as done 0, failed 0, questions 3 (" in res.output
    assert reads.count(str(ann)) == 1, reads
    reads.clear()
    tspm = ["--features", "avaf,tspm", "--qa-prompts", str(table), "--config", str(tmp_path / "tspm.yaml")]
    tspm += [
        "--random-weights",
        "--out",
        str(tmp_path / "tspm.h5"),
        "--annotations",
        str(ann),
        "--in-process",
    ]
    res = CliRunner().invoke(extract_main, [*tspm, "--clip-model", TINY_CLIP])
    assert res.exit_code == 0, res.output
    assert f"{tmp_path / 'tspm.h5'}: written 0, skipped as done 0, failed 0, questions 3 (" in res.output
    assert (reads.count(str(ann)), reads.count(str(table))) == (1, 1), reads


def test_an_error_that_ends_the_run_starts_a_line_after_the_progress_bar(tmp_path, monkeypatch):
    """Without -q the videos' bar is on stderr. An error that ends the run while it is drawn (here the disk
    fills as the first shard is written) was printed on the bar's line, and the bar drawn again after it:
    '  0%|          | 0/2 [00:00<?, ?video/s]avaf-extract: ...: No space left on device'."""
    import errno
    import os

    from avaf.shared.store.writer import ShardWriter

    for name in ("a", "b"):
        write_clip(tmp_path / "videos" / f"{name}.mp4", seconds=2)

    def disk_full(self, features):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(ShardWriter, "add_video", disk_full)
    args = ["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "f.h5"), "--in-process"]
    res = CliRunner().invoke(extract_main, [*args, *TINY_FLAGS])
    assert res.exit_code == 2, res.output
    *_, bar, line, end = res.stderr.split("\n")
    assert re.search(r"\r\s*0%\|.*\| 0/2 \[", bar), bar  # the bar was shown, and ended with its line
    assert re.fullmatch(
        rf"avaf-extract: {re.escape(str(shard_dir(tmp_path / 'f.h5')))}/\S+: No space left on device", line
    ), line
    assert end == ""  # nothing after the error line: the bar is not drawn again

"""The same arrays from any run (docs/reliability.md, "The same bytes from any run"): a store's rows follow a
rule that no schedule changes (videos and run records by id, questions in annotation order), so the same
videos and config give byte-identical arrays in process, on local Ray with two encoders (completion order),
and resumed, whether the resume appends or rebuilds. `avaf-inspect --checksum` prints the digest that
compares them. The simulated 3-node cluster: tests/test_cluster.py (slow), through `assert_same_store`."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from test_extract import tiny_cfg

from avaf.extract.pipeline import run_extract
from avaf.shared.store import schema
from avaf.shared.store.checksum import array_digest
from avaf.shared.store.inspect_cli import main as inspect_main
from avaf.shared.store.reader import FeatureStore

from conftest import write_clip

N = 6
QUESTION_IDS = [7, 3, 11, 0, 5, 9, 2]  # annotation order, not id order


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(N):
        write_clip(d / f"clip{i}.mp4", seconds=1 + i % 2, tones=(300 + 50 * i, 500 + 25 * i))
    texts = ["How many sounding violin are in the video", "Where is the cello", "Is there a piano sound"]
    rows = [
        {"video_id": f"clip{q % N}", "question_id": q, "type": '["Audio", "Counting"]', "anser": "two",
         "question_content": texts[q % 3] + " number " + "one " * q, "templ_values": "[]"}
        for q in QUESTION_IDS
    ]  # fmt: skip
    (d.parent / "avqa-test.json").write_text(json.dumps(rows))
    return d


def config(clips, out, limit=None, **runtime):
    cfg = tiny_cfg(clips, out, batch_size=4, **runtime)
    annotations = (str(clips.parent / "avqa-test.json"),)
    return replace(cfg, input=replace(cfg.input, annotations=annotations, limit=limit))


def extract(cfg) -> None:
    summary = run_extract(cfg, progress=False)
    assert not summary.failed, summary.failed


@pytest.fixture(scope="module")
def fresh(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh") / "feats.h5"
    extract(config(clips, out, shard_videos=4))
    return out


def test_a_store_keeps_videos_by_id_and_questions_in_annotation_order(fresh):
    with FeatureStore(fresh) as fs:
        assert fs.video_ids == [f"clip{i}" for i in range(N)]
        assert fs.runs()["video_id"].tolist() == [f"clip{i}" for i in range(N)]
        assert fs.questions()["question_id"].tolist() == QUESTION_IDS


def test_local_ray_with_two_encoders_writes_the_bytes_of_an_in_process_run(clips, fresh, tmp_path):
    out = tmp_path / "ray.h5"
    cfg = config(clips, out, in_process=False, encoders=2, num_cpus=0.5, shard_videos=1, videos_per_call=1)
    extract(cfg)
    with FeatureStore(out) as fs:
        assert fs.config["runtime"]["in_process"] is False  # the recorded mode differs ...
    assert array_digest(out) == array_digest(fresh)  # ... the arrays do not
    assert_same_datasets(out, fresh)


def test_a_resumed_run_equals_a_fresh_one_by_append_and_by_rebuild(clips, fresh, tmp_path):
    appended = tmp_path / "appended.h5"
    extract(config(clips, appended, limit=3))  # the first three ids; the rest sort after them: appended
    extract(config(clips, appended))
    with h5py.File(appended) as f:
        assert len(json.loads(f.attrs["built_from"])) == 3  # two video shards and one of questions
    assert array_digest(appended) == array_digest(fresh)
    rebuilt, broken = tmp_path / "rebuilt.h5", clips / "clip1.mp4"
    good = broken.read_bytes()
    try:
        broken.write_bytes(good[: len(good) // 4])  # fails this time ...
        summary = run_extract(config(clips, rebuilt), progress=False)
        assert sorted(summary.failed) == ["clip1"]
    finally:
        broken.write_bytes(good)
    extract(config(clips, rebuilt))  # ... and is written next time, between clip0 and clip2: a rebuild
    assert array_digest(rebuilt) == array_digest(fresh)
    assert_same_datasets(rebuilt, fresh)


def test_inspect_checksum_prints_one_digest_that_any_changed_value_changes(fresh, tmp_path):
    res = CliRunner().invoke(inspect_main, [str(fresh), "--checksum"])
    assert res.exit_code == 0, res.output
    assert res.output == f"sha256:{array_digest(fresh)}  {fresh}\n"
    changed = tmp_path / "changed.h5"
    shutil.copy(fresh, changed)
    with h5py.File(changed, "r+") as f:
        audio = f[schema.SECONDS.path("audio")]
        audio[3, 7] = np.float16(audio[3, 7] + np.float16(0.5))
    assert array_digest(changed) != array_digest(fresh)
    shutil.copy(fresh, changed)
    with h5py.File(changed, "r+") as f:
        f.attrs["created"] = "another time"  # when and how it ran are not the arrays
        f.attrs["config"] = json.dumps({"runtime": {"in_process": False}})
    assert array_digest(changed) == array_digest(fresh)


def assert_same_datasets(a, b) -> None:
    """Every dataset of two files equal, value for value, in the same row order."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        names = _datasets(fa)
        assert names == _datasets(fb)
        for p in names:
            np.testing.assert_array_equal(fa[p][...], fb[p][...], err_msg=p)


def _datasets(f) -> list[str]:
    out: list[str] = []
    f.visititems(lambda p, o: out.append(p) if isinstance(o, h5py.Dataset) else None)
    return sorted(out)

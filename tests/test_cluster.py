"""avaf-extract on a simulated cluster: several real Ray nodes on this machine (docs/cluster.md).

The cluster: a head (1 CPU, where the driver connects), a decode node (1 CPU) and a node that declares one
GPU (1 CPU, taken by the encoder actor; no CUDA here, so the actor computes on the CPU). Nodes are removed
with SIGKILL while a job runs: every video must end written exactly once, or recorded as lost and written
by the next run, with the same bits as an in-process run. Whether a kill also costs Ray a re-run (blocks
held only by the dead node) depends on timing; the outcome checked here must hold either way, and
tests/benchmarks/bench_cluster_recovery.py times the stall. Ray detects a dead node by missed health checks
(about 15 s with Ray's defaults); these tests check every second, five misses, so the cases stay short.
Each case starts a cluster of its own and takes tens of seconds: all are marked slow. The default suite
runs the Ray engine on a local instance (tests/test_extract.py, the parity of the two engines).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from test_extract import TINY_FLAGS, tiny_cfg

from avaf.extract.config import ExtractConfig
from avaf.extract.pipeline import run_extract
from avaf.shared.ray_session import HEAD_GRACE_S
from avaf.shared.store import schema
from avaf.shared.store.checksum import array_digest
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import complete_shards, shard_dir

from conftest import local_cluster, write_clip

N = 8  # clips of 1-2 s: long enough to kill a node mid-run, short enough for a case in under a minute
DECODE = {"num_cpus": 1}
GPU = {"num_cpus": 1, "num_gpus": 1}
FAST_HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}
# one video per shard and per encoder call: the kill lands between videos; small fixed batches keep it quick
RUNTIME = {"shard_videos": 1, "videos_per_call": 1, "batch_size": 4}
FLAGS = [*TINY_FLAGS, "--shard-videos", "1", "--videos-per-call", "1", "--batch-size", "4"]


def config(clips, out, **runtime) -> ExtractConfig:
    return tiny_cfg(clips, out, **{"in_process": None, **RUNTIME, **runtime})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(N):
        write_clip(d / f"clip{i}.mp4", seconds=1 + i % 2, tones=(300 + 50 * i, 500 + 25 * i))
    return d


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """The same clips extracted in-process, without Ray: the bits every cluster run must reproduce."""
    out = tmp_path_factory.mktemp("inproc") / "feats.h5"
    assert run_extract(config(clips, out, in_process=True), progress=False).written == N
    return out


@pytest.fixture
def cluster():
    """(cluster, decode node, GPU node); torn down after the test, the driver disconnected."""
    with local_cluster(DECODE, GPU, system_config=FAST_HEALTH_CHECKS) as (c, (decode, gpu)):
        yield c, decode, gpu


class Job(threading.Thread):
    """run_extract in a thread: the main thread stays free to remove and add nodes (Ray allows only that one)."""

    def __init__(self, cfg: ExtractConfig):
        super().__init__(daemon=True)
        self.cfg, self.summary, self.error = cfg, None, None
        self.start()

    def run(self) -> None:
        try:
            self.summary = run_extract(self.cfg, progress=False)
        except BaseException as e:  # re-raised in the test's thread by result()
            self.error = e

    def result(self, timeout: float = 300):
        self.join(timeout)
        assert not self.is_alive(), f"the run did not end within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.summary


def kill_when_written(cluster, node, out, job: Job, after: int = 1) -> tuple[float, int]:
    """SIGKILL every process of `node` (a crash, not a drain) once `after` videos are in complete shards.
    Returns the time of the kill and how many videos were written before it."""
    while (written := len(complete_shards(shard_dir(out)))) < after:
        assert job.is_alive(), "the run ended before the node could be killed"
        time.sleep(0.02)
    at = time.time()
    cluster.remove_node(node, allow_graceful=False)
    assert written < N or after == N, "every video was written before the kill"
    return at, written


def shard_videos(out) -> list[str]:
    """Video ids with features over every complete shard, repeats kept: each must appear once."""
    ids = []
    for p in complete_shards(shard_dir(out)):
        with FeatureStore(p) as s:
            ids += s.video_ids
    return sorted(ids)


def arrivals(out) -> list[float]:
    """time.time() at which each shard's first video reached the driver (the shard's name records it)."""
    return sorted(int(p.name.split("-")[0]) / 1e9 for p in complete_shards(shard_dir(out)))


def recovery(kill_at: float, out) -> str:
    after = [t - kill_at for t in arrivals(out) if t > kill_at]
    gaps = np.diff([0.0, *after])
    return f"{len(after)} records after the kill, the last {after[-1]:.1f} s after it, longest wait {gaps.max():.1f} s"


def assert_same_store(a_path, b_path) -> None:
    """Two feats.h5 files hold the same arrays in the same order (the store's rows follow ids, not arrival):
    one digest (`avaf-inspect --checksum`), and every array of every video and run record equal."""
    with FeatureStore(a_path) as a, FeatureStore(b_path) as b:
        assert a.video_ids == b.video_ids
        for vid in a.video_ids:
            x, y = a.video(vid), b.video(vid)
            assert x.keys() == y.keys()
            for name in x.keys():
                np.testing.assert_array_equal(x[name], y[name], err_msg=f"{vid} {name}")
        ra, rb = a.runs(), b.runs()
        for name in schema.RUNS.names:
            np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)
    assert array_digest(a_path) == array_digest(b_path)


@pytest.mark.slow
def test_a_decode_node_lost_mid_run_is_recovered_and_every_video_written_once(
    clips, reference, cluster, tmp_path
):
    c, decode, gpu = cluster
    out = tmp_path / "feats.h5"
    job = Job(config(clips, out, address=c.address))
    kill_at, before = kill_when_written(c, decode, out, job)
    s = job.result()
    print(f"\ndecode node lost after {before} of {N} videos: {recovery(kill_at, out)}")
    assert s.ok and s.written == N and s.skipped == 0
    assert shard_videos(out) == [f"clip{i}" for i in range(N)]  # each video once, none missing
    decoded = Counter(n["decode_node"] for n in s.nodes.values())
    # the decode node's share may be lost whole and redone on the head (it depends on when the kill falls),
    # so the spread is asserted on the uninterrupted run below
    assert set(decoded) <= {c.head_node.node_id, decode.node_id}
    assert gpu.node_id not in decoded  # its one CPU is the encoder's
    assert {(n["encode_node"], n["device"]) for n in s.nodes.values()} == {(gpu.node_id, "cpu")}
    assert_same_store(reference, out)


@pytest.mark.slow
def test_decode_tasks_spread_over_the_nodes_and_the_encoder_sits_on_the_gpu_node(
    clips, reference, cluster, tmp_path
):
    c, decode, gpu = cluster
    out = tmp_path / "feats.h5"
    s = run_extract(config(clips, out, address=c.address), progress=False)
    assert s.ok and s.written == N
    decoded = Counter(n["decode_node"] for n in s.nodes.values())
    assert set(decoded) == {c.head_node.node_id, decode.node_id}, decoded  # both 1-CPU nodes decode
    assert {(n["encode_node"], n["device"]) for n in s.nodes.values()} == {(gpu.node_id, "cpu")}
    assert_same_store(reference, out)


@pytest.mark.slow
def test_cli_with_address_equals_in_process(clips, reference, cluster, tmp_path):
    from click.testing import CliRunner

    from avaf.extract.cli import main as extract_main

    c, _, _ = cluster
    out = tmp_path / "feats.h5"
    res = CliRunner().invoke(
        extract_main, [*FLAGS, "--videos", str(clips), "--out", str(out), "--address", c.address]
    )
    assert res.exit_code == 0, res.output
    assert f"written {N}, skipped as done 0, failed 0" in res.output
    assert_same_store(reference, out)


@pytest.mark.slow
def test_the_encoder_node_lost_and_replaced_mid_run_loses_nothing(clips, reference, cluster, tmp_path):
    c, _, gpu = cluster
    out = tmp_path / "feats.h5"
    job = Job(config(clips, out, address=c.address))
    kill_at, before = kill_when_written(c, gpu, out, job)
    new = c.add_node(**GPU)  # a replacement, as an autoscaler would start
    s = job.result()
    print(f"\nencoder node lost after {before} of {N} videos, replaced: {recovery(kill_at, out)}")
    assert s.ok and s.written == N
    assert shard_videos(out) == [f"clip{i}" for i in range(N)]
    encoded = Counter(n["encode_node"] for n in s.nodes.values())
    assert set(encoded) == {gpu.node_id, new.node_id} and encoded[gpu.node_id] >= before  # restarted there
    assert_same_store(reference, out)


@pytest.mark.slow
def test_the_only_gpu_node_lost_records_the_rest_as_lost_and_the_next_run_writes_them(
    clips, reference, cluster, tmp_path
):
    import ray.data

    c, _, gpu = cluster
    out = tmp_path / "feats.h5"
    ctx = ray.data.DataContext.get_current()  # sealed into the job's Dataset when it is created
    default, ctx.execution_no_progress_timeout_s = (
        ctx.execution_no_progress_timeout_s,
        45,
    )  # 30 min by default
    try:
        job = Job(config(clips, out, address=c.address))
        kill_at, before = kill_when_written(c, gpu, out, job)
        first = job.result()
    finally:
        ctx.execution_no_progress_timeout_s = default
    print(f"\nonly GPU node lost after {before} of {N} videos: {recovery(kill_at, out)}")
    assert first.written >= before and first.written + len(first.failed) == N
    assert first.failed and all(e.startswith("lost: ExecutionTimeoutError") for e in first.failed.values())
    with FeatureStore(out) as fs:  # recorded in the store, not only printed
        assert sorted(v for v, _, _ in fs.failed()) == sorted(first.failed)
    c.add_node(**GPU)  # a GPU node is back; the next run writes what was lost
    again = run_extract(config(clips, out, address=c.address), progress=False)
    assert again.ok and again.skipped == first.written and again.written == len(first.failed)
    assert shard_videos(out) == [f"clip{i}" for i in range(N)]
    assert_same_store(reference, out)


RUN = "import sys; from avaf.extract.cli import main; sys.exit(main())"


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_from_its_shards_on_the_same_cluster(
    clips, reference, cluster, tmp_path
):
    c, _, _ = cluster
    out = tmp_path / "feats.h5"
    args = [
        sys.executable,
        "-c",
        RUN,
        *FLAGS,
        "--videos",
        str(clips),
        "--out",
        str(out),
        "--address",
        c.address,
    ]
    victim = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(complete_shards(shard_dir(out))) < 2:
        assert victim.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(complete_shards(shard_dir(out)))
    assert done < N
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"written {N - done}, skipped as done {done}, failed 0" in again.stdout
    assert shard_videos(out) == [f"clip{i}" for i in range(N)]
    assert_same_store(reference, out)


@pytest.mark.slow
def test_the_head_lost_ends_the_run_with_one_line_and_a_new_head_resumes_it(clips, reference, tmp_path):
    """Ray cannot replace a head without external GCS storage: the command ends within HEAD_GRACE_S plus a
    second or two after the head's processes are killed, with one line saying so and what was kept; the same
    command against a new head resumes from the complete shards and ends with the uninterrupted run's bytes."""
    out = tmp_path / "feats.h5"
    command = [sys.executable, "-c", RUN, *FLAGS, "--videos", str(clips), "--out", str(out), "--address"]
    with local_cluster(DECODE, GPU, system_config=FAST_HEALTH_CHECKS) as (c, _):
        address = c.address
        victim = subprocess.Popen(
            [*command, address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        while len(complete_shards(shard_dir(out))) < 2:
            assert victim.poll() is None, "the run ended before the head could be killed"
            time.sleep(0.02)
        c.remove_node(c.head_node, allow_graceful=False)  # SIGKILL: the GCS, the head's raylet, its workers
        killed = time.monotonic()
        stdout, stderr = victim.communicate(timeout=120)
        ended = time.monotonic() - killed
    lines = [x for x in (stdout + stderr).splitlines() if x.startswith("avaf-extract:")]
    print(f"head killed; the command ended {ended:.1f} s later: {lines}")
    assert victim.returncode == 1 and len(lines) == 1, stdout + stderr
    done = len(complete_shards(shard_dir(out)))
    assert lines[0].startswith(f"avaf-extract: lost the Ray cluster's head ({address}): no answer for ")
    assert (
        f"Kept: {done} complete shards in {shard_dir(out)}" in lines[0] and "run the same command" in lines[0]
    )
    assert ended < HEAD_GRACE_S + 30  # bounded: the watch, not Ray's minute-long wait (a loose bound)
    assert 2 <= done < N and not out.exists()
    with local_cluster(DECODE, GPU, system_config=FAST_HEALTH_CHECKS) as (c, _):
        again = subprocess.run([*command, c.address], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"written {N - done}, skipped as done {done}, failed 0" in again.stdout
    assert shard_videos(out) == [f"clip{i}" for i in range(N)]
    assert_same_store(reference, out)


@pytest.mark.slow
def test_the_question_stage_lost_with_the_only_gpu_node_keeps_the_videos_and_the_next_run_encodes_them(
    clips, reference, cluster, tmp_path
):
    """The JobLost path for questions: every video is in its shard when the only GPU node dies, so the text
    actors have nowhere to run; after Ray Data's no-progress timeout the questions are reported lost (not
    written, the videos kept), and the same command with a GPU node back encodes them."""
    import ray.data

    c, _, gpu = cluster
    out, annotations = tmp_path / "feats.h5", tmp_path / "avqa-test.json"
    rows = [
        {"video_id": f"clip{q % N}", "question_id": q, "type": '["Audio", "Counting"]', "anser": "two",
         "question_content": f"How many instruments are sounding number {q}", "templ_values": "[]"}
        for q in range(40)
    ]  # fmt: skip
    annotations.write_text(json.dumps(rows))
    cfg = config(clips, out, address=c.address)
    cfg = replace(cfg, input=replace(cfg.input, annotations=(str(annotations),)))
    ctx = ray.data.DataContext.get_current()
    default, ctx.execution_no_progress_timeout_s = ctx.execution_no_progress_timeout_s, 45
    try:
        job = Job(cfg)
        kill_when_written(c, gpu, out, job, after=N)  # the videos are done: the question stage starts
        first = job.result()
    finally:
        ctx.execution_no_progress_timeout_s = default
    assert first.written == N and not first.failed and first.questions == 0, (
        first.failed,
        first.questions_lost,
    )
    assert first.questions_lost.startswith("lost: "), first.questions_lost
    with FeatureStore(out) as fs:
        assert len(fs.video_ids) == N and len(fs.questions()["question_id"]) == 0
    c.add_node(**GPU)
    again = run_extract(cfg, progress=False)
    assert again.ok and again.skipped == N and again.written == 0 and again.questions == 40
    with FeatureStore(out) as fs:
        assert fs.questions()["question_id"].tolist() == list(range(40))

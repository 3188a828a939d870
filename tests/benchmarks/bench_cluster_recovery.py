"""Benchmark: how long avaf-extract takes to recover when a node of its Ray cluster dies mid-run.

The figures of docs/cluster.md, "When a node dies". The simulated cluster of tests/test_cluster.py (a head, a decode node with 2 CPUs, a node
declaring one GPU whose CPU the encoder actor takes; all on this machine, tiny random encoders), clips
generated with PyAV. For each case a fresh cluster runs the same extraction; once the first video is
written, one node is SIGKILLed:

* none: the intact cluster, the baseline;
* decode: the decode node; Ray re-runs its tasks and rebuilds its lost blocks on the head;
* encoder: the GPU node, and a replacement GPU node joins right away (as an autoscaler would start one);
  the encoder actor restarts there.

Printed per case: when Ray marked the node dead, the longest wait between two written videos after the
kill, when the last video was written, and the whole run beside the baseline. Ray's default health checks
(a missed check every 3 s, dead after 5) unless ``--fast-health-checks`` (1 s, as the tests use). Other
work on the machine inflates every figure: the 1-minute load is printed. Not a test: it asserts no time.

    python tests/benchmarks/bench_cluster_recovery.py [--videos 12] [--fast-health-checks]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the cluster and clip helpers

from bench_decode import machine  # noqa: E402
from test_cluster import DECODE, FAST_HEALTH_CHECKS, GPU, Job, arrivals, config, kill_when_written  # noqa: E402

from conftest import local_cluster, write_clip  # noqa: E402


def run_case(case: str, clips: Path, work: Path, health: dict) -> dict:
    import ray

    out = work / case / "feats.h5"
    with local_cluster(DECODE, GPU, system_config=health) as (c, (decode, gpu)):
        start = time.time()
        job = Job(config(clips, out, address=c.address))
        if case == "none":
            s = job.result(timeout=1800)
            return {"run": time.time() - start, "written": s.written, "failed": len(s.failed)}
        victim = decode if case == "decode" else gpu
        kill_at, before = kill_when_written(c, victim, out, job)
        if case == "encoder":
            c.add_node(**GPU)
        dead = None
        while job.is_alive():
            if dead is None and not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == victim.node_id):
                dead = time.time() - kill_at
            time.sleep(0.1)
        s = job.result()
        after = [t - kill_at for t in arrivals(out) if t > kill_at]
        return {
            "run": time.time() - start,
            "written": s.written,
            "failed": len(s.failed),
            "before": before,
            "dead": dead,
            "wait": float(np.diff([0.0, *after]).max()) if after else float("nan"),
            "last": after[-1] if after else float("nan"),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=2, help="length of each generated clip")
    ap.add_argument("--fast-health-checks", action="store_true", help="as the tests: dead after ~5 s")
    ap.add_argument("--cases", default="none,decode,encoder")
    args = ap.parse_args()
    health = FAST_HEALTH_CHECKS if args.fast_health_checks else {}
    print(machine())
    print(f"load before: {os.getloadavg()[0]:.1f}; health checks: {health or 'Ray defaults'}")
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        for i in range(args.videos):
            write_clip(clips / f"clip{i}.mp4", seconds=args.seconds, tones=(300 + 50 * i, 500 + 25 * i))
        rows = {case: run_case(case, clips, Path(tmp), health) for case in args.cases.split(",")}
    base = rows.get("none", {}).get("run")
    print(f"\n{args.videos} clips of {args.seconds} s; seconds after the kill unless said otherwise")
    print(
        f"{'node killed':12} {'before':>6} {'marked dead':>11} {'longest wait':>12} {'last video':>10} {'run':>6} {'+run':>6}"
    )
    for case, r in rows.items():
        extra = f"{r['run'] - base:+6.1f}" if base and case != "none" else ""
        if case == "none":
            print(f"{case:12} {'':>6} {'':>11} {'':>12} {'':>10} {r['run']:6.1f} {extra:>6}")
            continue
        dead = f"{r['dead']:.1f}" if r["dead"] is not None else "-"
        print(
            f"{case:12} {r['before']:6d} {dead:>11} {r['wait']:12.1f} {r['last']:10.1f} {r['run']:6.1f} {extra:>6}"
            f"  written {r['written']}, failed {r['failed']}"
        )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

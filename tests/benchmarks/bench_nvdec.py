"""What serialises concurrent NVDEC decodes? k decodes at a time on threads of one process (as an encoder actor
runs them) against k processes (each its own CUDA context and interpreter), on the same clips, in one run.

A script, not a test: it prints figures and asserts nothing about time. On one H200, k = 1 / 4 / 16 threads
gave 1.72 / 1.80 / 1.57 videos/s at 360p (docs/benchmarks.md). If k processes scale where k threads do not,
the limit is in the process: the interpreter lock held by the Python side of each decode (the packet scan,
the audio, the per-frame picking) or the device-wide synchronisation before torch reads a frame; if
neither scales, it is the driver or the hardware (an H100 or H200 has 7 NVDEC engines). Each is run with and
without the device-wide wait before torch reads a frame (`torch.cuda.synchronize()` in
`pyav_backend.frame_to_cuda_rgb`), and the frames of one clip are compared both ways first.

    python tests/benchmarks/bench_nvdec.py --clips bench-out/feed/640x360/clips --k 1,4,16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path


def _decode(path: Path) -> str:
    """One video, its GPU work finished (one wait per video, both variants alike)."""
    import torch

    from avaf.extract.decode.backends import decode_video

    decoder = decode_video(path, "pyav-cuda").decoder
    getattr(torch.cuda, "_bench_nvdec_synchronize", torch.cuda.synchronize)()
    return decoder


def _waits(device_wide: bool) -> None:
    """Whether each NVDEC frame waits for the whole device before torch reads it (avaf's code: yes). The
    variant without the wait swaps torch.cuda.synchronize, which that code calls, for nothing, in this
    process only (a worker's initializer): an experiment, not a setting of avaf."""
    import torch

    if not hasattr(torch.cuda, "_bench_nvdec_synchronize"):
        torch.cuda._bench_nvdec_synchronize = torch.cuda.synchronize
    original = torch.cuda._bench_nvdec_synchronize

    def per_frame_wait_skipped(device=None):
        if device is not None:  # pyav_backend._nvdec's, which makes the context current on its thread: kept
            original(device)

    torch.cuda.synchronize = original if device_wide else per_frame_wait_skipped


def same_frames(path: Path) -> bool:
    """Whether the frames decoded without the device-wide wait equal those decoded with it."""
    import torch

    from avaf.extract.decode.backends import decode_video

    _waits(True)
    waited = decode_video(path, "pyav-cuda").frames.clone()
    _waits(False)
    unwaited = decode_video(path, "pyav-cuda").frames
    torch.cuda._bench_nvdec_synchronize()
    _waits(True)
    return bool(torch.equal(waited, unwaited))


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run(k: int, jobs: list[Path], pool_kind, device_wide: bool) -> tuple[float, float, set]:
    if pool_kind is ProcessPoolExecutor:
        ctx = {
            "mp_context": multiprocessing.get_context("spawn"),
            "initializer": _waits,
            "initargs": (device_wide,),
        }
    else:
        ctx = {}
        _waits(device_wide)
    with pool_kind(k, **ctx) as pool:
        list(pool.map(_decode, jobs[:k]))  # every worker warm: its context, PyAV, the first NVDEC session
        start, cpu = time.perf_counter(), _cpu_s()
        served = set(pool.map(_decode, jobs))
        wall = time.perf_counter() - start
        cpu = _cpu_s() - cpu  # a process pool's workers are not children until they exit: threads only
    return len(jobs) / wall, cpu / len(jobs), served


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--clips", type=Path, required=True, help="a folder of .mp4 clips (bench_feed.py makes them)"
    )
    p.add_argument("--k", default="1,4,16", help="decodes at a time")
    p.add_argument("--per-worker", type=int, default=4, help="videos each of the k decodes takes")
    args = p.parse_args()
    from avaf.extract.decode.backends import backend_problem

    if problem := backend_problem("pyav-cuda"):
        print(f"pyav-cuda (NVDEC): not measured ({problem})")
        return
    clips = sorted(args.clips.glob("*.mp4"))
    print(f"frames without the device-wide wait equal those with it: {same_frames(clips[0])}", flush=True)
    print("| decodes at a time | on | each frame waits for the device | videos/s | CPU-s/video | served by |")
    print("|---:|---|---|---:|---:|---|")
    for k in (int(x) for x in args.k.split(",")):
        jobs = [clips[i % len(clips)] for i in range(k * args.per_worker)]
        for name, pool_kind in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
            for device_wide in (True, False):
                rate, cpu, served = run(k, jobs, pool_kind, device_wide)
                cpu_text = f"{cpu:.2f}" if pool_kind is ThreadPoolExecutor else "–"
                wait = "yes (avaf)" if device_wide else "no"
                print(
                    f"| {k} | {name} | {wait} | {rate:.2f} | {cpu_text} | {', '.join(sorted(served))} |",
                    flush=True,
                )
    _waits(True)


if __name__ == "__main__":
    main()

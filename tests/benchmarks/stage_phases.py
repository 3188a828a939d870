"""Where the in-process extraction stage's CPU-seconds per video go, phase by phase (bench_extract.py's
"phases" mode; docs/benchmarks.md, "CPU-seconds per video, by phase").

On the same clips, in one run: avaf's decode alone (the isolated child, as the stage runs it, on FFmpeg's
threads and on one), the decode floor (bench_decode.decode_floor: the frames the packet plan must decode,
on one thread, nothing else), the naive route (bench_decode's: ffmpeg -> 1-fps JPEGs + a 16 kHz WAV, read
back), and `run_extract(..., in_process=True)` on the first clip alone and on all of them, whose
`ExtractSummary.cpu` splits the CPU-seconds by phase: decode in the child (of which to RGB and the views),
send (the child pickling the result into the pipe: the child's CPU, read from /proc, less its decode),
receive (this process reading and unpickling it), each encoder, write (the shards). The rest of a run
(loading the encoders, planning, feats.h5) is what the phases leave; "per extra video" is the difference
between the two runs over the extra clips. Not a test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench_decode import decode_floor, naive_cli, naive_pyav

PHASES = (
    ("decode", "decode in the child (demux, video + audio)"),
    ("rgb", "  of which to RGB + upright"),
    ("resize", "  of which the views (resize)"),
    ("send", "send (child: pickle, pipe)"),
    ("receive", "receive (read, unpickle)"),
    ("clip", "CLIP (incl. float16)"),
    ("vggish", "VGGish (log-mel + network)"),
    ("tspm_clip", "TSPM CLIP"),
    ("tome", "ToMe"),
    ("write", "write (shards)"),
)


def _proc_cpu_s(pid: int | None) -> float:
    """CPU-seconds (user + system) of process `pid` so far, from /proc; 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_pid() -> int | None:
    from avaf.extract.decode import worker

    return worker._shared.pid if worker._shared is not None else None


def decode_alone(videos: list[Path], threads: int, cpu_s) -> float:
    """CPU-s per video of avaf's decode in the isolated child as the stage runs it (backend auto)."""
    from avaf.extract.decode.worker import decode_isolated

    decode_isolated(videos[0], 600, backend="auto", threads=threads)  # warm-up: the child, PyAV's import
    start = cpu_s()
    for path in videos:
        decode_isolated(path, 600, backend="auto", threads=threads)
    return (cpu_s() - start) / len(videos)


def naive(videos: list[Path], ffmpeg: str | None, work: Path, cpu_s) -> float:
    """CPU-s per video of the naive route (bench_decode's: the ffmpeg CLI, else its PyAV replica)."""
    folder = work / "naive-decode"
    folder.mkdir(exist_ok=True)
    run = (lambda p: naive_cli(p, ffmpeg, folder)) if ffmpeg else (lambda p: naive_pyav(p, folder))
    start = cpu_s()
    for path in videos:
        run(path)
    shutil.rmtree(folder, ignore_errors=True)
    return (cpu_s() - start) / len(videos)


def stage(cfg, work: Path, limit: int | None, cpu_s) -> tuple[float, dict[str, float], int]:
    """(CPU-s of the whole run, CPU-s by phase, videos written) of one in-process run into a fresh output."""
    from avaf.extract.pipeline import run_extract

    out = Path(tempfile.mkdtemp(prefix="phases-", dir=work)) / "feats.h5"
    cfg = replace(cfg, out=str(out), input=replace(cfg.input, limit=limit))
    child, start = _child_pid(), cpu_s()
    child_start = _proc_cpu_s(child)
    summary = run_extract(cfg, progress=False)
    total = cpu_s() - start
    if _child_pid() != child:
        raise RuntimeError("the decode child was replaced during the run: its send cost is unknown")
    phases = dict(summary.cpu)
    phases["send"] = _proc_cpu_s(child) - child_start - phases.get("decode", 0.0)
    shutil.rmtree(out.parent, ignore_errors=True)
    if summary.failed:
        raise RuntimeError(f"failed: {summary.failed}")
    return total, phases, summary.written


def report(cfg, videos: list[Path], ffmpeg: str | None, work: Path, cpu_s, clock) -> list[str]:
    """The split, one line per phase (CPU-s per video), and what it is compared with; `clock()` starts a
    bench_extract.Clock (the share of the CPU other work took meanwhile)."""
    started = clock()
    alone = decode_alone(videos, cfg.decode.threads, cpu_s)
    alone_1 = decode_alone(videos, 1, cpu_s)
    floors = [decode_floor(p) for p in videos]
    naive_s = naive(videos, ffmpeg, work, cpu_s)
    one, _, _ = stage(cfg, work, 1, cpu_s)
    total, phases, n = stage(cfg, work, None, cpu_s)
    per = {k: v / n for k, v in phases.items()}
    row = started.row("", n, [])
    others = row.others / (row.wall * len(os.sched_getaffinity(0)))
    lines = [
        "",
        f"CPU-seconds per video, by phase: in-process stage, {n} clips, CLIP {cfg.clip.model}, decode threads "
        f"{cfg.decode.threads} (1-minute load {row.load[0]:.2f} -> {row.load[1]:.2f}, others {others:.0%})",
    ]
    for key, name in PHASES:
        if key in per:
            lines.append(f"  {name:<44} {per[key]:6.3f}")
    counted = sum(v for k, v in per.items() if k not in ("rgb", "resize", "merge"))
    rest = total / n - counted
    lines += [
        f"  {'rest (encoder loading, planning, feats.h5)':<44} {rest:6.3f}  ({rest * n:.2f} per run)",
        f"  {'whole stage':<44} {total / n:6.3f}",
        f"  {'whole stage, per extra video':<44} {(total - one) / max(n - 1, 1):6.3f}"
        f"  (run of {n} clips {total:.2f}, of 1 clip {one:.2f})",
        f"  {'decode alone, as the stage runs it':<44} {alone:6.3f}  (on one thread: {alone_1:.2f})",
        f"  {'naive route: ffmpeg -> 1-fps JPEG + WAV':<44} {naive_s:6.3f}",
    ]
    for path, f in zip(videos, floors, strict=True):
        clip = sum(f["clip"].values())
        kinds = ", ".join(f"{k} {f['floor'][k]}/{f['clip'][k]}" for k in f["clip"])
        lines.append(
            f"  decode floor {path.name}: {f['decoded']} of {clip} frames for {f['taken']} taken ({kinds}), "
            f"{f['cpu_s']:.2f} CPU-s on one thread; apart: the packet scan {f['scan_s']:.3f}, the audio "
            f"{f['audio_s']:.3f}"
        )
    lines.append(f"  (measured {time.strftime('%Y-%m-%d %H:%M')})")
    return lines

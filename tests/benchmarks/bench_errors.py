"""Time to the first error line: five bad inputs through the real console commands, each in a fresh process.

A script, not a test: it prints a table and asserts nothing about time (tests/test_errors_early.py checks
the exit codes, the first lines and that torch and Ray were not imported). Each bad input is one a user
makes in the first minute: an annotation file whose name names no split, a --weights-dir that does not
exist, a --clip-model open_clip does not have, and a file that is not a feature store given to avaf-train and
to avaf-sweep. The clock starts when the process is spawned and stops at the first line it prints on stderr
(where every avaf error goes); "exit s" is when it ended.

    python tests/benchmarks/bench_errors.py               # each case 3 times; the median is shown
    python tests/benchmarks/bench_errors.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANNOTATIONS = Path(__file__).parents[1] / "data" / "music-avqa" / "json_update" / "avqa-val.json"


def make_inputs(d: Path) -> list[tuple[str, str, list[str]]]:
    """The five bad inputs, built under `d`: (command, what is wrong, arguments)."""
    (d / "videos").mkdir(parents=True, exist_ok=True)
    (d / "videos" / "clip.mp4").write_bytes(b"\0" * 64)  # never opened: every case fails before decoding
    rows = json.loads(ANNOTATIONS.read_text())[:2]
    (d / "questions.json").write_text(json.dumps(rows))  # valid rows; the name gives no split
    videos, out = ["--videos", str(d / "videos")], ["--out", str(d / "feats.h5")]
    return [
        ("avaf-extract", "annotation file name names no split", ["--annotations", str(d / "questions.json"), *out]),
        ("avaf-extract", "--weights-dir that does not exist", [*videos, *out, "--weights-dir", str(d / "nope")]),
        ("avaf-extract", "--clip-model open_clip lacks", [*videos, *out, "--clip-model", "ViT-Nope-32"]),
        ("avaf-train", "--feats is not a feature file", ["--feats", str(d / "questions.json"), "--out", str(d / "run")]),
        ("avaf-sweep", "--feats is not a feature file",
         ["--feats", str(d / "questions.json"), "--grid", "ablations", "--out", str(d / "sweep")]),
    ]  # fmt: skip


def run_case(command: str, args: list[str], timeout: float = 600.0) -> tuple[float, float, int, str]:
    """(seconds to the first stderr line, seconds to exit, exit code, that line) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [shutil.which(command) or command, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stderr.readline()
    first_s = time.perf_counter() - start
    proc.stderr.read()
    code = proc.wait(timeout)
    return first_s, time.perf_counter() - start, code, first.rstrip("\n")


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each case; the median is shown.")
    args = parser.parse_args()
    print(f"# {machine()}; 1-minute load before: {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}")
    print("| command | bad input | s to first line (median, min-max) | exit s | exit code | first line |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for command, what, argv in make_inputs(Path(tmp)):
            runs = [run_case(command, argv) for _ in range(args.repeat)]
            firsts = [r[0] for r in runs]
            line = runs[-1][3].replace(tmp, "DIR").replace("|", "\\|")
            print(
                f"| {command} | {what} | {statistics.median(firsts):.2f} ({min(firsts):.2f}-{max(firsts):.2f}) "
                f"| {statistics.median(r[1] for r in runs):.2f} | {runs[-1][2]} | {line[:140]} |",
                flush=True,
            )
    print(f"# 1-minute load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())

"""A normal run prints only avaf's own lines: the real avaf-extract on a local Ray instance
over the real test videos, its stdout and stderr captured and every line classified. Ray's lines stay in
Ray's log folder; -v lets them through (shared/ray_session.py says where each kind came from)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import DATA

TINY = ["--clip-model", str(DATA / "ViT-avaf-tiny.json"), "--clip-pretrained", "random"]
AVAF_LINE = re.compile(
    r"^(mode: |!!! RANDOM WEIGHTS |\S+: written \d+|  failed \S+: |avaf-extract: |(WARNING|ERROR|INFO) avaf\.)"
)
PROGRESS = re.compile(r"^\s*\d+%\|")  # avaf's own bar, in videos
RAY_MARKS = ("core_worker", "Token authentication", "(raylet)", " -- ", "Traceback", "ray.data", "Ray Data")


def _lines(*texts: str) -> list[str]:
    return [line for text in texts for line in re.split(r"[\r\n]+", text) if line.strip()]


def _not_avaf(*texts: str) -> list[str]:
    return [line for line in _lines(*texts) if not (AVAF_LINE.match(line) or PROGRESS.match(line))]


def _ray_logs(pid: int) -> Path:
    """The log folder of the Ray session the driver with this pid started (the newest: pids come back)."""
    tmp = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    return sorted(tmp.glob(f"session_*_{pid}"))[-1] / "logs"  # session_<date>_<time>_<us>_<pid>


def _run_logged(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """avaf-extract with the driver's pid known (it names Ray's log files): Popen instead of run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [shutil.which("avaf-extract"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    return done, _ray_logs(proc.pid)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The real test videos (H.264, H.265, AV1, 10-bit)."""
    d = tmp_path_factory.mktemp("quiet") / "videos"
    d.mkdir()
    for f in (DATA / "videos").iterdir():
        if f.suffix in (".mp4", ".mkv"):
            shutil.copy(f, d / f.name)
    return d


def test_a_local_ray_run_prints_only_avaf_lines(videos):
    """Before: the token-authentication notice, core_worker.cc's max_restarts error line and Ray Data's
    'Progress bars disabled' warning among avaf's lines. Ray Data's own log file still has its records."""
    args = [
        "--videos",
        str(videos),
        "--out",
        "feats.h5",
        "--no-in-process",
        *TINY,
        "--vggish-weights",
        "random",
    ]
    res, logs = _run_logged(args, videos.parent)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"written {len(list(videos.iterdir()))}, skipped as done 0, failed 0" in res.stdout
    assert _not_avaf(res.stdout, res.stderr) == []
    assert not [line for line in _lines(res.stdout, res.stderr) if any(m in line for m in RAY_MARKS)]
    assert "Progress bars disabled" in (logs / "ray-data" / "ray-data.log").read_text()


def test_encoders_that_fail_at_start_are_one_line(videos, tmp_path):
    """Weights that load nowhere: the probe and the encoder actors fail as they start. Before, -q printed
    247 lines (Ray's published actor error with its traceback on stdout, Ray Data's ERROR lines and stack
    trace on stderr); now avaf's mode line and the probe's error."""
    (tmp_path / "vggish.pth").write_bytes(b"not a state dict" * 64)
    args = [
        "--videos",
        str(videos),
        "--out",
        "f.h5",
        "--no-in-process",
        *TINY,
        "--vggish-weights",
        "vggish.pth",
    ]
    res, logs = _run_logged([*args, "-q"], tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert _lines(res.stdout) == ["mode: on a local Ray instance (--no-in-process)"]
    (line,) = _lines(res.stderr)
    assert line.startswith("avaf-extract: vggish.pth is not a VGGish state dict"), line
    data_logs = "".join(p.read_text() for p in (logs / "ray-data").glob("*.log"))
    assert "actors died during initialization" in data_logs  # it was the actors' failure, kept by Ray


_INIT = textwrap.dedent(
    """
    import click, ray
    from avaf.shared.cli import Command, common_options
    from avaf.shared.ray_session import init_ray

    @click.command("start-ray", cls=Command)
    @common_options
    def main():
        assert init_ray(None)
        ray.shutdown()

    main()
    """
)


def test_v_lets_ray_through():
    """The quiet runs above are the default; with -v Ray prints as it always did (here: ray.init's lines)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(
        [sys.executable, "-c", _INIT, "-v"], capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Started a local Ray instance" in res.stderr


_FILTER = textwrap.dedent(
    """
    import os, sys, time
    from avaf.shared.ray_session import CoreLogFilter

    f = CoreLogFilter()
    for part in sys.argv[1:]:
        if part == "|PAUSE|":  # longer than the filter waits for the rest of what may be a Ray line
            time.sleep(0.2)
        else:
            os.write(2, part.encode().replace(b"|NL|", b"\\n").replace(b"|CR|", b"\\r"))
            time.sleep(0.01)
    print("python's own line", file=sys.stderr)
    f.close()
    os.write(2, b"after close\\n")
    """
)


def test_the_stderr_filter_drops_ray_core_lines_only():
    """Whole lines of Ray's C++ core (D/I/W/E) go, split across writes or after a progress bar's partial
    line; a fatal one stays (the driver dies of it), and so does every other byte, progress bars' included."""
    head = "[2026-12-07 11:15:34,313 E 13931 13931] "
    parts = [
        "before|NL|",
        "  0%|   | 0/5 [00:00<?, ?video/s]",
        head + "core_worker.cc:2465: Actor with [x] max_restarts > 0|NL|",
        "|CR| 20%|## | 1/5 [00:1",
        "|PAUSE|",
        "8<01:14]",
        head[:19],
        head[19:] + "a.cc:1: split [",
        "|PAUSE|",  # a Ray line that has begun is held until its end
        "over three writes]|NL|",
        "[2026-12-07 11:15:34,313 F 1 2] a.cc:1: fatal stays|NL|",
        "[not Ray's] stays|NL|end",
    ]
    res = subprocess.run([sys.executable, "-c", _FILTER, *parts], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.decode() == (
        "before\n  0%|   | 0/5 [00:00<?, ?video/s]\r 20%|## | 1/5 [00:18<01:14]"
        "[2026-12-07 11:15:34,313 F 1 2] a.cc:1: fatal stays\n[not Ray's] stays\nend"
        "python's own line\nafter close\n"
    )

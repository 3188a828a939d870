"""decord is optional (docs/extraction.md, "Videos"): without it, "auto" decodes with PyAV and `--decoder decord` is a
one-line error naming the fix.

decord has wheels for x86-64 Linux and Windows only, so `pip install avaf` leaves it out and
`pip install 'avaf[decord]'` adds it. These tests simulate a machine without decord in a subprocess whose
``sys.modules['decord'] = None`` makes every ``import decord`` fail, as it does where decord is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from avaf.extract.decode import backends

from conftest import write_clip

NO_DECORD = "import sys; sys.modules['decord'] = None\n"
FIX = "pip install 'avaf[decord]'"


def run_without_decord(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_DECORD + code], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "v0001.mp4", seconds=2)


def test_without_decord_auto_decodes_with_pyav_and_decord_names_the_fix(clip):
    code = f"""
import json
import dataclasses
from avaf.extract.decode.backends import BACKENDS, DecodeError, check_backend, decode_video, decode_with_fallback
out = {{}}
video = decode_video({str(clip)!r}, backend="auto")
out["auto"] = [video.decoder, list(video.frames.shape), list(video.audio.shape)]
check_backend("auto")  # logs that auto uses PyAV alone; no error
try:
    check_backend("decord")
except ValueError as err:
    out["check"] = str(err)
try:
    decode_video({str(clip)!r}, backend="decord")
except DecodeError as err:
    out["explicit"] = err.problem
def broken(path, size, threads):  # a video PyAV cannot decode: auto would fall back to decord
    raise DecodeError(path, "pyav broke")
BACKENDS["pyav"] = dataclasses.replace(BACKENDS["pyav"], decode=broken)
try:
    decode_with_fallback({str(clip)!r})
except DecodeError as err:
    out["fallback"] = err.problem
print(json.dumps(out))
"""
    run = run_without_decord(code)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["auto"] == ["pyav", [2, 224, 224, 3], [2, 16000]]
    assert FIX in out["check"] and "--decoder auto" in out["check"] and "\n" not in out["check"]
    assert FIX in out["explicit"]
    assert out["fallback"].startswith(
        "every backend failed: pyav: pyav broke; decord: decord is not installed"
    )
    assert FIX in out["fallback"]


def test_without_decord_the_command_refuses_decord_in_one_line_before_any_work(clip, tmp_path):
    out = tmp_path / "feats.h5"
    code = f"""
from avaf.extract.cli import main
main(["--videos", {str(clip.parent)!r}, "--decoder", "decord", "--out", {str(out)!r}, "--in-process",
      "--clip-pretrained", "random", "--vggish-weights", "random"], prog_name="avaf-extract")
"""
    run = run_without_decord(code)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("avaf-extract: --decoder decord:"), run.stderr
    assert FIX in lines[0]
    assert not out.exists() and not any(tmp_path.iterdir())  # nothing written, no shard folder


def test_with_decord_installed_both_backends_are_accepted():
    pytest.importorskip("decord")
    backends.check_backend("decord")
    backends.check_backend("auto")
    assert backends.backend_problem("decord") is None
    with pytest.raises(ValueError, match="unknown backend 'ffmpeg'"):
        backends.check_backend("ffmpeg")

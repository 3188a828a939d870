"""Bad-input sweep: every broken input the tests use, built here and given to the real console commands.

A script, not a test (pytest does not collect it): each case builds its inputs in a fresh folder (from
tests/data/ and generated files only), copies in what came before it (a good store, a finished run, an
export, a generated set), runs one avaf command as a user does, in a fresh process started in that folder,
and prints one row: the exit code, the command's line (its `avaf-COMMAND: ...` error, else its first
`failed ...` line, else its first line), the lines on stderr, and whether anything that existed before the
command was lost. "earlier" is `intact` (every earlier file byte for byte), `kept` (a store was rewritten,
e.g. a failed video recorded, but every earlier video and question has the same arrays) or `LOST: ...`.

Extraction uses the tiny random encoders ($TINY: tests/data/ViT-avaf-tiny.json, random CLIP and VGGish
weights, --in-process) and training a tiny model ($TRAIN). A full disk is a file-size limit
(RLIMIT_FSIZE), a read-only folder chmod 555 (run through `setpriv` without CAP_DAC_OVERRIDE as root). The
exit status is 1 when any case lost something, printed a traceback or exited other than expected.

    python tests/benchmarks/bad_input_sweep.py                 # every case (~10 min on 2 loaded cores)
    python tests/benchmarks/bad_input_sweep.py --only stores   # one stage: cli, annotations, videos, ...
    python tests/benchmarks/bad_input_sweep.py --match resume  # the cases whose name holds "resume"
    python tests/benchmarks/bad_input_sweep.py --list          # the cases and the tests that cover them
"""

# Longer than ~400 lines: one table of every case, each a line next to the builder of its input.

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # conftest's builders and the tests' own tables of bad inputs

import numpy as np  # noqa: E402

from conftest import (  # noqa: E402
    DATA,
    fake_question,
    fake_video,
    known_answer_store,
    write_audio_only,
    write_clip,
    write_store,
)

STAGES = {
    "cli": "command line: flags, paths, config files",
    "annotations": "annotation files and QA-prompt tables",
    "videos": "videos (decode)",
    "weights": "weights files and checkpoints",
    "stores": "feature stores and exports read",
    "outputs": "outputs: an existing --out, a read-only folder, a full disk",
}
TINY = ["--clip-model", str(DATA / "ViT-avaf-tiny.json"), "--clip-pretrained", "random"]
TINY += ["--vggish-weights", "random", "--in-process"]
TRAIN = ["--dim", "32", "--lr", "1e-3", "--lr-step", "100", "--threads", "2", "-qq"]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
NASA = DATA / "videos" / "nasa_13013.mp4"
ROWS = json.loads((DATA / "music-avqa" / "json_update" / "avqa-val.json").read_text())[:2]


@dataclass(frozen=True)
class Case:
    stage: str
    name: str
    command: str
    build: Callable[[Path], list[str]]  # writes the inputs into the case folder, returns the arguments
    expect: int = 2
    test: str = ""  # the test that covers it; "" for a case only the sweep tries
    limit: int | None = None  # file-size limit in bytes: a full disk
    locked: str | None = None  # a folder of the case made read-only before the command
    hold: str | None = None  # Python code a process runs beside the command (prints "held" when ready)


# ---- fixtures: what came before a command, built once and copied into each case that needs it ------------


def sh(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run([exe(argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fixture {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _extracted(f: Path) -> None:
    write_clip(f / "videos" / "a.mp4", seconds=2)
    sh(["avaf-extract", "--videos", "videos", "--out", "feats.h5", *TINY], f)


def _small(f: Path) -> None:
    rng = np.random.default_rng(0)
    videos = [fake_video(rng, f"v{i}", 3) for i in range(3)]
    write_store(f / "small.h5", videos, [fake_question(rng, i, f"v{i}", "test") for i in range(3)])
    shutil.rmtree(f / "small.h5.shards")


def _ka(f: Path) -> None:
    known_answer_store(f / "ka.h5", n_videos=60)
    shutil.rmtree(f / "ka.h5.shards")
    (f / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")


def _run(f: Path) -> None:
    ka = FIX.get("ka")
    sh(["avaf-train", "--feats", str(ka / "ka.h5"), "--out", "run", "--epochs", "1", *TRAIN,
        "--config", str(ka / "tiny.yaml")], f)  # fmt: skip


def _synth(f: Path) -> None:
    sh(["avaf-synth", "--out", "s", "--num-videos", "1", "--duration", "3", "--size", "48x48", "-q"], f)


def _weights(f: Path) -> None:
    """A tiny CLIP's weights, the same with another embedding width, and a pickled list (torch, open_clip)."""
    code = (
        "import open_clip, torch, sys; from safetensors.torch import save_file\n"
        f"open_clip.add_model_config({str(DATA / 'ViT-avaf-tiny.json')!r})\n"
        "sd = open_clip.create_model('ViT-avaf-tiny').state_dict(); save_file(sd, 'tiny.safetensors')\n"
        "sd['visual.proj'] = torch.zeros(64, 16); save_file(sd, 'wide.safetensors')\n"
        "torch.save([1, 2, 3], 'list.bin')\n"
    )
    sh([sys.executable, "-c", code], f)


FIXTURES: dict[str, Callable[[Path], None]] = {
    "extracted": _extracted,  # videos/a.mp4 (2 s), feats.h5 and its shards from avaf-extract $TINY
    "small": _small,  # small.h5: 3 videos, 3 test questions (conftest.write_store)
    "ka": _ka,  # ka.h5: conftest.known_answer_store, 60 videos; tiny.yaml
    "run": _run,  # run/: avaf-train, 1 epoch on ka.h5
    "npy": lambda f: sh(["avaf-export", "--feats", str(FIX.get("small") / "small.h5"), "--out", "npy"], f),
    "synth": _synth,  # s/: avaf-synth, one 3 s video of 48x48
    "weights": _weights,
}


class Fixtures:
    def __init__(self, root: Path):
        self.root, self.seconds, self.built = root, 0.0, set()

    def get(self, name: str) -> Path:
        folder = self.root / name
        if name not in self.built:
            start = time.perf_counter()
            folder.mkdir(parents=True)
            FIXTURES[name](folder)
            self.built.add(name)
            self.seconds += time.perf_counter() - start
        return folder


FIX: Fixtures  # set in main()


# ---- builders: each writes one thing into the case folder d and returns its path relative to d ----------


def text(d: Path, name: str, content: str = "x\n") -> str:
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(content)
    return name


def raw(d: Path, name: str, content: bytes) -> str:
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(content)
    return name


def folder(d: Path, name: str) -> str:
    (d / name).mkdir(parents=True, exist_ok=True)
    return name


def use(d: Path, fixture: str, name: str | None = None) -> str:
    """Copy a fixture into d: one of its files or folders (`name`), or everything; returns `name`."""
    src = FIX.get(fixture)
    for p in [src / name] if name else list(src.iterdir()):
        dst = d / p.relative_to(src)
        shutil.copytree(p, dst) if p.is_dir() else shutil.copy2(p, dst)
    return name or ""


def videos(d: Path) -> list[str]:
    """--videos of one 64-byte file named .mp4: never opened when the case fails before decoding."""
    raw(d, "videos/clip.mp4", b"\0" * 64)
    return ["--videos", "videos"]


def rows(d: Path, name: str, data: object) -> str:
    return text(d, name, json.dumps(data))


def half(src: Path, part: float = 0.5) -> bytes:
    data = src.read_bytes()
    return data[: int(len(data) * part)]


def faststart(d: Path, name: str) -> str:
    """6 s of noise with the index up front, cut in half (test_decode)."""
    import av

    (d / name).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(d / "whole.tmp"), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        for image in np.random.default_rng(0).integers(0, 256, (150, 48, 64, 3), dtype=np.uint8):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    (d / name).write_bytes(half(d / "whole.tmp"))
    (d / "whole.tmp").unlink()
    return name


def audio_only(d: Path, name: str) -> str:
    """Two seconds of AAC and no video stream, behind a video extension (test_decode)."""
    write_audio_only(d / name)
    return name


def h5(d: Path, name: str, edit: Callable) -> str:
    import h5py

    with h5py.File(d / name, "a") as f:
        edit(f)
    return name


def store_with_answer(d: Path, answer: str) -> str:
    rng = np.random.default_rng(3)
    q = fake_question(rng, 1, "00000001", "train", width=32)
    q.answer = answer
    write_store(d / "feats.h5", [fake_video(rng, "00000001", 2, width=32)], [q])
    return "feats.h5"


def questions_only(d: Path) -> str:
    rng = np.random.default_rng(0)
    questions = [fake_question(rng, i, f"{i:08d}", split) for i, split in enumerate(("train", "val", "test"))]
    write_store(d / "feats.h5", (), questions)
    return "feats.h5"


def no_val(d: Path) -> str:
    rng = np.random.default_rng(0)
    videos = [fake_video(rng, f"{i:08d}", 4) for i in range(3)]
    write_store(d / "feats.h5", videos, [fake_question(rng, i, f"{i:08d}", "train") for i in range(3)])
    return "feats.h5"


def tspm_only(d: Path) -> str:
    from test_feature_sets import _tspm_only_store

    return _tspm_only_store(d).name


def vocabulary(d: Path) -> str:
    """The run's best checkpoint with another answer vocabulary in its metadata (test_train)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    src = FIX.get("run") / "run" / "best" / "model.safetensors"
    with safe_open(str(src), "np") as f:
        meta = f.metadata()
    (d / "other").mkdir()
    save_file(
        load_file(str(src)), str(d / "other" / "model.safetensors"), meta | {"answers": '["yes", "no"]'}
    )
    return "other/model.safetensors"


def other_tensors(d: Path) -> str:
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(d / "vggish.safetensors"))
    return "vggish.safetensors"


def npy_folder(d: Path, manifest: str | None = None) -> str:
    """An export folder with vggish/x.npy and no clip_vit_b32/ (test_exchange); optionally a manifest."""
    (d / "only" / "vggish").mkdir(parents=True)
    np.save(d / "only" / "vggish" / "x.npy", np.zeros((2, 128), np.float32))
    if manifest is not None:
        text(d, "only/manifest.json", manifest)
    return "only"


def export_without(d: Path, lost: str) -> str:
    use(d, "npy", "npy")
    (d / "npy" / lost).unlink()
    return "npy"


def stale_export(d: Path) -> str:
    use(d, "npy", "npy")
    raw(d, "npy/vggish/old-video.npy", b"stale")
    text(d, "npy/README", "mine\n")
    return "npy"


def synth_set(d: Path) -> str:
    """A generated set, and a video of another set in its videos/ (test_safety)."""
    use(d, "synth", "s")
    raw(d, "s/videos/00000099.mp4", b"a video of another set")
    return "s"


def parent(name: str) -> str:
    return str(Path(name).parent)


def added(make: Callable[[Path], object]) -> Callable[[Path], list[str]]:
    """A resume of the good store (videos/a.mp4 done) after `make` put one more file under videos/."""

    def build(d: Path) -> list[str]:
        use(d, "extracted")
        make(d)
        return ["--videos", "videos", "--out", "feats.h5"]

    return build


def new_clip(d: Path) -> str:
    return str(write_clip(d / "videos" / "b.mp4", seconds=2).relative_to(d))


def locked_store(d: Path) -> list[str]:
    """The good store moved into locked/, one new clip beside its video."""
    use(d, "extracted")
    folder(d, "locked")
    for name in ("feats.h5", "feats.h5.shards"):
        shutil.move(d / name, d / "locked" / name)
    new_clip(d)
    return ["--videos", "videos", "--out", "locked/feats.h5"]


def locked_copy(d: Path, fixture: str, name: str) -> str:
    folder(d, "locked")
    shutil.copy2(FIX.get(fixture) / name, d / "locked" / name)
    return f"locked/{name}"


HOLD = (
    "from avaf.shared.store.journal import JournaledFile\nj = JournaledFile('small.h5')\n"
    "print('held', flush=True)\nimport time; time.sleep(600)"
)


def parametrized(test: Callable) -> list[tuple]:
    return test.pytestmark[0].args[1]


def annotation_files() -> list[tuple[str, Callable[[Path], str], str]]:
    """(case, builder, test) of every broken annotation file: the tests' rows and files, read from them."""
    import test_annotations as ta

    good, ann = ta.GOOD_ROW, "test_annotations.py"
    files = [
        ("not JSON", lambda d: text(d, "avqa-test.json", "not JSON\n"), SAFETY),
        ("a file name that names no split", lambda d: rows(d, "questions.json", ROWS), EARLY),
        (
            "a row without 'type'",
            lambda d: rows(d, "avqa-test.json", [ROWS[0], no_key(ROWS[1], "type")]),
            EARLY,
        ),
    ]
    for change, _ in parametrized(ta.test_bad_row_names_file_row_and_value):
        build = lambda d, c=change: rows(d, "avqa-test.json", [good, dict(good, **c)])  # noqa: E731
        files.append((f"a row with {', '.join(f'{k} {v!r}' for k, v in change.items())}"[:50], build, ann))
    kinds = ["truncated JSON", "a JSON object, not a list", "a row that is not an object"]
    for kind, (content, _) in zip(kinds, parametrized(ta.test_bad_file), strict=True):
        files.append((kind, lambda d, c=content: text(d, "avqa-test.json", c), ann))
    first_val = DATA / "music-avqa" / "json" / "avqa-val.json"
    return files + [
        ("a row without 'anser'", lambda d: rows(d, "avqa-test.json", [good, no_key(good, "anser")]), ann),
        ("no question_id, an unknown answer", lambda d: rows(d, "avqa-test.json", [no_key(good, "question_id") | {"anser": "maybe"}]), ann),
        ("the first release's val file (duplicates)", lambda d: shutil.copy(first_val, d / "avqa-val.json").name, ann),
        ("one question_id, two answers", lambda d: rows(d, "avqa-val.json", [*ROWS, dict(ROWS[1], anser="seven")]), ann),
        ("a folder holding no annotation file", lambda d: parent(text(d, "ann/answer2idx.json", "{}")), ann),
        ("unmatch_audio that is no video id", lambda d: rows(d, "avqa-test.json", [dict(good, unmatch_audio=42)]), "test_unmatched_audio.py"),
    ]  # fmt: skip


def no_key(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


def prompt_tables() -> list[tuple[str, Callable[[Path], str]]]:
    """(case, builder) of every malformed QA-prompt table test_prompts builds (its BAD table)."""
    from test_prompts import BAD

    def build(d: Path, make) -> str:
        path = make(d)
        if path.suffix == ".xls":  # the test names it without writing it: the suffix alone is refused
            path.write_bytes(b"\xd0\xcf\x11\xe0 an Excel 97 workbook")
        return str(path.relative_to(d))

    return [(f"QA-prompt table: {k}", lambda d, m=make: build(d, m)) for k, (make, _) in BAD.items()]


# ---- the cases: (case, command, builder, expected exit, test) per stage ----------------------------------

SAFETY, EARLY, CLI, EXTRACT = "test_safety.py", "test_errors_early.py", "test_cli.py", "test_extract.py"
PACKS, EXCHANGE, STORE, RESUME = "test_packs_export.py", "test_exchange.py", "test_store.py", "test_resume_settings.py"  # fmt: skip


def small(d: Path) -> str:
    return use(d, "small", "small.h5")


def ka(d: Path) -> str:
    return use(d, "ka", "ka.h5")


def tiny_train() -> list[str]:
    return ["--config", str(FIX.get("ka") / "tiny.yaml"), *TRAIN]


def cli_cases() -> list[Case]:
    unknown = [Case("cli", "unknown option --zzz", s, lambda d: ["--zzz"], test=CLI) for s in SCRIPTS]
    return unknown + [Case("cli", n, c, b, e, t) for n, c, b, e, t in [
        ("no --feats", "avaf-train", lambda d: ["--out", "run"], 2, CLI),
        ("no --feats", "avaf-eval", lambda d: ["--checkpoint", folder(d, "best")], 2, CLI),
        ("--feats that does not exist", "avaf-train", lambda d: ["--feats", "missing.h5"], 2, SAFETY),
        ("--feats that is a folder", "avaf-train", lambda d: ["--feats", folder(d, "folder.h5")], 2, SAFETY),
        ("--checkpoint that does not exist", "avaf-eval", lambda d: ["--feats", small(d), "--checkpoint", "missing"], 2, SAFETY),
        ("a path that does not exist", "avaf-inspect", lambda d: ["missing.h5"], 2, SAFETY),
        ("a folder", "avaf-inspect", lambda d: [folder(d, "folder.h5")], 2, SAFETY),
        ("--feats that does not exist", "avaf-export", lambda d: ["--feats", "missing.h5", "--out", "x"], 2, SAFETY),
        ("--npy that does not exist", "avaf-import", lambda d: ["--npy", "missing", "--out", "out.h5"], 2, SAFETY),
        ("--npy that is a file", "avaf-import", lambda d: ["--npy", text(d, "a-file"), "--out", "out.h5"], 2, SAFETY),
        ("--videos that does not exist", "avaf-extract", lambda d: ["--videos", "missing", "--out", "feats.h5"], 2, SAFETY),
        ("--videos that is a file", "avaf-extract", lambda d: ["--videos", text(d, "a-file"), "--out", "feats.h5"], 2, SAFETY),
        ("--videos holding no video", "avaf-extract", lambda d: ["--videos", parent(text(d, "v/notes.txt")), *TINY], 2, EARLY),
        ("--annotations that does not exist", "avaf-extract", lambda d: ["--annotations", "missing.json"], 2, SAFETY),
        ("neither --videos nor --annotations", "avaf-extract", lambda d: ["--out", "feats.h5"], 2, ""),
        ("--clip-model open_clip lacks", "avaf-extract", lambda d: [*videos(d), "--clip-model", "ViT-Nope-32"], 2, EARLY),
        ("--clip-model .json that does not exist", "avaf-extract", lambda d: [*videos(d), "--clip-model", "nope.json"], 2, ""),
        ("--features with an unknown pack", "avaf-extract", lambda d: [*videos(d), "--features", "avaf,tpsm"], 2, "test_packs.py"),
        ("--qa-prompts without the tspm pack", "avaf-extract", lambda d: [*videos(d), "--qa-prompts", text(d, "p.csv"), "--random-weights"], 2, "test_packs.py"),
        ("--decoder opencv", "avaf-extract", lambda d: [*videos(d), "--decoder", "opencv"], 2, "test_backends.py"),
        ("--variant typo", "avaf-train", lambda d: ["--feats", small(d), "--variant", "x"], 2, EARLY),
        ("--resume and --overwrite together", "avaf-train", lambda d: ["--out", use(d, "run", "run"), "--resume", "--overwrite"], 2, SAFETY),
        ("--resume of a folder with no run", "avaf-train", lambda d: ["--out", "nothing", "--feats", ka(d), "--resume"], 2, SAFETY),
        ("--num-videos 0", "avaf-demo", lambda d: ["--out", "demo", "--num-videos", "0"], 2, EARLY),
        ("--videos 0 (the old spelling)", "avaf-demo", lambda d: ["--out", "demo", "--videos", "0"], 2, "test_synth.py"),
        ("--num-videos 0", "avaf-synth", lambda d: ["--out", "s", "--num-videos", "0"], 2, "test_synth.py"),
        ("no --num-videos", "avaf-synth", lambda d: ["--out", "s"], 2, "test_synth.py"),
        ("--size big", "avaf-synth", lambda d: ["--out", "s", "--num-videos", "1", "--size", "big"], 2, "test_synth.py"),
        ("--train-config that does not exist", "avaf-demo", lambda d: ["--train-config", "missing.yaml"], 2, SAFETY),
        ("--format mp4", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--format", "mp4"], 2, EXCHANGE),
        ("--dtype with --format tspm", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--format", "tspm", "--dtype", "float16"], 2, PACKS),
        ("--layout exact with --format stg", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--format", "stg", "--layout", "exact"], 2, PACKS),
        ("--pad-to with --format npy", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--pad-to", "60"], 2, PACKS),
        ("--pad-to 0", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--format", "tspm", "--pad-to", "0"], 2, PACKS),
        ("--context-length shorter than a question", "avaf-export", lambda d: ["--feats", small(d), "--out", "x", "--context-length", "2"], 2, EXCHANGE),
        ("--config with an unknown key", "avaf-extract", lambda d: [*videos(d), "--config", text(d, "bad.yaml", "runtime:\n  batchsize: 8\n")], 2, "test_config.py"),
        ("--config that is not YAML", "avaf-extract", lambda d: [*videos(d), "--config", text(d, "broken.yaml", "runtime: [unclosed\n")], 2, "test_config.py"),
        ("--config with a value of the wrong type", "avaf-extract", lambda d: [*videos(d), "--config", text(d, "c.yaml", "input:\n  limit: ten\n")], 2, "test_config.py"),
        ("--config .yaml with a misspelt key", "avaf-train", lambda d: ["--feats", ka(d), "--config", text(d, "run.yaml", "model:\n  hedas: 8\n")], 2, "test_model.py"),
        ("--config .toml with a misspelt key", "avaf-train", lambda d: ["--feats", ka(d), "--config", text(d, "run.toml", "[model]\nhedas = 8\n")], 2, "test_model.py"),
        ("--grid with an unknown setting", "avaf-sweep", lambda d: ["--feats", ka(d), "--grid", text(d, "g.yaml", "grid:\n  betta: [0.1]\n"), "--out", "o"], 2, "test_sweep.py"),
        ("no FOLDER", "avaf-fetch-weights", lambda d: [], 2, ""),
    ]]  # fmt: skip


def annotation_cases() -> list[Case]:
    def extract(build):
        return lambda d: ["--annotations", build(d), "--out", "feats.h5", *TINY]

    def prompts(build):
        return lambda d: [*videos(d), "--features", "avaf,tspm", "--qa-prompts", build(d), "--out", "feats.h5", *TINY]  # fmt: skip

    def onto_store(d: Path) -> list[str]:
        use(d, "extracted")
        return ["--annotations", rows(d, "avqa-test.json", [{"video_id": "a"}]), "--out", "feats.h5", *TINY]

    split = lambda d: ["--annotations", rows(d, "questions.json", ROWS), "--split", "dev", *TINY]  # noqa: E731
    return [
        *[Case("annotations", n, "avaf-extract", extract(b), test=t) for n, b, t in annotation_files()],
        Case("annotations", "--split dev", "avaf-extract", split, test="test_annotations.py"),
        Case(
            "annotations",
            "a malformed file, onto an existing store",
            "avaf-extract",
            onto_store,
            test=EXTRACT,
        ),
        *[
            Case("annotations", n, "avaf-extract", prompts(b), test="test_prompts.py")
            for n, b in prompt_tables()
        ],
    ]


def video_cases() -> list[Case]:
    bad = [
        ("zero-byte file", lambda d: raw(d, "videos/empty.mp4", b""), EXTRACT),
        ("text file named .mp4", lambda d: text(d, "videos/notes.mp4", "this is not a video\n" * 50), EXTRACT),
        ("truncated: a third of a real clip", lambda d: raw(d, "videos/truncated.mp4", half(NASA, 1 / 3)), EXTRACT),
        ("truncated, its index up front", lambda d: faststart(d, "videos/cut.mp4"), "test_decode.py"),
        ("shorter than one second", lambda d: write_clip(d / "videos" / "tiny.mp4", 0.4), "test_decode.py"),
        ("audio only, named .mp4", lambda d: audio_only(d, "videos/sound.mp4"), "test_decode.py"),
    ]  # fmt: skip
    out = [
        Case(
            "videos",
            f"{n}, added to a good store",
            "avaf-extract",
            lambda d, b=b: [*added(b)(d), *TINY],
            1,
            t,
        )
        for n, b, t in bad
    ]
    same_id = lambda d: [*added(lambda d: raw(d, "videos/b/a.mkv", b"\0" * 64))(d), *TINY]  # noqa: E731
    return [*out, Case("videos", "two files of one video id, beside a good store", "avaf-extract", same_id, test="test_decode.py")]  # fmt: skip


def weight_cases() -> list[Case]:
    clip = [*TINY[:2], "--vggish-weights", "random", "--in-process"]  # CLIP from the file given
    vggish = [*TINY[:4], "--in-process"]  # VGGish from the file given
    return [Case("weights", n, c, b, e, t) for n, c, b, e, t in [
        ("--weights-dir that does not exist", "avaf-extract", lambda d: [*videos(d), "--weights-dir", "nope"], 2, EARLY),
        ("--weights-dir without the checkpoint", "avaf-extract", lambda d: [*videos(d), "--weights-dir", folder(d, "weights"), "--clip-model", "ViT-B-32", "--vggish-weights", "random", "--in-process"], 2, EXTRACT),
        ("--vggish-weights that does not exist", "avaf-extract", lambda d: [*videos(d), "--vggish-weights", "vggish.pth"], 2, EARLY),
        ("--clip-pretrained that does not exist", "avaf-extract", lambda d: [*videos(d), "--clip-pretrained", "clip.safetensors"], 2, EARLY),
        ("--vggish-weights that is no state dict, a new --out folder", "avaf-extract", lambda d: [*videos(d), *vggish, "--vggish-weights", raw(d, "vggish.pth", b"not a state dict" * 64), "--out", "new/dir/feats.h5"], 2, "test_files.py"),
        ("--vggish-weights holding other tensors", "avaf-extract", lambda d: [*videos(d), *vggish, "--vggish-weights", other_tensors(d)], 2, "test_encoders.py"),
        ("--clip-pretrained that is a pickled list", "avaf-extract", lambda d: [*videos(d), *clip, "--clip-pretrained", use(d, "weights", "list.bin")], 2, "test_encoders.py"),
        ("--clip-pretrained of another width", "avaf-extract", lambda d: [*videos(d), *clip, "--clip-pretrained", use(d, "weights", "wide.safetensors")], 2, "test_encoders.py"),
        ("--checkpoint that is no checkpoint", "avaf-eval", lambda d: ["--feats", small(d), "--checkpoint", text(d, "notes.h5", "not HDF5\n")], 2, SAFETY),
        ("--checkpoint of another answer vocabulary", "avaf-eval", lambda d: ["--feats", ka(d), "--checkpoint", vocabulary(d)], 2, "test_train.py"),
    ]]  # fmt: skip


def store_cases() -> list[Case]:
    notes = lambda d: text(d, "notes.h5", "not HDF5\n")  # noqa: E731
    cases = [Case("stores", n, c, b, e, t) for n, c, b, e, t in [
        ("a text file", "avaf-train", lambda d: ["--feats", notes(d), "--out", "run"], 2, SAFETY),
        ("a text file", "avaf-eval", lambda d: ["--feats", notes(d), "--checkpoint", use(d, "run", "run") + "/best"], 2, SAFETY),
        ("a text file", "avaf-inspect", lambda d: [notes(d)], 2, SAFETY),
        ("a text file", "avaf-export", lambda d: ["--feats", notes(d), "--out", "x"], 2, SAFETY),
        ("a text file", "avaf-sweep", lambda d: ["--feats", notes(d), "--grid", "ablations", "--out", "sweep"], 2, EARLY),
        ("a truncated store", "avaf-inspect", lambda d: [raw(d, "cut.h5", half(FIX.get("small") / "small.h5"))], 2, STORE),
        ("a truncated store", "avaf-train", lambda d: ["--feats", raw(d, "cut.h5", half(FIX.get("ka") / "ka.h5")), "--out", "run"], 2, STORE),
        ("HDF5 that is no avaf store", "avaf-inspect", lambda d: [h5(d, "foreign.h5", lambda f: f.create_dataset("x", data=np.zeros(3)))], 2, STORE),
        ("a store of schema version 3", "avaf-inspect", lambda d: [h5(d, small(d), lambda f: f.attrs.__setitem__("schema_version", 3))], 2, STORE),
        ("an avaf store, --format tspm", "avaf-export", lambda d: ["--feats", small(d), "--format", "tspm", "--out", "out"], 2, PACKS),
        ("an avaf store, --format qa-tiger", "avaf-export", lambda d: ["--feats", small(d), "--format", "qa-tiger", "--out", "out"], 2, PACKS),
        ("a store of the tspm set alone", "avaf-train", lambda d: ["--feats", tspm_only(d), "--out", "run"], 2, "test_feature_sets.py"),
        ("an answer outside the vocabulary", "avaf-train", lambda d: ["--feats", store_with_answer(d, "purple"), "--out", "run", "--epochs", "1", *TRAIN], 2, "test_dataset.py"),
        ("a store of questions without videos", "avaf-train", lambda d: ["--feats", questions_only(d), "--out", "run"], 2, EARLY),
        ("a store without val questions", "avaf-train", lambda d: ["--feats", no_val(d), "--out", "runs/new", "--dim", "8", "-q"], 2, "test_files.py"),
        ("features narrower than --dim 512", "avaf-train", lambda d: ["--feats", ka(d), "--out", "run", "--epochs", "1"], 2, "test_train.py"),
        ("an export with no vggish/ nor clip_vit_b32/", "avaf-import", lambda d: ["--npy", folder(d, "bare"), "--out", "out.h5"], 2, EXCHANGE),
        ("vggish/ without clip_vit_b32/", "avaf-import", lambda d: ["--npy", npy_folder(d), "--out", "out.h5"], 2, EXCHANGE),
        ("a manifest of another format", "avaf-import", lambda d: ["--npy", npy_folder(d, '{"format": "something else"}'), "--out", "out.h5"], 2, EXCHANGE),
        ("one video without its audio file", "avaf-import", lambda d: ["--npy", export_without(d, "vggish/v1.npy"), "--out", "out.h5"], 1, EXCHANGE),
    ]]  # fmt: skip
    held = Case("stores", "a store another process is appending to", "avaf-inspect", lambda d: [small(d)], 2, "test_append.py", hold=HOLD)  # fmt: skip
    return [*cases, held]


def output_cases() -> list[Case]:
    def resume(*flags: str) -> Callable[[Path], list[str]]:
        return lambda d: [*added(new_clip)(d), *flags]

    other_weights = lambda d: [
        *resume(*TINY[:2], *TINY[4:])(d),
        "--clip-pretrained",
        use(d, "weights", "tiny.safetensors"),
    ]  # noqa: E731
    cases = [Case("outputs", n, c, b, e, t) for n, c, b, e, t in [
        ("--out holding a run", "avaf-train", lambda d: ["--feats", ka(d), "--out", use(d, "run", "run"), "--epochs", "1", *tiny_train()], 2, SAFETY),
        ("--out that is a file", "avaf-train", lambda d: ["--feats", ka(d), "--out", text(d, "a-file")], 2, SAFETY),
        ("--out that is a file", "avaf-export", lambda d: ["--feats", small(d), "--out", text(d, "a-file")], 2, SAFETY),
        ("--out holding an earlier export", "avaf-export", lambda d: ["--feats", small(d), "--out", stale_export(d)], 2, SAFETY),
        ("--overwrite of an export, --format tspm of an avaf store", "avaf-export", lambda d: ["--feats", small(d), "--out", use(d, "npy", "npy"), "--overwrite", "--format", "tspm"], 2, ""),
        ("--overwrite of a run, features narrower than --dim 512", "avaf-train", lambda d: ["--feats", ka(d), "--out", use(d, "run", "run"), "--overwrite", "--epochs", "1"], 2, ""),
        ("--overwrite of a run, a store of the tspm set alone", "avaf-train", lambda d: ["--feats", tspm_only(d), "--out", use(d, "run", "run"), "--overwrite", *tiny_train()], 2, ""),
        ("--overwrite of a run, an answer outside the vocabulary", "avaf-train", lambda d: ["--feats", store_with_answer(d, "purple"), "--out", use(d, "run", "run"), "--overwrite", "--epochs", "1", *tiny_train()], 2, ""),
        ("--overwrite of a set, --size 161x120", "avaf-synth", lambda d: ["--out", use(d, "synth", "s"), "--overwrite", "--num-videos", "1", "--size", "161x120"], 2, ""),
        ("--overwrite of an export, --context-length 2", "avaf-export", lambda d: ["--feats", small(d), "--out", use(d, "npy", "npy"), "--overwrite", "--context-length", "2"], 2, EXCHANGE),
        ("--out that exists", "avaf-import", lambda d: ["--npy", use(d, "npy", "npy"), "--out", small(d)], 2, EXCHANGE),
        ("--out that is a folder", "avaf-import", lambda d: ["--npy", use(d, "npy", "npy"), "--out", folder(d, "folder.h5")], 2, SAFETY),
        ("--overwrite from a bare folder", "avaf-import", lambda d: ["--npy", folder(d, "bare"), "--out", small(d), "--overwrite"], 2, EXCHANGE),
        ("--out that is a folder", "avaf-extract", lambda d: [*videos(d), "--out", folder(d, "folder.h5")], 2, SAFETY),
        ("--out that is a file", "avaf-synth", lambda d: ["--out", text(d, "a-file"), "--num-videos", "1"], 2, SAFETY),
        ("--out holding a generated set", "avaf-synth", lambda d: ["--out", synth_set(d), "--num-videos", "1", "--duration", "3", "--size", "48x48", "--workers", "1", "-q"], 2, SAFETY),
        ("--out that is a file", "avaf-demo", lambda d: ["--out", text(d, "a-file")], 2, SAFETY),
        ("--out holding run/", "avaf-demo", lambda d: ["--out", parent(parent(text(d, "demo/run/metrics.jsonl", "{}\n"))), "--weights", "random"], 2, SAFETY),
        ("FOLDER that is a file", "avaf-fetch-weights", lambda d: [text(d, "a-file")], 2, SAFETY),
        ("a resume at another --batch-size", "avaf-extract", resume(*TINY, "--batch-size", "8"), 2, RESUME),
        ("a resume with other weights", "avaf-extract", other_weights, 2, RESUME),
    ]]  # fmt: skip
    locked = [Case("outputs", n, c, b, 2, t, locked="locked") for n, c, b, t in [
        ("read-only folder", "avaf-train", lambda d: ["--feats", ka(d), "--out", folder(d, "locked") + "/run", *tiny_train()], SAFETY),
        ("read-only folder", "avaf-export", lambda d: ["--feats", ka(d), "--out", folder(d, "locked") + "/npy"], SAFETY),
        ("read-only folder, --overwrite", "avaf-import", lambda d: ["--npy", use(d, "npy", "npy"), "--out", locked_copy(d, "small", "small.h5"), "--overwrite"], SAFETY),
        ("read-only folder", "avaf-synth", lambda d: ["--out", folder(d, "locked") + "/s", "--num-videos", "1", "--size", "48x48"], SAFETY),
        ("read-only folder holding a store, a new video", "avaf-extract", lambda d: [*locked_store(d), *TINY], ""),
    ]]  # fmt: skip
    full = [Case("outputs", f"full disk: {n}", c, b, 2, SAFETY, limit=limit) for n, c, b, limit in [
        ("the checkpoint (100 kB)", "avaf-train", lambda d: ["--feats", ka(d), "--out", "run", "--epochs", "1", *tiny_train()], 100_000),
        ("a shard, --overwrite (50 kB)", "avaf-import", lambda d: ["--npy", use(d, "npy", "npy"), "--out", small(d), "--overwrite"], 50_000),
        ("an export (2 kB)", "avaf-export", lambda d: ["--feats", small(d), "--out", "npy", "-q"], 2_000),
        ("a resume's shard (20 kB)", "avaf-extract", resume(*TINY), 20_000),
    ]]  # fmt: skip
    return cases + locked + full


def all_cases() -> list[Case]:
    return cli_cases() + annotation_cases() + video_cases() + weight_cases() + store_cases() + output_cases()


# ---- running a case and what it left ---------------------------------------------------------------------


def exe(command: str) -> str:
    """The console script installed beside this Python (not a shim on PATH that may pick another one)."""
    here = Path(sys.executable).parent / command
    return str(here) if here.is_file() or not shutil.which(command) else shutil.which(command)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(d: Path) -> dict[str, str]:
    """Every path under d: "dir", or the sha256 of the file."""
    return {p.relative_to(d).as_posix(): "dir" if p.is_dir() else sha(p) for p in sorted(d.rglob("*"))}


def _bytes(value) -> bytes:
    return (
        value.tobytes() if isinstance(value, np.ndarray) and value.dtype != object else repr(value).encode()
    )


def store_rows(path: Path) -> dict[str, str] | None:
    """sha256 of each video's and each question's values in an avaf store (None when it is none): what a
    resume or a failure record may move but must keep."""
    from avaf.shared.store.reader import FeatureStore

    try:
        with FeatureStore(path) as fs:
            out = {}
            for vid in fs.video_ids:
                v = fs.video(vid)
                out[f"video {vid}"] = hashlib.sha256(
                    b"".join(_bytes(v[k]) for k in sorted(v) if k != "offset")
                )
            q = fs.questions()
            for i, qid in enumerate(q["question_id"]):
                values = [_bytes(q[k][i]) for k in sorted(q) if k != "word_offset"]
                out[f"question {qid}"] = hashlib.sha256(
                    b"".join(values) + fs.question_words(int(qid)).tobytes()
                )
            return {k: h.hexdigest() for k, h in out.items()}
    except Exception:  # noqa: BLE001 - not a store, or not a readable one: compared byte for byte only
        return None


def earlier(before: dict[str, str], stores: dict[str, dict], d: Path) -> str:
    """intact, kept (a store rewritten, every earlier row the same) or LOST: the paths."""
    lost, rewritten = [], []
    for rel, h in before.items():
        p = d / rel
        if h == "dir" or not p.is_file() or sha(p) == h:
            lost += [rel] if not p.exists() else []
            continue
        after = store_rows(p) if rel in stores else None
        same = after is not None and all(after.get(k) == v for k, v in stores[rel].items())
        (rewritten if same else lost).append(rel)
    if lost:
        return "LOST: " + ", ".join(lost[:3]) + (" ..." if len(lost) > 3 else "")
    return f"kept ({', '.join(rewritten)} rewritten)" if rewritten else "intact"


def _limit(max_bytes: int | None):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply if max_bytes is not None else None


@dataclass
class Result:
    argv: list[str]
    code: int | str
    line: str = ""
    stderr_lines: int = 0
    traceback: bool = False
    earlier: str = ""
    new: list[str] | None = None
    seconds: float = 0.0


PROGRESS = re.compile(r"\s*\d+%\|[^|]*\|[^\]]*\]")  # a progress bar's text, which a line may follow


def lines(text: str) -> list[str]:
    return [y for x in re.split(r"[\r\n]+", text) if (y := PROGRESS.sub("", x).strip())]


def the_line(command: str, out: str, err: str) -> str:
    """The command's error line, else its first `failed ...` line, else its first line (stderr first)."""
    err_lines, out_lines = lines(err), lines(out)
    mine = [x for x in err_lines if x.startswith(f"{command}: ")]
    failed = [x for x in out_lines if x.startswith("failed ")]
    return (mine or failed or err_lines or out_lines or [""])[0]


def run_case(case: Case, d: Path, timeout: float) -> Result:
    holder = None
    if case.hold:
        holder = subprocess.Popen([sys.executable, "-c", case.hold], cwd=d, stdout=subprocess.PIPE, text=True)
    try:
        argv = [case.command, *case.build(d)]
        if holder is not None and holder.stdout.readline().strip() != "held":
            raise SystemExit(f"{case.name}: the process beside the command did not start")
        prefix = []
        if case.locked:
            if os.geteuid() == 0 and not shutil.which("setpriv"):
                return Result(argv, "skipped", "as root without setpriv: permissions do not apply")
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
            (d / case.locked).chmod(0o555)
        before = snapshot(d)
        stores = {
            k: r for k in before if k.endswith(".h5") and before[k] != "dir" and (r := store_rows(d / k))
        }
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        start = time.perf_counter()
        try:
            proc = subprocess.run([*prefix, exe(argv[0]), *argv[1:]], cwd=d, capture_output=True, text=True,
                                  timeout=timeout, preexec_fn=_limit(case.limit), env=env)  # fmt: skip
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code, out, err = "timeout", _text(e.stdout), _text(e.stderr)
        seconds = time.perf_counter() - start
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if case.locked and (d / case.locked).exists():
            (d / case.locked).chmod(0o755)
    new = [k for k in snapshot(d) if k not in before]
    return Result(argv, code, the_line(case.command, out, err), len(lines(err)),
                  "Traceback (most recent call last)" in out + err, earlier(before, stores, d), new, seconds)  # fmt: skip


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


# ---- the table ---------------------------------------------------------------------------------------------


def shown(text: str, d: Path, width: int) -> str:
    for long, short in ((" ".join(TINY), "$TINY"), (" ".join(TRAIN), "$TRAIN"), (f"{d}/", ""), (str(d), "."),
                        (str(FIX.root), "FIX"), (str(REPO) + "/", "")):  # fmt: skip
        text = text.replace(long, short)
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def row(i: int, case: Case, r: Result, d: Path) -> str:
    code = f"{r.code}" if r.code == case.expect else f"**{r.code}** (want {case.expect})"
    code += " **traceback**" if r.traceback else ""
    new = f"{len(r.new)}" + (f": {', '.join(r.new[:2])}" if r.new else "") if r.new is not None else ""
    cells = [str(i), case.stage, case.name, shown(" ".join(r.argv), d, 90), code, shown(r.line, d, 100),
             str(r.stderr_lines), r.earlier, shown(new, d, 40), f"{r.seconds:.1f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def summary(cases: list[Case], results: list[Result], seconds: float) -> tuple[str, bool]:
    stages = Counter(c.stage for c in cases)
    codes = Counter(r.code if r.code in (0, 1, 2) else "other" for r in results)
    wrong = sum(r.code != c.expect and r.code != "skipped" for c, r in zip(cases, results, strict=True))
    tracebacks = sum(r.traceback for r in results)
    lost = sum(r.earlier.startswith("LOST") for r in results)
    wrote = sum(r.code == 2 and bool(r.new) for r in results)
    by_stage = ", ".join(f"{s} {stages[s]}" for s in STAGES if stages[s])
    line = (
        f"SUMMARY: {len(cases)} cases ({by_stage}); exit 2: {codes[2]}, exit 1: {codes[1]}, exit 0: {codes[0]}, "
        f"other: {codes['other']}; unexpected exit: {wrong}; tracebacks: {tracebacks}; lost: {lost}; "
        f"exit 2 leaving new paths: {wrote}; "
        f"{seconds:.0f} s ({FIX.seconds:.0f} s of it building fixtures)"
    )
    return line, wrong + tracebacks + lost > 0


def main() -> int:
    from benchmarks.bench_errors import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"Stages to run, a comma list of {', '.join(STAGES)}.")
    parser.add_argument("--match", default="", help="Only the cases whose name holds this text.")
    parser.add_argument("--list", action="store_true", help="Print the cases and the tests covering them.")
    parser.add_argument("--keep", action="store_true", help="Keep the cases' folders (the path is printed).")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds one command may run.")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(STAGES)
    if unknown := set(only) - set(STAGES):
        parser.error(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    cases = [c for c in all_cases() if c.stage in only and args.match in c.name]
    if args.list:
        print("| # | stage | case | command | exit | test |\n|---|---|---|---|---|---|")
        for i, c in enumerate(cases, 1):
            print(f"| {i} | {c.stage} | {c.name} | {c.command} | {c.expect} | {c.test or 'sweep only'} |")
        print(
            f"{len(cases)} cases: "
            + ", ".join(f"{s} {n}" for s, n in Counter(c.stage for c in cases).items())
        )
        return 0
    root = Path(tempfile.mkdtemp(prefix="avaf-bad-inputs-"))
    global FIX
    FIX = Fixtures(root / "fixtures")
    print(f"# {machine()}; 1-minute load before: {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}")
    print("| # | stage | case | command | exit | line | stderr lines | earlier | new paths | s |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    start, results = time.perf_counter(), []
    for i, case in enumerate(cases, 1):
        d = root / f"{i:03d}"
        d.mkdir()
        results.append(run_case(case, d, args.timeout))
        print(row(i, case, results[-1], d), flush=True)
    line, bad = summary(cases, results, time.perf_counter() - start)
    print(f"# 1-minute load after: {os.getloadavg()[0]:.2f}")
    print(line)
    if args.keep:
        print(f"# the cases' folders: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

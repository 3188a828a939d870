"""Export a store's `tspm` set in the layout TSPM, QA-TIGER, AV-Master or STG reads unchanged (docs/feature-packs.md).

    export_pack("tspm", "feats.h5", "out/", ExportOptions(pad_to=60))  # avaf-export --format tspm --pad-to 60

What goes where is data (layouts.LAYOUTS); this module reads the store, fits each video to --pad-to, writes
the per-id `.npy` folders (or STG's HDF5 files, stg.py) and MANIFEST.json (manifest.py). Their loaders stack
a batch with PyTorch's default collate and mostly neither cast nor slice, so every file of a kind needs one
shape and the layout's dtype. A store that lacks an array a layout needs is refused with one line naming it;
an optional one (the QA prompt) that is absent, or a question without a value (a NaN row), gives no file and
is said in the summary and the manifest. Nothing is made up: what differs from the authors' features is said
(docs/feature-packs.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avaf.shared.errors import ExchangeError
from avaf.shared.exchange.layouts import LAYOUTS, Layout, Target, source
from avaf.shared.exchange.manifest import (
    MANIFEST,
    PAD_RULE,
    RANDOM_WARNING,
    array_record,
    header,
    random_encoders,
    save_npy,
    write_manifest,
)
from avaf.shared.exchange.npy_folders import ExportOptions
from avaf.shared.exchange.stg import StgSink
from avaf.shared.files import check_fresh_output
from avaf.shared.store import schema
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import FeatureArray
from avaf.shared.store.sets import TSPM, TSPM_ARRAYS
from avaf.shared.version import avaf_version

QUESTIONS_PER_READ = 512  # (512, 77, 768) float16 words: 60 MB a read
NPY_ONLY = ExportOptions()  # --dtype, --layout and --context-length belong to --format npy


@dataclass
class PackReport:
    """What an export wrote and what the user must know; `lines()` is the command's summary."""

    layout: Layout
    out: Path
    pad_to: int | None = None
    videos: int = 0
    questions: int = 0
    files: int = 0
    lengths: tuple[int, int] = (0, 0)  # the fewest and most seconds of a video in the store
    padded: dict[str, int] = field(default_factory=dict)  # video -> its seconds, padded to pad_to
    cut: dict[str, int] = field(default_factory=dict)  # video -> its seconds, cut to pad_to
    left_out: list[str] = field(default_factory=list)  # videos with no second to repeat
    absent: list[str] = field(default_factory=list)  # optional arrays the store lacks
    missing: dict[str, list[int]] = field(default_factory=dict)  # array -> questions without a value
    differs: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)

    def path_of(self, array: str) -> str:
        return next(t.path for t in self.layout.targets if t.array == array)

    def lines(self) -> list[str]:
        layout, n = self.layout, self.pad_to
        lines = [f"WARNING: {RANDOM_WARNING.format(names=', '.join(self.random))}"] if self.random else []
        lines.append(
            f"wrote the {layout.name} layout ({layout.repo}) of {self.videos} videos and {self.questions} "
            f"questions to {self.out} ({self.files} files, {layout.dtype})"
        )
        if n:
            lines.append(
                f"--pad-to {n}: padded {len(self.padded)} shorter videos by repeating their last second; cut "
                f"{len(self.cut)} longer ones to their first {n} s; left out {len(self.left_out)} with none"
            )
        elif self.lengths[0] != self.lengths[1]:
            lines.append(
                f"videos have {self.lengths[0]} to {self.lengths[1]} seconds: the loader stacks a batch, so "
                "all need one T: pass --pad-to N (MUSIC-AVQA: 60)"
            )
        for name in self.absent:
            lines.append(
                f"no {self.path_of(name)}/ files: this store has no tspm/{name} (extracted without "
                "--qa-prompts); the loader opens one for every question: extract the questions with "
                "--qa-prompts FILE"
            )
        for name, ids in self.missing.items():
            lines.append(
                f"no {self.path_of(name)} file for {len(ids)} questions without a {name} (e.g. "
                f"{', '.join(map(str, ids[:3]))}: a template the prompt table lacks); listed in {MANIFEST}"
            )
        lines += [f"differs: {d}" for d in self.differs]
        lines += [f"note: {note.format(out=self.out)}" for note in layout.notes]
        lines += [f"use: {layout.usage.format(out=self.out)}", f"manifest: {self.out / MANIFEST}"]
        return lines


class NpySink:
    """One `<id>.npy` per video or question in each target's folder, hashed as written."""

    def __init__(self, out: Path, targets: tuple[Target, ...]) -> None:
        self.out, self.sums = out, {}
        for t in targets:
            (out / t.path).mkdir(parents=True, exist_ok=True)

    def _save(self, rel: str, array: np.ndarray) -> None:
        self.sums[rel] = save_npy(self.out / rel, array)

    def video(self, target: Target, video_id: str, array: np.ndarray) -> None:
        self._save(f"{target.path}/{video_id}.npy", array)

    def question(self, target: Target, question_id: int, array: np.ndarray, text: str) -> None:
        self._save(f"{target.path}/{question_id}.npy", array)

    def close(self) -> dict[str, str]:
        return self.sums

    def abort(self) -> None:
        """Files already written are whole; without MANIFEST.json the folder reads as an unfinished export."""


def export_pack(
    name: str, feats: str | os.PathLike, out: str | os.PathLike, options: ExportOptions | None = None
) -> PackReport:
    """Write the store's tspm set as layout `name` (layouts.LAYOUTS) into `out`, with MANIFEST.json.

    A folder already holding any of the layout's files is refused unless `options.overwrite`, which deletes
    exactly those first.
    """
    o, layout, out = options or ExportOptions(), LAYOUTS[name], Path(out)
    _check_options(layout, o)
    with FeatureStore(feats) as fs:  # the input first: a bad store leaves no folder behind
        arrays = _sources(fs, layout)
        _fresh_output(out, layout, o.overwrite)
        report = PackReport(
            layout, out, o.pad_to, random=random_encoders(fs.random_weights, [*arrays.values()])
        )
        report.absent = [t.array for t in layout.targets if t.array not in arrays]
        report.differs = [*layout.differs, *_shape_differences(arrays)]
        targets = tuple(t for t in layout.targets if t.array in arrays)
        sink = StgSink(out, targets) if layout.container == "hdf5" else NpySink(out, targets)
        try:
            _write_videos(fs, arrays, targets, sink, report)
            _write_questions(fs, arrays, targets, sink, report)
            files = sink.close()
        except BaseException:
            sink.abort()
            raise
        report.files = len(files)
        manifest = _manifest(fs, arrays, targets, report, files)
    write_manifest(out, manifest)
    return report


def _check_options(layout: Layout, o: ExportOptions) -> None:
    if (o.dtype, o.layout, o.context_length) != (NPY_ONLY.dtype, NPY_ONLY.layout, NPY_ONLY.context_length):
        raise ExchangeError(
            f"--dtype, --layout and --context-length apply to --format npy; the {layout.name} layout is "
            f"{layout.dtype}, as its loader reads it"
        )
    if o.pad_to is not None and o.pad_to < 1:
        raise ExchangeError(f"--pad-to {o.pad_to}: give the seconds every video should have (MUSIC-AVQA: 60)")


def _sources(fs: FeatureStore, layout: Layout) -> dict[str, FeatureArray]:
    """The store's array for each of the layout's arrays it holds; a required one missing is a StoreError
    naming it (one line, exit 2 from the command)."""
    found = {t.array: source(fs.sets, t.array) for t in layout.targets}
    lacking = [(TSPM, a) for a in layout.required() if found[a] is None]
    fs.require(lacking, f"avaf-export --format {layout.name}")
    return {a: fs.sets[hit[0]][hit[1]] for a, hit in found.items() if hit is not None}


def _shape_differences(arrays: dict[str, FeatureArray]) -> list[str]:
    """A line for each array whose rows are not the real encoder's shape (a tiny stand-in, another model)."""
    return [
        f"/{a.path} rows are {a.shape}, not {TSPM_ARRAYS[name].shape} as the real encoder gives them: the "
        "model's input layer takes the real width"
        for name, a in arrays.items()
        if tuple(a.shape) != TSPM_ARRAYS[name].shape
    ]


def _fresh_output(out: Path, layout: Layout, overwrite: bool) -> None:
    """Refuse (or, with overwrite, clear) exactly the layout's own folders and files, folder by folder."""
    owned: dict[Path, set[str]] = {out: {MANIFEST}}
    for t in layout.targets:
        owned.setdefault((out / t.path).parent, set()).add(Path(t.path).name)
    for folder, names in owned.items():
        check_fresh_output(folder, f"a {layout.name} export", names, overwrite, "choose a new --out")


def fit_seconds(array: np.ndarray, pad_to: int | None) -> np.ndarray:
    """(T, ...) -> (pad_to, ...): a shorter video repeats its last second, a longer one keeps its first
    pad_to seconds (the rule the MUSIC-AVQA authors give for videos shorter than 60 s); None: as it is."""
    if pad_to is None or len(array) == pad_to:
        return array
    if len(array) > pad_to:
        return array[:pad_to]
    return np.concatenate([array, np.repeat(array[-1:], pad_to - len(array), axis=0)])


def _write_videos(fs, arrays: dict[str, FeatureArray], targets, sink, report: PackReport) -> None:
    per_video = [t for t in targets if t.per == "video"]
    keys = {t.array: arrays[t.array].key for t in per_video}
    lengths = fs.videos["length"]
    report.lengths = (int(lengths.min()), int(lengths.max())) if len(lengths) else (0, 0)
    n, dtype = report.pad_to, report.layout.dtype
    for vid in tqdm(fs.video_ids, unit="video", disable=None, dynamic_ncols=True):
        v = fs.video(vid, fields=tuple(dict.fromkeys(keys.values())))
        t = int(v["length"])
        if n and t == 0:
            report.left_out.append(vid)
            continue
        for target in per_video:
            sink.video(target, vid, fit_seconds(v[keys[target.array]], n).astype(dtype))
        if n and t != n:
            (report.padded if t < n else report.cut)[vid] = t
        report.videos += 1


def _write_questions(fs, arrays: dict[str, FeatureArray], targets, sink, report: PackReport) -> None:
    per_question = [t for t in targets if t.per == "question"]
    if not per_question:
        return  # QA-TIGER encodes its questions itself
    q = fs.questions()
    ids, texts = q["question_id"], q["text"]
    datasets = {t.array: fs.dataset(schema.QUESTIONS, arrays[t.array].key) for t in per_question}
    dtype = report.layout.dtype
    bar = tqdm(total=len(ids), unit="question", disable=None, dynamic_ncols=True)
    for a in range(0, len(ids), QUESTIONS_PER_READ):
        block = {name: ds[a : a + QUESTIONS_PER_READ] for name, ds in datasets.items()}
        for i in range(min(QUESTIONS_PER_READ, len(ids) - a)):
            qid = int(ids[a + i])
            for t in per_question:
                row = block[t.array][i]
                if np.isnan(row).all():  # no value, e.g. a template the prompt table lacks
                    report.missing.setdefault(t.array, []).append(qid)
                    continue
                row = row[: t.positions] if t.positions else row
                sink.question(t, qid, (row[None] if t.lead else row).astype(dtype), str(texts[a + i]))
        bar.update(min(QUESTIONS_PER_READ, len(ids) - a))
    bar.close()
    report.questions = len(ids)


def _manifest(fs, arrays: dict[str, FeatureArray], targets, report: PackReport, files: dict) -> dict:
    layout, n = report.layout, report.pad_to
    records = {}
    for t in targets:
        a = arrays[t.array]
        written = (n or "T", *t.row_shape(a.shape)) if t.per == "video" else t.row_shape(a.shape)
        records[t.path] = array_record(a, t.path, t.per, written, layout.dtype, n)
    missing = {
        report.path_of(name): {
            "reason": f"no {name} stored for these questions (NaN rows)",
            "question_ids": ids,
        }
        for name, ids in report.missing.items()
    }
    absent = {report.path_of(name): f"the store has no tspm/{name}" for name in report.absent}
    return header(layout.name, report.random, avaf_version(), str(fs.path)) | {
        "repository": layout.repo,
        "usage": layout.usage.format(out=report.out),
        "differs": report.differs,
        "notes": [note.format(out=report.out) for note in layout.notes],
        "dtype": layout.dtype,
        "videos": report.videos,
        "questions": report.questions,
        "padding": {"pad_to": n, "rule": PAD_RULE if n else "none: every video as stored"}
        | {"padded": report.padded, "cut": report.cut, "left_out": report.left_out},
        "arrays": records,
        "not_written": absent | missing,
        "store": {"schema_version": fs.schema_version, "signature": fs.signature, "config": fs.config},
        "files": files,
    }

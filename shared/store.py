"""The feature store (DESIGN.md §2): write shards atomically, merge them into `feats.h5`, read it back.

Reading needs only h5py and numpy: this module imports neither torch nor Ray, so other AVQA projects can
use `FeatureStore` on its own.

    from avaf.shared.store import FeatureStore
    with FeatureStore("feats.h5") as fs:
        v = fs.video("00000001")            # dict of arrays, one contiguous read each
        bulk = fs.load_videos(fs.video_ids)  # every video stacked: bulk.visual_tokens[bulk.offset[i]:...]

Writers: a shard is written under a temporary name and renamed when complete, then never modified.
`build_store` merges complete shards into a new temporary file and renames it over `feats.h5`, so a
process killed at any moment leaves the previous `feats.h5` readable and loses only shards in flight.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import schema
from .schema import KIND_SHARD, KIND_STORE, STR, Table

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".h5"
TMP_MARK = ".tmp-"
COPY_BYTES = 64 << 20  # bytes per read while merging: bounds memory whatever the store's size


class StoreError(Exception):
    """A feature file that cannot be read or written as asked; the message names the file."""


def avaf_version() -> str:
    try:
        from importlib.metadata import version

        return version("avaf")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"


# ---------------------------------------------------------------------------------------------- records


@dataclass
class VideoFeatures:
    """Everything the store keeps for one video; the arrays have T rows."""

    video_id: str
    source_path: str
    visual_tokens: np.ndarray  # (T, N, D)
    visual_pooled: np.ndarray  # (T, D)
    audio: np.ndarray  # (T, 128)
    audio_valid: np.ndarray  # (T,) bool
    timestamp: np.ndarray  # (T,) seconds
    source_size: int = 0
    duration: float = 0.0
    has_audio: bool = True
    decoder: str = ""
    streams: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.visual_tokens.shape[0])


@dataclass
class QuestionFeatures:
    """One encoded question; `words` has L rows, one per BPE token."""

    question_id: int
    video_id: str
    split: str
    text: str
    type: str
    answer: str
    words: np.ndarray  # (L, D)
    sentence: np.ndarray  # (D,)


# ---------------------------------------------------------------------------------------------- writing


def _empty_columns(table: Table) -> dict[str, list]:
    return {c.name: [] for c in table.columns}


def _stack(column: schema.Column, values: list, dims: dict[str, int], blocks: bool) -> np.ndarray:
    """Rows of one column as one array of the schema dtype; `blocks`: each value holds several rows."""
    if column.dtype == STR:
        return np.array(values, dtype=object).reshape(len(values))
    if values:
        arrays = [np.asarray(v, dtype=column.dtype) for v in values]
        return np.concatenate(arrays, axis=0) if blocks else np.stack(arrays)
    tail = tuple(dims.get(d, 0) if isinstance(d, str) else d for d in column.tail)
    return np.zeros((0, *tail), dtype=column.dtype)


def _create(f: h5py.File, path: str, column: schema.Column, data: np.ndarray) -> None:
    if column.dtype == STR:
        f.create_dataset(path, data=data, dtype=h5py.string_dtype("utf-8"))
        return
    rows = data.shape[0]
    chunks = None
    if rows:
        per_row = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
        chunks = (min(rows, schema.chunk_rows(per_row)), *data.shape[1:])
    f.create_dataset(path, data=data, chunks=chunks)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{time.monotonic_ns()}")


def _root_attrs(kind: str, config: dict, random_weights: list[str], signature: dict) -> dict:
    return {
        "format": schema.FORMAT_NAME,
        "schema_version": schema.SCHEMA_VERSION,
        "kind": kind,
        "avaf_version": avaf_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.dumps(config, sort_keys=True),
        "random_weights": json.dumps(sorted(random_weights)),
        "signature": json.dumps(signature, sort_keys=True),
    }


def _commit(tmp: Path, path: Path) -> None:
    """Make a fully written temporary file visible under its final name, atomically."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename itself is still atomic
        pass


class ShardWriter:
    """Collects videos, failures and questions in memory and writes them as one immutable shard.

    Use as a context manager: the shard appears under `path` only when the block ends without error.
    `signature` is the part of the config that determines the numbers (encoders, weights, rates);
    shards with different signatures are never merged.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict,
        signature: dict | None = None,
        random_weights: list[str] | tuple[str, ...] = (),
    ):
        self.path = Path(path)
        self.config = config
        self.signature = signature if signature is not None else config
        self.random_weights = list(random_weights)
        self.dims: dict[str, int] = {}
        self._rows = {t.group: _empty_columns(t) for t in schema.TABLES}
        self._n = {"seconds": 0, "words": 0}

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def _check_dims(self, what: str, name: str, shape: tuple[int, ...]) -> None:
        for dim, size in zip(name, shape):
            if self.dims.setdefault(dim, size) != size:
                raise StoreError(
                    f"{self.path}: {what} has {dim} = {size}, earlier rows of this shard have {self.dims[dim]}"
                )

    def add_video(self, v: VideoFeatures) -> None:
        t = v.length
        self._check_dims(f"video {v.video_id!r} visual_tokens", "ND", v.visual_tokens.shape[1:])
        expected = {
            "visual_pooled": (t, self.dims["D"]),
            "audio": (t, schema.AUDIO_DIM),
            "audio_valid": (t,),
            "timestamp": (t,),
        }
        for name, shape in expected.items():
            got = np.shape(getattr(v, name))
            if got != shape:
                raise StoreError(
                    f"{self.path}: video {v.video_id!r} {name} has shape {got}, expected {shape}"
                )
        vid, sec = self._rows["videos"], self._rows["seconds"]
        meta = {
            "video_id": v.video_id,
            "offset": self._n["seconds"],
            "length": t,
            "source_path": str(v.source_path),
            "source_size": int(v.source_size),
            "duration": float(v.duration),
            "has_audio": bool(v.has_audio),
            "audio_seconds": int(np.count_nonzero(v.audio_valid)),
            "decoder": v.decoder,
            "streams": json.dumps(v.streams, sort_keys=True),
        }
        for k, val in meta.items():
            vid[k].append(val)
        for name in schema.SECONDS.names:
            sec[name].append(np.asarray(getattr(v, name)))
        self._n["seconds"] += t
        self._add_run(v.video_id, str(v.source_path), schema.STATUS_OK, "")

    def add_failure(self, video_id: str, source_path: str, error: str) -> None:
        self._add_run(video_id, str(source_path), schema.STATUS_FAILED, error)

    def _add_run(self, video_id: str, source_path: str, status: str, error: str) -> None:
        runs = self._rows["runs"]
        for k, val in zip(schema.RUNS.names, (video_id, source_path, status, error)):
            runs[k].append(val)

    def add_question(self, q: QuestionFeatures) -> None:
        words = np.asarray(q.words)
        self._check_dims(f"question {q.question_id} words", "D", words.shape[1:])
        if np.shape(q.sentence) != (self.dims["D"],):
            raise StoreError(
                f"{self.path}: question {q.question_id} sentence has shape {np.shape(q.sentence)}"
            )
        row = {
            "question_id": int(q.question_id),
            "video_id": q.video_id,
            "split": q.split,
            "text": q.text,
            "type": q.type,
            "answer": q.answer,
            "word_offset": self._n["words"],
            "word_length": words.shape[0],
            "sentence": np.asarray(q.sentence),
        }
        for k, val in row.items():
            self._rows["questions"][k].append(val)
        self._rows["words"]["features"].append(words)
        self._n["words"] += words.shape[0]

    @property
    def empty(self) -> bool:
        return not any(self._rows[g][t.names[0]] for g, t in schema.TABLE_BY_GROUP.items())

    def close(self) -> Path:
        """Write the shard to a temporary name, then rename it to `path`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(self.path)
        try:
            with h5py.File(tmp, "w") as f:
                attrs = _root_attrs(KIND_SHARD, self.config, self.random_weights, self.signature)
                f.attrs.update(attrs)
                for table in schema.TABLES:
                    for column in table.columns:
                        rows = self._rows[table.group][column.name]
                        data = _stack(column, rows, self.dims, blocks=table.group in schema.RAGGED)
                        _create(f, table.path(column.name), column, data)
            _commit(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.path


def shard_dir(store_path: str | os.PathLike) -> Path:
    """The folder that holds the shards of `feats.h5`: `feats.h5.shards/` beside it."""
    p = Path(store_path)
    return p.with_name(p.name + ".shards")


def complete_shards(folder: str | os.PathLike) -> list[Path]:
    """Complete shards in creation order; temporary files of killed writers are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SHARD_SUFFIX) and TMP_MARK not in p.name)


def new_shard_path(folder: str | os.PathLike, prefix: str = "shard") -> Path:
    """A fresh shard name that sorts after every earlier one."""
    return Path(folder) / f"{time.time_ns():020d}-{prefix}-{os.getpid()}{SHARD_SUFFIX}"


# ---------------------------------------------------------------------------------------------- merging


def build_store(shards: list[Path], out: str | os.PathLike) -> dict[str, int]:
    """Merge complete shards into one self-contained store at `out`, replacing it atomically.

    Later shards win: a video's features come from its latest successful shard, its run record from
    its latest attempt (a success is never hidden by an older failure), a question from its latest shard.
    Shards whose feature signature differs from the first one's are refused, naming both files.
    Returns counts of what the store holds.
    """
    from .reader import open_h5

    out = Path(out)
    if not shards:
        raise StoreError(f"{out}: no complete shards to build from")
    handles = [open_h5(p, kind=KIND_SHARD) for p in shards]
    try:
        plan = _merge_plan(shards, handles)
        tmp = _tmp_name(out)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs.update(plan["attrs"])
                for table in schema.TABLES:
                    _copy_table(f, table, handles, plan)
            _commit(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        for h in handles:
            h.close()
    return plan["counts"]


def _strings(f: h5py.File, table: Table, column: str) -> np.ndarray:
    return f[table.path(column)].asstr()[...]


def _merge_plan(paths: list[Path], handles: list[h5py.File]) -> dict:
    """Which rows of which shard end up in the store, in what order."""
    signature = handles[0].attrs["signature"]
    for p, h in zip(paths[1:], handles[1:]):
        if h.attrs["signature"] != signature:
            raise StoreError(
                f"{p}: extracted with different encoders or settings than {paths[0]}; "
                f"refusing to mix them in one store ({h.attrs['signature']} vs {signature})"
            )
    latest_video: dict[str, tuple[int, int]] = {}
    latest_question: dict[int, tuple[int, int]] = {}
    run_rows: dict[str, tuple[int, int]] = {}
    run_status: dict[str, str] = {}
    for s, h in enumerate(handles):
        for i, vid in enumerate(_strings(h, schema.VIDEOS, "video_id")):
            latest_video[vid] = (s, i)
        for i, qid in enumerate(h[schema.QUESTIONS.path("question_id")][...]):
            latest_question[int(qid)] = (s, i)
        for i, (vid, status) in enumerate(
            zip(_strings(h, schema.RUNS, "video_id"), _strings(h, schema.RUNS, "status"))
        ):
            if status == schema.STATUS_OK or vid not in latest_video:
                run_rows[vid], run_status[vid] = (s, i), status
    random_weights = sorted({w for h in handles for w in json.loads(h.attrs["random_weights"])})
    last = handles[-1].attrs
    attrs = _root_attrs(KIND_STORE, json.loads(last["config"]), random_weights, json.loads(last["signature"]))
    rows = {
        "videos": sorted(latest_video.values()),
        "questions": sorted(latest_question.values()),
        "runs": sorted(run_rows.values()),
    }
    counts = {k: len(v) for k, v in rows.items()}
    counts["failed"] = sum(status == schema.STATUS_FAILED for status in run_status.values())
    return {"attrs": attrs, "rows": rows, "counts": counts}


def _read_column(h: h5py.File, table: Table, column: schema.Column) -> np.ndarray:
    ds = h[table.path(column.name)]
    return ds.asstr()[...] if column.dtype == STR else ds[...]


def _runs_of(rows: list[tuple[int, int]], shard: int) -> np.ndarray:
    return np.array([i for s, i in rows if s == shard], dtype=np.int64)


def _copy_table(f: h5py.File, table: Table, handles: list[h5py.File], plan: dict) -> None:
    """Copy the selected rows of one table from every shard, shard by shard, in bounded pieces."""
    if table.group in schema.RAGGED:
        return  # copied with its parent
    rows = plan["rows"][table.group]
    children = [(g, r) for g, r in schema.RAGGED.items() if r[0] is table]
    selected = [_runs_of(rows, s) for s in range(len(handles))]
    for column in table.columns:
        if any(column.name in (off, length) for _, (_, off, length) in children):
            continue
        parts = [_read_column(h, table, column)[sel] for h, sel in zip(handles, selected) if len(sel)]
        first = handles[0][table.path(column.name)]
        merged = (
            np.concatenate(parts) if parts else np.zeros((0, *first.shape[1:]), schema.numpy_dtype(column))
        )
        _create(f, table.path(column.name), column, merged.astype(object) if column.dtype == STR else merged)
    for child_group, (_, off_name, len_name) in children:
        _copy_ragged(f, schema.TABLE_BY_GROUP[child_group], table, off_name, len_name, handles, selected)


def _copy_ragged(f, child: Table, parent: Table, off_name, len_name, handles, selected) -> None:
    """Copy the child rows (seconds, words) of the selected parent rows and write fresh offsets."""
    spans = []  # (shard, start, length) per selected parent row, in store order
    for s, (h, sel) in enumerate(zip(handles, selected)):
        if len(sel):
            starts = h[parent.path(off_name)][...][sel]
            lengths = h[parent.path(len_name)][...][sel]
            spans += [(s, int(a), int(n)) for a, n in zip(starts, lengths)]
    lengths = np.array([n for _, _, n in spans], dtype=np.int32)
    offsets = (
        np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
        if len(spans)
        else np.zeros(0, np.int64)
    )
    _create(f, parent.path(off_name), parent.column(off_name), offsets.astype(np.int64))
    _create(f, parent.path(len_name), parent.column(len_name), lengths)
    total = int(lengths.sum())
    for column in child.columns:
        src0 = handles[0][child.path(column.name)]
        tail = next(
            (h[child.path(column.name)].shape[1:] for h in handles if h[child.path(column.name)].shape[0]),
            src0.shape[1:],
        )
        per_row = max(1, int(np.prod(tail, dtype=np.int64)) * np.dtype(column.dtype).itemsize)
        ds = f.create_dataset(
            child.path(column.name),
            shape=(total, *tail),
            dtype=column.dtype,
            chunks=(min(total, schema.chunk_rows(per_row)), *tail) if total else None,
        )
        _copy_spans(ds, handles, child.path(column.name), spans, max(1, COPY_BYTES // per_row))


def _copy_spans(ds: h5py.Dataset, handles, path: str, spans, max_rows: int) -> None:
    """Copy spans, coalescing neighbours of one shard into one read of at most max_rows rows."""
    dest = 0
    i = 0
    while i < len(spans):
        s, start, n = spans[i]
        j = i + 1
        while (
            j < len(spans) and spans[j][0] == s and spans[j][1] == start + n and n + spans[j][2] <= max_rows
        ):
            n += spans[j][2]
            j += 1
        for a in range(0, n, max_rows):  # one video longer than max_rows: copy it in pieces
            b = min(n, a + max_rows)
            ds[dest + a : dest + b] = handles[s][path][start + a : start + b]
        dest += n
        i = j

"""Write one immutable shard of the feature store (DESIGN.md §2), atomically.

    with ShardWriter(new_shard_path(shard_dir("feats.h5")), config, signature) as w:
        w.add_video(VideoFeatures(...)); w.add_failure(vid, path, error); w.add_question(QuestionFeatures(...))
    # the shard appears under its name only when the block ends without error

`merge.build_store` turns the complete shards into `feats.h5`; `reader.FeatureStore` reads either.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.files import TMP_MARK, atomic_path, check_room
from avaf.shared.store import schema
from avaf.shared.store.h5 import create_column, record_sets, root_attrs, stack_rows
from avaf.shared.store.schema import AVAF, AVAF_COLUMNS, KIND_SHARD, STR
from avaf.shared.store.sets import avaf_set, check_sets

SHARD_SUFFIX = ".h5"
HEADER_BYTES = 4 << 10  # an upper bound on HDF5's own bytes per dataset (object header, chunk index)


@dataclass
class VideoFeatures:
    """Everything the store keeps for one video; the arrays have T rows. The avaf set's arrays are fields
    (None in a shard without the avaf set); any other set's are in `sets`."""

    video_id: str
    source_path: str
    visual_tokens: np.ndarray | None  # (T, N, D)
    visual_pooled: np.ndarray | None  # (T, D)
    audio: np.ndarray | None  # (T, A): A = 128 for VGGish
    audio_valid: np.ndarray  # (T,) bool
    timestamp: np.ndarray  # (T,) seconds
    source_size: int = 0
    duration: float = 0.0
    has_audio: bool = True
    decoder: str = ""
    streams: dict = field(default_factory=dict)
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # set -> array -> (T, ...)

    @property
    def length(self) -> int:
        return int(np.shape(self.timestamp)[0])

    def array(self, set_name: str, name: str) -> np.ndarray | None:
        return getattr(self, name) if set_name == AVAF else self.sets.get(set_name, {}).get(name)


@dataclass
class QuestionFeatures:
    """One encoded question; `words` has L rows, one per BPE token. The avaf set's arrays are fields (None
    in a shard without the avaf set); any other set's are in `sets`, None where a question has no value
    (stored as a row of NaN, e.g. a template that a prompt table lacks)."""

    question_id: int
    video_id: str
    split: str
    text: str
    type: str
    answer: str
    words: np.ndarray | None  # (L, D)
    sentence: np.ndarray | None  # (D,)
    audio_video_id: str = ""  # the video whose audio goes with the question; "" means video_id
    sets: dict[str, dict[str, np.ndarray | None]] = field(default_factory=dict)  # set -> array -> row

    def array(self, set_name: str, name: str) -> np.ndarray | None:
        return getattr(self, name) if set_name == AVAF else self.sets.get(set_name, {}).get(name)


class ShardWriter:
    """Collects videos, failures and questions in memory and writes them as one immutable shard.

    Use as a context manager: the shard appears under `path` only when the block ends without error.
    `signature` is the part of the config that determines the numbers (encoders, weights, rates);
    shards with different signatures are never merged. `feature_sets` names the arrays the shard holds,
    with their encoders and preprocessing (default: the avaf set as `signature` describes it,
    `sets.avaf_set`); every video and question gives each of them.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict,
        signature: dict | None = None,
        random_weights: list[str] | tuple[str, ...] = (),
        feature_sets: schema.Sets | None = None,
    ):
        self.path = Path(path)
        self.config = config
        self.signature = signature if signature is not None else config
        self.random_weights = list(random_weights)
        self.sets = feature_sets if feature_sets is not None else {AVAF: avaf_set(self.signature)}
        try:
            check_sets(self.sets)
        except ValueError as e:
            raise StoreError(f"{self.path}: {e}") from e
        self.tables = schema.layout(self.sets)
        self._table = {t.group: t for t in self.tables}
        self.dims: dict[str, int] = {}  # the avaf set's named dims: N, D, A
        self._tails: dict[str, tuple[int, ...]] = {}  # another set's column -> the shape of its rows
        self._rows = {t.group: {c.name: [] for c in t.columns} for t in self.tables}
        self._n = {"seconds": 0, "words": 0}

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def _check_shape(self, what: str, column: schema.Column, shape: tuple[int, ...]) -> None:
        """One row's shape: the avaf set's named dims (N, D, A) agree across the shard; another set's array
        keeps the shape it was declared with, else that of its first row."""
        named = bool(column.tail) and all(isinstance(d, str) for d in column.tail)
        expected = column.tail if named else self._tails.setdefault(column.name, tuple(column.tail) or shape)
        if len(shape) != len(expected):
            raise StoreError(f"{self.path}: {what} has rows of shape {shape}, expected {tuple(expected)}")
        for dim, size in zip(expected, shape):
            if isinstance(dim, str) and self.dims.setdefault(dim, size) != size:
                raise StoreError(
                    f"{self.path}: {what} has {dim} = {size}, earlier rows of this shard have {self.dims[dim]}"
                )
            if not isinstance(dim, str) and dim != size:
                raise StoreError(f"{self.path}: {what} has rows of shape {shape}, expected {tuple(expected)}")

    def _arrays(self, what: str, item, groups: tuple[str, ...]) -> dict[tuple[str, str], np.ndarray | None]:
        """(table, column) -> the item's array, for each feature column of the tables `groups`. An array the
        shard's sets do not hold is an error, and so is a missing one, but for another set's per-question
        array (None: no value for this question, stored as a row of NaN)."""
        held = {c.feature for g in groups for c in self._table[g].features}
        given = {f"{s}/{n}" for s, arrays in item.sets.items() for n in arrays}
        given |= {
            f"{AVAF}/{n}"
            for n, (g, _) in AVAF_COLUMNS.items()
            if g in groups and getattr(item, n) is not None
        }
        if given - held:
            raise StoreError(
                f"{self.path}: {what} gives {', '.join(sorted(given - held))}, which this shard's feature "
                f"sets ({', '.join(sorted(self.sets))}) do not hold"
            )
        out = {}
        for group in groups:
            for column in self._table[group].features:
                value = item.array(*column.feature.split("/"))
                if value is None and (group != "questions" or column.feature.startswith(f"{AVAF}/")):
                    raise StoreError(f"{self.path}: {what} lacks {column.feature}, which this shard holds")
                out[group, column.name] = None if value is None else np.asarray(value)
        return out

    def add_video(self, v: VideoFeatures) -> None:
        t, what = v.length, f"video {v.video_id!r}"
        arrays = self._arrays(what, v, ("seconds",))
        for (_, name), value in arrays.items():
            if value.shape[:1] != (t,):
                raise StoreError(f"{self.path}: {what} {name} has shape {value.shape}, expected T = {t} rows")
            self._check_shape(f"{what} {name}", self._table["seconds"].column(name), value.shape[1:])
        if np.shape(v.audio_valid) != (t,):
            raise StoreError(
                f"{self.path}: {what} audio_valid has shape {np.shape(v.audio_valid)}, expected ({t},)"
            )
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
            self._rows["videos"][k].append(val)
        for name in self._table["seconds"].names:
            value = arrays.get(("seconds", name))
            self._rows["seconds"][name].append(np.asarray(getattr(v, name)) if value is None else value)
        self._n["seconds"] += t
        self._add_run(v.video_id, str(v.source_path), schema.STATUS_OK, "")

    def add_failure(self, video_id: str, source_path: str, error: str) -> None:
        self._add_run(video_id, str(source_path), schema.STATUS_FAILED, error)

    def _add_run(self, video_id: str, source_path: str, status: str, error: str) -> None:
        runs = self._rows["runs"]
        for k, val in zip(schema.RUNS.names, (video_id, source_path, status, error)):
            runs[k].append(val)

    def add_question(self, q: QuestionFeatures) -> None:
        what = f"question {q.question_id}"
        arrays = self._arrays(what, q, ("questions", "words"))
        lengths = set()
        for (group, name), value in arrays.items():
            if value is not None:
                lengths |= {value.shape[0]} if group == "words" else set()
                row = value.shape[1:] if group == "words" else value.shape
                self._check_shape(f"{what} {name}", self._table[group].column(name), row)
        if len(lengths) > 1:
            raise StoreError(
                f"{self.path}: {what}: its per-token arrays have different lengths {sorted(lengths)}"
            )
        n_words = lengths.pop() if lengths else 0
        row = {
            "question_id": int(q.question_id),
            "video_id": q.video_id,
            "audio_video_id": q.audio_video_id or q.video_id,
            "split": q.split,
            "text": q.text,
            "type": q.type,
            "answer": q.answer,
            "word_offset": self._n["words"],
            "word_length": n_words,
        }
        for k, val in row.items():
            self._rows["questions"][k].append(val)
        for (group, name), value in arrays.items():
            self._rows[group][name].append(value)
        self._n["words"] += n_words

    @property
    def empty(self) -> bool:
        return not any(self._rows[g][self._table[g].names[0]] for g in ("videos", "questions", "runs"))

    def nbytes(self) -> int:
        """An upper bound on the shard's size on disk: its rows at the schema's dtypes, each string with its
        heap entry, a last chunk's padding and the headers of every dataset."""
        total = 64 << 10  # the superblock, root attributes (the config and feature sets) and groups
        for table in self.tables:
            for column in table.columns:
                rows = self._rows[table.group][column.name]
                if column.dtype == STR:
                    raw = sum(len(str(v).encode()) + 32 for v in rows)
                else:
                    row = int(np.prod(self._tails.get(column.name, ()), dtype=np.int64))  # a NaN row's size
                    raw = (
                        sum(row if v is None else np.size(v) for v in rows) * np.dtype(column.dtype).itemsize
                    )
                    raw += schema.CHUNK_BYTES if raw > schema.CHUNK_BYTES else 0  # one chunk unless bigger
                total += raw + HEADER_BYTES
        return total

    def _column_data(self, table: schema.Table, column: schema.Column) -> np.ndarray:
        """One column's rows as one array; another set's missing per-question values as rows of NaN."""
        rows = self._rows[table.group][column.name]
        column = replace(column, tail=self._tails.get(column.name, column.tail))
        if any(v is None for v in rows):
            if not column.tail:
                raise StoreError(
                    f"{self.path}: {column.feature} has no value for any question here and no declared shape"
                )
            nan = np.full(column.tail, np.nan, dtype=schema.F16)
            rows = [nan if v is None else v for v in rows]
        return stack_rows(column, rows, self.dims, blocks=table.group in schema.RAGGED)

    def close(self) -> Path:
        """Write the shard to a temporary name, then rename it to `path`; a shard that cannot fit (full disk,
        file-size limit) is refused before writing: an OutputError naming it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_room(self.path, self.nbytes())
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
            attrs = root_attrs(KIND_SHARD, self.config, self.random_weights, self.signature)
            f.attrs.update(attrs)
            for table in self.tables:
                for column in table.columns:
                    create_column(f, table.path(column.name), column, self._column_data(table, column))
            record_sets(f, self.sets)
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

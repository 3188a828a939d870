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
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.files import TMP_MARK, atomic_path, check_room
from avaf.shared.store import schema
from avaf.shared.store.h5 import create_column, root_attrs, stack_rows
from avaf.shared.store.schema import KIND_SHARD, STR

SHARD_SUFFIX = ".h5"
HEADER_BYTES = 4 << 10  # an upper bound on HDF5's own bytes per dataset (object header, chunk index)


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
    audio_video_id: str = ""  # the video whose audio goes with the question; "" means video_id


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
        self._rows = {t.group: {c.name: [] for c in t.columns} for t in schema.TABLES}
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
            "audio_video_id": q.audio_video_id or q.video_id,
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

    def nbytes(self) -> int:
        """An upper bound on the shard's size on disk: its rows at the schema's dtypes, each string with its
        heap entry, a last chunk's padding and the headers of every dataset."""
        total = 64 << 10  # the superblock, root attributes (the config) and groups
        for table in schema.TABLES:
            for column in table.columns:
                rows = self._rows[table.group][column.name]
                if column.dtype == STR:
                    raw = sum(len(str(v).encode()) + 32 for v in rows)
                else:
                    raw = sum(np.size(v) for v in rows) * np.dtype(column.dtype).itemsize
                    raw += schema.CHUNK_BYTES if raw > schema.CHUNK_BYTES else 0  # one chunk unless bigger
                total += raw + HEADER_BYTES
        return total

    def close(self) -> Path:
        """Write the shard to a temporary name, then rename it to `path`; a shard that cannot fit (full disk,
        file-size limit) is refused before writing: an OutputError naming it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_room(self.path, self.nbytes())
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
            attrs = root_attrs(KIND_SHARD, self.config, self.random_weights, self.signature)
            f.attrs.update(attrs)
            for table in schema.TABLES:
                for column in table.columns:
                    rows = self._rows[table.group][column.name]
                    data = stack_rows(column, rows, self.dims, blocks=table.group in schema.RAGGED)
                    create_column(f, table.path(column.name), column, data)
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

"""Read an avaf feature store with h5py and numpy only (no torch, no Ray): DESIGN.md §2.

    from avaf.shared.store.reader import FeatureStore
    with FeatureStore("feats.h5") as fs:
        fs.video_ids                        # every video with features
        v = fs.video("00000001")            # {"visual_tokens": (T, N, D), "audio": (T, 128), ...}
        q = fs.questions(split="test")      # column dict, one row per question
        bulk = fs.load_videos(q["video_id"])  # the videos a split needs, stacked in one array each
        fs.sets                             # {"avaf": {"visual_tokens": FeatureArray, ...}, ...}
        fs.video_array("00000001", "tspm", "frame")      # one array of a named set: (T, 768)
        fs.question_array("tspm", "sentence", split="test")  # (Q, 768), the rows of questions(split="test")

A file of another schema version, a truncated file or a file that is not ours is refused with a
`StoreError` naming the file (and both versions, for a version mismatch).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.avqa.annotations import is_real_video
from avaf.shared.errors import StoreError
from avaf.shared.store import schema
from avaf.shared.store.h5 import file_sets, open_h5, read_table
from avaf.shared.store.schema import FeatureArray, Table

log = logging.getLogger(__name__)


@dataclass
class VideoBatch:
    """Several videos' per-second arrays stacked: video i is rows offset[i] : offset[i] + length[i]."""

    video_ids: list[str]
    offset: np.ndarray  # (V,) int64
    length: np.ndarray  # (V,) int32
    arrays: dict[str, np.ndarray]  # name -> (S, ...) with S = length.sum()

    def __post_init__(self) -> None:
        self.index = {v: i for i, v in enumerate(self.video_ids)}

    def get(self, video_id: str, name: str) -> np.ndarray:
        i = self.index[video_id]
        return self.arrays[name][self.offset[i] : self.offset[i] + self.length[i]]


class FeatureStore:
    """A read-only view of `feats.h5` (or of one shard)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = open_h5(self.path)
        a = self._f.attrs
        self.schema_version = int(a["schema_version"])
        self.kind = str(a["kind"])
        self.avaf_version = str(a["avaf_version"])
        self.created = str(a["created"])
        self.config: dict = json.loads(a["config"])
        self.signature: dict = json.loads(a["signature"])
        self.random_weights: list[str] = json.loads(a["random_weights"])
        self.sets: schema.Sets = file_sets(self._f)  # set -> array name -> FeatureArray (shape as stored)
        self.tables = {t.group: t for t in schema.layout(self.sets)}  # this file's columns
        self.videos = read_table(self._f, schema.VIDEOS)
        self.video_ids: list[str] = list(self.videos["video_id"])
        self._video_row = {v: i for i, v in enumerate(self.video_ids)}
        self._questions: dict[str, np.ndarray] | None = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._video_row

    def dataset(self, table: Table, column: str) -> h5py.Dataset:
        """The raw h5py dataset of one column, for callers that slice it themselves."""
        return self._f[self.tables[table.group].path(column)]

    def has(self, table: Table, column: str) -> bool:
        """Whether the file holds the column (one added to the schema later is filled in when read)."""
        return column in self.tables[table.group].names and f"{table.group}/{column}" in self._f

    def array(self, set_name: str, name: str) -> FeatureArray:
        """One array of a feature set: its table, column key, shape, encoder and preprocessing."""
        self.require([(set_name, name)])
        return self.sets[set_name][name]

    def require(self, arrays, who: str = "") -> None:
        """A one-line StoreError when the store lacks any of `arrays` ((set, name) pairs), naming them, the
        one who needs them, and the sets the store holds."""
        missing = [f"{s}/{n}" for s, n in arrays if n not in self.sets.get(s, {})]
        if missing:
            held = "; ".join(f"{s} ({', '.join(sorted(a))})" for s, a in sorted(self.sets.items())) or "none"
            raise StoreError(
                f"{self.path}: {who + ' needs ' if who else 'no feature array '}{', '.join(missing)}"
                f"{', which this store lacks' if who else ''}; its feature sets: {held}"
            )

    def require_videos(self, who: str) -> None:
        """A one-line StoreError when the store holds no video (questions alone, or nothing): `who` would
        find no features to read, and no setting of its own could change that."""
        if not self.video_ids:
            raise StoreError(
                f"{self.path}: holds no videos, so {who} has no features to read; extract some into it "
                f"first: avaf-extract --videos DIR --out {self.path}"
            )

    def shape(self, table: Table, column: str) -> tuple[int, ...]:
        return tuple(self.dataset(table, column).shape)

    def _row(self, video_id: str) -> int:
        try:
            return self._video_row[video_id]
        except KeyError:
            raise KeyError(f"{self.path}: no video {video_id!r} in this store") from None

    def rows(self, video_ids) -> np.ndarray:
        """(V,) int64: each video's row in the video table (file order); a missing one is a KeyError."""
        return np.array([self._row(v) for v in video_ids], dtype=np.int64)

    @property
    def per_second(self) -> tuple[str, ...]:
        """Every per-second column of this file: the avaf set's names, "<set>/<array>" for the others."""
        return self.tables["seconds"].names

    def video(self, video_id: str, fields: tuple[str, ...] | None = None) -> dict:
        """One video's metadata and per-second arrays (default: all of them), one contiguous read each."""
        i = self._row(video_id)
        out = {c: self.videos[c][i] for c in schema.VIDEOS.names}
        out["streams"] = json.loads(out["streams"])
        a, n = int(out["offset"]), int(out["length"])
        for name in self.per_second if fields is None else fields:
            out[name] = self.dataset(schema.SECONDS, name)[a : a + n]
        return out

    def video_array(self, video_id: str, set_name: str, name: str) -> np.ndarray:
        """(T, ...) one per-second array of a feature set for one video."""
        a = self.array(set_name, name)
        if a.table != "seconds":
            raise ValueError(f"{set_name}/{name} is a per-{a.table[:-1]} array, not per second")
        return self.video(video_id, fields=(a.key,))[a.key]

    def load_videos(self, video_ids=None, fields: tuple[str, ...] | None = None) -> VideoBatch:
        """Every listed video (default: all) stacked into one array per field (default: every per-second
        column; another set's array is "<set>/<array>", `array(set, name).key`), in file order.

        Neighbouring videos are read as one slice, so loading a whole split is a few large reads.
        """
        fields = self.per_second if fields is None else fields
        wanted = self.video_ids if video_ids is None else sorted(set(video_ids), key=self._row)
        rows = self.rows(wanted)
        starts = self.videos["offset"][rows] if len(rows) else np.zeros(0, np.int64)
        lengths = self.videos["length"][rows] if len(rows) else np.zeros(0, np.int32)
        offset = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]).astype(np.int64)[: len(rows)]
        arrays = {}
        for name in fields:
            ds = self.dataset(schema.SECONDS, name)
            out = np.empty((int(lengths.sum()), *ds.shape[1:]), dtype=ds.dtype)
            for src, dst, n in _coalesce(starts, offset, lengths):
                ds.read_direct(out, np.s_[src : src + n], np.s_[dst : dst + n])
            arrays[name] = out
        return VideoBatch(list(wanted), offset, lengths.astype(np.int32), arrays)

    def questions(self, split: str | None = None, subset: str | None = None) -> dict[str, np.ndarray]:
        """Question columns (the avaf set's sentence features included, other sets' arrays not: see
        `question_array`), optionally one split and/or the Real subset."""
        q = self._question_table()
        keep = self._keep(split, subset)
        return {k: v[keep] for k, v in q.items()}

    def _question_table(self) -> dict[str, np.ndarray]:
        if self._questions is None:
            own = tuple(c.name for c in self.tables["questions"].columns if "/" in c.name)
            self._questions = read_table(self._f, self.tables["questions"], skip=own)
        return self._questions

    def _keep(self, split: str | None, subset: str | None) -> np.ndarray:
        """(Q,) bool: the questions of `split` (all when None) and `subset` ("real", or all)."""
        q = self._question_table()
        keep = np.ones(len(q["question_id"]), dtype=bool)
        if split is not None:
            keep &= q["split"] == split
        if subset not in (None, "all"):
            if subset != "real":
                raise ValueError(f"unknown subset {subset!r}: use 'all' or 'real'")
            keep &= np.array([is_real_video(v) for v in q["video_id"]], dtype=bool)
        return keep

    def question_array(
        self, set_name: str, name: str, split: str | None = None, subset: str | None = None
    ) -> np.ndarray:
        """(Q, ...) one per-question array of a feature set, its rows those of `questions(split, subset)`;
        a row of NaN where a question has no value (e.g. a template the prompt table lacks)."""
        a = self.array(set_name, name)
        if a.table != "questions":
            raise ValueError(f"{set_name}/{name} is a per-{a.table[:-1]} array: read it with load_words")
        rows = np.flatnonzero(self._keep(split, subset))
        ds = self.dataset(schema.QUESTIONS, a.key)
        out = np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype)
        for src, dst, n in _coalesce(rows, np.arange(len(rows)), np.ones(len(rows), np.int64)):
            ds.read_direct(out, np.s_[src : src + n], np.s_[dst : dst + n])
        return out

    def questions_with_videos(
        self, split: str | None = None, subset: str | None = None
    ) -> dict[str, np.ndarray]:
        """`questions`, less those whose video (or the video of their audio) is not in the store (counted in
        a logged warning)."""
        q = self.questions(split=split, subset=subset)
        known = np.array([v in self and a in self for v, a in zip(q["video_id"], q["audio_video_id"])], bool)
        if known.all():
            return q
        missing = sorted({v for v in (*q["video_id"][~known], *q["audio_video_id"][~known]) if v not in self})
        log.warning(
            "%s: %d questions (split %s, subset %s) ask about %d videos not in the store (e.g. %s); left out",
            self.path, int((~known).sum()), split or "all", subset or "all", len(missing), ", ".join(missing[:3]),
        )  # fmt: skip
        return {k: v[known] for k, v in q.items()}

    def load_words(
        self, word_offset: np.ndarray, word_length: np.ndarray, column: str = "features"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Word features of the given questions stacked (default: the avaf set's; another set's per-token
        array is "<set>/<array>"); returns (words (W, D), new offsets)."""
        ds = self.dataset(schema.WORDS, column)
        offset = np.concatenate([[0], np.cumsum(word_length, dtype=np.int64)[:-1]]).astype(np.int64)
        out = np.empty((int(np.sum(word_length)), *ds.shape[1:]), dtype=ds.dtype)
        order = np.argsort(word_offset, kind="stable")
        for src, dst, n in _coalesce(word_offset[order], offset[order], word_length[order]):
            ds.read_direct(out, np.s_[src : src + n], np.s_[dst : dst + n])
        return out, offset[: len(word_length)]

    def question_words(self, question_id: int, column: str = "features") -> np.ndarray:
        """(L, D) one question's words (default: the avaf set's)."""
        q = self.questions()
        hit = np.flatnonzero(q["question_id"] == question_id)
        if not len(hit):
            raise KeyError(f"{self.path}: no question {question_id} in this store")
        a, n = int(q["word_offset"][hit[0]]), int(q["word_length"][hit[0]])
        return self.dataset(schema.WORDS, column)[a : a + n]

    def runs(self) -> dict[str, np.ndarray]:
        """The run record: one row per attempted video with status ok / failed and the error."""
        return read_table(self._f, schema.RUNS)

    def failed(self) -> list[tuple[str, str, str]]:
        """(video_id, source_path, error) of every video whose latest attempt failed."""
        r = self.runs()
        bad = r["status"] == schema.STATUS_FAILED
        return list(zip(r["video_id"][bad], r["source_path"][bad], r["error"][bad]))


def _coalesce(src: np.ndarray, dst: np.ndarray, n: np.ndarray):
    """Merge (src, dst, n) spans that continue each other in both source and destination."""
    runs: list[list[int]] = []
    for s, d, k in zip(src.tolist(), dst.tolist(), n.tolist()):
        if runs and runs[-1][0] + runs[-1][2] == s and runs[-1][1] + runs[-1][2] == d:
            runs[-1][2] += k
        elif k:
            runs.append([s, d, k])
    return runs

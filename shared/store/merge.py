"""Merge complete shards into one self-contained `feats.h5` (DESIGN.md §2 "Writers"; docs/schema.md).

Later shards win. A store is built under a temporary name and renamed over `feats.h5`; a resumed run that
only adds videos and questions appends its new shards to `feats.h5` in place instead, through a rollback
journal (journal.py), which saves the copy's time and its second copy of the disk (about 30 GB on
MUSIC-AVQA). Either way a process killed at any moment leaves the previous store readable, and memory is
bounded by COPY_BYTES whatever the size.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.files import atomic_path, check_room
from avaf.shared.store import schema
from avaf.shared.store.h5 import (
    create_column,
    file_layout,
    file_sets,
    growable_layout,
    open_h5,
    read_column,
    read_strings,
    read_table,
    record_sets,
    root_attrs,
    table_rows,
)
from avaf.shared.store.journal import JournaledFile, recover
from avaf.shared.store.schema import KIND_SHARD, KIND_STORE, STR, Table
from avaf.shared.store.sets import structure

COPY_BYTES = 64 << 20  # bytes per read while merging: bounds memory whatever the store's size
BUILT_FROM = "built_from"  # root attribute of a store: JSON list of the shard file names it holds

log = logging.getLogger(__name__)


def build_store(shards: list[Path], out: str | os.PathLike) -> dict[str, int]:
    """Merge complete shards into one self-contained store at `out`.

    Later shards win: a video's features come from its latest successful shard, its run record from
    its latest attempt (a success is never hidden by an older failure), a question from its latest shard.
    Shards whose feature signature differs from the first one's are refused, naming both files. The rows
    follow a rule that no schedule changes: videos and run records by video id, questions in shard order
    (a run writes its questions into one shard, in annotation order). So the same videos and config give
    the same arrays in process, on local Ray and on a cluster, and a resumed run the arrays of a fresh one.

    When `out` was built from a prefix of `shards` and the shards after it only add (new videos whose ids
    sort after the stored ones, new questions, videos that had failed), they are appended to `out` in place,
    through a rollback journal (journal.py): the cost is that of the new shards, and a killed append leaves the previous store.
    Otherwise the store is rebuilt under a temporary name and renamed over `out`. A store that cannot fit
    (full disk, file-size limit) is refused before writing, the previous one kept. Returns counts of what
    the store holds.
    """
    out = Path(out)
    if not shards:
        raise StoreError(f"{out}: no complete shards to build from")
    recover(out)
    if out.is_file():
        counts = _append(shards, out)
        if counts is not None:
            return counts
    check_room(out, sum(p.stat().st_size for p in shards) + (64 << 10))
    handles = [open_h5(p, kind=KIND_SHARD) for p in shards]
    try:
        plan = _merge_plan(shards, handles)
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(plan["attrs"])
            f.attrs[BUILT_FROM] = json.dumps([p.name for p in shards])
            for table in plan["tables"]:
                _copy_table(f, table, handles, plan)
            record_sets(f, plan["sets"])
    finally:
        for h in handles:
            h.close()
    return plan["counts"]


def _append(shards: list[Path], out: Path) -> dict[str, int] | None:
    """Append the shards `out` was not built from (build_store's doc); None when a rebuild is needed.

    Three steps: decide whether the store can grow (`_appendable`, `_append_plan`), plan which rows go
    where, and write them through the journal (`_write_append`)."""
    with open_h5(out, kind=KIND_STORE) as f:
        store = _appendable(f, [p.name for p in shards])
        if store is None or store.built_from == [p.name for p in shards]:
            return None if store is None else _counts(f)
    new = shards[len(store.built_from) :]
    handles = [open_h5(p, kind=KIND_SHARD) for p in new]
    try:
        plan = _append_plan(store, new, handles)
        if plan is None:
            return None
        check_room(out, sum(p.stat().st_size for p in new) + (64 << 10))
        _write_append(out, handles, plan, [p.name for p in shards])
        log.info("%s: appended %d shards (%d videos, %d questions)", out, len(new), *plan.added)
    finally:
        for h in handles:
            h.close()
    with open_h5(out, kind=KIND_STORE) as f:
        return _counts(f)


@dataclass(frozen=True)
class _Grown:
    """What an append must know of the store it grows."""

    built_from: list[str]  # the shard names the store holds, a prefix of the shards now
    signature: str
    structure: dict  # sets.structure of its feature sets
    random_weights: list[str]
    videos: set[str]
    questions: set[int]
    run_row: dict[str, int]  # video id -> its row in /runs
    start: dict[str, int]  # table group -> its row count: where the appended rows start


@dataclass(frozen=True)
class _AppendPlan:
    merge: dict  # _merge_plan of the new shards, its runs reduced to those of videos new to /runs
    replaced: dict[int, dict]  # row of /runs -> the new record written over it
    start: dict[str, int]
    added: tuple[int, int]  # videos, questions


def _appendable(f: h5py.File, names: list[str]) -> _Grown | None:
    """The store's state when the shards `names` only extend what it was built from and every column can
    grow; None when a rebuild is needed."""
    built = json.loads(f.attrs.get(BUILT_FROM, "null"))
    if built is None or names[: len(built)] != built:
        return None  # an older store, or shards removed or renamed since
    tables = file_layout(f)
    for table in tables:
        for column in table.columns:
            path = table.path(column.name)  # an empty column of a width not known yet is made anew (_put)
            if path not in f or (f[path].maxshape[0] is not None and f[path].shape[0] != 0):
                return None  # written before stores could grow, or before a column was added
    return _Grown(
        built_from=built,
        signature=f.attrs["signature"],
        structure=structure(file_sets(f)),
        random_weights=json.loads(f.attrs["random_weights"]),
        videos=set(read_strings(f, schema.VIDEOS, "video_id")),
        questions=set(f[schema.QUESTIONS.path("question_id")][...].tolist()),
        run_row={v: i for i, v in enumerate(read_strings(f, schema.RUNS, "video_id"))},
        start={t.group: table_rows(f, t) for t in tables},
    )


def _append_plan(store: _Grown, new: list[Path], handles: list[h5py.File]) -> _AppendPlan | None:
    """Which rows of the new shards are appended and which run records overwritten; None when the new
    shards replace features (or differ in signature): a rebuild then decides, or refuses naming them."""
    if any(h.attrs["signature"] != store.signature for h in handles):
        return None  # the rebuild refuses it, naming the shards
    if any(structure(file_sets(h)) != store.structure for h in handles):
        return None  # other feature sets: likewise
    plan = _merge_plan(new, handles)
    vids = [read_strings(h, schema.VIDEOS, "video_id") for h in handles]
    qids = [h[schema.QUESTIONS.path("question_id")][...] for h in handles]
    added_videos = {vids[s][i] for s, i in plan["rows"]["videos"]}
    added_questions = {int(qids[s][i]) for s, i in plan["rows"]["questions"]}
    if added_videos & store.videos or added_questions & store.questions:
        return None  # features replaced, not added
    if added_videos and min(added_videos) < max(store.videos, default=""):
        return None  # the store keeps its videos in id order: a rebuild puts the new ones in their place
    runs = [read_table(h, schema.RUNS) for h in handles]
    appended, replaced = [], {}
    for s, i in plan["rows"]["runs"]:
        vid, status = runs[s]["video_id"][i], runs[s]["status"][i]
        if vid not in store.run_row:
            appended.append((s, i))
        elif status == schema.STATUS_OK or vid not in store.videos:  # a success is never hidden by a failure
            replaced[store.run_row[vid]] = {c.name: runs[s][c.name][i] for c in schema.RUNS.columns}
    if appended and runs[appended[0][0]]["video_id"][appended[0][1]] < max(store.run_row, default=""):
        return None  # likewise the run records (appended[0]: the smallest id, in id order)
    plan["rows"]["runs"] = appended
    weights = set(store.random_weights) | set(json.loads(plan["attrs"]["random_weights"]))
    plan["attrs"]["random_weights"] = json.dumps(sorted(weights))
    return _AppendPlan(plan, replaced, store.start, (len(added_videos), len(added_questions)))


def _write_append(out: Path, handles: list[h5py.File], plan: _AppendPlan, names: list[str]) -> None:
    """Write the planned rows at the end of every table, in place, through a rollback journal (journal.py)."""
    with JournaledFile(out) as jf:
        with h5py.File(jf, "r+") as f:
            for table in plan.merge["tables"]:
                _copy_table(f, table, handles, plan.merge, plan.start)
            for row, record in sorted(plan.replaced.items()):
                for name, value in record.items():
                    f[schema.RUNS.path(name)][row] = value
            f.attrs.update(plan.merge["attrs"])
            f.attrs[BUILT_FROM] = json.dumps(names)
            record_sets(f, plan.merge["sets"])
        jf.commit()


def _counts(f: h5py.File) -> dict[str, int]:
    status = read_strings(f, schema.RUNS, "status")
    return {
        "videos": f[schema.VIDEOS.path("video_id")].shape[0],
        "questions": f[schema.QUESTIONS.path("question_id")].shape[0],
        "runs": len(status),
        "failed": int(np.sum(status == schema.STATUS_FAILED)),
    }


def _merge_plan(paths: list[Path], handles: list[h5py.File]) -> dict:
    """Which rows of which shard end up in the store, in what order."""
    signature = handles[0].attrs["signature"]
    _check_structure(paths, handles)
    for p, h in zip(paths[1:], handles[1:]):
        if h.attrs["signature"] != signature:
            diff = signature_difference(json.loads(h.attrs["signature"]), json.loads(signature))
            raise StoreError(
                f"{p}: extracted with different encoders or settings than {paths[0]} ({diff}); refusing to "
                "mix them in one store, where a video's features would depend on the run or node that "
                f"encoded it. {_same_settings_hint(diff)}"
            )
    latest_video: dict[str, tuple[int, int]] = {}
    latest_question: dict[int, tuple[int, int]] = {}
    run_rows: dict[str, tuple[int, int]] = {}
    run_status: dict[str, str] = {}
    for s, h in enumerate(handles):
        for i, vid in enumerate(read_strings(h, schema.VIDEOS, "video_id")):
            latest_video[vid] = (s, i)
        for i, qid in enumerate(h[schema.QUESTIONS.path("question_id")][...]):
            latest_question[int(qid)] = (s, i)
        for i, (vid, status) in enumerate(
            zip(read_strings(h, schema.RUNS, "video_id"), read_strings(h, schema.RUNS, "status"))
        ):
            if status == schema.STATUS_OK or vid not in latest_video:
                run_rows[vid], run_status[vid] = (s, i), status
    random_weights = sorted({w for h in handles for w in json.loads(h.attrs["random_weights"])})
    last = handles[-1].attrs
    attrs = root_attrs(KIND_STORE, json.loads(last["config"]), random_weights, json.loads(last["signature"]))
    rows = {  # a rule no schedule changes: videos and runs by video id, questions in the shards' order
        "videos": [latest_video[v] for v in sorted(latest_video)],
        "questions": sorted(latest_question.values()),  # one run's in one shard, in annotation order
        "runs": [run_rows[v] for v in sorted(run_rows)],
    }
    counts = {k: len(v) for k, v in rows.items()}
    counts["failed"] = sum(status == schema.STATUS_FAILED for status in run_status.values())
    sets = file_sets(handles[-1])
    return {"attrs": attrs, "rows": rows, "counts": counts, "sets": sets, "tables": schema.layout(sets)}


def _same_settings_hint(diff: str) -> str:
    """What to do about shards that differ in `diff`: a cluster's GPU and CPU nodes resolve --precision auto
    to fp16 and fp32, so that one is named when it is the difference."""
    if "precision" in diff:
        return "Pass the same --precision on every node (auto gives fp16 on a GPU, fp32 on a CPU)"
    return "Extract with the same settings everywhere, or move the shards made otherwise out of the folder"


def _check_structure(paths: list[Path], handles: list[h5py.File]) -> None:
    """Shards holding other feature sets (or other arrays of them) are refused, naming both files."""
    first = structure(file_sets(handles[0]))
    for p, h in zip(paths[1:], handles[1:]):
        other = structure(file_sets(h))
        if other != first:
            raise StoreError(
                f"{p}: holds the feature arrays {_arrays_of(other)}, {paths[0]} holds {_arrays_of(first)}; "
                "refusing to merge them into one store, where every video has every array"
            )


def _arrays_of(held: dict) -> str:
    return ", ".join(f"{s}/{n}" for s, arrays in held.items() for n in arrays) or "none"


def _by_shard(rows: list[tuple[int, int]]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Rows (shard, row) in store order, per shard: (shard, their places in the store order, their rows in
    the shard). Worked out once per table, for all of its columns."""
    pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    order = []
    for s in np.unique(pairs[:, 0]):
        dest = np.flatnonzero(pairs[:, 0] == s)
        order.append((int(s), dest, pairs[dest, 1]))
    return order


def _gather(handles: list[h5py.File], order, n: int, read) -> np.ndarray:
    """The `n` rows that `order` (`_by_shard`) places, of a column; `read(handle)` gives one shard's whole
    column. Holds the result and one shard's column at a time. The store's feature sets are the last
    shard's (_merge_plan), so an empty column takes its width from there too."""
    out = None
    for s, dest, src in order:
        column = read(handles[s])
        if out is None:
            out = np.empty((n, *column.shape[1:]), dtype=column.dtype)
        out[dest] = column[src]
    return read(handles[-1])[:0] if out is None else out  # no rows: the shape the last shard records


def _copy_table(
    f: h5py.File, table: Table, handles: list[h5py.File], plan: dict, start: dict[str, int] | None = None
) -> None:
    """Copy the planned rows of one table from the shards, in the plan's order, the ragged children in
    bounded pieces.

    start: None writes new datasets; else the row counts of the store's tables, after which the rows are
    appended (offsets into the ragged children shifted accordingly)."""
    if table.group in schema.RAGGED:
        return  # copied with its parent
    rows = plan["rows"][table.group]
    children = [(g, r) for g, r in schema.RAGGED.items() if r[0].group == table.group]
    order = _by_shard(rows)
    for column in table.columns:
        if any(column.name in (off, length) for _, (_, off, length) in children):
            continue
        merged = _gather(handles, order, len(rows), lambda h, c=column: read_column(h, table, c))
        _put(f, table, column, merged, None if start is None else start[table.group])
    for child_group, (_, off_name, len_name) in children:
        child = next(t for t in plan["tables"] if t.group == child_group)
        _copy_ragged(f, child, table, off_name, len_name, handles, (rows, order), start)


def _put(f: h5py.File, table: Table, column: schema.Column, data: np.ndarray, at: int | None) -> None:
    """`data` as a new dataset (at None, growable), or written as rows at.. of the existing one."""
    data = data.astype(object) if column.dtype == STR else data
    if at is None or _dropped_if_fixed(f, table.path(column.name)):
        create_column(f, table.path(column.name), column, data, growable=True)
        return
    ds = f[table.path(column.name)]
    ds.resize(at + len(data), axis=0)
    if len(data):
        ds[at:] = data


def _dropped_if_fixed(f: h5py.File, path: str) -> bool:
    """Delete the column at ``path`` if it was written fixed (empty: its width was not known yet), so it is
    made anew, growable; True when it was."""
    if f[path].maxshape[0] is None:
        return False
    del f[path]
    return True


def _copy_ragged(f, child: Table, parent: Table, off_name, len_name, handles, planned, start) -> None:
    """Copy the child rows (seconds, words) of the parent rows planned (rows, their `_by_shard` order) and
    write fresh offsets."""
    rows, order = planned
    starts = _gather(handles, order, len(rows), lambda h: h[parent.path(off_name)][...])
    counts = _gather(handles, order, len(rows), lambda h: h[parent.path(len_name)][...])
    spans = [(s, int(a), int(n)) for (s, _), a, n in zip(rows, starts, counts, strict=True)]  # store order
    lengths = np.array([n for _, _, n in spans], dtype=np.int32)
    first = 0 if start is None else start[child.group]
    offsets = first + (
        np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
        if len(spans)
        else np.zeros(0, np.int64)
    )
    at = None if start is None else start[parent.group]
    _put(f, parent, parent.column(off_name), offsets.astype(np.int64), at)
    _put(f, parent, parent.column(len_name), lengths, at)
    total = int(lengths.sum())
    for column in child.columns:
        last = handles[-1][child.path(column.name)]  # no rows anywhere: the width the last shard records
        tail = next(
            (h[child.path(column.name)].shape[1:] for h in handles if h[child.path(column.name)].shape[0]),
            last.shape[1:],
        )
        per_row = max(1, int(np.prod(tail, dtype=np.int64)) * np.dtype(column.dtype).itemsize)
        if start is None or _dropped_if_fixed(f, child.path(column.name)):
            layout = growable_layout((total, *tail), np.dtype(column.dtype))
            ds = f.create_dataset(child.path(column.name), shape=(total, *tail), dtype=column.dtype, **layout)
        else:
            ds = f[child.path(column.name)]
            ds.resize(first + total, axis=0)
        _copy_spans(ds, handles, child.path(column.name), spans, max(1, COPY_BYTES // per_row), first)


def _copy_spans(ds: h5py.Dataset, handles, path: str, spans, max_rows: int, dest: int = 0) -> None:
    """Copy spans to rows dest.., coalescing neighbours of one shard into one read of at most max_rows rows."""
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


def signature_difference(a: dict, b: dict, prefix: str = "") -> str:
    """The keys on which two signatures differ, with both values: "clip.precision fp32 vs fp16"."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            inner = signature_difference(x, y, f"{prefix}{k}.")
            out += [inner] if inner else []
        elif x != y:
            out.append(f"{prefix}{k} {x} vs {y}")
    return "; ".join(out)

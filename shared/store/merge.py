"""Merge complete shards into one self-contained `feats.h5` (DESIGN.md §2 "Writers").

Later shards win; the result is written under a temporary name and renamed over `feats.h5`, so a process
killed at any moment leaves the previous store readable. Memory is bounded by COPY_BYTES whatever the size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.files import atomic_path, check_room
from avaf.shared.store import schema
from avaf.shared.store.h5 import create_column, open_h5, read_column, read_strings, read_table, root_attrs
from avaf.shared.store.journal import JournaledFile, recover
from avaf.shared.store.schema import KIND_SHARD, KIND_STORE, STR, Table

COPY_BYTES = 64 << 20  # bytes per read while merging: bounds memory whatever the store's size
BUILT_FROM = "built_from"  # root attribute of a store: JSON list of the shard file names it holds

log = logging.getLogger(__name__)


def build_store(shards: list[Path], out: str | os.PathLike) -> dict[str, int]:
    """Merge complete shards into one self-contained store at `out`.

    Later shards win: a video's features come from its latest successful shard, its run record from
    its latest attempt (a success is never hidden by an older failure), a question from its latest shard.
    Shards whose feature signature differs from the first one's are refused, naming both files.

    When `out` was built from a prefix of `shards` and the shards after it only add (new videos, new
    questions, videos that had failed), they are appended to `out` in place, through a rollback journal
    (journal.py): the cost is that of the new shards, and a killed append leaves the previous store.
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
            for table in schema.TABLES:
                _copy_table(f, table, handles, plan)
    finally:
        for h in handles:
            h.close()
    return plan["counts"]


def _append(shards: list[Path], out: Path) -> dict[str, int] | None:
    """Append the shards `out` was not built from (build_store's doc); None when a rebuild is needed."""
    with open_h5(out, kind=KIND_STORE) as f:
        built = json.loads(f.attrs.get(BUILT_FROM, "null"))
        names = [p.name for p in shards]
        if built is None or names[: len(built)] != built:
            return None  # an older store, or shards removed or renamed since
        growable = all(  # an empty column of a width not known yet is made anew (_put, _copy_ragged)
            t.path(c.name) in f and (f[t.path(c.name)].maxshape[0] is None or f[t.path(c.name)].shape[0] == 0)
            for t in schema.TABLES
            for c in t.columns
        )
        if not growable:
            return None  # written before stores could grow, or before a column was added
        new = shards[len(built) :]
        if not new:
            return _counts(f)
        signature, random_weights = f.attrs["signature"], json.loads(f.attrs["random_weights"])
        videos = set(read_strings(f, schema.VIDEOS, "video_id"))
        questions = set(f[schema.QUESTIONS.path("question_id")][...].tolist())
        run_row = {v: i for i, v in enumerate(read_strings(f, schema.RUNS, "video_id"))}
        start = {t.group: f[t.path(t.names[0])].shape[0] for t in schema.TABLES}
    handles = [open_h5(p, kind=KIND_SHARD) for p in new]
    try:
        if any(h.attrs["signature"] != signature for h in handles):
            return None  # the rebuild refuses it, naming the shards
        plan = _merge_plan(new, handles)
        vids = [read_strings(h, schema.VIDEOS, "video_id") for h in handles]
        qids = [h[schema.QUESTIONS.path("question_id")][...] for h in handles]
        runs = [read_table(h, schema.RUNS) for h in handles]
        added_videos = {vids[s][i] for s, i in plan["rows"]["videos"]}
        added_questions = {int(qids[s][i]) for s, i in plan["rows"]["questions"]}
        if added_videos & videos or added_questions & questions:
            return None  # features replaced, not added
        appended, replaced = [], {}
        for s, i in plan["rows"]["runs"]:
            vid, status = runs[s]["video_id"][i], runs[s]["status"][i]
            if vid not in run_row:
                appended.append((s, i))
            elif status == schema.STATUS_OK or vid not in videos:  # a success is never hidden by a failure
                replaced[run_row[vid]] = (s, i)
        plan["rows"]["runs"] = appended
        check_room(out, sum(p.stat().st_size for p in new) + (64 << 10))
        with JournaledFile(out) as jf:
            with h5py.File(jf, "r+") as f:
                for table in schema.TABLES:
                    _copy_table(f, table, handles, plan, start)
                for row, (s, i) in sorted(replaced.items()):
                    for column in schema.RUNS.columns:
                        f[schema.RUNS.path(column.name)][row] = runs[s][column.name][i]
                attrs = dict(plan["attrs"])
                attrs["random_weights"] = json.dumps(
                    sorted(set(random_weights) | set(json.loads(attrs["random_weights"])))
                )
                f.attrs.update(attrs)
                f.attrs[BUILT_FROM] = json.dumps(names)
            jf.commit()
        log.info(
            "%s: appended %d shards (%d videos, %d questions)",
            out,
            len(new),
            len(added_videos),
            len(added_questions),
        )
    finally:
        for h in handles:
            h.close()
    with open_h5(out, kind=KIND_STORE) as f:
        return _counts(f)


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
    for p, h in zip(paths[1:], handles[1:]):
        if h.attrs["signature"] != signature:
            diff = signature_difference(json.loads(h.attrs["signature"]), json.loads(signature))
            raise StoreError(
                f"{p}: extracted with different encoders or settings than {paths[0]} ({diff}); refusing to "
                "mix them in one store, where a video's features would depend on the node that encoded it. "
                "Extract with the same settings everywhere (e.g. --precision fp16 on every node)"
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
    rows = {
        "videos": sorted(latest_video.values()),
        "questions": sorted(latest_question.values()),
        "runs": sorted(run_rows.values()),
    }
    counts = {k: len(v) for k, v in rows.items()}
    counts["failed"] = sum(status == schema.STATUS_FAILED for status in run_status.values())
    return {"attrs": attrs, "rows": rows, "counts": counts}


def _runs_of(rows: list[tuple[int, int]], shard: int) -> np.ndarray:
    return np.array([i for s, i in rows if s == shard], dtype=np.int64)


def _copy_table(
    f: h5py.File, table: Table, handles: list[h5py.File], plan: dict, start: dict[str, int] | None = None
) -> None:
    """Copy the selected rows of one table from every shard, shard by shard, in bounded pieces.

    start: None writes new datasets; else the row counts of the store's tables, after which the rows are
    appended (offsets into the ragged children shifted accordingly)."""
    if table.group in schema.RAGGED:
        return  # copied with its parent
    rows = plan["rows"][table.group]
    children = [(g, r) for g, r in schema.RAGGED.items() if r[0] is table]
    selected = [_runs_of(rows, s) for s in range(len(handles))]
    for column in table.columns:
        if any(column.name in (off, length) for _, (_, off, length) in children):
            continue
        parts = [read_column(h, table, column)[sel] for h, sel in zip(handles, selected) if len(sel)]
        merged = np.concatenate(parts) if parts else read_column(handles[0], table, column)[:0]
        _put(f, table, column, merged, None if start is None else start[table.group])
    for child_group, (_, off_name, len_name) in children:
        child = schema.TABLE_BY_GROUP[child_group]
        _copy_ragged(f, child, table, off_name, len_name, handles, selected, start)


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


def _copy_ragged(f, child: Table, parent: Table, off_name, len_name, handles, selected, start) -> None:
    """Copy the child rows (seconds, words) of the selected parent rows and write fresh offsets."""
    spans = []  # (shard, start, length) per selected parent row, in store order
    for s, (h, sel) in enumerate(zip(handles, selected)):
        if len(sel):
            starts = h[parent.path(off_name)][...][sel]
            lengths = h[parent.path(len_name)][...][sel]
            spans += [(s, int(a), int(n)) for a, n in zip(starts, lengths)]
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
        src0 = handles[0][child.path(column.name)]
        tail = next(
            (h[child.path(column.name)].shape[1:] for h in handles if h[child.path(column.name)].shape[0]),
            src0.shape[1:],
        )
        per_row = max(1, int(np.prod(tail, dtype=np.int64)) * np.dtype(column.dtype).itemsize)
        if start is None or _dropped_if_fixed(f, child.path(column.name)):
            growable = 0 not in tail  # a width still unknown (no row yet) cannot be chunked
            ds = f.create_dataset(
                child.path(column.name),
                shape=(total, *tail),
                maxshape=(None, *tail) if growable else None,
                dtype=column.dtype,
                chunks=(min(schema.chunk_rows(per_row), max(total, 1024)), *tail) if growable else None,
            )
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

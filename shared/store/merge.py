"""Merge complete shards into one self-contained `feats.h5` (DESIGN.md §2 "Writers").

Later shards win; the result is written under a temporary name and renamed over `feats.h5`, so a process
killed at any moment leaves the previous store readable. Memory is bounded by COPY_BYTES whatever the size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.files import atomic_path, check_room
from avaf.shared.store import schema
from avaf.shared.store.h5 import create_column, open_h5, read_column, read_strings, root_attrs
from avaf.shared.store.schema import KIND_SHARD, KIND_STORE, STR, Table

COPY_BYTES = 64 << 20  # bytes per read while merging: bounds memory whatever the store's size


def build_store(shards: list[Path], out: str | os.PathLike) -> dict[str, int]:
    """Merge complete shards into one self-contained store at `out`, replacing it atomically.

    Later shards win: a video's features come from its latest successful shard, its run record from
    its latest attempt (a success is never hidden by an older failure), a question from its latest shard.
    Shards whose feature signature differs from the first one's are refused, naming both files.
    A store that cannot fit (full disk, file-size limit; at most the shards' size) is refused before
    writing, the previous one kept. Returns counts of what the store holds.
    """
    out = Path(out)
    if not shards:
        raise StoreError(f"{out}: no complete shards to build from")
    check_room(out, sum(p.stat().st_size for p in shards) + (64 << 10))
    handles = [open_h5(p, kind=KIND_SHARD) for p in shards]
    try:
        plan = _merge_plan(shards, handles)
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(plan["attrs"])
            for table in schema.TABLES:
                _copy_table(f, table, handles, plan)
    finally:
        for h in handles:
            h.close()
    return plan["counts"]


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
        parts = [read_column(h, table, column)[sel] for h, sel in zip(handles, selected) if len(sel)]
        merged = np.concatenate(parts) if parts else read_column(handles[0], table, column)[:0]
        create_column(
            f, table.path(column.name), column, merged.astype(object) if column.dtype == STR else merged
        )
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
    create_column(f, parent.path(off_name), parent.column(off_name), offsets.astype(np.int64))
    create_column(f, parent.path(len_name), parent.column(len_name), lengths)
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

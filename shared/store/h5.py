"""Low-level HDF5 helpers of the feature store: open and validate a file, read a table, write a column.

The reader, the shard writer and the merge all use these; none of them imports another for them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from avaf.shared.errors import StoreError
from avaf.shared.store import schema
from avaf.shared.store.journal import recover
from avaf.shared.store.schema import STR, Table
from avaf.shared.store.sets import avaf_set, check_sets, sets_from_json, sets_to_json
from avaf.shared.version import avaf_version


def open_h5(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open and validate a store or shard; every problem is a StoreError naming the file."""
    path = Path(path)
    recover(path)  # an append killed midway is rolled back first (journal.py)
    if not path.is_file():
        raise StoreError(f"{path}: no such feature file")
    if path.stat().st_size == 0 or not h5py.is_hdf5(path):
        raise StoreError(f"{path}: not an HDF5 file (empty, or not written by avaf)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: cannot be opened as HDF5: the file is truncated or corrupt ({e})") from e
    try:
        _validate(path, f, kind)
    except Exception:
        f.close()
        raise
    return f


def _validate(path: Path, f: h5py.File, kind: str | None) -> None:
    fmt = f.attrs.get("format")
    if fmt != schema.FORMAT_NAME:
        raise StoreError(
            f"{path}: not an avaf feature file (root attribute 'format' is {fmt!r}, expected {schema.FORMAT_NAME!r})"
        )
    version = int(f.attrs.get("schema_version", -1))
    if version not in schema.READABLE_VERSIONS:
        writer = f.attrs.get("avaf_version", "unknown")
        readable = " and ".join(str(v) for v in schema.READABLE_VERSIONS)
        raise StoreError(
            f"{path}: feature schema version {version} (written by avaf {writer}); this avaf reads schema "
            f"versions {readable}. Re-extract, or read it with the avaf version that wrote it."
        )
    if kind is not None and f.attrs.get("kind") != kind:
        raise StoreError(f"{path}: is a {f.attrs.get('kind')!r} file, expected a {kind!r} file")
    missing = [a for a in schema.ROOT_ATTRS if a not in f.attrs]
    missing += [schema.SETS_ATTR] if version > 1 and schema.SETS_ATTR not in f.attrs else []
    if missing:
        raise StoreError(f"{path}: incomplete avaf feature file, missing {', '.join(missing)}")
    tables = file_layout(f)
    for table in tables:
        missing += [
            table.path(c.name) for c in table.columns if c.fill is None and table.path(c.name) not in f
        ]
    if missing:
        raise StoreError(f"{path}: incomplete avaf feature file, missing {', '.join(missing)}")
    for table in tables:
        rows = {f[table.path(c)].shape[0] for c in table.names if table.path(c) in f}
        if len(rows) > 1:
            raise StoreError(f"{path}: the columns of /{table.group} have different lengths {sorted(rows)}")
    by_group = {t.group: t for t in tables}
    for child, (parent, off, length) in schema.RAGGED.items():
        n = table_rows(f, by_group[child])
        ends = f[parent.path(off)][...].astype(np.int64) + f[parent.path(length)][...]
        if len(ends) and (ends.max() > n or f[parent.path(off)][...].min() < 0):
            raise StoreError(
                f"{path}: /{parent.group}/{off} points past the {n} rows of /{child}: corrupt file"
            )


def file_sets(f: h5py.File) -> schema.Sets:
    """The feature sets of a file, each array's shape as stored: its `feature_sets` attribute, or for a
    schema-1 file the avaf set its signature describes."""
    if schema.SETS_ATTR in f.attrs:
        try:
            sets = sets_from_json(f.attrs[schema.SETS_ATTR])
            check_sets(sets)
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{f.filename}: unreadable {schema.SETS_ATTR} attribute ({e})") from e
    else:
        sets = {schema.AVAF: avaf_set(json.loads(f.attrs.get("signature", "{}")))}
    return _shaped(f, sets)


def _shaped(f: h5py.File, sets: schema.Sets) -> schema.Sets:
    """`sets`, each array's shape that of its dataset in `f` (left as it is where `f` has none)."""
    return {
        s: {n: replace(a, shape=tuple(f[a.path].shape[1:])) if a.path in f else a for n, a in arrays.items()}
        for s, arrays in sets.items()
    }


def file_layout(f: h5py.File) -> tuple[Table, ...]:
    """The tables of this file: the schema's, with the columns of the feature sets it holds."""
    return schema.layout(file_sets(f))


def record_sets(f: h5py.File, sets: schema.Sets) -> None:
    """Write the `feature_sets` attribute of `sets`, each array's shape taken from its dataset in `f`."""
    f.attrs[schema.SETS_ATTR] = sets_to_json(_shaped(f, sets))


def table_rows(f: h5py.File, table: Table) -> int:
    """Rows of a table: those of its first column in the file (0 for a table without columns, e.g. /words
    of a file whose sets have no per-token array)."""
    for name in table.names:
        if table.path(name) in f:
            return f[table.path(name)].shape[0]
    return 0


def read_table(f: h5py.File, table: Table, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every column of `table` but those in `skip`, strings decoded."""
    return {c.name: read_column(f, table, c) for c in table.columns if c.name not in skip}


def read_strings(f: h5py.File, table: Table, column: str) -> np.ndarray:
    """One string column as a numpy array of str."""
    return f[table.path(column)].asstr()[...]


def read_column(f: h5py.File, table: Table, column: schema.Column) -> np.ndarray:
    """One column, strings decoded; a column the file predates comes back filled (`Column.fill`)."""
    if table.path(column.name) not in f:
        return fill_column(f, table, column)
    ds = f[table.path(column.name)]
    return ds.asstr()[...] if column.dtype == STR else ds[...]


def fill_column(f: h5py.File, table: Table, column: schema.Column) -> np.ndarray:
    """The values of a column added after `f` was written: another column's, or a constant per row."""
    if column.fill is None:
        raise StoreError(f"{f.filename}: missing {table.path(column.name)}")
    if isinstance(column.fill, schema.SameAs):
        return read_column(f, table, table.column(column.fill.column)).astype(schema.numpy_dtype(column))
    return np.full(table_rows(f, table), column.fill, dtype=schema.numpy_dtype(column))


def stack_rows(column: schema.Column, values: list, dims: dict[str, int], blocks: bool) -> np.ndarray:
    """Rows of one column as one array of the schema dtype; `blocks`: each value holds several rows."""
    if column.dtype == STR:
        return np.array(values, dtype=object).reshape(len(values))
    if values:
        arrays = [np.asarray(v, dtype=column.dtype) for v in values]
        return np.concatenate(arrays, axis=0) if blocks else np.stack(arrays)
    tail = tuple(dims.get(d, 0) if isinstance(d, str) else d for d in column.tail)
    return np.zeros((0, *tail), dtype=column.dtype)


def create_column(
    f: h5py.File, path: str, column: schema.Column, data: np.ndarray, growable: bool = False
) -> None:
    """A dataset holding `data`; `growable`: resizable along the rows (a store that later shards append to)."""
    dtype = schema.numpy_dtype(column) if column.dtype == STR else data.dtype
    layout = growable_layout(data.shape, dtype) if growable else {}
    if column.dtype == STR:
        f.create_dataset(path, data=data, dtype=h5py.string_dtype("utf-8"), **layout)
        return
    if not layout:
        rows = data.shape[0]
        per_row = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
        layout = {"chunks": (min(rows, schema.chunk_rows(per_row)), *data.shape[1:]) if rows else None}
    f.create_dataset(path, data=data, **layout)


def growable_layout(shape: tuple[int, ...], dtype: np.dtype) -> dict:
    """`create_dataset` keywords for a dataset of `shape` that rows are later appended to: resizable along
    the rows, chunks of about 1 MB, or of 1024 rows for a small or string (object) column. {} while a width
    is still unknown (no row yet): such a dataset cannot be chunked, and is made anew when rows come."""
    tail = tuple(shape[1:])
    if 0 in tail:
        return {}
    if dtype.kind == "O":
        chunks = (1024, *tail)
    else:
        per_row = int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
        chunks = (min(schema.chunk_rows(per_row), max(shape[0], 1024)), *tail)
    return {"maxshape": (None, *tail), "chunks": chunks}


def root_attrs(kind: str, config: dict, random_weights: list[str], signature: dict) -> dict:
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

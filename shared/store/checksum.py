"""One digest of what a feature file holds, to tell whether two files hold the same arrays
(`avaf-inspect --checksum`).

Covered: every dataset (its path, dtype, shape and bytes; strings as UTF-8) and the root attributes that say
what the numbers are (schema, signature, random weights, feature sets). Left out: when and by which avaf
the file was written (`created`, `avaf_version`), the run's config (it records the mode that ran) and the
shards a store was built from. Two runs over the same videos and config, in process, on local Ray or on a
cluster, resumed or not, give the same digest (docs/reliability.md, "The same bytes from any run").
"""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np

from avaf.shared.store import schema
from avaf.shared.store.h5 import open_h5

DIGESTED_ATTRS = ("format", "schema_version", "kind", "signature", "random_weights", schema.SETS_ATTR)
CHUNK_BYTES = 64 << 20  # bytes read at a time: bounds memory whatever the file's size


def array_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of the file's datasets and of the attributes that describe them (module docstring)."""
    h = hashlib.sha256()
    with open_h5(path) as f:
        for name in DIGESTED_ATTRS:
            value = f.attrs.get(name)
            _update(h, f"attr {name}", "" if value is None else str(value))
        paths: list[str] = []
        f.visititems(lambda p, obj: paths.append(p) if isinstance(obj, h5py.Dataset) else None)
        for p in sorted(paths):
            _dataset(h, f[p])
    return h.hexdigest()


def _dataset(h, ds: h5py.Dataset) -> None:
    _update(h, f"dataset {ds.name}", f"{ds.dtype.str if ds.dtype.kind != 'O' else 'str'} {ds.shape}")
    if ds.shape is None or ds.size == 0:
        return
    per_row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * max(1, ds.dtype.itemsize))
    step = max(1, CHUNK_BYTES // per_row)
    strings = h5py.check_string_dtype(ds.dtype) is not None
    for a in range(0, ds.shape[0], step):
        if strings:
            for s in ds.asstr()[a : a + step].ravel().tolist():
                _update(h, "", s)
        else:
            h.update(np.ascontiguousarray(ds[a : a + step]).tobytes())


def _update(h, label: str, text: str) -> None:
    """Length-prefixed, so no two sequences of strings give the same bytes."""
    for part in (label, text):
        data = part.encode()
        h.update(len(data).to_bytes(8, "little") + data)

"""Atomic file writes: the one helper every writer uses (shards, stores, weights, exports, checkpoints).

    with atomic_path("feats.h5") as tmp:   # write the whole file at tmp
        h5py.File(tmp, "w") ...
    # here feats.h5 is the new file, complete; had the block raised (or the process died), the old one stays

The temporary name sits beside the target (same filesystem, so the rename is atomic) and carries
TMP_MARK, by which readers of a folder of shards skip the leftovers of killed writers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def tmp_name(path: str | os.PathLike) -> Path:
    """A unique temporary name beside `path` (pid and a monotonic clock: concurrent writers never collide)."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{time.monotonic_ns()}")


def commit(tmp: str | os.PathLike, path: str | os.PathLike, durable: bool = True) -> None:
    """Make a fully written temporary file visible under its final name: fsync, rename, fsync the folder.

    `durable=False` skips both fsyncs: the rename still never shows a half-written file, but a power cut
    may lose the write. For the many small files of an export, where ~100k fsyncs would cost more than
    writing them again.
    """
    tmp, path = Path(tmp), Path(path)
    if not durable:
        os.replace(tmp, path)
        return
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


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically (`commit`), on failure it
    is removed."""
    tmp = tmp_name(path)
    try:
        yield tmp
        commit(tmp, path, durable)
    finally:
        tmp.unlink(missing_ok=True)

"""A rollback journal for changing an HDF5 file in place: a killed append leaves the previous file.

HDF5 changes a file in place when rows are appended (object headers, chunk indexes, the superblock), and a
process killed halfway leaves a file HDF5 may not open. `feats.h5` is appended to when a resumed extraction
adds videos (`merge.build_store`), so those writes go through a journal, as SQLite's rollback journal does:

* `JournaledFile` is the file object h5py writes through. Before the first write to any 4 KiB page of the
  file as it was, it copies the page's original bytes into `<file>-journal` and fsyncs the journal; bytes
  past the old end need no copy (undoing them is a truncation).
* `commit` fsyncs the file and deletes the journal: the append is complete.
* `recover` (run by every reader and writer of a store before opening it) finds a journal left by a killed
  append, writes the saved pages back, truncates the file to its old size and deletes the journal: the file
  is again byte for byte the previous store. A journal whose writer is alive (it holds an exclusive lock on
  it) is left alone: the file is being appended to.

Each journal record carries its offset, length and CRC-32, so a record cut short by the kill is ignored:
its page was never overwritten, because the journal is fsynced before the file is touched.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import struct
import zlib
from pathlib import Path

from avaf.shared.errors import StoreError

log = logging.getLogger(__name__)

MAGIC = b"AVAF-JOURNAL-1\n\0"
HEADER = struct.Struct("<Q")  # the file's size before the change
RECORD = struct.Struct("<QQI")  # offset, length, crc32 of the saved bytes
PAGE = 4096


def journal_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + "-journal")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


class JournaledFile(io.RawIOBase):
    """`path` opened for h5py to change in place, every overwritten original page saved first (module doc).

    with JournaledFile(path) as jf:
        with h5py.File(jf, "r+") as f:
            ...                         # resize, append, overwrite
        jf.commit()                     # without it (an exception, a kill) the change is rolled back
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self._fh = open(self.path, "r+b")
        self.old_size = os.fstat(self._fh.fileno()).st_size
        try:
            self._jh = open(self.journal, "xb")  # exclusive: a leftover journal must be recovered first
        except FileExistsError:
            self._fh.close()
            raise StoreError(f"{self.path}: {self.journal.name} exists; recover it first") from None
        fcntl.flock(self._jh.fileno(), fcntl.LOCK_EX)  # tells readers an append is alive
        self._jh.write(MAGIC + HEADER.pack(self.old_size))
        self._sync_journal()
        _fsync_dir(self.journal)
        self._saved: set[int] = set()
        self.saved_bytes = 0
        self.committed = False

    # -- the file object h5py drives
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, buffer) -> int:
        return self._fh.readinto(buffer)

    def truncate(self, size: int | None = None) -> int:
        if size is not None and size < self.old_size:
            self._save(size, self.old_size)
        return self._fh.truncate(size)

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def write(self, data) -> int:
        pos = self._fh.tell()
        n = len(memoryview(data))
        if pos < self.old_size:
            self._save(pos, pos + n)
            self._fh.seek(pos)
        return self._fh.write(data)

    def _save(self, start: int, end: int) -> None:
        """Journal the original bytes of the pages of [start, end) below the old size, not yet saved."""
        pages = [
            p for p in range(start // PAGE, (min(end, self.old_size) - 1) // PAGE + 1) if p not in self._saved
        ]
        if not pages:
            return
        runs, first = [], pages[0]
        for a, b in zip(pages, pages[1:] + [None]):
            if b != a + 1:
                runs.append((first, a))
                first = b
        for a, b in runs:
            offset, length = a * PAGE, min((b + 1) * PAGE, self.old_size) - a * PAGE
            self._fh.seek(offset)
            original = self._fh.read(length)
            self._jh.write(RECORD.pack(offset, length, zlib.crc32(original)) + original)
            self.saved_bytes += length
        self._sync_journal()  # durable before the first byte of these pages changes
        self._saved.update(pages)

    def _sync_journal(self) -> None:
        self._jh.flush()
        os.fsync(self._jh.fileno())

    # -- the end of the change
    def commit(self) -> None:
        """The change is complete: make it durable, then drop the journal (the commit point)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._jh.close()
        self.journal.unlink()
        _fsync_dir(self.journal)
        self.committed = True

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.committed:
                self._fh.flush()
                self._jh.close()  # releases the lock; the rollback below takes it again
                self._fh.close()
                recover(self.path)
            else:
                self._fh.close()
        finally:
            super().close()


def recover(path: str | os.PathLike) -> bool:
    """Roll back an append to `path` that was killed (module doc); True when one was rolled back.

    A journal held by a live appender is left alone and reported as a StoreError.
    """
    path = Path(path)
    journal = journal_path(path)
    try:
        jh = open(journal, "rb")
    except FileNotFoundError:
        return False
    with jh:
        try:
            fcntl.flock(jh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{path}: is being appended to by another process; try again when it ends"
            ) from None
        head = jh.read(len(MAGIC) + HEADER.size)
        if len(head) < len(MAGIC) + HEADER.size or not head.startswith(MAGIC):
            # killed while writing the header: the file was not touched yet
            journal.unlink()
            return False
        (old_size,) = HEADER.unpack(head[len(MAGIC) :])
        records = []
        while True:
            meta = jh.read(RECORD.size)
            if len(meta) < RECORD.size:
                break
            offset, length, crc = RECORD.unpack(meta)
            data = jh.read(length)
            if len(data) < length or zlib.crc32(data) != crc:
                break  # cut short by the kill: this page was never overwritten
            records.append((offset, data))
        try:
            with open(path, "r+b") as fh:
                for offset, data in records:
                    fh.seek(offset)
                    fh.write(data)
                fh.truncate(old_size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            raise StoreError(f"{path}: an interrupted append must be rolled back but cannot be: {e}") from e
        journal.unlink()
        _fsync_dir(journal)
    log.warning("%s: rolled back an append that was interrupted (%d pages restored)", path, len(records))
    return True

"""Safe file writes: the helpers every writer uses (shards, stores, weights, exports, checkpoints, run folders).

    with atomic_path("feats.h5") as tmp:   # write the whole file at tmp
        h5py.File(tmp, "w") ...
    # here feats.h5 is the new file, complete; had the block raised (or the process died), the old one stays

The temporary name sits beside the target (same filesystem, so the rename is atomic) and carries
TMP_MARK, by which readers of a folder of shards skip the leftovers of killed writers.

A write that fails for want of room or permission (a full disk, the file-size limit, a read-only place) is
an `OutputError` naming the target and the cause, whichever library did the writing; HDF5 writers check the
room first (`check_room`). `check_fresh_output` keeps a command from writing over earlier results unasked;
`removing_new_empty_folders` keeps a failed one from leaving empty folders behind.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from avaf.shared.errors import AvafError, OutputError

try:
    import resource
except ImportError:  # not on Windows: no file-size limit to respect there
    resource = None

TMP_MARK = ".tmp-"
#: errno values that mean "this place cannot take the file", as opposed to a bad input
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EFBIG,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENOENT,
}
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)|os error (\d+)|\[Errno (\d+)\]")  # h5py, safetensors, OSError
LOW_SPACE = 1 << 20  # bytes: a write that failed with less than this free failed for want of space


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
    _default_mode(tmp)
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


def _default_mode(path: Path) -> None:
    """Give a written file the mode `open()` gives a new one (0666 less the umask): some writers create
    their file private (safetensors: 0600), which would make checkpoints and weights the only outputs other
    users of a shared folder cannot read."""
    with suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o666 & ~_umask():
            os.chmod(path, 0o666 & ~_umask())


@functools.cache
def _umask() -> int:
    """This process's umask, read once: from /proc where it is (os.umask can only be read by setting it,
    which would race with other threads creating files), else through os.umask."""
    with suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically (`commit`), on failure it
    is removed. A failure for want of room or permission becomes an OutputError naming `path` and the cause."""
    tmp = tmp_name(path)
    try:
        yield tmp
        commit(tmp, path, durable)
    except Exception as e:
        cause = write_failure(e, tmp)
        if cause is None:
            raise
        raise OutputError(f"{path}: cannot write: {cause}") from e
    finally:
        with suppress(OSError):  # a place we cannot write may not let us clean up either
            tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Write a whole text file atomically (`atomic_path`)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(value, indent: int | None = None) -> str:
    """`value` as JSON that strict readers accept: a NaN or infinite float (the accuracy of a question type
    without questions) becomes null, never the NaN that Python's json writes by default."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log such as metrics.jsonl. A write that fails names the file; it may leave a partial
    last line, which its readers skip."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        cause = write_failure(e, Path(path))
        if cause is None:
            raise
        raise OutputError(f"{path}: cannot write: {cause}") from e


def write_failure(e: BaseException, written: Path) -> str | None:
    """The cause of a failed write of `written`, as the OS says it ('No space left on device'), or None
    when `e` is some other error. Libraries report it each their own way: an OSError's errno, an errno in
    the message (h5py, safetensors), or nothing at all (torch.save, numpy.save): then the place is looked at."""
    if isinstance(e, AvafError):
        return None
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        found = _ERRNO_IN_TEXT.search(str(e))
        code = int(next(g for g in found.groups() if g)) if found else None
    if code in WRITE_ERRNOS:
        return _cause(code, written)
    if code is not None or not isinstance(e, OSError | RuntimeError):
        return None
    return _place_problem(written)


def _place_problem(path: Path) -> str | None:
    """Why `path` could not be written, from the place itself: the file reached the size limit, the
    filesystem is read-only or (nearly) full; None if none of these."""
    limit = _size_limit()
    with suppress(OSError):
        if limit is not None and path.stat().st_size >= limit:
            return _cause(errno.EFBIG, path)
    try:
        st = os.statvfs(_existing(path.parent))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return _cause(errno.EROFS, path)
    if st.f_bavail * st.f_frsize < LOW_SPACE:
        return _cause(errno.ENOSPC, path)
    return None


def _cause(code: int, path: Path) -> str:
    """os.strerror(code), and what the user can act on for the two that depend on this machine."""
    text = os.strerror(code)
    if code == errno.EFBIG and _size_limit() is not None:
        return f"{text} (this process may write files of at most {_size(_size_limit())}: ulimit -f)"
    if code == errno.ENOSPC:
        with suppress(OSError):
            st = os.statvfs(_existing(path.parent))
            return f"{text} ({_size(st.f_bavail * st.f_frsize)} free)"
    return text


def check_room(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse, before writing, a file of about `nbytes` that cannot fit: over this process's file-size
    limit, or over the free space where it goes. HDF5 writers call it first because HDF5 cannot end a
    write that failed midway (h5py 3.16 with HDF5 2.0 crashes while closing such a file); every other
    writer relies on `atomic_path` turning the failure into an OutputError."""
    path = Path(path)
    limit = _size_limit()
    if limit is not None and nbytes > limit:
        raise OutputError(f"{path}: cannot write about {_size(nbytes)}: {_cause(errno.EFBIG, path)}")
    st = os.statvfs(_existing(path.parent))
    if nbytes > st.f_bavail * st.f_frsize:
        raise OutputError(f"{path}: cannot write about {_size(nbytes)}: {_cause(errno.ENOSPC, path)}")


def _size_limit() -> int | None:
    """This process's file-size limit in bytes (RLIMIT_FSIZE, `ulimit -f`), or None when there is none."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (the filesystem a new file there would land on)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def check_fresh_output(
    path: str | os.PathLike, what: str, owned: Iterable[str], overwrite: bool, instead: str
) -> Path:
    """Make sure that writing `what` into the folder `path` loses nothing; returns the folder, created.

    A folder that already holds any of the `owned` names (what the command writes, and their temporary
    leftovers; an empty subfolder does not count) is refused with an OutputError that names them, then
    `instead` (what to do: "choose a new --out") and --overwrite. With `overwrite`, exactly those entries
    are removed first, so no stale file of the old run survives beside the new one; nothing else in the
    folder is touched (`--out ~ --overwrite` cannot empty a home folder).
    """
    path, owned = Path(path), set(owned)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; {what} needs a folder here")
    found = sorted(p for p in path.iterdir() if _is_owned(p, owned)) if path.is_dir() else []
    if found and not overwrite:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found[:4])
        more = f" and {len(found) - 4} more" if len(found) > 4 else ""
        raise OutputError(
            f"{path}: already holds {what} ({names}{more}); {instead}, or pass --overwrite to replace it"
        )
    for p in found:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def removing_new_empty_folders(*folders: str | os.PathLike) -> Iterator[None]:
    """Within the block `folders` (and their missing parents) may be created; should it raise, those of them
    that did not exist on entry and are still empty are removed, deepest first, so a failed run leaves no
    empty output folders behind. A folder that existed before, or that holds anything, always stays."""
    new: set[Path] = set()
    for folder in folders:
        path = Path(folder).absolute()
        while not path.exists() and path != path.parent:
            new.add(path)
            path = path.parent
    try:
        yield
    except BaseException:
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
            with suppress(OSError):  # not there, or not empty: it stays
                path.rmdir()
        raise


def _is_owned(p: Path, owned: set[str]) -> bool:
    """`p` is one of the `owned` outputs (or a leftover temporary of one) and holds something."""
    if p.name.split(TMP_MARK)[0] not in owned:
        return False
    return not p.is_dir() or p.is_symlink() or any(p.iterdir())

"""Where Ray runs, for both stages: the extraction's Ray engine and the training sweep join Ray here.

DESIGN.md §3 "Parallelism": no address means a new local Ray instance on this machine (the embedded default,
never a cluster that happens to run here); `--address` or `RAY_ADDRESS` means that cluster. Ray is imported
only when a session starts, so reading this module costs nothing.

Quiet by default (docs/reliability.md, "Output"): a command prints only avaf's own lines; Ray's stay in its log folder
(`/tmp/ray/session_latest/logs`). What Ray would print in this process, and how it is kept off the console:

* its Python loggers ("ray", e.g. the token-authentication notice): `ray.init(logging_level=QUIET)`;
* errors the cluster publishes to the driver (a task retried, an actor that died at start with its
  traceback): printed by Ray's listener thread unless `ray._private.worker._worker_logs_enabled` is off,
  the switch Ray's own debugger uses (`ray.util.rpdb`);
* its workers' output: `log_to_driver=False`;
* its C++ core's ERROR lines (`core_worker.cc ... max_restarts`), which the driver's core worker writes to
  stderr besides its log file, whatever the settings: `CoreLogFilter` takes them out of this process's stderr.

With -v (a command's verbosity of 1 or more) all of it reaches the console as Ray prints it.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable

import click

from avaf.shared.cli import verbosity

QUIET = logging.CRITICAL + 1  # above every level: a logger or handler set to it prints nothing

# "[2026-12-07 11:15:34,313 E 13931 13931] core_worker.cc:2465: ..." (spdlog, Ray >= 2.40); F(atal) passes
_CORE_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWE] \d+ \d+\] [^\n]*\n")
_CORE_HEAD = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWE] \d+ \d+\] ")
_HEAD_BYTES = frozenset(b"[0123456789-:, DIWE]")


def ray_address(address: str | None) -> str | None:
    """The cluster to join (`address`, else RAY_ADDRESS); None: a local instance on this machine."""
    return address or os.environ.get("RAY_ADDRESS") or None


def ray_verbose() -> bool:
    """Whether Ray's own lines reach the console: only when the running command was given -v."""
    return verbosity() > 0


def init_ray(address: str | None, verbose: bool | None = None) -> bool:
    """Join the cluster at `address` (`ray_address`), else start a local Ray instance; nothing if Ray is
    already initialised (a caller's own session). True if this call started it: the caller may end it.
    Quiet unless `verbose` (default: `ray_verbose`); inside a command, its stderr loses Ray's C++ lines
    until the command ends."""
    import ray

    if ray.is_initialized():
        return False
    loud = ray_verbose() if verbose is None else verbose
    ray._private.worker._worker_logs_enabled = loud
    ctx = click.get_current_context(silent=True)
    if not loud and ctx is not None and os.name == "posix":  # a command: its stderr, while it runs
        ctx.call_on_close(CoreLogFilter().close)

    quiet = {"log_to_driver": loud, "logging_level": logging.INFO if loud else QUIET}
    address = ray_address(address)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", include_dashboard=False, **quiet)
    return True


HEAD_GRACE_S = 10.0  # seconds without an answer from the head before a run counts it lost


class HeadWatch:
    """Whether the head of this process's Ray session still answers: a thread opens a TCP connection to
    its GCS every `period` seconds, and after `grace` seconds without one calls `lost(seconds)` once.

    Ray cannot replace a head without external GCS storage: its workers and this driver wait for it, the
    driver up to a minute before Ray's core aborts it with a fatal log. The watch lets the command end
    sooner, with one line of its own (docs/reliability.md, "Clusters")."""

    def __init__(
        self,
        lost: Callable[[float], None],
        grace: float = HEAD_GRACE_S,
        period: float = 1.0,
        address: str | None = None,
    ):
        if address is None:  # the GCS of this process's Ray session
            import ray

            address = ray.get_runtime_context().gcs_address
        host, port = address.rsplit(":", 1)
        self._where, self._lost, self._grace, self._period = (host, int(port)), lost, grace, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="avaf-head-watch", daemon=True)
        self._thread.start()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(self._where, timeout=self._period):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._period):
            if self._answers():
                last = time.monotonic()
            elif time.monotonic() - last >= self._grace:
                self._lost(time.monotonic() - last)
                return

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> HeadWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def end_with_line(line: str, code: int) -> None:
    """Print `line` on the console's stderr and end this process now, from any thread, without waiting for
    Ray (whose calls may never return once its head is gone): what is on disk stays as it is."""
    real = _FILTER.real if _FILTER is not None else 2
    sys.stdout.flush()
    os.write(real, ("\n" + line + "\n").encode())  # a progress bar may have left its line open
    os._exit(code)


def quiet_console(logger: str) -> None:
    """Silence the console handlers of a Ray library's `logger` (Ray Data's "ray.data"): its files under
    Ray's log folder keep every record."""
    for handler in logging.getLogger(logger).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(QUIET)


_FILTER: CoreLogFilter | None = None  # the filter on this process's stderr, while a command runs


class CoreLogFilter:
    """This process's stderr (fd 2) through a pipe: lines of Ray's C++ core are dropped (they are in its log
    file, python-core-driver-*.log), every other byte goes on to the real stderr as written."""

    def __init__(self):
        global _FILTER
        sys.stderr.flush()
        self._real = os.dup(2)
        self.real = self._real
        _FILTER = self
        read, self._write = os.pipe()
        os.dup2(self._write, 2)
        self._thread = threading.Thread(target=self._pump, args=(read,), name="avaf-stderr", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """The real stderr back on fd 2, and everything written before it forwarded."""
        global _FILTER
        _FILTER = None
        sys.stderr.flush()
        os.dup2(self._real, 2)
        os.close(self._write)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # a child still holding the pipe: leave the thread its fd
            os.close(self._real)

    def _pump(self, read: int) -> None:
        held = b""
        while True:
            ready = select.select([read], [], [], 0.05 if held else None)[0]
            chunk = os.read(read, 1 << 16) if ready else b""
            if ready and not chunk:
                break
            held = self._forward(held + chunk, wait=bool(ready) or bool(_CORE_HEAD.match(held)))
        self._forward(b"" if _CORE_HEAD.match(held) else held, wait=False)
        os.close(read)

    def _forward(self, data: bytes, wait: bool) -> bytes:
        """Writes `data` without Ray's lines; returns the tail held back because it may be one (`wait`:
        more bytes are on their way, or a Ray line has begun and its end has not come yet)."""
        data = _CORE_LINE.sub(b"", data)
        cut = len(data)
        if wait:
            begun = [m.start() for m in _CORE_HEAD.finditer(data)]  # complete ones are gone: no newline after
            start = data.rfind(b"[")
            if begun:
                cut = begun[-1]
            elif start >= 0 and len(data) - start < 64 and set(data[start:]) <= _HEAD_BYTES:
                cut = start  # "[2026-12-07 11:1": perhaps the head of one
        out = memoryview(data)[:cut]
        try:
            while out:
                out = out[os.write(self._real, out) :]
        except OSError:  # the real stderr is gone: nowhere to show it; keep draining so writers never block
            pass
        return data[cut:]

"""Decoding isolated in a child process, with a timeout (DESIGN.md §3 "Decoding"), and the Ray decode task.

A hung or crashing decoder (decord deadlocks holding the GIL; FFmpeg can segfault on a broken file) must cost
one video, never the caller. ``IsolatedDecoder`` keeps one "spawn" child (never fork: the caller may hold
threads) that decodes one video at a time and is reused, so a video costs the pickling of its result, not a
Python start and a PyAV import. A timeout kills the child ("timed out after N s"), a death names the signal,
and the next call starts a fresh child. The child reports which of ``backends.attempts(backend)`` it is
running, so a crash or timeout is retried with the backends not yet tried, in a fresh child. The child is
also replaced every ``max_tasks`` videos, which bounds decord's memory growth. ``decode_isolated`` shares
one decoder per process; ``decode_on_node`` is a Ray decode task (it imports PyAV, not torch).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avaf.extract.decode import backends
from avaf.extract.decode.sampling import DecodedVideo, DecodeError
from avaf.extract.decode.views import Views, as_views

logger = logging.getLogger(__name__)


def _serve(conn, initializer: Callable | None, initargs: tuple) -> None:
    """Child: decode the jobs received on ``conn`` until told to stop."""
    if initializer is not None:
        initializer(*initargs)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        path, backend, order, image_size, threads = job
        report = lambda name: conn.send(("attempt", name))  # the parent then knows what was running
        try:
            start = time.process_time()  # this process, FFmpeg's threads included
            result = backends.decode_video(path, backend, image_size, threads, order, report)
            if not isinstance(result.frames, np.ndarray):  # torchcodec-cuda: a CUDA tensor cannot cross
                result.views = {v: a.cpu().numpy() for v, a in result.views.items()}
                result.frames = next(iter(result.views.values()))
            result.cpu["decode"] = time.process_time() - start
            conn.send(("ok", result))
        except DecodeError as err:
            conn.send(("error", err))
        except Exception as err:  # any other failure is this video's, never the worker's
            conn.send(("error", DecodeError(path, f"decoder raised {type(err).__name__}: {err}")))


class _ChildLost(Exception):
    """The child timed out or died while running ``backend`` (None: before naming one)."""

    def __init__(self, problem: str, backend: str | None) -> None:
        super().__init__(problem)
        self.problem, self.backend = problem, backend


def describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class IsolatedDecoder:
    """A reusable decode child process, replaced after a crash, a timeout or ``max_tasks`` videos."""

    def __init__(
        self,
        max_tasks: int = 200,
        start_timeout_s: float = 120.0,
        initializer: Callable | None = None,
        initargs: tuple = (),
    ) -> None:
        self.max_tasks = max_tasks
        self.start_timeout_s = start_timeout_s
        self.initializer, self.initargs = initializer, initargs  # run in each child (logging setup, tests)
        self._lock = threading.Lock()
        self._proc = self._conn = None
        self._owner = os.getpid()
        self._tasks = 0

    @property
    def pid(self) -> int | None:
        """The current child's process id (None when no child is running)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        if self._proc is not None and self._owner != os.getpid():  # we were forked: that child is not ours
            self._proc = self._conn = None
        if self._proc is not None and not self._proc.is_alive():  # died between two videos
            logger.warning(
                "the decode worker died while idle (%s); starting another", describe_exit(self._reap())
            )
        if self._proc is not None:
            return
        ctx = mp.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        proc = ctx.Process(
            target=_serve, args=(child_conn, self.initializer, self.initargs), daemon=True, name="avaf-decode"
        )
        proc.start()
        child_conn.close()
        self._proc, self._conn, self._owner, self._tasks = proc, conn, os.getpid(), 0
        try:
            if not conn.poll(self.start_timeout_s):
                raise RuntimeError(f"the decode worker did not start within {self.start_timeout_s:g} s")
            conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(
                f"the decode worker died while starting ({describe_exit(self._reap())})"
            ) from None
        except RuntimeError:
            self._kill()
            raise

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return None
        proc.join(5)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
        return proc.exitcode

    def _kill(self) -> None:
        if self._proc is not None and self._proc.exitcode is None:
            self._proc.kill()
        self._reap()

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        with self._lock:
            if self._proc is not None and self._owner == os.getpid():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._reap()
            self._proc = self._conn = None

    def __enter__(self) -> IsolatedDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, path: str, timeout_s: float, backend: str, order: tuple, *options) -> DecodedVideo:
        """One job in the child; raises _ChildLost on a timeout or a death."""
        self._start()
        try:
            self._conn.send((path, backend, order, *options))
            return self._wait(timeout_s)
        except (_ChildLost, DecodeError):
            raise
        except BaseException:  # e.g. KeyboardInterrupt: the child may still answer, so it cannot be reused
            self._kill()
            raise

    def _wait(self, timeout_s: float) -> DecodedVideo:
        deadline, running = time.monotonic() + timeout_s, None
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self._conn.poll(left):
                    self._kill()
                    raise _ChildLost(f"timed out after {timeout_s:g} s", running)
                start = time.thread_time()  # reading and unpickling: the transfer's cost on this side
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                raise _ChildLost(f"decoder crashed ({describe_exit(self._reap())})", running) from None
            if kind == "attempt":
                running = value
                continue
            self._tasks += 1
            if self._tasks >= self.max_tasks:  # a fresh child now and then bounds decoder memory growth
                self._conn.send(None)
                self._reap()
            if kind == "error":
                raise value
            value.cpu["receive"] = time.thread_time() - start
            return value

    def decode(
        self,
        path: str | Path,
        timeout_s: float,
        backend: str = "auto",
        image_size: int | Views = 224,
        threads: int = 0,
    ) -> DecodedVideo:
        """``decode_video(path, backend, image_size, threads)`` in the child, within ``timeout_s`` per attempt;
        frames come back as NumPy arrays (torchcodec-cuda's too)."""
        path, order = str(path), backends.attempts(backend)
        lost: list[str] = []
        with self._lock:
            while True:
                try:
                    result = self._run(path, timeout_s, backend, order, image_size, threads)
                except _ChildLost as err:
                    lost.append(f"{err.backend or backend}: {err.problem}")
                    tried = order.index(err.backend) + 1 if err.backend in order else len(order)
                    order = order[tried:]
                    if not order:
                        raise DecodeError(path, "; ".join(lost)) from None
                    logger.warning("%s: %s; retrying with %s in a fresh process", path, lost[-1], order[0])
                    continue
                if lost:
                    result.streams["failed_attempts"] = lost + result.streams.get("failed_attempts", [])
                return result


_shared: IsolatedDecoder | None = None
_shared_lock = threading.Lock()


def decode_isolated(path: str | Path, timeout_s: float, **kwargs) -> DecodedVideo:
    """``decode_video`` in this process's shared child process, with a timeout (see the module docstring)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = IsolatedDecoder()
            atexit.register(_shared.close)
    return _shared.decode(path, timeout_s, **kwargs)


def frame_views(cfg_decode: dict, packs: str | None = None) -> int | Views:
    """What to make of each frame: the views of ``packs`` (a comma list; None: every pack) when
    ``cfg_decode["views"]`` maps packs to their views (extract/packs.py), else ``cfg_decode["image_size"]``."""
    by_pack = cfg_decode.get("views")
    if not by_pack:
        return cfg_decode["image_size"]
    wanted = packs.split(",") if packs else list(by_pack)
    return tuple(sorted({v for p in wanted for v in as_views(by_pack[p])}))


def decode_row(
    video_id: str, path: str, cfg_decode: dict, isolated: bool = True, packs: str | None = None
) -> dict:
    """One video decoded for the pipeline; a failure becomes an error string on the row, never an exception.

    ``cfg_decode``: the decode config as a dict, with ``image_size`` or the views of each pack (``frame_views``;
    ``packs``: those this video is decoded for, a comma list). ``isolated``: in this process's child with a
    timeout (the CPU decoders); else in this process (a GPU decoder: its frames stay on this process's GPU).
    The row keeps ``packs`` and the decode's wall time (``decode_s``).
    """
    backend, threads = cfg_decode["backend"], cfg_decode["threads"]
    size = frame_views(cfg_decode, packs)
    row = {"video_id": video_id, "path": path, "decoded": None, "error": "", "packs": packs}
    start = time.perf_counter()
    try:
        if isolated:
            row["decoded"] = decode_isolated(
                path, cfg_decode["timeout_s"], backend=backend, image_size=size, threads=threads
            )
        else:
            row["decoded"] = backends.decode_video(path, backend, size, threads)
    except DecodeError as e:
        row["error"] = str(e)
    except Exception as e:  # a decoder bug must cost one video, not the job: record it with its type
        logger.exception("unexpected error decoding %s", path)
        row["error"] = f"{type(e).__name__}: {e}"
    return row | {"decode_s": time.perf_counter() - start}


def decode_on_node(row: dict, cfg_decode: dict) -> dict:
    """A Ray decode task: ``decode_row`` and the node it ran on. It lives here, not with the Ray engine, so a
    decode worker imports PyAV and not torch (docs/extraction.md, "Decoders": a tenth of the start-up)."""
    return decode_row(row["video_id"], row["path"], cfg_decode, packs=row.get("packs")) | {
        "decode_node": node_id()
    }


def node_id() -> str:
    """The Ray node this task or actor runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()

"""The head watch (shared/ray_session.py, `HeadWatch`) that ends a run whose Ray head is lost, on a real TCP
listener standing in for the head's GCS port; the whole path on a simulated cluster: tests/test_cluster.py
(slow, the head's processes killed mid-run)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time

from avaf.shared.ray_session import HeadWatch


def test_the_watch_calls_lost_once_after_grace_seconds_without_an_answer():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def accept():
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    calls: list[float] = []
    with HeadWatch(calls.append, grace=0.5, period=0.05, address=f"127.0.0.1:{port}"):
        time.sleep(1.0)
        assert calls == []  # it answers: nothing to say, however long
        server.close()
        closed = time.monotonic()
        while not calls and time.monotonic() - closed < 30:
            time.sleep(0.01)
        time.sleep(0.3)
    assert len(calls) == 1 and calls[0] >= 0.5  # once, with the seconds it went unanswered


def test_end_with_line_reaches_the_console_through_the_stderr_filter_and_ends_the_process():
    script = textwrap.dedent(
        """
        import threading, time
        from avaf.shared.ray_session import CoreLogFilter, end_with_line
        f = CoreLogFilter()
        print("avaf's own line", flush=True)
        threading.Thread(target=end_with_line, args=("avaf-extract: lost the head", 1)).start()
        time.sleep(30)
        print("never")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stdout == "avaf's own line\n" and res.stderr == "\navaf-extract: lost the head\n"

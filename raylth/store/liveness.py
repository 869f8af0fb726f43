"""Is the process that left a record still running? One record and one rule
for every such question: a run's driver, a search's driver, the owner of
work in progress (a partial artifact).

A record says who (host, pid, the process's start time) and when it last
beat (``heartbeat``); ``Heartbeat`` renews it every HEARTBEAT_S while a
block runs. On this host a process is alive when its pid runs and started
when the record says (a recycled pid is another process); on another host
when it beat within STALE_AFTER_S.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Callable

HEARTBEAT_S = 30
STALE_AFTER_S = 3 * HEARTBEAT_S  # a process on another host silent this long is gone


def start_time(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, or None when that cannot be told."""
    try:
        import psutil

        return psutil.Process(pid or os.getpid()).create_time()
    except Exception:  # psutil missing, or no such process
        return None


def record(**extra) -> dict:
    """This process's liveness record, beating now."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": start_time(), "heartbeat": time.time()} | extra


def last_beat(rec: dict) -> float:
    """When a record last beat (records written before it had a heartbeat: their ``time``)."""
    return float(rec.get("heartbeat", rec.get("time", 0)) or 0)


def alive(rec: dict | None, now: float | None = None) -> bool:
    """The one rule (module doc)."""
    if not rec:
        return False
    host, pid = rec.get("host"), rec.get("pid")
    if host == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it runs
        started = rec.get("started")
        now_started = start_time(int(pid))
        return started is None or now_started is None or abs(now_started - float(started)) < 1.0
    return (time.time() if now is None else now) - last_beat(rec) < STALE_AFTER_S


@contextlib.contextmanager
def heartbeat(write: Callable[[dict], None], every: float = HEARTBEAT_S, **extra):
    """Write this process's record now and every ``every`` seconds while the
    block runs (a write that fails is skipped: a lost beat is no crash)."""
    stop = threading.Event()

    def beat() -> None:
        with contextlib.suppress(Exception):
            write(record(**extra))

    def loop() -> None:
        while not stop.wait(every):
            beat()

    beat()
    thread = threading.Thread(target=loop, name="raylth-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)

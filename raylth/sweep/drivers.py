"""Which processes are running a sweep: each run records its driver (host,
pid, a heartbeat every 30 s) in ``sweeps/.drivers/<name>/`` and removes it
when it ends, so ``raylth status`` can tell a sweep still running from one
whose driver died (interrupted)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

from raylth.errors import StoreError
from raylth.store import Store

HEARTBEAT_S = 30
STALE_AFTER_S = 3 * HEARTBEAT_S  # a driver on another host silent this long is gone


def _folder(name: str) -> str:
    return f"sweeps/.drivers/{name}"


def process_alive(host: str | None, pid: int | None, touched: float, within_s: float) -> bool:
    """A process on this host: alive if its pid is; elsewhere: heard from within ``within_s``."""
    if host == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - touched < within_s


@contextlib.contextmanager
def registered(store: Store, name: str):
    """Record this process as a driver of sweep ``name`` while the block runs."""
    host, pid = socket.gethostname(), os.getpid()
    rel = f"{_folder(name)}/{host}-{pid}.json"
    started = time.time()

    def beat() -> None:
        record = {"host": host, "pid": pid, "started": started, "heartbeat": time.time()}
        with contextlib.suppress(OSError, StoreError):  # a lost heartbeat (full disk, network) is not worth a crash
            store.write_file(rel, json.dumps(record).encode())

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(HEARTBEAT_S):
            beat()

    beat()
    thread = threading.Thread(target=loop, name="raylth-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(OSError, StoreError):
            store.delete_file(rel)


def drivers(store: Store, name: str) -> tuple[list[dict], list[dict]]:
    """(alive, gone): the recorded drivers of sweep ``name``."""
    alive, gone = [], []
    for file in store.file_names(_folder(name), ".json"):
        try:
            record = json.loads(store.read_file(f"{_folder(name)}/{file}") or b"null")
            host, pid, beat = record["host"], record["pid"], float(record["heartbeat"])
        except (ValueError, TypeError, KeyError):
            continue
        (alive if process_alive(host, pid, beat, STALE_AFTER_S) else gone).append(record)
    return alive, gone

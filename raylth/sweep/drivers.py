"""Which processes are running a sweep: each run records its driver (its
liveness record, raylth.store.liveness, renewed every 30 s) in
``sweeps/.drivers/<name>/`` and removes it when it ends, so ``raylth status``
can tell a sweep still running from one whose driver died (interrupted)."""

from __future__ import annotations

import contextlib
import json
import os
import socket

from raylth.errors import StoreError
from raylth.store import Store, liveness


def _folder(name: str) -> str:
    return f"sweeps/.drivers/{name}"


@contextlib.contextmanager
def registered(store: Store, name: str):
    """Record this process as a driver of sweep ``name`` while the block runs."""
    rel = f"{_folder(name)}/{socket.gethostname()}-{os.getpid()}.json"
    with liveness.heartbeat(lambda rec: store.write_file(rel, json.dumps(rec).encode())):
        try:
            yield
        finally:
            with contextlib.suppress(OSError, StoreError):
                store.delete_file(rel)


def drivers(store: Store, name: str) -> tuple[list[dict], list[dict]]:
    """(alive, gone): the recorded drivers of sweep ``name``."""
    alive, gone = [], []
    for file in store.file_names(_folder(name), ".json"):
        try:
            record = json.loads(store.read_file(f"{_folder(name)}/{file}") or b"null")
            record["host"], record["pid"]
        except (ValueError, TypeError, KeyError):
            continue
        (alive if liveness.alive(record) else gone).append(record)
    return alive, gone

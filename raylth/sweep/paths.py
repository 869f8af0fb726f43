"""Where a run's things go: the results store, the data, Ray's own run state;
and the one line a failure is reported with."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from raylth.errors import StoreError
from raylth.store.remote import is_uri


def resolve_paths(sweep, storage=None, data_root=None) -> tuple[str | Path, Path]:
    """The storage root (a local path, or a URI such as s3://bucket/path, kept
    as given) and the data root of a sweep or search (its ``storage`` and
    ``data_root``, unless given here)."""
    return resolve_storage(storage or sweep.storage), resolve_data_root(data_root, sweep.data_root)


def resolve_storage(storage) -> str | Path:
    storage = str(storage or "raylth-results")
    return storage if is_uri(storage) else Path(storage).expanduser().resolve()


def resolve_data_root(given=None, in_file=None) -> Path:
    """--data-root, else $RAYLTH_DATA, else the file's data_root, else ./data."""
    return Path(given or os.environ.get("RAYLTH_DATA") or in_file or "data").expanduser().resolve()


def check_folder_writable(path: Path, what: str, flag: str) -> None:
    """``path`` is (or can be made) a folder this process can write in; else
    one line naming it, the cause and ``flag`` to choose another."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{what} {path}: is a file, not a folder; give a folder with {flag}")
    probe = path / f".raylth-write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise StoreError(f"{what} {path}: not writable ({err.strerror or err}); choose a writable folder "
                         f"with {flag}") from None


def check_writable(store) -> None:
    """A run's storage: its local folder (for a bucket: the node's cache)
    writable, and a bucket accepting a small object."""
    check_folder_writable(store.root, "storage" if store.remote is None else "storage cache", "--storage")
    if store.remote is not None:
        rel = f".raylth-write-test-{uuid.uuid4().hex[:8]}"
        try:
            store.remote.write(rel, b"")
            store.remote.delete(rel)
        except (OSError, StoreError) as err:
            raise StoreError(f"storage {store.location}: refuses writes ({err}); check the bucket's "
                             "permissions or choose another with --storage") from None


def tune_storage(store, *parts: str) -> dict:
    """RunConfig arguments that keep Ray's own run state beside the store's (a ``Store``)."""
    if store.remote is None:
        return {"storage_path": str(store.root.joinpath(".ray", *parts))}
    return {"storage_path": "/".join([store.remote.base, ".ray", *parts]), "storage_filesystem": store.remote.fs}


def root_cause_line(error: BaseException) -> str:
    """The root cause's message (Ray wraps a trial's exception in its own)."""
    cause = error
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"

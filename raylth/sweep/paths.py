"""Where a run's things go: the results store and the data; and the one line
a failure is reported with."""

from __future__ import annotations

import os
from pathlib import Path

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


def root_cause_line(error: BaseException) -> str:
    """The root cause's message (Ray wraps a trial's exception in its own)."""
    cause = error
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"

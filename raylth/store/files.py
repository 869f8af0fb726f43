"""Writing files safely: atomic replacement, and the check that a folder takes writes.

Every single-file write of raylth goes through ``_replacing``: a temporary
file beside the target, flushed to disk, renamed over it; a write that fails
midway (an exception, a full disk) leaves the target as it was and no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path

import torch

from raylth.errors import StoreError

SPEC_FILE, METRICS_FILE, MANIFEST_FILE, RESUME_FILE, OWNER_FILE = (
    "spec.yaml", "metrics.json", "manifest.json", "resume.pt", "owner.json")


@contextlib.contextmanager
def _replacing(path: Path):
    """Yield a temporary path beside ``path``; what is written there replaces
    ``path`` in one rename once complete and on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    with _replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)


def atomic_torch_save(obj, path: Path) -> None:
    # serialized in memory first: torch.save into a full disk fails with an opaque
    # RuntimeError from its zip writer, a plain write with OSError ENOSPC
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def check_folder_writable(path: Path, what: str, flag: str, error: type[Exception] = StoreError) -> None:
    """``path`` is (or can be made) a folder this process can write in; else
    one line (``error``) naming it, the cause and ``flag`` to choose another."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path}: is a file, not a folder; give a folder with {flag}")
    for above in path.parents:  # the nearest existing folder above must be one
        if above.exists():
            if not above.is_dir():
                raise error(f"{what} {path}: {above} is a file, not a folder; choose another place with {flag}")
            break
    probe = path / f".raylth-write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise error(f"{what} {path}: not writable ({err.strerror or err}); choose a writable folder "
                    f"with {flag}") from None

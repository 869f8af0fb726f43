"""Content-addressed artifacts under a storage root.

    ROOT/<kind>_<hash>/      a finished artifact: spec.yaml, metrics.json,
                             manifest.json, weights/*.pt, mask.pt
    ROOT/.partial/<id>/      work in progress: the same files as they are
                             written, plus resume.pt (the latest epoch state)
    ROOT/.broken/<id>-<t>/   unreadable artifacts moved aside
    ROOT/sweeps/<name>.yaml  the sweeps run against this root

A stage writes into its partial folder and, once everything is there,
renames it into place in one step, so a finished-looking folder is never
half-written. A finished artifact is reused, never recomputed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
import warnings
from pathlib import Path

import torch
import yaml

from raylth.errors import StoreError
from raylth.specs import Spec

SPEC_FILE, METRICS_FILE, MANIFEST_FILE, RESUME_FILE, OWNER_FILE = (
    "spec.yaml", "metrics.json", "manifest.json", "resume.pt", "owner.json")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Artifact:
    """A finished, readable artifact folder."""

    def __init__(self, path: Path, record: dict, metrics: dict):
        self.path, self.record, self.metrics = path, record, metrics

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def kind(self) -> str:
        return self.record["kind"]

    @property
    def spec(self) -> dict:
        return self.record["spec"]

    def has_file(self, name: str) -> bool:
        return (self.path / name).exists()

    def load(self, name: str):
        """Load a tensor file of this artifact; StoreError if unreadable."""
        try:
            return torch.load(self.path / name, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt file
            raise StoreError(f"{self.path / name}: unreadable ({type(err).__name__}: {err})") from err

    def weights(self, name: str = "final") -> dict[str, torch.Tensor]:
        return self.load(f"weights/{name}.pt")

    def mask(self):
        return self.load("mask.pt") if self.has_file("mask.pt") else None


class Partial:
    """The in-progress folder of one artifact."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, name: str, obj) -> None:
        atomic_torch_save(obj, self.path / name)
        self.touch()

    def load(self, name: str):
        return torch.load(self.path / name, map_location="cpu", weights_only=False)

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def touch(self) -> None:
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        atomic_write_bytes(self.path / OWNER_FILE, json.dumps(owner).encode())


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    # -- reading ---------------------------------------------------------------
    def get(self, artifact_id: str) -> Artifact | None:
        """The finished artifact, or None. An unreadable one is reported,
        moved aside and treated as missing, so it is recomputed."""
        path = self.path(artifact_id)
        if not path.is_dir():
            return None
        try:
            return self._read(path)
        except StoreError as err:
            self.quarantine(artifact_id, str(err))
            return None

    def _read(self, path: Path) -> Artifact:
        try:
            record = yaml.safe_load((path / SPEC_FILE).read_text())
            metrics = json.loads((path / METRICS_FILE).read_text())
            manifest = json.loads((path / MANIFEST_FILE).read_text())
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise StoreError(f"{path}: unreadable artifact ({type(err).__name__}: {err})") from err
        if not isinstance(record, dict) or record.get("id") != path.name:
            raise StoreError(f"{path}: {SPEC_FILE} does not describe this artifact")
        for name, size in manifest.items():
            file = path / name
            if not file.is_file() or file.stat().st_size != size:
                raise StoreError(f"{path}: {name} is missing or truncated")
        return Artifact(path, record, metrics)

    def has(self, artifact_id: str) -> bool:
        return self.path(artifact_id).is_dir()

    def artifacts(self):
        """Every finished, readable artifact (unreadable ones are skipped with a warning)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and "_" in path.name and path.name != "sweeps":
                try:
                    yield self._read(path)
                except StoreError as err:
                    warnings.warn(str(err), stacklevel=2)

    def partial_state(self, artifact_id: str) -> dict | None:
        """Owner record of an artifact being computed, or None."""
        owner = self.root / ".partial" / artifact_id / OWNER_FILE
        try:
            return json.loads(owner.read_text())
        except (OSError, ValueError):
            return None

    # -- writing ---------------------------------------------------------------
    def partial(self, artifact_id: str) -> Partial:
        path = self.root / ".partial" / artifact_id
        path.mkdir(parents=True, exist_ok=True)
        return Partial(path)

    @contextlib.contextmanager
    def lock(self, artifact_id: str):
        """Exclusive right to compute one artifact, across processes on every
        node that shares the root (an OS file lock: freed if the holder dies)."""
        path = self.root / ".partial" / f"{artifact_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def finish(self, spec: Spec, partial: Partial, metrics: dict) -> Artifact:
        """Write spec and metrics into the partial folder and move it into place."""
        record = {"id": spec.id, "kind": spec.kind, "canonical": spec.canonical(),
                  "spec": spec.to_dict(), "created": time.time(), "host": socket.gethostname()}
        for name in (RESUME_FILE, OWNER_FILE):
            (partial.path / name).unlink(missing_ok=True)
        atomic_write_bytes(partial.path / SPEC_FILE, yaml.safe_dump(record, sort_keys=False).encode())
        atomic_write_bytes(partial.path / METRICS_FILE, json.dumps(metrics, indent=1).encode())
        manifest = {str(p.relative_to(partial.path)): p.stat().st_size
                    for p in sorted(partial.path.rglob("*")) if p.is_file() and not p.name.startswith(".")}
        atomic_write_bytes(partial.path / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
        final = self.path(spec.id)
        try:
            os.rename(partial.path, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(partial.path, ignore_errors=True)  # finished elsewhere first: keep that one
        return self._read(final)

    def quarantine(self, artifact_id: str, reason: str) -> Path:
        dest = self.root / ".broken" / f"{artifact_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.path(artifact_id), dest)
        except FileNotFoundError:  # another process moved it aside first
            return dest
        warnings.warn(f"{reason}; moved it to {dest} and will recompute it", stacklevel=3)
        return dest

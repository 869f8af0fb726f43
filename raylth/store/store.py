"""Content-addressed artifacts under a storage root.

    ROOT/<kind>_<hash>/      a finished artifact: spec.yaml, metrics.json,
                             manifest.json, weights/*.pt, mask.pt
    ROOT/.partial/<id>/      work in progress: the same files as they are
                             written, plus resume.pt (the latest epoch state)
                             and owner.json (who computes it: liveness.py)
    ROOT/.broken/<id>-<t>/   damaged artifacts moved aside (REASON.txt says why)
    ROOT/.verified/<id>.json what this node has checked against the checksums
    ROOT/sweeps/<name>.yaml  the sweeps run against this root

A stage writes into its partial folder and, once everything is there,
renames it into place in one step, so a finished-looking folder is never
half-written. A finished artifact is reused, never recomputed, unless a
file of it no longer matches the size and checksum its manifest records
(checksums.py): then it is moved aside and computed again.

Where the root lives is a back-end with one interface: a local folder
(local.py: a machine's disk or a shared file system) or a bucket URI
(bucket.py: a node-local cache committed by upload). This module holds what
both share: reading and checking an artifact folder, the lock, finishing.
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

import yaml

import raylth.store.checksums as checksums
from raylth.errors import StoreError, StoreUnreachable
from raylth.specs import Spec
from raylth.store.artifact import Artifact, Partial
from raylth.store.bucket import Bucket
from raylth.store.files import (MANIFEST_FILE, METRICS_FILE, OWNER_FILE, RESUME_FILE, SPEC_FILE,  # noqa: F401
                                atomic_torch_save, atomic_write_bytes, check_folder_writable)
from raylth.store.local import LocalFolder
from raylth.store.remote import is_uri


class Store:
    def __init__(self, root: str | os.PathLike, read_only: bool = False):
        self.read_only = read_only  # checks are not remembered (.verified): e.g. a dry run writes nothing
        self.backend = Bucket(root) if is_uri(root) else LocalFolder(root)
        self.root, self.location, self.uri = self.backend.root, self.backend.location, self.backend.uri

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @property
    def is_bucket(self) -> bool:
        return self.backend.mirrors

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    def exists(self) -> bool:
        return self.backend.exists()

    # -- reading ---------------------------------------------------------------
    def get(self, artifact_id: str) -> Artifact | None:
        """The finished artifact, or None. An unreadable one is reported,
        moved aside and treated as missing, so it is recomputed."""
        return self.backend.get(self, artifact_id)

    def condition(self, artifact_id: str) -> tuple[str, str]:
        """("finished" | "missing" | "damaged", why): what ``get`` would find,
        without moving anything aside. Local files are checked by size and
        checksum (remembered per node, see checksums.py); a bucket's by the
        sizes it lists, their checksums when downloaded."""
        return self.backend.condition(self, artifact_id)

    def scan(self, artifact_id: str) -> str | None:
        """Check every file of an artifact against its size and checksum,
        reading all of it (a bucket's files are streamed, not kept): None when
        intact, else what is wrong."""
        return self.backend.scan(self, artifact_id)

    def read(self, path: Path, fetch=None, checked: bool = False, remember: bool = True) -> Artifact:
        """Check an artifact folder: every file of its manifest there with its
        size (and with ``checked``, its checksum), or (``fetch``: from a
        bucket) just its metadata, the rest checked when fetched."""
        try:
            record = yaml.safe_load((path / SPEC_FILE).read_text())
            metrics = json.loads((path / METRICS_FILE).read_text())
            manifest = json.loads((path / MANIFEST_FILE).read_text())
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise StoreError(f"{path}: unreadable artifact ({type(err).__name__}: {err})") from err
        if not isinstance(record, dict) or record.get("id") != path.name:
            raise StoreError(f"{path}: {SPEC_FILE} does not describe this artifact")
        if fetch is None:
            for name, entry in manifest.items():
                file = path / name
                if not file.is_file() or file.stat().st_size != checksums.size_of(entry):
                    raise StoreError(f"{path}: {name} is missing or truncated")
            if checked:
                self._check_sums(path, manifest, remember)
        return Artifact(path, record, metrics, manifest, fetch)

    def _verified_file(self, artifact_id: str) -> Path:
        return self.root / ".verified" / f"{artifact_id}.json"

    def _check_sums(self, path: Path, manifest: dict, remember: bool = True) -> None:
        """Every file against its checksum, skipping those this node checked
        before and that have not changed since (with ``remember``, else all)."""
        memo_path = self._verified_file(path.name)
        try:
            memo = json.loads(memo_path.read_text()) if remember else {}
        except (OSError, ValueError):
            memo = {}
        seen = {}
        for name, entry in manifest.items():
            expected = checksums.crc_of(entry)
            if expected is None:
                continue
            stamp = checksums.stamp(path / name)
            if memo.get(name) != stamp + [expected]:
                if checksums.crc32_file(path / name) != expected:
                    raise StoreError(f"{path}: {name} does not match the checksum in its manifest (damaged)")
            seen[name] = stamp + [expected]
        if remember and seen != memo and not self.read_only:
            with contextlib.suppress(OSError):  # only a memo: a read-only store is still readable
                atomic_write_bytes(memo_path, json.dumps(seen).encode())

    def artifact_ids(self) -> list[str]:
        """Every artifact folder's id, finished or damaged (on a bucket: those
        with a manifest; a folder without one is an upload in progress)."""
        return [n for n in self._artifact_names() if not self.is_bucket or self.has(n)]

    def has(self, artifact_id: str) -> bool:
        return self.backend.committed(artifact_id)

    def _artifact_names(self) -> list[str]:
        return sorted(name for name, is_dir in self.backend.listing()
                      if is_dir and not name.startswith(".") and "_" in name and name not in ("sweeps", "searches"))

    def ids_of(self, kind: str) -> list[str]:
        """The ids of the artifact folders of ``kind`` (finished or not: ``get`` tells)."""
        return [name for name in self._artifact_names() if name.startswith(f"{kind}_")]

    def artifacts(self):
        """Every finished, readable artifact (unreadable ones are skipped with a warning)."""
        for name in self._artifact_names():
            try:
                artifact = self.backend.open(self, name)
            except StoreUnreachable:  # not one unreadable artifact: every other read would fail too
                raise
            except StoreError as err:
                warnings.warn(str(err), stacklevel=2)
                continue
            if artifact is not None:
                yield artifact

    def partial_state(self, artifact_id: str) -> dict | None:
        """The liveness record of whoever computes an artifact (raylth.store.liveness), or None."""
        return self.backend.owner(artifact_id)

    # -- files that are not artifacts (sweep records, searches) ------------------
    def write_file(self, rel: str, payload: bytes) -> None:
        self.backend.write_file(rel, payload)

    def read_file(self, rel: str) -> bytes | None:
        return self.backend.read_file(rel)

    def delete_file(self, rel: str) -> None:
        self.backend.delete_file(rel)

    def file_names(self, folder: str, suffix: str) -> list[str]:
        return sorted(n for n in self.backend.file_names(folder) if n.endswith(suffix) and not n.startswith("."))

    # -- what a run needs ------------------------------------------------------
    def check_writable(self) -> None:
        """The local folder (for a bucket, the node's cache) writable, and a bucket taking a small object;
        else one line."""
        check_folder_writable(self.root, self.backend.label, "--storage")
        self.backend.probe_writes()

    def tune_storage(self, *parts: str) -> dict:
        """RunConfig arguments that keep Ray's own run state beside the artifacts."""
        return self.backend.tune_storage(*parts)

    # -- writing ---------------------------------------------------------------
    def partial(self, artifact_id: str) -> Partial:
        path, rel = self.root / ".partial" / artifact_id, f".partial/{artifact_id}"
        path.mkdir(parents=True, exist_ok=True)
        self.backend.pull_partial(rel, path)
        return Partial(path, self.backend if self.backend.mirrors else None, rel)

    def _lock_file(self, artifact_id: str) -> Path:
        path = self.root / ".partial" / f"{artifact_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, artifact_id: str):
        """Exclusive right to compute one artifact, across processes on every
        node that shares the root (an OS file lock: freed if the holder dies).
        A bucket has no lock: there it holds on this node only, and two nodes
        computing one artifact at once both finish (see finish)."""
        with open(self._lock_file(artifact_id), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock_if_free(self, artifact_id: str):
        """``lock`` without waiting: yields True holding it, False when another
        process holds it (and is computing the artifact)."""
        with open(self._lock_file(artifact_id), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
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
        manifest = {str(p.relative_to(partial.path)): checksums.entry(p)
                    for p in sorted(partial.path.rglob("*"))
                    if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_FILE}
        atomic_write_bytes(partial.path / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
        memo = {name: checksums.stamp(partial.path / name) + [entry["crc32"]] for name, entry in manifest.items()}
        with contextlib.suppress(OSError):  # just computed; only a memo (a full disk: checked again later)
            atomic_write_bytes(self._verified_file(spec.id), json.dumps(memo).encode())
        final = self.path(spec.id)
        try:
            os.rename(partial.path, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(partial.path, ignore_errors=True)  # finished elsewhere first: keep that one
        return self.backend.finished(self, final, spec)

    def quarantine(self, artifact_id: str, reason: str) -> str:
        """Move a damaged artifact to .broken/ (with REASON.txt), so it is computed again."""
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._verified_file(artifact_id).unlink(missing_ok=True)
        return self.backend.quarantine(self, artifact_id, reason, stamp)

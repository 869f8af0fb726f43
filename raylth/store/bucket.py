"""The bucket back-end of a Store: a URI (s3://bucket/path, gs://..., file://)
reached through pyarrow filesystems (remote.py), as Ray reaches its storage.

A bucket has no folder rename and no file lock, so this node works in a
local cache (``root``) and an artifact is committed by uploading its files
and then its manifest: it exists in the bucket once its manifest does, so no
reader ever sees one half-written. Partial files are mirrored as they are
saved, so a trial retried on another node resumes where the dead one stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import raylth.store.checksums as checksums
from raylth.errors import StoreError, StoreUnreachable
from raylth.store.files import MANIFEST_FILE, METRICS_FILE, OWNER_FILE, SPEC_FILE, atomic_write_bytes
from raylth.store.remote import Remote


class Bucket:
    """Where the artifacts are: a URI, worked on through this node's cache ``root``."""

    label = "storage cache"
    mirrors = True  # partial files go to the bucket as they are saved

    def __init__(self, uri: str):
        self.remote = Remote(uri)
        self.root = self.remote.cache_dir()
        self.location = self.remote.display
        self.uri = str(uri)  # as given: query options (endpoint, region) kept

    def exists(self) -> bool:
        return self.remote.exists()

    def committed(self, artifact_id: str) -> bool:
        return self.remote.size(f"{artifact_id}/{MANIFEST_FILE}") is not None

    def listing(self) -> list[tuple[str, bool]]:
        return self.remote.listdir()

    # -- artifacts -------------------------------------------------------------------------------
    def get(self, store, artifact_id: str):
        local = store.path(artifact_id)
        if not self.committed(artifact_id):
            if not local.is_dir() or store.read_only:
                return None
            try:  # finished here, but the upload never completed: commit it now
                artifact = store.read(local)
            except StoreError:
                shutil.rmtree(local, ignore_errors=True)
                return None
            self.commit(artifact)
            return self.fetch(store, artifact_id)
        try:
            return self.fetch(store, artifact_id)
        except StoreUnreachable:  # the bucket failing is no sign of damage: nothing is moved aside
            raise
        except StoreError as err:
            if not store.read_only:
                store.quarantine(artifact_id, str(err))
            return None

    def condition(self, store, artifact_id: str) -> tuple[str, str]:
        """By the sizes the bucket lists (checksums are checked when files are downloaded)."""
        manifest = self.remote.read(f"{artifact_id}/{MANIFEST_FILE}")
        if manifest is None:  # not committed (finished here but never uploaded: a job's get commits it)
            return "missing", ""
        try:
            entries = json.loads(manifest)
        except ValueError as err:
            return "damaged", f"{self.remote.url(artifact_id)}: unreadable manifest ({err})"
        listed = self.remote.file_sizes(artifact_id)  # unreachable: StoreError, not damage
        for name, entry in entries.items():
            if listed.get(name) != checksums.size_of(entry):
                return "damaged", f"{self.remote.url(artifact_id)}: {name} is missing or truncated"
        return "finished", ""

    def scan(self, store, artifact_id: str) -> str | None:
        """Every file streamed through its checksum (not kept)."""
        state, why = self.condition(store, artifact_id)
        if state == "missing":  # an upload in progress (or abandoned): not an artifact yet
            return None
        if state != "finished":
            return why
        manifest = json.loads(self.remote.read(f"{artifact_id}/{MANIFEST_FILE}"))
        for name, entry in manifest.items():
            expected = checksums.crc_of(entry)
            if expected is not None and self.remote.crc32(f"{artifact_id}/{name}") != expected:
                return f"{self.remote.url(artifact_id)}: {name} does not match the checksum in its manifest (damaged)"
        return None

    def open(self, store, name: str):
        """A committed artifact; None for a folder still being uploaded."""
        return self.fetch(store, name) if self.committed(name) else None

    def fetch(self, store, artifact_id: str):
        """The artifact's metadata into the cache (in one rename); its other files when first read."""
        local = store.path(artifact_id)
        if not (local / MANIFEST_FILE).is_file():
            fetched = self.root / ".fetch" / f"{artifact_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
            try:
                for name in (SPEC_FILE, METRICS_FILE, MANIFEST_FILE):
                    self.remote.download(f"{artifact_id}/{name}", fetched / name)
                try:
                    os.rename(fetched, local)
                except OSError:
                    if not (local / MANIFEST_FILE).is_file():
                        raise
            finally:
                shutil.rmtree(fetched, ignore_errors=True)

        def fetch_file(name: str, path: Path, entry) -> None:
            self.remote.download(f"{artifact_id}/{name}", path, checksums.size_of(entry))
            expected = checksums.crc_of(entry)
            if expected is not None and checksums.crc32_file(path) != expected:
                path.unlink(missing_ok=True)
                raise StoreError(f"{self.remote.url(f'{artifact_id}/{name}')}: does not match the checksum in "
                                 "its manifest (damaged); `raylth verify --repair` moves the artifact aside")

        return store.read(local, fetch=fetch_file)

    def finished(self, store, path: Path, spec):
        """Finished in the cache: committed, unless another node committed it first (then theirs)."""
        if self.committed(spec.id):
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.commit(store.read(path))
        return self.fetch(store, spec.id)

    def commit(self, artifact) -> None:
        """Upload a finished local artifact: its files, then its manifest, which marks it finished."""
        for name in artifact.manifest:
            self.remote.upload(artifact.path / name, f"{artifact.id}/{name}")
        self.remote.upload(artifact.path / MANIFEST_FILE, f"{artifact.id}/{MANIFEST_FILE}")
        self.remote.delete(f".partial/{artifact.id}")

    def quarantine(self, store, artifact_id: str, reason: str, stamp: str) -> str:
        dest = f".broken/{artifact_id}-{stamp}"
        self.remote.copy_tree(artifact_id, dest)
        self.remote.write(f"{dest}/REASON.txt", (reason + "\n").encode())
        self.remote.delete(f"{artifact_id}/{MANIFEST_FILE}")  # first: a delete cut short leaves no artifact
        self.remote.delete(artifact_id)
        shutil.rmtree(store.path(artifact_id), ignore_errors=True)
        warnings.warn(f"{reason}; moved it to {self.remote.url(dest)} and will recompute it", stacklevel=4)
        return self.remote.url(dest)

    # -- work in progress --------------------------------------------------------------------------
    def owner(self, artifact_id: str) -> dict | None:
        try:
            return json.loads(self.remote.read(f".partial/{artifact_id}/{OWNER_FILE}") or b"null")
        except ValueError:
            return None

    def pull_partial(self, rel: str, path: Path) -> None:
        """What another node saved before it stopped: resume from it here."""
        for name in self.remote.files(rel):
            if name != OWNER_FILE and not name.endswith(".tmp") and not (path / name).exists():
                self.remote.download(f"{rel}/{name}", path / name)

    def mirror(self, local: Path, rel: str) -> None:
        self.remote.upload(local, rel)

    # -- other files (sweep records, searches) -----------------------------------------------------
    def write_file(self, rel: str, payload: bytes) -> None:
        atomic_write_bytes(self.root / rel, payload)
        self.remote.write(rel, payload)

    def read_file(self, rel: str) -> bytes | None:
        return self.remote.read(rel)

    def delete_file(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)
        self.remote.delete(rel)

    def file_names(self, folder: str) -> list[str]:
        return [name for name, is_dir in self.remote.listdir(folder) if not is_dir]

    # -- what a run needs of it --------------------------------------------------------------------
    def probe_writes(self) -> None:
        """The bucket takes a small object (and lets it be deleted); else one line."""
        rel = f".raylth-write-test-{uuid.uuid4().hex[:8]}"
        try:
            self.remote.write(rel, b"")
            self.remote.delete(rel)
        except StoreUnreachable:
            raise
        except StoreError as err:
            raise StoreError(f"storage {self.location}: refuses writes ({err.__cause__ or err}); check the "
                             "bucket's permissions or choose another with --storage") from None

    def tune_storage(self, *parts: str) -> dict:
        """RunConfig arguments keeping Ray's own run state in the bucket."""
        return {"storage_path": "/".join([self.remote.base, ".ray", *parts]), "storage_filesystem": self.remote.fs}

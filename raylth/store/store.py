"""Content-addressed artifacts under a storage root.

    ROOT/<kind>_<hash>/      a finished artifact: spec.yaml, metrics.json,
                             manifest.json, weights/*.pt, mask.pt
    ROOT/.partial/<id>/      work in progress: the same files as they are
                             written, plus resume.pt (the latest epoch state)
    ROOT/.broken/<id>-<t>/   damaged artifacts moved aside (REASON.txt says why)
    ROOT/.verified/<id>.json what this node has checked against the checksums
    ROOT/sweeps/<name>.yaml  the sweeps run against this root

A stage writes into its partial folder and, once everything is there,
renames it into place in one step, so a finished-looking folder is never
half-written. A finished artifact is reused, never recomputed, unless a
file of it no longer matches the size and checksum its manifest records
(checksums.py): then it is moved aside and computed again.

ROOT may also be a URI (s3://bucket/path): see remote.py. Then the folders
above live in a node-local cache, partial files are mirrored to the URI as
they are saved (a trial retried on another node resumes), and a finished
artifact is committed by uploading its files and then its manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
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
import raylth.store.checksums as checksums
from raylth.store.remote import Remote, is_uri

SPEC_FILE, METRICS_FILE, MANIFEST_FILE, RESUME_FILE, OWNER_FILE = (
    "spec.yaml", "metrics.json", "manifest.json", "resume.pt", "owner.json")


@contextlib.contextmanager
def _replacing(path: Path):
    """Yield a temporary path beside ``path``; what is written there replaces
    ``path`` in one rename once complete and on disk. A write that fails
    midway (an exception, a full disk) leaves ``path`` as it was."""
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


class Artifact:
    """A finished, readable artifact folder. From a remote store its files
    are downloaded into the local cache when first asked for."""

    def __init__(self, path: Path, record: dict, metrics: dict, manifest: dict, fetch=None):
        self.path, self.record, self.metrics, self.manifest = path, record, metrics, manifest
        self._fetch = fetch

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
        return name in self.manifest

    def names(self, folder: str) -> list[str]:
        """The artifact's files under ``folder`` ("weights"), relative to it."""
        prefix = folder.rstrip("/") + "/"
        return sorted(n[len(prefix):] for n in self.manifest if n.startswith(prefix))

    def file(self, name: str) -> Path:
        """A local path to one of the artifact's files."""
        path = self.path / name
        if name not in self.manifest:
            raise StoreError(f"{path}: the artifact has no file {name}")
        size = checksums.size_of(self.manifest[name])
        if self._fetch is not None and not (path.is_file() and path.stat().st_size == size):
            self._fetch(name, path, self.manifest[name])
        return path

    def load(self, name: str):
        """Load a tensor file of this artifact, checked against its checksum;
        StoreError if damaged or unreadable."""
        path = self.file(name)
        data = path.read_bytes()
        expected = checksums.crc_of(self.manifest[name])
        if expected is not None and checksums.crc32_bytes(data) != expected and self._fetch is not None:
            path.unlink(missing_ok=True)  # a damaged copy in this node's cache: the bucket's may be whole
            data = self.file(name).read_bytes()
        if expected is not None and checksums.crc32_bytes(data) != expected:
            raise StoreError(f"{path}: does not match the checksum in its manifest (damaged)")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt file
            raise StoreError(f"{path}: unreadable ({type(err).__name__}: {err})") from err

    def weights(self, name: str = "final") -> dict[str, torch.Tensor]:
        return self.load(f"weights/{name}.pt")

    def mask(self):
        return self.load("mask.pt") if self.has_file("mask.pt") else None


class Partial:
    """The in-progress folder of one artifact (mirrored to ``remote`` at
    ``rel`` as files are saved, for a remote store)."""

    def __init__(self, path: Path, remote: Remote | None = None, rel: str = ""):
        self.path, self.remote, self.rel = path, remote, rel

    def save(self, name: str, obj) -> None:
        atomic_torch_save(obj, self.path / name)
        if self.remote is not None:
            self.remote.upload(self.path / name, f"{self.rel}/{name}")
        self.touch()

    def load(self, name: str):
        return torch.load(self.path / name, map_location="cpu", weights_only=False)

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def touch(self) -> None:
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode()
        atomic_write_bytes(self.path / OWNER_FILE, owner)
        if self.remote is not None:
            self.remote.write(f"{self.rel}/{OWNER_FILE}", owner)


class Store:
    def __init__(self, root: str | os.PathLike, read_only: bool = False):
        self.read_only = read_only  # checks are not remembered (.verified): e.g. a dry run writes nothing
        if is_uri(root):
            self.remote: Remote | None = Remote(root)
            self.root = self.remote.cache_dir()  # node-local working copy
            self.location = self.remote.display
            self.uri = str(root)  # as given: query options (endpoint, region) kept
        else:
            self.remote = None
            self.root = Path(root).expanduser().resolve()
            self.location = self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    def exists(self) -> bool:
        return self.remote.exists() if self.remote is not None else self.root.is_dir()

    # -- reading ---------------------------------------------------------------
    def get(self, artifact_id: str) -> Artifact | None:
        """The finished artifact, or None. An unreadable one is reported,
        moved aside and treated as missing, so it is recomputed."""
        if self.remote is not None:
            return self._get_remote(artifact_id)
        path = self.path(artifact_id)
        if not path.is_dir():
            return None
        try:
            return self._read(path, checked=True)
        except StoreError as err:
            if not self.read_only:
                self.quarantine(artifact_id, str(err))
            return None

    def condition(self, artifact_id: str) -> tuple[str, str]:
        """("finished" | "missing" | "damaged", why): what ``get`` would find,
        without moving anything aside. Local files are checked by size and
        checksum (remembered per node, see checksums.py); a bucket's by the
        sizes it lists, their checksums when downloaded."""
        if self.remote is not None:
            return self._remote_condition(artifact_id)
        path = self.path(artifact_id)
        if not path.is_dir():
            return "missing", ""
        try:
            self._read(path, checked=True)
        except StoreError as err:
            return "damaged", str(err)
        return "finished", ""

    def _remote_condition(self, artifact_id: str) -> tuple[str, str]:
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

    def _read(self, path: Path, fetch=None, checked: bool = False, remember: bool = True) -> Artifact:
        """Check an artifact folder: every file of its manifest there with its
        size (and with ``checked``, its checksum), or (remote) just its
        metadata, the rest checked when fetched."""
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

    def scan(self, artifact_id: str) -> str | None:
        """Check every file of an artifact against its size and checksum,
        reading all of it (a bucket's files are streamed, not kept): None when
        intact, else what is wrong."""
        if self.remote is None:
            try:
                self._read(self.path(artifact_id), checked=True, remember=False)
            except StoreError as err:
                return str(err)
            return None
        state, why = self._remote_condition(artifact_id)
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

    def artifact_ids(self) -> list[str]:
        """Every artifact folder's id, finished or damaged (on a bucket: those
        with a manifest; a folder without one is an upload in progress)."""
        names = self._artifact_names()
        return names if self.remote is None else [n for n in names if self.has(n)]

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

    def _get_remote(self, artifact_id: str) -> Artifact | None:
        local = self.path(artifact_id)
        if self.remote.size(f"{artifact_id}/{MANIFEST_FILE}") is None:
            if not local.is_dir() or self.read_only:
                return None
            try:  # finished here, but the upload never completed: commit it now
                artifact = self._read(local)
            except StoreError:
                shutil.rmtree(local, ignore_errors=True)
                return None
            self._commit(artifact)
            return self._remote_artifact(artifact_id)
        try:
            return self._remote_artifact(artifact_id)
        except StoreError as err:
            if not self.read_only:
                self.quarantine(artifact_id, str(err))
            return None

    def _remote_artifact(self, artifact_id: str) -> Artifact:
        local = self.path(artifact_id)
        if not (local / MANIFEST_FILE).is_file():  # metadata first, into the cache in one rename
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

        def fetch(name: str, path: Path, entry) -> None:
            self.remote.download(f"{artifact_id}/{name}", path, checksums.size_of(entry))
            expected = checksums.crc_of(entry)
            if expected is not None and checksums.crc32_file(path) != expected:
                path.unlink(missing_ok=True)
                raise StoreError(f"{self.remote.url(f'{artifact_id}/{name}')}: does not match the checksum in "
                                 "its manifest (damaged); `raylth verify --repair` moves the artifact aside")

        return self._read(local, fetch=fetch)

    def has(self, artifact_id: str) -> bool:
        if self.remote is not None:
            return self.remote.size(f"{artifact_id}/{MANIFEST_FILE}") is not None
        return self.path(artifact_id).is_dir()

    def _artifact_names(self) -> list[str]:
        if self.remote is not None:
            entries = self.remote.listdir()
        elif self.root.is_dir():
            entries = [(p.name, p.is_dir()) for p in self.root.iterdir()]
        else:
            entries = []
        return sorted(name for name, is_dir in entries
                      if is_dir and not name.startswith(".") and "_" in name and name not in ("sweeps", "searches"))

    def ids_of(self, kind: str) -> list[str]:
        """The ids of the artifact folders of ``kind`` (finished or not: ``get`` tells)."""
        return [name for name in self._artifact_names() if name.startswith(f"{kind}_")]

    def artifacts(self):
        """Every finished, readable artifact (unreadable ones are skipped with a warning)."""
        for name in self._artifact_names():
            try:
                if self.remote is None:
                    yield self._read(self.path(name))
                elif self.has(name):  # a folder without its manifest is still being uploaded
                    yield self._remote_artifact(name)
            except StoreError as err:
                warnings.warn(str(err), stacklevel=2)

    def partial_state(self, artifact_id: str) -> dict | None:
        """Owner record of an artifact being computed, or None."""
        try:
            if self.remote is not None:
                return json.loads(self.remote.read(f".partial/{artifact_id}/{OWNER_FILE}") or b"null")
            return json.loads((self.root / ".partial" / artifact_id / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None

    # -- files that are not artifacts (sweep records, searches) ------------------
    def write_file(self, rel: str, payload: bytes) -> None:
        atomic_write_bytes(self.root / rel, payload)
        if self.remote is not None:
            self.remote.write(rel, payload)

    def read_file(self, rel: str) -> bytes | None:
        if self.remote is not None:
            return self.remote.read(rel)
        try:
            return (self.root / rel).read_bytes()
        except OSError:
            return None

    def delete_file(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.delete(rel)

    def file_names(self, folder: str, suffix: str) -> list[str]:
        if self.remote is not None:
            names = [name for name, is_dir in self.remote.listdir(folder) if not is_dir]
        else:
            names = [p.name for p in (self.root / folder).glob("*")] if (self.root / folder).is_dir() else []
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

    # -- writing ---------------------------------------------------------------
    def partial(self, artifact_id: str) -> Partial:
        path, rel = self.root / ".partial" / artifact_id, f".partial/{artifact_id}"
        path.mkdir(parents=True, exist_ok=True)
        if self.remote is not None:  # what another node saved before it stopped: resume from it here
            for name in self.remote.files(rel):
                if name != OWNER_FILE and not name.endswith(".tmp") and not (path / name).exists():
                    self.remote.download(f"{rel}/{name}", path / name)
        return Partial(path, self.remote, rel)

    @contextlib.contextmanager
    def lock(self, artifact_id: str):
        """Exclusive right to compute one artifact, across processes on every
        node that shares the root (an OS file lock: freed if the holder dies).
        A bucket has no lock: there it holds on this node only, and two nodes
        computing one artifact at once both finish (see finish)."""
        path = self.root / ".partial" / f"{artifact_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock_if_free(self, artifact_id: str):
        """``lock`` without waiting: yields True holding it, False when another
        process holds it (and is computing the artifact)."""
        path = self.root / ".partial" / f"{artifact_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
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
        if self.remote is None:
            return self._read(final)
        if self.has(spec.id):  # another node committed it first: use theirs
            shutil.rmtree(final, ignore_errors=True)
        else:
            self._commit(self._read(final))
        return self._remote_artifact(spec.id)

    def _commit(self, artifact: Artifact) -> None:
        """Upload a finished local artifact: its files, then its manifest, which marks it finished."""
        for name in artifact.manifest:
            self.remote.upload(artifact.path / name, f"{artifact.id}/{name}")
        self.remote.upload(artifact.path / MANIFEST_FILE, f"{artifact.id}/{MANIFEST_FILE}")
        self.remote.delete(f".partial/{artifact.id}")

    def quarantine(self, artifact_id: str, reason: str) -> str:
        """Move a damaged artifact to .broken/ (with REASON.txt), so it is computed again."""
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._verified_file(artifact_id).unlink(missing_ok=True)
        if self.remote is not None:
            dest = f".broken/{artifact_id}-{stamp}"
            self.remote.copy_tree(artifact_id, dest)
            self.remote.write(f"{dest}/REASON.txt", (reason + "\n").encode())
            self.remote.delete(artifact_id)
            shutil.rmtree(self.path(artifact_id), ignore_errors=True)
            warnings.warn(f"{reason}; moved it to {self.remote.url(dest)} and will recompute it", stacklevel=3)
            return self.remote.url(dest)
        dest = self.root / ".broken" / f"{artifact_id}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.path(artifact_id), dest)
        except FileNotFoundError:  # another process moved it aside first
            return str(dest)
        with contextlib.suppress(OSError):
            (dest / "REASON.txt").write_text(reason + "\n")
        warnings.warn(f"{reason}; moved it to {dest} and will recompute it", stacklevel=3)
        return str(dest)

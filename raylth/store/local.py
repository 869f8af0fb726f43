"""The local-folder back-end of a Store: a folder on this machine, or a shared
file system mounted at the same path on every node (NFS, EFS, Lustre), where
a rename is atomic and file locks hold across nodes."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from raylth.errors import StoreError
from raylth.store.files import OWNER_FILE, atomic_write_bytes


class LocalFolder:
    """Where the artifacts are: ``root`` itself (Store's interface to it)."""

    label = "storage"        # what the folder is, in messages
    mirrors = False           # no second copy to keep in step with the folder

    def __init__(self, root):
        self.root = Path(root).expanduser().resolve()
        self.location = self.uri = str(self.root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def committed(self, artifact_id: str) -> bool:
        return (self.root / artifact_id).is_dir()

    def listing(self) -> list[tuple[str, bool]]:
        return [(p.name, p.is_dir()) for p in self.root.iterdir()] if self.root.is_dir() else []

    # -- artifacts -------------------------------------------------------------------------------
    def get(self, store, artifact_id: str):
        path = store.path(artifact_id)
        if not path.is_dir():
            return None
        try:
            return store.read(path, checked=True)
        except StoreError as err:
            if not store.read_only:
                store.quarantine(artifact_id, str(err))
            return None

    def condition(self, store, artifact_id: str) -> tuple[str, str]:
        path = store.path(artifact_id)
        if not path.is_dir():
            return "missing", ""
        try:
            store.read(path, checked=True)
        except StoreError as err:
            return "damaged", str(err)
        return "finished", ""

    def scan(self, store, artifact_id: str) -> str | None:
        try:
            store.read(store.path(artifact_id), checked=True, remember=False)
        except StoreError as err:
            return str(err)
        return None

    def open(self, store, name: str):
        return store.read(store.path(name))

    def finished(self, store, path: Path, spec):
        return store.read(path)

    def quarantine(self, store, artifact_id: str, reason: str, stamp: str) -> str:
        dest = self.root / ".broken" / f"{artifact_id}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(store.path(artifact_id), dest)
        except FileNotFoundError:  # another process moved it aside first
            return str(dest)
        with contextlib.suppress(OSError):
            (dest / "REASON.txt").write_text(reason + "\n")
        warnings.warn(f"{reason}; moved it to {dest} and will recompute it", stacklevel=4)
        return str(dest)

    # -- work in progress --------------------------------------------------------------------------
    def owner(self, artifact_id: str) -> dict | None:
        try:
            return json.loads((self.root / ".partial" / artifact_id / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None

    def pull_partial(self, rel: str, path: Path) -> None:
        """Nothing to fetch: the folder is the only copy."""

    # -- other files (sweep records, searches) -----------------------------------------------------
    def write_file(self, rel: str, payload: bytes) -> None:
        atomic_write_bytes(self.root / rel, payload)

    def read_file(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except OSError:
            return None

    def delete_file(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def file_names(self, folder: str) -> list[str]:
        where = self.root / folder
        return [p.name for p in where.glob("*")] if where.is_dir() else []

    # -- what a run needs of it --------------------------------------------------------------------
    def probe_writes(self) -> None:
        """The folder itself is checked by the caller (check_folder_writable)."""

    def tune_storage(self, *parts: str) -> dict:
        """RunConfig arguments keeping Ray's own run state beside the artifacts."""
        return {"storage_path": str(self.root.joinpath(".ray", *parts))}

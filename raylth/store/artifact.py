"""A finished artifact (read-only: its files checked against their manifest)
and the partial folder an artifact is written into before it is finished."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

import raylth.store.checksums as checksums
from raylth.errors import StoreError
from raylth.store.liveness import heartbeat, record
from raylth.store.files import OWNER_FILE, atomic_torch_save, atomic_write_bytes


class Artifact:
    """A finished, readable artifact folder. From a bucket its files are
    downloaded into the local cache when first asked for (``fetch``)."""

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
    """The in-progress folder of one artifact; a backend that keeps files
    elsewhere (a bucket) mirrors each file saved, at ``rel``, so another node
    can resume from it."""

    def __init__(self, path: Path, backend=None, rel: str = ""):
        self.path, self.backend, self.rel = path, backend, rel

    def save(self, name: str, obj) -> None:
        atomic_torch_save(obj, self.path / name)
        if self.backend is not None:
            self.backend.mirror(self.path / name, f"{self.rel}/{name}")
        self.touch()

    def load(self, name: str):
        return torch.load(self.path / name, map_location="cpu", weights_only=False)

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def touch(self, rec: dict | None = None) -> None:
        """Renew the liveness record of whoever computes it (raylth.store.liveness)."""
        owner = json.dumps(rec or record()).encode()
        atomic_write_bytes(self.path / OWNER_FILE, owner)
        if self.backend is not None:
            self.backend.write_file(f"{self.rel}/{OWNER_FILE}", owner)

    def heartbeat(self):
        """Keep it alive while a block runs (an epoch may outlast the staleness limit)."""
        return heartbeat(self.touch)

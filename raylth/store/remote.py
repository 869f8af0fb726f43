"""A storage root given as a URI (s3://bucket/path, gs://..., file:///...),
reached through pyarrow filesystems as Ray reaches its own storage.

A bucket has no folder rename and no file lock, so a remote store works on
a node-local cache (RAYLTH_CACHE, default ~/.cache/raylth) and commits an
artifact by uploading its files and then its manifest: an artifact exists
remotely once its manifest does, so none is ever seen half-written.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

from raylth.errors import StoreError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 8 << 20


def is_uri(root) -> bool:
    return isinstance(root, str) and bool(_URI.match(root))


def cache_root() -> Path:
    return Path(os.environ.get("RAYLTH_CACHE") or Path.home() / ".cache" / "raylth").expanduser().resolve()


class Remote:
    """Files under one URI; paths are relative to it, '/'-separated."""

    def __init__(self, uri: str):
        from pyarrow import fs as pafs

        try:
            self.fs, base = pafs.FileSystem.from_uri(uri)
        except Exception as err:  # pyarrow raises ArrowInvalid/OSError for unknown schemes and bad options
            raise StoreError(f"storage {uri}: not a storage URI pyarrow can open ({err}); use a local path, "
                             "a shared filesystem path, or s3://BUCKET/PATH") from None
        self.uri, self.base = uri, base.rstrip("/")
        self.display = uri.split("?", 1)[0].rstrip("/")
        self._local = self.fs.type_name == "local"

    def cache_dir(self) -> Path:
        """This URI's node-local cache: one folder per URI, query options included."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.display.split("://", 1)[1]).strip("-")[-60:]
        return cache_root() / "stores" / f"{slug}-{hashlib.sha256(self.uri.encode()).hexdigest()[:10]}"

    def url(self, rel: str = "") -> str:
        return f"{self.display}/{rel}" if rel else self.display

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _info(self, rel: str):
        try:
            return self.fs.get_file_info(self._path(rel))
        except OSError as err:
            raise StoreError(f"{self.url(rel)}: cannot reach the storage ({err})") from None

    def exists(self, rel: str = "") -> bool:
        from pyarrow import fs as pafs

        return self._info(rel).type != pafs.FileType.NotFound

    def size(self, rel: str) -> int | None:
        from pyarrow import fs as pafs

        info = self._info(rel)
        return info.size if info.type == pafs.FileType.File else None

    def read(self, rel: str) -> bytes | None:
        if self.size(rel) is None:
            return None
        with self.fs.open_input_stream(self._path(rel)) as f:
            return f.read()

    def write(self, rel: str, data: bytes) -> None:
        """One object; on a bucket a PUT replaces it whole, on a local disk a rename does."""
        target = self._path(rel)
        if self._local:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, target)
        else:
            with self.fs.open_output_stream(target) as f:
                f.write(data)

    def upload(self, local: Path, rel: str) -> None:
        target = self._path(rel)
        if self._local:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            self._copy_in(local, tmp)
            self.fs.move(tmp, target)
        else:
            self._copy_in(local, target)

    def _copy_in(self, local: Path, target: str) -> None:
        with open(local, "rb") as src, self.fs.open_output_stream(target) as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)

    def download(self, rel: str, local: Path, size: int | None = None) -> None:
        """Into ``local`` by rename of a complete copy; StoreError if missing or of the wrong size."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            with self.fs.open_input_stream(self._path(rel)) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.url(rel)}: cannot download ({err})") from None
        if size is not None and tmp.stat().st_size != size:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.url(rel)}: {rel} is truncated")
        os.replace(tmp, local)

    def listdir(self, rel: str = "") -> list[tuple[str, bool]]:
        """(name, is_folder) of the entries right under ``rel``."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=False, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as err:
            raise StoreError(f"{self.url(rel)}: cannot list ({err})") from None
        return sorted((info.base_name, info.type == pafs.FileType.Directory) for info in infos)

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel``, relative to it."""
        return sorted(self.file_sizes(rel))

    def file_sizes(self, rel: str) -> dict[str, int]:
        """{path relative to ``rel``: size} of every file under ``rel``."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        prefix = self._path(rel) + "/"
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as err:
            raise StoreError(f"{self.url(rel)}: cannot list ({err})") from None
        return {info.path[len(prefix):]: info.size for info in infos if info.type == pafs.FileType.File}

    def crc32(self, rel: str) -> str:
        """The CRC32 of one file, streamed (nothing kept on this node)."""
        from raylth.store.checksums import crc32_stream

        def chunks():
            with self.fs.open_input_stream(self._path(rel)) as src:
                while chunk := src.read(_CHUNK):
                    yield chunk
        try:
            return crc32_stream(chunks())
        except OSError as err:
            raise StoreError(f"{self.url(rel)}: cannot read ({err})") from None

    def delete(self, rel: str) -> None:
        from pyarrow import fs as pafs

        info = self._info(rel)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self._path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self._path(rel))

    def copy_tree(self, src: str, dst: str) -> None:
        for name in self.files(src):
            if self._local:
                self.fs.create_dir(self._path(f"{dst}/{name}").rsplit("/", 1)[0], recursive=True)
            self.fs.copy_file(self._path(f"{src}/{name}"), self._path(f"{dst}/{name}"))

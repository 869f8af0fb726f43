"""A storage root given as a URI (s3://bucket/path, gs://..., file:///...),
reached through pyarrow filesystems as Ray reaches its own storage.

A bucket has no folder rename and no file lock, so a remote store works on
a node-local cache (RAYLTH_CACHE, default ~/.cache/raylth) and commits an
artifact by uploading its files and then its manifest: an artifact exists
remotely once its manifest does, so none is ever seen half-written.

Every failure of the storage reaches callers as one line (StoreError): as
StoreUnreachable when the bucket kept failing after its retries
(filesystems.py), which says that nothing was lost and to rerun.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from pathlib import Path

from raylth.errors import StoreError, StoreUnreachable

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 8 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_uri(root) -> bool:
    return isinstance(root, str) and bool(_URI.match(root))


def cache_root() -> Path:
    return Path(os.environ.get("RAYLTH_CACHE") or Path.home() / ".cache" / "raylth").expanduser().resolve()


class Remote:
    """Files under one URI; paths are relative to it, '/'-separated."""

    def __init__(self, uri: str):
        from raylth.store.filesystems import open_filesystem

        try:
            self.fs, base = open_filesystem(uri)
        except StoreError:
            raise
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

    @contextlib.contextmanager
    def _reporting(self, action: str, rel: str):
        """An OSError in the block raised as one line naming the storage, ``action`` and ``rel``."""
        try:
            yield
        except OSError as err:
            if err.errno in DISK_FULL:  # a file:// store's own disk: said as a full disk is (exit 1)
                raise
            raise self._failure(err, action, rel) from err

    def _failure(self, err: OSError, action: str, rel: str) -> StoreError:
        from raylth.store.filesystems import is_transient

        detail = " ".join(str(err).split())
        if not is_transient(err):  # missing, refused, a local disk: the caller says what it means
            return StoreError(f"{self.url(rel)}: cannot {action} ({detail})")
        attempts = getattr(self.fs, "attempts", None)
        tried = f"; {attempts} attempts" if attempts else ""
        return StoreUnreachable(f"storage {self.display}: the bucket keeps failing to {action} {rel or 'its root'} "
                                f"({detail}{tried}); nothing stored was lost: rerun the same command to resume")

    def _info(self, rel: str):
        with self._reporting("look up", rel):
            return self.fs.get_file_info(self._path(rel))

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

        def whole() -> bytes:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return f.read()
        with self._reporting("read", rel):
            return self._reread(whole)

    def _reread(self, read):
        """``read()``, retried where the SDK does not retry it (filesystems.reading)."""
        from raylth.store.filesystems import reading

        return reading(read, getattr(self.fs, "attempts", None))

    def write(self, rel: str, data: bytes) -> None:
        """One object; on a bucket a PUT replaces it whole, on a local disk a rename does."""
        with self._reporting("write", rel):
            self._write(self._path(rel), data)

    def _write(self, target: str, data: bytes) -> None:
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
        """One file; on a bucket its object appears whole once uploaded, or not at all."""
        with self._reporting("upload", rel):
            self._upload(local, self._path(rel))

    def _upload(self, local: Path, target: str) -> None:
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

        def copy() -> None:  # from the start each time
            with self.fs.open_input_stream(self._path(rel)) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
        try:
            self._reread(copy)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno in DISK_FULL:  # this node's cache is full: not the storage's fault
                raise
            raise self._failure(err, "download", rel) from err
        if size is not None and tmp.stat().st_size != size:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.url(rel)}: {rel} is truncated")
        os.replace(tmp, local)

    def listdir(self, rel: str = "") -> list[tuple[str, bool]]:
        """(name, is_folder) of the entries right under ``rel``."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=False, allow_not_found=True)
        with self._reporting("list", rel):
            infos = self.fs.get_file_info(selector)
        return sorted((info.base_name, info.type == pafs.FileType.Directory) for info in infos)

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel``, relative to it."""
        return sorted(self.file_sizes(rel))

    def file_sizes(self, rel: str) -> dict[str, int]:
        """{path relative to ``rel``: size} of every file under ``rel``."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._path(rel), recursive=True, allow_not_found=True)
        prefix = self._path(rel) + "/"
        with self._reporting("list", rel):
            infos = self.fs.get_file_info(selector)
        return {info.path[len(prefix):]: info.size for info in infos if info.type == pafs.FileType.File}

    def crc32(self, rel: str) -> str:
        """The CRC32 of one file, streamed (nothing kept on this node)."""
        from raylth.store.checksums import crc32_stream

        def chunks():
            with self.fs.open_input_stream(self._path(rel)) as src:
                while chunk := src.read(_CHUNK):
                    yield chunk
        with self._reporting("read", rel):
            return self._reread(lambda: crc32_stream(chunks()))

    def delete(self, rel: str) -> None:
        from pyarrow import fs as pafs

        info = self._info(rel)
        with self._reporting("delete", rel):
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(self._path(rel))
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(self._path(rel))

    def copy_tree(self, src: str, dst: str) -> None:
        for name in self.files(src):
            with self._reporting("copy", f"{src}/{name}"):
                if self._local:
                    self.fs.create_dir(self._path(f"{dst}/{name}").rsplit("/", 1)[0], recursive=True)
                self.fs.copy_file(self._path(f"{src}/{name}"), self._path(f"{dst}/{name}"))

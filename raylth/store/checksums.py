"""Checksums of artifact files, as the manifest records them.

A manifest maps each file of an artifact to ``{"size": bytes, "crc32":
"8 hex digits"}`` (artifacts written before checksums existed map it to the
size alone: those are checked by size). CRC32 (zlib) runs at several GB/s,
faster than a disk reads, so every file read from the store is checked in
full; ``bench/checksums.py`` measures it against sha256 on ResNet-18
artifacts.

Checking every file of a large store each time a sweep starts would still
read the whole store, so what was checked is remembered per node in
``<root>/.verified/<id>.json`` with each file's size and modification time:
a file changed since (rewritten, truncated, a byte flipped in place) is
read again. ``raylth verify`` ignores that memory and reads everything.
"""

from __future__ import annotations

import zlib
from pathlib import Path

_CHUNK = 8 << 20


def crc32_bytes(data: bytes) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def crc32_stream(chunks) -> str:
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return f"{crc & 0xFFFFFFFF:08x}"


def crc32_file(path: Path) -> str:
    def chunks():
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    return crc32_stream(chunks())


def entry(path: Path) -> dict:
    """A file's manifest entry."""
    return {"size": path.stat().st_size, "crc32": crc32_file(path)}


def size_of(entry) -> int:
    return entry if isinstance(entry, int) else int(entry["size"])


def crc_of(entry) -> str | None:
    """The recorded checksum, or None for an artifact written before checksums."""
    return None if isinstance(entry, int) else entry.get("crc32")


def stamp(path: Path) -> list[int]:
    """What ``.verified`` compares: the file's size and modification time."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]

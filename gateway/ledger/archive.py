"""Archive stores: where sealed segments are kept outside the live ledger.

One interface (put, read back, digest, list) behind which retention's archive
directory sits today (DirectoryArchive: gzip files), and an object store can
sit later. Retention writes through it; `gateway verify --archive` reads
through it. Every copy is checked by reading it back: a store is trusted by
the BLAKE3 its `archived` ledger entry records, never by its own word.

Why gzip rather than lzma: it streams in 256 KiB of memory at any size, takes
about 2 s per 64 MiB segment on a desktop core (lzma's fastest preset takes
twice as long for files 15 % smaller), and every system reads it.
"""

from __future__ import annotations

import abc
import gzip
import os
import threading
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from gateway.errors import GatewayError, StorageError
from gateway.ledger import format as fmt
from gateway.ledger.store import fsync_directory

__all__ = ["ARCHIVE_ERRORS", "ArchiveStore", "DirectoryArchive", "archive_name", "list_archives"]

ARCHIVE_SUFFIX = ".gz"
# gzip's default level: on ledger data within 2 % of level 9's size at twice its speed.
GZIP_LEVEL = 6
ARCHIVE_MODE = 0o640  # as segments: group-readable for auditors
# Segments are copied, hashed and compared in 1 MiB pieces: memory stays flat
# whatever the segment size, and a stop request is noticed within one piece.
COPY_CHUNK_BYTES = 1024 * 1024


class Stopped(GatewayError):
    """The gateway is stopping: a copy in progress gives up where it is."""


def archive_name(segment_name: str) -> str:
    return segment_name + ARCHIVE_SUFFIX


def parse_archive_name(name: str) -> int | None:
    """The first seq of an archive named `<segment name>.gz`; None for any other file."""
    if not name.endswith(ARCHIVE_SUFFIX):
        return None
    return fmt.parse_segment_name(name[: -len(ARCHIVE_SUFFIX)])


def list_archives(directory: Path) -> list[tuple[int, Path]]:
    """Archived segments sorted by first seq. Missing directory: none."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(first, directory / n) for n in names if (first := parse_archive_name(n)) is not None]
    return sorted(found)


def open_archive(path: Path) -> BinaryIO:
    """The segment's bytes, decompressed while they are read."""
    return gzip.open(path, "rb")  # type: ignore[return-value]


# Decompressing a damaged or cut archive raises one of these.
ARCHIVE_ERRORS = (OSError, EOFError, zlib.error)


def _digest(stream: BinaryIO, stop: threading.Event | None = None) -> tuple[str, int]:
    hasher = blake3()
    size = 0
    while chunk := stream.read(COPY_CHUNK_BYTES):
        if stop is not None and stop.is_set():
            raise Stopped
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def segment_digest(path: Path, stop: threading.Event | None = None) -> tuple[str, int]:
    """(BLAKE3 hex, size) of a segment file."""
    with open(path, "rb") as f:
        return _digest(f, stop)


def archive_digest(path: Path, stop: threading.Event | None = None) -> tuple[str, int]:
    """(BLAKE3 hex, size) of an archive's decompressed bytes; StorageError if unreadable."""
    try:
        with open_archive(path) as f:
            return _digest(f, stop)
    except ARCHIVE_ERRORS as exc:
        raise StorageError(f"archive {path} cannot be read: {exc}") from None


def write_archive(segment: Path, archive_dir: Path, stop: threading.Event) -> dict[str, Any]:
    """Compress `segment` into archive_dir and check the copy; returns what `archived` records.

    Written under a temporary name, synced, renamed over any earlier copy, the
    directory synced; then the file is dropped from the page cache and read
    back from the storage, and must decompress to the segment's BLAKE3.
    """
    name = archive_name(segment.name)
    final = archive_dir / name
    tmp = archive_dir / (name + ".tmp")
    hasher = blake3()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, ARCHIVE_MODE)
    try:
        with open(fd, "wb") as raw:
            # The segment's name in the gzip header (`gunzip -N` restores it);
            # mtime 0: the same segment always compresses to the same bytes.
            with (
                open(segment, "rb") as src,
                gzip.GzipFile(segment.name, "wb", GZIP_LEVEL, raw, mtime=0) as gz,
            ):
                while chunk := src.read(COPY_CHUNK_BYTES):
                    if stop.is_set():
                        raise Stopped
                    hasher.update(chunk)
                    size += len(chunk)
                    gz.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
            os.posix_fadvise(raw.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(archive_dir)
    digest = hasher.hexdigest()
    if archive_digest(final, stop) != (digest, size):
        final.unlink()  # never leave a copy that does not match where it could be trusted
        raise StorageError(f"{final} does not read back as {segment.name}")
    return {
        "segment": segment.name,
        "bytes": size,
        "blake3": digest,
        "archive_dir": str(archive_dir.absolute()),
        "archive_file": name,
        "archive_bytes": final.stat().st_size,
    }


class ArchiveStore(abc.ABC):
    """Sealed segments kept outside the live ledger, named by their segment file name."""

    @abc.abstractmethod
    def put(self, segment: Path, stop: threading.Event) -> dict[str, Any]:
        """Copy `segment` in, read it back, and return what the `archived` entry records."""

    @abc.abstractmethod
    def open(self, name: str) -> BinaryIO:
        """The segment's bytes as stored (decompressed as they are read)."""

    @abc.abstractmethod
    def list(self) -> list[tuple[int, str]]:
        """(first seq, segment name) of every archived segment, in seq order."""

    def digest(self, name: str, stop: threading.Event | None = None) -> tuple[str, int]:
        """(BLAKE3 hex, size) of the stored segment's bytes; StorageError if unreadable."""
        try:
            with self.open(name) as f:
                return _digest(f, stop)
        except ARCHIVE_ERRORS as exc:
            raise StorageError(f"archive {self.where(name)} cannot be read: {exc}") from None

    def where(self, name: str) -> str:
        return name


class DirectoryArchive(ArchiveStore):
    """gzip files in a local directory (retention.archive_dir)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, segment: Path, stop: threading.Event) -> dict[str, Any]:
        return write_archive(segment, self.directory, stop)

    def open(self, name: str) -> BinaryIO:
        return open_archive(self.directory / archive_name(name))

    def list(self) -> list[tuple[int, str]]:
        return [(first, fmt.segment_name(first)) for first, _p in list_archives(self.directory)]

    def where(self, name: str) -> str:
        return str(self.directory / archive_name(name))

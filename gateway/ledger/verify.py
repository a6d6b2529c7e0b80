"""`gateway verify`: re-derive the chain over every segment, from genesis or a checkpoint.

Trusts nothing but the bytes: no index, no stored head. The cost is reading and
hashing; CBOR payloads are never decoded, except the few `system` entries of
retention once it has removed segments.

When the oldest live segment starts after seq 1, retention removed what came
before it: the chain then starts at that segment's prev_hash, and the ledger
must hold, among the entries that verify, the `checkpoint` entry that recorded
exactly that seq and hash (docs/ledger-format.md, "Retention"). With an
archive directory, archived segments (decompressed as they are read) and live
ones are verified together as one chain, each segment must match the BLAKE3
its `archived` entry recorded, and a segment both archived and live must be
the same bytes in both places.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from gateway.errors import LedgerCorruption, StorageError
from gateway.ledger import format as fmt
from gateway.ledger import mark as hwm
from gateway.ledger import retention
from gateway.ledger.archive import (
    ARCHIVE_ERRORS,
    COPY_CHUNK_BYTES,
    DirectoryArchive,
    archive_name,
    open_archive,
)
from gateway.ledger.store import (
    READ_CHUNK_BYTES,
    Head,
    SegmentReader,
    TailState,
    list_segments,
    newest_segment_is_torn,
)

# Live segments are first checked each on its own (`_clean_segment`), in
# parallel worker processes when there is enough to share: the chain links
# inside a segment do not depend on other segments, only its first link does,
# and that is checked in order afterwards. Below this many bytes of segments,
# starting workers costs more than it saves (~0.1 s each).
PARALLEL_MIN_BYTES = 128 * 1024 * 1024


@dataclass(slots=True)
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: bytes
    tail_incomplete: bool = False
    segments: int = 0
    bytes_read: int = 0
    first_bad_seq: int | None = None
    file: str | None = None
    offset: int | None = None
    reason: str | None = None
    # Where the chain started: (0, GENESIS), or a retained checkpoint.
    start: Head = field(default_factory=lambda: Head(0, fmt.GENESIS_HASH))
    checkpoint_seq: int | None = None  # the `checkpoint` entry that vouches for `start`
    # When that entry is a head-only restore's `restored`: where the earlier
    # entries are (endpoint, bucket, box).
    restored_from: dict[str, Any] | None = None
    archive: Path | None = None
    archived_segments: int = 0  # segments read from the archive
    overlaps: int = 0  # segments both archived and live (compared byte for byte)
    # Seqs given up for good by `gateway accept-loss`: (first, last, segment after them).
    losses: list[tuple[int, int, str]] = field(default_factory=list)
    mark_seq: int | None = None  # the high-water mark's seq, when the ledger has one

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "from": {"seq": self.start.seq, "hash": self.start.hash.hex()},
            "head": {"seq": self.head_seq, "hash": self.head_hash.hex()},
            "tail_incomplete": self.tail_incomplete,
            "segments": self.segments,
        }
        if self.checkpoint_seq is not None:
            out["from"]["checkpoint_seq"] = self.checkpoint_seq
        if self.restored_from is not None:
            out["from"]["restored_from"] = self.restored_from
        if self.losses:
            out["losses"] = [
                {"first_seq": a, "last_seq": b, "segment": name} for a, b, name in self.losses
            ]
        if self.mark_seq is not None:
            out["high_water_seq"] = self.mark_seq
        if self.archive is not None:
            out["archive"] = {
                "dir": str(self.archive),
                "segments": self.archived_segments,
                "overlaps": self.overlaps,
            }
        if not self.ok:
            out.update(
                first_bad_seq=self.first_bad_seq,
                file=self.file,
                offset=self.offset,
                reason=self.reason,
            )
        return out


@dataclass(frozen=True, slots=True)
class _Source:
    """One segment to verify: a live file, or an archive decompressed as it is read."""

    first: int
    path: Path
    archived: bool
    twin: Path | None = None  # an archived copy of this live segment

    def open(self, hashing: bool) -> tuple[SegmentReader, _Stream | None]:
        """A reader, and the stream that hashes what it reads when `hashing` or archived."""
        if self.archived:
            stream = _Stream(open_archive(self.path))
        elif hashing:
            stream = _Stream(open(self.path, "rb"))  # noqa: SIM115 - closed with the reader
        else:
            return SegmentReader(self.path), None
        return SegmentReader(self.path, file=stream), stream


class _Stream:
    """A segment's bytes as they are read: their BLAKE3 and size, and decompression errors.

    A damaged archive reads as ending early (the reader then finds the segment
    cut short) and keeps the reason in `error`.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hasher = blake3()
        self.size = 0
        self.error = ""

    def read(self, n: int) -> bytes:
        if self.error:
            return b""
        try:
            data = self.raw.read(n)
        except ARCHIVE_ERRORS as exc:
            self.error = f"archive cannot be decompressed: {exc}"
            return b""
        self.hasher.update(data)
        self.size += len(data)
        return data

    def digest(self) -> tuple[str, int]:
        """BLAKE3 and size of the whole segment (reads what the frames left)."""
        while self.read(COPY_CHUNK_BYTES):
            pass
        return self.hasher.hexdigest(), self.size

    def close(self) -> None:
        self.raw.close()


@dataclass
class _Records:
    """Retention entries among the frames verified so far."""

    checkpoints: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    archived: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def watch(
        self, frames: Iterator[tuple[int, int, memoryview, memoryview]]
    ) -> Iterator[tuple[int, int, memoryview, memoryview]]:
        for frame in frames:
            found = retention.record_of(frame[2][fmt.FRAME_HEADER_BYTES :], _RECORDS)
            if found is not None:
                self.add(frame[1], *found)
            yield frame

    def add(self, seq: int, name: str, detail: dict[str, Any]) -> None:
        if name == retention.CHECKPOINT and _is_checkpoint(detail):
            self.checkpoints[detail["last_seq"]] = (seq, detail)
        elif name == retention.RESTORED and detail.get("head_only") is True:
            # A head-only restore: the ledger starts after the replaced box's head.
            start = {**detail, "last_seq": detail.get("head_seq"), "hash": detail.get("head_hash")}
            if _is_checkpoint(start):
                self.checkpoints[start["last_seq"]] = (seq, start)
        elif name == retention.ARCHIVED:
            self.archived[str(detail.get("segment"))] = (seq, detail)


# The system entries verify looks for: retention's, and a head-only restore's.
_RECORDS = (retention.ARCHIVED, retention.CHECKPOINT, retention.RESTORED)


def _is_checkpoint(detail: dict[str, Any]) -> bool:
    """A checkpoint detail with a seq and a chain hash (64 hex digits) to start from."""
    digest = detail.get("hash")
    return (
        isinstance(detail.get("last_seq"), int)
        and isinstance(digest, str)
        and len(digest) == 2 * fmt.HASH_BYTES
        and all(c in "0123456789abcdef" for c in digest)
    )


def _sources(directory: Path, archive_dir: Path | None) -> list[_Source]:
    live = dict(list_segments(directory))
    store = DirectoryArchive(archive_dir) if archive_dir is not None else None
    archived = (
        {first: store.directory / archive_name(name) for first, name in store.list()}
        if store
        else {}
    )
    return [
        _Source(first, live[first], False, archived.get(first))
        if first in live
        else _Source(first, archived[first], True)
        for first in sorted(live.keys() | archived.keys())
    ]


@dataclass(frozen=True, slots=True)
class _Clean:
    """A live segment whose every frame chains from its header, ending cleanly at EOF."""

    first: int
    prev_hash: bytes
    last_seq: int
    last_hash: bytes
    size: int
    records: list[tuple[int, str, dict[str, Any]]] | None  # None: not looked for
    skipped: int = 0


# Told the bytes just checked (an increment): once per read of a segment's
# clean check (READ_CHUNK_BYTES, 4 MiB), per segment otherwise. For a progress
# figure only; a segment found unclean is read again and counted again.
Progress = Callable[[int], None]


def _clean_segment(path: Path, watch: bool, progress: Progress | None = None) -> _Clean | None:
    """Check one segment on its own, as fast as Python allows; None if it is not clean.

    The same checks as SegmentReader.frames() and the chain loop below, in one
    tight loop without a generator or tuples per frame. Anything unusual (a
    damaged header or frame, a torn or zero-filled tail) returns None, and the
    careful path reads the segment again to say what and where. With `watch`,
    retention's records among the frames are collected as well.
    """
    unpack = fmt._FRAME_HEADER.unpack_from
    not_unit_start = ~fmt.UNIT_START
    hdr, hash_bytes = fmt.FRAME_HEADER_BYTES, fmt.HASH_BYTES
    records: list[tuple[int, str, dict[str, Any]]] | None = [] if watch else None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return None  # removed by retention since it was listed
    with f:
        head = f.read(fmt.SEGMENT_HEADER_BYTES)
        if progress is not None:
            progress(len(head))
        try:
            header = fmt.decode_segment_header(head)
        except fmt.HeaderDamaged:
            return None
        prev = header.prev_hash
        expect = header.first_seq
        size = fmt.SEGMENT_HEADER_BYTES
        buf = b""
        mv = memoryview(buf)
        pos = 0
        need = hdr
        while True:
            avail = len(buf) - pos
            if avail >= hdr:
                # The header's CRC is not checked here: the chain hash covers the
                # header too, so a damaged one fails below all the same.
                length, seq, _crc = unpack(buf, pos)
                length &= not_unit_start
                if seq != expect or length > fmt.MAX_PAYLOAD_BYTES:
                    return None
                end = pos + hdr + length + hash_bytes
                if end - pos <= avail:
                    stored = mv[pos : end - hash_bytes]
                    digest = blake3(prev + stored).digest()
                    if mv[end - hash_bytes : end] != digest:
                        return None
                    if records is not None:
                        found = retention.record_of(stored[hdr:], _RECORDS)
                        if found is not None:
                            records.append((seq, *found))
                    prev = digest
                    expect = seq + 1
                    pos = end
                    continue
                need = end - pos
            more = f.read(max(READ_CHUNK_BYTES, need - avail))
            if progress is not None:
                progress(len(more))
            if not more:
                if avail:
                    return None  # a torn, zero or damaged tail: the careful path says which
                break
            size += len(more)
            buf = bytes(mv[pos:]) + more
            mv = memoryview(buf)
            pos = 0
    return _Clean(
        header.first_seq, header.prev_hash, expect - 1, prev, size, records, header.skipped
    )


def _check_live_segments(
    sources: list[_Source], watch: bool, jobs: int | None, progress: Progress | None = None
) -> dict[int, _Clean | None]:
    """Each live segment checked on its own: in up to `jobs` processes when worth it."""
    live = [s for s in sources if not s.archived and s.twin is None]
    if not live:
        return {}
    try:
        total = sum(s.path.stat().st_size for s in live)
    except FileNotFoundError:
        return {}  # retention is removing segments right now: the careful path copes
    workers = min(len(live), jobs if jobs else os.cpu_count() or 1)
    if workers <= 1 or total < PARALLEL_MIN_BYTES:
        return {s.first: _clean_segment(s.path, watch, progress) for s in live}
    # Fork (cheap) unless another thread runs: forking then could copy a held
    # lock. "spawn" re-imports the main module, which must then be guarded.
    method = "fork" if threading.active_count() == 1 else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = pool.map(_clean_segment, [s.path for s in live], [watch] * len(live))
        out = {}
        for s, clean in zip(live, done, strict=True):
            out[s.first] = clean
            if progress is not None and clean is not None:
                progress(clean.size)
        return out


def verify_ledger(
    directory: Path,
    archive_dir: Path | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Verify every segment under `directory` (and `archive_dir`); missing: an empty ledger.

    `jobs`: at most this many processes check live segments (default: one per CPU).
    `progress`: told the bytes checked as they are (see `Progress`); the result
    is the same with or without it.
    """
    # The mark is read before the segments: a running gateway only ever moves it
    # up to entries already on disk, so it cannot be ahead of what is read next.
    try:
        mark: hwm.Mark | LedgerCorruption | None = hwm.read_mark(directory)
    except LedgerCorruption as exc:
        mark = exc
    sources = _sources(directory, archive_dir)
    hashing = archive_dir is not None
    running = fmt.GENESIS_HASH
    expect = 1
    result = VerifyResult(True, 0, 0, running, segments=len(sources), archive=archive_dir)
    records = _Records()
    # Retention entries are always looked for: a checkpoint must agree with the
    # chain even while its segment is still here (cheap: few entries are system).
    watching = True
    at_start = True  # no segment header read yet
    start_path = directory  # the segment the chain started in, when not at genesis
    seen: dict[str, tuple[str, tuple[str, int]]] = {}  # segment name -> (file, BLAKE3 and size)

    def bad(path: Path, offset: int, seq: int, reason: str) -> VerifyResult:
        # entries/head describe the prefix that did verify, up to the damage.
        result.head_seq = seq - 1
        result.entries = result.head_seq - result.start.seq
        result.head_hash = running
        result.ok = False
        result.first_bad_seq = seq
        result.file = str(path)
        result.offset = offset
        result.reason = reason
        return result

    chain = fmt.chain_hash
    # Archives need every byte hashed as it is read: the careful path only then.
    checked = {} if hashing else _check_live_segments(sources, True, jobs, progress)
    for index, src in enumerate(sources):
        first, path = src.first, src.path
        last_segment = index == len(sources) - 1 and not src.archived
        clean = checked.get(first)
        if clean is not None and clean.records is None and (watching or (first > 1 and at_start)):
            clean = None  # its retention records are needed and were not collected
        with contextlib.ExitStack() as scope:
            reader = stream = None
            if clean is not None:
                header = fmt.SegmentHeader(clean.first, clean.prev_hash, clean.skipped)
            else:
                try:
                    reader, stream = src.open(hashing)
                    scope.enter_context(reader)  # closed however this segment ends
                except FileNotFoundError:
                    if at_start and not src.archived:
                        result.segments -= 1
                        continue  # removed by retention since it was listed
                    raise
                result.archived_segments += src.archived
                result.bytes_read += reader.size
                try:
                    header = reader.read_header()
                except (EOFError, fmt.HeaderDamaged) as exc:
                    if last_segment and newest_segment_is_torn(path):
                        # A segment being created, or whose creation a crash cut short.
                        result.tail_incomplete = True
                        break
                    if stream is not None and stream.error:
                        return bad(path, 0, expect, stream.error)  # the archive's own error
                    if src.archived:
                        return bad(path, 0, expect, f"archive holds no valid segment: {exc}")
                    return bad(path, 0, expect, str(exc) or "segment header incomplete")
            if header.first_seq != first:
                return bad(path, 0, expect, "segment header first_seq does not match its name")
            if at_start and first - header.skipped > 1:
                # Retention removed what came before: start where this segment
                # says the chain was; a checkpoint must vouch for it (below).
                result.start = Head(first - header.skipped - 1, header.prev_hash)
                running, expect, watching = header.prev_hash, first - header.skipped, True
                start_path = path
            at_start = False
            if header.skipped and first - header.skipped == expect:
                # An accepted loss: these seqs were given up for good (`loss` entry).
                result.losses.append((expect, first - 1, path.name))
                expect = first
            if first != expect:
                before = sources[index - 1].path.name if index else "the start"
                gap = f"seq {expect} to {first - 1} are missing" if first > expect else "overlap"
                return bad(
                    path,
                    0,
                    expect,
                    f"{gap}: the segment after {before} ({path.name}) starts at seq {first}, "
                    f"expected {expect}",
                )
            if header.prev_hash != running:
                return bad(path, 0, expect, "segment prev_hash does not match the chain")
            if clean is not None:
                for seq, name, detail in clean.records or ():
                    records.add(seq, name, detail)
                running, expect = clean.last_hash, clean.last_seq + 1
                result.bytes_read += clean.size
                continue
            assert reader is not None
            with reader:
                frames = records.watch(reader.frames()) if watching else reader.frames()
                for offset, seq, stored, digest in frames:
                    computed = chain(running, stored)
                    if computed != digest:
                        return bad(path, offset, seq, "chain hash does not match")
                    running = computed
                    expect = seq + 1
                if stream is not None and stream.error:
                    return bad(path, reader.end_offset, expect, stream.error)
                if reader.tail == TailState.DAMAGED:
                    return bad(path, reader.end_offset, expect, reader.damage)
                if reader.tail != TailState.CLEAN:
                    if not last_segment:
                        return bad(
                            path,
                            reader.end_offset,
                            expect,
                            f"segment cut short ({reader.tail} tail) before its successor",
                        )
                    result.tail_incomplete = True
                if stream is not None:
                    seen[fmt.segment_name(first)] = (str(path), stream.digest())
                    result.bytes_read += stream.size
                if progress is not None:
                    progress(stream.size if stream is not None else reader.size)
            if src.twin is not None:
                result.overlaps += 1
                try:
                    twin = DirectoryArchive(src.twin.parent).digest(fmt.segment_name(first))
                except StorageError as exc:
                    return bad(src.twin, 0, first, str(exc))
                if twin != seen[fmt.segment_name(first)][1]:
                    return bad(src.twin, 0, first, "archived copy differs from the live segment")
    result.entries = expect - 1 - result.start.seq - sum(b - a + 1 for a, b, _n in result.losses)
    result.head_seq = expect - 1
    result.head_hash = running
    if result.start.seq:
        problem = _check_start(result, records)
        if problem is not None:
            result.start, seq, reason = problem
            running = result.start.hash
            return bad(start_path, 0, seq, reason)
    contradiction = _check_checkpoints(directory, archive_dir, result, records)
    if contradiction is not None:
        seq, reason = contradiction
        return bad(directory, 0, seq, reason)
    mark_problem = _check_mark(directory, result, mark)
    if mark_problem is not None:
        seq, reason = mark_problem
        return bad(directory / hwm.MARK_FILE, 0, seq, reason)
    for name, (file, got) in seen.items():
        if name in records.archived:
            entry_seq, detail = records.archived[name]
            if got != (detail.get("blake3"), detail.get("bytes")):
                return bad(
                    Path(file),
                    0,
                    fmt.parse_segment_name(name) or 0,
                    f"bytes differ from the BLAKE3 its archived entry (seq {entry_seq}) records",
                )
    return result


def _check_checkpoints(
    directory: Path, archive_dir: Path | None, result: VerifyResult, records: _Records
) -> tuple[int, str] | None:
    """A checkpoint whose seq is still in the verified chain must record its hash."""
    inside = {
        last_seq: (entry_seq, detail)
        for last_seq, (entry_seq, detail) in records.checkpoints.items()
        if result.start.seq < last_seq <= result.head_seq
    }
    if not inside:
        return None
    anchors = [ExpectedAnchor(last_seq, str(d["hash"])) for last_seq, (_e, d) in inside.items()]
    for check in check_anchors(directory, anchors, archive_dir):
        if check.found is not None and not check.ok:
            entry_seq, _detail = inside[check.anchor.seq]
            return check.anchor.seq, (
                f"the retention checkpoint at seq {entry_seq} records another hash for seq "
                f"{check.anchor.seq} than the chain has there"
            )
    return None


def _check_mark(
    directory: Path, result: VerifyResult, mark: hwm.Mark | LedgerCorruption | None
) -> tuple[int, str] | None:
    """The high-water mark's entry must be in the verified chain, with its hash:
    entries a completed sync covered cannot have vanished from the end."""
    if isinstance(mark, LedgerCorruption):
        return 0, mark.reason
    if mark is None:
        return None
    result.mark_seq = mark.seq
    if mark.seq > result.head_seq:
        return (
            result.head_seq + 1,
            f"seq {result.head_seq + 1} to {mark.seq} are missing: the high-water mark "
            f"records seq {mark.seq} as durable ({mark.state})",
        )
    if mark.seq <= result.start.seq:
        return None  # removed by retention: a checkpoint vouches for what came before
    (check,) = check_anchors(directory, [ExpectedAnchor(mark.seq, mark.hash.hex())])
    if check.found is not None and not check.ok:
        return mark.seq, (
            f"the chain hash at seq {mark.seq} is not the one the high-water mark records"
        )
    return None


def _check_start(result: VerifyResult, records: _Records) -> tuple[Head, int, str] | None:
    """None when a verified checkpoint vouches for the start; else what failed.

    A failure is (the last point the ledger does vouch for, first bad seq,
    reason): the checkpoint of the start when it records another hash, else
    the latest checkpoint before the start (or genesis), after which the
    history is missing.
    """
    start = result.start
    found = records.checkpoints.get(start.seq)
    if found is not None:
        entry_seq, detail = found
        if detail.get("hash") == start.hash.hex():
            result.checkpoint_seq = entry_seq
            if detail.get("head_only") is True:
                result.restored_from = {k: detail.get(k) for k in ("endpoint", "bucket", "box")}
            return None
        recorded = Head(start.seq, bytes.fromhex(str(detail.get("hash"))))
        return (
            recorded,
            start.seq + 1,
            (
                f"the oldest segment starts from another hash than the retention checkpoint "
                f"at seq {entry_seq} records for seq {start.seq}"
            ),
        )
    older = [seq for seq in records.checkpoints if seq < start.seq]
    vouched = Head(0, fmt.GENESIS_HASH)
    if older:
        vouched = Head(max(older), bytes.fromhex(str(records.checkpoints[max(older)][1]["hash"])))
    return (
        vouched,
        vouched.seq + 1,
        (
            f"seq {vouched.seq + 1} to {start.seq} are missing: the oldest segment starts at seq "
            f"{start.seq + 1} and no retention checkpoint records their removal"
        ),
    )


# ---- anchors from paper: does the verified chain pass through a seq and hash?

# The shortest hash accepted in an anchor: the 16 hex digits (64 bits) that
# receipts, reports and the status page print beside the seq. Shorter would
# let a forged chain match by chance too easily.
ANCHOR_MIN_HEX = 16
# An anchor as typed from paper: "SEQ:HASH", "SEQ HASH" or "seq SEQ  hash HASH".
_ANCHOR = re.compile(r"\s*(?:seq\s+)?(\d+)\s*(?::|\s)\s*(?:hash\s+)?([0-9a-fA-F]+)\s*")


@dataclass(frozen=True, slots=True)
class ExpectedAnchor:
    seq: int
    hash_hex: str  # lower case, ANCHOR_MIN_HEX to 64 digits: a prefix of the chain hash

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash_hex}"


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    anchor: ExpectedAnchor
    ok: bool
    found: str | None  # the chain hash the ledger holds at that seq (None: not held)
    reason: str = ""


def parse_anchor(text: str) -> ExpectedAnchor:
    """An anchor as typed; ValueError says what is wrong with it."""
    m = _ANCHOR.fullmatch(text)
    if m is None:
        raise ValueError(f"{text.strip()!r} is not an anchor (SEQ:HASH, as printed on paper)")
    digits = m.group(2).lower()
    if not ANCHOR_MIN_HEX <= len(digits) <= 2 * fmt.HASH_BYTES:
        raise ValueError(
            f"{text.strip()!r}: the hash needs {ANCHOR_MIN_HEX} to {2 * fmt.HASH_BYTES} hex "
            "digits (paper prints 16)"
        )
    return ExpectedAnchor(int(m.group(1)), digits)


def parse_anchor_file(text: str) -> list[ExpectedAnchor]:
    """One anchor a line; blank lines and `#` comments skipped. Errors name the line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        if line.strip():
            try:
                out.append(parse_anchor(line))
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
    return out


def check_anchors(
    directory: Path, anchors: list[ExpectedAnchor], archive_dir: Path | None = None
) -> list[AnchorCheck]:
    """Whether the ledger's chain hash at each anchor's seq begins with the anchor's hash.

    Meaningful after verify_ledger found the chain intact over the same
    segments: the stored hashes are then the chain's. Seqs removed by
    retention are found in `archive_dir` when given; the retained checkpoint's
    own seq is checked against the hash it records.
    """
    wanted: dict[int, list[ExpectedAnchor]] = {}
    for anchor in anchors:
        wanted.setdefault(anchor.seq, []).append(anchor)
    found: dict[int, str] = {}
    sources = _sources(directory, archive_dir)
    for i, source in enumerate(sources):
        end = sources[i + 1].first if i + 1 < len(sources) else None
        inside = [s for s in wanted if s >= source.first - 1 and (end is None or s < end)]
        if not inside:
            continue
        reader, _stream = source.open(False)
        with reader:
            try:
                header = reader.read_header()
            except (EOFError, fmt.HeaderDamaged):
                continue
            found.setdefault(source.first - 1 - header.skipped, header.prev_hash.hex())
            for _offset, seq, _stored, digest in reader.frames():
                if seq in wanted:
                    found[seq] = bytes(digest).hex()
                if seq >= max(inside):
                    break
    results = []
    for anchor in anchors:
        held = found.get(anchor.seq)
        if held is None:
            where = "not in the ledger" + ("" if archive_dir else " (or in an archive: --archive)")
            results.append(AnchorCheck(anchor, False, None, where))
        elif held.startswith(anchor.hash_hex):
            results.append(AnchorCheck(anchor, True, held))
        else:
            results.append(AnchorCheck(anchor, False, held, "the chain has another hash there"))
    return results

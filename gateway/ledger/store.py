"""Segment files on disk: reading frames, recovering the tail, staging batches.

Only `gateway run` writes (LedgerWriter, under the state directory lock). Every
other command reads (LedgerReader), never truncates, and treats an incomplete
frame at the live tail as the end of the ledger.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from blake3 import blake3

from gateway.errors import LedgerCorruption, LedgerDamaged
from gateway.ledger import format as fmt
from gateway.ledger import mark as hwm

# Read segments in 4 MiB chunks: large enough that per-read overhead vanishes
# against hashing, small enough to keep resident memory low while verifying.
READ_CHUNK_BYTES = 4 * 1024 * 1024

# The loop stops reading clients while this many bytes are staged for the next
# commit, so memory stays bounded when the disk is slow.
MAX_BATCH_BYTES = 8 * 1024 * 1024

# The durability thread syncs at least once per this many bytes of a batch
# (whole frames: a unit ends with the frame that crosses the mark). A power cut
# can therefore only tear the last unit: everything before it was synced.
SYNC_UNIT_BYTES = 2 * 1024 * 1024

# The largest frame the gateway writes: a line at the max_line_bytes ceiling
# (8 MiB, config.py) plus its source, flags and framing.
LARGEST_FRAME_BYTES = 8 * 1024 * 1024 + 64 * 1024

# Start-up recovery cuts at most this much after the last good entry (one sync
# unit and the frame that crossed its mark). More than that cannot be a torn
# write: it is damage, and the gateway refuses to start rather than cut it.
MAX_TORN_BYTES = SYNC_UNIT_BYTES + LARGEST_FRAME_BYTES

SEGMENT_MODE = 0o640  # group-readable: auditors read the ledger without writing it
DIR_MODE = 0o750

QUARANTINE_DIR = "quarantine"


class TailState:
    CLEAN = "clean"  # the segment ends exactly after its last frame
    INCOMPLETE = "incomplete"  # the last frame is cut short (torn or still being written)
    ZEROS = "zeros"  # only zero bytes follow the last frame (torn write on some filesystems)
    DAMAGED = "damaged"  # something other than a torn write: see `damage`


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Segments sorted by first seq. Missing directory: no segments."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        first = fmt.parse_segment_name(name)
        if first is not None:
            found.append((first, directory / name))
    found.sort()
    return found


def _all_zero(data: bytes | memoryview) -> bool:
    return not bytes(data).strip(b"\x00")


class SegmentReader:
    """Reads one segment file front to back, yielding its frames.

    After `frames()` is exhausted, `end_offset` is the byte after the last good
    frame, `tail` a TailState, and `damage` the reason when tail is DAMAGED.
    Reading stops at the first frame whose header fails its CRC, whose seq is
    not the next one, or whose bytes are incomplete; it never checks hashes
    (callers decide which links to check).
    """

    def __init__(
        self, path: Path, chunk_bytes: int = READ_CHUNK_BYTES, file: BinaryIO | None = None
    ) -> None:
        """`file`: read the segment from this stream instead (an archived copy being
        decompressed); `path` then only names it, and `size` is 0 (not known)."""
        self.path = path
        self.chunk_bytes = chunk_bytes
        if file is None:
            file = open(path, "rb")  # noqa: SIM115 - closed by close()/context
            self.size = os.fstat(file.fileno()).st_size
        else:
            self.size = 0
        self.file = file
        self.header: fmt.SegmentHeader | None = None
        self.end_offset = 0
        self.tail = TailState.CLEAN
        self.damage = ""
        self.frame_count = 0

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def read_header(self) -> fmt.SegmentHeader:
        """Raises HeaderDamaged; a header shorter than 64 bytes raises EOFError."""
        raw = self.file.read(fmt.SEGMENT_HEADER_BYTES)
        if len(raw) < fmt.SEGMENT_HEADER_BYTES:
            raise EOFError("segment header incomplete")
        self.header = fmt.decode_segment_header(raw)
        self.end_offset = fmt.SEGMENT_HEADER_BYTES
        return self.header

    def frames(
        self, offset: int | None = None, seq: int | None = None
    ) -> Iterator[tuple[int, int, memoryview, memoryview]]:
        """Yield (offset, seq, stored bytes, stored chain hash) for each good frame.

        The views point into a read buffer: use them before asking for the next
        frame. `offset` and `seq` resume at a frame boundary found earlier.
        """
        if self.header is None:
            self.read_header()
        assert self.header is not None
        expect = self.header.first_seq if seq is None else seq
        if offset is not None:
            self.file.seek(offset)
        hdr_size = fmt.FRAME_HEADER_BYTES
        overhead = fmt.FRAME_OVERHEAD
        parse = fmt.parse_frame_header
        read = self.file.read
        base = fmt.SEGMENT_HEADER_BYTES if offset is None else offset  # file offset of buf[0]
        buf = b""
        mv = memoryview(buf)
        pos = 0
        eof = False
        while True:
            avail = len(buf) - pos
            need = hdr_size
            if avail >= hdr_size:
                try:
                    length, seq = parse(buf, pos)
                except fmt.HeaderDamaged as exc:
                    self._stop_at(base + pos, mv[pos:], eof, str(exc))
                    return
                need = length + overhead
                if avail >= need:
                    if seq != expect:
                        self._damaged(base + pos, f"seq {seq} where {expect} was expected")
                        return
                    end = pos + need
                    yield base + pos, seq, mv[pos : end - 32], mv[end - 32 : end]
                    pos = end
                    expect += 1
                    self.frame_count += 1
                    self.end_offset = base + pos
                    continue
            if eof:
                self._stop_at(base + pos, mv[pos:], True, "")
                return
            # Keep the partial frame and read on (a frame may span chunks).
            want = max(self.chunk_bytes, need - avail)
            more = read(want)
            eof = len(more) < want
            base += pos
            buf = bytes(mv[pos:]) + more
            mv = memoryview(buf)
            pos = 0

    def _stop_at(self, offset: int, rest: memoryview, eof: bool, reason: str) -> None:
        """Classify what follows the last good frame."""
        self.end_offset = offset
        if not rest and eof:
            self.tail = TailState.CLEAN
        elif _all_zero(rest) and (eof or self._rest_of_file_is_zero()):
            self.tail = TailState.ZEROS
        elif not reason and eof:
            self.tail = TailState.INCOMPLETE
        else:
            self._damaged(offset, reason or "frame incomplete before the end of the file")

    def _rest_of_file_is_zero(self) -> bool:
        while chunk := self.file.read(self.chunk_bytes):
            if not _all_zero(chunk):
                return False
        return True

    def _damaged(self, offset: int, reason: str) -> None:
        self.end_offset = offset
        self.tail = TailState.DAMAGED
        self.damage = reason


@dataclass(frozen=True, slots=True)
class LaterUnit:
    """A sync unit found after a bad frame: its first frame's offset and seq."""

    offset: int
    seq: int


def find_later_unit(path: Path, offset: int, seq: int, size: int) -> LaterUnit | None:
    """The first sync unit that starts after the frame at `offset` (seq `seq`,
    which failed a check), or None.

    The writer syncs each unit before it writes any byte of the next, so such a
    unit proves that a completed sync covered the bad frame: damage, not a torn
    write. Frames are walked while their headers hold (a unit start found so can
    only be a real one); where the headers break, the rest of the file is searched
    for a unit start header with a good CRC and a seq that could follow. A header
    forged inside an event's payload could be found there: recovery then reports
    damage instead of cutting, the safe way round (nothing is ever cut for it).
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        size = min(size, len(m))
        pos, expect = _walk_frames(m, offset, seq, size, stop_at_unit=offset)
        if pos < size and not _is_unit_start_of(m, pos, expect):
            pos, expect = _search_unit_start(m, pos, expect, size)
        return LaterUnit(pos, expect) if pos < size else None


def last_seq_held(path: Path, offset: int, seq: int, size: int) -> int:
    """The highest seq that the bytes of `path` from `offset` (where seq `seq`
    begins) to `size` may hold: the seqs a damaged range must give up so that
    none of them is ever given out again.

    Frames are followed by their headers; where they break, from the next unit
    start found (as in find_later_unit); where none is found, the bytes left are
    counted as if full of the smallest frames (an upper bound)."""
    if size <= offset:
        return seq - 1
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        size = min(size, len(m))
        pos, expect = offset, seq
        while True:
            pos, expect = _walk_frames(m, pos, expect, size)
            if pos >= size:
                return expect - 1
            found, found_seq = _search_unit_start(m, pos, expect, size)
            if found >= size:
                return expect - 1 + (size - pos) // fmt.FRAME_OVERHEAD
            pos, expect = found, found_seq


def _is_unit_start_of(m: mmap.mmap, pos: int, expect: int) -> bool:
    """A good frame header at pos with seq `expect` that starts a unit."""
    if pos + fmt.FRAME_HEADER_BYTES > len(m):
        return False
    try:
        _length, seq = fmt.parse_frame_header(m, pos)
    except fmt.HeaderDamaged:
        return False
    return seq == expect and fmt.is_unit_start(m, pos)


def _walk_frames(
    m: mmap.mmap, pos: int, expect: int, size: int, stop_at_unit: int | None = None
) -> tuple[int, int]:
    """Follow frame headers from pos (seq `expect`) while they hold and their frames
    end within `size`. Returns (where the walk stopped, the seq expected there):
    `size` when the frames reach the end; with `stop_at_unit`, the first unit start
    after that offset. A frame that runs past the end stops the walk at `size`."""
    while pos + fmt.FRAME_HEADER_BYTES <= size:
        try:
            length, seq = fmt.parse_frame_header(m, pos)
        except fmt.HeaderDamaged:
            return pos, expect
        if seq != expect:
            return pos, expect
        if stop_at_unit is not None and pos > stop_at_unit and fmt.is_unit_start(m, pos):
            return pos, expect
        pos += length + fmt.FRAME_OVERHEAD
        expect += 1
    return (size if pos >= size or stop_at_unit is not None else pos), expect


def _search_unit_start(m: mmap.mmap, pos: int, expect: int, size: int) -> tuple[int, int]:
    """Search (pos, size) for a unit start header with a good CRC whose seq could
    follow `expect` (at most one per FRAME_OVERHEAD bytes). Returns (its offset,
    its seq), or (size, expect) when there is none."""
    if pos + fmt.FRAME_HEADER_BYTES >= size:
        return size, expect
    lo, hi = expect + 1, expect + 1 + (size - pos) // fmt.FRAME_OVERHEAD
    lo_bytes, hi_bytes = lo.to_bytes(8, "big"), hi.to_bytes(8, "big")
    same = next((i for i in range(8) if lo_bytes[i] != hi_bytes[i]), 8)
    common = lo_bytes[:same]  # the seq bytes every candidate's header begins with
    # Byte 0 of a unit start: bit 7 set, the length's top bits (at most 16 MiB) 0 or 1.
    candidate = re.compile(rb"(?=[\x80\x81]...%s)" % re.escape(common), re.DOTALL)
    for match in candidate.finditer(m, pos + 1, size):
        at = match.start()
        if at + fmt.FRAME_HEADER_BYTES > size:
            break
        try:
            _length, seq = fmt.parse_frame_header(m, at)
        except fmt.HeaderDamaged:
            continue
        if lo <= seq <= hi and fmt.is_unit_start(m, at):
            return at, seq
    return size, expect


def newest_segment_is_torn(path: Path) -> bool:
    """A segment whose creation never completed: shorter than its header, or only zeros.

    Only the newest segment can be in this state (a crash while creating it);
    nothing in it was ever acknowledged, so readers treat it as the live tail
    and start-up recovery removes it.
    """
    with open(path, "rb") as f:
        head = f.read(fmt.SEGMENT_HEADER_BYTES)
        if len(head) < fmt.SEGMENT_HEADER_BYTES:
            return True
        try:
            fmt.decode_segment_header(head)
        except fmt.HeaderDamaged:
            if not _all_zero(head):
                return False
            while chunk := f.read(READ_CHUNK_BYTES):
                if not _all_zero(chunk):
                    return False
            return True
    return False


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: bytes


class LedgerReader:
    """Read-only access for export, query and status: never writes, never truncates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entries(
        self, from_seq: int = 1, to_seq: int | None = None
    ) -> Iterator[tuple[int, memoryview, bytes]]:
        """Yield (seq, payload, chain hash) in seq order; the live tail ends the ledger.

        The payload view is only valid until the next item is asked for. Damage
        (including a missing segment) raises LedgerCorruption; hashes are not
        checked here (that is `verify`'s job).
        """
        hdr = fmt.FRAME_HEADER_BYTES
        for seq, stored, digest in self.frames(from_seq, to_seq):
            yield seq, stored[hdr:], digest

    def frames(
        self, from_seq: int = 1, to_seq: int | None = None
    ) -> Iterator[tuple[int, memoryview, bytes]]:
        """As `entries`, with each entry's stored bytes (frame header and payload,
        what its chain hash covers) in place of its payload."""
        segments = list_segments(self.directory)
        start = 0
        for i, (first, _path) in enumerate(segments):
            if first <= from_seq:
                start = i
        expect: int | None = None
        for i in range(start, len(segments)):
            first, path = segments[i]
            if to_seq is not None and first > to_seq:
                return
            last_segment = i == len(segments) - 1
            try:
                reader = SegmentReader(path)
            except FileNotFoundError:
                if expect is None:
                    continue  # removed by retention since it was listed: the next one is first
                raise
            with reader:
                try:
                    header = reader.read_header()
                except (EOFError, fmt.HeaderDamaged) as exc:
                    if last_segment and newest_segment_is_torn(path):
                        return
                    raise LedgerCorruption(str(path), 0, first, str(exc)) from None
                # A segment after an accepted loss starts `skipped` seqs later.
                if expect is not None and first - header.skipped != expect:
                    raise LedgerCorruption(
                        str(path), 0, expect, f"segment starts at seq {first}, expected {expect}"
                    )
                for _offset, seq, stored, digest in reader.frames():
                    if seq < from_seq:
                        continue
                    yield seq, stored, bytes(digest)
                    if seq == to_seq:
                        return
                if reader.tail == TailState.DAMAGED or (
                    not last_segment and reader.tail != TailState.CLEAN
                ):
                    raise LedgerCorruption(
                        str(path),
                        reader.end_offset,
                        first + reader.frame_count,
                        reader.damage
                        or f"segment ends with {reader.tail} bytes before its successor",
                    )
                expect = first + reader.frame_count

    def base(self) -> Head:
        """Where the live ledger's chain starts: the entry before its oldest segment.

        (0, GENESIS) until retention removes segments; then the seq and chain hash
        of the last removed entry, from the oldest live segment's header.
        """
        for first, path in list_segments(self.directory):
            try:
                with SegmentReader(path) as reader:
                    header = reader.read_header()
                    return Head(first - 1 - header.skipped, header.prev_hash)
            except FileNotFoundError:
                continue  # removed by retention since it was listed
            except (EOFError, fmt.HeaderDamaged):
                break
        return Head(0, fmt.GENESIS_HASH)

    def head(self) -> Head:
        """The last complete entry, found by reading only the last segment."""
        segments = list_segments(self.directory)
        for first, path in reversed(segments):
            with SegmentReader(path) as reader:
                try:
                    header = reader.read_header()
                except (EOFError, fmt.HeaderDamaged):
                    continue
                last = Head(first - 1 - header.skipped, header.prev_hash)
                for _offset, seq, _stored, digest in reader.frames():
                    last = Head(seq, bytes(digest))
                return last
        return Head(0, fmt.GENESIS_HASH)


# --------------------------------------------------------------------------- writing


@dataclass(slots=True)
class SegmentWrite:
    """Bytes to write at `offset` of one segment file; `create` for a new segment."""

    path: Path
    offset: int
    data: bytearray
    create: bool = False
    # Positions in `data` after which to sync before writing on (always at
    # frame ends): every frame with fsync "always", else every SYNC_UNIT_BYTES.
    sync_points: list[int] = field(default_factory=list)


@dataclass(slots=True)
class CommitBatch:
    writes: list[SegmentWrite]
    first_seq: int
    last_seq: int
    last_hash: bytes
    nbytes: int
    entries: int
    staged_at: float = 0.0  # monotonic time the first entry was staged


@dataclass(slots=True)
class RecoveryReport:
    """What start-up recovery discarded from a torn tail (recorded as a system entry)."""

    segment: str
    offset: int
    discarded_bytes: int
    discarded_blake3: str
    quarantine_file: str | None
    reason: str
    removed_segments: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LedgerDamage:
    """Acknowledged entries that are gone or damaged: seqs first_seq..last_seq.

    `good` is the last intact entry before them (the chain continues from it
    once the loss is accepted); `file` and `offset` say where the damage
    starts (`file` may be a segment that no longer exists).
    """

    first_seq: int
    last_seq: int
    file: str
    offset: int
    reason: str
    good: Head

    def describe(self) -> str:
        span = (
            f"seq {self.first_seq}"
            if self.first_seq == self.last_seq
            else f"seqs {self.first_seq} to {self.last_seq}"
        )
        return f"{span}: {self.reason} ({Path(self.file).name} offset {self.offset})"

    def as_json(self) -> dict:
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "file": self.file,
            "offset": self.offset,
            "reason": self.reason,
            "good_seq": self.good.seq,
            "good_hash": self.good.hash.hex(),
        }


class LedgerWriter:
    """The single writer: recovers the tail at open, then stages entries into batches.

    Runs on the event loop thread. It frames and chains entries in memory; the
    durability thread writes and syncs each CommitBatch; `batch_done` then
    advances the durable head.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        per_entry_sync: bool = False,
        clock=time.monotonic,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.per_entry_sync = per_entry_sync
        self.clock = clock
        self.next_seq = 1
        self.last_hash = fmt.GENESIS_HASH
        self.durable = Head(0, fmt.GENESIS_HASH)
        self.recovery: RecoveryReport | None = None
        self._seg_path = directory / fmt.segment_name(1)
        self._seg_size = 0
        self._writes: list[SegmentWrite] = []
        self._staged_bytes = 0
        self._staged_entries = 0
        self._staged_first = 1
        self._staged_at = 0.0
        self._unit_start = 0  # where the current sync unit began in the open write
        self._unit_open = False  # the current sync unit holds a frame (the next is not its first)
        # The live segment marks unit starts (version 2). A version 1 segment
        # continued after an upgrade is filled as it was written, unmarked.
        self._mark_units = True
        self.segments_created = 0
        self.sync = True  # False: fsync "off" (benchmarks): the mark is not synced either
        self.opened = False
        # Acknowledged entries found gone or damaged (at open, or by check_files):
        # nothing is staged until `accept_loss`.
        self.damage: LedgerDamage | None = None
        self.mark: hwm.Mark | None = None  # as found at open
        self._seg_ino: tuple[int, int] | None = None  # (st_dev, st_ino) of the open segment
        self._durable_end = 0  # the open segment's size once everything durable is in it
        self._durable_path = self._seg_path  # the segment the last durable entry is in

    # ---- open and recover

    def open(self) -> LedgerWriter:
        """Recover the tail, then hold the segments to the high-water mark.

        Damage found (acknowledged entries gone, or damaged where a completed
        sync covered them) is kept, never cut: `damage` says what, and nothing
        is appended until `accept_loss`.
        """
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        hwm.forget_damage(self.directory)  # judged again from the files, here
        self.mark = mark = hwm.read_mark(self.directory)
        covered = mark.seq if mark is not None else 0
        segments = list_segments(self.directory)
        removed: list[str] = []
        while segments:
            first, path = segments[-1]
            if not newest_segment_is_torn(path) and not (
                # With a mark, a segment starting after it was created by a batch
                # whose sync never completed (the mark follows that sync, before
                # any acknowledgement): a bad header there is a torn creation.
                mark is not None and first > covered and _header_damaged(path)
            ):
                break
            # A segment whose creation never completed: nothing in it was ever acknowledged.
            self._quarantine(path, 0)
            path.unlink()
            fsync_directory(self.directory)
            removed.append(path.name)
            segments.pop()
        if not segments:
            if covered:
                self._damaged_at(
                    1,
                    covered,
                    str(self.directory / fmt.segment_name(1)),
                    0,
                    "every segment is missing",
                    Head(0, fmt.GENESIS_HASH),
                )
                return self
            self._create_first_segment()
        else:
            self._recover_last(*segments[-1])
            if self.damage is not None:
                return self
        if removed:
            if self.recovery is None:
                self.recovery = RecoveryReport(
                    self._seg_path.name, self._seg_size, 0, "", None, "torn segment creation"
                )
            self.recovery.removed_segments = removed
        self.durable = Head(self.next_seq - 1, self.last_hash)
        self._sync_open_segment()
        self._write_mark(hwm.RUNNING, reset=True)
        self._start_staging()
        self.opened = True
        return self

    def _sync_open_segment(self) -> None:
        """Make what recovery kept durable (a kill -9 leaves it in the page cache
        only), so that the mark may claim it; and note which file it is."""
        fd = os.open(self._seg_path, os.O_RDONLY)
        try:
            if self.sync:
                os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._seg_ino = (st.st_dev, st.st_ino)
        self._durable_end = self._seg_size
        self._durable_path = self._seg_path

    def _write_mark(self, state: str, detail: dict | None = None, reset: bool = False) -> bool:
        head = self.durable if state != hwm.DAMAGED else Head(self.next_seq - 1, self.last_hash)
        return hwm.write_mark(
            self.directory,
            hwm.Mark(head.seq, head.hash, state, detail or {}),
            sync=self.sync,
            dirsync=fsync_directory,
            reset=reset,
        )

    def write_periodic_mark(self, head: Head) -> bool:
        """From the ledger's marker thread: `head` is durable (never on the commit path)."""
        return hwm.write_mark(
            self.directory, hwm.Mark(head.seq, head.hash), sync=self.sync, dirsync=fsync_directory
        )

    def write_clean_mark(self) -> bool:
        """At a clean stop: everything appended is durable and nothing follows."""
        if not self.opened or self.damage is not None or self._staged_entries:
            return False
        return self._write_mark(hwm.CLEAN)

    def _damaged_at(
        self, first: int, last: int, file: str, offset: int, reason: str, good: Head
    ) -> None:
        self.damage = LedgerDamage(first, max(first, last), file, offset, reason, good)
        self.next_seq = self.damage.last_seq + 1
        self.durable = good

    def _create_first_segment(self) -> None:
        path = self.directory / fmt.segment_name(1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SEGMENT_MODE)
        try:
            os.write(fd, fmt.encode_segment_header(1, fmt.GENESIS_HASH))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.directory)
        self._seg_path = path
        self._seg_size = fmt.SEGMENT_HEADER_BYTES
        self.next_seq = 1
        self.last_hash = fmt.GENESIS_HASH

    def _recover_last(self, first: int, path: Path) -> None:
        """Find the last good entry of the newest segment; cut a torn tail after it.

        Frame headers are walked over the whole segment (cheap), but chain links
        are only checked across the last MAX_TORN_BYTES: only the last sync unit
        can have been torn, and start-up time must not grow with the ledger.
        With a high-water mark, nothing up to the mark's seq may be cut: damage
        there (or entries missing up to it) is recorded in `damage` and kept.
        """
        mark = self.mark
        covered = mark.seq if mark is not None else 0
        size = path.stat().st_size
        check_from = max(fmt.SEGMENT_HEADER_BYTES, size - MAX_TORN_BYTES)
        good_end = fmt.SEGMENT_HEADER_BYTES
        reason = ""
        damage_offset = fmt.SEGMENT_HEADER_BYTES
        marked_hash: bytes | None = None  # the stored chain hash at the mark's seq
        with SegmentReader(path) as reader:
            try:
                header = reader.read_header()
            except fmt.HeaderDamaged as exc:
                if covered >= first:
                    prev = self._previous_head(first)
                    self._damaged_at(first, covered, str(path), 0, str(exc), prev)
                    return
                raise LedgerCorruption(str(path), 0, first, str(exc)) from None
            prev = header.prev_hash
            last_seq = first - 1
            before_mark: Head | None = None
            if last_seq == covered:
                marked_hash = prev
            for offset, seq, stored, digest in reader.frames():
                if seq == covered:
                    before_mark = Head(last_seq, prev)
                if offset >= check_from and fmt.chain_hash(prev, stored) != digest:
                    reason = f"chain hash of seq {seq} does not match"
                    damage_offset = offset
                    break
                prev = bytes(digest)
                last_seq = seq
                good_end = offset + len(stored) + fmt.HASH_BYTES
                if seq == covered:
                    marked_hash = prev
            else:
                good_end = damage_offset = reader.end_offset
                if reader.tail != TailState.CLEAN:
                    reason = reader.damage or f"{reader.tail} tail"
        if mark is not None and covered >= first - 1 - header.skipped:
            if last_seq < covered:
                # Entries after the mark's may have been acknowledged since it
                # was written: every seq the file may still hold is in the range.
                held = last_seq_held(path, damage_offset, last_seq + 1, size)
                self._damaged_at(
                    last_seq + 1,
                    max(covered, held),
                    str(path),
                    damage_offset,
                    (reason or "the segment ends")
                    + f"; the high-water mark records seq {covered} as durable",
                    Head(last_seq, prev),
                )
                return
            if marked_hash is not None and marked_hash != mark.hash:
                good = before_mark or self._previous_head(first)
                if good.seq >= covered:
                    good = Head(covered - 1, header.prev_hash)
                self._damaged_at(
                    good.seq + 1,
                    max(covered, last_seq),
                    str(path),
                    0,
                    f"the chain hash at seq {covered} is not the one the high-water mark records",
                    good,
                )
                return
        discarded = size - good_end
        if discarded:
            later = find_later_unit(path, good_end, last_seq + 1, size)
            if later is not None or discarded > MAX_TORN_BYTES:
                if later is not None:
                    why = (
                        f"{reason}; the sync unit starting at offset {later.offset} (seq "
                        f"{later.seq}) was written after a completed sync covered it"
                    )
                else:
                    why = (
                        f"{reason}; {discarded} bytes follow the last good entry, more than "
                        "one unsynced write can leave behind"
                    )
                self._damaged_at(
                    last_seq + 1,
                    last_seq_held(path, good_end, last_seq + 1, size),
                    str(path),
                    good_end,
                    why + ": damage, not a torn write",
                    Head(last_seq, prev),
                )
                return
            quarantined, digest_hex = self._quarantine(path, good_end)
            with open(path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
            self.recovery = RecoveryReport(
                segment=path.name,
                offset=good_end,
                discarded_bytes=discarded,
                discarded_blake3=digest_hex,
                quarantine_file=quarantined,
                reason=reason,
            )
        self._seg_path = path
        self._seg_size = good_end
        self._mark_units = header.version >= 2
        self.next_seq = last_seq + 1
        self.last_hash = prev

    def _previous_head(self, first: int) -> Head:
        """The last entry before segment `first`, from the segment before it."""
        before = [p for f, p in list_segments(self.directory) if f < first]
        if not before:
            return Head(0, fmt.GENESIS_HASH)
        last = Head(first - 1, b"")
        try:
            with SegmentReader(before[-1]) as seg:
                header = seg.read_header()
                last = Head(
                    fmt.parse_segment_name(before[-1].name) - 1 - header.skipped, header.prev_hash
                )
                for _o, seq, _s, digest in seg.frames():
                    last = Head(seq, bytes(digest))
        except (EOFError, fmt.HeaderDamaged):
            pass
        return last

    # ---- accepting a loss (gateway accept-loss, with the gateway stopped)

    def accept_loss(self, loss_payload: bytes) -> tuple[int, RecoveryReport | None]:
        """Give up the damaged seqs for good: keep the damaged bytes in quarantine,
        cut them from the segment, start a segment after the lost range whose
        header skips it, and append `loss_payload` (a `loss` entry) there.

        Returns the loss entry's seq and what was moved to quarantine.
        """
        damage = self.damage
        assert damage is not None, "nothing to accept"
        cut: RecoveryReport | None = None
        path = Path(damage.file)
        if path.exists() and damage.offset >= fmt.SEGMENT_HEADER_BYTES:
            size = path.stat().st_size
            if size > damage.offset:
                quarantined, digest_hex = self._quarantine(path, damage.offset)
                with open(path, "r+b") as f:
                    f.truncate(damage.offset)
                    os.fsync(f.fileno())
                cut = RecoveryReport(
                    path.name,
                    damage.offset,
                    size - damage.offset,
                    digest_hex,
                    quarantined,
                    damage.reason,
                )
        elif path.exists() and fmt.parse_segment_name(path.name) is not None:
            # The damage starts in the header: the whole file goes to quarantine.
            quarantined, digest_hex = self._quarantine(path, 0)
            cut = RecoveryReport(
                path.name, 0, path.stat().st_size, digest_hex, quarantined, damage.reason
            )
            path.unlink()
            fsync_directory(self.directory)
        first = damage.last_seq + 1
        skipped = first - 1 - damage.good.seq
        self._seg_path = self.directory / fmt.segment_name(first)
        fd = os.open(
            self._seg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SEGMENT_MODE
        )
        try:
            os.write(fd, fmt.encode_segment_header(first, damage.good.hash, skipped))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.directory)
        self.damage = None
        hwm.forget_damage(self.directory)
        self._seg_size = fmt.SEGMENT_HEADER_BYTES
        self._mark_units = True
        self.next_seq = first
        self.last_hash = damage.good.hash
        self.durable = Head(first - 1, damage.good.hash)
        self._start_staging()
        self.opened = True
        seq = write_entries(self, [loss_payload])[0]
        self._sync_open_segment()
        self._write_mark(hwm.RUNNING, reset=True)
        return seq, cut

    # ---- noticing damage while running (loop thread, once a second)

    def check_files(self) -> LedgerDamage | None:
        """The open segment must still be the file written, at least as long as
        what is durable in it: unlinked, replaced or cut short means acknowledged
        entries are gone. Records the damage (and a `damaged` mark) once."""
        if self.damage is not None or self._seg_ino is None:
            return None
        path = self._durable_path  # a segment staged but not yet written is not looked at
        try:
            st = os.stat(path)
        except FileNotFoundError:
            reason = "the open segment was removed"
        else:
            if (st.st_dev, st.st_ino) != self._seg_ino:
                reason = "the open segment was replaced by another file"
            elif st.st_size < self._durable_end:
                reason = f"the open segment shrank to {st.st_size} bytes"
            else:
                return None
        first = fmt.parse_segment_name(path.name) or 1
        good = self._previous_head(first)
        offset = 0
        if reason.startswith("the open segment shrank"):
            try:
                with SegmentReader(path) as seg:
                    seg.read_header()
                    for _o, seq, _s, digest in seg.frames():
                        good = Head(seq, bytes(digest))
                    offset = seg.end_offset
            except (OSError, EOFError, fmt.HeaderDamaged):
                pass
        self.damage = LedgerDamage(
            good.seq + 1, max(good.seq + 1, self.next_seq - 1), str(path), offset, reason, good
        )
        self._write_mark(hwm.DAMAGED, self.damage.as_json())
        return self.damage

    def _quarantine(self, path: Path, offset: int) -> tuple[str | None, str]:
        """Keep the bytes recovery discards, for a post-mortem; never delete evidence."""
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        digest = blake3(data).hexdigest()
        if not data:
            return None, digest
        qdir = self.directory / QUARANTINE_DIR
        qdir.mkdir(mode=DIR_MODE, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in itertools.count():
            name = f"{path.name}.{offset}.{stamp}" + (f".{n}" if n else "") + ".tail"
            try:  # O_EXCL: a second recovery at the same place never overwrites the first
                fd = os.open(qdir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SEGMENT_MODE)
                break
            except FileExistsError:
                continue
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(qdir)
        return f"{QUARANTINE_DIR}/{name}", digest

    # ---- staging (event loop thread)

    def _start_staging(self) -> None:
        self._writes = [self._new_write(self._seg_path, self._seg_size)]
        self._staged_bytes = 0
        self._staged_entries = 0
        self._staged_first = self.next_seq

    def _new_write(self, path: Path, offset: int, create: bool = False) -> SegmentWrite:
        """A write is always synced before the next one starts: a new sync unit."""
        self._unit_start = 0
        self._unit_open = False
        return SegmentWrite(path, offset, bytearray(), create)

    @property
    def staged_bytes(self) -> int:
        return self._staged_bytes

    @property
    def staged_entries(self) -> int:
        return self._staged_entries

    def append(self, payload: bytes) -> int:
        """Frame, chain and stage one entry; returns its seq. Durable only after its batch."""
        if self.damage is not None:
            raise LedgerDamaged(self.damage.describe())
        seq = self.next_seq
        size = len(payload) + fmt.FRAME_OVERHEAD
        if self._seg_size + size > self.segment_bytes and self._seg_size > fmt.SEGMENT_HEADER_BYTES:
            self._rotate()
        # _next_starts_unit and _end_frames, inlined: the hot path of every entry.
        frame, digest = fmt.encode_frame(
            seq, payload, self.last_hash, self._mark_units and not self._unit_open
        )
        if not self._staged_entries:
            self._staged_at = self.clock()
        w = self._writes[-1]
        w.data += frame
        end = len(w.data)
        if self.per_entry_sync or end - self._unit_start >= SYNC_UNIT_BYTES:
            w.sync_points.append(end)
            self._unit_start = end
            self._unit_open = False
        else:
            self._unit_open = True
        self._seg_size += size
        self._staged_bytes += size
        self._staged_entries += 1
        self.next_seq = seq + 1
        self.last_hash = digest
        return seq

    def _end_frames(self, w: SegmentWrite) -> None:
        """After frames were added to `w`: the unit holds a frame; end it at its size."""
        self._unit_open = True
        end = len(w.data)
        if self.per_entry_sync or end - self._unit_start >= SYNC_UNIT_BYTES:
            w.sync_points.append(end)
            self._unit_start = end
            self._unit_open = False

    def fast_limits(self) -> tuple[int, bool, int, bool]:
        """For frames made elsewhere (gateway/ingest/fast.py): the bytes the live
        segment may still take, whether it holds no entry yet, the bytes left in
        the current sync unit (1 with a sync point after every frame), and
        whether the next frame starts a unit (and so carries UNIT_START)."""
        unit_used = len(self._writes[-1].data) - self._unit_start
        return (
            self.segment_bytes - self._seg_size,
            self._seg_size <= fmt.SEGMENT_HEADER_BYTES,
            1 if self.per_entry_sync else SYNC_UNIT_BYTES - unit_used,
            self._next_starts_unit,
        )

    @property
    def _next_starts_unit(self) -> bool:
        """Whether the next frame gets UNIT_START (the same with fsync "off", where
        nothing is synced: docs/ledger-format.md "Sync units" says what follows)."""
        return self._mark_units and not self._unit_open

    def append_frames(self, frames: bytes, count: int, last_hash: bytes) -> int:
        """Stage `count` consecutive frames as `append` would have, one by one;
        returns the first one's seq. The caller made them for next_seq after
        last_hash, within `fast_limits` (so no segment starts among them and a
        sync point can only fall at their end)."""
        if self.damage is not None:
            raise LedgerDamaged(self.damage.describe())
        first = self.next_seq
        if not self._staged_entries:
            self._staged_at = self.clock()
        w = self._writes[-1]
        w.data += frames
        self._end_frames(w)
        size = len(frames)
        self._seg_size += size
        self._staged_bytes += size
        self._staged_entries += count
        self.next_seq = first + count
        self.last_hash = last_hash
        return first

    @property
    def live_segment_name(self) -> str:
        """The segment new entries go to (its file exists once its first batch is written)."""
        return self._seg_path.name

    @property
    def live_segment_has_entries(self) -> bool:
        return self._seg_size > fmt.SEGMENT_HEADER_BYTES

    def seal_segment(self) -> bool:
        """The next entry starts a new segment (sealing by age); False if the live one is empty."""
        if not self.live_segment_has_entries:
            return False
        self._rotate()
        return True

    def _rotate(self) -> None:
        seq = self.next_seq
        self._seg_path = self.directory / fmt.segment_name(seq)
        w = self._new_write(self._seg_path, 0, create=True)
        w.data += fmt.encode_segment_header(seq, self.last_hash)
        self._mark_units = True
        self._writes.append(w)
        self._seg_size = fmt.SEGMENT_HEADER_BYTES
        self._staged_bytes += fmt.SEGMENT_HEADER_BYTES
        self.segments_created += 1

    def take_batch(self) -> CommitBatch | None:
        """Hand everything staged so far to the durability thread."""
        if not self._staged_entries:
            return None
        batch = CommitBatch(
            writes=[w for w in self._writes if w.data or w.create],
            first_seq=self._staged_first,
            last_seq=self.next_seq - 1,
            last_hash=self.last_hash,
            nbytes=self._staged_bytes,
            entries=self._staged_entries,
            staged_at=self._staged_at,
        )
        self._writes = [self._new_write(self._seg_path, self._seg_size)]
        self._staged_bytes = 0
        self._staged_entries = 0
        self._staged_first = self.next_seq
        return batch

    def batch_done(self, batch: CommitBatch) -> None:
        self.durable = Head(batch.last_seq, batch.last_hash)
        last = batch.writes[-1]
        self._durable_path = last.path
        if last.create:
            try:
                st = os.stat(last.path)
                self._seg_ino = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                pass  # check_files reports it at the next look
        self._durable_end = last.offset + len(last.data)


def start_ledger_at(directory: Path, head: Head) -> Path:
    """Begin an empty ledger after `head`: its first segment, holding only a header,
    starts at seq head.seq + 1 and chains from head.hash.

    For `gateway fleet restore --head-only`: the entries up to head.seq are kept
    elsewhere (the fleet store), exactly as retention leaves a ledger whose
    first segment starts after seq 1. LedgerWriter.open() then takes it up like
    any other; the caller's first entry must vouch for the start (verify.py).
    """
    if head.seq < 1 or len(head.hash) != fmt.HASH_BYTES:
        raise ValueError("a ledger is started after an entry: seq at least 1 and its chain hash")
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if list_segments(directory):
        raise FileExistsError(f"{directory} already holds a ledger")
    path = directory / fmt.segment_name(head.seq + 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SEGMENT_MODE)
    try:
        os.write(fd, fmt.encode_segment_header(head.seq + 1, head.hash))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(directory)
    return path


def _header_damaged(path: Path) -> bool:
    with open(path, "rb") as f:
        try:
            fmt.decode_segment_header(f.read(fmt.SEGMENT_HEADER_BYTES))
        except fmt.HeaderDamaged:
            return True
    return False


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_batch(batch: CommitBatch, fds: dict[Path, int], sync: bool) -> int:
    """Write (and, if `sync`, fdatasync) one batch; returns the number of syncs.

    Writes go to explicit offsets (pwrite), so retrying a batch after an error
    rewrites the same bytes in the same place. Called on the durability thread.
    """
    syncs = 0
    for w in batch.writes:
        fd = fds.get(w.path)
        if fd is None:
            flags = os.O_WRONLY | (os.O_CREAT if w.create else 0)
            if hasattr(os, "O_CLOEXEC"):
                flags |= os.O_CLOEXEC
            fd = os.open(w.path, flags, SEGMENT_MODE)
            for old_path, old_fd in list(fds.items()):
                os.close(old_fd)
                del fds[old_path]
            fds[w.path] = fd
        view = memoryview(w.data)
        start = 0
        for end in [*w.sync_points, len(view)] if sync else [len(view)]:
            if end > start:
                _pwrite_all(fd, view[start:end], w.offset + start)
                if sync:
                    os.fdatasync(fd)
                    syncs += 1
                start = end
        if w.create and sync:
            fsync_directory(w.path.parent)
            syncs += 1
    if any(w.create for w in batch.writes):
        # A new segment: the high-water mark follows it before any of this
        # batch is acknowledged (once per segment, not per commit).
        directory = batch.writes[-1].path.parent
        # Its two syncs (file, directory) are not counted: `syncs` counts the
        # ledger's own, as the commit statistics report them.
        hwm.write_mark(
            directory,
            hwm.Mark(batch.last_seq, batch.last_hash),
            sync=sync,
            dirsync=fsync_directory,
        )
    return syncs


def write_entries(
    writer: LedgerWriter, payloads: Iterable[bytes], *, batch: int = 1, sync: bool = True
) -> list[int]:
    """Append payloads and commit them on the calling thread, `batch` entries per
    commit (and the rest at the end); returns their seqs.

    For tools, benchmarks and tests that build a ledger without a running
    gateway; the gateway itself commits through its durability thread.
    """
    fds: dict[Path, int] = {}
    seqs = []
    try:
        for payload in payloads:
            seqs.append(writer.append(payload))
            if writer.staged_entries >= batch:
                _commit(writer, fds, sync)
        _commit(writer, fds, sync)
    finally:
        for fd in fds.values():
            os.close(fd)
    return seqs


def _commit(writer: LedgerWriter, fds: dict[Path, int], sync: bool) -> None:
    taken = writer.take_batch()
    if taken is not None:
        write_batch(taken, fds, sync)
        writer.batch_done(taken)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class LedgerFollower:
    """Reads the entries appended since last time, resuming at a frame boundary.

    For the query indexer: each call continues where the previous one stopped
    instead of rescanning the segment, and moves on to the next segment once
    the current one has ended cleanly.
    """

    def __init__(self, directory: Path, next_seq: int) -> None:
        self.directory = directory
        self.next_seq = next_seq
        self.path: Path | None = None
        self.offset: int | None = None  # of the frame holding next_seq, once known

    def read(self, limit: int, to_seq: int) -> list[tuple[int, bytes, bytes]]:
        """Up to `limit` (seq, payload, chain hash) up to `to_seq`, in seq order."""
        out: list[tuple[int, bytes, bytes]] = []
        while len(out) < limit and self.next_seq <= to_seq:
            if self.path is None:
                segments = list_segments(self.directory)
                if not segments:
                    return out
                if self.next_seq < segments[0][0]:
                    # Retention removed the entries up to there: go on from the oldest kept.
                    self.next_seq = segments[0][0]
                candidates = [p for first, p in segments if first <= self.next_seq]
                self.path, self.offset = candidates[-1], None
            try:
                reader = SegmentReader(self.path)
            except FileNotFoundError:  # removed by retention: look again
                self.path = None
                continue
            with reader:
                try:
                    reader.read_header()
                except (EOFError, fmt.HeaderDamaged):
                    return out  # a segment being created: next time
                seq_at = self.next_seq if self.offset is not None else None
                for offset, seq, stored, digest in reader.frames(self.offset, seq_at):
                    if seq < self.next_seq:
                        continue
                    if seq > to_seq:
                        return out
                    out.append((seq, bytes(stored[fmt.FRAME_HEADER_BYTES :]), bytes(digest)))
                    self.next_seq = seq + 1
                    self.offset = offset + len(stored) + len(digest)
                    if len(out) >= limit:
                        return out
                ended = reader.tail == TailState.CLEAN
            following = [
                p
                for first, p in list_segments(self.directory)
                if first >= self.next_seq and p != self.path
            ]
            if not (ended and following):
                return out
            first = fmt.parse_segment_name(following[0].name) or 0
            if first > self.next_seq:
                # Only across an accepted loss: the next segment's header skips the gap.
                try:
                    with SegmentReader(following[0]) as after:
                        header = after.read_header()
                except (OSError, EOFError, fmt.HeaderDamaged):
                    return out
                if first - header.skipped != self.next_seq:
                    return out
                self.next_seq = first
            self.path, self.offset = following[0], None
        return out

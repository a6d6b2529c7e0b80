"""Idempotent sends: which (app, event_id) pairs the ledger already holds, within a window.

A client that retries after a lost acknowledgement sends the same event again
under the same `event_id`; the gateway answers with the original seq instead
of storing it twice (docs/protocol.md, "Exactly once with event_id"). This
module keeps what that needs in a fixed memory budget, and keeps it across
restarts:

- `IdTable`: the newest ids, each as (id key, content fingerprint, seq), in
  seq order in a ring, found through an open-addressing index. 32 bytes per
  id at full capacity, allocated from anonymous memory that the kernel only
  backs once touched, so a quiet box pays for what it holds.
- `Snapshot`: the table written to the state directory with the (seq, chain
  hash) it is valid up to. Derived state: at start it is used only when the
  ledger holds that exact entry, then brought up to date from the ledger;
  otherwise the table is rebuilt from the ledger alone.
- `Deduplicator`: the loop's side. It answers the intake's questions, loads
  or rebuilds the table on a thread of its own at start (lines with an
  `event_id` are answered `retry` until it is ready: guessing could store a
  duplicate or refuse a new event), and saves snapshots off the loop.

Ids are keyed by a 64-bit BLAKE3 digest of (app, event_id) and events are
compared by a 64-bit BLAKE3 digest of the event as stored; what the rare
digest collisions can and cannot do is written in docs/protocol.md.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cbor2
from blake3 import blake3

from gateway.config import DedupConfig
from gateway.errors import GatewayError
from gateway.ingest.validate import valid_event_id
from gateway.ledger import entries
from gateway.ledger.commit import Ledger
from gateway.ledger.store import Head, LedgerReader, list_segments

log = logging.getLogger("gateway.ops")

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "NEW",
    "RETRY",
    "Deduplicator",
    "IdTable",
    "content_key",
    "id_key",
]

# What `Deduplicator.lookup` found.
NEW = 0  # not known: store the event, then `add` it
DUPLICATE = 1  # the same event is stored: answer with its seq
CONFLICT = 2  # a different event is stored under this id: refuse
RETRY = 3  # the table is still loading: the client must send again later

# One ring record: id key, content fingerprint, seq (three uint64).
RECORD_WORDS = 3
RECORD_BYTES = 8 * RECORD_WORDS
# Window bookkeeping: one (receive time, first seq) mark per minute of ids, so
# an id is forgotten between window_s and window_s + 60 s after it came, and a
# day's window costs 1,440 marks rather than a time per id.
MARK_INTERVAL_US = 60_000_000
# Expired ids are evicted a few at a time as new ids come (amortised: no pause
# on the loop however many expire at once).
EVICT_PER_ADD = 4

_SNAPSHOT_MAGIC = b"PGWDEDUP"
_SNAPSHOT_VERSION = 1
# magic, version, capacity, valid seq, valid hash, records, marks
_SNAPSHOT_HEAD = struct.Struct("<8sIQQ32sQQ")
_MARK = struct.Struct("<QQ")
_DIGEST_BYTES = 32


def id_key(app: str | None, event_id: str) -> int:
    """The 64-bit key of an id within its app (no app: the anonymous namespace "")."""
    data = (app or "").encode() + b"\0" + event_id.encode()
    return int.from_bytes(blake3(data).digest(8), "little")


def content_key(event_cbor: bytes) -> int:
    """The 64-bit fingerprint of an event as the ledger stores it (its CBOR encoding)."""
    return int.from_bytes(blake3(event_cbor).digest(8), "little")


class IdTable:
    """The newest `capacity` ids in seq order, with their fingerprints and seqs.

    The ring holds records in insertion (seq) order; `head` and `tail` count
    records ever evicted and added, so the live ones are ring positions
    head..tail-1 modulo capacity. The index is linear probing over uint32
    slots holding ring position + 1 (0: empty), twice as many slots as the
    ring has records (load at most 1/2: short probes), and deletion shifts
    entries back rather than leaving tombstones, so the index never degrades.
    """

    def __init__(self, capacity: int) -> None:
        if not 0 < capacity < 2**31:
            raise ValueError(f"capacity {capacity} out of range")
        self.capacity = capacity
        slots = 1 << max(4, (2 * capacity - 1).bit_length())
        self._mask = slots - 1
        self._ring_map = mmap.mmap(-1, RECORD_BYTES * capacity)
        self._slot_map = mmap.mmap(-1, 4 * slots)
        self._ring = memoryview(self._ring_map).cast("Q")
        self._slots = memoryview(self._slot_map).cast("I")
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    @property
    def memory_bytes(self) -> int:
        """What the table takes when full (the ring and the index)."""
        return len(self._ring_map) + len(self._slot_map)

    def _find_slot(self, key: int) -> int:
        """The slot holding `key`, or the empty slot where it would go (negated, minus 1)."""
        ring = self._ring
        slots = self._slots
        mask = self._mask
        i = key & mask
        while True:
            entry = slots[i]
            if entry == 0:
                return -i - 1
            if ring[(entry - 1) * RECORD_WORDS] == key:
                return i
            i = (i + 1) & mask

    def get(self, key: int) -> tuple[int, int] | None:
        """(fingerprint, seq) of `key`, or None."""
        slot = self._find_slot(key)
        if slot < 0:
            return None
        base = (self._slots[slot] - 1) * RECORD_WORDS
        return self._ring[base + 1], self._ring[base + 2]

    def add(self, key: int, fingerprint: int, seq: int) -> bool:
        """Remember an id (the oldest goes when the ring is full); False if already known."""
        slot = self._find_slot(key)
        if slot >= 0:
            return False
        if self.tail - self.head == self.capacity:
            self.evict_oldest()
            slot = self._find_slot(key)  # the eviction may have shifted the empty slot
        position = self.tail % self.capacity
        base = position * RECORD_WORDS
        ring = self._ring
        ring[base] = key
        ring[base + 1] = fingerprint
        ring[base + 2] = seq
        self._slots[-slot - 1] = position + 1
        self.tail += 1
        return True

    def newest_seq(self) -> int:
        """The seq of the newest id held (0: none)."""
        if self.tail == self.head:
            return 0
        return self._ring[((self.tail - 1) % self.capacity) * RECORD_WORDS + 2]

    def oldest_seq(self) -> int:
        """The seq of the oldest id held (0: none)."""
        if self.tail == self.head:
            return 0
        return self._ring[(self.head % self.capacity) * RECORD_WORDS + 2]

    def evict_oldest(self) -> None:
        position = self.head % self.capacity
        slot = self._find_slot(self._ring[position * RECORD_WORDS])
        assert slot >= 0 and self._slots[slot] == position + 1
        self._delete_slot(slot)
        self.head += 1

    def _delete_slot(self, hole: int) -> None:
        """Empty `hole`, moving back later entries of its probe run that would lose their way."""
        ring = self._ring
        slots = self._slots
        mask = self._mask
        j = hole
        while True:
            j = (j + 1) & mask
            entry = slots[j]
            if entry == 0:
                break
            home = ring[(entry - 1) * RECORD_WORDS] & mask
            # The entry at j may move to the hole unless its home lies cyclically in (hole, j].
            if (j - home) & mask >= (j - hole) & mask:
                slots[hole] = entry
                hole = j
        slots[hole] = 0

    def records(self) -> Iterable[tuple[int, int, int]]:
        """Every (key, fingerprint, seq) held, oldest first."""
        ring = self._ring
        for n in range(self.head, self.tail):
            base = (n % self.capacity) * RECORD_WORDS
            yield ring[base], ring[base + 1], ring[base + 2]

    def record_bytes(self) -> bytes:
        """The live records, oldest first, as stored in a snapshot."""
        start = (self.head % self.capacity) * RECORD_BYTES
        count = len(self)
        end = start + count * RECORD_BYTES
        ring = self._ring_map
        if end <= len(ring):
            return ring[start:end]
        return ring[start:] + ring[: end - len(ring)]

    def load_records(self, data: bytes) -> None:
        """Fill an empty table from `record_bytes` output (at most capacity records)."""
        assert self.tail == 0
        count = len(data) // RECORD_BYTES
        if count > self.capacity:
            data = data[-self.capacity * RECORD_BYTES :]
            count = self.capacity
        self._ring_map[: len(data)] = data
        ring = self._ring
        slots = self._slots
        mask = self._mask
        for position in range(count):
            i = ring[position * RECORD_WORDS] & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = position + 1
        self.tail = count

    def close(self) -> None:
        self._ring.release()
        self._slots.release()
        self._ring_map.close()
        self._slot_map.close()


# --------------------------------------------------------------------------- snapshots

SNAPSHOT_FILE = "dedup.snapshot"


class SnapshotUnusable(GatewayError):
    """A snapshot that cannot be used: the table is built from the ledger instead."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    valid: Head  # the newest entry the records account for
    records: bytes  # IdTable.record_bytes()
    marks: tuple[tuple[int, int], ...]

    def encode(self, capacity: int) -> bytes:
        body = b"".join(
            (
                _SNAPSHOT_HEAD.pack(
                    _SNAPSHOT_MAGIC,
                    _SNAPSHOT_VERSION,
                    capacity,
                    self.valid.seq,
                    self.valid.hash,
                    len(self.records) // RECORD_BYTES,
                    len(self.marks),
                ),
                b"".join(_MARK.pack(t, s) for t, s in self.marks),
                self.records,
            )
        )
        return body + blake3(body).digest()

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        if len(data) < _SNAPSHOT_HEAD.size + _DIGEST_BYTES:
            raise SnapshotUnusable("shorter than its header")
        body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
        magic, version, _capacity, seq, chain, count, nmarks = _SNAPSHOT_HEAD.unpack_from(body)
        if magic != _SNAPSHOT_MAGIC or version != _SNAPSHOT_VERSION:
            raise SnapshotUnusable("not a snapshot of this version")
        if blake3(body).digest() != digest:
            raise SnapshotUnusable("checksum mismatch (torn or damaged)")
        marks_at = _SNAPSHOT_HEAD.size
        records_at = marks_at + nmarks * _MARK.size
        if records_at + count * RECORD_BYTES != len(body):
            raise SnapshotUnusable("length does not match its header")
        marks = tuple(_MARK.iter_unpack(body[marks_at:records_at]))
        return cls(Head(seq, chain), body[records_at:], marks)


def write_snapshot(path: Path, data: bytes) -> None:
    """Replace the snapshot file. No fsync: a snapshot lost or torn by a power cut
    is refused by its checksum or its (seq, hash) and the ledger is read instead."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- reading the ledger

# The CBOR text string "event_id" (major type 3, length 8): entries whose
# payload lacks these bytes cannot hold an id and are not decoded.
_EVENT_ID_CBOR = cbor2.dumps("event_id")


def ids_in(
    items: Iterable[tuple[int, memoryview, bytes]], not_before_us: int
) -> Iterable[tuple[int, int, int, int]]:
    """(id key, fingerprint, seq, received_at) of each event with a valid event_id among
    ledger entries (seq, payload, chain hash) received at or after `not_before_us`."""
    dumps = cbor2.dumps
    for seq, payload, _chain in items:
        raw = bytes(payload)
        if raw.find(_EVENT_ID_CBOR) < 0:
            continue
        entry = entries.decode(raw)
        event = entry.get("event")
        if entry.get("kind") != entries.EVENT or type(event) is not dict:
            continue
        received = entry.get("received_at", 0)
        event_id = event.get("event_id")
        if received < not_before_us or not valid_event_id(event_id):
            continue
        app = (entry.get("source") or {}).get("app")
        yield id_key(app, event_id), content_key(dumps(event)), seq, received


def first_seq_within(ledger_dir: Path, not_before_s: float) -> int:
    """Where a scan for entries received since `not_before_s` may start: the first
    segment written to since then (a file's mtime is its last write, never
    earlier than the entries in it)."""
    segments = list_segments(ledger_dir)
    start = segments[0][0] if segments else 1
    for first, path in segments:
        try:
            if path.stat().st_mtime >= not_before_s:
                return max(start, 1)
        except FileNotFoundError:
            continue  # removed by retention since it was listed
        start = first
    return max(start, 1)


# --------------------------------------------------------------------------- the loop's side


@dataclass(frozen=True, slots=True)
class DedupStatistics:
    state: str  # off | loading | ready
    ids: int
    capacity: int
    memory_bytes: int  # the table's size when full
    window_s: float
    duplicates: int  # resends answered with the original seq
    conflicts: int  # different events under a known id, refused
    retries: int  # lines answered `retry` while the table loaded
    unchecked: int  # fire-and-forget events stored unchecked while it loaded
    evicted_early: int  # ids forgotten before their window ended (the table was full)
    loaded_from: str  # snapshot | ledger | "" (not yet)
    load_s: float  # how long loading took (0: not yet)
    saves: int
    save_error: str | None


class Deduplicator:
    """Answers the intake on the loop; loads and saves the table off it."""

    def __init__(
        self,
        config: DedupConfig,
        state_dir: Path,
        ledger: Ledger,
    ) -> None:
        self.config = config
        self.path = state_dir / SNAPSHOT_FILE
        self.ledger = ledger
        self.ledger_dir = ledger.directory
        self.loop = ledger.loop
        self.table: IdTable | None = None
        self.state = "off" if config.max_ids == 0 else "loading"
        self._window_us = int(config.window_s * 1_000_000)
        self._marks: collections.deque[tuple[int, int]] = collections.deque()
        self._cutoff = 0  # ids below this seq are past their window
        self._expiring = False  # some ids held are below the cutoff: evict as ids come
        self._after_newest = 0  # the seq after the newest id's
        self._unchecked: list[tuple[int, int, int, int]] = []
        self._loader: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._saved_tail = -1
        self._save_timer = None
        self._closed = False
        self.duplicates = 0
        self.conflicts = 0
        self.retries = 0
        self.unchecked = 0
        self.evicted_early = 0
        self.loaded_from = ""
        self.load_s = 0.0
        self.saves = 0
        self.save_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.state != "off"

    # ---- start and stop

    def start(self, head: Head) -> None:
        """Load the table on a thread of its own; until it is ready lookups say RETRY."""
        if not self.enabled:
            return
        self._loader = threading.Thread(
            target=self._load, args=(head,), name="dedup-load", daemon=True
        )
        self._loader.start()

    def _load(self, head: Head) -> None:
        started = self.loop.clock.monotonic()
        table = IdTable(self.config.max_ids)
        marks: collections.deque[tuple[int, int]] = collections.deque()
        source = "ledger"
        not_before = self.loop.clock.wall_us() - self._window_us
        reader = LedgerReader(self.ledger_dir)
        try:
            rest = self._after_snapshot(reader, head)
            if rest is not None:
                snapshot, rest = rest
                table.load_records(snapshot.records)
                marks.extend(snapshot.marks)
                source = "snapshot"
            else:
                start = first_seq_within(self.ledger_dir, not_before / 1_000_000)
                rest = reader.entries(start, head.seq)
            for key, fp, seq, received in ids_in(rest, not_before):
                if self._closed:
                    return  # stopping: the loop is about to close
                if not marks or received - marks[-1][0] >= MARK_INTERVAL_US:
                    marks.append((received, seq))
                table.add(key, fp, seq)  # an id stored twice (while unchecked): the first holds
        except Exception as exc:  # a damaged ledger: use what could be read, and say so
            log.error(
                "deduplication table built only from the ledger up to the damage",
                extra={"fields": {"error": str(exc)}},
            )
        elapsed = self.loop.clock.monotonic() - started
        if not self._closed:
            self.loop.post(lambda: self._loaded(table, marks, source, elapsed))

    def _after_snapshot(self, reader: LedgerReader, head: Head):
        """(snapshot, the ledger's entries after it) when the saved snapshot is intact
        and the ledger holds the entry it is valid up to, with the same chain hash;
        None otherwise (the table is then built from the ledger alone)."""
        try:
            snapshot = Snapshot.decode(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, SnapshotUnusable, struct.error) as exc:
            log.warning("deduplication snapshot unusable; reading the ledger",
                        extra={"fields": {"error": str(exc)}})  # fmt: skip
            return None
        valid = snapshot.valid
        entries_from = reader.entries(valid.seq, head.seq) if valid.seq <= head.seq else iter(())
        first = next(entries_from, None)
        if first is None or first[0] != valid.seq or first[2] != valid.hash:
            log.warning(
                "deduplication snapshot does not match the ledger; reading the ledger",
                extra={"fields": {"snapshot_seq": valid.seq, "head_seq": head.seq}},
            )
            return None
        return snapshot, entries_from

    def _loaded(self, table: IdTable, marks, source: str, elapsed: float) -> None:
        if self._closed:
            table.close()
            return
        self.table = table
        self._marks = marks
        for key, fp, seq, received in self._unchecked:
            self.add(key, fp, seq, received)
        self._unchecked.clear()
        self.state = "ready"
        self.loaded_from = source
        self.load_s = elapsed
        self._saved_tail = -1  # what was caught up since the snapshot is saved at the next tick
        self._after_newest = max(self._after_newest, table.newest_seq() + 1)
        self._advance(self.loop.clock.wall_us())
        log.info(
            "deduplication ready",
            extra={"fields": {"ids": len(table), "from": source, "seconds": round(elapsed, 3)}},
        )
        self._save_timer = self.loop.call_later(self.config.save_interval_s, self._save_tick)

    def close(self, save: bool = True) -> None:
        """At a stop: the threads end; at a clean one (the ledger settled), the table
        is saved first. Idempotent."""
        self._closed = True
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        for thread in (self._loader, self._saver):
            if thread is not None:
                thread.join()  # the loader stops at its next entry; a save is one write
        if self.table is not None:
            if save:
                self._save(background=False)
            self.table.close()
            self.table = None

    # ---- the intake's questions

    def lookup(
        self, app: str | None, event_id: str, event_cbor: bytes, now_us: int
    ) -> tuple[int, int, int, int]:
        """(verdict, original seq, id key, fingerprint) for an event with a valid event_id."""
        key = id_key(app, event_id)
        fp = content_key(event_cbor)
        table = self.table
        if table is None:
            return RETRY, 0, key, fp
        if self._marks and self._marks[0][0] <= now_us - self._window_us - MARK_INTERVAL_US:
            self._advance(now_us)
        found = table.get(key)
        if found is None or found[1] < self._cutoff:
            return NEW, 0, key, fp
        if found[0] == fp:
            self.duplicates += 1
            return DUPLICATE, found[1], key, fp
        self.conflicts += 1
        return CONFLICT, found[1], key, fp

    def add(self, key: int, fp: int, seq: int, received_us: int) -> None:
        """An event with this id was staged at `seq`."""
        table = self.table
        if table is None:
            self._unchecked.append((key, fp, seq, received_us))
            return
        marks = self._marks
        if not marks or received_us - marks[-1][0] >= MARK_INTERVAL_US:
            marks.append((received_us, seq))
        self._after_newest = seq + 1
        if table.tail - table.head == table.capacity and table.oldest_seq() >= self._cutoff:
            self.evicted_early += 1
        if not table.add(key, fp, seq):
            found = table.get(key)
            assert found is not None
            if found[1] >= self._cutoff:
                return  # stored twice while unchecked: the first seq holds
            # Known but past its window: everything older than it has expired too.
            while table.get(key) is not None:
                table.evict_oldest()
            table.add(key, fp, seq)
        if self._expiring:
            for _ in range(EVICT_PER_ADD):
                if table.tail == table.head or table.oldest_seq() >= self._cutoff:
                    self._expiring = False
                    break
                table.evict_oldest()

    def note_retry(self) -> None:
        self.retries += 1

    def note_unchecked(self) -> None:
        self.unchecked += 1

    def _advance(self, now_us: int) -> None:
        """Move the window. The ids from one mark's seq to the next's came within a
        minute of the mark's time (a later one would have made a new mark), so
        they have all been held for window_s once the mark is a minute older."""
        limit = now_us - self._window_us - MARK_INTERVAL_US
        marks = self._marks
        while marks and marks[0][0] <= limit:
            marks.popleft()
            self._cutoff = marks[0][1] if marks else self._after_newest
            self._expiring = True

    # ---- saving

    def _save_tick(self) -> None:
        self._save_timer = None
        if self._closed:
            return
        self._save(background=True)
        self._save_timer = self.loop.call_later(self.config.save_interval_s, self._save_tick)

    def _save(self, background: bool) -> None:
        table = self.table
        if table is None or table.tail == self._saved_tail:
            return
        if self._saver is not None and self._saver.is_alive():
            return  # the last one is still writing: the next tick saves
        snapshot = Snapshot(self.ledger.staged_head, table.record_bytes(), tuple(self._marks))
        self._saved_tail = table.tail
        capacity = table.capacity

        def write() -> None:
            try:
                write_snapshot(self.path, snapshot.encode(capacity))
                self.save_error = None
                self.saves += 1
            except OSError as exc:
                self.save_error = str(exc)
                log.warning("cannot save the deduplication table",
                            extra={"fields": {"error": str(exc)}})  # fmt: skip

        if background:
            self._saver = threading.Thread(target=write, name="dedup-save", daemon=True)
            self._saver.start()
        else:
            write()

    def statistics(self) -> DedupStatistics:
        table = self.table
        return DedupStatistics(
            state=self.state,
            ids=len(table) if table is not None else 0,
            capacity=self.config.max_ids,
            memory_bytes=table.memory_bytes if table is not None else 0,
            window_s=self.config.window_s,
            duplicates=self.duplicates,
            conflicts=self.conflicts,
            retries=self.retries,
            unchecked=self.unchecked,
            evicted_early=self.evicted_early,
            loaded_from=self.loaded_from,
            load_s=round(self.load_s, 3),
            saves=self.saves,
            save_error=self.save_error,
        )

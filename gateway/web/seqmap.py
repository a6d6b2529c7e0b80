"""Entries by seq without a segment scan: a sparse seq-to-offset map of the live ledger.

A lookup in a 64 MiB segment by reading from its start costs up to ~200,000
frames (0.2-0.5 s measured at half a million entries); the console looks
entries up for every detail page and every row it checks. `SeqMap` keeps, for
each segment, the file offset of every STRIDE-th frame (and the chain hash of
the frame before it); a lookup then reads at most STRIDE frames.

The map is built ahead of the pages, off the request path: `MapFollower`, a
thread at the lowest CPU priority, maps every segment once at start (the
newest first: the audit table's first page looks there) and then follows the
durable head as the ledger publishes batches, a few thousand frames at a time,
yielding between them. A page that asks before the follower got there (right
after start, or within the last FOLLOW_S of ingest) maps what it needs itself,
as the follower would. The map is derived and in memory only: nothing is
written, and a segment that retention removed is dropped from it. Memory:
about 80 bytes per STRIDE entries, 0.3 MB per million entries.

The check is the one `gateway query` and `show` make (gateway/audit/check.py):
the entry's stored bytes, hashed with the previous entry's chain hash, give
its stored chain hash; its payload decodes.
"""

from __future__ import annotations

import array
import bisect
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.check import HASH_MISMATCH, Checked
from gateway.audit.query import REMOVED
from gateway.errors import LedgerCorruption
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerReader, SegmentReader, list_segments

log = logging.getLogger("gateway.ops")

# Every 256th frame: at ~300 bytes a frame a lookup reads at most ~77 KB, and
# the map costs ~80 bytes per 256 entries (about 0.3 MB at a million entries).
STRIDE = 256
# A lookup reads its segment in 64 KiB pieces (the reader's default, 4 MiB,
# suits a scan): most lookups need one piece, at most 2 at STRIDE frames.
LOOKUP_READ_BYTES = 64 * 1024
# The follower maps at most this many frames while holding the map's lock
# (a few ms), then sleeps FOLLOWER_YIELD_S so that the loop and the pages
# thread get the interpreter; it looks at the durable head at most every
# FOLLOW_S (the ledger publishes many batches a second under load).
FOLLOWER_CHUNK_FRAMES = 4096
FOLLOWER_YIELD_S = 0.002
FOLLOW_S = 0.5
# The follower's thread runs at this nice value (the lowest priority): ingest first.
FOLLOWER_NICE = 19
UNBOUNDED = 1 << 62  # "to the segment's end"


@dataclass
class _Segment:
    path: Path
    first: int
    # Every STRIDE frames: the seq, its file offset, and the chain hash of the frame before it.
    seqs: list[int] = field(default_factory=list)
    offsets: array.array = field(default_factory=lambda: array.array("q"))
    prevs: bytearray = field(default_factory=bytearray)
    known_to: int = 0  # the last seq mapped
    end_offset: int = 0  # the byte after it
    last_hash: bytes = b""  # its chain hash
    damage: str = ""  # what stopped the mapping short of the segment's end, if anything
    ended: bool = False  # the last extension reached the end of the file as it was then
    complete: bool = False  # sealed and mapped to its end

    def mark(self, j: int) -> tuple[int, int, bytes]:
        return self.seqs[j], self.offsets[j], bytes(self.prevs[32 * j : 32 * j + 32])


class SeqMap:
    def __init__(self, ledger_dir: Path) -> None:
        self.ledger_dir = ledger_dir
        self.segments: dict[int, _Segment] = {}
        self.firsts: list[int] = []
        # Held while the map changes or is read (not while an entry is read):
        # the follower and the pages thread share it.
        self.lock = threading.Lock()
        self.mapped_on_demand = 0  # frames a page had to map itself (the follower lagged)

    def _refresh(self) -> None:
        listed = list_segments(self.ledger_dir)
        firsts = [first for first, _ in listed]
        if firsts != self.firsts:
            kept = {f: self.segments[f] for f in firsts if f in self.segments}
            for first, path in listed:
                kept.setdefault(first, _Segment(path, first))
            self.segments, self.firsts = kept, firsts

    def _extend(self, seg: _Segment, upto: int, limit: int | None = None) -> int:
        """Map `seg` from where it was left up to seq `upto` (or its end), at most
        `limit` frames; returns the frames mapped."""
        done = 0
        seg.ended = False
        with SegmentReader(seg.path) as reader:
            header = reader.read_header()
            if not seg.seqs:
                seg.known_to, seg.end_offset, seg.last_hash = (
                    header.first_seq - 1,
                    fmt.SEGMENT_HEADER_BYTES,
                    header.prev_hash,
                )
            resume = seg.end_offset if seg.seqs else None
            start_seq = seg.known_to + 1 if seg.seqs else None
            prev: Any = seg.last_hash
            first = seg.first
            seq = end = 0
            for offset, seq, stored, digest in reader.frames(resume, start_seq):
                if (seq - first) % STRIDE == 0:
                    seg.seqs.append(seq)
                    seg.offsets.append(offset)
                    seg.prevs += prev
                # A view into the reader's buffer: each buffer is an immutable
                # bytes object the view keeps alive, so it holds after the next frame.
                prev = digest
                done += 1
                # (The reader's end_offset moves only once the next frame is asked for.)
                end = offset + len(stored) + fmt.HASH_BYTES
                if (seq >= upto and (seq - first + 1) % STRIDE == 0) or done == limit:
                    break
            else:
                seg.damage = reader.damage
                seg.ended = True
            if done:
                seg.known_to, seg.end_offset, seg.last_hash = seq, end, bytes(prev)
        return done

    def _locate(self, seq: int) -> tuple[_Segment, tuple[int, int, bytes]] | Checked | None:
        """Under the lock: the segment and mark to read `seq` from (mapping it if need be)."""
        self._refresh()
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i < 0:
            return None
        seg = self.segments[self.firsts[i]]
        if seq > seg.known_to:
            self.mapped_on_demand += self._extend(seg, seq)
        if seq > seg.known_to:
            if seg.damage:  # a damaged frame, not one still being written at the tail
                return Checked(seq, b"", None, f"the ledger is damaged here: {seg.damage}")
            return None  # past the durable tail
        j = bisect.bisect_right(seg.seqs, seq) - 1
        return seg, seg.mark(j)

    def get(self, seq: int) -> Checked | None:
        """Entry `seq` with the verdict on its link; None when the live ledger does not hold it."""
        return self.get_many([seq]).get(seq)

    def get_many(self, seqs: list[int]) -> dict[int, Checked]:
        """Entries by seq (absent: not in the live ledger); neighbours are read in one pass."""
        out: dict[int, Checked] = {}
        wanted = sorted(set(seqs))
        k = 0
        while k < len(wanted):
            seq = wanted[k]
            try:
                with self.lock:
                    where = self._locate(seq)
                if where is None or isinstance(where, Checked):
                    if where is not None:
                        out[seq] = where
                    k += 1
                    continue
                seg, (mark_seq, offset, prev) = where
                k = max(k + 1, self._read(seg, mark_seq, offset, prev, wanted, k, out))
            except FileNotFoundError:
                with self.lock:
                    self.firsts = []  # removed by retention meanwhile: listed again next time
                k += 1
            except (LedgerCorruption, fmt.HeaderDamaged, EOFError) as exc:
                out[seq] = Checked(seq, b"", None, f"the ledger is damaged here: {exc}")
                k += 1
        return out

    def _read(
        self,
        seg: _Segment,
        mark_seq: int,
        offset: int,
        prev: bytes,
        wanted: list[int],
        k: int,
        out: dict[int, Checked],
    ) -> int:
        """Read from a mark on, checking wanted[k] and the wanted seqs after it while
        they are within STRIDE frames of the last one found; returns the next k."""
        limit = min(seg.known_to, wanted[k] + STRIDE)
        with SegmentReader(seg.path, LOOKUP_READ_BYTES) as reader:
            for _off, found, stored, digest in reader.frames(offset, mark_seq):
                if found > limit:
                    return k
                if found < wanted[k]:
                    prev = digest
                    continue
                digest = bytes(digest)
                damage = None
                if fmt.chain_hash(bytes(prev), bytes(stored)) != digest:
                    damage = HASH_MISMATCH
                payload = bytes(stored[fmt.FRAME_HEADER_BYTES :])
                record = None
                try:
                    record = entries.export_record(found, digest, entries.decode(payload))
                except (ValueError, TypeError, KeyError, EOFError) as exc:
                    damage = damage or f"its payload does not decode ({exc})"
                out[found] = Checked(found, digest, None if damage else record, damage)
                prev = digest
                k += 1
                if k == len(wanted) or wanted[k] > seg.known_to:
                    return k
                limit = min(seg.known_to, wanted[k] + STRIDE)
                if wanted[k] - found > STRIDE:
                    return k  # far ahead: from its own mark
            if reader.damage:
                out[wanted[k]] = Checked(
                    wanted[k], b"", None, f"the ledger is damaged here: {reader.damage}"
                )
        return k + 1

    # ---- the follower's side

    def catch_up(self, upto: int, stop: threading.Event) -> int:
        """Map every sealed segment to its end and the live one up to seq `upto` (the
        durable head), the newest first, FOLLOWER_CHUNK_FRAMES at a time; returns the
        frames mapped."""
        with self.lock:
            self._refresh()
            order = [self.segments[f] for f in reversed(self.firsts)]
            last = self.firsts[-1] if self.firsts else None
        total = 0
        for seg in order:
            # Listed before a later segment existed or not: the writer seals a
            # segment before it starts the next, so a sealed one is whole on disk.
            sealed = seg.first != last
            while not stop.is_set() and not seg.damage and not seg.complete:
                limit = FOLLOWER_CHUNK_FRAMES
                if not sealed:
                    limit = min(limit, upto - seg.known_to) if seg.seqs else limit
                    if limit <= 0:
                        break
                try:
                    with self.lock:
                        if seg.first not in self.segments:
                            break  # removed by retention meanwhile
                        done = self._extend(seg, upto if not sealed else UNBOUNDED, limit)
                except FileNotFoundError:
                    break
                except (LedgerCorruption, fmt.HeaderDamaged, EOFError) as exc:
                    seg.damage = str(exc)
                    break
                total += done
                if sealed and seg.ended:
                    seg.complete = True
                if not done or seg.ended:
                    break
                time.sleep(FOLLOWER_YIELD_S)
        return total

    def statistics(self) -> dict[str, Any]:
        """Without the lock (asked on the loop, which must not wait for a mapping)."""
        segs = list(self.segments.values())  # a new dict replaces it: this one stays whole
        return {
            "segments": len(segs),
            "segments_mapped": sum(1 for s in segs if s.complete or s.ended),
            "marks": sum(len(s.seqs) for s in segs),
            "mapped_to": max((s.known_to for s in segs), default=0),
            "mapped_on_demand": self.mapped_on_demand,
        }

    def base_seq(self) -> int:
        return LedgerReader(self.ledger_dir).base().seq

    def check_rows(self, rows: list[dict[str, Any]]) -> dict[int, str]:
        """gateway.audit.query.check_rows through the map: {seq: what failed}."""
        problems: dict[int, str] = {}
        base = None
        found = self.get_many([r["seq"] for r in rows])
        for r in rows:
            seq = r["seq"]
            item = found.get(seq)
            if item is None:
                if base is None:
                    base = self.base_seq()
                problems[seq] = REMOVED if seq <= base else "not in the ledger"
            elif item.damage:
                problems[seq] = item.damage
            elif json.loads(json.dumps(item.record)) != r["record"]:
                problems[seq] = "the index differs from the ledger"
        return problems


class MapFollower:
    """The thread that builds the map at start and keeps it up with the durable head."""

    def __init__(self, seqmap: SeqMap, head: int = 0) -> None:
        self.seqmap = seqmap
        self.head = head  # the durable head, as the ledger last published it
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.built_s: float | None = None  # how long the first pass over every segment took
        self.started = False
        self.thread = threading.Thread(target=self._run, name="web-seqmap", daemon=True)

    def start(self) -> None:
        self.started = True
        self.thread.start()

    def on_durable(self, head_seq: int) -> None:
        """On the loop, after each commit: note the head (the thread looks at it)."""
        self.head = head_seq
        self.wake.set()

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        if self.started:
            self.thread.join(5.0)  # a chunk takes a few ms; bounded anyway

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FOLLOWER_NICE)
        except (OSError, AttributeError):
            pass  # not Linux's per-thread priorities: the yields still apply
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                self.seqmap.catch_up(self.head, self.stop)
                if self.built_s is None and not self.stop.is_set():
                    self.built_s = time.monotonic() - started
                    log.info(
                        "web seq map built",
                        extra={"fields": {"seconds": round(self.built_s, 2)}},
                    )
                self.wake.wait()
                self.wake.clear()
                self.stop.wait(FOLLOW_S)
        except Exception:
            log.exception("web seq map follower stopped")

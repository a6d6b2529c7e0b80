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
as the follower would. Memory: about 80 bytes per STRIDE entries, 0.3 MB per
million entries. A sealed segment's map is also kept in
`<state_dir>/web-seqmap/<segment>.map` (written by the follower once the
segment is sealed and mapped; 48 bytes per STRIDE entries): a start loads
it instead of reading the segment, after checking that it belongs to that
segment as it is now (first seq, size, the frame at its last mark, a CRC of
its own). It is derived: anything that does not check is ignored and mapped
again, and a segment that retention removed loses its map file.

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
import struct
import threading
import time
import zlib
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
# The follower maps at most this many frames while holding the map's lock and
# the interpreter (~1 ms at 1-3 us a frame), then sleeps as long as that took
# (at least FOLLOWER_YIELD_S): at most half of a core, never the interpreter for
# long, so the loop and the pages thread get it. Under ingest faster than that
# the map lags and pages map the rest themselves; it catches up once ingest
# eases. It looks at the durable head at most every FOLLOW_S (the ledger
# publishes many batches a second under load).
FOLLOWER_CHUNK_FRAMES = 512
FOLLOWER_YIELD_S = 0.001
FOLLOW_S = 0.5
# The follower's thread runs at this nice value (the lowest priority): ingest first.
FOLLOWER_NICE = 19
UNBOUNDED = 1 << 62  # "to the segment's end"
# A stored map: magic, then first seq, segment size, known_to, end_offset, mark
# count, last hash; the marks' seqs and offsets (8 bytes each), their hashes;
# a CRC-32 of everything before it.
MAP_MAGIC = b"GWSEQMP1"
_MAP_HEAD = struct.Struct(">8sQQQQI32s")
MAP_SUFFIX = ".map"
MAP_MODE = 0o640  # as the index: the ledger's group (auditors) may read it


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
    def __init__(self, ledger_dir: Path, store_dir: Path | None = None) -> None:
        self.ledger_dir = ledger_dir
        self.store_dir = store_dir  # where sealed segments' maps are kept (None: nowhere)
        self.loaded = 0  # segments whose stored map was used
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
            for i, (first, path) in enumerate(listed):
                if first not in kept:
                    sealed = i + 1 < len(listed)
                    kept[first] = (self._load(path, first) if sealed else None) or _Segment(
                        path, first
                    )
            gone = [self.segments[f] for f in self.firsts if f not in kept]
            self.segments, self.firsts = kept, firsts
            for seg in gone:
                self._forget(seg)

    # ---- stored maps of sealed segments

    def _map_path(self, seg_path: Path) -> Path | None:
        return None if self.store_dir is None else self.store_dir / (seg_path.name + MAP_SUFFIX)

    def save(self, seg: _Segment) -> None:
        """Keep a sealed, wholly mapped segment's map (atomically; derived, so no fsync)."""
        target = self._map_path(seg.path)
        if target is None or not seg.complete or seg.damage:
            return
        try:
            size = os.stat(seg.path).st_size
            head = _MAP_HEAD.pack(
                MAP_MAGIC,
                seg.first,
                size,
                seg.known_to,
                seg.end_offset,
                len(seg.seqs),
                seg.last_hash,
            )
            body = head + array.array("q", seg.seqs).tobytes() + seg.offsets.tobytes() + seg.prevs
            os.makedirs(target.parent, mode=0o750, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MAP_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(body + struct.pack(">I", zlib.crc32(body)))
            os.replace(tmp, target)
        except OSError as exc:  # only the next start's speed depends on it
            log.warning("web seq map not stored", extra={"fields": {"error": str(exc)}})

    def _load(self, seg_path: Path, first: int) -> _Segment | None:
        """A sealed segment's stored map, if it checks against the segment as it is now."""
        path = self._map_path(seg_path)
        if path is None:
            return None
        try:
            data = path.read_bytes()
            body, crc = data[:-4], data[-4:]
            if len(data) < _MAP_HEAD.size + 4 or struct.pack(">I", zlib.crc32(body)) != crc:
                raise ValueError("CRC")
            magic, m_first, size, known_to, end_offset, count, last_hash = _MAP_HEAD.unpack_from(
                body
            )
            if magic != MAP_MAGIC or m_first != first or count == 0:
                raise ValueError("not this segment's")
            if len(body) != _MAP_HEAD.size + count * 48 or os.stat(seg_path).st_size != size:
                raise ValueError("size")
            at = _MAP_HEAD.size
            seqs = array.array("q")
            seqs.frombytes(body[at : at + 8 * count])
            offsets = array.array("q")
            offsets.frombytes(body[at + 8 * count : at + 16 * count])
            seg = _Segment(seg_path, first, list(seqs), offsets, bytearray(body[at + 16 * count :]))
            seg.known_to, seg.end_offset, seg.last_hash = known_to, end_offset, bytes(last_hash)
            seg.ended = seg.complete = True
            # The frame at the last mark is where the map says, with that seq.
            with open(seg_path, "rb") as f:
                f.seek(offsets[-1])
                _length, seq = fmt.parse_frame_header(f.read(fmt.FRAME_HEADER_BYTES))
            if seq != seqs[-1] or seqs[0] != first:
                raise ValueError("marks")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, struct.error, fmt.HeaderDamaged):
            return None  # mapped again (and stored again) by the follower
        self.loaded += 1
        return seg

    def _forget(self, seg: _Segment) -> None:
        """A segment retention removed: its stored map goes too."""
        path = self._map_path(seg.path)
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass

    def prune(self) -> None:
        """Stored maps of segments no longer in the ledger (removed while stopped)."""
        if self.store_dir is None:
            return
        names = {p.name for _, p in list_segments(self.ledger_dir)}
        try:
            stored = os.listdir(self.store_dir)
        except FileNotFoundError:
            return
        for name in stored:
            if name.endswith(".tmp") or name.removesuffix(MAP_SUFFIX) not in names:
                try:
                    os.unlink(self.store_dir / name)
                except OSError:
                    pass

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
                began = time.monotonic()
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
                    self.save(seg)
                if not done or seg.ended:
                    break
                time.sleep(max(FOLLOWER_YIELD_S, time.monotonic() - began))
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
            "segments_loaded": self.loaded,
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
            self.seqmap.prune()
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

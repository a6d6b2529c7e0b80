"""Entries by seq without a segment scan: a sparse seq-to-offset map of the live ledger.

A lookup in a 64 MiB segment by reading from its start costs up to ~200,000
frames (0.2-0.5 s measured at half a million entries); the console looks
entries up for every detail page and every row it checks. `SeqMap` keeps, for
each segment, the file offset of every STRIDE-th frame, learnt the first time
the segment is read (one pass) and extended as the live segment grows; a
lookup then reads at most STRIDE frames. The map is derived and in memory
only: nothing is written, and a segment that retention removed is dropped
from it. Used from one thread at a time (the console's pages thread).

The check is the one `gateway query` and `show` make (gateway/audit/check.py):
the entry's stored bytes, hashed with the previous entry's chain hash, give
its stored chain hash; its payload decodes.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.check import HASH_MISMATCH, Checked
from gateway.audit.query import REMOVED
from gateway.errors import LedgerCorruption
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerReader, SegmentReader, list_segments

# Every 256th frame: at ~300 bytes a frame a lookup reads at most ~77 KB, and
# the map costs 16 bytes per 256 entries (about 64 KB at a million entries).
STRIDE = 256


@dataclass
class _Segment:
    path: Path
    first: int
    prev_hash: bytes = b""
    # (seq, offset, chain hash of the frame before it) every STRIDE frames.
    marks: list[tuple[int, int, bytes]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # the marks' seqs, for bisect
    known_to: int = 0  # the last seq mapped
    end_offset: int = 0  # the byte after it
    last_hash: bytes = b""  # its chain hash
    damage: str = ""  # what stopped the mapping short of the segment's end, if anything


class SeqMap:
    def __init__(self, ledger_dir: Path) -> None:
        self.ledger_dir = ledger_dir
        self.segments: dict[int, _Segment] = {}
        self.firsts: list[int] = []

    def _refresh(self) -> None:
        listed = list_segments(self.ledger_dir)
        firsts = [first for first, _ in listed]
        if firsts != self.firsts:
            kept = {f: self.segments[f] for f in firsts if f in self.segments}
            for first, path in listed:
                kept.setdefault(first, _Segment(path, first))
            self.segments, self.firsts = kept, firsts

    def _extend(self, seg: _Segment, upto: int) -> None:
        """Map `seg` from where it was left up to seq `upto` (or its end)."""
        with SegmentReader(seg.path) as reader:
            header = reader.read_header()
            if not seg.marks:
                seg.prev_hash = header.prev_hash
                seg.known_to, seg.end_offset, seg.last_hash = (
                    header.first_seq - 1,
                    fmt.SEGMENT_HEADER_BYTES,
                    header.prev_hash,
                )
            resume = seg.end_offset if seg.marks else None
            start_seq = seg.known_to + 1 if seg.marks else None
            prev = seg.last_hash
            for offset, seq, stored, digest in reader.frames(resume, start_seq):
                if (seq - seg.first) % STRIDE == 0:
                    seg.marks.append((seq, offset, prev))
                    seg.seqs.append(seq)
                prev = bytes(digest)
                # (The reader's end_offset moves only once the next frame is asked for.)
                end = offset + len(stored) + fmt.HASH_BYTES
                seg.known_to, seg.end_offset, seg.last_hash = seq, end, prev
                if seq >= upto and (seq - seg.first + 1) % STRIDE == 0:
                    break
            else:
                seg.damage = reader.damage

    def get(self, seq: int) -> Checked | None:
        """Entry `seq` with the verdict on its link; None when the live ledger does not hold it."""
        self._refresh()
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i < 0:
            return None
        seg = self.segments[self.firsts[i]]
        try:
            if seq > seg.known_to:
                self._extend(seg, seq)
            if seq > seg.known_to:
                if seg.damage:  # a damaged frame, not one still being written at the tail
                    return Checked(seq, b"", None, f"the ledger is damaged here: {seg.damage}")
                return None  # past the durable tail
            j = bisect.bisect_right(seg.seqs, seq) - 1
            mark_seq, offset, prev = seg.marks[j]
            with SegmentReader(seg.path) as reader:
                for _off, found, stored, digest in reader.frames(offset, mark_seq):
                    if found < seq:
                        prev = bytes(digest)
                        continue
                    digest = bytes(digest)
                    damage = None
                    if fmt.chain_hash(prev, bytes(stored)) != digest:
                        damage = HASH_MISMATCH
                    payload = bytes(stored[fmt.FRAME_HEADER_BYTES :])
                    record = None
                    try:
                        record = entries.export_record(seq, digest, entries.decode(payload))
                    except (ValueError, TypeError, KeyError, EOFError) as exc:
                        damage = damage or f"its payload does not decode ({exc})"
                    return Checked(seq, digest, None if damage else record, damage)
                if reader.damage:
                    return Checked(seq, b"", None, f"the ledger is damaged here: {reader.damage}")
        except FileNotFoundError:
            self.firsts = []  # removed by retention meanwhile: listed again next time
            return None
        except (LedgerCorruption, fmt.HeaderDamaged, EOFError) as exc:
            return Checked(seq, b"", None, f"the ledger is damaged here: {exc}")
        return None

    def base_seq(self) -> int:
        return LedgerReader(self.ledger_dir).base().seq

    def check_rows(self, rows: list[dict[str, Any]]) -> dict[int, str]:
        """gateway.audit.query.check_rows through the map: {seq: what failed}."""
        problems: dict[int, str] = {}
        base = None
        for r in rows:
            seq = r["seq"]
            item = self.get(seq)
            if item is None:
                if base is None:
                    base = self.base_seq()
                problems[seq] = REMOVED if seq <= base else "not in the ledger"
            elif item.damage:
                problems[seq] = item.damage
            elif json.loads(json.dumps(item.record)) != r["record"]:
                problems[seq] = "the index differs from the ledger"
        return problems

"""`gateway verify`: re-derive the chain from genesis over every segment.

Trusts nothing but the bytes: no index, no stored head. The cost is reading and
hashing; CBOR payloads are never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ledger import format as fmt
from gateway.ledger.store import SegmentReader, TailState, list_segments, newest_segment_is_torn


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

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash.hex()},
            "tail_incomplete": self.tail_incomplete,
            "segments": self.segments,
        }
        if not self.ok:
            out.update(
                first_bad_seq=self.first_bad_seq,
                file=self.file,
                offset=self.offset,
                reason=self.reason,
            )
        return out


def verify_ledger(directory: Path) -> VerifyResult:
    """Verify every segment under `directory`; a missing directory is an empty ledger."""
    segments = list_segments(directory)
    running = fmt.GENESIS_HASH
    expect = 1
    result = VerifyResult(True, 0, 0, running, segments=len(segments))

    def bad(path: Path, offset: int, seq: int, reason: str) -> VerifyResult:
        # entries/head describe the prefix that did verify, up to the damage.
        result.entries = result.head_seq = seq - 1
        result.head_hash = running
        result.ok = False
        result.first_bad_seq = seq
        result.file = str(path)
        result.offset = offset
        result.reason = reason
        return result

    chain = fmt.chain_hash
    for index, (first, path) in enumerate(segments):
        last_segment = index == len(segments) - 1
        with SegmentReader(path) as reader:
            result.bytes_read += reader.size
            try:
                header = reader.read_header()
            except (EOFError, fmt.HeaderDamaged) as exc:
                if last_segment and newest_segment_is_torn(path):
                    # A segment being created, or whose creation a crash cut short.
                    result.tail_incomplete = True
                    break
                return bad(path, 0, expect, str(exc) or "segment header incomplete")
            if header.first_seq != first:
                return bad(path, 0, expect, "segment header first_seq does not match its name")
            if first != expect:
                return bad(path, 0, expect, f"segment starts at seq {first}, expected {expect}")
            if header.prev_hash != running:
                return bad(path, 0, expect, "segment prev_hash does not match the chain")
            for offset, seq, stored, digest in reader.frames():
                computed = chain(running, stored)
                if computed != digest:
                    return bad(path, offset, seq, "chain hash does not match")
                running = computed
                expect = seq + 1
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
    result.entries = expect - 1
    result.head_seq = expect - 1
    result.head_hash = running
    return result

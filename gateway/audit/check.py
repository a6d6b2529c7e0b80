"""Entries as the CLI prints them, each checked against the hash chain on the way out.

`show`, `export` and `query` print nothing from the ledger as intact unless
its link in the chain holds: the entry's stored bytes, hashed with the
previous entry's stored chain hash, give the chain hash stored with it. Across
a range every link is checked, so an entry whose bytes and hash were both
rewritten shows up at the next entry, whose link then breaks. What this does
not cover (`gateway verify` does): entries outside what was printed, and
whether the chain's start (genesis, or a retained checkpoint) is genuine.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import LedgerCorruption
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerReader, list_segments

# What a broken link is called wherever it is printed.
HASH_MISMATCH = "stored bytes do not match the chain hash (hashed with the previous entry's)"


@dataclass(slots=True)
class Checked:
    seq: int
    hash: bytes  # the chain hash stored with the entry
    record: dict[str, Any] | None  # its export record; None when damaged
    damage: str | None = None  # what failed; None: the link holds (or was not checked)


def _record(seq: int, digest: bytes, payload: bytes | memoryview) -> tuple[dict | None, str | None]:
    try:
        return entries.export_record(seq, digest, entries.decode(payload)), None
    except (ValueError, TypeError, KeyError, EOFError) as exc:  # cbor2 errors are ValueErrors
        return None, f"its payload does not decode ({exc})"


def checked_entries(
    ledger_dir: Path, from_seq: int = 1, to_seq: int | None = None, check: bool = True
) -> Iterator[Checked]:
    """The entries from `from_seq` to `to_seq`, each with the verdict on its link.

    Damage that stops the reader (a frame header that does not parse, a missing
    segment) ends the iteration with one Checked for the seq where it is, its
    `damage` saying what the reader found.
    """
    reader = LedgerReader(ledger_dir)
    from_seq = max(1, from_seq)
    base = reader.base()
    prev: bytes | None = None
    begin = from_seq
    if check:
        if from_seq <= base.seq + 1:
            prev, begin = base.hash, max(from_seq, base.seq + 1)
        else:
            begin = from_seq - 1  # its chain hash is the first link's input
    try:
        for seq, stored, digest in reader.frames(begin, to_seq):
            if seq < from_seq:
                prev = digest
                continue
            damage = None
            payload = stored[fmt.FRAME_HEADER_BYTES :]
            if check:
                if prev is None:
                    damage = "the entry before it is not in the ledger"
                elif fmt.chain_hash(prev, stored) != digest:
                    damage = HASH_MISMATCH
            record, undecodable = _record(seq, digest, payload)
            damage = damage or undecodable
            yield Checked(seq, digest, None if damage else record, damage)
            prev = digest
    except LedgerCorruption as exc:
        yield Checked(exc.seq, b"", None, f"the ledger is damaged here: {exc.reason}")


class Cursor:
    """Walks the ledger forward, checking the entries asked for, in ascending seq.

    Asked for a seq at or before the last one it read, or in a later segment,
    it starts again from that seq's segment: rows checked oldest first cost at
    most one pass over the ledger, however many there are, and segments
    without a row in them are not read.
    """

    def __init__(self, ledger_dir: Path) -> None:
        self.reader = LedgerReader(ledger_dir)
        self.base = self.reader.base()
        self._firsts = [first for first, _path in list_segments(ledger_dir)]
        self._it: Iterator[tuple[int, memoryview, bytes]] | None = None  # (seq, stored, hash)
        self._pos = 0  # the last seq read
        self._prev: bytes | None = None  # its chain hash

    def _segment(self, seq: int) -> int:
        return bisect.bisect_right(self._firsts, seq)

    def _start(self, seq: int) -> None:
        if seq - 1 <= self.base.seq:
            begin, self._prev = self.base.seq + 1, self.base.hash
        else:
            begin, self._prev = seq - 1, None
        self._it = self.reader.frames(begin)
        self._pos = begin - 1

    def get(self, seq: int) -> Checked | None:
        """The entry `seq` with its verdict; None when the live ledger does not hold it."""
        if seq <= self.base.seq:
            return None
        if (
            self._it is None
            or seq <= self._pos
            or self._segment(seq - 1) > self._segment(self._pos)
        ):
            # Behind, or in a later segment: start there rather than read through.
            self._start(seq)
        assert self._it is not None
        try:
            for found, stored, digest in self._it:
                prev, self._prev, self._pos = self._prev, digest, found
                if found < seq:
                    continue
                damage = None
                payload = stored[fmt.FRAME_HEADER_BYTES :]
                if prev is None or fmt.chain_hash(prev, stored) != digest:
                    damage = HASH_MISMATCH
                record, undecodable = _record(found, digest, payload)
                damage = damage or undecodable
                return Checked(found, digest, None if damage else record, damage)
        except LedgerCorruption as exc:
            self._it = None
            return Checked(seq, b"", None, f"the ledger is damaged here: {exc}")
        self._it = None
        return None


def damaged_line(item: Checked) -> str:
    """How a damaged entry is printed instead of its contents."""
    return f"DAMAGED: seq {item.seq}: {item.damage}; its contents are not shown (gateway verify)"

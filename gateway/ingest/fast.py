"""The native hot path: one call per received buffer for the plain events in it.

When the extension `gateway._native` is built (gateway/native/, README.md
"Native hot path"), `FastPath.take` hands a connection's buffered bytes to the
C core, which splits, parses, validates, encodes, frames and chains every
plain event it meets, and stops at the first line it must not decide itself;
`Intake.feed` then takes that line the reference way (the Python path, which
stays the specification) and calls again. What comes back is appended to the
ledger as the Python path would have appended it, byte for byte
(tests/test_native_differential.py compares the two).

`GATEWAY_PURE_PYTHON=1` in the environment forces the reference path.
"""

from __future__ import annotations

import os
from types import ModuleType

from gateway.config import IngestConfig
from gateway.ingest import replies as wire
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.redact import Redactor
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ingest.validate import (
    BAD_EVENT_TYPE,
    BAD_TIMESTAMP,
    MISSING_EVENT_TYPE,
    MISSING_TIMESTAMP,
)
from gateway.ledger import entries
from gateway.ledger.commit import Ledger

__all__ = ["PURE_PYTHON_ENV", "FastPath", "native_module"]

PURE_PYTHON_ENV = "GATEWAY_PURE_PYTHON"

# Why a scan stopped (gateway/native/gwcore.h, enum gw_stop).
MORE, SLOW, BUDGET, FULL = 0, 1, 2, 3

# The flag byte of an event (enum gw_flag) to its flags, in the reference's order.
_FLAG_BITS = (
    (1, MISSING_EVENT_TYPE),
    (2, BAD_EVENT_TYPE),
    (4, MISSING_TIMESTAMP),
    (8, BAD_TIMESTAMP),
    (16, entries.CLOCK_UNSYNCED),
)
FLAG_NAMES = tuple(tuple(name for bit, name in _FLAG_BITS if byte & bit) for byte in range(32))


def native_module() -> ModuleType | None:
    """The built extension, or None (not built, or the reference path forced)."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return None
    try:
        from gateway import _native
    except ImportError:
        return None
    return _native


class FastPath:
    """The native scan for one intake configuration (limits and redaction)."""

    def __init__(self, module: ModuleType, config: IngestConfig, redactor: Redactor | None):
        literals = None
        cards = False
        if redactor is not None:
            literals = redactor.key_literals()
            if literals is None:
                raise ValueError("a redaction pattern can match any key")
            cards = redactor.cards
        self.scanner = module.Scanner(config.max_line_bytes, literals, cards)
        self._head_for: tuple[int, bytes] | None = None
        self._head = b""

    def take(
        self,
        ledger: Ledger,
        session: Session,
        proto: IngestProtocol,
        replies: ReplyQueue,
        received: int,
        unsynced: bool,
        budget: int,
    ) -> tuple[int, int]:
        """Stage the plain events at the head of `proto`'s buffer and owe their
        acknowledgements; returns (events, why it stopped). `budget` < 0: none."""
        writer = ledger.writer
        key = (received, session.source)
        if self._head_for != key:
            self._head_for = key
            self._head = entries.event_head(received, session.source)
        buf, pos = proto.unread()
        room, empty, unit_left, unit_start = writer.fast_limits()
        pos, events, stop, frames, flags, last_hash = self.scanner.scan(
            buf,
            pos,
            self._head,
            unsynced,
            writer.next_seq,
            writer.last_hash,
            budget,
            room,
            empty,
            unit_left,
            unit_start,
            proto.max_line_bytes,  # a reload changes new connections' limit only
        )
        if events:
            first = ledger.append_frames(frames, events, last_hash)
            proto.advance(pos, events)
            if session.ack:
                _owe(replies, first, events, flags)
        else:
            proto.advance(pos, 0)  # blank lines
            if stop == FULL:
                writer.seal_segment()  # the next frame opens the next segment
        return events, stop


def _owe(replies: ReplyQueue, first: int, events: int, flags: bytes) -> None:
    """Plain acknowledgements as runs of seqs, flagged ones one by one."""
    if flags.count(0) == events:
        replies.add_acks(first, first + events - 1)
        return
    i = 0
    while i < events:
        byte = flags[i]
        if byte:
            replies.add(first + i, wire.ack(first + i, FLAG_NAMES[byte]))
            i += 1
            continue
        j = i + 1
        while j < events and not flags[j]:
            j += 1
        replies.add_acks(first + i, first + j - 1)
        i = j

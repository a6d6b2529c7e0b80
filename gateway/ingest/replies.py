"""Every byte the gateway sends an ingest client: the one reply encoder.

Errors carry data (a code and a detail, gateway/errors.py); this module alone
turns them, acknowledgements and the hello answer into wire bytes. Replies
owed to a client wait in a ReplyQueue until the ledger's durable head covers
them (docs/protocol.md, "Replies").
"""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["ReplyQueue", "ack", "error", "hello", "json_line"]


def json_line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def ack(seq: int, flags: Iterable[str] = (), duplicate: bool = False) -> bytes:
    """`{"ok":true,"seq":N}` and, when there are any, the event's validation flags."""
    return _ack_template(tuple(flags), duplicate) % seq


# A few flag combinations recur (clock_unsynced on every event of a box whose
# clock is not set, missing_timestamp from one app): their replies are
# templates, so a flagged ack costs a format, not a JSON encoding.
@functools.lru_cache(maxsize=64)
def _ack_template(flags: tuple[str, ...], duplicate: bool) -> bytes:
    out = b'{"ok":true,"seq":%d'
    if duplicate:
        out += b',"duplicate":true'
    if flags:
        out += b',"flags":' + json.dumps(list(flags), separators=(",", ":")).encode().replace(
            b"%", b"%%"
        )
    return out + b"}\n"


def error(code: str, detail: str) -> bytes:
    return json_line({"ok": False, "error": code, "detail": detail})


def hello(fields: dict[str, Any]) -> bytes:
    return json_line({"hello": {"ok": True, **fields}})


class ReplyQueue:
    """Replies owed to one client, in line order, each due once its seq is durable.

    An int item is a plain acknowledgement of that seq (the common case, kept
    small); a range is the plain acknowledgements of consecutive seqs (what
    the native path stages in one call); a tuple is (due seq, reply bytes):
    errors, flagged acks, the hello (seq 0: due at once), answers to resends
    (the original seq). Replies go
    out in line order, so a reply is never due before the ones ahead of it:
    `add` raises its due seq to the last one queued, which keeps the last
    item's seq the queue's latest (`all_due` relies on it).
    """

    __slots__ = ("items", "last_due")

    def __init__(self) -> None:
        self.items: collections.deque[int | range | tuple[int, bytes]] = collections.deque()
        self.last_due = 0

    def __len__(self) -> int:
        """Replies owed (a range counts each of its acknowledgements)."""
        return sum(len(item) if type(item) is range else 1 for item in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def add_ack(self, seq: int) -> None:
        # Seqs of new entries only grow: no need to compare.
        self.items.append(seq)
        self.last_due = seq

    def add_acks(self, first: int, last: int) -> None:
        """Plain acknowledgements of first..last (new entries: seqs only grow)."""
        self.items.append(range(first, last + 1))
        self.last_due = last

    def add(self, due_seq: int, data: bytes) -> None:
        if due_seq < self.last_due:
            due_seq = self.last_due
        else:
            self.last_due = due_seq
        self.items.append((due_seq, data))

    def head_due(self, durable: int) -> bool:
        if not self.items:
            return False
        head = self.items[0]
        kind = type(head)
        return (head if kind is int else head.start if kind is range else head[0]) <= durable

    def all_due(self, durable: int) -> bool:
        """Every reply owed is due (the durable head covers the last one's seq)."""
        if not self.items:
            return True
        last = self.items[-1]
        kind = type(last)
        return (last if kind is int else last[-1] if kind is range else last[0]) <= durable

    def take_due(self, durable: int) -> bytes:
        """The bytes of every reply due at `durable`, in order, removed from the queue."""
        items = self.items
        out = []
        while items:
            head = items[0]
            kind = type(head)
            if kind is int:
                if head > durable:
                    break
                out.append(b'{"ok":true,"seq":%d}\n' % head)
            elif kind is range:
                if head.start > durable:
                    break
                due = head if head[-1] <= durable else range(head.start, durable + 1)
                out.append(b"".join([b'{"ok":true,"seq":%d}\n' % seq for seq in due]))
                if due is not head:
                    items[0] = range(durable + 1, head.stop)  # the rest waits
                    break
            else:
                if head[0] > durable:
                    break
                out.append(head[1])
            items.popleft()
        return b"".join(out)

    def clear(self) -> None:
        self.items.clear()
        self.last_due = 0

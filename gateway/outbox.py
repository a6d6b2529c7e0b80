"""A durable outbox for Python apps: events wait in a local SQLite file until acknowledged.

An app calls `Outbox.add(event)` where the event happens (one local insert,
no network I/O, so a dead gateway never stalls it) and `drain()` from a
background job. Each event gets its `event_id` when it is added and keeps it
for every resend, so the gateway stores it once however often a lost
acknowledgement makes the outbox send it again (docs/protocol.md, "Exactly
once with event_id"). A row leaves the outbox only once the gateway has
acknowledged it (`prune` removes acknowledged rows after a while); a transient
refusal or a failed connection leaves it pending with an exponential backoff,
a permanent refusal marks it failed with the gateway's answer.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.client import TRANSIENT_ERRORS, Unreachable, send_events, with_event_id

__all__ = ["DrainResult", "Outbox"]

# Backoff after a failed attempt: 1 s, doubling up to 5 minutes, each with up
# to 50 % random jitter so that many senders do not retry in step.
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 300.0
# Rows sent per connection in one drain pass: pipelined, well under the
# gateway's 256 KiB of unread replies per connection (docs/protocol.md).
DRAIN_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    line BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    seq INTEGER,
    duplicate INTEGER NOT NULL DEFAULT 0,
    acked REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_try)
    WHERE acked IS NULL AND error IS NULL;
"""


@dataclass
class DrainResult:
    sent: int = 0
    acked: int = 0
    duplicates: int = 0  # acknowledged as resends of events already stored
    failed: int = 0  # refused for good (the row keeps the answer)
    deferred: int = 0  # left pending: transient refusal or no answer
    error: str | None = None  # why the connection failed, if it did
    busy: bool = False  # another drain holds the outbox


class Outbox:
    """One SQLite file; safe to add from several threads or processes, one drain at a time."""

    def __init__(
        self,
        path: str | Path,
        host: str = "127.0.0.1",
        port: int = 50001,
        *,
        app: str | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.host, self.port, self.app, self.token, self.tls = host, port, app, token, tls
        self.timeout = timeout
        self.clock = clock
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        # WAL with synchronous FULL: an add that returned survives a power cut.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, event: dict[str, Any] | bytes) -> str:
        """Keep `event` (a dict, or one JSON object line) until acknowledged; its event_id."""
        line = event if isinstance(event, bytes) else json.dumps(event).encode()
        line, event_id = with_event_id(line.rstrip(b"\r\n"))
        if not event_id:
            raise ValueError("an event must be a JSON object whose event_id, if any, is a string")
        self.db.execute(
            "INSERT INTO outbox (event_id, line, created) VALUES (?, ?, ?)",
            (event_id, line, self.clock()),
        )
        return event_id

    def drain(self, limit: int | None = None) -> DrainResult:
        """Send what is due, in the order it was added, until done, `limit` rows, or a failure."""
        result = DrainResult()
        lock = os.open(f"{self.path}.drain-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                result.busy = True
                return result
            while limit is None or result.sent < limit:
                size = DRAIN_BATCH if limit is None else min(DRAIN_BATCH, limit - result.sent)
                rows = self.db.execute(
                    "SELECT id, line, attempts FROM outbox WHERE acked IS NULL AND error IS NULL"
                    " AND next_try <= ? ORDER BY id LIMIT ?",
                    (self.clock(), size),
                ).fetchall()
                if not rows or not self._send(rows, result):
                    break
        finally:
            os.close(lock)
        return result

    def _send(self, rows: list[tuple[int, bytes, int]], result: DrainResult) -> bool:
        """One connection for `rows`; False when it failed (the rest waits for backoff)."""
        try:
            sent = send_events(
                self.host,
                self.port,
                [line + b"\n" for _id, line, _n in rows],
                app=self.app,
                ack=True,
                timeout=self.timeout,
                token=self.token,
                tls=self.tls,
            )
            error = sent.error
            answers = sent.answers
        except (Unreachable, OSError) as exc:
            error, answers = str(exc), []
        result.sent += len(rows)
        now = self.clock()
        with self.db:
            for (row_id, _line, attempts), answer in zip(rows, answers, strict=False):
                if answer.get("ok"):
                    duplicate = bool(answer.get("duplicate"))
                    self.db.execute(
                        "UPDATE outbox SET seq = ?, duplicate = ?, acked = ? WHERE id = ?",
                        (answer.get("seq"), duplicate, now, row_id),
                    )
                    result.acked += 1
                    result.duplicates += duplicate
                elif answer.get("error") in TRANSIENT_ERRORS:
                    self._defer(row_id, attempts, now)
                    result.deferred += 1
                else:
                    self.db.execute(
                        "UPDATE outbox SET error = ?, attempts = ? WHERE id = ?",
                        (json.dumps(answer), attempts + 1, row_id),
                    )
                    result.failed += 1
            for row_id, _line, attempts in rows[len(answers) :]:
                self._defer(row_id, attempts, now)  # no answer: it may or may not be stored
                result.deferred += 1
        if error:
            result.error = f"{self.host}:{self.port}: {error}"
            return False
        return True

    def _defer(self, row_id: int, attempts: int, now: float) -> None:
        delay = min(BACKOFF_CAP_S, BACKOFF_START_S * 2**attempts)
        delay *= 1 + random.random() / 2
        self.db.execute(
            "UPDATE outbox SET attempts = ?, next_try = ? WHERE id = ?",
            (attempts + 1, now + delay, row_id),
        )

    def pending(self) -> int:
        """Rows not yet acknowledged and not failed."""
        (n,) = self.db.execute(
            "SELECT count(*) FROM outbox WHERE acked IS NULL AND error IS NULL"
        ).fetchone()
        return n

    def failed(self) -> list[tuple[str, dict]]:
        """(event_id, the gateway's answer) of each row refused for good."""
        rows = self.db.execute("SELECT event_id, error FROM outbox WHERE error IS NOT NULL")
        return [(event_id, json.loads(error)) for event_id, error in rows]

    def acknowledged(self) -> dict[str, int]:
        """event_id -> seq of each acknowledged row still kept."""
        rows = self.db.execute("SELECT event_id, seq FROM outbox WHERE acked IS NOT NULL")
        return dict(rows.fetchall())

    def prune(self, older_than_s: float) -> int:
        """Remove rows acknowledged more than `older_than_s` ago; how many."""
        cursor = self.db.execute(
            "DELETE FROM outbox WHERE acked IS NOT NULL AND acked < ?",
            (self.clock() - older_than_s,),
        )
        return cursor.rowcount

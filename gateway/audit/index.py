"""The query index: a SQLite file derived from the ledger, never a source of truth.

`<state_dir>/index.sqlite3` holds one row per ledger entry (the fields audits
filter on, a one-line summary, the entry's export record as JSON) and a full
text index over the event's content. The gateway keeps it up to date from a
thread of its own, off the ingest path; `gateway reindex` rebuilds it. A
query reads the index and then the ledger entries the index has not caught up
with yet, so it always sees every committed entry (docs/audit.md).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.ledger import entries
from gateway.ledger.store import LedgerFollower, LedgerReader

log = logging.getLogger("gateway.ops")

INDEX_FILE = "index.sqlite3"
SCHEMA_VERSION = "1"
# Entries per transaction while catching up: big enough that a commit's cost
# is spread, small enough that the GIL and the disk are shared with ingest.
BATCH = 2000
# The indexer catches up at most once a second: under load it lags by about a
# second's worth of entries and takes them in large batches.
INTERVAL_S = 1.0
# Summaries are cut to this many characters (a table row stays readable).
SUMMARY_CHARS = 120

COLUMNS = (
    "seq",
    "kind",
    "received_at",
    "event_type",
    "action",
    "user_id",
    "username",
    "object_type",
    "object_id",
    "flagged",
    "app",
    "summary",
    "record",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {prefix}entries (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    received_at INTEGER,
    event_type TEXT,
    action TEXT,
    user_id TEXT,
    username TEXT,
    object_type TEXT,
    object_id TEXT,
    flagged INTEGER NOT NULL,
    app TEXT,
    summary TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS {prefix}fts
    USING fts5(content, content='', tokenize='unicode61');
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS entries_event_type ON entries (event_type, seq);
CREATE INDEX IF NOT EXISTS entries_action ON entries (action, seq);
CREATE INDEX IF NOT EXISTS entries_user_id ON entries (user_id, seq);
CREATE INDEX IF NOT EXISTS entries_username ON entries (username, seq);
CREATE INDEX IF NOT EXISTS entries_object ON entries (object_type, object_id, seq);
CREATE INDEX IF NOT EXISTS entries_received ON entries (received_at);
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, seq);
"""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _who(event: dict[str, Any]) -> Any:
    return event.get("user") or event.get("username") or event.get("user_id")


def row(seq: int, chain_hash: bytes, entry: dict[str, Any]) -> tuple[tuple, str]:
    """One index row and the text for full-text search."""
    record = entries.export_record(seq, chain_hash, entry)
    kind = entry.get("kind")
    event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    source = entry.get("source") if isinstance(entry.get("source"), dict) else {}
    flags = entry.get("flags") or []
    if kind == entries.EVENT:
        what = _text(event.get("action") or event.get("event_type")) or ""
        obj = ":".join(str(event[k]) for k in ("object_type", "object_id") if k in event)
        parts = [what, f"by {_text(_who(event))}" if _who(event) is not None else "", obj]
        if "old_value" in event or "new_value" in event:
            parts.append(f"{_text(event.get('old_value'))} -> {_text(event.get('new_value'))}")
        summary = " ".join(p for p in parts if p)
        content = json.dumps(event, ensure_ascii=False, default=str)
    elif kind == entries.REJECTED:
        summary = f"refused line: {entry.get('reason')} ({entry.get('length')} bytes)"
        content = bytes(entry.get("excerpt") or b"").decode("utf-8", "replace")
    else:
        name = entry.get("name") or entry.get("job") or entry.get("printer") or ""
        summary = f"{kind} {name}".strip()
        content = json.dumps(entries.to_jsonable(entry), ensure_ascii=False, default=str)
    values = (
        seq,
        kind,
        entry.get("received_at") if isinstance(entry.get("received_at"), int) else None,
        _text(event.get("event_type")),
        _text(event.get("action")),
        _text(event.get("user_id")),
        _text(event.get("username") or event.get("user")),
        _text(event.get("object_type")),
        _text(event.get("object_id")),
        1 if flags else 0,
        _text(source.get("app")),
        summary[:SUMMARY_CHARS],
        json.dumps(record, ensure_ascii=False, separators=(",", ":")),
    )
    return values, content


def open_index(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: no fsync per commit. The index is
        # derived: after a power cut it may lose its last batches, which the
        # next catch-up redoes from the ledger.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA.format(prefix="") + INDEXES)
        db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('version', ?), ('last_seq', '0')",
            (SCHEMA_VERSION,),
        )
        db.commit()
    return db


def last_seq(db: sqlite3.Connection, schema: str = "main") -> int:
    try:
        value = db.execute(f"SELECT value FROM {schema}.meta WHERE key='last_seq'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(value[0]) if value else 0


def insert(db: sqlite3.Connection, rows: list[tuple[tuple, str]], prefix: str = "") -> None:
    db.executemany(
        f"INSERT OR REPLACE INTO {prefix}entries VALUES ({','.join('?' * len(COLUMNS))})",
        [values for values, _ in rows],
    )
    db.executemany(
        f"INSERT INTO {prefix}fts (rowid, content) VALUES (?, ?)",
        [(values[0], content) for values, content in rows],
    )


def read_rows(ledger_dir: Path, from_seq: int, to_seq: int | None = None) -> Iterator[tuple]:
    for seq, payload, chain_hash in LedgerReader(ledger_dir).entries(from_seq, to_seq):
        yield row(seq, chain_hash, entries.decode(payload))


def catch_up(db: sqlite3.Connection, ledger_dir: Path, to_seq: int | None = None) -> int:
    """Index every entry after the index's last one (up to `to_seq`); returns how many."""
    done = 0
    batch: list[tuple[tuple, str]] = []
    for item in read_rows(ledger_dir, last_seq(db) + 1, to_seq):
        batch.append(item)
        if len(batch) >= BATCH:
            done += _commit(db, batch)
            batch = []
    if batch:
        done += _commit(db, batch)
    return done


def _commit(db: sqlite3.Connection, batch: list[tuple[tuple, str]]) -> int:
    with db:
        insert(db, batch)
        db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (str(batch[-1][0][0]),))
    return len(batch)


class Indexer:
    """The gateway's indexing thread: catches up whenever the durable head moves."""

    def __init__(self, state_dir: Path, ledger_dir: Path) -> None:
        self.path = state_dir / INDEX_FILE
        self.ledger_dir = ledger_dir
        self.durable = 0  # written by the loop, read by the thread
        # Set by the gateway while ingest is busy: the indexer then waits, so
        # that it takes the GIL and the disk only when there is time to spare.
        self.yield_to_ingest = False
        self.indexed = 0
        self.error = ""
        self._wake = threading.Event()
        self._stop = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self, durable_seq: int) -> None:
        """Called by the loop after each commit: cheap, never blocks."""
        self.durable = durable_seq
        self._wake.set()

    @property
    def lag(self) -> int:
        return max(0, self.durable - self.indexed)

    def stop(self) -> None:
        self._stop = True
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            db = open_index(self.path)
        except sqlite3.Error as exc:
            self.error = str(exc)
            log.error("query index unavailable", extra={"fields": {"error": str(exc)}})
            return
        self.indexed = last_seq(db)
        follower = LedgerFollower(self.ledger_dir, self.indexed + 1)
        try:
            while not self._stop:
                self._wake.wait(timeout=INTERVAL_S)
                self._wake.clear()
                # Only durable entries: a batch still being written may yet be
                # cut by recovery, and the index must not hold what the ledger lost.
                while not self._stop and self.indexed < self.durable:
                    if self.yield_to_ingest:
                        break
                    items = follower.read(BATCH, self.durable)
                    if not items:
                        break
                    _commit(db, [row(s, h, entries.decode(p)) for s, p, h in items])
                    self.indexed = items[-1][0]
                self._stopping.wait(INTERVAL_S)  # at most one catch-up pass per interval
        except (sqlite3.Error, OSError, ValueError) as exc:
            self.error = str(exc)
            log.error("query index stopped", extra={"fields": {"error": str(exc)}})
        finally:
            db.close()

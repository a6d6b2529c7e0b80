"""The query index: a SQLite file derived from the ledger, never a source of truth.

`<state_dir>/index.sqlite3` holds, for each ledger entry, the fields audits
filter on (table `filters`: narrow rows, so that filtering reads few pages),
what a result row shows (table `entries`: a one-line summary and the entry's
export record as JSON, read only for the rows a query returns), and a full text
index over the event's content. The gateway keeps it up to date from a thread
of its own, off the ingest path; `gateway reindex` rebuilds it. A query reads
the index and then the ledger entries the index has not caught up with yet, so
it always sees every committed entry (docs/audit.md).

How the index stays fast at a million entries (docs/audit.md, "Speed"):

- every filter column has an index ordered by seq within each value, so "the
  newest 50 with user_id X" reads 50 index entries, not every match;
- time windows become seq ranges. Entries are received in seq order, so their
  `received_at` grows with seq, except after the clock was set back: an entry
  received earlier than some entry before it is `late`. The in-order entries are
  sorted by time as they are by seq, so two index seeks give the first and last
  seq of a window among them; the late ones (few) are searched apart;
- the meta table remembers where in the ledger the entry after the index's
  last one starts, so a query reads the unindexed tail from there instead of
  scanning a whole 64 MiB segment for it.

An index of another SCHEMA_VERSION is discarded and rebuilt from the ledger by
the next writer (open_index); queries ignore it meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import (
    LedgerFollower,
    LedgerReader,
    SegmentReader,
    TailState,
    list_segments,
)

log = logging.getLogger("gateway.ops")

INDEX_FILE = "index.sqlite3"
# 2: narrow `filters` (with `late`) beside `entries`; the ledger position of the tail.
SCHEMA_VERSION = "2"
# Entries read and inserted at a time while catching up: small enough that the
# GIL and the disk are shared with ingest, and memory stays flat.
BATCH = 2000
# A transaction while catching up holds up to this many entries (and ends when
# the index has caught up). Each commit writes every page it changed, and the
# user and object indexes change pages all over: at a million entries a commit
# per 2,000 made `gateway reindex` write 15 kB per entry, one per 20,000 6 kB
# (docs/audit.md, "Speed"). Queries read what is not committed yet from the
# ledger, so a larger value makes them slower while the index lags.
COMMIT_ENTRIES = 20_000
# Planner statistics (ANALYZE) are taken again each time the index has doubled
# since they were last: rare, so their cost (seconds per million entries) stays
# small per entry. Below this size any plan is fast.
ANALYZE_FROM = 10_000
# The indexer catches up at most once a second, a second after it is told of
# new entries: it lags by a second or two and takes them in batches.
INTERVAL_S = 1.0
# After a storage error (the disk full, say) the indexer tries again after 1 s,
# doubling up to 60 s: it comes back soon after space returns without spinning
# on a dead card. The ledger is unaffected: queries read it meanwhile.
RETRY_START_S = 1.0
RETRY_CAP_S = 60.0
# Summaries are cut to this many characters (a table row stays readable).
SUMMARY_CHARS = 120
# received_at is an SQLite INTEGER (64-bit): an open end of a time window.
TIME_MIN, TIME_MAX = -(2**63), 2**63 - 1

# What queries filter on, one narrow row per entry.
FILTER_COLUMNS = ("seq", "kind", "received_at", "late", "event_type", "action", "user_id",
                  "username", "object_type", "object_id", "flagged", "app")  # fmt: skip
# What a result row shows besides (docs/audit.md, gateway query --format).
RECORD_COLUMNS = ("summary", "record")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS filters (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    received_at INTEGER,
    late INTEGER NOT NULL,
    event_type TEXT,
    action TEXT,
    user_id TEXT,
    username TEXT,
    object_type TEXT,
    object_id TEXT,
    flagged INTEGER NOT NULL,
    app TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    summary TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(content, content='', tokenize='unicode61');
"""
# Each filter column's index is ordered by seq within a value, so a page of the
# newest (or oldest) matches is read in order and no further. Without planner
# statistics (analyze()) SQLite breaks ties between two filters' indexes in
# favour of the one created last: they are created from the least selective
# (kind) to the most (an object's id). The object index leads with the id, so
# --object-id alone finds the object's few entries too.
INDEXES = """
CREATE INDEX IF NOT EXISTS filters_kind ON filters (kind, seq);
CREATE INDEX IF NOT EXISTS filters_event_type ON filters (event_type, seq);
CREATE INDEX IF NOT EXISTS filters_action ON filters (action, seq);
CREATE INDEX IF NOT EXISTS filters_object_type ON filters (object_type, seq);
CREATE INDEX IF NOT EXISTS filters_username ON filters (username, seq);
CREATE INDEX IF NOT EXISTS filters_user_id ON filters (user_id, seq);
CREATE INDEX IF NOT EXISTS filters_object ON filters (object_id, object_type, seq);
CREATE INDEX IF NOT EXISTS filters_app ON filters (app, seq);
CREATE INDEX IF NOT EXISTS filters_received ON filters (received_at) WHERE late = 0;
CREATE INDEX IF NOT EXISTS filters_late ON filters (received_at) WHERE late = 1;
CREATE INDEX IF NOT EXISTS filters_flagged ON filters (seq) WHERE flagged = 1;
"""

# One entry as row() makes it: its filter values (FILTER_COLUMNS without
# `late`, which depends on the entries before it), summary, record, text.
Row = tuple[tuple, str, str, str]
# Where the entry after the index's last one starts: segment file name, offset.
Position = tuple[str, int]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _who(event: dict[str, Any]) -> Any:
    return event.get("user") or event.get("username") or event.get("user_id")


def row(seq: int, chain_hash: bytes, entry: dict[str, Any]) -> Row:
    """One entry's index row (see Row)."""
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
    )
    record_json = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return values, summary[:SUMMARY_CHARS], record_json, content


# The index holds what the ledger holds: it gets the ledger's mode (group-
# readable for auditors, nobody else); SQLite gives its -wal and -shm the same.
INDEX_MODE = 0o640


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, INDEX_MODE))
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL with synchronous=NORMAL: no fsync per commit. The index is
    # derived: after a power cut it may lose its last batches, which the
    # next catch-up redoes from the ledger.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def open_index(path: Path) -> sqlite3.Connection:
    """Open the index for writing, creating it; one of another version is started afresh."""
    db = _connect(path)
    version = meta(db).get("version")
    if version not in (None, SCHEMA_VERSION):
        db.close()
        log.warning(
            "query index of another version: rebuilding it from the ledger",
            extra={"fields": {"found": version, "version": SCHEMA_VERSION}},
        )
        remove(path)
        db = _connect(path)
    db.executescript(SCHEMA + INDEXES)
    db.execute(
        "INSERT OR IGNORE INTO meta VALUES ('version', ?), ('last_seq', '0'), ('received_max', ?)",
        (SCHEMA_VERSION, str(TIME_MIN)),
    )
    db.commit()
    return db


def meta(db: sqlite3.Connection, schema: str = "main") -> dict[str, str]:
    """The index's meta table; {} for a new file or one that is not an index."""
    try:
        return dict(db.execute(f"SELECT key, value FROM {schema}.meta"))
    except sqlite3.DatabaseError:  # no such table, or not an SQLite file at all
        return {}


def last_seq(db: sqlite3.Connection, schema: str = "main") -> int:
    return int(meta(db, schema).get("last_seq", 0))


def position(values: dict[str, str]) -> Position | None:
    """Where the entry after the last indexed one starts, if the meta table says."""
    if "next_segment" not in values:
        return None
    return values["next_segment"], int(values["next_offset"])


def insert(db: sqlite3.Connection, rows: list[Row], received_max: int) -> int:
    """Add rows in seq order after those with the highest received_at `received_max`.

    Returns the new highest received_at. A row received before that is `late`.
    """
    filters = []
    for values, _summary, _record, _content in rows:
        received = values[2]
        late = 0
        if received is not None:
            if received < received_max:
                late = 1
            else:
                received_max = received
        filters.append((*values[:3], late, *values[3:]))
    db.executemany(
        f"INSERT OR REPLACE INTO filters VALUES ({','.join('?' * len(FILTER_COLUMNS))})", filters
    )
    db.executemany(
        "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
        [(values[0], summary, record) for values, summary, record, _ in rows],
    )
    db.executemany(
        "INSERT INTO fts (rowid, content) VALUES (?, ?)",
        [(values[0], content) for values, _, _, content in rows],
    )
    return received_max


def read_rows(ledger_dir: Path, from_seq: int, start: Position | None = None) -> Iterator[Row]:
    for seq, payload, chain_hash in ledger_entries(ledger_dir, from_seq, start):
        yield row(seq, chain_hash, entries.decode(payload))


def ledger_entries(
    ledger_dir: Path, from_seq: int, start: Position | None = None
) -> Iterator[tuple[int, memoryview, bytes]]:
    """The ledger's entries from `from_seq` on, as LedgerReader.entries yields them.

    With `start` (from position()), reading begins at that frame instead of at
    the start of its segment. If the frame there is not `from_seq` (the ledger
    is not the one indexed), the segment is read from its start after all.
    """
    first = None if start is None else fmt.parse_segment_name(start[0])
    if start is not None and first is not None:
        name, offset = start
        later = [s for s, _ in list_segments(ledger_dir) if s > first]
        try:
            with SegmentReader(ledger_dir / name) as reader:
                for _offset, seq, stored, digest in reader.frames(offset, from_seq):
                    yield seq, stored[fmt.FRAME_HEADER_BYTES :], bytes(digest)
                    from_seq = seq + 1
                found = reader.tail != TailState.DAMAGED
        except (OSError, EOFError, fmt.HeaderDamaged):  # removed by retention, or not a segment
            found = False
        if found and not later:
            return
    yield from LedgerReader(ledger_dir).entries(from_seq)


def _next(follower: LedgerFollower) -> Position | None:
    """Where the follower's next entry starts (right after the header in a new segment)."""
    if follower.path is None:
        return None
    offset = follower.offset if follower.offset is not None else fmt.SEGMENT_HEADER_BYTES
    return follower.path.name, offset


def catch_up(db: sqlite3.Connection, ledger_dir: Path) -> int:
    """Index every entry after the index's last one; returns how many.

    Reads with LedgerReader, so damage in the ledger raises LedgerCorruption.
    """
    done = pending = 0
    batch: list[Row] = []
    for item in read_rows(ledger_dir, last_seq(db) + 1):
        batch.append(item)
        if len(batch) >= BATCH:
            pending += _add(db, batch, None)
            batch = []
        if pending >= COMMIT_ENTRIES:
            db.commit()
            done, pending = done + pending, 0
    if batch:
        pending += _add(db, batch, None)
    done += pending
    if done:  # where the tail starts: one more read of the last segment's frames
        follower = LedgerFollower(ledger_dir, last_seq(db))
        if follower.read(1, last_seq(db)):
            _set_position(db, _next(follower))
    db.commit()
    analyze(db)
    return done


def _set_position(db: sqlite3.Connection, where: Position | None) -> None:
    if where is None:
        db.execute("DELETE FROM meta WHERE key IN ('next_segment', 'next_offset')")
    else:
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("next_segment", where[0]), ("next_offset", str(where[1]))],
        )


def _add(db: sqlite3.Connection, batch: list[Row], where: Position | None) -> int:
    """Add rows in the open transaction, with the last seq, highest time and tail position."""
    high = insert(db, batch, int(meta(db)["received_max"]))
    db.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [("last_seq", str(batch[-1][0][0])), ("received_max", str(high))],
    )
    _set_position(db, where)
    return len(batch)


def analyze(db: sqlite3.Connection) -> None:
    """Planner statistics, when the index has doubled since they were last taken."""
    values = meta(db)
    size = int(values.get("last_seq", 0))
    if size >= max(ANALYZE_FROM, 2 * int(values.get("analyzed_at", 0))):
        db.execute("ANALYZE filters")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('analyzed_at', ?)", (str(size),))
        db.commit()


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
        self.error = ""  # the last storage error, while the index cannot be written
        self.retries = 0
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
        """Serve until stopped; after a storage error (ENOSPC, EIO, a locked or
        damaged file) open the index again and go on, waiting longer each time."""
        delay = RETRY_START_S
        while not self._stop:
            try:
                self._serve()
                return
            except ValueError as exc:  # an entry that does not decode: retrying cannot help
                self.error = str(exc)
                log.error("query index stopped", extra={"fields": {"error": str(exc)}})
                return
            except (sqlite3.Error, OSError) as exc:
                if not self.error:
                    log.error(
                        "query index failed; retrying",
                        extra={"fields": {"error": str(exc), "retry_s": delay}},
                    )
                self.error = str(exc)
                self.retries += 1
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RETRY_CAP_S)

    def _serve(self) -> None:
        db = open_index(self.path)
        try:
            self.indexed = last_seq(db)
            follower = LedgerFollower(self.ledger_dir, self.indexed + 1)
            while not self._stop:
                self._wake.wait(timeout=INTERVAL_S)
                self._wake.clear()
                # One interval before each pass (so at most one pass per interval).
                # If more than a batch arrived meanwhile, ingest is in a burst: the
                # gateway sets yield_to_ingest once a second, later when its loop
                # is saturated, and the indexer must not compete before it does.
                before = self.durable
                self._stopping.wait(INTERVAL_S)
                if self.durable - before > BATCH:
                    continue
                self._catch_up(db, follower)
                if self.error:
                    log.warning("query index works again", extra={"fields": {"seq": self.indexed}})
                    self.error = ""
                if not (self.yield_to_ingest or self._stop):
                    analyze(db)
        finally:
            db.close()

    def _catch_up(self, db: sqlite3.Connection, follower: LedgerFollower) -> None:
        """Index what is durable, committing every COMMIT_ENTRIES and at the end.

        Only durable entries: a batch still being written may yet be cut by
        recovery, and the index must not hold what the ledger lost. `indexed`
        moves at commits only (retention keeps what the index has not committed).
        """
        pending, last = 0, self.indexed
        while not self._stop and not self.yield_to_ingest and last < self.durable:
            items = follower.read(BATCH, self.durable)
            if not items:
                break
            pending += _add(
                db, [row(s, h, entries.decode(p)) for s, p, h in items], _next(follower)
            )
            last = items[-1][0]
            if pending >= COMMIT_ENTRIES:
                db.commit()
                self.indexed, pending = last, 0
        if pending:
            db.commit()
            self.indexed = last

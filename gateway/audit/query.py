"""Queries over the index plus the ledger's unindexed tail, entry details, diffs.

A query never writes: it opens the index read-only, reads the ledger entries
newer than the index's last one into a private in-memory copy of its tables,
and runs one SQL statement over both for the seqs of the page asked for, then
reads those rows. So it sees every committed entry even while the indexer
lags, and works for read-only auditors.

The statement finds a page without reading every match (docs/audit.md,
"Speed"): each part of it is ordered by seq through an index, so SQLite merges
the parts and stops after limit + offset rows; a time window is first turned
into the range of seqs received in it (two index seeks, see index.py); full
text is an FTS5 match joined with the entries, so the planner can walk either
one in seq order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import itertools
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import zone
from gateway.audit import check, index
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.statedir import LOCK_FILE

# Default page size of `gateway query`: a screenful.
DEFAULT_LIMIT = 50
# Result rows are read by seq this many at a time: well under SQLite's limit
# of 32,766 parameters in one statement, whatever --limit asks for.
FETCH_CHUNK = 500

FILTER_COLUMNS = (
    "event_type", "action", "user_id", "username", "object_type", "object_id", "kind", "app"
)  # fmt: skip
# With --text, each full-text match is checked against the other filters
# through the index of the most selective one given (the first here whose
# columns are all given): its entries for one value sit together in a few
# pages, where the rows themselves are spread over the whole table.
PROBES = (
    (("object_id", "object_type"), "filters_object"),
    (("user_id",), "filters_user_id"),
    (("username",), "filters_username"),
    (("action",), "filters_action"),
    (("event_type",), "filters_event_type"),
    (("object_type",), "filters_object_type"),
    (("app",), "filters_app"),
    (("kind",), "filters_kind"),
)
# The columns of a result row: the index's, without its bookkeeping.
ROW_COLUMNS = tuple(c for c in index.FILTER_COLUMNS if c != "late") + index.RECORD_COLUMNS


@dataclass
class Filters:
    event_type: str | None = None
    action: str | None = None
    user_id: str | None = None
    username: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    kind: str | None = None
    app: str | None = None  # the source's app name (as claimed, or as its token proved)
    since_us: int | None = None
    until_us: int | None = None
    flagged: bool = False
    text: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    order: str = "desc"
    # The event's own `timestamp` (RFC 3339, as the app sent it) in [since, until).
    event_since_us: int | None = None
    event_until_us: int | None = None
    # Keyset paging (stream()): only seqs after this one in the order asked for.
    after_seq: int | None = None


@dataclass
class Result:
    rows: list[dict[str, Any]]  # index rows: the columns, with `record` decoded
    indexed_to: int  # the index's last seq (0: no index)
    from_ledger: int  # entries newer than the index, read from the ledger for this query
    index_present: bool


def parse_time(text: str, end: bool = False) -> int:
    """RFC 3339 or a date (local midnight; with `end`, the midnight after) -> µs."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
            moment = dt.datetime.combine(day, dt.time()).astimezone()
        else:
            moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.astimezone()
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    return int(moment.timestamp() * 1_000_000)


def _window(db: sqlite3.Connection, f: Filters) -> tuple[int, int] | None:
    """The first and last seq of the index received in [since, until); None: none was.

    In-order entries (late = 0) are sorted by time as by seq, so the first and
    the last of them in the window are one index seek each; late entries are
    few, and searched apart (index.py).
    """
    span = "received_at >= ? AND received_at < ?"
    times = (
        index.TIME_MIN if f.since_us is None else f.since_us,
        index.TIME_MAX if f.until_us is None else f.until_us,
    )
    found = []
    for order in ("", "DESC"):
        seq = db.execute(
            f"SELECT seq FROM idx.filters WHERE late = 0 AND {span} "
            f"ORDER BY received_at {order}, seq {order} LIMIT 1",
            times,
        ).fetchone()
        found += seq or []
    found += db.execute(
        f"SELECT min(seq), max(seq) FROM idx.filters WHERE late = 1 AND {span}", times
    ).fetchone()
    seqs = [s for s in found if s is not None]
    return (min(seqs), max(seqs)) if seqs else None


def _select(f: Filters, schema: str, seqs: tuple[int, int] | None) -> tuple[str, list[Any]]:
    """The seqs in `schema` that match, within the range `seqs` if given.

    With --text the full-text match leads, in seq order (FTS5 reads its rowids
    in either direction and within a range), and each match is checked against
    the other filters; without, SQLite picks the filter's (column, seq) index.
    """
    # The seq column the range and the order apply to.
    key = "fts.rowid" if f.text else "e.seq"
    clauses, params = [], []
    for column in FILTER_COLUMNS:
        value = getattr(f, column)
        if value is not None:
            clauses.append(f"e.{column} = ?")
            params.append(value)
    if seqs is not None:
        clauses.append(f"{key} BETWEEN ? AND ?")
        params += seqs
    if f.since_us is not None:
        clauses.append("e.received_at >= ?")
        params.append(f.since_us)
    if f.until_us is not None:
        clauses.append("e.received_at < ?")
        params.append(f.until_us)
    if f.flagged:
        clauses.append("e.flagged = 1")
    if f.after_seq is not None:
        clauses.append(f"{key} {'<' if f.order == 'desc' else '>'} ?")
        params.append(f.after_seq)
    source = f"{schema}.filters AS e"
    if f.event_since_us is not None or f.event_until_us is not None:
        # The event's own time is not a column of the index: it is read from
        # each candidate's record (docs/audit.md, "Speed": narrow it first).
        source += f" JOIN {schema}.entries AS r ON r.seq = e.seq"
        if f.event_since_us is not None:
            clauses.append("event_us(r.record) >= ?")
            params.append(f.event_since_us)
        if f.event_until_us is not None:
            clauses.append("event_us(r.record) < ?")
            params.append(f.event_until_us)
    if f.text:
        # The tail's in-memory tables have no indexes (nor need them).
        probe = next((i for cols, i in PROBES if all(getattr(f, c) for c in cols)), None)
        if schema == "idx" and probe:
            source += f" INDEXED BY {probe}"
        source = f"{schema}.fts JOIN {source} ON e.seq = fts.rowid"
        clauses.append("fts MATCH ?")
        params.append('"' + f.text.replace('"', '""') + '"')  # one phrase, no FTS syntax
    return f"SELECT {key} AS seq FROM {source} WHERE {' AND '.join(clauses) or '1'}", params


def _rows(db: sqlite3.Connection, seqs: list[int], indexed_to: int) -> list[dict[str, Any]]:
    """The result rows of `seqs`, in that order: up to `indexed_to` from the index."""
    columns = ", ".join(f"e.{c}" for c in ROW_COLUMNS if c not in index.RECORD_COLUMNS)
    found = {}
    for schema, part in (
        ("idx", [s for s in seqs if s <= indexed_to]),
        ("main", [s for s in seqs if s > indexed_to]),
    ):
        for i in range(0, len(part), FETCH_CHUNK):
            chunk = part[i : i + FETCH_CHUNK]
            cursor = db.execute(
                f"SELECT {columns}, r.summary, r.record FROM {schema}.filters AS e "
                f"JOIN {schema}.entries AS r USING (seq) "
                f"WHERE e.seq IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for values in cursor:
                r = dict(zip(ROW_COLUMNS, values, strict=True))
                r["record"] = json.loads(r["record"])
                found[r["seq"]] = r
    return [found[s] for s in seqs]


def _event_us(record: str) -> int | None:
    """SQL function: the event's own timestamp in µs, from an export record's JSON."""
    event = json.loads(record).get("event")
    return zone.event_time_us(event.get("timestamp")) if isinstance(event, dict) else None


def _gateway_running(state_dir: Path) -> bool:
    """Whether a gateway holds the state directory's lock (unknown counts as running)."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _attach_index(db: sqlite3.Connection, path: Path, state_dir: Path) -> bool:
    """Attach the index read-only; False when it cannot be read (the ledger answers alone).

    With no gateway running, it is opened `immutable`: SQLite then creates no
    -wal or -shm file and changes nothing in the state directory (rows still in
    a left-over WAL are read from the ledger instead, like any unindexed tail).
    While the gateway runs, a WAL reader needs a writable -shm, which a
    read-only group member does not have: the query then reads the ledger.
    """
    mode = "ro" if _gateway_running(state_dir) else "ro&immutable=1"
    try:
        db.execute("ATTACH DATABASE ? AS idx", (f"file:{path}?mode={mode}",))
        index.meta(db, "idx")
    except sqlite3.Error:
        try:
            db.execute("DETACH DATABASE idx")
        except sqlite3.Error:
            pass
        return False
    return True


class QueryView:
    """One read-only view of the index plus the ledger's unindexed tail, for several pages."""

    def __init__(self, state_dir: Path, max_tail: int | None = None) -> None:
        """`max_tail`: read at most this many unindexed entries; `tail_cut` then says
        whether there were more (the answers cover entries up to `covered_to` only)."""
        path = state_dir / index.INDEX_FILE
        self.db = db = sqlite3.connect(":memory:")
        try:
            db.create_function("event_us", 1, _event_us, deterministic=True)
            db.executescript(index.SCHEMA)
            known: dict[str, str] = {}
            if path.exists() and _attach_index(db, path, state_dir):
                known = index.meta(db, "idx")
                if known.get("version") != index.SCHEMA_VERSION:  # the gateway is rebuilding it
                    known = {}
            self.present = bool(known)
            self.indexed_to = int(known.get("last_seq", 0))
            rows = index.read_rows(state_dir / "ledger", self.indexed_to + 1, index.position(known))
            if max_tail is not None:
                rows = itertools.islice(rows, max_tail + 1)
            tail = list(rows)
            self.tail_cut = max_tail is not None and len(tail) > max_tail
            if self.tail_cut:
                del tail[max_tail:]
            self.covered_to = tail[-1][0][0] if tail else self.indexed_to
            with db:
                index.insert(db, tail, index.TIME_MIN)
            self.from_ledger = len(tail)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> QueryView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _matches(self, f: Filters) -> tuple[str, list[Any]]:
        parts, params = [], []
        if self.present:
            # Up to indexed_to only: the indexer may commit more meanwhile, read
            # from the ledger above. A time window narrows the range further.
            seqs: tuple[int, int] | None = (1, self.indexed_to)
            if f.since_us is not None or f.until_us is not None:
                window = _window(self.db, f)
                seqs = (window[0], min(window[1], self.indexed_to)) if window else None
            if seqs is not None:
                sql, p = _select(f, "idx", seqs)
                parts.append(sql)
                params += p
        sql, p = _select(f, "main", None)
        parts.append(sql)
        params += p
        return " UNION ALL ".join(parts), params

    def page(self, f: Filters) -> list[dict[str, Any]]:
        sql, params = self._matches(f)
        order = "DESC" if f.order == "desc" else "ASC"
        sql = f"{sql} ORDER BY seq {order} LIMIT ? OFFSET ?"
        seqs = [seq for (seq,) in self.db.execute(sql, [*params, f.limit, f.offset])]
        return _rows(self.db, seqs, self.indexed_to)

    def count(self, f: Filters) -> int:
        """How many entries match: an index-only count, without reading the rows."""
        sql, params = self._matches(f)
        return self.db.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]

    def count_upto(self, f: Filters, cap: int) -> int:
        """How many entries match, counting no further than `cap` (a bounded cost)."""
        sql, params = self._matches(f)
        return self.db.execute(f"SELECT count(*) FROM ({sql} LIMIT ?)", [*params, cap]).fetchone()[
            0
        ]

    def result(self, rows: list[dict[str, Any]]) -> Result:
        return Result(rows, self.indexed_to, self.from_ledger, self.present)


def run(state_dir: Path, f: Filters) -> Result:
    with QueryView(state_dir) as view:
        return view.result(view.page(f))


def stream(view: QueryView, f: Filters, chunk: int = FETCH_CHUNK) -> Iterator[dict[str, Any]]:
    """Every match after f.offset, in f.order, `chunk` rows at a time (constant memory).

    Pages by seq (the last one returned bounds the next page), so each page
    costs what the first did, however deep into the matches it is.
    """
    page = dataclasses.replace(f, limit=chunk, after_seq=None)
    while True:
        rows = view.page(page)
        yield from rows
        if len(rows) < chunk:
            return
        page = dataclasses.replace(page, offset=0, after_seq=rows[-1]["seq"])


# A row whose entry retention removed: it cannot be checked against the live
# ledger (that is `gateway verify --archive`'s job), which is not damage.
REMOVED = "removed from the live ledger by retention"


def check_rows(cursor: check.Cursor, rows: list[dict[str, Any]]) -> dict[int, str]:
    """Each row checked against the ledger: {seq: what failed} for the rows that fail.

    A row passes when its entry's link in the chain holds (check.py) and the
    row says exactly what the entry's bytes say. (`gateway verify` checks the
    whole chain.)
    """
    problems = {}
    for r in sorted(rows, key=lambda r: r["seq"]):
        seq = r["seq"]
        item = cursor.get(seq)
        if item is None:
            gone = seq <= cursor.base.seq
            problems[seq] = REMOVED if gone else ("not in the ledger")
        elif item.damage:
            problems[seq] = item.damage
        elif json.loads(json.dumps(item.record)) != r["record"]:
            problems[seq] = "the index differs from the ledger"
    return problems


def verify_rows(ledger_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """check_rows as lines (`seq N: what failed`), in seq order."""
    problems = check_rows(check.Cursor(ledger_dir), rows)
    return [f"seq {seq}: {problems[seq]}" for seq in sorted(problems)]


def read_entry(ledger_dir: Path, seq: int) -> dict[str, Any] | None:
    for found, payload, chain_hash in LedgerReader(ledger_dir).entries(seq, seq):
        if found == seq:
            return entries.export_record(seq, chain_hash, entries.decode(payload))
    return None


def diff(old: Any, new: Any, path: str = "") -> list[tuple[str, str, Any, Any]]:
    """Field-by-field differences: (added | removed | changed, path, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(("added", sub, None, new[key]))
            elif key not in new:
                out.append(("removed", sub, old[key], None))
            else:
                out += diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                out.append(("added", sub, None, new[i]))
            elif i >= len(new):
                out.append(("removed", sub, old[i], None))
            else:
                out += diff(old[i], new[i], sub)
        return out
    if old != new or type(old) is not type(new):
        return [("changed", path or "(value)", old, new)]
    return []

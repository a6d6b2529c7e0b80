"""Queries over the index plus the ledger's unindexed tail, entry details, diffs.

A query never writes: it opens the index read-only, reads the ledger entries
newer than the index's last one into a private in-memory table with the same
schema, and runs one SQL statement over both. So it sees every committed
entry even while the indexer lags, and works for read-only auditors.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit import index
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerReader

# Default page size of `gateway query`: a screenful.
DEFAULT_LIMIT = 50

FILTER_COLUMNS = ("event_type", "action", "user_id", "username", "object_type", "object_id", "kind")


@dataclass
class Filters:
    event_type: str | None = None
    action: str | None = None
    user_id: str | None = None
    username: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    kind: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    flagged: bool = False
    text: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    order: str = "desc"


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


def _where(f: Filters, schema: str) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for column in FILTER_COLUMNS:
        value = getattr(f, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.since_us is not None:
        clauses.append("received_at >= ?")
        params.append(f.since_us)
    if f.until_us is not None:
        clauses.append("received_at < ?")
        params.append(f.until_us)
    if f.flagged:
        clauses.append("flagged = 1")
    if f.text:
        clauses.append(f"seq IN (SELECT rowid FROM {schema}.fts WHERE fts MATCH ?)")
        params.append('"' + f.text.replace('"', '""') + '"')  # one phrase, no FTS syntax
    return (" AND ".join(clauses) or "1"), params


def run(state_dir: Path, f: Filters) -> Result:
    path = state_dir / index.INDEX_FILE
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(index.SCHEMA.format(prefix=""))
        present = path.exists()
        indexed_to = 0
        if present:
            db.execute("ATTACH DATABASE ? AS idx", (f"file:{path}?mode=ro",))
            indexed_to = index.last_seq(db, "idx")
        tail = list(index.read_rows(state_dir / "ledger", indexed_to + 1))
        with db:
            index.insert(db, tail)
        parts, params = [], []
        if present:
            where, p = _where(f, "idx")
            parts.append(f"SELECT * FROM idx.entries WHERE {where}")
            params += p
        where, p = _where(f, "main")
        parts.append(f"SELECT * FROM main.entries WHERE {where}")
        params += p
        order = "DESC" if f.order == "desc" else "ASC"
        sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY seq {order} LIMIT ? OFFSET ?"
        cursor = db.execute(sql, [*params, f.limit, f.offset])
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor:
            r = dict(zip(names, values, strict=True))
            r["record"] = json.loads(r["record"])
            rows.append(r)
        return Result(rows, indexed_to, len(tail), present)
    finally:
        db.close()


def verify_rows(ledger_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Re-hash each returned entry against the ledger; returns the problems found.

    For each row: the ledger's stored bytes at that seq hash, with the previous
    entry's chain hash, to the chain hash the ledger holds, and the row says
    exactly what those bytes say. (`gateway verify` checks the whole chain.)
    """
    wanted = {r["seq"]: r["record"] for r in rows}
    if not wanted:
        return []
    problems = []
    first, last = min(wanted), max(wanted)
    begin = max(1, first - 1)  # the entry before the first row gives its chain input
    reader = LedgerReader(ledger_dir)
    base = reader.base()  # where the live ledger starts (genesis, or after retention)
    prev: bytes | None = base.hash if begin <= base.seq + 1 else None
    seen = set()
    for seq, payload, chain_hash in reader.entries(begin, last):
        if seq in wanted:
            seen.add(seq)
            stored = fmt.frame_header(len(payload), seq) + bytes(payload)
            if prev is None or fmt.chain_hash(prev, stored) != chain_hash:
                problems.append(f"seq {seq}: stored bytes do not match the chain hash")
            record = entries.export_record(seq, chain_hash, entries.decode(payload))
            if json.loads(json.dumps(record)) != wanted[seq]:
                problems.append(f"seq {seq}: the index differs from the ledger")
        prev = chain_hash
    for seq in sorted(set(wanted) - seen):
        if seq <= base.seq:
            problems.append(f"seq {seq}: removed from the live ledger by retention")
        else:
            problems.append(f"seq {seq}: not in the ledger")
    return problems


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

"""The query index's layout for speed: schema versions, time windows, the ledger tail, plans.

Each test builds a ledger with the real writer, indexes it with the real code
(catch_up, the Indexer thread) and checks that queries answer exactly what a
plain reading of the ledger says, whichever shortcut the index takes.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.audit import index
from gateway.audit.query import PROBES, Filters, run
from gateway.ledger import entries
from gateway.ledger.store import LedgerWriter, list_segments, write_entries

T0 = 1_790_000_000_000_000  # µs, 2026-09
APP = "crm"
SOURCE = entries.encode_source("10.0.0.1", 40000, APP, 1)


def append(ledger_dir: Path, events: list[tuple[int, dict]], segment_bytes: int = 1 << 20) -> None:
    """Commit (received_at, event) pairs after what the ledger holds, with the real writer."""
    if not events:
        return
    writer = LedgerWriter(ledger_dir, segment_bytes=segment_bytes).open()
    payloads = [entries.encode_event(received, SOURCE, event, []) for received, event in events]
    write_entries(writer, payloads, batch=len(payloads))


def reindex(state: Path) -> int:
    db = index.open_index(state / index.INDEX_FILE)
    try:
        return index.catch_up(db, state / "ledger")
    finally:
        db.close()


def seqs(state: Path, **filters) -> list[int]:
    return [r["seq"] for r in run(state, Filters(**{"limit": 1000, **filters})).rows]


def write_v1_index(path: Path, last: int) -> None:
    """An index as the first version of the schema left it (one wide table)."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, received_at INTEGER,"
        " event_type TEXT, action TEXT, user_id TEXT, username TEXT, object_type TEXT,"
        " object_id TEXT, flagged INTEGER NOT NULL, app TEXT, summary TEXT NOT NULL,"
        " record TEXT NOT NULL);"
    )
    db.execute("INSERT INTO meta VALUES ('version', '1'), ('last_seq', ?)", (str(last),))
    db.commit()
    db.close()


def test_an_index_of_another_version_is_ignored_then_rebuilt(tmp_path):
    state = tmp_path / "state"
    append(state / "ledger", [(T0 + i, {"event_type": "e", "user_id": f"u{i}"}) for i in range(5)])
    write_v1_index(state / index.INDEX_FILE, last=5)

    # A query cannot use it: it reads the ledger instead, and says so.
    result = run(state, Filters(user_id="u3"))
    assert [r["seq"] for r in result.rows] == [4]
    assert not result.index_present and result.from_ledger == 5

    # The gateway's indexer starts it afresh and catches up.
    indexer = index.Indexer(state, state / "ledger")
    indexer.start()
    try:
        indexer.notify(5)
        deadline = time.monotonic() + 10
        while indexer.indexed < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        indexer.stop()
    assert indexer.indexed == 5 and not indexer.error
    result = run(state, Filters(user_id="u3"))
    assert [r["seq"] for r in result.rows] == [4]
    assert result.index_present and result.from_ledger == 0
    db = sqlite3.connect(state / index.INDEX_FILE)
    assert index.meta(db)["version"] == index.SCHEMA_VERSION
    db.close()


# The clock goes back twice: seqs 5, 6 and 8 are received before an earlier entry.
CLOCK = [0, 10, 20, 30, 5, 15, 40, 25, 40, 50]


@pytest.mark.parametrize("indexed", [0, 4, len(CLOCK)])
def test_time_windows_when_the_clock_was_set_back(tmp_path, indexed):
    state = tmp_path / "state"
    append(state / "ledger", [(T0 + t, {"event_type": "e"}) for t in CLOCK[:indexed]])
    if indexed:
        reindex(state)
    append(state / "ledger", [(T0 + t, {"event_type": "e"}) for t in CLOCK[indexed:]])
    bounds = [None, -1, 0, 5, 6, 12, 15, 25, 26, 30, 40, 41, 60]
    for since, until in itertools.product(bounds, bounds):
        got = seqs(
            state,
            order="asc",
            since_us=None if since is None else T0 + since,
            until_us=None if until is None else T0 + until,
        )
        want = [
            seq
            for seq, t in enumerate(CLOCK, start=1)
            if (since is None or t >= since) and (until is None or t < until)
        ]
        assert got == want, (since, until)
    if indexed == len(CLOCK):
        db = sqlite3.connect(state / index.INDEX_FILE)
        late = [s for (s,) in db.execute("SELECT seq FROM filters WHERE late = 1 ORDER BY seq")]
        db.close()
        assert late == [5, 6, 8]


def test_the_tail_is_read_from_where_the_index_stopped(tmp_path, monkeypatch):
    state = tmp_path / "state"
    ledger_dir = state / "ledger"
    small = 1024  # a few entries per segment, so that the tail crosses segments
    append(ledger_dir, [(T0 + i, {"event_type": "old", "n": i}) for i in range(40)], small)
    reindex(state)
    append(ledger_dir, [(T0 + 100 + i, {"event_type": "new", "n": i}) for i in range(30)], small)
    assert len(list_segments(ledger_dir)) > 3

    scans = []
    real = index.LedgerReader

    class Counting(real):
        def entries(self, from_seq=1, to_seq=None):
            scans.append(from_seq)
            return super().entries(from_seq, to_seq)

    monkeypatch.setattr(index, "LedgerReader", Counting)
    result = run(state, Filters(event_type="new", order="asc", limit=100))
    assert [r["record"]["event"]["n"] for r in result.rows] == list(range(30))
    assert result.from_ledger == 30
    # Read on from the recorded frame; a later segment is read from its start.
    first_of = {first for first, _ in list_segments(ledger_dir)}
    assert 41 not in first_of and scans and all(seq in first_of for seq in scans)

    # A position that does not point at the next entry is noticed: read from the segment's start.
    db = sqlite3.connect(state / index.INDEX_FILE)
    with db:
        db.execute("UPDATE meta SET value = '100' WHERE key = 'next_offset'")
    db.close()
    scans.clear()
    result = run(state, Filters(event_type="new", order="asc", limit=100))
    assert [r["record"]["event"]["n"] for r in result.rows] == list(range(30))
    assert scans == [41]


def fields(event: dict) -> dict:
    """What the index's filter columns hold for one event."""
    return {**event, "kind": entries.EVENT, "app": APP}


def test_text_with_each_other_filter_checks_through_its_index(tmp_path):
    state = tmp_path / "state"
    users, actions, types = ["u1", "u2"], ["update", "view"], ["invoice", "order"]
    events = []
    for i in range(64):
        events.append(
            (
                T0 + i,
                {
                    "event_type": ["audit", "login"][i % 2],
                    "user_id": users[i // 2 % 2],
                    "username": users[i // 2 % 2].upper(),
                    "action": actions[i // 4 % 2],
                    "object_type": types[i // 8 % 2],
                    "object_id": str(i // 16),
                    "note": "refund issued" if i % 3 else "nothing",
                },
            )
        )
    append(state / "ledger", events)
    reindex(state)
    for columns, _index in PROBES:
        given = {c: fields(events[21][1])[c] for c in columns}
        for extra in ({}, {"order": "asc"}, {"since_us": T0 + 10, "until_us": T0 + 50}):
            got = seqs(state, text="refund issued", **given, **extra)
            since, until = extra.get("since_us", T0), extra.get("until_us", T0 + len(events))
            want = [
                seq
                for seq, (t, e) in enumerate(events, start=1)
                if "refund" in e["note"]
                and all(fields(e)[c] == v for c, v in given.items())
                and since <= t < until
            ]
            if extra.get("order") != "asc":
                want.reverse()
            assert got == want, (given, extra)


def test_statistics_are_taken_as_the_index_doubles(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "ANALYZE_FROM", 8)
    monkeypatch.setattr(index, "BATCH", 3)
    monkeypatch.setattr(index, "COMMIT_ENTRIES", 5)
    state = tmp_path / "state"
    path = state / index.INDEX_FILE

    def analyzed() -> tuple[str | None, int]:
        db = sqlite3.connect(path)
        try:
            stats = db.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0]
        except sqlite3.OperationalError:  # no statistics yet
            stats = 0
        at = index.meta(db).get("analyzed_at")
        db.close()
        return at, stats

    append(state / "ledger", [(T0 + i, {"event_type": "e", "user_id": "u"}) for i in range(5)])
    assert reindex(state) == 5
    assert analyzed() == (None, 0)  # small: no statistics
    append(state / "ledger", [(T0 + i, {"event_type": "e", "user_id": "u"}) for i in range(6)])
    assert reindex(state) == 6
    at, stats = analyzed()
    assert at == "11" and stats > 0
    append(state / "ledger", [(T0 + i, {"event_type": "e", "user_id": "u"}) for i in range(6)])
    assert reindex(state) == 6
    assert analyzed()[0] == "11"  # 17 < 22: not doubled yet
    assert seqs(state, user_id="u", limit=3) == [17, 16, 15]


def test_the_indexer_tries_again_after_the_disk_was_full(tmp_path, monkeypatch):
    state = tmp_path / "state"
    append(state / "ledger", [(T0 + i, {"event_type": "e", "user_id": f"u{i}"}) for i in range(5)])
    monkeypatch.setattr(index, "RETRY_START_S", 0.01)
    real_add = index._add
    failures = {"left": 3}

    def full_disk(db, batch, where):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(db, batch, where)

    monkeypatch.setattr(index, "_add", full_disk)
    indexer = index.Indexer(state, state / "ledger")
    indexer.start()
    try:
        indexer.notify(5)
        deadline = time.monotonic() + 30
        while indexer.indexed < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert indexer.indexed == 5, indexer.error
        assert indexer.retries == 3
        deadline = time.monotonic() + 10
        while indexer.error and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not indexer.error
    finally:
        indexer.stop()
    result = run(state, Filters(user_id="u3"))
    assert [r["seq"] for r in result.rows] == [4]

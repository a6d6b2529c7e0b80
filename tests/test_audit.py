"""The audit trail: index, queries with every filter, provenance, --verify, show, reindex."""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import time

import pytest
from gatewayproc import run_gateway_command
from inproc import pump, settle

from gateway.audit import index, present
from gateway.audit.query import Filters, diff, parse_time, read_entry, run, verify_rows
from gateway.config import Config, IndexConfig, IngestConfig
from gateway.service import Gateway

EVENTS = [
    {"event_type": "audit", "action": "update", "user": "anna", "user_id": "u7",
     "object_type": "invoice", "object_id": "17", "timestamp": "2026-11-30T10:00:00Z",
     "old_value": {"total": 10, "lines": [1, 2], "gone": True},
     "new_value": {"total": 12, "lines": [1], "note": "fixed typo"}},
    {"event_type": "subscription_cancelled", "subscription_id": 42, "user_id": "u9",
     "username": "carl", "status": "cancelled", "timestamp": "2026-11-30T10:01:00Z"},
    {"event_type": "ticket_closed", "ticket_id": 5, "outcome": "solved"},  # flagged: no timestamp
]  # fmt: skip


def start(tmp_path, enabled: bool = True) -> tuple[Gateway, tuple[str, int]]:
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        index=IndexConfig(enabled=enabled),
    )
    gw = Gateway(config)
    return gw, gw.start()[0]


def feed(gw: Gateway, address, events: list[dict]) -> None:
    before = gw.ingest.stats.events
    with socket.create_connection(address) as c:
        c.sendall(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    pump(gw, lambda: gw.ingest.stats.events == before + len(events))
    settle(gw)


def stop(gw: Gateway) -> None:
    gw.request_stop()
    gw._finish()


@pytest.fixture
def trail(tmp_path):
    gw, address = start(tmp_path)
    feed(gw, address, EVENTS)
    pump(gw, lambda: gw.indexer.indexed == gw.ledger.durable.seq and gw.indexer.lag == 0)
    stop(gw)
    return gw.config


def seqs(result) -> list[int]:
    return [r["seq"] for r in result.rows]


def event_seq(config, **match) -> int:
    result = run(config.state_dir, Filters(kind="event", limit=100, order="asc"))
    for r in result.rows:
        if all(r["record"]["event"].get(k) == v for k, v in match.items()):
            return r["seq"]
    raise AssertionError(match)


def test_every_filter(trail):
    audit, cancel, ticket = (event_seq(trail, event_type=e["event_type"]) for e in EVENTS)
    q = lambda **kw: seqs(run(trail.state_dir, Filters(**kw)))  # noqa: E731
    assert q(event_type="audit") == [audit]
    assert q(action="update") == [audit]
    assert q(user_id="u9") == [cancel]
    assert q(username="anna") == [audit] and q(username="carl") == [cancel]
    assert q(object_type="invoice", object_id="17") == [audit]
    assert q(flagged=True, kind="event") == [ticket]
    assert q(text="typo") == [audit] and q(text="solved") == [ticket]
    assert q(kind="event", order="asc") == [audit, cancel, ticket]
    assert q(kind="event", limit=1, offset=1, order="asc") == [cancel]
    assert (
        q(kind="event", since_us=parse_time("2000-01-01"), until_us=parse_time("2000-01-02")) == []
    )
    today = time.strftime("%Y-%m-%d")
    assert q(kind="event", since_us=parse_time(today), until_us=parse_time(today, end=True),
             order="asc") == [audit, cancel, ticket]  # fmt: skip
    assert run(trail.state_dir, Filters()).index_present


def test_a_query_sees_entries_the_index_has_not_caught_up_with(trail, tmp_path):
    gw, address = start(tmp_path, enabled=False)  # the index stays behind
    feed(gw, address, [{"event_type": "late", "timestamp": "2026-11-30T11:00:00Z"}])
    stop(gw)
    result = run(trail.state_dir, Filters(event_type="late"))
    assert len(result.rows) == 1 and result.from_ledger > 0
    assert "newer entries read from the ledger" in present.provenance(result)


def test_without_an_index_the_ledger_answers(trail):
    (trail.state_dir / index.INDEX_FILE).unlink()
    result = run(trail.state_dir, Filters(event_type="audit"))
    assert len(result.rows) == 1 and not result.index_present
    assert "no index" in present.provenance(result)


def test_verify_detects_an_index_that_lies(trail):
    result = run(trail.state_dir, Filters(kind="event"))
    assert verify_rows(trail.ledger_dir, result.rows) == []
    audit = event_seq(trail, event_type="audit")
    db = sqlite3.connect(trail.state_dir / index.INDEX_FILE)
    record = json.loads(
        db.execute("SELECT record FROM entries WHERE seq=?", (audit,)).fetchone()[0]
    )
    record["event"]["user"] = "mallory"
    with db:
        db.execute("UPDATE entries SET record=? WHERE seq=?", (json.dumps(record), audit))
    db.close()
    result = run(trail.state_dir, Filters(kind="event"))
    assert verify_rows(trail.ledger_dir, result.rows) == [
        f"seq {audit}: the index differs from the ledger"
    ]


def test_csv_is_rfc_4180_with_nested_values_as_json(trail):
    out = io.StringIO(newline="")
    present.write(run(trail.state_dir, Filters(kind="event", order="asc")).rows, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert out.getvalue().count("\r\n") == 4
    assert rows[0]["event_type"] == "audit" and json.loads(rows[0]["event"]) == EVENTS[0]
    assert json.loads(rows[2]["flags"]) == ["missing_timestamp"]


def test_table_fits_80_columns(trail):
    out = io.StringIO()
    present.write(run(trail.state_dir, Filters()).rows, "table", out)
    assert all(len(line) <= 80 for line in out.getvalue().splitlines())


def test_show_has_the_hash_and_a_field_by_field_diff(trail):
    record = read_entry(trail.ledger_dir, event_seq(trail, event_type="audit"))
    text = present.detail(record)
    assert f"hash        {record['hash']}" in text
    assert "  ~ total: 10 -> 12" in text
    assert "  - lines[1]: 2" in text and "  - gone: true" in text
    assert '  + note: "fixed typo"' in text


def test_diff_of_nested_values():
    assert diff({"a": {"b": [1, {"c": 1}]}}, {"a": {"b": [1, {"c": 2}, 3]}}) == [
        ("changed", "a.b[1].c", 1, 2),
        ("added", "a.b[2]", None, 3),
    ]
    assert diff(1, 1) == [] and diff(1, "1") == [("changed", "(value)", 1, "1")]


def test_reindex_rebuilds_and_refuses_while_the_gateway_runs(trail, tmp_path):
    from gateway.cli import main

    (trail.state_dir / index.INDEX_FILE).write_bytes(b"garbage")
    assert main(["reindex", "--state", str(trail.state_dir)]) == 0
    assert len(run(trail.state_dir, Filters(kind="event")).rows) == 3
    gw, _ = start(tmp_path)
    try:
        assert main(["reindex", "--state", str(trail.state_dir)]) == 1
    finally:
        stop(gw)


def test_queries_on_a_stopped_gateway_change_nothing_in_the_state_directory(tmp_path):
    """Read-only means read-only: no -wal or -shm, no file touched (opened immutable)."""
    import os
    import stat

    from gatewayproc import GatewayProcess, event_line, run_gateway_command

    gw = GatewayProcess(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port)) as c:
            c.sendall(b"".join(event_line(n=n) for n in range(20)))
        gw.wait_export(lambda found: sum(e["kind"] == "event" for e in found) == 20)
    finally:
        assert gw.close() == 0
    state = gw.state_dir
    index_file = state / "index.sqlite3"
    assert stat.S_IMODE(os.stat(index_file).st_mode) == 0o640

    def snapshot() -> dict:
        return {
            str(p.relative_to(state)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in state.rglob("*")
            if p.is_file()
        }

    before = snapshot()
    for args in (["query", "--format", "jsonl", "--all"], ["show", "3"], ["verify"], ["export"]):
        result = run_gateway_command(*args, "--state", str(state))
        assert result.returncode == 0, (args, result.stderr)
    assert snapshot() == before
    assert not (state / "index.sqlite3-wal").exists() and not (state / "index.sqlite3-shm").exists()


def _feed_as(gw: Gateway, address, app: str, events: list[dict]) -> None:
    before = gw.ingest.stats.events
    with socket.create_connection(address) as c:
        hello = json.dumps({"hello": {"app": app}}).encode() + b"\n"
        c.sendall(hello + b"".join(json.dumps(e).encode() + b"\n" for e in events))
    pump(gw, lambda: gw.ingest.stats.events == before + len(events))
    settle(gw)


def test_the_app_filter_in_the_index_and_in_the_unindexed_tail(tmp_path):
    gw, address = start(tmp_path)
    _feed_as(gw, address, "shop", [{"event_type": "a", "n": 1}])
    _feed_as(gw, address, "blog", [{"event_type": "a", "n": 2}])
    pump(gw, lambda: gw.indexer.indexed == gw.ledger.durable.seq and gw.indexer.lag == 0)
    stop(gw)
    gw, address = start(tmp_path, enabled=False)  # what follows stays out of the index
    _feed_as(gw, address, "shop", [{"event_type": "a", "n": 3}])
    stop(gw)
    result = run(gw.config.state_dir, Filters(app="shop", order="asc"))
    assert [r["record"]["event"]["n"] for r in result.rows] == [1, 3]
    assert result.from_ledger > 0 and result.index_present
    blog = run(gw.config.state_dir, Filters(app="blog")).rows
    assert [r["record"]["event"]["n"] for r in blog] == [2]
    state = str(gw.config.state_dir)
    done = run_gateway_command("query", "--state", state, "--app", "blog", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"]["n"] for line in done.stdout.splitlines()] == [2]

"""The audit commands as a user runs them: checked answers, exit codes, complete exports, zones."""

from __future__ import annotations

import csv
import io
import json
import re
import tracemalloc
from pathlib import Path

import pytest

from gateway.audit import index, present
from gateway.cli import main as cli_main
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader, LedgerWriter, list_segments, write_entries

HOUR_US = 3600 * 1_000_000
# 2026-12-01T12:00:00Z: noon UTC, so zones far east and west put it on other days.
NOON_US = 1_796_126_400 * 1_000_000
SOURCE = entries.encode_source("198.51.100.4", 51000, "shop", 1)


def amount_event(n: int, amount: str = "0.07") -> dict:
    return {
        "event_type": "audit",
        "action": "update",
        "user_id": f"u{n}",
        "object_type": "invoice",
        "object_id": str(n),
        "timestamp": "2026-11-23T10:00:00Z",
        "old_value": {"amount": amount},
        "new_value": {"amount": "1.00"},
    }


def build(state: Path, n: int = 20, tz: str = "Europe/Berlin", segment_bytes: int = 1 << 20):
    """A `started` entry naming `tz`, then n audit events received a minute apart at noon UTC."""
    writer = LedgerWriter(state / "ledger", segment_bytes=segment_bytes).open()
    started = entries.encode_system(NOON_US, "started", {"version": "t", "timezone": tz})
    events = (
        entries.encode_event(NOON_US + i * 60_000_000, SOURCE, amount_event(i), [])
        for i in range(n)
    )
    write_entries(writer, [started, *events], batch=1000, sync=False)


def tamper(state: Path, seq: int, old: bytes = b"0.07", new: bytes = b"0.70") -> None:
    """Change bytes inside entry `seq`'s payload, as an attacker with the card would."""
    for _s, payload, _h in LedgerReader(state / "ledger").entries(seq, seq):
        original = bytes(payload)
    for _first, path in list_segments(state / "ledger"):
        data = path.read_bytes()
        at = data.find(original)
        if at >= 0:
            fixed = original.replace(old, new)
            path.write_bytes(data[:at] + fixed + data[at + len(original) :])
            return
    raise AssertionError(f"entry {seq} not found")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path) -> Path:
    build(tmp_path / "state")
    return tmp_path / "state"


def reindex(state: Path) -> None:
    db = index.open_index(state / index.INDEX_FILE)
    try:
        index.catch_up(db, state / "ledger")
    finally:
        db.close()


# ---- every answer is checked


def test_show_checks_the_entry_and_says_so(state, capsys):
    code, out, _ = cli(capsys, "show", "9", "--state", str(state))
    assert code == 0 and "check       ok" in out and '"0.07"' in out
    code, out, _ = cli(capsys, "show", "9", "--no-check", "--state", str(state))
    assert code == 0 and "not checked against the chain (--no-check)" in out


@pytest.mark.parametrize("indexed", [False, True])
def test_a_tampered_entry_is_damaged_in_show_export_and_query(state, capsys, indexed):
    if indexed:
        reindex(state)  # the index holds the original; the ledger is changed afterwards
    tamper(state, 9)
    code, out, _ = cli(capsys, "show", "9", "--state", str(state))
    assert code == 1 and out.startswith("DAMAGED: seq 9: stored bytes do not match")
    assert "0.70" not in out and "0.07" not in out

    code, out, err = cli(capsys, "export", "--from-seq", "9", "--to-seq", "9", "--state",
                         str(state))  # fmt: skip
    assert code == 1 and json.loads(out) == {"seq": 9, "damaged": json.loads(out)["damaged"]}
    assert "DAMAGED: seq 9" in err and "0.70" not in out

    code, out, _ = cli(capsys, "export", "--state", str(state))
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["seq"] for r in lines] == list(range(1, 22))
    assert "damaged" in lines[8] and all("damaged" not in r for i, r in enumerate(lines) if i != 8)

    for form in ("table", "csv", "jsonl"):
        code, out, err = cli(capsys, "query", "--format", form, "--state", str(state))
        assert code == 1, form
        assert "DAMAGED" in out + err and "0.70" not in out, form
    code, out, _ = cli(capsys, "query", "--format", "jsonl", "--state", str(state))
    assert {"seq": 9, "damaged": json.loads(out.splitlines()[8])["damaged"]} in [
        json.loads(line) for line in out.splitlines()
    ]

    # --no-check prints what is there, and says that it did not check.
    code, out, err = cli(capsys, "show", "9", "--no-check", "--state", str(state))
    assert code == 0 and "--no-check" in out
    code, out, err = cli(capsys, "query", "--no-check", "--format", "csv", "--state", str(state))
    assert code == 0 and "not checked against the chain (--no-check)" in err


def test_a_rewritten_hash_breaks_the_next_link(state, capsys):
    """Bytes and stored hash of entry 9 both rewritten: entry 10's link then fails."""
    from gateway.ledger import format as fmt

    ledger = state / "ledger"
    items = list(LedgerReader(ledger).entries(8, 9))
    prev, (_, payload9, old_hash) = items[0][2], items[1]
    forged = bytes(payload9).replace(b"0.07", b"0.70")
    new_hash = fmt.chain_hash(prev, fmt.frame_header(len(forged), 9) + forged)
    path = list_segments(ledger)[0][1]
    data = path.read_bytes().replace(bytes(payload9) + old_hash, forged + new_hash)
    path.write_bytes(data)
    assert cli(capsys, "show", "9", "--state", str(state))[0] == 0  # its own link holds
    code, out, _ = cli(capsys, "export", "--from-seq", "9", "--to-seq", "10", "--state",
                       str(state))  # fmt: skip
    assert code == 1 and json.loads(out.splitlines()[1])["seq"] == 10
    assert "damaged" in json.loads(out.splitlines()[1])


# ---- exit codes: one table in the README, checked here

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_exit_codes() -> dict[str, int]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        m = re.fullmatch(r"\| (.+?) +\| ([012]) +\|.*", line)
        if m:
            table[m.group(1).strip()] = int(m.group(2))
    return table


def test_the_readme_exit_code_table_is_what_the_commands_do(state, tmp_path, capsys):
    table = readme_exit_codes()
    assert set(table.values()) == {0, 1, 2}
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("ingest:\n  max_conections: 3\n", encoding="utf-8")
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    lock = None
    import fcntl
    import os

    def lock_held():
        nonlocal lock
        lock = os.open(state / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cli_main(["reindex", "--state", str(state)])

    def tampered():
        copy = tmp_path / "copy"
        build(copy)
        tamper(copy, 9)
        return cli_main(["verify", "--state", str(copy)])

    def cut_after_a_clean_stop():
        copy = tmp_path / "cut"
        writer = LedgerWriter(copy / "ledger", segment_bytes=1 << 20).open()
        write_entries(writer, [entries.encode_system(NOON_US, "x", {"i": i}) for i in range(5)])
        assert writer.write_clean_mark()
        ((_first, segment),) = list_segments(copy / "ledger")
        with open(segment, "r+b") as f:
            f.truncate(segment.stat().st_size - 60)  # the last entry, acknowledged, cut
        return cli_main(["verify", "--state", str(copy)])

    def refused_event():
        import socket
        import threading

        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer():
            conn, _ = server.accept()
            with conn:
                f = conn.makefile("rb")
                f.readline()
                conn.sendall(b'{"ok":false,"error":"bad_json","detail":"x"}\n')

        t = threading.Thread(target=answer)
        t.start()
        events = tmp_path / "one.ndjson"
        events.write_text("not json\n", encoding="utf-8")
        try:
            return cli_main(["send", "--ack", "--port", str(port), str(events)])
        finally:
            t.join(10)
            server.close()

    def unreachable():
        import socket

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return cli_main(["send", "--port", str(port), str(tmp_path / "bad.yaml")])

    def permission_denied():
        from unittest import mock

        with mock.patch("gateway.audit.check.LedgerReader.entries", side_effect=PermissionError(
                13, "Permission denied", str(state / "ledger"))):  # fmt: skip
            return cli_main(["show", "1", "--state", str(state)])

    cases = {
        "`verify` finds the chain intact": lambda: cli_main(["verify", "--state", str(state)]),
        "`verify`, `show`, `export` or `query` find damage": tampered,
        "`verify` finds entries missing up to the high-water mark": cut_after_a_clean_stop,
        "an event refused by the gateway (`send --ack`)": refused_event,
        "a configuration refused (`run`, `check-config`)": lambda: cli_main(
            ["check-config", str(bad_config)]
        ),
        "the state lock held by another gateway": lock_held,
        "the gateway unreachable (`send`, `status`, `reprint`)": unreachable,
        "permission denied": permission_denied,
        "bad arguments": lambda: cli_main(["query", "--limit", "0", "--state", str(state)]),
        "a missing state directory or file": lambda: cli_main(
            ["verify", "--state", str(tmp_path / "none")]
        ),
    }
    try:
        assert set(cases) == set(table), "the README table and this test list the same cases"
        for case, run in cases.items():
            try:
                code = run()
            except SystemExit as exc:
                code = exc.code
            capsys.readouterr()
            assert code == table[case], case
    finally:
        if lock is not None:
            os.close(lock)


# ---- complete exports


def test_query_says_how_many_matched_and_refuses_limit_0(state, capsys):
    code, out, err = cli(capsys, "query", "--kind", "event", "--limit", "5", "--state", str(state))
    assert code == 0 and "showing 5 of 20; --all for every row" in err
    code, out, err = cli(capsys, "query", "--kind", "event", "--format", "csv", "--state",
                         str(state))  # fmt: skip
    assert "showing 20 of 20" in err and "showing" not in out
    code, _, err = cli(capsys, "query", "--limit", "0", "--format", "csv", "--state", str(state))
    assert code == 2 and "--limit must be 1 or more" in err


def test_csv_and_jsonl_default_to_oldest_first_and_tables_to_newest(state, capsys):
    _, out, _ = cli(capsys, "query", "--kind", "event", "--format", "jsonl", "--state", str(state))
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == sorted(seqs)
    _, out, _ = cli(capsys, "query", "--kind", "event", "--state", str(state))
    table = [int(line.split()[0]) for line in out.splitlines()[2:] if line[:1].isdigit()]
    assert table == sorted(table, reverse=True) and len(table) == 20


class RowSink(io.TextIOBase):
    """Standard output that keeps only each CSV row's seq and check cell, not the text."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.partial = ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\r\n")
        self.partial = lines.pop()
        self.rows += [(line.split(",", 1)[0], line.rsplit(",", 1)[1]) for line in lines]
        return len(text)


def test_an_all_csv_export_of_10000_entries_is_complete_in_seq_order(tmp_path, monkeypatch):
    state = tmp_path / "state"
    build(state, n=10_000, segment_bytes=512 * 1024)
    reindex(state)
    sink, err = RowSink(), io.StringIO()
    monkeypatch.setattr("sys.stdout", sink)
    monkeypatch.setattr("sys.stderr", err)
    tracemalloc.start()
    code = cli_main(["query", "--all", "--kind", "event", "--format", "csv", "--state",
                     str(state)])  # fmt: skip
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == 0, err.getvalue()
    assert sink.rows[0] == ("seq", "check") and sink.partial == ""
    assert [int(seq) for seq, _ in sink.rows[1:]] == list(range(2, 10_002))
    assert {check for _, check in sink.rows[1:]} == {"ok"}
    assert "showing all 10,000" in err.getvalue()
    # Streamed: what is in memory at once is a page of rows (500) and the ledger
    # reader's buffers (about 8 MB in all), not 10,000 rows (48 MB with --limit 10000).
    assert peak < 16 * 1024 * 1024, peak


def test_csv_has_a_column_per_seed_field_and_neutralises_formulas(tmp_path, capsys):
    state = tmp_path / "state"
    writer = LedgerWriter(state / "ledger", segment_bytes=1 << 20).open()
    event = {**amount_event(1), "user_id": "=HYPERLINK(\"http://x\")", "username": "-2",
             "object_id": "@SUM(A1)", "amount": -3}  # fmt: skip
    write_entries(writer, [entries.encode_event(NOON_US, SOURCE, event, [])], sync=False)
    code, out, _ = cli(capsys, "query", "--format", "csv", "--state", str(state))
    row = next(csv.DictReader(io.StringIO(out, newline="")))
    assert code == 0
    assert list(row)[:14] == ["seq", "received_at", "timestamp", "kind", "event_type", "action",
                              "user_id", "username", "object_type", "object_id", "app", "flags",
                              "old_value", "new_value"]  # fmt: skip
    assert row["user_id"] == '\'=HYPERLINK("http://x")' and row["object_id"] == "'@SUM(A1)"
    assert row["username"] == "-2"  # a negative number stays a number
    assert json.loads(row["old_value"]) == {"amount": "0.07"} and row["app"] == "shop"
    assert json.loads(row["event"]) == event  # the event whole, unneutralised inside JSON
    assert row["timestamp"] == "2026-11-23T10:00:00Z"
    assert present.neutralise("-1.5e3") == "-1.5e3" and present.neutralise("-x") == "'-x"


# ---- time zones


def test_event_time_and_receive_time_filters_are_separate(state, capsys):
    # Stamped 2026-11-23, received 2026-12-01.
    args = ("query", "--kind", "event", "--format", "jsonl", "--state", str(state))
    _, out, _ = cli(capsys, *args, "--since", "2026-11-01", "--until", "2026-11-30")
    assert out == ""
    _, out, _ = cli(capsys, *args, "--event-since", "2026-11-01", "--event-until", "2026-11-30")
    assert len(out.splitlines()) == 20
    _, out, _ = cli(capsys, *args, "--since", "2026-12-01", "--until", "2026-12-01")
    assert len(out.splitlines()) == 20


def test_query_days_are_the_gateways_whatever_the_machines_zone(tmp_path, capsys, monkeypatch):
    import time as _time

    state = tmp_path / "state"
    build(state, tz="Pacific/Kiritimati")  # UTC+14: noon UTC is 02:00 on 2 December there
    args = ("query", "--kind", "event", "--format", "jsonl", "--state", str(state))
    for machine in ("UTC", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", machine)
        _time.tzset()
        _, out, _ = cli(capsys, *args, "--since", "2026-12-02", "--until", "2026-12-02")
        assert len(out.splitlines()) == 20, machine
        _, out, _ = cli(capsys, *args, "--since", "2026-12-01", "--until", "2026-12-01")
        assert out == "", machine
    monkeypatch.delenv("TZ")
    _time.tzset()
    _, out, _ = cli(capsys, *args, "--tz", "UTC", "--since", "2026-12-01", "--until", "2026-12-01")
    assert len(out.splitlines()) == 20
    _, out, _ = cli(capsys, "query", "--tz", "UTC", "--state", str(state))
    assert out.startswith("times in UTC (--tz; the gateway's zone is Pacific/Kiritimati)")
    _, out, _ = cli(capsys, "query", "--state", str(state))
    assert out.startswith("times in Pacific/Kiritimati (the gateway's zone, from the ledger)")
    assert " 2026-12-02 02:00 " in out


def test_rows_spread_over_segments_are_each_checked(tmp_path):
    from gateway.audit.check import HASH_MISMATCH, Cursor
    from gateway.audit.query import Filters, check_rows, run

    state = tmp_path / "state"
    build(state, n=2000, segment_bytes=64 * 1024)
    assert len(list_segments(state / "ledger")) >= 10
    rows = run(state, Filters(kind="event", limit=5000, order="asc")).rows
    picked = [r for r in rows if r["seq"] in (2, 700, 1500, 2001)]
    tamper(state, 1500)
    cursor = Cursor(state / "ledger")
    assert check_rows(cursor, picked) == {1500: HASH_MISMATCH}
    assert check_rows(cursor, picked[:1]) == {}  # behind the cursor: it starts again


def test_a_frame_the_reader_cannot_parse_is_damaged_too(state, capsys):
    """A broken frame header (CRC) stops the reader: every command says DAMAGED, exit 1."""
    for _s, payload, _h in LedgerReader(state / "ledger").entries(9, 9):
        original = bytes(payload)
    path = list_segments(state / "ledger")[0][1]
    data = bytearray(path.read_bytes())
    at = data.find(original) - 1  # the last byte of the frame header's CRC
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = cli(capsys, "export", "--state", str(state))
    assert code == 1 and [json.loads(line)["seq"] for line in out.splitlines()] == list(
        range(1, 10)
    )
    assert "damaged" in json.loads(out.splitlines()[-1]) and "DAMAGED: seq 9" in err
    code, out, _ = cli(capsys, "show", "12", "--state", str(state))
    assert code == 1 and out.startswith("DAMAGED: seq 9")
    code, _, err = cli(capsys, "query", "--state", str(state))
    assert code == 1 and "DAMAGED" in err


def test_verify_of_an_unusable_ledger_directory_is_exit_2_with_a_message(tmp_path):
    """A directory named like a segment is no answer (exit 2), not a crash."""
    from gatewayproc import run_gateway_command

    (tmp_path / "state" / "ledger" / "00000000000000000001.seg").mkdir(parents=True)
    result = run_gateway_command("verify", "--state", str(tmp_path / "state"))
    assert result.returncode == 2
    assert b"cannot read the ledger" in result.stderr and b"Traceback" not in result.stderr

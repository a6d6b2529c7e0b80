"""Paper that fits: receipts, reports and status pages at 32, 42, 48 and 80 columns.

Golden files (tests/golden/) pin the layout at each width; a property test
feeds long values, Unicode and control bytes to every renderer at every width
and checks that no line is wider than the paper. Regenerate the golden files
with GATEWAY_GOLDEN=write after a deliberate change, and read the diff.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.render.document import Line, layout
from gateway.render.languages import PAGE_LINES, render
from gateway.render.templates import (
    daily_report,
    other_row,
    paper_checkpoint,
    receipt,
    report_row,
    status_page,
)

GOLDEN = Path(__file__).parent / "golden"
WIDTHS = (32, 42, 48, 80)
HASH = "3f" * 32
RECEIVED = 1_796_126_400_000_000  # 2026-12-01T12:00:00Z
ZONE = "Europe/Berlin"
# Fixed "now" for generated-at and printed-at lines, so the files do not drift.
NOW = RECEIVED + 14 * 3600 * 1_000_000

AUDIT = {
    "kind": "event",
    "received_at": RECEIVED,
    "source": {"app": "billing", "addr": "198.51.100.4"},
    "event": {
        "event_type": "audit",
        "timestamp": "2026-12-01T12:59:58+01:00",
        "action": "update",
        "user": "anna.k@example.com",
        "user_id": "7d9f1c2e-5b8a-4f60-9e31-0c6a2b4d8e17",
        "object_type": "invoice",
        "object_id": "INV-2026-0117",
        "old_value": {"total": "0.07", "lines": [{"sku": "A-1", "qty": 1}]},
        "new_value": {"total": "0.70", "lines": [{"sku": "A-1", "qty": 10}], "note": "typo"},
    },
    "flags": [],
}
TICKET = {
    "kind": "event",
    "received_at": RECEIVED + 60_000_000,
    "source": {"app": "helpdesk"},
    "event": {"event_type": "ticket_closed", "ticket_id": 5012, "outcome": "solved"},
    "flags": ["missing_timestamp"],
}
REFUSED = {"kind": "rejected", "received_at": RECEIVED + 120_000_000, "reason": "bad_json",
           "length": 12}  # fmt: skip
OTHERS = [
    other_row(1, {"kind": "system", "received_at": RECEIVED - 3_600_000_000, "name": "started",
                  "detail": {"version": "1.4.0", "timezone": ZONE}}),
    other_row(3, {"kind": "print", "received_at": RECEIVED + 1_000_000, "type": "receipt",
                  "outcome": "printed", "printer": "counter"}),
    other_row(5, {"kind": "printer", "received_at": RECEIVED + 90_000_000, "printer": "counter",
                  "state": "error", "error": "connection refused"}),
]  # fmt: skip
# A signed checkpoint as a `signed_checkpoint` entry records it (seq 1 signed).
SIGNED = {
    "entry_seq": 1,
    "seq": 1,
    "hash": "5a" * 32,
    "origin": "print-gateway/branch-7/1123050291ded24c",
    "key_name": "print-gateway/branch-7",
    "signature": base64.b64encode(bytes.fromhex("0a1b2c3d") + bytes(range(64))).decode(),
}
STATUS = {
    "version": "1.4.0",
    "health": "ok",
    "uptime_s": 86_400,
    "listen": ["0.0.0.0:50001"],
    "ledger": {"entries": 7, "head_seq": 7, "head_hash": HASH},
    "connections": 2,
    "printers": [{"name": "counter", "state": "ok", "queued": 0}],
}


def documents():
    rows = [report_row(2, AUDIT), report_row(4, TICKET), report_row(6, REFUSED)]
    return {
        "receipt": receipt(
            "branch-7",
            2,
            HASH,
            AUDIT,
            "COPY 1",
            zone_name=ZONE,
            checkpoint=paper_checkpoint(SIGNED),
        ),
        "report": daily_report(
            "branch-7",
            "2026-12-01",
            12,
            rows,
            2,
            6,
            HASH,
            zone_name=ZONE,
            generated_us=NOW,
            others=OTHERS,
            checkpoint=paper_checkpoint(SIGNED),
        ),
        "status": status_page("branch-7", STATUS, zone_name=ZONE, now_us=NOW),
    }


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["receipt", "report", "status"])
def test_golden_layout(name, width):
    text = render(documents()[name], "text", width).decode()
    path = GOLDEN / f"{name}-{width}.txt"
    if os.environ.get("GATEWAY_GOLDEN") == "write":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert all(len(line) <= width for line in text.replace("\x0c", "").splitlines())


def test_the_report_has_what_an_auditor_signs():
    text = render(documents()["report"], "text", 42).decode()
    lines = text.replace("\x0c", "").splitlines()
    for expected in (
        "branch-7 daily compliance report",  # heading, wrapped at 42
        "day in Europe/Berlin",
        "report no. 12",
        "generated: 2026-12-02 03:00:00 +0100",
        "2  13:00:00  audit",  # seq, receive time in the zone, event type
        "  app billing user_id=7d9f1c2e-5b8a-4f60-\\",  # a UUID split, marked
        "  event time 2026-12-01T12:59:58+01:00",
        '    ~ total: "0.07" -> "0.70"',
        '    + note: "typo"',
        "system events of the day",
        "1  12:00:00  started (version 1.4.0,",
        "5  13:01:30  printer counter: error",
        "seqs of the day that are not events:",
        "  1: system events (listed above)",
        "signature: ____________________",
        "date: ______________",
        "page 1 of 1",
    ):
        assert expected in lines, (expected, lines)


def test_the_status_page_has_date_time_and_zone():
    lines = render(documents()["status"], "text", 32).decode().splitlines()
    assert "printed: 2026-12-02 03:00:00" in lines and "  +0100 Europe/Berlin" in lines


def display_columns(line: str) -> int:
    """Columns on a fixed-pitch device: wide East Asian characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


NASTY = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from("\x1b\x00\x07\x9b\t\n\r \u200b\u0301漢字😀Ωé"), max_size=200),
    st.just("x" * 500),
    st.just("7d9f1c2e-5b8a-4f60-9e31-0c6a2b4d8e17" * 3),
)


@settings(max_examples=60, deadline=None)
@given(value=NASTY, other=NASTY, seq=st.integers(1, 10**12))
def test_no_rendered_line_is_wider_than_the_paper(value, other, seq):
    event = {
        "event_type": value, "timestamp": other, "user": value, "object_id": other,
        "status": value, "old_value": {value: other}, "new_value": {value: value + "!"},
    }  # fmt: skip
    entry = {"kind": "event", "received_at": RECEIVED, "source": {"app": other},
             "event": event, "flags": [value]}  # fmt: skip
    docs = [
        receipt(value, seq, HASH, entry, other, zone_name=ZONE),
        daily_report(
            value,
            "2026-12-01",
            seq,
            [report_row(seq, entry)],
            seq,
            seq,
            HASH,
            other,
            zone_name=ZONE,
            generated_us=NOW,
            others=[other_row(seq, {"kind": "system", "name": value})],
        ),
        status_page(value, {**STATUS, "health": other, "listen": [value]}, zone_name=ZONE),
    ]
    for doc in docs:
        for width in WIDTHS:
            text = render(doc, "text", width).decode("utf-8")
            for line in text.replace("\x0c", "").split("\n"):
                assert display_columns(line) <= width, (width, line)
                assert line.isprintable(), line  # no control byte from the event survives
            # What the ESC/POS and PCL renderers print: each line, encoded, one
            # byte per character of their code pages.
            for charset, page in (("cp437", None), ("latin-1", PAGE_LINES)):
                for item in layout(doc, width, page):
                    if isinstance(item, Line):
                        assert len(item.text.encode(charset, "replace")) <= width


def test_the_same_report_from_a_laptop_in_another_zone(tmp_path, monkeypatch):
    """`report --out` on a copy of the box's ledger, under two other TZs, equals the box's."""
    import time

    from test_audit_cli import build

    from gateway.cli import main

    state = tmp_path / "state"
    build(state, tz="Pacific/Kiritimati")  # the events are on 2 December there
    outputs = []
    for machine in ("Pacific/Kiritimati", "UTC", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", machine)
        time.tzset()
        out = tmp_path / f"{machine.replace('/', '_')}.txt"
        assert main(["report", "--date", "2026-12-02", "--out", str(out), "--width", "42",
                     "--state", str(state)]) == 0  # fmt: skip
        text = out.read_text()
        outputs.append([line for line in text.splitlines() if not line.startswith(
            ("generated", "  +"))])  # fmt: skip
    monkeypatch.delenv("TZ")
    time.tzset()
    assert outputs[0] == outputs[1] == outputs[2]
    assert any(line.startswith("entries 20:") for line in outputs[0])
    assert "day in Pacific/Kiritimati" in outputs[0]
    assert dt.date(2026, 12, 2)  # the day of the box, not of the laptop (UTC: 1 December)


def test_a_numbered_reports_rows_are_its_range_and_its_system_events_the_days(tmp_path):
    from test_audit_cli import build

    from gateway.printing.reports import collect_day

    state = tmp_path / "state"
    build(state, n=20)  # seq 1: started (Europe/Berlin), 2-21: events
    rows, first, last, _hash = collect_day(state / "ledger", dt.date(2026, 12, 1), 5, 10)
    assert [r.seq for r in rows] == list(range(5, 11)) and (first, last) == (5, 10)
    assert [(o.seq, o.text) for o in rows.others] == [
        (1, "started (version t, timezone Europe/Berlin)")
    ]
    assert rows.zone_name == "Europe/Berlin"
    doc = daily_report("gw", "2026-12-01", 1, rows, first, last, _hash, generated_us=NOW)
    text = render(doc, "text", 48).decode()
    assert "day in Europe/Berlin" in text and "1: system events (listed above)" in text
    empty, *_ = collect_day(state / "ledger", dt.date(2026, 12, 2))
    assert list(empty) == [] and empty.others == []


@pytest.mark.parametrize("width", WIDTHS)
def test_tables_keep_columns_where_they_fit_and_stack_where_not(width):
    from gateway.render.document import Document, Table

    table = Table(("seq", "user", "what"), (("1", "anna", "update invoice " * 6), ("22", "b", "x")))
    lines = render(Document("t", (table,)), "text", width).decode().rstrip("\x0c").splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[0] == "seq  user  what"  # columns: the header, padded
    assert lines[1].startswith("1    anna  update invoice")
    assert lines[2].startswith(" " * 11) and lines[2][11] != " "  # wraps under its column
    narrow = Table(("seq", "a long column header", "x"), (("1", "v" * 40, "y"),))
    lines = render(Document("t", (narrow,)), "text", width).decode().rstrip("\x0c").splitlines()
    assert all(len(line) <= width for line in lines)

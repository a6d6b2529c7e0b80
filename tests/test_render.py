"""Rendering: golden bytes per language, receipts, reports, and no printer-command injection."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from gateway.ledger import entries
from gateway.render.document import Anchor, Document, Field, Heading, Rule, Text, clean
from gateway.render.languages import render
from gateway.render.templates import daily_report, receipt, report_row

HASH = "ab" * 32

SMALL = Document(
    title='job "1"',
    blocks=(
        Heading("Shop"),
        Text("hello", bold=True),
        Field("user", "anna"),
        Rule(),
        Anchor(7, HASH),
    ),
)


RULE = b"-" * 32


def test_golden_text():
    assert render(SMALL, "text", 32) == (
        b"Shop\nhello\nuser: anna\n" + RULE + b"\nseq 7  hash abababababababab\n\x0c"
    )


def test_the_anchor_splits_where_it_does_not_fit():
    assert render(SMALL, "text", 16).splitlines()[-3:-1] == [b"seq 7  hash", b"abababababababab"]
    assert render(SMALL, "text", 8).splitlines()[-6:-1] == [
        b"seq 7",
        b"hash",
        b"abababa\\",
        b"bababab\\",
        b"ab",
    ]


def test_golden_escpos():
    qr_data = b"7:" + HASH.encode()
    store = len(qr_data) + 3
    assert render(SMALL, "escpos", 32) == b"".join(
        [
            b"\x1b@",  # initialise
            b"\x1b!\x18Shop\n\x1b!\x00",  # heading: bold + double height
            b"\x1bE\x01hello\n\x1bE\x00",  # bold
            b"user: anna\n",
            RULE + b"\n",
            b"\x1bE\x01seq 7  hash abababababababab\n\x1bE\x00",
            b"\x1ba\x01",  # centre
            b"\x1d(k\x04\x001A2\x00",  # QR model 2
            b"\x1d(k\x03\x001C\x04",  # module size 4
            b"\x1d(k\x03\x001E1",  # error correction M
            b"\x1d(k" + bytes([store % 256, store // 256]) + b"1P0" + qr_data,
            b"\x1d(k\x03\x001Q0",  # print it
            b"\n\x1ba\x00",
            b"\x1dVB\x03",  # feed and partial cut
        ]
    )


def test_golden_pcl():
    uel = b"\x1b%-12345X"
    assert render(SMALL, "pcl", 32) == b"".join(
        [
            uel,
            b'@PJL JOB NAME="job _1_"\r\n',
            b"@PJL ENTER LANGUAGE=PCL\r\n",
            b"\x1bE\x1b(0N",
            b"\x1b(s3BShop\x1b(s0B\r\n",
            b"\x1b(s3Bhello\x1b(s0B\r\n",
            b"user: anna\r\n",
            RULE + b"\r\n",
            b"\x1b(s3Bseq 7  hash abababababababab\x1b(s0B\r\n",
            b"\x0c",
            b"\x1bE",
            uel,
            b'@PJL EOJ NAME="job _1_"\r\n',
            uel,
        ]
    )


def test_unknown_language_is_refused():
    with pytest.raises(ValueError):
        render(SMALL, "postscript", 40)


HOSTILE = [
    "\x1bp\x00\x19\xfa",  # ESC/POS: open the cash drawer
    "\x1b%-12345X@PJL SET COPIES=999\r\n",  # PJL: leave the job, change settings
    "\x1bE\x1b&l0O",  # PCL reset and orientation
    "\x1dV\x00",  # ESC/POS cut
    "\x10\x14\x01\x00\x05",  # DLE DC4: real-time drawer pulse
    "\x9b31m",  # C1 CSI
    "line\nbreak\ttab\x0cform feed\x00nul\x7fdel",
]


def _hostile_entry() -> dict:
    event = {
        "event_type": HOSTILE[1],
        "timestamp": HOSTILE[0],
        "user": HOSTILE[2],
        "object_id": HOSTILE[3],
        "status": HOSTILE[4],
        "action": HOSTILE[5],
        "reason": HOSTILE[6],
        "old_value": {"x": HOSTILE[0]},
        "new_value": HOSTILE[1],
    }
    return {
        "kind": "event",
        "received_at": 1_700_000_000_000_000,
        "source": {"addr": "127.0.0.1", "port": 1, "app": HOSTILE[0], "conn": 1},
        "event": event,
        "flags": [],
    }


def _allowed_controls(language: str) -> bytes:
    return b"\n\x0c" if language == "text" else b""


@pytest.mark.parametrize("language", ["text", "escpos", "pcl"])
def test_event_fields_cannot_inject_printer_commands(language):
    entry = _hostile_entry()
    docs = [
        receipt("gw", 9, HASH, entry),
        daily_report("gw", "2026-11-30", 1, [report_row(9, entry)], 9, 9, HASH),
    ]
    for doc in docs:
        plain = render(doc, "text", 42)
        # In text, the only control bytes are line feeds and form feeds (and the
        # report's tab separators): nothing from the event survives as a control.
        assert re.fullmatch(rb"[^\x00-\x08\x0b\x0d-\x1f\x7f]*", plain), plain
        out = render(doc, language, 42)
        assert b"\x1bp" not in out and b"\x10\x14" not in out
        if language == "pcl":
            assert out.count(b"\x1b%-12345X") == 3  # only the gateway's own job wrapper
            assert b"\x1b&l0O" not in out
        if language == "escpos":
            assert out.count(b"\x1dV") == 1  # only the gateway's own cut


def test_pjl_set_inside_event_data_is_plain_text_not_a_command():
    out = render(receipt("gw", 9, HASH, _hostile_entry()), "pcl", 80)
    # the text survives (visible, for the auditor), but not as a PJL line: a PJL
    # command must follow a UEL, and every ESC from the event became "?"
    for line in out.split(b"\r\n"):
        if b"@PJL SET" in line:
            plain = line.replace(b"\x1b(s3B", b"").replace(b"\x1b(s0B", b"")  # our bold
            assert not plain.startswith(b"@PJL") and b"\x1b" not in plain, line


def test_clean_replaces_controls_and_keeps_text():
    assert clean("a\x1bb\tc\nd\u0085e\u00a0f") == "a?b c d?e\u00a0f"
    assert clean(42) == "42"


def test_receipt_carries_the_anchor_and_key_fields():
    entry = {
        "kind": "event",
        "received_at": 1_764_496_800_000_000,
        "source": {"app": "shop"},
        "event": {
            "event_type": "audit",
            "timestamp": "2026-11-30T10:00:00Z",
            "user": "anna",
            "action": "update",
            "object_type": "invoice",
            "object_id": 17,
            "old_value": {"total": 10},
            "new_value": {"total": 12},
        },
        "flags": ["missing_timestamp"],
    }
    doc = receipt("branch-7", 12, HASH, entry, "COPY 2", zone_name="Europe/Berlin")
    text = render(doc, "text", 42).decode()
    lines = text.splitlines()
    assert lines[0] == "branch-7"
    assert "*** COPY 2 ***" in lines
    assert entries.format_time_us(entry["received_at"]) == "2025-11-30T10:00:00.000000Z"
    for expected in (
        "audit",
        "event time: 2026-11-30T10:00:00Z",
        "user: anna",
        "action: update",
        "object_id: 17",
        "changes (old -> new):",
        "  ~ total: 10 -> 12",  # the diff `gateway show` prints, not raw JSON
        "flags: missing_timestamp",
        "app: shop",
        "received: 2025-11-30 11:00:00 +0100",  # in the gateway's zone, named
        "  Europe/Berlin",
        f"seq 12  hash {HASH[:16]}",
        f"chain hash: {HASH[:29]}\\",  # the whole hash, split with a visible mark
        f"  {HASH[29:]}",
    ):
        assert expected in lines, (expected, lines)
    assert all(len(line.rstrip("\x0c")) <= 42 for line in lines)


def test_report_rows_wrap_at_fields_and_hold_no_tabs():
    entry = {
        "kind": "event",
        "received_at": 1_764_496_800_000_000,
        "event": {
            "event_type": "subscription_cancelled\twith tab",
            "subscription_id": "x" * 200,
            "status": "line\nbreak",
        },
        "flags": ["bad_timestamp"],
    }
    rejected = {
        "kind": "rejected",
        "received_at": 1_764_496_800_000_001,
        "reason": "bad_json",
        "length": 12,
    }
    rows = [report_row(5, entry), report_row(6, rejected)]
    doc = daily_report("gw", "2026-11-30", 3, rows, 5, 6, HASH, zone_name="UTC",
                       generated_us=1_764_550_000_000_000)  # fmt: skip
    text = render(doc, "text", 40).decode()
    lines = text.replace("\x0c", "").splitlines()
    assert "\t" not in text and all(len(line) <= 40 for line in lines)
    assert "5  10:00:00  subscription_cancelled with" in lines  # seq, time, what
    assert " " * 13 + "tab" in lines  # wrapped under the column it began in
    assert "  status line break" in lines and "  flags bad_timestamp" in lines
    ids = [line for line in lines if "subscription_id=" in line or line.startswith("    xxx")]
    assert ids[0].startswith("  subscription_id=") and ids[0].endswith("\\")  # split, marked
    assert "6  10:00:00  (refused line)" in lines and "  status bad_json" in lines
    assert "entries 2: seq 5 to 6 (events and" in lines
    assert f"seq 6  hash {HASH[:16]}" in lines
    assert "generated: 2025-12-01 00:46:40 +0000 UTC" in lines and "day in UTC" in lines
    assert lines[-2:] == ["gw 2026-11-30 report no. 3", "page 1 of 1"]


def test_report_paginates_with_page_numbers():
    rows = [(str(i), "t", "e", "", "", "") for i in range(1, 151)]
    text = render(daily_report("gw", "2026-11-30", 1, rows, 1, 150, HASH), "pcl", 80)
    pages = text.count(b"\x0c")
    assert pages == 3  # 150 rows and the header block on 58-line pages
    for n in range(1, pages + 1):
        assert f"page {n} of {pages}".encode() in text


def test_unnumbered_preview_says_so():
    text = render(daily_report("gw", "2026-11-30", None, [], None, None, None), "text", 80)
    assert b"PREVIEW - not a numbered report" in text
    assert b"no entries this day" in text


def test_day_bounds_cover_one_local_day():
    from gateway.printing.reports import day_bounds_us, due_dates

    start, end = day_bounds_us(dt.date(2026, 11, 30))
    assert (end - start) // 3_600_000_000 in (23, 24, 25)  # DST days are 23 or 25 hours
    now = dt.datetime(2026, 11, 30, 3, 0).astimezone().timestamp()
    first = dt.date(2026, 11, 25)
    assert due_dates(None, first, "02:00", now) == [first + dt.timedelta(days=i) for i in range(5)]
    assert due_dates(dt.date(2026, 11, 28), first, "02:00", now) == [dt.date(2026, 11, 29)]
    assert due_dates(dt.date(2026, 11, 28), first, "04:00", now) == []  # not yet 04:00
    assert due_dates(dt.date(2026, 11, 29), first, "02:00", now) == []

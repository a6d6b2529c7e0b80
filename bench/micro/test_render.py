"""Printing: building a document from ledger data and rendering it in each printer language.

What the spool's worker does per job (`gateway.printing.spool.prepare`): a receipt is
`templates.receipt` over a decoded entry, a daily report `templates.daily_report` over
`templates.report_row`s, then `languages.render` lays the document out and encodes it.
Widths: 42 characters for text and ESC/POS (an 80 mm roll, the configuration's default),
80 for PCL (a page printer). The report holds 50 rows (each row takes a few lines).
"""

from __future__ import annotations

import datetime as dt

import pytest

from bench.micro.corpus import RECEIVED_US
from gateway import zone
from gateway.ledger import entries
from gateway.render import templates
from gateway.render.languages import render

WIDTHS = {"text": 42, "escpos": 42, "pcl": 80}
NAME = "branch-042"
HASH_HEX = "9f2c" * 16
REPORT_ROWS = 50


@pytest.mark.parametrize("language", list(WIDTHS))
@pytest.mark.parametrize("size", ["small", "audit"])
def test_receipt(benchmark, corpus, size, language):
    """One receipt: the template over a decoded event entry, rendered."""
    entry = entries.decode(corpus.payloads[size][7])
    width = WIDTHS[language]

    def run() -> bytes:
        return render(templates.receipt(NAME, 1234567, HASH_HEX, entry), language, width)

    out = benchmark(run)
    assert b"seq 1234567" in out
    assert entry["event"]["event_type"].encode() in out


@pytest.mark.parametrize("language", list(WIDTHS))
def test_daily_report_page(benchmark, items_per_call, corpus, language):
    """A one-page daily report: 50 report rows, the report document, rendered."""
    decoded = [entries.decode(p) for p in corpus.payloads["small"][:REPORT_ROWS]]
    first = 1000

    def run() -> bytes:
        rows = [templates.report_row(first + i, e) for i, e in enumerate(decoded)]
        last = first + len(rows) - 1
        doc = templates.daily_report(NAME, "2026-11-23", 17, rows, first, last, HASH_HEX)
        return render(doc, language, WIDTHS[language])

    out = benchmark(run)
    assert f"seq {first} to {first + REPORT_ROWS - 1}".encode() in out
    # Receive times print in the gateway's zone (this process's), to the second.
    local = dt.datetime.fromtimestamp(RECEIVED_US / 1_000_000, zone.get(zone.process_name()))
    assert f"{first}  {local:%H:%M:%S}".encode() in out
    assert b"page 1 of " in out  # (a receipt roll prints the report as one page)
    items_per_call(REPORT_ROWS)

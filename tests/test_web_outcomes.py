"""An entry's print outcomes and covering reports on its detail page, and the
accounts' last logins: found through the query index (gateway/web/related.py)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

from gateway.audit.query import Filters, QueryView
from gateway.web import pages, related
from gateway.web.related import covering_reports, covers
from tests.gatewayproc import run_gateway_command
from tests.webtools import send_events, web_gateway

WAIT_S = 30.0


def _events(state_dir) -> dict[str, int]:
    with QueryView(state_dir) as view:
        rows = view.page(Filters(kind="event", limit=100, order="asc"))
    return {
        r["record"]["event"]["event_type"] + str(r["record"]["event"]["i"]): r["seq"] for r in rows
    }


def print_outcomes(state_dir, seq):
    return related.find_outcomes(state_dir, seq).rows


def test_a_receipts_outcome_is_found_and_other_entries_have_none(tmp_path):
    gateway, _base = web_gateway(tmp_path)
    try:
        lines = [
            json.dumps({"event_type": event_type, "i": i})
            for i, event_type in enumerate(["receipt.print", "other", "receipt.print"] * 4)
        ]
        send_events(gateway, lines)
        seqs = _events(gateway.state_dir)
        printed = [seq for name, seq in seqs.items() if name.startswith("receipt.print")]
        others = [seq for name, seq in seqs.items() if name.startswith("other")]
        assert len(printed) == 8 and len(others) == 4
        deadline = time.monotonic() + WAIT_S
        while not all(print_outcomes(gateway.state_dir, seq) for seq in printed):
            assert time.monotonic() < deadline, "the receipts' print entries did not come"
            time.sleep(0.1)
        for seq in printed:
            (outcome,) = print_outcomes(gateway.state_dir, seq)
            assert outcome["kind"] == "print" and outcome["seq"] > seq
            assert (outcome["type"], outcome["printer"], outcome["outcome"]) == (
                "receipt",
                "paper",
                "printed",
            )
            assert outcome["seqs"] == [seq] and outcome["job"] == f"{seq}/paper"
        for seq in others:
            assert print_outcomes(gateway.state_dir, seq) == []
    finally:
        gateway.stop()


def test_which_print_entries_cover_a_seq():
    assert covers({"job": "12/paper", "type": "status_page", "seqs": []}, 12)
    assert covers({"job": "40/paper", "type": "reprint", "seqs": [12]}, 12)
    assert not covers({"job": "40/paper", "type": "reprint", "seqs": [120]}, 12)
    assert not covers({"job": "121/paper", "type": "receipt", "seqs": [121]}, 12)
    assert covers({"job": "90/office", "type": "report", "seqs": [10, 20]}, 12)
    assert not covers({"job": "90/office", "type": "report", "seqs": [13, 20]}, 12)
    assert not covers({"job": "x", "type": "receipt", "seqs": ["12"]}, 12)


def test_the_outcomes_table_shows_time_printer_and_outcome_as_text():
    record = {"seq": 5, "kind": "event", "hash": "ab", "event": {"event_type": "t"}}
    outcome = {
        "seq": 9,
        "kind": "print",
        "received_at": "2026-12-02T10:00:00.000000Z",
        "job": "5/<b>p</b>",
        "type": "receipt",
        "printer": "<b>p</b>",
        "seqs": [5],
        "outcome": "failed",
        "attempts": 3,
        "uncertain": True,
        "detail": "<script>x</script>",
    }
    tz = dt.timezone(dt.timedelta(hours=1))
    page = pages.entry_detail(record, "ok", tz, "UTC+01:00", True, "u", "operator", "t", [outcome])
    table = page[page.index('id="outcomes"') :]
    assert "2026-12-02 11:00:00" in table and "&lt;b&gt;p&lt;/b&gt;" in table
    assert "failed (delivery uncertain)" in table and '<a href="/entry/9">9</a>' in table
    assert "<script>" not in page and "&lt;script&gt;" in table
    empty = pages.entry_detail(record, "ok", tz, "UTC", True, "u", "operator", "t", [])
    assert "No print entry names this entry" in empty


def test_without_an_index_a_detail_reads_a_bounded_tail_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(related, "MAX_TAIL", 20)
    gateway, _base = web_gateway(tmp_path, index={"enabled": False})
    try:
        send_events(
            gateway, [json.dumps({"event_type": "receipt.print", "i": i}) for i in range(30)]
        )
        found = related.find_outcomes(gateway.state_dir, 3)
        assert found.cut and found.covered_to == 20  # the ledger's first 20 entries only
        with QueryView(gateway.state_dir, 20) as view:
            assert view.tail_cut and view.from_ledger == 20
        with QueryView(gateway.state_dir) as view:
            assert not view.tail_cut and view.from_ledger > 30
    finally:
        gateway.stop()
    record = {"seq": 3, "kind": "event", "hash": "ab", "event": {"event_type": "t"}}
    page = pages.entry_detail(record, "ok", dt.UTC, "UTC", False, "u", "auditor", "t", [], 20)
    assert "Print entries after seq 20 were not looked at" in page


def test_the_daily_reports_whose_range_holds_an_entry(tmp_path):
    gateway, _base = web_gateway(tmp_path)
    try:
        send_events(gateway, [json.dumps({"event_type": "other", "i": i}) for i in range(6)])
        seqs = sorted(_events(gateway.state_dir).values())
        assert covering_reports(gateway.state_dir, seqs[2]).rows == []  # none made yet
        today = gateway.export()[-1]["received_at"][:10]
        config = ["--config", str(gateway.config_path)]
        for _ in range(2):  # the day's report and a second copy (a new number)
            done = run_gateway_command("report", "--date", today, "--printer", "paper", *config)
            assert done.returncode == 0, done
        send_events(gateway, [json.dumps({"event_type": "other", "i": 9})])
        later = max(_events(gateway.state_dir).values())
        deadline = time.monotonic() + WAIT_S
        while len(covering_reports(gateway.state_dir, seqs[2]).rows) < 2:
            assert time.monotonic() < deadline, "the report entries did not come"
            time.sleep(0.1)
        for seq in (seqs[0], seqs[2], seqs[-1]):
            found = covering_reports(gateway.state_dir, seq)
            assert not found.cut and [r["number"] for r in found.rows] == [1, 2]
            assert all(r["first_seq"] <= seq <= r["last_seq"] for r in found.rows)
        assert covering_reports(gateway.state_dir, later).rows == []  # after the reports' end
    finally:
        gateway.stop()


def test_the_reports_section_links_each_report_and_its_anchor():
    record = {"seq": 5, "kind": "event", "hash": "ab", "event": {"event_type": "t"}}
    report = {
        "seq": 40,
        "kind": "report",
        "number": 3,
        "date": "2026-12-01",
        "first_seq": 1,
        "last_seq": 30,
        "last_hash": "cd" * 32,
        "printer": "<b>office</b>",
    }
    args = (record, "ok", dt.UTC, "UTC", False, "u", "auditor", "t", [], None)
    page = pages.entry_detail(*args, [report])
    section = page[page.index('id="covering-reports"') :]
    assert '<a href="/entry/40">3</a>' in section and "1-30" in section
    assert "30:" + "cd" * 8 in section and "&lt;b&gt;office&lt;/b&gt;" in section
    assert "No daily report covers this entry yet" in pages.entry_detail(*args, [])
    assert "Report entries after seq 12 were not looked at" in pages.entry_detail(*args, [], 12)
    assert "Daily reports" not in pages.entry_detail(*args)  # not looked up: no section


def test_last_login_cells_say_never_older_or_when_and_from_where():
    from types import SimpleNamespace

    accounts = [SimpleNamespace(name=n, role="auditor", created="") for n in ("a", "b", "c")]
    login = {"seq": 77, "received_at": "2026-12-02T10:00:00.000000Z", "detail": {"source": "::1"}}
    tz = dt.timezone(dt.timedelta(hours=1))
    page = pages.accounts_page(accounts, "", "", "u", "admin", "t", {"a": login, "b": None}, tz)
    cells = dict(re.findall(r'data-account="(\w)".*?<td class="login">(.*?)</td>', page))
    assert cells == {
        "a": '<a href="/entry/77">2026-12-02 11:00:00</a> from ::1',
        "b": f"before its last {related.MAX_LOGIN_ROWS} console actions",
        "c": "never",
    }
    assert '<td class="login"></td>' in pages.accounts_page(accounts, "", "", "u", "admin", "t")

"""An unsynchronised clock: entries are flagged, the daily report waits, then resumes."""

from __future__ import annotations

import datetime as dt
import socket

from inproc import ledger, pump

from gateway.clock import TIME_ERROR, Clock, _adjtimex, clock_synced
from gateway.config import (
    Config,
    DailyReportConfig,
    IngestConfig,
    PrinterConfig,
    ReportsConfig,
)
from gateway.service import Gateway


def test_the_kernel_state_is_readable():
    state = _adjtimex()  # the real syscall: 0..5
    assert 0 <= state <= 5
    assert clock_synced() == (state != TIME_ERROR)


def test_unsynced_clock_flags_entries_and_holds_the_daily_report(tmp_path):
    synced = {"now": False}
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        printers={"p": PrinterConfig(uri=f"file:{tmp_path / 'printed'}")},
        reports=ReportsConfig(daily=DailyReportConfig(printer="p", at="00:00")),
    )
    gw = Gateway(config, clock=Clock(probe=lambda: synced["now"]))
    # a ledger that began three days ago would owe three reports
    gw_first_day = dt.date.today() - dt.timedelta(days=3)
    address = gw.start()[0]
    gw.spool._first_day = gw_first_day
    gw.spool._schedule_reports()
    with socket.create_connection(address) as c:
        c.sendall(b'{"event_type":"a","timestamp":"2026-11-30T10:00:00Z"}\n{"oops')
    pump(gw, lambda: gw.ingest.stats.rejected == 1 and gw.ledger.durable.seq >= 4)
    first = ledger(gw)
    assert first[0]["kind"] == "system" and first[0]["name"] == "clock"
    assert first[0]["detail"] == {"synced": False}
    event = next(e for e in first if e["kind"] == "event")
    assert event["flags"] == ["clock_unsynced"]
    rejected = next(e for e in first if e["kind"] == "rejected")
    assert rejected["clock_unsynced"] is True
    started = next(e for e in first if e.get("name") == "started")
    assert started["clock_unsynced"] is True
    assert not any(e["kind"] == "report" for e in first)  # the report waits
    status = gw.status()
    assert status["health"].startswith("degraded: the clock is not synchronised")
    assert status["clock"]["synced"] is False
    from gateway.metrics import exposition

    assert "gateway_clock_synced 0" in exposition(status)

    synced["now"] = True
    pump(gw, lambda: gw.loop.clock.synced)  # noticed within a health tick
    assert gw.status()["health"] == "ok" and gw.status()["clock"]["unsynced_for_s"] == 0
    gw.spool._schedule_reports()  # what its timer does once a minute
    pump(gw, lambda: sum(e["kind"] == "report" for e in ledger(gw)) == 3)
    with socket.create_connection(address) as c:
        c.sendall(b'{"event_type":"b","timestamp":"2026-11-30T10:00:00Z"}\n')
    pump(
        gw, lambda: gw.ingest.stats.events == 2 and gw.ledger.durable.seq == gw.ledger.next_seq - 1
    )
    later = ledger(gw)
    assert [e["detail"] for e in later if e.get("name") == "clock"] == [
        {"synced": False},
        {"synced": True},
    ]
    last_event = [e for e in later if e["kind"] == "event"][-1]
    assert last_event["flags"] == []
    assert all("clock_unsynced" not in e for e in later if e["kind"] == "report")
    gw.request_stop()
    gw._finish()


def test_check_sync_off_never_asks(tmp_path):
    asked = []
    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    config = Config(
        state_dir=config.state_dir,
        ingest=config.ingest,
        clock=type(config.clock)(check_sync=False),
    )
    gw = Gateway(config, clock=Clock(probe=lambda: asked.append(1) or False))
    gw.start()
    pump(gw, lambda: gw.ledger.durable.seq >= 1)
    assert asked == [] and gw.loop.clock.synced
    gw.request_stop()
    gw._finish()

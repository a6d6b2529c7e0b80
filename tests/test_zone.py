"""The gateway's zone: read from the ledger's latest started/reloaded entry, times and days."""

from __future__ import annotations

import datetime as dt

from test_audit_cli import NOON_US, SOURCE

from gateway import zone
from gateway.ledger import entries
from gateway.ledger.store import LedgerWriter, list_segments, write_entries


def write(ledger, payloads):
    writer = LedgerWriter(ledger, segment_bytes=1024).open()
    write_entries(writer, payloads, batch=100, sync=False)


def test_the_latest_recorded_zone_wins_across_segments(tmp_path):
    ledger = tmp_path / "ledger"
    assert zone.recorded(ledger) is None  # no ledger yet
    event = entries.encode_event(NOON_US, SOURCE, {"event_type": "x"}, [])
    write(ledger, [entries.encode_system(NOON_US, "started", {"timezone": "Asia/Tokyo"})])
    write(ledger, [event] * 40)  # later segments hold no zone: look further back
    assert len(list_segments(ledger)) > 2
    assert zone.recorded(ledger) == "Asia/Tokyo"
    write(ledger, [entries.encode_system(NOON_US, "reloaded", {"timezone": "Europe/Paris"})])
    write(ledger, [entries.encode_system(NOON_US, "clock", {"timezone": "Mars/Base"}), event])
    assert zone.recorded(ledger) == "Europe/Paris"  # a clock entry, or an unknown name, is not one


def test_days_and_times_in_a_zone():
    tokyo = zone.get("Asia/Tokyo")
    start, end = zone.day_bounds_us(dt.date(2026, 12, 2), tokyo)
    assert start == NOON_US + 3 * 3600 * 1_000_000  # 2026-12-02T00:00+09:00 = 15:00Z the day before
    assert end - start == 24 * 3600 * 1_000_000
    assert zone.local_time(NOON_US, tokyo) == "2026-12-01 21:00:00 +0900"
    assert zone.parse_time("2026-12-02", tokyo) == start
    assert zone.parse_time("2026-12-02", tokyo, end=True) == end
    assert zone.parse_time("2026-12-01T12:00:00Z", tokyo) == NOON_US
    assert zone.event_time_us("2026-12-01T13:00:00+01:00") == NOON_US
    assert zone.event_time_us("2026-12-01") is None and zone.event_time_us(5) is None


def test_an_older_zone_comes_from_the_index_without_reading_old_segments(tmp_path, monkeypatch):
    from gateway.audit import index

    ledger = tmp_path / "ledger"
    event = entries.encode_event(NOON_US, SOURCE, {"event_type": "x"}, [])
    write(ledger, [entries.encode_system(NOON_US, "started", {"timezone": "Asia/Tokyo"})])
    write(ledger, [event] * 40)
    db = index.open_index(tmp_path / index.INDEX_FILE)
    index.catch_up(db, ledger)
    db.close()
    newest = list_segments(ledger)[-1][0]
    read_from = []
    real = zone.LedgerReader.entries

    def entries_spy(self, from_seq=1, to_seq=None):
        read_from.append(from_seq)
        return real(self, from_seq, to_seq)

    monkeypatch.setattr(zone.LedgerReader, "entries", entries_spy)
    assert zone.recorded(ledger, tmp_path / index.INDEX_FILE) == "Asia/Tokyo"
    assert read_from == [newest]  # the newest segment only; the index had the rest
    read_from.clear()
    assert zone.recorded(ledger) == "Asia/Tokyo" and read_from[-1] == 1  # without: read back

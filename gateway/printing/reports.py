"""Daily compliance reports: which entries a day holds, and when reports are due.

A day is a calendar day in the gateway's zone (gateway/zone.py): the one the
ledger records, so that a report made from a copy of the ledger on another
machine holds the same entries as the box's.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from gateway import zone
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader, list_segments
from gateway.printing.fold import checkpoint_of
from gateway.render.templates import DayEntries, other_row, report_row


def day_bounds_us(date: dt.date, tz: dt.tzinfo | None = None) -> tuple[int, int]:
    """[start, end) of a calendar day in `tz` (default: this process's), in µs."""
    if tz is None:
        start = dt.datetime.combine(date, dt.time()).astimezone()
        end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time()).astimezone()
        return int(start.timestamp()) * 1_000_000, int(end.timestamp()) * 1_000_000
    return zone.day_bounds_us(date, tz)


def report_zone(ledger_dir: Path) -> str:
    """The zone of report days: the ledger's latest recorded one, else this process's."""
    return zone.recorded(ledger_dir) or zone.process_name()


def _first_received(ledger_dir: Path, first_seq: int) -> int | None:
    for _seq, payload, _hash in LedgerReader(ledger_dir).entries(first_seq, first_seq):
        value = entries.decode(payload).get("received_at")
        return value if isinstance(value, int) else None
    return None


def collect_day(
    ledger_dir: Path,
    date: dt.date,
    from_seq: int | None = None,
    to_seq: int | None = None,
    zone_name: str | None = None,
) -> tuple[DayEntries, int | None, int | None, str | None]:
    """The day's rows (events and refused lines received that day) and its other entries.

    Returns (rows, first seq, last seq, chain hash at the last seq); `rows`
    also carries the day's other entries (system events, print records, ...),
    the zone's name, and the latest `signed_checkpoint` entry recorded before
    the last row among the entries read (`rows.checkpoint`, None if none).
    The scan starts at the last segment that began before the day, so a report
    reads about one segment, not the whole ledger;
    `from_seq` and `to_seq` bound the rows (a numbered report's, as recorded).
    "Received that day" is by the gateway's clock, as recorded in each entry,
    in `zone_name` (default report_zone()).
    """
    zone_name = zone_name or report_zone(ledger_dir)
    start_us, end_us = zone.day_bounds_us(date, zone.get(zone_name))
    # Where the day begins in the ledger; the day's other entries (a start
    # before its first event) are read from there even when `from_seq` fixes
    # the rows of a numbered report.
    scan_from = 1
    for first, _path in list_segments(ledger_dir):
        received = _first_received(ledger_dir, first)
        if received is not None and received < start_us:
            scan_from = first
    if from_seq is not None:
        scan_from = min(scan_from, from_seq)
    rows = DayEntries(zone_name=zone_name)
    first_seq = last_seq = None
    last_hash = None
    signed = None  # the latest signed checkpoint read so far
    for seq, payload, chain_hash in LedgerReader(ledger_dir).entries(scan_from, to_seq):
        entry = entries.decode(payload)
        signed = checkpoint_of(seq, entry) or signed
        received = entry.get("received_at")
        if not isinstance(received, int) or not start_us <= received < end_us:
            continue
        if entry.get("kind") not in (entries.EVENT, entries.REJECTED):
            rows.others.append(other_row(seq, entry))
            continue
        if from_seq is not None and seq < from_seq:
            continue
        rows.append(report_row(seq, entry))
        rows.checkpoint = signed
        if first_seq is None:
            first_seq = seq
        last_seq = seq
        last_hash = chain_hash.hex()
    return rows, first_seq, last_seq, last_hash


def due_dates(
    last: dt.date | None, first: dt.date, at: str, now: float | None = None
) -> list[dt.date]:
    """Days whose report is due and not made yet, oldest first.

    The report for day D is due at `at` (local HH:MM) on day D+1. `last` is the
    day of the last report made (None: none yet); `first` is the earliest day
    worth a report (the day of the ledger's first entry). Every missed day is
    caught up once.
    """
    now_dt = dt.datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    hour, minute = map(int, at.split(":"))
    latest = now_dt.date() - dt.timedelta(days=1)
    if (now_dt.hour, now_dt.minute) < (hour, minute):
        latest -= dt.timedelta(days=1)
    day = first if last is None else max(first, last + dt.timedelta(days=1))
    out = []
    while day <= latest:
        out.append(day)
        day += dt.timedelta(days=1)
    return out


def next_due(at: str, now: float | None = None) -> float:
    """Seconds from now to the next local `at`."""
    now_dt = dt.datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    hour, minute = map(int, at.split(":"))
    target = now_dt.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now_dt:
        target = (target + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    return max(1.0, (target - now_dt).total_seconds())

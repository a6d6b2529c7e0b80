"""The gateway's one time zone: which it is, how the ledger records it, how times are shown.

Report days, the daily schedule and every time on paper or in a table follow
the `timezone:` setting (an IANA name; default the zone of /etc/localtime,
else UTC). The gateway records the zone in each `started` and `reloaded`
entry, so a command reading a copy of the ledger on another machine uses the
box's zone, not its own (docs/audit.md, "Time zones").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import zoneinfo
from pathlib import Path

import cbor2

from gateway.errors import LedgerCorruption
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader, list_segments

UTC = "UTC"
LOCALTIME = Path("/etc/localtime")
# Debian's other record of the zone's name, for an /etc/localtime that is a copy.
TIMEZONE_FILE = Path("/etc/timezone")
# The system entries that record the zone in their detail.
RECORDING = ("started", "reloaded")
# How a system entry's payload begins after its map header (entries.encode_record
# puts "kind" first): other entries are skipped without decoding them.
_SYSTEM_MARK = cbor2.dumps("kind") + cbor2.dumps(entries.SYSTEM)


def valid(name: str) -> bool:
    try:
        get(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def system_name(localtime: Path = LOCALTIME, timezone_file: Path = TIMEZONE_FILE) -> str:
    """The IANA name of the box's zone: /etc/localtime's link target, /etc/timezone, else UTC."""
    try:
        target = os.path.realpath(localtime)
        if "/zoneinfo/" in target and valid(name := target.split("/zoneinfo/", 1)[1]):
            return name
    except OSError:
        pass
    try:
        name = timezone_file.read_text(encoding="utf-8").strip()
        if name and valid(name):
            return name
    except (OSError, UnicodeDecodeError):
        pass
    return UTC


def process_name() -> str:
    """This process's zone: $TZ when it names one (`gateway run` sets it to the
    configured zone), else the box's."""
    name = os.environ.get("TZ", "").removeprefix(":")
    return name if name and valid(name) else system_name()


def get(name: str) -> dt.tzinfo:
    """The zone named `name`. UTC needs no time zone database (Debian's tzdata
    package holds the others), so a box without one still works in UTC."""
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        if name == UTC:
            return dt.UTC
        raise


def _named(detail: object) -> str | None:
    name = detail.get("timezone") if isinstance(detail, dict) else None
    return name if isinstance(name, str) and valid(name) else None


def _in_segment(ledger_dir: Path, first: int, to_seq: int | None) -> str | None:
    """The zone of the last recording entry in one segment's range."""
    found = None
    try:
        for _seq, payload, _hash in LedgerReader(ledger_dir).entries(first, to_seq):
            if payload[1 : 1 + len(_SYSTEM_MARK)] != _SYSTEM_MARK:
                continue  # not a system entry: no need to decode it
            entry = entries.decode(payload)
            if entry.get("kind") == entries.SYSTEM and entry.get("name") in RECORDING:
                found = _named(entry.get("detail")) or found
    except (LedgerCorruption, ValueError):
        # Damage is for the command's own check to report; the zone comes from
        # what could be read before it, or from an earlier segment.
        pass
    return found


def _in_index(index_path: Path, below: int) -> str | None:
    """The zone of the latest recording entry before seq `below`, from the query index.

    The index is not a source of truth, but the zone only decides how times
    are shown, and commands say which zone they used.
    """
    try:
        db = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        # Walks the (kind, seq) index backwards over system entries only.
        cursor = db.execute(
            "SELECT r.record FROM filters AS f JOIN entries AS r USING (seq) "
            "WHERE f.kind = 'system' AND f.seq < ? ORDER BY f.seq DESC",
            (below,),
        )
        for (record,) in cursor:
            entry = json.loads(record)
            if entry.get("name") in RECORDING and (name := _named(entry.get("detail"))):
                return name
    except (sqlite3.Error, ValueError):
        return None
    finally:
        db.close()
    return None


def recorded(ledger_dir: Path, index_path: Path | None = None) -> str | None:
    """The zone named by the ledger's latest `started` or `reloaded` entry, if any.

    Reads the newest segment (a recent start or reload is there); then asks
    the query index, when given, for an older one; else reads segments further
    back until one names a zone.
    """
    firsts = [first for first, _path in list_segments(ledger_dir)]
    for i in range(len(firsts) - 1, -1, -1):
        to_seq = firsts[i + 1] - 1 if i + 1 < len(firsts) else None
        found = _in_segment(ledger_dir, firsts[i], to_seq)
        if found is not None:
            return found
        if index_path is not None and index_path.exists():
            found = _in_index(index_path, firsts[i])
            if found is not None:
                return found
            index_path = None  # asked once: it has nothing older either
    return None


def local_time(us: int, tz: dt.tzinfo) -> str:
    """A receive time as printed on paper and in tables: local, to the second, with offset."""
    moment = dt.datetime.fromtimestamp(us / 1_000_000, tz=tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def day_bounds_us(date: dt.date, tz: dt.tzinfo) -> tuple[int, int]:
    """[start, end) of a calendar day in `tz`, in microseconds since the epoch."""
    start = dt.datetime.combine(date, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return int(start.timestamp()) * 1_000_000, int(end.timestamp()) * 1_000_000


def parse_time(text: str, tz: dt.tzinfo, end: bool = False) -> int:
    """RFC 3339, or a date (midnight in `tz`; with `end`, the midnight after) -> µs."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
            moment = dt.datetime.combine(day, dt.time(), tzinfo=tz)
        else:
            moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    return int(moment.timestamp() * 1_000_000)


def event_time_us(value: object) -> int | None:
    """An event's own `timestamp` (RFC 3339) in µs; None when it has none or a bad one."""
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1_000_000)

"""Ledger entry payloads: what each kind of entry holds, encoded as CBOR maps.

The hot path (one event) concatenates pre-encoded CBOR pieces: the map header,
the constant keys and the per-connection `source` are encoded once, so an event
costs one cbor2.dumps of the client's object. The chain hash covers the stored
bytes, so the encoding need not be canonical; any CBOR decoder reads it.
"""

from __future__ import annotations

import datetime as _dt
import functools
from typing import Any

import cbor2

# Entry kinds. Every payload is a CBOR map with at least "kind" and "received_at"
# (microseconds since the Unix epoch, UTC).
EVENT = "event"
REJECTED = "rejected"
SYSTEM = "system"
# Printing (docs/printing.md): requests that queue a job, job outcomes and
# printer state changes. Receipts need no request entry: which receipts an
# event gets follows from the event and the routes.
REPRINT = "reprint"
REPORT = "report"
STATUS_PAGE = "status_page"
PRINT = "print"
PRINTER = "printer"
# The front panel: one entry per button press (how long it was held, what it did).
BUTTON = "button"

_dumps = cbor2.dumps

# While the system clock is not synchronised (a Raspberry Pi has no real-time
# clock), every entry says so: events in their flags, other kinds with a
# "clock_unsynced": true field. The caller passes the clock's state
# (gateway/clock.py); nothing here keeps it.
CLOCK_UNSYNCED = "clock_unsynced"


_K_SOURCE = _dumps("source")
_K_EVENT = _dumps("event")
_K_FLAGS = _dumps("flags")
_EMPTY_LIST = _dumps([])
_K_UNSYNCED = _dumps(CLOCK_UNSYNCED) + _dumps(True)
_K_REDACTED = _dumps("redacted") + _dumps(True)

# map(5) {"kind": "event", "received_at": <uint>, "source": ..., "event": ..., "flags": [...]}
_EVENT_HEAD = b"\xa5" + _dumps("kind") + _dumps(EVENT) + _dumps("received_at")


def source_map(
    addr: str, port: int, app: str | None, conn: int, authenticated: bool = False
) -> dict[str, Any]:
    """A connection's `source`: `auth: true` when the hello's token (or the client's
    certificate) was checked, so the app name can be trusted; without it the name
    is what the client claimed."""
    source: dict[str, Any] = {"addr": addr, "port": port, "app": app, "conn": conn}
    if authenticated:
        source["auth"] = True
    return source


def encode_source(
    addr: str, port: int, app: str | None, conn: int, authenticated: bool = False
) -> bytes:
    """Pre-encode a connection's source map once; every event on it reuses the bytes."""
    return _dumps(source_map(addr, port, app, conn, authenticated))


# The events of one read share their receive time: its encoding is remembered
# (a cache hit costs a quarter of encoding the integer again).
_encode_time = functools.lru_cache(maxsize=16)(_dumps)


def event_head(received_at_us: int, source: bytes) -> bytes:
    """An event entry's bytes before the event's own map (the native core's prefix)."""
    return b"".join((_EVENT_HEAD, _encode_time(received_at_us), _K_SOURCE, source, _K_EVENT))


def encode_event(received_at_us: int, source: bytes, event: dict, flags: list[str]) -> bytes:
    return encode_event_body(received_at_us, source, _dumps(event), flags)


def encode_event_body(
    received_at_us: int,
    source: bytes,
    event_cbor: bytes,
    flags: list[str],
    duplicates: list[dict[str, list[Any]]] | None = None,
) -> bytes:
    """An event entry around the event's own encoding (made once when it is also
    fingerprinted, gateway/ingest/dedup.py). `duplicates`: the values of keys the
    line repeated (flag duplicate_key), stored as the entry's sixth field."""
    if duplicates:  # rare: encoded whole, not from pieces
        source_value, event = cbor2.loads(source), cbor2.loads(event_cbor)
        return _dumps(event_value(received_at_us, source_value, event, flags, duplicates))
    return b"".join(
        (
            _EVENT_HEAD,
            _encode_time(received_at_us),
            _K_SOURCE,
            source,
            _K_EVENT,
            event_cbor,
            _K_FLAGS,
            _dumps(flags) if flags else _EMPTY_LIST,
        )
    )


def encode_rejected(
    received_at_us: int,
    source: bytes,
    reason: str,
    detail: str,
    length: int,
    digest: bytes,
    excerpt: bytes,
    redacted: bool = False,
    unsynced: bool = False,
) -> bytes:
    """A refused line. `redacted`: its excerpt was redacted and its digest is keyed."""
    optional = []
    if unsynced:
        optional.append(_K_UNSYNCED)
    if redacted:
        optional.append(_K_REDACTED)
    return b"".join(
        (
            bytes([0xA8 + len(optional)]),  # map of 8 pairs, plus the optional ones
            *optional,
            _dumps("kind"),
            _dumps(REJECTED),
            _dumps("received_at"),
            _dumps(received_at_us),
            _K_SOURCE,
            source,
            _dumps(
                {
                    "reason": reason,
                    "detail": detail,
                    "length": length,
                    "digest": digest,
                    "excerpt": excerpt,
                }
            )[1:],  # splice the five pairs into the outer map
        )
    )


def encode_system(
    received_at_us: int, name: str, detail: dict[str, Any], unsynced: bool = False
) -> bytes:
    return encode_record(SYSTEM, received_at_us, {"name": name, "detail": detail}, unsynced)


def record_value(
    kind: str, received_at_us: int, fields: dict[str, Any], unsynced: bool = False
) -> dict[str, Any]:
    """The map `encode_record` stores (what decoding the entry gives back)."""
    record = {"kind": kind, "received_at": received_at_us, **fields}
    if unsynced:
        record[CLOCK_UNSYNCED] = True
    return record


def encode_record(
    kind: str, received_at_us: int, fields: dict[str, Any], unsynced: bool = False
) -> bytes:
    """Any other kind: a flat map of `kind`, `received_at` and the kind's fields."""
    return _dumps(record_value(kind, received_at_us, fields, unsynced))


def encode_value(value: dict[str, Any]) -> bytes:
    """A map made by record_value (or event_value), as stored."""
    return _dumps(value)


def event_value(
    received_at_us: int,
    source: dict[str, Any],
    event: dict,
    flags: list[str],
    duplicates: list[dict[str, list[Any]]] | None = None,
) -> dict[str, Any]:
    """The map encode_event stores, for subscribers that read entries as they commit."""
    value = {
        "kind": EVENT,
        "received_at": received_at_us,
        "source": source,
        "event": event,
        "flags": flags,
    }
    if duplicates:
        value["duplicate_keys"] = duplicates
    return value


def decode(payload: bytes | memoryview) -> dict[str, Any]:
    value = cbor2.loads(bytes(payload))
    if not isinstance(value, dict):
        raise ValueError("entry payload is not a CBOR map")
    return value


def format_time_us(us: int) -> str:
    """RFC 3339 UTC with microseconds, as shown in exports and on paper."""
    t = _dt.datetime.fromtimestamp(us // 1_000_000, tz=_dt.UTC).replace(microsecond=us % 1_000_000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_jsonable(value: Any) -> Any:
    """CBOR values to JSON values: byte strings become text (undecodable bytes escaped)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def export_record(seq: int, chain_hash: bytes, entry: dict[str, Any]) -> dict[str, Any]:
    """The JSON object `gateway export` prints for one entry (docs/ledger-format.md)."""
    out: dict[str, Any] = {
        "seq": seq,
        "kind": entry.get("kind"),
        "received_at": format_time_us(entry["received_at"])
        if isinstance(entry.get("received_at"), int)
        else None,
        "hash": chain_hash.hex(),
    }
    for key, value in entry.items():
        if key in ("kind", "received_at"):
            continue
        if key == "digest" and isinstance(value, bytes):
            out[key] = value.hex()
        else:
            out[key] = to_jsonable(value)
    out.setdefault("source", None)
    out.setdefault("flags", [])
    return out

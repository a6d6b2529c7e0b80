"""Templates: receipts, daily compliance reports and status pages as Documents.

Every document that shows ledger data carries the paper anchor: the seq and
chain hash that tie the page to the ledger (docs/printing.md, "What is on the
paper").
"""

from __future__ import annotations

import json
from typing import Any

from gateway.ledger.entries import format_time_us
from gateway.render.document import Anchor, Document, Field, Heading, Rule, Table, Text

# Event fields shown on a receipt, in this order, when present: the
# identifiers and outcomes of subscription, audit and support events.
RECEIPT_FIELDS = (
    "action",
    "user",
    "user_id",
    "username",
    "subscription_id",
    "order_id",
    "ticket_id",
    "object_type",
    "object_id",
    "object",
    "status",
    "outcome",
    "plan",
    "amount",
    "currency",
    "reason",
)
# A value longer than this is cut on paper (with "..."); the ledger keeps it whole.
MAX_VALUE_CHARS = 120
# Report columns: seq, when, what, who/which, status, flags.
REPORT_HEADER = ("seq", "received_at", "event_type", "ids", "status", "flags")
REPORT_ID_FIELDS = (
    "subscription_id",
    "order_id",
    "user_id",
    "username",
    "user",
    "ticket_id",
    "object_type",
    "object_id",
)
REPORT_STATUS_FIELDS = ("status", "action", "outcome")


def _short(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def receipt(name: str, seq: int, hash_hex: str, entry: dict[str, Any], mark: str = "") -> Document:
    """One event on a receipt; `mark` is "COPY n" or "REPRINT - delivery uncertain"."""
    event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    blocks: list = [Heading(name)]
    if mark:
        blocks.append(Text(f"*** {mark} ***", bold=True))
    blocks.append(Text(_short(event.get("event_type", "(no event_type)")), bold=True))
    if "timestamp" in event:
        blocks.append(Field("timestamp", _short(event["timestamp"])))
    for key in RECEIPT_FIELDS:
        if key in event:
            blocks.append(Field(key, _short(event[key])))
    if "old_value" in event or "new_value" in event:
        blocks.append(Field("old", _short(event.get("old_value"))))
        blocks.append(Field("new", _short(event.get("new_value"))))
    flags = entry.get("flags") or []
    if flags:
        blocks.append(Field("flags", ", ".join(map(str, flags))))
    source = entry.get("source") if isinstance(entry.get("source"), dict) else {}
    if source.get("app"):
        blocks.append(Field("app", _short(source["app"])))
    received = entry.get("received_at")
    if isinstance(received, int):
        blocks.append(Field("received", format_time_us(received)))
    blocks += [Rule(), Anchor(seq, hash_hex)]
    return Document(title=f"receipt {seq}", blocks=tuple(blocks))


def report_row(seq: int, entry: dict[str, Any]) -> tuple[str, ...]:
    """One report row. Fields are cleaned of tabs and newlines by the layout."""
    kind = entry.get("kind")
    received = entry.get("received_at")
    when = format_time_us(received) if isinstance(received, int) else ""
    if kind == "event":
        event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
        what = _short(event.get("event_type", ""))
        ids = " ".join(f"{k}={_short(event[k])}" for k in REPORT_ID_FIELDS if k in event)
        status = next((_short(event[k]) for k in REPORT_STATUS_FIELDS if k in event), "")
        flags = ",".join(map(str, entry.get("flags") or []))
    else:  # rejected lines are part of the day's record too
        what = "(rejected line)"
        ids = f"length={entry.get('length')}"
        status = str(entry.get("reason", ""))
        flags = ""
    return (str(seq), when, what, ids, status, flags)


def daily_report(
    name: str,
    date: str,
    number: int | None,
    rows: list[tuple[str, ...]],
    first_seq: int | None,
    last_seq: int | None,
    last_hash_hex: str | None,
    mark: str = "",
) -> Document:
    """The compliance report of one local day. `number` None: an unnumbered preview."""
    label = f"report no. {number}" if number is not None else "PREVIEW - not a numbered report"
    blocks: list = [Heading(f"{name} daily compliance report {date}"), Text(label, bold=True)]
    if mark:
        blocks.append(Text(f"*** {mark} ***", bold=True))
    blocks.append(Table(REPORT_HEADER, tuple(rows)))
    blocks.append(Rule())
    if rows:
        blocks.append(Text(f"entries {len(rows)}: seq {first_seq} to {last_seq}"))
    else:
        blocks.append(Text("no entries this day"))
    if last_seq is not None and last_hash_hex:
        blocks.append(Anchor(last_seq, last_hash_hex))
    footer = f"{name} {date} {label}"
    return Document(title=f"report {date}", blocks=tuple(blocks), paginate=True, footer=footer)


def status_page(name: str, status: dict[str, Any]) -> Document:
    ledger = status.get("ledger", {})
    blocks: list = [Heading(f"{name} status"), Field("version", status.get("version", ""))]
    blocks.append(Field("health", status.get("health", "")))
    blocks.append(Field("uptime", f"{status.get('uptime_s', 0):.0f} s"))
    for address in status.get("listen", []):
        blocks.append(Field("listening", address))
    blocks.append(Field("entries", str(ledger.get("entries", ""))))
    blocks.append(Field("connections", str(status.get("connections", ""))))
    for printer in status.get("printers", []):
        blocks.append(
            Field(
                f"printer {printer['name']}",
                f"{printer['state']}, {printer['queued']} queued"
                + (f", error: {printer['error']}" if printer.get("error") else ""),
            )
        )
    blocks.append(Rule())
    if ledger.get("head_seq"):
        blocks.append(Anchor(ledger["head_seq"], ledger.get("head_hash", "")))
    return Document(title="status", blocks=tuple(blocks))

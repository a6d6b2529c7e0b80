"""Templates: receipts, daily compliance reports and status pages as Documents.

Every document that shows ledger data carries the paper anchor: the seq and
chain hash that tie the page to the ledger (docs/printing.md, "What is on the
paper").
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

from gateway import zone
from gateway.render.document import Anchor, Document, Field, Heading, Item, Row, Rule, Text

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


# The kinds of entry that are not events, as a report explains the seqs it skips.
NOT_EVENTS = {
    "system": "system events (listed above)",
    "printer": "printer state changes (listed above)",
    "print": "print records: a receipt, report or status page printed or given up",
    "reprint": "reprint requests",
    "report": "report requests",
    "status_page": "status page requests",
    "button": "front-panel button presses",
}
# Kinds listed one by one in a report's "system events" section.
SYSTEM_KINDS = ("system", "printer")


@dataclass(frozen=True)
class PaperCheckpoint:
    """A signed checkpoint as paper shows it (docs/fleet.md, "Signed checkpoints")."""

    short: str  # "<seq>:<16 hex digits of the head hash> sig <8 hex digits of the signature>"
    box: str
    fingerprint: str  # the box key fingerprint's first 16 hex digits (the origin's)


def paper_checkpoint(recorded: dict[str, Any] | None) -> PaperCheckpoint | None:
    """The short form of a `signed_checkpoint` entry's note parts (None: none, or unreadable).

    The same short form as `gateway status` shows (gateway/fleet/note.py,
    Checkpoint.short), rebuilt from the note's parts the entry records.
    """
    if not recorded:
        return None
    from gateway.fleet.note import NoteError, note_from_entry, parse_note

    try:
        checkpoint = parse_note(note_from_entry(recorded))
        _prefix, box, fingerprint = str(recorded["origin"]).rsplit("/", 2)
    except (NoteError, KeyError, ValueError, TypeError):
        return None
    return PaperCheckpoint(checkpoint.short().removeprefix("checkpoint "), box, fingerprint)


def _checkpoint_blocks(checkpoint: PaperCheckpoint | None) -> list:
    if checkpoint is None:
        return []
    return [
        Field("checkpoint", checkpoint.short),
        Field("box key", f"{checkpoint.box} {checkpoint.fingerprint}"),
    ]


def _short(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _zone(tz: dt.tzinfo | None, zone_name: str | None) -> tuple[dt.tzinfo, str]:
    """The zone to print in: as given, else this process's (the gateway's, see cli run)."""
    if tz is None:
        name = zone_name or zone.process_name()
        return zone.get(name), name
    return tz, zone_name or str(tz)


def _local(us: int, tz: dt.tzinfo, time_only: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(us / 1_000_000, tz=tz)
    return moment.strftime("%H:%M:%S" if time_only else "%Y-%m-%d %H:%M:%S %z")


def _now_us() -> int:
    return time.time_ns() // 1000


def _changes(event: dict[str, Any]) -> list[str]:
    from gateway.audit.present import change_lines

    return [_short(line) for line in change_lines(event) or []]


def receipt(
    name: str,
    seq: int,
    hash_hex: str,
    entry: dict[str, Any],
    mark: str = "",
    *,
    tz: dt.tzinfo | None = None,
    zone_name: str | None = None,
    checkpoint: PaperCheckpoint | None = None,
) -> Document:
    """One event on a receipt; `mark` is "COPY n" or "REPRINT - delivery uncertain".

    `checkpoint`: the latest signed checkpoint recorded before the event, printed
    under the anchor with the box key's fingerprint.
    """
    tz, zone_name = _zone(tz, zone_name)
    event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    blocks: list = [Heading(name)]
    if mark:
        blocks.append(Text(f"*** {mark} ***", bold=True))
    blocks.append(Text(_short(event.get("event_type", "(no event_type)")), bold=True))
    if "timestamp" in event:
        blocks.append(Field("event time", _short(event["timestamp"])))
    for key in RECEIPT_FIELDS:
        if key in event:
            blocks.append(Field(key, _short(event[key])))
    if "old_value" in event or "new_value" in event:
        changes = _changes(event)
        blocks.append(Text("changes (old -> new):"))
        blocks += [Item(c) for c in changes] or [Item("none")]
    flags = entry.get("flags") or []
    if flags:
        blocks.append(Field("flags", ", ".join(map(str, flags))))
    source = entry.get("source") if isinstance(entry.get("source"), dict) else {}
    if source.get("app"):
        blocks.append(Field("app", _short(source["app"])))
    received = entry.get("received_at")
    if isinstance(received, int):
        blocks.append(Field("received", f"{_local(received, tz)} {zone_name}"))
    blocks += [Rule(), Anchor(seq, hash_hex), Field("chain hash", hash_hex)]
    blocks += _checkpoint_blocks(checkpoint)
    return Document(title=f"receipt {seq}", blocks=tuple(blocks))


@dataclass(frozen=True)
class ReportRow:
    """One event or refused line of a daily report."""

    seq: int
    received_us: int | None
    what: str  # the event_type, or "(refused line)"
    ids: str = ""
    status: str = ""
    flags: str = ""
    app: str = ""
    event_time: str = ""
    changes: tuple[str, ...] = ()
    when: str = ""  # the time as text, when there is no received_us


@dataclass(frozen=True)
class OtherRow:
    """An entry of the day that is not an event: its seq, time, kind and what it says."""

    seq: int
    received_us: int | None
    kind: str
    text: str


class DayEntries(list):
    """A day's report rows (events and refused lines), with the day's other entries beside."""

    def __init__(self, rows=(), others=(), zone_name: str = "", checkpoint=None) -> None:
        super().__init__(rows)
        self.others: list[OtherRow] = list(others)
        self.zone_name = zone_name
        # The latest signed checkpoint recorded before the last row (what
        # collect_day found: the recorded note parts, or None).
        self.checkpoint: dict[str, Any] | None = checkpoint


def report_row(seq: int, entry: dict[str, Any]) -> ReportRow:
    """One report row. Fields are cleaned of control characters by the layout."""
    kind = entry.get("kind")
    received = entry.get("received_at")
    received = received if isinstance(received, int) else None
    source = entry.get("source") if isinstance(entry.get("source"), dict) else {}
    app = _short(source["app"]) if source.get("app") else ""
    if kind == "event":
        event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
        return ReportRow(
            seq,
            received,
            _short(event.get("event_type", "(no event_type)")),
            " ".join(f"{k}={_short(event[k])}" for k in REPORT_ID_FIELDS if k in event),
            next((_short(event[k]) for k in REPORT_STATUS_FIELDS if k in event), ""),
            ",".join(map(str, entry.get("flags") or [])),
            app,
            _short(event["timestamp"]) if "timestamp" in event else "",
            tuple(_changes(event)) if ("old_value" in event or "new_value" in event) else (),
        )
    # Refused lines are part of the day's record too.
    return ReportRow(
        seq, received, "(refused line)", f"length={entry.get('length')}",
        str(entry.get("reason", "")), "", app,
    )  # fmt: skip


def other_row(seq: int, entry: dict[str, Any]) -> OtherRow:
    """A non-event entry as a report's system section lists it."""
    kind = str(entry.get("kind"))
    received = entry.get("received_at")
    received = received if isinstance(received, int) else None
    if kind == "system":
        detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else {}
        keys = ("version", "reason", "synced", "timezone", "restart_needed", "dropped_bytes")
        said = ", ".join(f"{k} {_short(detail[k])}" for k in keys if k in detail)
        text = f"{entry.get('name')}" + (f" ({said})" if said else "")
    elif kind == "printer":
        error = f" ({_short(entry['error'])})" if entry.get("error") else ""
        text = f"printer {entry.get('printer')}: {entry.get('state')}{error}"
    elif kind == "print":
        text = f"{entry.get('type')} {entry.get('outcome')} on {entry.get('printer')}"
    else:
        text = kind
    if entry.get("clock_unsynced"):
        text += " [clock not synchronised]"
    return OtherRow(seq, received, kind, text)


def _legacy_row(row: Any) -> ReportRow:
    """A row given as the tuple (seq, when, what, ids, status, flags)."""
    if isinstance(row, ReportRow):
        return row
    seq, when, what, ids, status, flags = (list(row) + [""] * 6)[:6]
    return ReportRow(int(seq), None, what, ids, status, flags, when=when)


def _seq_ranges(seqs: list[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    out: list[str] = []
    last = None
    for seq in sorted(seqs):
        if out and last is not None and seq == last + 1:
            out[-1] = out[-1].split("-")[0] + f"-{seq}"
        else:
            out.append(str(seq))
        last = seq
    return ", ".join(out)


def daily_report(
    name: str,
    date: str,
    number: int | None,
    rows: list,
    first_seq: int | None,
    last_seq: int | None,
    last_hash_hex: str | None,
    mark: str = "",
    *,
    tz: dt.tzinfo | None = None,
    zone_name: str | None = None,
    generated_us: int | None = None,
    others: list[OtherRow] | None = None,
    checkpoint: PaperCheckpoint | None = None,
) -> Document:
    """The compliance report of one day in the gateway's zone. `number` None: a preview.

    `checkpoint` (default: the one `rows` carries): the latest signed checkpoint
    recorded before the day's last entry, printed under its anchor.
    """
    if tz is None and zone_name is None and getattr(rows, "zone_name", ""):
        zone_name = rows.zone_name
    tz, zone_name = _zone(tz, zone_name)
    if others is None:
        others = list(getattr(rows, "others", []))
    if checkpoint is None:
        checkpoint = paper_checkpoint(getattr(rows, "checkpoint", None))
    items = [_legacy_row(r) for r in rows]
    label = f"report no. {number}" if number is not None else "PREVIEW - not a numbered report"
    generated = _local(generated_us if generated_us is not None else _now_us(), tz)
    blocks: list = [
        Heading(f"{name} daily compliance report {date}"),
        Text(f"day in {zone_name}", bold=True),
        Text(label, bold=True),
    ]
    if mark:
        blocks.append(Text(f"*** {mark} ***", bold=True))
    blocks += [Field("generated", f"{generated} {zone_name}"), Rule()]
    if items:
        blocks.append(
            Text(
                f"entries {len(items)}: seq {first_seq} to {last_seq} (events and refused "
                "lines; the day's other seqs are listed at the end)"
            )
        )
        blocks.append(Text(f"times: received, {zone_name}; event time: as the app sent it"))
    else:
        blocks.append(Text("no entries this day"))
    seq_width = max([len(str(r.seq)) for r in items] + [len(str(o.seq)) for o in others] + [1])
    for r in items:
        when = _local(r.received_us, tz, time_only=True) if r.received_us is not None else r.when
        blocks.append(Row((str(r.seq).rjust(seq_width), when), (seq_width, 8), r.what, True))
        who = "  ".join(p for p in (f"app {r.app}" if r.app else "", r.ids) if p)
        if who:
            blocks.append(Item(who))
        if r.event_time:
            blocks.append(Item(f"event time {r.event_time}"))
        if r.status:
            blocks.append(Item(f"status {r.status}"))
        if r.flags:
            blocks.append(Item(f"flags {r.flags}"))
        blocks += [Item(c, indent=4) for c in r.changes]
    blocks.append(Rule())
    system = [o for o in others if o.kind in SYSTEM_KINDS]
    blocks.append(Text("system events of the day", bold=True))
    if not system:
        blocks.append(Item("none"))
    for o in system:
        when = _local(o.received_us, tz, time_only=True) if o.received_us is not None else ""
        blocks.append(Row((str(o.seq).rjust(seq_width), when), (seq_width, 8), o.text))
    if others:
        blocks.append(Text("seqs of the day that are not events:", bold=True))
        by_kind: dict[str, list[int]] = {}
        for o in others:
            by_kind.setdefault(o.kind, []).append(o.seq)
        for kind, seqs in by_kind.items():
            blocks.append(Item(f"{_seq_ranges(seqs)}: {NOT_EVENTS.get(kind, kind)}"))
    blocks.append(Rule())
    if last_seq is not None and last_hash_hex:
        blocks.append(Text("last entry of the day (check with gateway verify --expect):"))
        blocks += [Anchor(last_seq, last_hash_hex), Field("chain hash", last_hash_hex)]
        if checkpoint is not None:
            blocks.append(Text("latest signed checkpoint before it:"))
            blocks += _checkpoint_blocks(checkpoint)
        blocks.append(Rule())
    blocks += [Text("checked by (name):"), Text("signature: ____________________")]
    blocks.append(Text("date: ______________"))
    footer = f"{name} {date} {label}"
    return Document(title=f"report {date}", blocks=tuple(blocks), paginate=True, footer=footer)


def status_page(
    name: str,
    status: dict[str, Any],
    *,
    tz: dt.tzinfo | None = None,
    zone_name: str | None = None,
    now_us: int | None = None,
) -> Document:
    tz, zone_name = _zone(tz, zone_name)
    ledger = status.get("ledger", {})
    blocks: list = [Heading(f"{name} status")]
    blocks.append(Field("printed", f"{_local(now_us or _now_us(), tz)} {zone_name}"))
    blocks.append(Field("version", status.get("version", "")))
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
    # The box key's short fingerprint and the latest signed checkpoint (docs/fleet.md).
    identity = status.get("identity")
    if identity:
        blocks.append(Field("box key", f"{identity['box']} {identity['fingerprint'][:16]}"))
    checkpoint = status.get("checkpoint") or {}
    if checkpoint.get("latest_seq"):
        blocks.append(Field("checkpoint", checkpoint["latest_short"].removeprefix("checkpoint ")))
    # The web console's certificate (docs/web.md): compared with what a browser shows
    # before trusting a self-signed certificate.
    web = status.get("web") or {}
    if web.get("tls_fingerprint"):
        blocks.append(Field("console cert", web["tls_fingerprint"]))
    blocks.append(Rule())
    if ledger.get("head_seq"):
        blocks.append(Anchor(ledger["head_seq"], ledger.get("head_hash", "")))
        blocks.append(Field("chain hash", ledger.get("head_hash", "")))
    return Document(title="status", blocks=tuple(blocks))

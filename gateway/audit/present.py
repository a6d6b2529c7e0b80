"""Query results and entries for people and programs: table, JSON lines, CSV, details."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

from gateway.audit.query import Result, diff
from gateway.ledger.entries import format_time_us

# The table fits 80 columns: seq 6, time 16 (to the minute), what 16, who 10,
# object 12, then the summary in what is left (at least 14).
TABLE_WIDTHS = (6, 16, 16, 10, 12)
TABLE_WIDTH = 80

CSV_FIELDS = ("seq", "received_at", "kind", "event_type", "action", "user", "object_type",
              "object_id", "app", "flags", "summary", "hash", "event")  # fmt: skip


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())  # no tabs or line breaks inside a cell


def write(rows: list[dict[str, Any]], form: str, out: TextIO) -> None:
    if form == "jsonl":
        for r in rows:
            out.write(json.dumps(r["record"], ensure_ascii=False, separators=(",", ":")) + "\n")
    elif form == "csv":
        writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
        writer.writerow(CSV_FIELDS)
        for r in rows:
            rec = r["record"]
            writer.writerow(
                [
                    r["seq"],
                    rec.get("received_at") or "",
                    r["kind"],
                    r["event_type"] or "",
                    r["action"] or "",
                    r["username"] or r["user_id"] or "",
                    r["object_type"] or "",
                    r["object_id"] or "",
                    r["app"] or "",
                    json.dumps(rec.get("flags") or []),
                    r["summary"],
                    rec.get("hash", ""),
                    json.dumps(rec.get("event"), ensure_ascii=False) if "event" in rec else "",
                ]
            )
    else:
        header = ("seq", "received (UTC)", "event / action", "who", "object", "summary")
        out.write(_table_line(header) + "\n")
        for r in rows:
            when = ""
            if r["received_at"]:
                when = format_time_us(r["received_at"])[:16].replace("T", " ")
            what = (r["action"] or r["event_type"]) if r["kind"] == "event" else r["summary"]
            obj = ":".join(_cell(r[k]) for k in ("object_type", "object_id") if r[k])
            out.write(
                _table_line(
                    (
                        str(r["seq"]),
                        when,
                        _cell(what),
                        _cell(r["username"] or r["user_id"]),
                        obj,
                        _cell(r["summary"]),
                    )
                )
                + "\n"
            )


def _table_line(cells: tuple[str, ...]) -> str:
    fixed = [_cut(c, w).ljust(w) for c, w in zip(cells, TABLE_WIDTHS, strict=False)]
    line = " ".join(fixed)
    rest = TABLE_WIDTH - len(line) - 1
    return (line + " " + _cut(cells[-1], max(14, rest))).rstrip()


def provenance(result: Result) -> str:
    """Where the rows came from: said with every query (docs/audit.md)."""
    if not result.index_present:
        return (
            f"from the ledger ({result.from_ledger} entries read; no index: run "
            "`gateway reindex` or start the gateway); not re-hashed (use --verify)"
        )
    return (
        f"from the index (to seq {result.indexed_to}) and {result.from_ledger} newer "
        "entries read from the ledger; not re-hashed (use --verify)"
    )


def detail(record: dict[str, Any]) -> str:
    """One entry in full: every field, then a diff of old_value/new_value."""
    lines = [f"seq         {record['seq']}", f"kind        {record['kind']}"]
    lines.append(f"received_at {record.get('received_at')}")
    lines.append(f"hash        {record['hash']}")
    if record.get("source"):
        lines.append(f"source      {json.dumps(record['source'], ensure_ascii=False)}")
    lines.append(f"flags       {', '.join(record.get('flags') or []) or '-'}")
    skip = {"seq", "kind", "received_at", "hash", "source", "flags"}
    for key, value in record.items():
        if key not in skip:
            text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
            lines.append(f"{key}:")
            lines += ["  " + line for line in text.splitlines()]
    event = record.get("event")
    if isinstance(event, dict) and ("old_value" in event or "new_value" in event):
        changes = diff(event.get("old_value"), event.get("new_value"))
        lines.append("changes (old_value -> new_value):")
        if not changes:
            lines.append("  none")
        for op, path, old, new in changes:
            if op == "added":
                lines.append(f"  + {path}: {json.dumps(new, ensure_ascii=False)}")
            elif op == "removed":
                lines.append(f"  - {path}: {json.dumps(old, ensure_ascii=False)}")
            else:
                lines.append(
                    f"  ~ {path}: {json.dumps(old, ensure_ascii=False)} -> "
                    f"{json.dumps(new, ensure_ascii=False)}"
                )
    return "\n".join(lines) + "\n"

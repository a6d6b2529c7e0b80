"""Query results and entries for people and programs: table, JSON lines, CSV, details."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from typing import Any, TextIO

from gateway.audit.query import Result, diff

# The table fits 80 columns: seq 6, time 16 (to the minute), what 16, who 10,
# object 12, then the summary in what is left (at least 14).
TABLE_WIDTHS = (6, 16, 16, 10, 12)
TABLE_WIDTH = 80

# One column per field of the seed events, so a spreadsheet filters on them;
# `event` keeps the whole event as JSON, so no field is lost; `check` says
# whether the row was checked against the chain (docs/audit.md, "CSV").
CSV_FIELDS = ("seq", "received_at", "timestamp", "kind", "event_type", "action", "user_id",
              "username", "object_type", "object_id", "app", "flags", "old_value", "new_value",
              "summary", "hash", "event", "check")  # fmt: skip
# A cell starting with one of these is a formula to a spreadsheet (and a tab
# or carriage return hides one): such cells get a leading apostrophe, which
# spreadsheets show as text (OWASP, "CSV Injection"). Numbers are left alone.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

# How the check of each row is shown (`check` column, JSON `check` key).
CHECKED = "ok"
NOT_CHECKED = "not checked (--no-check)"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())  # no tabs or line breaks inside a cell


def neutralise(cell: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (negative numbers stay numbers)."""
    if cell.startswith(FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Writer:
    """Rows out as they come (constant memory): table, JSON lines or CSV.

    `problems` maps a seq to what its check found: such a row is printed as
    DAMAGED, never with its contents. `checked` False: nothing was checked.
    """

    def __init__(self, form: str, out: TextIO, tz: dt.tzinfo = dt.UTC, zone_note: str = "UTC"):
        self.form, self.out, self.tz = form, out, tz
        self.count = 0
        if form == "csv":
            self.csv = csv.writer(out, lineterminator="\r\n")  # RFC 4180
            self.csv.writerow(CSV_FIELDS)
        elif form == "table":
            out.write(f"times in {zone_note}\n")
            header = ("seq", "received", "event / action", "who", "object", "summary")
            out.write(_table_line(header) + "\n")

    def row(
        self, r: dict[str, Any], damage: str | None = None, checked: bool = True,
        unchecked: str | None = None,
    ) -> None:  # fmt: skip
        """One row; `damage`: what its check found; `unchecked`: why it could not be checked.

        Either way its contents are not printed, only its seq and the reason.
        """
        self.count += 1
        mark = NOT_CHECKED if not checked else (f"DAMAGED: {damage}" if damage else CHECKED)
        if unchecked:
            mark, damage = f"NOT CHECKED: {unchecked}", f"NOT CHECKED: {unchecked}"
        if self.form == "jsonl":
            if unchecked:
                self.out.write(_json({"seq": r["seq"], "not_checked": unchecked}) + "\n")
            elif damage:
                self.out.write(_json({"seq": r["seq"], "damaged": damage}) + "\n")
            else:
                self.out.write(_json(r["record"]) + "\n")
        elif self.form == "csv":
            if damage:
                self.csv.writerow([r["seq"], *[""] * (len(CSV_FIELDS) - 2), mark])
                return
            rec = r["record"]
            event = rec.get("event") if isinstance(rec.get("event"), dict) else {}
            cells = [
                r["seq"],
                rec.get("received_at") or "",
                _cell(event.get("timestamp")),
                r["kind"],
                r["event_type"] or "",
                r["action"] or "",
                _cell(event.get("user_id")),
                _cell(event.get("username") or event.get("user")),
                r["object_type"] or "",
                r["object_id"] or "",
                r["app"] or "",
                _json(rec.get("flags") or []),
                _json(event["old_value"]) if "old_value" in event else "",
                _json(event["new_value"]) if "new_value" in event else "",
                r["summary"],
                rec.get("hash", ""),
                _json(rec.get("event")) if "event" in rec else "",
                mark,
            ]
            self.csv.writerow([neutralise(c) if isinstance(c, str) else c for c in cells])
        else:
            when = ""
            if r["received_at"]:
                moment = dt.datetime.fromtimestamp(r["received_at"] / 1_000_000, tz=self.tz)
                when = moment.strftime("%Y-%m-%d %H:%M")
            if damage:
                label = "NOT CHECKED" if unchecked else "DAMAGED"
                self.out.write(_table_line((str(r["seq"]), when, label, "", "", damage)) + "\n")
                return
            what = (r["action"] or r["event_type"]) if r["kind"] == "event" else r["summary"]
            obj = ":".join(_cell(r[k]) for k in ("object_type", "object_id") if r[k])
            cells = (
                str(r["seq"]),
                when,
                _cell(what),
                _cell(r["username"] or r["user_id"]),
                obj,
                _cell(r["summary"]),
            )
            self.out.write(_table_line(cells) + "\n")


def write(
    rows: list[dict[str, Any]],
    form: str,
    out: TextIO,
    problems: dict[int, str] | None = None,
    tz: dt.tzinfo = dt.UTC,
    zone_note: str = "UTC",
) -> None:
    writer = Writer(form, out, tz, zone_note)
    for r in rows:
        writer.row(r, (problems or {}).get(r["seq"]), problems is not None)


def _table_line(cells: tuple[str, ...]) -> str:
    fixed = [_cut(c, w).ljust(w) for c, w in zip(cells, TABLE_WIDTHS, strict=False)]
    line = " ".join(fixed)
    rest = TABLE_WIDTH - len(line) - 1
    return (line + " " + _cut(cells[-1], max(14, rest))).rstrip()


def provenance(result: Result, checked: bool = False) -> str:
    """Where the rows came from, and whether they were checked: said with every query."""
    check = (
        "each row checked against the chain"
        if checked
        else "rows not checked against the chain (--no-check)"
    )
    if not result.index_present:
        return (
            f"from the ledger ({result.from_ledger} entries read; no index: run "
            f"`gateway reindex` or start the gateway); {check}"
        )
    return (
        f"from the index (to seq {result.indexed_to}) and {result.from_ledger} newer "
        f"entries read from the ledger; {check}"
    )


def change_lines(event: dict[str, Any]) -> list[str] | None:
    """The old_value -> new_value diff, one line per changed field; None: not an audit event."""
    if "old_value" not in event and "new_value" not in event:
        return None
    lines = []
    for op, path, old, new in diff(event.get("old_value"), event.get("new_value")):
        if op == "added":
            lines.append(f"+ {path}: {json.dumps(new, ensure_ascii=False)}")
        elif op == "removed":
            lines.append(f"- {path}: {json.dumps(old, ensure_ascii=False)}")
        else:
            lines.append(
                f"~ {path}: {json.dumps(old, ensure_ascii=False)} -> "
                f"{json.dumps(new, ensure_ascii=False)}"
            )
    return lines


def detail(record: dict[str, Any], tz: dt.tzinfo | None = None, zone_note: str = "") -> str:
    """One entry in full: every field, then a diff of old_value/new_value."""
    lines = [f"seq         {record['seq']}", f"kind        {record['kind']}"]
    lines.append(f"received_at {record.get('received_at')}")
    received = record.get("received_at")
    if tz is not None and isinstance(received, str):
        moment = dt.datetime.fromisoformat(received).astimezone(tz)
        lines.append(f"received    {moment.strftime('%Y-%m-%d %H:%M:%S %z')} in {zone_note}")
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
    changes = change_lines(event) if isinstance(event, dict) else None
    if changes is not None:
        lines.append("changes (old_value -> new_value):")
        lines += ["  " + line for line in changes] or ["  none"]
    return "\n".join(lines) + "\n"

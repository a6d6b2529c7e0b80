"""The console's HTML: pure functions from data to pages, every value escaped.

Nothing here reads a file or a socket. Every value that came from an event,
the configuration or a visitor goes through `e()` (html.escape with quotes),
and links are built only from our own paths and urlencoded parameters, so an
event holding `<script>` or `javascript:` is shown as text, never run or
followed. Pages work without JavaScript; /static/live.js only refreshes the
dashboard's figures (textContent, never HTML).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from gateway.audit.query import diff

# What each flag on an entry means, for the detail view.
FLAG_WORDS = {
    "missing_event_type": "the event has no event_type",
    "bad_event_type": "the event_type is not a non-empty string",
    "missing_timestamp": "the event has no timestamp of its own",
    "bad_timestamp": "the event's timestamp is not an RFC 3339 date-time",
    "clock_unsynced": "the gateway's clock was not synchronised when it was received",
    "redacted": "values were redacted before storing (card numbers or configured keys)",
    "late": "received out of time order (its receive time is before an earlier entry's)",
}

# The filter fields of the audit table, in the order of the form: (name, label).
FILTER_FIELDS = (
    ("event_type", "Event type"),
    ("action", "Action"),
    ("user_id", "User id"),
    ("username", "Username"),
    ("object_type", "Object type"),
    ("object_id", "Object id"),
    ("app", "App"),
    ("kind", "Kind"),
)
TIME_FIELDS = (
    ("since", "Received from"),
    ("until", "Received until"),
    ("event_since", "Event time from"),
    ("event_until", "Event time until"),
)


def e(value: Any) -> str:
    """Text for HTML: every <, >, &, " and ' escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def layout(
    title: str,
    body: str,
    user: str | None = None,
    role: str | None = None,
    csrf: str | None = None,
    refresh: int | None = None,
    script: bool = False,
) -> str:
    nav = ""
    if user:
        nav = (
            '<nav><a href="/">Dashboard</a> <a href="/audit">Audit trail</a> '
            '<a href="/verify">Verify</a> <a href="/printers">Printers</a> '
            '<a href="/reports">Reports</a>'
            + (' <a href="/accounts">Accounts</a>' if role == "admin" else "")
            + f'<span class="who">{e(user)} ({e(role)})</span>'
            '<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button type="submit">Log out</button></form></nav>'
        )
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    js = '<script src="/static/live.js" defer></script>' if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{e(title)} - Print Gateway</title>"
        f'<link rel="stylesheet" href="/static/style.css">{js}</head>'
        f"<body><header><h1>Print Gateway</h1>{nav}</header>"
        f"<main><h2>{e(title)}</h2>{body}</main></body></html>\n"
    )


def login_page(message: str = "", no_accounts: str = "") -> str:
    if no_accounts:
        body = (
            '<p class="bad">No account exists yet, so nobody can log in. On the box, '
            "create one:</p>"
            f"<pre>gateway user add NAME --role admin {e(no_accounts)}</pre>"
        )
        return layout("Log in", body)
    note = f'<p class="bad" role="alert">{e(message)}</p>' if message else ""
    body = (
        f'{note}<form method="post" action="/login" class="login">'
        '<label>Name <input name="name" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form>'
    )
    return layout("Log in", body)


def message_page(title: str, text: str, user=None, role=None, csrf=None) -> str:
    return layout(title, f"<p>{e(text)}</p>", user, role, csrf)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def live_figures(status: Mapping[str, Any], verify: Mapping[str, Any]) -> dict[str, str]:
    """The dashboard's figures as text, by key: the page and /api/status say the same."""
    ledger = status["ledger"]
    clock = status["clock"]
    figures = {
        "health": status["health"],
        "clock": "synchronised"
        if clock["synced"]
        else f"NOT synchronised for {clock['unsynced_for_s']:g} s",
        "free": _size(status.get("free_bytes")),
        "head_seq": str(ledger["head_seq"]),
        "head_hash": str(ledger["head_hash"]),
        "index_lag": f"{status['index']['lag']} entries"
        if status["index"]["enabled"]
        else "index off",
        "connections": str(status["connections"]),
        "events": f"{status['events']:,}",
        "rejected": f"{status['rejected']:,}",
        "rate": ", ".join(f"{k}: {v:g}/s" for k, v in status.get("ingest_rates", {}).items()),
        "commit": f"p50 {status['sync_ms']['p50']} ms, p99 {status['sync_ms']['p99']} ms",
        "ack_wait": f"p50 {status['ack_wait_ms']['p50']} ms, p99 {status['ack_wait_ms']['p99']} ms"
        f" over {status['ack_wait_ms']['samples']} commits in the last minute",
        "verify": verify.get("summary", "not run since start"),
        "verify_percent": f"{verify['percent']} %" if "percent" in verify else "",
    }
    for p in status.get("printers", []):
        figures[f"printer:{p['name']}"] = (
            f"{p['state']}, {p['queued']} queued, {p['printed']} printed"
            + (f", error: {p['error']}" if p.get("error") else "")
        )
    return figures


def dashboard(
    status: Mapping[str, Any],
    verify: Mapping[str, Any],
    security: Iterable[Mapping[str, Any]],
    fingerprint: str,
    user: str,
    role: str,
    csrf: str,
) -> str:
    f = live_figures(status, verify)
    bad = "" if status["health"] == "ok" else " bad"

    def row(key: str, label: str, cls: str = "") -> str:
        return (
            f'<tr><th>{e(label)}</th><td data-live="{e(key)}" class="{cls}">{e(f[key])}</td></tr>'
        )

    rows = [
        row("health", "Health", bad.strip()),
        row("clock", "Clock"),
        row("free", "Free disk"),
        row("head_seq", "Ledger head seq"),
        row("head_hash", "Ledger head hash", "hash"),
        row("verify", "Last verification"),
        row("index_lag", "Index lag"),
        row("connections", "Ingest connections"),
        row("events", "Events since start"),
        row("rejected", "Lines refused since start"),
        row("rate", "Ingest rate"),
        row("commit", "Commit time"),
        row("ack_wait", "Acknowledgement wait"),
    ]
    if fingerprint:
        rows.append(
            f'<tr><th>TLS certificate SHA-256</th><td class="hash">{e(fingerprint)}</td></tr>'
        )
    printers = (
        "".join(
            f'<tr><th>{e(p["name"])}</th><td data-live="printer:{e(p["name"])}">'
            f"{e(f['printer:' + p['name']])}</td></tr>"
            for p in status.get("printers", [])
        )
        or '<tr><td colspan="2">No printer is configured.</td></tr>'
    )
    events = (
        "".join(
            f"<tr><td>{e(s.get('when', ''))}</td><td>{e(s.get('what', ''))}</td>"
            f"<td>{e(s.get('source', ''))}</td></tr>"
            for s in security
        )
        or '<tr><td colspan="3">None recorded.</td></tr>'
    )
    body = (
        f'<table class="figures" id="figures">{"".join(rows)}</table>'
        "<h3>The last hour</h3>"
        '<p class="charts"><img src="/chart/ingest.svg" alt="ingest rate over the last hour" '
        'data-chart="/chart/ingest.svg" width="600" height="160">'
        '<img src="/chart/ack.svg" alt="acknowledgement wait p99 over the last hour" '
        'data-chart="/chart/ack.svg" width="600" height="160"></p>'
        f'<h3>Printers</h3><table class="figures">{printers}</table>'
        '<h3>Recent security events</h3><table class="list"><thead><tr><th>When</th>'
        f"<th>What</th><th>Source</th></tr></thead><tbody>{events}</tbody></table>"
        '<p class="note">Figures update every 5 seconds while JavaScript runs; '
        "reload the page otherwise.</p>"
    )
    return layout("Dashboard", body, user, role, csrf, script=True)


def _query(params: Mapping[str, str], **changes: Any) -> str:
    merged = {k: v for k, v in params.items() if v not in ("", None)}
    for k, v in changes.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = str(v)
    return urlencode(merged)


def audit_table(
    params: Mapping[str, str],
    rows: list[dict[str, Any]],
    problems: Mapping[int, str],
    total: int,
    capped: bool,
    page: int,
    per_page: int,
    zone_note: str,
    tz: dt.tzinfo,
    provenance: str,
    error: str,
    user: str,
    role: str,
    csrf: str,
) -> str:
    fields = "".join(
        f'<label>{e(label)} <input name="{name}" value="{e(params.get(name, ""))}"></label>'
        for name, label in FILTER_FIELDS
    )
    times = "".join(
        f'<label>{e(label)} <input name="{name}" value="{e(params.get(name, ""))}" '
        'placeholder="YYYY-MM-DD or RFC 3339"></label>'
        for name, label in TIME_FIELDS
    )
    flagged = " checked" if params.get("flagged") else ""
    order = params.get("order", "desc")
    form = (
        '<form method="get" action="/audit" class="filters">'
        f'<label>Search <input name="s" type="search" value="{e(params.get("s", ""))}"></label>'
        f"{fields}{times}"
        f'<label><input type="checkbox" name="flagged" value="1"{flagged}> Flagged only</label>'
        '<label>Order <select name="order">'
        f'<option value="desc"{" selected" if order == "desc" else ""}>newest first</option>'
        f'<option value="asc"{" selected" if order == "asc" else ""}>oldest first</option>'
        '</select></label><input type="hidden" name="orderby" value="seq">'
        '<button type="submit">Filter</button> <a href="/audit">Reset</a></form>'
    )
    if error:
        return layout(
            "Audit trail", form + f'<p class="bad" role="alert">{e(error)}</p>', user, role, csrf
        )
    first = (page - 1) * per_page + 1
    last = first + len(rows) - 1
    of = f"more than {total - 1:,}" if capped else f"{total:,}"
    shown = f"showing {first:,}-{last:,} of {of}" if rows else f"showing 0 of {of}"
    flip = "asc" if order == "desc" else "desc"
    arrow = "\u2193" if order == "desc" else "\u2191"
    head = (
        f'<th><a href="/audit?{e(_query(params, orderby="seq", order=flip, paged=None))}">'
        f"Seq {arrow}</a></th><th>Received ({e(zone_note)})</th><th>Kind</th>"
        "<th>Event / action</th><th>Who</th><th>Object</th><th>App</th><th>Summary</th>"
        "<th>Check</th>"
    )
    body_rows = []
    for r in rows:
        seq = r["seq"]
        when = ""
        if r.get("received_at"):
            moment = dt.datetime.fromtimestamp(r["received_at"] / 1_000_000, tz=tz)
            when = moment.strftime("%Y-%m-%d %H:%M:%S")
        problem = problems.get(seq)
        what = r["action"] or r["event_type"] or ""
        if r["event_type"] and r["action"]:
            what = f"{r['event_type']} / {r['action']}"
        obj = ":".join(str(r[k]) for k in ("object_type", "object_id") if r.get(k))
        who = r.get("username") or r.get("user_id") or ""
        check = f'<span class="bad">{e(problem)}</span>' if problem else "ok"
        body_rows.append(
            f'<tr><td><a href="/entry/{seq}">{seq}</a></td><td>{e(when)}</td>'
            f"<td>{e(r['kind'])}</td><td>{e(what)}</td><td>{e(who)}</td><td>{e(obj)}</td>"
            f"<td>{e(r.get('app') or '')}</td>"
            f"<td>{e('' if problem else r.get('summary', ''))}</td><td>{check}</td></tr>"
        )
    pages = max(1, -(-total // per_page)) if not capped else None
    nav = []
    if page > 1:
        nav.append(
            f'<a href="/audit?{e(_query(params, paged=page - 1))}" rel="prev">&lsaquo; Previous</a>'
        )
    nav.append(f"page {page:,}" + (f" of {pages:,}" if pages else ""))
    if last < total or (capped and len(rows) == per_page):
        nav.append(
            f'<a href="/audit?{e(_query(params, paged=page + 1))}" rel="next">Next &rsaquo;</a>'
        )
    exports = (
        f'<a href="/export.csv?{e(_query(params, paged=None))}">Export CSV</a> '
        f'<a href="/export.jsonl?{e(_query(params, paged=None))}">Export JSONL</a>'
        " (every matching row, each checked against the chain)"
    )
    body = (
        f'{form}<p class="shown" id="shown">{e(shown)}</p><p class="note">{e(provenance)}</p>'
        f'<div class="scroll"><table class="list" id="audit"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body_rows)}</tbody></table></div>"
        f'<p class="pages">{" | ".join(nav)}</p><p>{exports}</p>'
    )
    return layout("Audit trail", body, user, role, csrf)


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"<pre>{e(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True))}</pre>"
    return f"<code>{e(_json(value))}</code>"


def _local_time(received: Any, tz: dt.tzinfo, missing: str) -> str:
    """A record's `received_at` (RFC 3339, as the index gives it) in the zone; `missing`
    when it is not a string."""
    if not isinstance(received, str):
        return missing
    return dt.datetime.fromisoformat(received).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _lag_note(element_id: str, what: str, covered_to: int | None) -> str:
    if covered_to is None:
        return ""
    return (
        f'<p class="note" id="{element_id}">{what} after seq {int(covered_to)} were not '
        "looked at: the query index is far behind the ledger (or absent).</p>"
    )


def covering_reports(reports: list[dict[str, Any]], covered_to: int | None = None) -> str:
    """The numbered daily reports whose range holds an entry, with their anchors."""
    lag = _lag_note("reports-lag", "Report entries", covered_to)
    if not reports:
        return (
            '<h3>Daily reports</h3><p id="covering-reports" class="note">No daily report '
            "covers this entry yet.</p>" + lag
        )
    rows = "".join(
        f'<tr><td><a href="/entry/{int(r["seq"])}">{e(r.get("number"))}</a></td>'
        f"<td>{e(r.get('date'))}</td><td>{e(r.get('first_seq'))}-{e(r.get('last_seq'))}</td>"
        f'<td class="hash">{e(r.get("last_seq"))}:{e(str(r.get("last_hash") or "")[:16])}</td>'
        f"<td>{e(r.get('printer'))}</td></tr>"
        for r in reports
    )
    return (
        '<h3>Daily reports</h3><table class="list" id="covering-reports"><thead><tr>'
        "<th>Number</th><th>Day</th><th>Seqs</th><th>Anchor (seq:hash)</th><th>Printer</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>" + lag
    )


def print_outcomes(
    outcomes: list[dict[str, Any]], tz: dt.tzinfo, zone_note: str, covered_to: int | None = None
) -> str:
    """The `print` entries of an entry's jobs: time, printer, job type, outcome."""
    lag = _lag_note("outcomes-lag", "Print entries", covered_to)
    if not outcomes:
        return (
            '<h3>Print outcomes</h3><p id="outcomes" class="note">No print entry names this '
            "entry: nothing was printed for it (yet), or no route sends it to a printer.</p>" + lag
        )
    rows = []
    for r in outcomes:
        when = _local_time(r.get("received_at"), tz, "-")
        outcome = str(r.get("outcome"))
        cls = "good" if outcome == "printed" else "bad"
        uncertain = " (delivery uncertain)" if r.get("uncertain") else ""
        rows.append(
            f'<tr><td><a href="/entry/{int(r["seq"])}">{int(r["seq"])}</a></td>'
            f"<td>{e(when)}</td><td>{e(r.get('printer'))}</td><td>{e(r.get('type'))}</td>"
            f'<td class="{cls}">{e(outcome)}{e(uncertain)}</td>'
            f"<td>{e(r.get('attempts'))}</td><td>{e(r.get('detail') or '')}</td></tr>"
        )
    return (
        f'<h3>Print outcomes</h3><p class="note">Times in {e(zone_note)}.</p>'
        '<table class="list" id="outcomes"><thead><tr><th>Entry</th><th>Time</th>'
        "<th>Printer</th><th>Job</th><th>Outcome</th><th>Attempts</th><th>Detail</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>" + lag
    )


def entry_detail(
    record: dict[str, Any],
    check: str,
    tz: dt.tzinfo,
    zone_note: str,
    may_print: bool,
    user: str,
    role: str,
    csrf: str,
    outcomes: list[dict[str, Any]] | None = None,
    outcomes_to: int | None = None,
    reports: list[dict[str, Any]] | None = None,
    reports_to: int | None = None,
) -> str:
    """One entry: its fields, the diff, its print outcomes and the daily reports
    that cover it (`outcomes`, `reports`: None leaves a section out; `*_to`: the
    lookup stopped at that seq, the index being far behind)."""
    seq = record["seq"]
    rows = [
        f"<tr><th>Seq</th><td>{seq}</td></tr>",
        f"<tr><th>Kind</th><td>{e(record['kind'])}</td></tr>",
    ]
    received = record.get("received_at")
    if isinstance(received, str):
        local = dt.datetime.fromisoformat(received).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %z")
        rows.append(
            f"<tr><th>Received</th><td>{e(local)} ({e(zone_note)}); {e(received)}</td></tr>"
        )
    rows.append(f'<tr><th>Hash</th><td class="hash">{e(record.get("hash"))}</td></tr>')
    rows.append(f"<tr><th>Chain check</th><td>{e(check)}</td></tr>")
    source = record.get("source")
    if isinstance(source, dict):
        auth = "authenticated" if source.get("authenticated") else "not authenticated"
        rows.append(
            f"<tr><th>Source</th><td>app {e(source.get('app') or '-')}, address "
            f"{e(source.get('addr') or source.get('address') or '-')}, {auth}"
            f"<br>{_value(source)}</td></tr>"
        )
    flags = record.get("flags") or []
    flag_text = (
        "".join(
            f"<li><code>{e(f)}</code>: {e(FLAG_WORDS.get(f, 'see docs/audit.md'))}</li>"
            for f in flags
        )
        or "<li>none</li>"
    )
    rows.append(f"<tr><th>Flags</th><td><ul>{flag_text}</ul></td></tr>")
    skip = {"seq", "kind", "received_at", "hash", "source", "flags"}
    event = record.get("event")
    if isinstance(event, dict):
        for key, value in event.items():
            rows.append(f"<tr><th>event.{e(key)}</th><td>{_value(value)}</td></tr>")
        skip.add("event")
    for key, value in record.items():
        if key not in skip:
            rows.append(f"<tr><th>{e(key)}</th><td>{_value(value)}</td></tr>")
    body = f'<table class="figures" id="fields">{"".join(rows)}</table>'
    if isinstance(event, dict) and ("old_value" in event or "new_value" in event):
        changes = diff(event.get("old_value"), event.get("new_value"))
        lines = (
            "".join(
                f'<tr class="{op}"><td>{op}</td><td><code>{e(path)}</code></td>'
                f"<td>{'' if op == 'added' else _value(old)}</td>"
                f"<td>{'' if op == 'removed' else _value(new)}</td></tr>"
                for op, path, old, new in changes
            )
            or '<tr><td colspan="4">old and new values are the same</td></tr>'
        )
        body += (
            '<h3>Changes (old_value to new_value)</h3><table class="list" id="diff"><thead>'
            f"<tr><th>Change</th><th>Field</th><th>Old</th><th>New</th></tr></thead>"
            f"<tbody>{lines}</tbody></table>"
        )
    if outcomes is not None:
        body += print_outcomes(outcomes, tz, zone_note, outcomes_to)
    if reports is not None:
        body += covering_reports(reports, reports_to)
    if may_print and record["kind"] == "event":
        body += (
            f'<form method="post" action="/entry/{seq}/reprint">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button type="submit">Reprint receipt</button></form>'
        )
    body += '<p><a href="/audit">Back to the audit trail</a></p>'
    return layout(f"Entry {seq}", body, user, role, csrf)


def verify_page(state: Mapping[str, Any], user: str, role: str, csrf: str) -> str:
    running = state.get("running")
    body = ""
    if running:
        percent = int(state.get("percent", 0))
        body += (
            f'<p id="verify-state">Verification running: {percent} % of '
            f"{_size(state.get('total_bytes', 0))} in {state.get('total', 0)} segments "
            f"checked, {state.get('elapsed', 0):.1f} s so far.</p>"
            f'<p><progress id="verify-progress" max="100" value="{percent}">{percent} %</progress> '
            f'<span id="verify-percent">{percent} %</span></p>'
            '<p class="note">This page reloads every 2 seconds; the gateway keeps ingesting.</p>'
        )
    elif state.get("summary"):
        cls = "good" if state.get("ok") else "bad"
        percent = int(state.get("percent", 100))
        body += (
            f'<p><progress id="verify-progress" max="100" value="{percent}">{percent} %</progress> '
            f'<span id="verify-percent">{percent} %</span></p>'
            f'<p id="verify-state" class="{cls}">{e(state["summary"])}</p>'
        )
        if state.get("by"):
            body += f'<p class="note">Run by {e(state["by"])} at {e(state.get("at", ""))}.</p>'
        body += (
            '<p><a href="/verify/statement.html">Verification statement (HTML)</a> '
            '<a href="/verify/statement.txt">(text)</a></p>'
        )
    else:
        body += '<p id="verify-state">No verification has run since the gateway started.</p>'
    if not running:
        body += (
            '<form method="post" action="/verify">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            "<label>Anchors from paper, one a line (SEQ:HASH, optional)<br>"
            '<textarea name="anchors" rows="3" cols="40"></textarea></label><br>'
            '<button type="submit" id="verify-start">Verify the whole ledger</button></form>'
        )
    for a in state.get("anchors", []):
        body += f"<p>{e(a)}</p>"
    return layout("Verify", body, user, role, csrf, refresh=2 if running else None)


def printers_page(
    status: Mapping[str, Any], may_print: bool, message: str, user: str, role: str, csrf: str
) -> str:
    rows = []
    for p in status.get("printers", []):
        action = ""
        if may_print:
            action = (
                '<form method="post" action="/printers/test-page" class="inline">'
                f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                f'<input type="hidden" name="printer" value="{e(p["name"])}">'
                '<button type="submit">Print test page</button></form>'
            )
        rows.append(
            f"<tr><td>{e(p['name'])}</td><td>{e(p['uri'])}</td><td>{e(p['state'])}</td>"
            f"<td>{p['queued']}</td><td>{p['printed']}</td><td>{e(p.get('error') or '')}</td>"
            f"<td>{action}</td></tr>"
        )
    table = (
        '<div class="scroll"><table class="list" id="printers"><thead><tr><th>Printer</th>'
        "<th>URI</th><th>State</th><th>Queued</th><th>Printed</th><th>Last error</th><th></th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else "<p>No printer is configured.</p>"
    )
    note = f'<p class="good" role="status" id="printer-message">{e(message)}</p>' if message else ""
    reports = ""
    if status.get("report_number") is not None:
        reports = (
            f"<p>Last daily report: number {e(status.get('report_number'))} of "
            f"{e(status.get('report_date') or '-')}.</p>"
        )
    if not may_print:
        reports += '<p class="note">Printing needs the operator or admin role.</p>'
    return layout("Printers", note + table + reports, user, role, csrf)


def _role_select(name: str, selected: str = "") -> str:
    options = "".join(
        f'<option value="{r}"{" selected" if r == selected else ""}>{r}</option>'
        for r in ("auditor", "operator", "admin")
    )
    return f'<select name="{e(name)}" aria-label="role">{options}</select>'


def accounts_page(
    accounts: list[Any],
    message: str,
    error: str,
    user: str,
    role: str,
    csrf: str,
    logins: Mapping[str, Mapping[str, Any] | None] | None = None,
    tz: dt.tzinfo = dt.UTC,
    zone_note: str = "UTC",
) -> str:
    """Every account with its last login and forms to change its role, set its
    password, remove it; and a form to add one. Only admins get here (app.py).
    `logins`: each account's last `web_login` entry, None for one older than what
    was read (gateway/web/related.py); `logins` None: not looked up."""

    def last_login(name: str) -> str:
        if logins is None:
            return ""
        if name not in logins:
            return "never"
        record = logins[name]
        if record is None:
            from gateway.web.related import MAX_LOGIN_ROWS

            return f"before its last {MAX_LOGIN_ROWS} console actions"
        when = _local_time(record.get("received_at"), tz, "?")
        source = record.get("detail", {}).get("source", "")
        return f'<a href="/entry/{int(record["seq"])}">{e(when)}</a> from {e(source)}'

    token = f'<input type="hidden" name="csrf" value="{e(csrf)}">'

    def form(action: str, name: str, inner: str, button: str) -> str:
        return (
            f'<form method="post" action="/accounts/{action}" class="inline">{token}'
            f'<input type="hidden" name="name" value="{e(name)}">{inner}'
            f'<button type="submit">{button}</button></form>'
        )

    rows = []
    for a in accounts:
        pw = (
            '<input type="password" name="password" aria-label="new password" '
            'autocomplete="new-password" placeholder="new password" required>'
            '<input type="password" name="password2" aria-label="new password again" '
            'autocomplete="new-password" placeholder="again" required>'
        )
        rows.append(
            f'<tr data-account="{e(a.name)}"><td>{e(a.name)}</td><td>{e(a.role)}</td>'
            f'<td>{e(a.created or "-")}</td><td class="login">{last_login(a.name)}</td>'
            f"<td>{form('role', a.name, _role_select('role', a.role), 'Set role')}</td>"
            f"<td>{form('password', a.name, pw, 'Set password')}</td>"
            f"<td>{form('remove', a.name, '', 'Remove')}</td></tr>"
        )
    table = (
        '<div class="scroll"><table class="list" id="accounts"><thead><tr><th>Name</th>'
        "<th>Role</th><th>Created (UTC)</th>"
        f"<th>Last login ({e(zone_note)})</th><th>New role</th><th>New password</th><th></th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    note = f'<p class="good" role="status" id="account-message">{e(message)}</p>' if message else ""
    if error:
        note += f'<p class="bad" role="alert" id="account-error">{e(error)}</p>'
    add = (
        '<h3>Add an account</h3><form method="post" action="/accounts/add" id="account-add">'
        f"{token}"
        '<label>Name <input name="name" autocomplete="off" required></label> '
        f"<label>Role {_role_select('role', 'auditor')}</label> "
        '<label>Password <input type="password" name="password" autocomplete="new-password" '
        "required></label> "
        '<label>Again <input type="password" name="password2" autocomplete="new-password" '
        "required></label> "
        '<button type="submit">Add</button></form>'
        '<p class="note">A password is 10 to 1,024 characters. A new role, a new password '
        "or a removal ends the account's sessions; the last admin cannot be demoted or "
        "removed here. Every change is recorded in the ledger.</p>"
    )
    return layout("Accounts", note + table + add, user, role, csrf)


# Charts: a fixed 600 x 160 drawing (it scales with the page), the last hour.
CHART_W, CHART_H, CHART_PAD = 600, 160, 30
CHART_SPAN_S = 3600


def chart_svg(points: list[tuple[float, float]], title: str, unit: str) -> str:
    """A line chart as SVG: (seconds ago, value) points over the last hour, newest right."""
    w, h, pad = CHART_W, CHART_H, CHART_PAD
    top = max((v for _, v in points), default=0.0) or 1.0
    coords = " ".join(
        f"{pad + (w - 2 * pad) * (1 - ago / CHART_SPAN_S):.1f},"
        f"{h - pad - (h - 2 * pad) * (v / top):.1f}"
        for ago, v in points
        if 0 <= ago <= CHART_SPAN_S
    )
    last = f"{points[-1][1]:,.1f} {unit}" if points else "no samples yet"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        f'height="{h}" font-family="sans-serif" font-size="11">'
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>'
        f'<text x="{pad}" y="16" font-size="12" font-weight="bold">{e(title)}: {e(last)}</text>'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#8c8f94"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#8c8f94"/>'
        f'<text x="{pad + 2}" y="{pad - 2}">{e(f"{top:,.1f}")} {e(unit)}</text>'
        f'<text x="{pad}" y="{h - 10}">60 min ago</text>'
        f'<text x="{w - pad}" y="{h - 10}" text-anchor="end">now</text>'
        + (
            f'<polyline fill="none" stroke="#2271b1" stroke-width="2" points="{coords}"/>'
            if coords
            else ""
        )
        + "</svg>\n"
    )


def reports_page(
    records: list[dict[str, Any]], may_print: bool, message: str, user: str, role: str, csrf: str
) -> str:
    """The numbered daily reports, newest first, each with its anchor (last seq and hash)."""
    rows = []
    for r in records:
        seq = r.get("seq")
        number = r.get("number")
        anchor = f"{r.get('last_seq')}:{str(r.get('last_hash') or '')[:16]}"
        action = ""
        if may_print and r.get("date"):
            action = (
                '<form method="post" action="/reports/print" class="inline">'
                f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                f'<input type="hidden" name="date" value="{e(r.get("date"))}">'
                '<button type="submit">Print again (new number)</button></form>'
            )
        rows.append(
            f'<tr><td><a href="/entry/{e(seq)}">{e(number)}</a></td><td>{e(r.get("date"))}</td>'
            f"<td>{e(r.get('first_seq'))}-{e(r.get('last_seq'))}</td><td>{e(r.get('count'))}</td>"
            f'<td class="hash">{e(anchor)}</td><td>{e(r.get("printer"))}</td>'
            f"<td>{e(r.get('requested_by'))}</td><td>{action}</td></tr>"
        )
    note = f'<p class="good" role="status" id="report-message">{e(message)}</p>' if message else ""
    table = (
        '<div class="scroll"><table class="list" id="reports"><thead><tr><th>Number</th>'
        "<th>Day</th><th>Seqs</th><th>Entries</th><th>Anchor (seq:hash)</th><th>Printer</th>"
        f"<th>Requested by</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else "<p>No daily report has been made yet.</p>"
    )
    body = (
        note
        + table
        + (
            '<p class="note">Each report\'s anchor is on its paper: `gateway verify --expect` '
            "or the Verify page checks it against the chain.</p>"
        )
    )
    if may_print:
        body += (
            '<form method="post" action="/reports/print">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<label>Day <input name="date" placeholder="YYYY-MM-DD" required></label> '
            '<button type="submit">Make and print the report of this day</button></form>'
        )
    return layout("Daily reports", body, user, role, csrf)

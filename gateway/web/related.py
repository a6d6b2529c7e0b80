"""What the query index says about one entry or account, for the console's pages.

Run on the pages' worker thread (app.py's `Work`), each a bounded read of the
index (gateway/audit/query.py) with the ledger's unindexed tail read up to
MAX_TAIL entries:

- `find_outcomes(state_dir, seq)`: the `print` entries whose job printed entry
  `seq` (its receipt, reprints, a report's range, a request entry's own job);
- `covering_reports(state_dir, seq)`: the numbered daily reports whose range
  holds entry `seq`;
- `entry_lookups(state_dir, seq)`: both, over one view (the detail page: the
  unindexed tail is read once);
- `last_logins(state_dir, names)`: each account's latest `web_login` entry (the
  accounts file is not written at every login; the ledger has them anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.audit.query import Filters, QueryView

# The print outcomes a detail page shows, at most: a receipt on a few printers
# and its reprints are a handful; bounded work for an entry printed very often.
MAX_OUTCOMES = 50
# A lookup reads at most this many entries the index has not taken yet (tens of
# ms); further ones are not looked at and the page says so (an index far
# behind, or none).
MAX_TAIL = 10_000
# Report entries looked at after an entry for the reports that cover it: one
# a day and a few reprints is years of reports; a reprint of a day older than
# that is found on the Reports page.
MAX_REPORTS = 2_000
# `web_login` entries looked at per account, newest first, for its last login
# (the phrase search also finds the account's exports, verifies and printer
# actions, which are skipped).
MAX_LOGIN_ROWS = 50


@dataclasses.dataclass
class Found:
    rows: list[dict[str, Any]]  # the records found, oldest first
    covered_to: int  # entries up to this seq were looked at
    cut: bool  # more entries than that exist: the index lags (or there is none)


def find_outcomes(state_dir: Path, seq: int) -> Found:
    """The `print` entries whose job covers entry `seq`, oldest first (docs/printing.md).

    A receipt's or reprint's `print` entry lists the event as `seqs[0]`, a
    report's its range `[first, last]`; a job queued by a request entry
    (reprint, report, status page) is `<its seq>/<printer>`. Both are found in
    the query index's full text (the phrases `seqs N` and `job N`: the entry's
    JSON there reads `"job": "N/printer"` and `"seqs": [N`), after `seq` only
    (a job ends after the entry that queued it), then checked field by field.
    """
    with QueryView(state_dir, MAX_TAIL) as view:
        return _outcomes(view, seq)


def covering_reports(state_dir: Path, seq: int) -> Found:
    """The `report` entries whose range [first_seq, last_seq] holds `seq`, oldest
    first: a report is recorded after the day it covers, so only report entries
    after `seq` are read, at most MAX_REPORTS of them."""
    with QueryView(state_dir, MAX_TAIL) as view:
        return _reports(view, seq)


def entry_lookups(state_dir: Path, seq: int) -> tuple[Found, Found]:
    """(find_outcomes, covering_reports) of entry `seq`, from one view."""
    with QueryView(state_dir, MAX_TAIL) as view:
        return _outcomes(view, seq), _reports(view, seq)


def _outcomes(view: QueryView, seq: int) -> Found:
    found: dict[int, dict[str, Any]] = {}
    for phrase in (f"seqs {seq}", f"job {seq}"):
        f = Filters(kind="print", text=phrase, limit=MAX_OUTCOMES, order="asc", after_seq=seq)
        for r in view.page(f):
            record = r["record"]
            if covers(record, seq):
                found[r["seq"]] = record
    rows = [found[s] for s in sorted(found)][:MAX_OUTCOMES]
    return Found(rows, view.covered_to, view.tail_cut)


def _reports(view: QueryView, seq: int) -> Found:
    found = []
    f = Filters(kind="report", limit=MAX_REPORTS, order="asc", after_seq=seq)
    for r in view.page(f):
        record = r["record"]
        first, last = record.get("first_seq"), record.get("last_seq")
        if isinstance(first, int) and isinstance(last, int) and first <= seq <= last:
            found.append(record)
    return Found(found, view.covered_to, view.tail_cut)


def covers(record: dict[str, Any], seq: int) -> bool:
    """Whether a `print` entry's job printed entry `seq`."""
    if str(record.get("job", "")).split("/", 1)[0] == str(seq):
        return True
    seqs = record.get("seqs")
    if not isinstance(seqs, list) or not seqs or not all(isinstance(s, int) for s in seqs):
        return False
    if record.get("type") == "report":
        return seqs[0] <= seq <= seqs[-1]
    return seqs[0] == seq


def last_logins(state_dir: Path, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Each named account's latest `web_login` entry (its `received_at`, role and
    source in `detail`); None where the newest MAX_LOGIN_ROWS entries naming the
    account hold no login (it is older); an account with none is left out."""
    found: dict[str, dict[str, Any] | None] = {}
    with QueryView(state_dir, MAX_TAIL) as view:
        for name in names:
            f = Filters(kind="system", text=f"account {name}", limit=MAX_LOGIN_ROWS, order="desc")
            rows = view.page(f)
            for r in rows:
                record = r["record"]
                detail = record.get("detail")
                if (
                    record.get("name") == "web_login"
                    and isinstance(detail, dict)
                    and detail.get("account") == name
                ):
                    found[name] = record
                    break
            else:
                if len(rows) == MAX_LOGIN_ROWS:
                    found[name] = None
    return found

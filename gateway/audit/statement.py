"""The verification statement `gateway verify --statement FILE` writes for an auditor's file.

Plain text, or with a FILE ending in .html a page that prints on A4 and
Letter alike (docs/audit.md, "The verification statement"): what was checked,
the verdict, the anchors and when, in the gateway's zone.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass

# The plain text statement's paragraphs fit a terminal and a printed page.
TEXT_WIDTH = 78

# What a statement proves and does not, printed on every one (docs/audit.md).
PROVES = (
    "Every entry in the range was re-hashed from its stored bytes: each chain hash follows "
    "from the entry's bytes and the hash before it, from the ledger identity to the head. "
    "Any later change, removal or reordering of an entry in the range would have changed "
    "the head hash or failed the check."
)
DOES_NOT = (
    "It does not show that the ledger identity and the head are the genuine ones: a ledger "
    "rebuilt from scratch verifies too. Compare the head and the anchors with copies kept "
    "off the box (daily reports, receipts, an earlier statement). It says nothing of events "
    "never sent to the gateway. It is not signed: this gateway has no signing key."
)


@dataclass(frozen=True)
class Statement:
    gateway: str  # the gateway's name
    version: str
    state_dir: str
    identity: str  # "seq 1 hash ..." or the retained checkpoint started from
    checked: str  # the range, entry and segment counts
    head: str
    verdict: str  # "INTACT" or "DAMAGED: ..."
    anchors: list[str]  # one line per anchor with its outcome
    at: str  # the time, with its zone
    command: str

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("gateway", f"{self.gateway} (gateway {self.version})"),
            ("state directory", self.state_dir),
            ("ledger identity", self.identity),
            ("range checked", self.checked),
            ("head", self.head),
            ("result", self.verdict),
            ("anchors", "\n".join(self.anchors) or "none given"),
            ("checked at", self.at),
            ("command", self.command),
            ("signature", "not signed (no signing key on this gateway)"),
        ]


def as_text(s: Statement) -> str:
    lines = ["Ledger verification statement", ""]
    for label, value in s.rows():
        first, *rest = value.splitlines() or [""]
        lines.append(f"{label:<16} {first}")
        lines += [" " * 17 + more for more in rest]
    lines += ["", "What this proves", *textwrap.wrap(PROVES, TEXT_WIDTH)]
    lines += ["", "What it does not", *textwrap.wrap(DOES_NOT, TEXT_WIDTH), ""]
    lines += ["Received by (name, signature, date):", "", "_" * 40, ""]
    return "\n".join(lines)


# Fits the printable width of both A4 (210 mm) and Letter (216 mm) with 18 mm
# margins; hashes wrap anywhere instead of running off the page.
CSS = """
@page { margin: 18mm; }
body { font: 10.5pt/1.4 sans-serif; max-width: 174mm; margin: 0 auto; color: #000; }
h1 { font-size: 15pt; margin: 0 0 8pt; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; vertical-align: top; width: 32mm; padding: 3pt 6pt 3pt 0; }
td { padding: 3pt 0; font-family: monospace; overflow-wrap: anywhere; white-space: pre-wrap; }
tr { border-bottom: 0.5pt solid #999; page-break-inside: avoid; }
.sign { margin-top: 18mm; border-top: 0.5pt solid #000; width: 80mm; padding-top: 2pt; }
"""


def as_html(s: Statement) -> str:
    esc = html.escape
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in s.rows())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>Ledger verification statement: {esc(s.gateway)}</title>\n"
        f"<style>{CSS}</style></head><body>\n"
        "<h1>Ledger verification statement</h1>\n"
        f"<table>\n{rows}\n</table>\n"
        f"<h2>What this proves</h2><p>{esc(PROVES)}</p>\n"
        f"<h2>What it does not</h2><p>{esc(DOES_NOT)}</p>\n"
        '<p class="sign">Received by (name, signature, date)</p>\n'
        "</body></html>\n"
    )

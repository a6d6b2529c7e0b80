"""The document model and its layout into lines, shared by every printer language.

Event data reaches paper only through `clean()`, which removes every control
character (C0, DEL, C1) and so every escape sequence: ESC/POS, PCL and PJL
commands all start with a control byte (ESC, GS, DLE, FS, or PJL's UEL, which
begins with ESC). What remains is plain text in every language.
"""

from __future__ import annotations

import textwrap
import unicodedata
from dataclasses import dataclass

# Characters shown instead of control characters in event data. A visible mark
# (not silence) so that a reader of the paper sees that something was removed.
REPLACEMENT = "?"


def clean(value: object) -> str:
    """Event data to printable text: no control characters, tabs and newlines folded."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in "\t\n\r":
            out.append(" ")
        elif ch.isprintable() or unicodedata.category(ch) == "Zs":
            out.append(ch)
        else:
            out.append(REPLACEMENT)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Heading:
    text: str


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    bold: bool = False


@dataclass(frozen=True, slots=True)
class Field:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Rule:
    pass


@dataclass(frozen=True, slots=True)
class Table:
    """Rows printed one per line, tab-separated, never wrapped (report rows)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Anchor:
    """The paper anchor: seq and chain hash (a QR code where the language has one)."""

    seq: int
    hash_hex: str


@dataclass(frozen=True)
class Document:
    title: str  # job name (PJL) and file name hint
    blocks: tuple = ()
    paginate: bool = False  # page breaks and "page k of n" footers (reports)
    footer: str = ""  # printed at the foot of every page when paginated


# ---- layout: blocks to lines


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    style: str = "normal"  # normal | bold | heading


@dataclass(frozen=True, slots=True)
class QR:
    data: str


@dataclass(frozen=True, slots=True)
class PageBreak:
    pass


def layout(doc: Document, width: int, page_lines: int | None) -> list:
    """Lay the document out as Line / QR / PageBreak items.

    Wrapped to `width` except table rows; with pagination, a footer line and a
    PageBreak after every `page_lines` lines (the last page included).
    """
    lines: list = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines.extend(Line(t, "heading") for t in _wrap(clean(block.text), width))
        elif isinstance(block, Text):
            style = "bold" if block.bold else "normal"
            lines.extend(Line(t, style) for t in _wrap(clean(block.text), width))
        elif isinstance(block, Field):
            lines.extend(
                Line(t) for t in _wrap(f"{clean(block.label)}: {clean(block.value)}", width)
            )
        elif isinstance(block, Rule):
            lines.append(Line("-" * width))
        elif isinstance(block, Table):
            lines.append(Line("\t".join(clean(c) for c in block.header), "bold"))
            lines.extend(Line("\t".join(clean(c) for c in row)) for row in block.rows)
        elif isinstance(block, Anchor):
            lines.append(Line(f"seq {block.seq}  hash {block.hash_hex[:16]}", "bold"))
            lines.append(QR(f"{block.seq}:{block.hash_hex}"))
        else:
            raise TypeError(f"unknown block {block!r}")
    if not doc.paginate or not page_lines:
        return [*lines, PageBreak()]
    body = max(1, page_lines - 2)  # room for a blank line and the footer
    pages = [lines[i : i + body] for i in range(0, len(lines), body)] or [[]]
    out: list = []
    for number, page in enumerate(pages, 1):
        out.extend(page)
        out.append(Line(""))
        out.append(Line(f"{clean(doc.footer)}  page {number} of {len(pages)}".strip()))
        out.append(PageBreak())
    return out


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, replace_whitespace=False) or [""]

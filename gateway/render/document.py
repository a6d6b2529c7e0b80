"""The document model and its layout into lines, shared by every printer language.

Event data reaches paper only through `clean()`, which removes every control
character (C0, DEL, C1) and so every escape sequence: ESC/POS, PCL and PJL
commands all start with a control byte (ESC, GS, DLE, FS, or PJL's UEL, which
begins with ESC). What remains is plain text in every language.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Characters shown instead of control characters in event data. A visible mark
# (not silence) so that a reader of the paper sees that something was removed.
REPLACEMENT = "?"
# Ends a line where a token longer than the line (a 64-digit hash, a UUID at 32
# columns) was split: ASCII, so every printer has it, and never part of a hash
# or an identifier's usual alphabet, so a reader sees the token goes on.
CONTINUED = "\\"
# A token longer than a line starts on the line before it when at least this
# many of its characters fit there; fewer would read as a stray fragment.
MIN_SPLIT = 6


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
class Item:
    """A line indented by `indent`, wrapped with its continuation lines indented 2 more."""

    text: str
    indent: int = 2
    bold: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """Fixed columns (each padded to its width, two spaces apart), then text in the rest.

    The text wraps under itself. If the columns leave it fewer than 12
    columns, the row is one wrapped line with single spaces.
    """

    cells: tuple[str, ...]
    widths: tuple[int, ...]
    text: str
    bold: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    pass


@dataclass(frozen=True, slots=True)
class Table:
    """Rows in fixed columns where they fit the width; else one row as a few lines.

    Columns are two spaces apart; the last column takes the rest of the line
    and wraps under itself. When the other columns do not leave it 8 columns,
    each row is its first cell, then `header: value` lines indented under it.
    """

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
    """Lay the document out as Line / QR / PageBreak items, no line wider than `width`.

    With pagination, the footer and "page k of n" close every page, each
    `page_lines` long (the last page included); without a page length (a
    receipt roll), the whole document is one page.
    """
    lines: list = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines.extend(Line(t, "heading") for t in wrap(clean(block.text), width))
        elif isinstance(block, Text):
            style = "bold" if block.bold else "normal"
            lines.extend(Line(t, style) for t in wrap(clean(block.text), width))
        elif isinstance(block, Field):
            text = f"{clean(block.label)}: {clean(block.value)}"
            lines.extend(Line(t) for t in wrap(text, width, 2))
        elif isinstance(block, Item):
            indent = min(block.indent, max(0, width // 4))
            style = "bold" if block.bold else "normal"
            for t in wrap(clean(block.text), width - indent, 2):
                lines.append(Line(" " * indent + t, style))
        elif isinstance(block, Row):
            lines.extend(_row(block, width))
        elif isinstance(block, Rule):
            lines.append(Line("-" * width))
        elif isinstance(block, Table):
            lines.extend(_table(block, width))
        elif isinstance(block, Anchor):
            text = f"seq {block.seq}  hash {block.hash_hex[:16]}"
            if columns(text) <= width:
                lines.append(Line(text, "bold"))
            else:  # the short hash on a line of its own
                for part in (f"seq {block.seq}  hash", block.hash_hex[:16]):
                    fits = columns(part) <= width
                    lines.extend(Line(t, "bold") for t in ([part] if fits else wrap(part, width)))
            lines.append(QR(f"{block.seq}:{block.hash_hex}"))
        else:
            raise TypeError(f"unknown block {block!r}")
    if not doc.paginate:
        return [*lines, PageBreak()]
    footer = [Line(t) for t in wrap(clean(doc.footer), width)] if doc.footer else []
    # Room for a blank line, the footer and "page k of n" at the foot of each page.
    body = max(1, (page_lines or len(lines) + len(footer) + 2) - len(footer) - 2)
    pages = [lines[i : i + body] for i in range(0, len(lines), body)] or [[]]
    out: list = []
    for number, page in enumerate(pages, 1):
        out.extend(page)
        out.append(Line(""))
        out.extend(footer)
        out.append(Line(f"page {number} of {len(pages)}"))
        out.append(PageBreak())
    return out


def columns(text: str) -> int:
    """Columns `text` may take on a fixed-pitch printer or terminal: wide East Asian
    characters 2, every other 1. (A combining mark takes none on a terminal,
    but a printer's code page without it prints "?" in its place: 1 is the
    width that holds on both.)"""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _fit(token: str, room: int) -> int:
    """How many characters of `token` fit in `room` columns (at least one)."""
    used = 0
    for i, ch in enumerate(token):
        used += columns(ch)
        if used > room:
            return max(1, i)
    return len(token)


def wrap(text: str, width: int, indent: int = 0) -> list[str]:
    """Words onto lines of at most `width` columns; later lines indented by `indent`.

    A word longer than a line is split, each piece but the last ending in
    CONTINUED, so a reader sees it goes on.
    """
    width = max(2, width)
    if indent > width // 2:
        indent = 0
    lines: list[str] = []
    line = ""
    for word in text.split():
        prefix = "" if not lines else " " * indent
        candidate = f"{line} {word}" if line else word
        if columns(prefix + candidate) <= width:
            line = candidate
            continue
        if columns(" " * indent + word) > width and line:
            # Longer than any line: start it here, after the words before it.
            room = width - columns(prefix + line) - 1 - len(CONTINUED)
            if room >= MIN_SPLIT:
                n = _fit(word, room)
                lines.append(f"{prefix}{line} {word[:n]}{CONTINUED}")
                line, word = "", word[n:]
        if line:
            lines.append(prefix + line)
            line = ""
        prefix = "" if not lines else " " * indent
        while columns(prefix + word) > width:
            n = _fit(word, width - columns(prefix) - len(CONTINUED))
            lines.append(prefix + word[:n] + CONTINUED)
            word = word[n:]
            prefix = " " * indent
        line = word
    if line or not lines:
        lines.append(("" if not lines else " " * indent) + line)
    return lines


# The least room a Row leaves its text before it gives up its columns.
ROW_TEXT_MIN = 12


def _row(row: Row, width: int) -> list[Line]:
    style = "bold" if row.bold else "normal"
    cells = [clean(c) for c in row.cells]
    widths = [max(w, columns(c)) for c, w in zip(cells, row.widths, strict=True)]
    lead = "".join(_pad(c, w) + "  " for c, w in zip(cells, widths, strict=True))
    room = width - columns(lead)
    if room < ROW_TEXT_MIN:
        return [Line(t, style) for t in wrap(" ".join([*cells, clean(row.text)]), width, 2)]
    pieces = wrap(clean(row.text), room)
    out = [Line((lead + pieces[0]).rstrip(), style)]
    out.extend(Line(" " * columns(lead) + p, style) for p in pieces[1:])
    return out


def _pad(text: str, width: int) -> str:
    return text + " " * (width - columns(text))


def _table(table: Table, width: int) -> list[Line]:
    header = tuple(clean(c) for c in table.header)
    rows = [tuple(clean(c) for c in row) for row in table.rows]
    n = len(header)
    widths = [max([columns(header[i])] + [columns(r[i]) for r in rows if i < len(r)])
              for i in range(n - 1)]  # fmt: skip
    rest = width - sum(widths) - 2 * (n - 1)
    out: list[Line] = []
    if n == 1 or rest >= 8:
        for style, cells in [("bold", header), *(("normal", r) for r in rows)]:
            fixed = "  ".join(_pad(c, w) for c, w in zip(cells, widths, strict=False))
            last = cells[n - 1] if len(cells) >= n else ""
            pieces = wrap(last, max(2, rest)) if n > 1 else wrap(last, width)
            lead = fixed + "  " if n > 1 else ""
            out.append(Line((lead + pieces[0]).rstrip(), style))
            out.extend(Line(" " * columns(lead) + p) for p in pieces[1:])
        return out
    for row in rows:
        out.extend(Line(t, "bold") for t in wrap(row[0] if row else "", width))
        for label, value in zip(header[1:], row[1:], strict=False):
            if value:
                out.extend(Line("  " + t) for t in wrap(f"{label}: {value}", width - 2, 2))
    return out

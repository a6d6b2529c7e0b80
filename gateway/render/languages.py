"""Printer languages: laid-out lines to bytes (text, ESC/POS, PCL with a PJL wrapper).

Only this module writes control bytes, and only its own: every string from a
document has already been through document.clean().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.render.document import QR, Document, Line, PageBreak, clean, layout

ESC = b"\x1b"
GS = b"\x1d"
FF = b"\x0c"
UEL = b"\x1b%-12345X"  # PJL Universal Exit Language


# Lines per page for paginated documents on page printers: 60 lines at 6 lines
# per inch fits A4 and Letter with margins. Receipt rolls are not paginated.
PAGE_LINES = 60


def render(doc: Document, language: str, width: int) -> bytes:
    try:
        spec = LANGUAGES[language]
    except KeyError:
        raise ValueError(f"unknown printer language {language!r}") from None
    return spec.render(doc, width)


def _encode(text: str, charset: str) -> bytes:
    return text.encode(charset, "replace")


def render_text(doc: Document, width: int) -> bytes:
    """Plain text wrapped to `width`, a form feed at the end of each page and of the job."""
    out = bytearray()
    for item in layout(doc, width, PAGE_LINES):
        if isinstance(item, Line):
            out += _encode(item.text, "utf-8") + b"\n"
        elif isinstance(item, PageBreak):
            out += FF
        # QR: the anchor line above it already carries seq and hash as text
    return bytes(out)


# ESC/POS, the common subset of Epson TM-series receipt printers.
ESCPOS_INIT = ESC + b"@"
ESCPOS_BOLD_ON = ESC + b"E\x01"
ESCPOS_BOLD_OFF = ESC + b"E\x00"
ESCPOS_DOUBLE_HEIGHT = ESC + b"!\x18"  # bold + double height
ESCPOS_NORMAL = ESC + b"!\x00"
ESCPOS_CENTER = ESC + b"a\x01"
ESCPOS_LEFT = ESC + b"a\x00"
ESCPOS_FEED_AND_PARTIAL_CUT = GS + b"V\x42\x03"  # feed 3 lines, then partial cut
ESCPOS_CHARSET = "cp437"  # the printers' power-on code page


def _escpos_qr(data: str) -> bytes:
    """Native QR code (GS ( k): model 2, module size 4, error correction M."""
    payload = data.encode("ascii", "replace")
    store_len = len(payload) + 3
    return b"".join(
        (
            ESCPOS_CENTER,
            GS + b"(k\x04\x00" + b"1A2\x00",  # select model 2
            GS + b"(k\x03\x00" + b"1C\x04",  # module size 4 dots
            GS + b"(k\x03\x00" + b"1E1",  # error correction level M (15%)
            GS + b"(k" + bytes([store_len % 256, store_len // 256]) + b"1P0" + payload,
            GS + b"(k\x03\x00" + b"1Q0",  # print the stored symbol
            b"\n",
            ESCPOS_LEFT,
        )
    )


def render_escpos(doc: Document, width: int) -> bytes:
    out = bytearray(ESCPOS_INIT)
    for item in layout(doc, width, None):
        if isinstance(item, Line):
            text = _encode(item.text, ESCPOS_CHARSET)
            if item.style == "heading":
                out += ESCPOS_DOUBLE_HEIGHT + text + b"\n" + ESCPOS_NORMAL
            elif item.style == "bold":
                out += ESCPOS_BOLD_ON + text + b"\n" + ESCPOS_BOLD_OFF
            else:
                out += text + b"\n"
        elif isinstance(item, QR):
            out += _escpos_qr(item.data)
        elif isinstance(item, PageBreak):
            out += ESCPOS_FEED_AND_PARTIAL_CUT
    return bytes(out)


# PCL 5 inside a PJL job.
PCL_RESET = ESC + b"E"
PCL_BOLD = ESC + b"(s3B"  # stroke weight 3: bold
PCL_MEDIUM = ESC + b"(s0B"  # stroke weight 0: medium
PCL_CHARSET = "latin-1"  # PCL's default ISO 8859-1 symbol set (ESC (0N)
PCL_SYMBOL_SET = ESC + b"(0N"


def _pjl_name(title: str) -> bytes:
    # PJL strings are quoted; a quote or control character would end the
    # command, so the job name keeps only safe printable ASCII.
    safe = "".join(c if c.isascii() and c.isprintable() and c != '"' else "_" for c in clean(title))
    return safe[:80].encode("ascii")


def render_pcl(doc: Document, width: int) -> bytes:
    name = _pjl_name(doc.title)
    out = bytearray(UEL)
    out += b'@PJL JOB NAME="' + name + b'"\r\n'
    out += b"@PJL ENTER LANGUAGE=PCL\r\n"
    out += PCL_RESET + PCL_SYMBOL_SET
    for item in layout(doc, width, PAGE_LINES):
        if isinstance(item, Line):
            text = _encode(item.text, PCL_CHARSET)
            if item.style in ("heading", "bold"):
                out += PCL_BOLD + text + PCL_MEDIUM + b"\r\n"
            else:
                out += text + b"\r\n"
        elif isinstance(item, PageBreak):
            out += FF
    out += PCL_RESET + UEL
    out += b'@PJL EOJ NAME="' + name + b'"\r\n' + UEL
    return bytes(out)


@dataclass(frozen=True)
class Language:
    """A printer language: how a document becomes bytes, and the file extension of a job."""

    render: Callable[[Document, int], bytes]
    extension: str


# Printer languages by name, declared once: configuration (printers.*.language),
# the CLI's --language and file printers' job names all read this table.
LANGUAGES: dict[str, Language] = {
    "text": Language(render_text, "txt"),
    "escpos": Language(render_escpos, "escpos"),
    "pcl": Language(render_pcl, "pcl"),
}

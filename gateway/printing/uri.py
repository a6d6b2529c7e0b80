"""Printer URIs: the one place that knows their syntax (docs/printing.md, "Printers").

socket://HOST:PORT[?contimeout=SECONDS&waiteof=true|false]
serial:DEVICE[?baud=N&bits=5..8&parity=none|even|odd&stop=1|2&flow=none|rtscts|xonxoff]
file:DIRECTORY
memory:NAME   (an in-memory printer, for tests: jobs land in transports.MEMORY_PRINTERS)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

# Raw TCP: give up a connection attempt after 30 s (the printer may be waking
# up); the attempt is retried with the spool's backoff.
DEFAULT_CONTIMEOUT_S = 30.0
# After the last byte, wait at most 10 s for the printer to close its side
# (CUPS's waiteof): enough for a printer to take in its buffer.
WAITEOF_S = 10.0
DEFAULT_PORT = 9100
# 9600 baud 8N1 without flow control: the power-on default of most serial
# receipt printers.
DEFAULT_BAUD = 9600
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


@dataclass(frozen=True)
class PrinterURI:
    scheme: str  # a key of SCHEMES
    host: str = ""
    port: int = 0
    path: str = ""  # serial device or file directory
    contimeout_s: float = DEFAULT_CONTIMEOUT_S
    waiteof: bool = True
    baud: int = DEFAULT_BAUD
    bits: int = 8
    parity: str = "none"
    stop: int = 1
    flow: str = "none"


def _bool(text: str, key: str) -> bool:
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{key} must be true or false, not {text!r}")


def _choice(text: str, key: str, choices: tuple) -> str:
    if text not in choices:
        raise ValueError(f"{key} must be one of {', '.join(map(str, choices))}, not {text!r}")
    return text


def _options(query: str, known: tuple[str, ...]) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(known)})")
    return options


def _parse_socket(text: str, rest: str) -> PrinterURI:
    parts = urlsplit(text)
    if not parts.hostname:
        raise ValueError("socket:// needs a host, as in socket://192.168.1.50:9100")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    options = _options(parts.query, ("contimeout", "waiteof"))
    try:
        contimeout = float(options.get("contimeout", DEFAULT_CONTIMEOUT_S))
    except ValueError:
        raise ValueError("contimeout must be a number of seconds") from None
    if not 0.1 <= contimeout <= 3600:
        raise ValueError("contimeout must be between 0.1 and 3600 seconds")
    return PrinterURI(
        "socket",
        host=parts.hostname,
        port=port,
        contimeout_s=contimeout,
        waiteof=_bool(options.get("waiteof", "true"), "waiteof"),
    )


def _parse_serial(text: str, rest: str) -> PrinterURI:
    path, _, query = rest.partition("?")
    if not path.startswith("/"):
        raise ValueError("serial: needs an absolute device path, as in serial:/dev/ttyUSB0")
    options = _options(query, ("baud", "bits", "parity", "stop", "flow"))
    baud_text = options.get("baud", str(DEFAULT_BAUD))
    if not baud_text.isdigit() or int(baud_text) not in BAUDS:
        raise ValueError(f"baud must be one of {', '.join(map(str, BAUDS))}")
    return PrinterURI(
        "serial",
        path=path,
        baud=int(baud_text),
        bits=int(_choice(options.get("bits", "8"), "bits", ("5", "6", "7", "8"))),
        parity=_choice(options.get("parity", "none"), "parity", ("none", "even", "odd")),
        stop=int(_choice(options.get("stop", "1"), "stop", ("1", "2"))),
        flow=_choice(options.get("flow", "none"), "flow", ("none", "rtscts", "xonxoff")),
    )


def _parse_file(text: str, rest: str) -> PrinterURI:
    path = rest[2:] if rest.startswith("//") else rest
    if not path or "?" in path:
        raise ValueError("file: needs a directory, as in file:./var/printed")
    return PrinterURI("file", path=path)


def _parse_memory(text: str, rest: str) -> PrinterURI:
    if not rest or not rest.replace("-", "").replace("_", "").isalnum():
        raise ValueError("memory: needs a name of letters, digits, - and _, as in memory:test")
    return PrinterURI("memory", path=rest)


# Every printer URI scheme, declared once: its parser here, its delivery in
# gateway/printing/transports.py (TRANSPORTS, checked to name the same schemes).
SCHEMES = {
    "socket": _parse_socket,
    "serial": _parse_serial,
    "file": _parse_file,
    "memory": _parse_memory,
}


def parse_uri(text: str) -> PrinterURI:
    """Parse a printer URI; ValueError with a readable reason if it is not one."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected a printer URI")
    scheme, sep, rest = text.partition(":")
    known = "socket://, serial:, file: or memory:"
    if not sep:
        raise ValueError(f"{text!r} has no scheme ({known})")
    parser = SCHEMES.get(scheme)
    if parser is None:
        raise ValueError(f"unknown scheme {scheme!r} ({known})")
    return parser(text, rest)

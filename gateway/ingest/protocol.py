"""Sans-I/O ingest protocol: newline-delimited JSON with an optional hello line.

Feed bytes with `receive_data` (b"" meaning EOF) and ask `next_event()` for the
next item. It never sees a socket. Invariant (tested by fuzzing): for any input
it either returns an item or raises RemoteInputError, never anything else, and
it never buffers more than max_line_bytes plus one received chunk.
"""

from __future__ import annotations

import json
import json.scanner
import math
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from gateway.errors import RemoteInputError

# Objects and arrays may nest at most this deep. Audit events carry old/new
# values that are themselves objects; 32 levels is far beyond any real record
# while keeping every recursive walk (CBOR encoding, export, printing) cheap.
MAX_DEPTH = 32

# A rejected line is recorded with at most this many of its first bytes: enough
# to recognise it, bounded so a 10 MB line cannot bloat the ledger.
EXCERPT_BYTES = 256

# Longest app name accepted in a hello: it is printed and logged, so bounded.
MAX_APP_NAME = 64
# A hello's token: secrets are 16 to 256 characters (docs/protocol.md, "Tokens").
MAX_TOKEN = 256

_BLANK = b" \t\r"


@dataclass(frozen=True, slots=True)
class Hello:
    app: str | None
    ack: bool
    token: str | None = None


class _Eof:
    """Returned once all input up to EOF has been consumed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EOF"


EOF = _Eof()


def is_blank(line: bytes) -> bool:
    """Blank lines (only spaces, tabs, CR) are ignored: no entry, no reply."""
    return not line.strip(_BLANK)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


# Duplicate keys: JSON leaves their meaning open (RFC 8259 section 4) and
# Python keeps the last value. The event is stored that way, and flagged
# `duplicate_key` with every value of each repeated key kept beside it, so an
# auditor sees that the event was ambiguous (docs/protocol.md). The decoder
# notes them here; `_decode` empties the list first, so after a decode it
# holds that line's repeats only. (The hook costs ~0.5 µs per object, measured
# against the C scanner building dicts itself.)
_duplicates: list[dict[str, list[Any]]] = []


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: dict[str, list[Any]] = {}
        for key, item in pairs:
            seen.setdefault(key, []).append(item)
        _duplicates.extend({key: items} for key, items in seen.items() if len(items) > 1)
    return value


_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_parse_float, object_pairs_hook=_object
)
# The C scanner directly: JSONDecoder.decode adds two Python-level calls and a
# regex per line, a measurable share of the per-event budget.
_scan_once = json.scanner.make_scanner(_decoder)
_JSON_SPACE = " \t\r\n"


def _decode(text: str) -> Any:
    if _duplicates:
        _duplicates.clear()
    if text[:1] in _JSON_SPACE:
        text = text.lstrip(_JSON_SPACE)
    try:
        value, end = _scan_once(text, 0)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Level by level: one pass over each level's children, no per-node tuples.

    The decoder makes plain dicts and lists only, hence the exact type tests.
    Wide events with many small objects (an 8 KiB order of 40 lines) come
    here: the bracket count before the call cannot tell width from depth.
    """
    level = [value]
    for _ in range(limit):
        deeper = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                kind = type(child)
                if kind is dict or kind is list:
                    deeper.append(child)
        if not deeper:
            return False
        level = deeper
    return True


def bad_line(code: str, detail: str, line: bytes) -> RemoteInputError:
    return RemoteInputError(
        code,
        detail,
        length=len(line),
        digest=blake3(line).digest(),
        excerpt=bytes(line[:EXCERPT_BYTES]),
    )


def decode_value(line: bytes) -> Any:
    """UTF-8 JSON text to a value (any JSON type), or RemoteInputError for the line."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_line("bad_utf8", f"invalid UTF-8 at byte {exc.start}", line) from None
    try:
        return _decode(text)
    except RecursionError:
        raise bad_line("too_deep", f"nesting deeper than {MAX_DEPTH} levels", line) from None
    except ValueError as exc:
        raise bad_line("bad_json", str(exc)[:200], line) from None


def decode_object(line: bytes) -> dict[str, Any]:
    """One line to a JSON object, or RemoteInputError carrying the line's evidence."""
    # decode_value, inlined: a Python call per event is a measurable share of
    # the per-event budget (bench/RESULTS.md).
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_line("bad_utf8", f"invalid UTF-8 at byte {exc.start}", line) from None
    try:
        value = _decode(text)
    except RecursionError:
        raise bad_line("too_deep", f"nesting deeper than {MAX_DEPTH} levels", line) from None
    except ValueError as exc:
        raise bad_line("bad_json", str(exc)[:200], line) from None
    if not isinstance(value, dict):
        raise bad_line("not_object", f"a line must be a JSON object, not {_json_type(value)}", line)
    # A JSON escape can name a lone UTF-16 surrogate, which no UTF-8 text (and so
    # no CBOR text string) can hold. Only lines with such an escape need the check.
    # (bytes.find, not `in`: `in` first tries the needle as an integer, and
    # raising and clearing that TypeError costs more than the search.)
    escape = line.find(b"\\u")
    if (
        escape >= 0
        and (line.find(b"\\ud", escape) >= 0 or line.find(b"\\uD", escape) >= 0)
        # The values a repeated key overrode are stored too (duplicate_keys).
        and (_has_lone_surrogate(value) or (_duplicates and _has_lone_surrogate(_duplicates)))
    ):
        raise bad_line("bad_unicode", "a string contains a lone UTF-16 surrogate escape", line)
    # Cheap guard first: nesting can only exceed MAX_DEPTH if the line opens that many brackets.
    if line.count(b"{") + line.count(b"[") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise bad_line("too_deep", f"nesting deeper than {MAX_DEPTH} levels", line)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


class _Overlong:
    """A line past max_line_bytes being discarded: hashed whole, only its excerpt kept."""

    __slots__ = ("complete", "excerpt", "hasher", "length")

    def __init__(self) -> None:
        self.length = 0
        self.hasher = blake3()
        self.excerpt = b""
        self.complete = False  # its newline has arrived

    def add(self, part: bytes | bytearray) -> None:
        self.hasher.update(part)
        self.length += len(part)
        if len(self.excerpt) < EXCERPT_BYTES:
            self.excerpt += bytes(part[: EXCERPT_BYTES - len(self.excerpt)])


class IngestProtocol:
    """State of one connection's input: line splitting, the hello, limits.

    A line is the bytes before a LF (a CR before it included: JSON treats it as
    white space). Its length, digest and excerpt in a `rejected` entry are of
    exactly those bytes.
    """

    def __init__(self, max_line_bytes: int, hellos: bool = True) -> None:
        self.max_line_bytes = max_line_bytes
        # False (an HTTP body): no line is a hello; a {"hello": ...} line is refused.
        self.hellos = hellos
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._eof_returned = False
        self._first_line = True
        self._overlong: _Overlong | None = None
        self.hello: Hello | None = None
        self.lines = 0
        self.last_line = b""  # the line behind the last item returned
        # The repeated keys of the last event returned, each {key: [every value]}
        # in the order met (innermost objects first); None when it had none.
        self.duplicates: list[dict[str, list[Any]]] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise RuntimeError("data after EOF")
            return
        if not data:
            self._eof = True
            return
        overlong = self._overlong
        if overlong is not None and not overlong.complete:
            nl = data.find(b"\n")
            if nl < 0:
                overlong.add(data)
                return
            overlong.add(data[:nl])
            overlong.complete = True
            data = data[nl + 1 :]
            if not data:
                return
        if self._pos and self._pos == len(self._buf):
            self._buf = bytearray(data)
            self._pos = 0
        else:
            if self._pos > 65536:  # compact now and then, not on every call
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data

    def _next_line(self) -> bytes | None:
        """The next complete line (without its LF), or None if more data is needed."""
        overlong = self._overlong
        if overlong is not None:
            if not (overlong.complete or self._eof):
                return None
            self._overlong = None
            self._first_line = False
            raise RemoteInputError(
                "line_too_long",
                f"line of {overlong.length} bytes exceeds max_line_bytes {self.max_line_bytes}",
                length=overlong.length,
                digest=overlong.hasher.digest(),
                excerpt=overlong.excerpt,
            )
        buf = self._buf
        pos = self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            pending = len(buf) - pos
            if pending > self.max_line_bytes:
                # No newline within the limit: stop buffering, hash the rest as it comes.
                overlong = _Overlong()
                overlong.add(buf[pos:])
                self._overlong = overlong
                self._buf = bytearray()
                self._pos = 0
                return self._next_line()
            if self._eof and pending:
                line = bytes(buf[pos:])
                self._pos = len(buf)
                return line
            return None
        line = bytes(buf[pos:nl])
        self._pos = nl + 1
        if len(line) > self.max_line_bytes:
            self._first_line = False
            raise bad_line(
                "line_too_long",
                f"line of {len(line)} bytes exceeds max_line_bytes {self.max_line_bytes}",
                line,
            )
        return line

    def unread(self) -> tuple[bytearray, int]:
        """The buffer and where its unread part starts, for a scan of whole lines."""
        return self._buf, self._pos

    @property
    def scannable(self) -> bool:
        """Whether the next bytes are plain lines a scan may take: not the place of
        a hello, not inside an overlong line, something buffered."""
        return (
            self._overlong is None
            and not (self._first_line and self.hellos)
            and self._pos < len(self._buf)
        )

    def advance(self, pos: int, lines: int) -> None:
        """A scan took the lines up to `pos` (`lines` of them not blank)."""
        self._pos = pos
        self.lines += lines
        if lines:
            self._first_line = False

    def abandon(self) -> RemoteInputError | None:
        """Stop reading: describe the unfinished line left in the buffer, if any.

        Used at shutdown for a client that has not closed its side: its last
        line may be cut anywhere, so it is reported, never parsed as an event.
        Call after next_event() has returned None; nothing is accepted after.
        """
        self._eof = True
        self._eof_returned = True
        overlong = self._overlong
        self._overlong = None
        detail = "{} bytes without a newline when the gateway stopped reading"
        if overlong is not None:
            return RemoteInputError(
                "incomplete_line",
                detail.format(overlong.length),
                length=overlong.length,
                digest=overlong.hasher.digest(),
                excerpt=overlong.excerpt,
            )
        line = bytes(self._buf[self._pos :])
        self._buf = bytearray()
        self._pos = 0
        if is_blank(line):
            return None
        return bad_line("incomplete_line", detail.format(len(line)), line)

    def next_event(self) -> dict[str, Any] | Hello | _Eof | None:
        """The next event object, the Hello, EOF, or None when more data is needed.

        Raises RemoteInputError for a refused line; the caller records it and
        calls again, except when `fatal` is set (a bad hello), which ends the
        connection after the reply.
        """
        while True:
            line = self._next_line()
            if line is None:
                if self._eof and not self._eof_returned and self._overlong is None:
                    self._eof_returned = True
                    return EOF
                return None
            if line[:1] != b"{" and is_blank(line):  # an object line is never blank
                continue
            self.lines += 1
            self.last_line = line
            first = self._first_line and self.hellos
            self._first_line = False  # a refused first line still uses up the hello's place
            obj = decode_object(line)
            self.duplicates = _duplicates[:] if _duplicates else None
            if first:
                if "hello" in obj:
                    if self.duplicates:  # which token, which app? Never guess in a hello
                        exc = _fatal(bad_line("bad_hello", "a key appears twice", line))
                        exc.excerpt = b""
                        raise exc
                    self.hello = _parse_hello(obj, line)
                    return self.hello
            elif "hello" in obj and len(obj) == 1:
                raise bad_line("unexpected_hello", "hello is only allowed as the first line", line)
            return obj


def _parse_hello(obj: dict[str, Any], line: bytes) -> Hello:
    hello = obj.get("hello")
    if len(obj) != 1 or not isinstance(hello, dict):
        raise _fatal(bad_line("bad_hello", 'expected {"hello": {"app": ..., "ack": ...}}', line))
    app = hello.get("app")
    ack = hello.get("ack", False)
    token = hello.get("token")

    def refuse(detail: str) -> RemoteInputError:
        exc = _fatal(bad_line("bad_hello", detail, line))
        if "token" in hello:
            exc.excerpt = b""  # never keep a secret in the ledger, even a malformed one
        return exc

    if app is not None and (not isinstance(app, str) or not 0 < len(app) <= MAX_APP_NAME):
        raise refuse(f"app must be a string of 1 to {MAX_APP_NAME} characters")
    if not isinstance(ack, bool):
        raise refuse("ack must be true or false")
    if token is not None and (not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN):
        raise refuse(f"token must be a string of 1 to {MAX_TOKEN} characters")
    if token is not None and app is None:
        raise refuse("a token needs the app it belongs to")
    return Hello(app, ack, token)


def _fatal(exc: RemoteInputError) -> RemoteInputError:
    exc.fatal = True
    return exc

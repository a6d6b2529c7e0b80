"""Sans-I/O syslog ingest: RFC 6587 framing of RFC 5424 messages, each one an event.

The same interface as gateway.ingest.protocol.IngestProtocol, without the
hello: feed bytes with `receive_data` (b"" meaning EOF), ask `next_event()` for
the next item. Invariant (tested by fuzzing): for any input it either returns
an item or raises RemoteInputError, never anything else, and it never buffers
more than max_line_bytes plus one received chunk (the digits of an octet count,
at most 9, are the exception only below the configuration's 256-byte floor).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from blake3 import blake3

from gateway.errors import RemoteInputError
from gateway.ingest.protocol import EOF, EXCERPT_BYTES, _Eof, bad_line
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.server import Connection, IngestServer
from gateway.ingest.validate import is_rfc3339

# RFC 5424 section 6 bounds on the header fields, in bytes of printable US-ASCII.
MAX_HOSTNAME = 255
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32
# SD-ID and PARAM-NAME (RFC 5424 section 6.3: SD-NAME = 1*32PRINTUSASCII).
MAX_SD_NAME = 32
# PRI is facility * 8 + severity: 24 facilities (0..23) and 8 severities.
MAX_PRIVAL = 191
# An octet count of more digits than this is not a length but garbage: 9
# digits already count to just under 1 GB, far beyond the largest
# max_line_bytes (8 MiB). Any count within it but above max_line_bytes is a
# message refused and skipped; a longer count means the framing is lost.
MAX_COUNT_DIGITS = 9

_NIL = b"-"
_BOM = b"\xef\xbb\xbf"
_SP = 0x20
# PRINTUSASCII (RFC 5424 section 6): %d33-126. bytes.translate with these as
# the delete set leaves exactly the bytes that are not allowed.
_PRINTUSASCII = bytes(range(33, 127))
# SD-NAME is PRINTUSASCII except '=', SP, ']' and '"'.
_SD_NAME_BYTES = bytes(b for b in range(33, 127) if b not in b'=]"')
_BETWEEN = b"\r\n"  # skipped between messages: empty lines, stray line ends
_BLANK = b" \t\r"
_ESCAPABLE = (b'"', b"\\", b"]")


class _Skipped:
    """An oversized message being discarded: hashed whole, only its excerpt kept.

    `remaining` is the number of bytes still to discard for an octet-counted
    message; None for a line, which is discarded up to its LF.
    """

    __slots__ = ("complete", "excerpt", "hasher", "length", "remaining")

    def __init__(self, remaining: int | None) -> None:
        self.length = 0
        self.hasher = blake3()
        self.excerpt = b""
        self.remaining = remaining
        self.complete = False

    def add(self, part: bytes | bytearray) -> None:
        self.hasher.update(part)
        self.length += len(part)
        if len(self.excerpt) < EXCERPT_BYTES:
            self.excerpt += bytes(part[: EXCERPT_BYTES - len(self.excerpt)])

    def take(self, data: bytes) -> bytes:
        """Discard what belongs to the message; returns the bytes after it."""
        if self.remaining is not None:
            n = min(self.remaining, len(data))
            self.add(data[:n])
            self.remaining -= n
            self.complete = self.remaining == 0
            return data[n:]
        nl = data.find(b"\n")
        if nl < 0:
            self.add(data)
            return b""
        self.add(data[:nl])
        self.complete = True
        return data[nl + 1 :]

    def error(self, code: str, detail: str) -> RemoteInputError:
        return RemoteInputError(
            code,
            detail,
            length=self.length,
            digest=self.hasher.digest(),
            excerpt=self.excerpt,
        )


class SyslogProtocol:
    """State of one syslog connection's input: framing, limits, parsing.

    A message is octet-counted when it starts with a digit (`MSG-LEN SP
    SYSLOG-MSG`, the MSG-LEN not part of the message) and otherwise ends at the
    next LF (one CR before the LF is left out). Empty lines between messages
    are skipped. `last_line` is the message behind the last event or refusal
    (an oversized message leaves it as it was: such a message is never held whole).
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._eof_returned = False
        self._count: int | None = None  # the octet count read for the message at _pos
        self._skipped: _Skipped | None = None
        self._framing_lost = False  # after a bad octet count: nothing more is read
        self.lines = 0  # messages seen, refused ones included
        self.last_line = b""
        self.duplicates = None  # the intake asks; syslog fields are never repeated keys

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
        if self._framing_lost:
            return
        skipped = self._skipped
        if skipped is not None and not skipped.complete:
            data = skipped.take(data)
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

    def _consume_all(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def _lose_framing(self, detail: str, raw: bytes) -> RemoteInputError:
        self._framing_lost = True
        self._count = None
        self._consume_all()
        self.lines += 1
        self.last_line = raw
        exc = bad_line("bad_framing", detail, raw)
        exc.fatal = True
        return exc

    def _skip(self, remaining: int | None) -> None:
        """Start discarding an oversized message with what is buffered of it."""
        skipped = self._skipped = _Skipped(remaining)
        rest = skipped.take(bytes(self._buf[self._pos :]))
        self._buf = bytearray(rest)
        self._pos = 0

    def _next_message(self) -> tuple[bytes, bool] | None:
        """The next complete message and whether it was octet-counted, or None for more data."""
        skipped = self._skipped
        if skipped is not None:
            if not (skipped.complete or self._eof):
                return None
            self._skipped = None
            self.lines += 1
            counted = skipped.remaining is not None
            if counted and not skipped.complete:
                raise skipped.error(
                    "incomplete_message",
                    f"EOF after {skipped.length} bytes of an oversized counted message",
                )
            what = "octet count" if counted else "line"
            raise skipped.error(
                "message_too_long",
                f"{what} of {skipped.length} bytes exceeds max_line_bytes {self.max_line_bytes}",
            )
        buf = self._buf
        end = len(buf)
        if self._count is None:
            pos = self._pos
            while pos < end and buf[pos] in _BETWEEN:
                pos += 1
            self._pos = pos
            if pos == end:
                return None
            first = buf[pos]
            if not 0x30 <= first <= 0x39:
                return self._next_line()
            if first == 0x30:
                raise self._lose_framing("octet count starts with 0", bytes(buf[pos : pos + 1]))
            i = pos
            stop = min(end, pos + MAX_COUNT_DIGITS + 1)
            while i < stop and 0x30 <= buf[i] <= 0x39:
                i += 1
            if i - pos > MAX_COUNT_DIGITS:
                raise self._lose_framing(
                    f"octet count of more than {MAX_COUNT_DIGITS} digits", bytes(buf[pos:i])
                )
            if i == end:
                if not self._eof:
                    return None
                raw = bytes(buf[pos:])
                self._consume_all()
                self.lines += 1
                self.last_line = raw
                raise bad_line("incomplete_message", "EOF inside an octet count", raw)
            if buf[i] != _SP:
                raise self._lose_framing(
                    f"octet count followed by byte 0x{buf[i]:02x}, not a space",
                    bytes(buf[pos : i + 1]),
                )
            count = int(buf[pos:i])
            self._pos = i + 1
            if count > self.max_line_bytes:
                self._skip(count)
                return self._next_message()
            self._count = count
        count = self._count
        pos = self._pos
        if end - pos < count:
            if not self._eof:
                return None
            raw = bytes(buf[pos:])
            self._count = None
            self._consume_all()
            self.lines += 1
            self.last_line = raw
            raise bad_line(
                "incomplete_message", f"EOF after {len(raw)} of {count} counted bytes", raw
            )
        message = bytes(buf[pos : pos + count])
        self._pos = pos + count
        self._count = None
        return message, True

    def _next_line(self) -> tuple[bytes, bool] | None:
        """A non-transparent (LF-terminated) message starting at _pos."""
        buf = self._buf
        pos = self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            pending = len(buf) - pos
            if pending > self.max_line_bytes:
                self._skip(None)
                return self._next_message()
            if not self._eof:
                return None
            nl = len(buf)  # at EOF the last line needs no LF
        line = bytes(buf[pos:nl])
        self._pos = min(nl + 1, len(buf))
        if len(line) > self.max_line_bytes:
            self.lines += 1
            raise bad_line(
                "message_too_long",
                f"line of {len(line)} bytes exceeds max_line_bytes {self.max_line_bytes}",
                line,
            )
        if line.endswith(b"\r"):
            line = line[:-1]
        return line, False

    def abandon(self) -> RemoteInputError | None:
        """Stop reading: describe the unfinished message left in the buffer, if any.

        Used at shutdown for a client that has not closed its side: its last
        message may be cut anywhere, so it is reported, never parsed as an
        event. Call after next_event() has returned None; nothing is accepted after.
        """
        self._eof = True
        self._eof_returned = True
        skipped = self._skipped
        self._skipped = None
        detail = "{} bytes of an unfinished message when the gateway stopped reading"
        if skipped is not None:
            return skipped.error("incomplete_message", detail.format(skipped.length))
        raw = bytes(self._buf[self._pos :])
        counted = self._count is not None
        self._count = None
        self._consume_all()
        if self._framing_lost or (not counted and not raw.strip(_BLANK + b"\n")):
            return None
        return bad_line("incomplete_message", detail.format(len(raw)), raw)

    def next_event(self) -> dict[str, Any] | _Eof | None:
        """The next event, EOF, or None when more data is needed.

        Raises RemoteInputError for a refused message; the caller records it
        and calls again, except when `fatal` is set (the octet count was bad,
        so where the next message starts is unknown), which ends the connection.
        """
        while True:
            found = None if self._framing_lost else self._next_message()
            if found is None:
                if self._eof and not self._eof_returned:
                    self._eof_returned = True
                    return EOF
                return None
            message, counted = found
            if not counted and not message.strip(_BLANK):
                continue  # a blank line is nothing, as on NDJSON ingest
            self.lines += 1
            self.last_line = message
            return parse_message(message)


# ---- RFC 5424


_HEADER_FIELDS = (
    # (name in the RFC, event key, longest)
    ("TIMESTAMP", "timestamp", None),  # bounded by its syntax
    ("HOSTNAME", "hostname", MAX_HOSTNAME),
    ("APP-NAME", "app_name", MAX_APP_NAME),
    ("PROCID", "procid", MAX_PROCID),
    ("MSGID", "msgid", MAX_MSGID),
)


def parse_message(raw: bytes) -> dict[str, Any]:
    """One RFC 5424 SYSLOG-MSG to an event, or RemoteInputError naming the field."""

    def refuse(detail: str) -> RemoteInputError:
        return bad_line("bad_syslog", detail, raw)

    data = raw
    # rsyslog's RSYSLOG_SyslogProtocol23Format (and others) end each message
    # with LF even inside an octet count: a line end, not part of MSG.
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    n = len(data)
    if data[:1] != b"<":
        raise refuse("PRI: a message starts with '<'")
    close = data.find(b">", 1, 5)
    digits = data[1:close] if close > 0 else b""
    if not (digits.isdigit() and int(digits) <= MAX_PRIVAL):
        raise refuse(f"PRI: expected <0> to <{MAX_PRIVAL}>")
    facility, severity = divmod(int(digits), 8)
    pos = close + 1
    version_end = pos
    while version_end < n and 0x30 <= data[version_end] <= 0x39:
        version_end += 1
    if version_end == pos:
        raise refuse("VERSION: missing; RFC 3164 (BSD) messages are not accepted, only RFC 5424")
    if data[pos:version_end] != b"1":
        raise refuse("VERSION: only version 1 (RFC 5424) is accepted")
    pos = version_end
    if pos < n and data[pos] != _SP:
        raise refuse("VERSION: expected a space after it")
    pos += 1
    event: dict[str, Any] = {"event_type": "syslog"}
    values: dict[str, str | None] = {}
    for i, (name, key, longest) in enumerate(_HEADER_FIELDS):
        if pos >= n:
            raise refuse(f"{name}: missing (the message ends before it)")
        sp = data.find(b" ", pos)
        if sp < 0:
            after = _HEADER_FIELDS[i + 1][0] if i + 1 < len(_HEADER_FIELDS) else "STRUCTURED-DATA"
            raise refuse(f"{after}: missing (the message ends after {name})")
        token = data[pos:sp]
        pos = sp + 1
        if not token:
            raise refuse(f"{name}: empty (header fields are separated by one space)")
        bad = token.translate(None, _PRINTUSASCII)
        if bad:
            raise refuse(f"{name}: byte 0x{bad[0]:02x} is not printable US-ASCII")
        if longest is not None and len(token) > longest:
            raise refuse(f"{name}: longer than {longest} characters")
        values[key] = None if token == _NIL else token.decode("ascii")
    timestamp = values.pop("timestamp")
    if timestamp is not None:
        if not is_rfc3339(timestamp):
            raise refuse("TIMESTAMP: not an RFC 3339 date-time (nor '-')")
        event["timestamp"] = timestamp
    event["facility"] = facility
    event["severity"] = severity
    event.update(values)
    if data[pos : pos + 1] == _NIL:
        structured: dict[str, dict[str, Any]] = {}
        pos += 1
    elif data[pos : pos + 1] == b"[":
        structured, pos = _structured_data(raw, data, pos)
    else:
        raise refuse("STRUCTURED-DATA: expected '-' or '['")
    event["structured_data"] = structured
    if pos == n:
        event["msg"] = None
        return event
    if data[pos] != _SP:
        raise refuse("STRUCTURED-DATA: expected a space, or the end, after it")
    body = data[pos + 1 :]
    offset = pos + 1
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
        offset += len(_BOM)
    try:
        event["msg"] = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_line(
            "bad_utf8", f"MSG: invalid UTF-8 at byte {offset + exc.start}", raw
        ) from None
    return event


def _sd_name(raw: bytes, data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = pos
    n = len(data)
    while end < n and data[end] in _SD_NAME_BYTES:
        end += 1
    if end == pos:
        raise bad_line("bad_syslog", f"STRUCTURED-DATA: {what} is missing", raw)
    if end - pos > MAX_SD_NAME:
        raise bad_line(
            "bad_syslog", f"STRUCTURED-DATA: {what} longer than {MAX_SD_NAME} characters", raw
        )
    return data[pos:end].decode("ascii"), end


def _structured_data(raw: bytes, data: bytes, pos: int) -> tuple[dict[str, dict[str, Any]], int]:
    """SD-ELEMENTs from `pos` (at a '['): ({sd-id: {param: value or [values]}}, end)."""

    def refuse(detail: str) -> RemoteInputError:
        return bad_line("bad_syslog", f"STRUCTURED-DATA: {detail}", raw)

    n = len(data)
    elements: dict[str, dict[str, Any]] = {}
    while pos < n and data[pos] == 0x5B:  # '['
        sd_id, pos = _sd_name(raw, data, pos + 1, "SD-ID")
        if sd_id in elements:
            raise refuse(f"SD-ID {sd_id} appears twice (RFC 5424 section 6.3.2)")
        params: dict[str, Any] = {}
        while True:
            here = data[pos : pos + 1]
            if here == b"]":
                pos += 1
                break
            if here != b" ":
                raise refuse(f"in [{sd_id}: expected a space or ']'")
            name, pos = _sd_name(raw, data, pos + 1, f"a PARAM-NAME in [{sd_id}")
            if data[pos : pos + 2] != b'="':
                raise refuse(f'{sd_id}.{name}: expected ="')
            value, pos = _param_value(data, pos + 2)
            if value is None:
                raise refuse(f"{sd_id}.{name}: PARAM-VALUE has no closing quote")
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_line(
                    "bad_utf8", f"STRUCTURED-DATA: {sd_id}.{name}: invalid UTF-8", raw
                ) from None
            if name not in params:
                params[name] = text
            elif isinstance(params[name], list):
                params[name].append(text)
            else:
                params[name] = [params[name], text]
        elements[sd_id] = params
    return elements, pos


def _param_value(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """A PARAM-VALUE from after its opening quote: (unescaped bytes, after the closing quote).

    Only \\", \\\\ and \\] are escapes; a backslash before anything else is
    itself (RFC 5424 section 6.3.3).
    """
    out = bytearray()
    n = len(data)
    while True:
        quote = data.find(b'"', pos)
        if quote < 0:
            return None, n
        backslash = data.find(b"\\", pos, quote)
        if backslash < 0:
            out += data[pos:quote]
            return bytes(out), quote + 1
        out += data[pos:backslash]
        escaped = data[backslash + 1 : backslash + 2]
        if escaped in _ESCAPABLE:
            out += escaped
            pos = backslash + 2
        else:
            out += b"\\"
            pos = backslash + 1


# ---------------------------------------------------------------------------- the listener


class _NoReplies(ReplyQueue):
    """The reply queue of a syslog connection: syslog has no replies, so none is owed."""

    __slots__ = ()

    def add_ack(self, seq: int) -> None:
        pass

    def add(self, due_seq: int, data: bytes) -> None:
        pass


class SyslogConnection(Connection):
    """A syslog client (RFC 6587 over TCP): fire-and-forget, nothing is ever sent to it."""

    __slots__ = ()
    replies = False

    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        addr: tuple,
        conn_id: int,
        cert_app: str | None = None,
        protocol: Callable[[int], object] = SyslogProtocol,
    ) -> None:
        super().__init__(server, sock, addr, conn_id, cert_app, protocol)
        self.pending = _NoReplies()


def listen(server: IngestServer) -> list[tuple[str, int]]:
    """Bind `ingest.syslog.listen`: connections parse syslog and are never sent a byte."""
    return [
        server.bind(address, None, SyslogProtocol, SyslogConnection)
        for address in server.config.syslog.listen
    ]

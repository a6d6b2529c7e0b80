"""The Python client of the ingest protocol, used by `gateway send` and by Python apps.

`send_events` streams NDJSON lines to a gateway, optionally waiting for acks:
a sender thread writes every line while the caller's thread reads the replies
as they come, so the client pipelines instead of waiting per event.
`with_event_id` gives a line an `event_id` so that it can be sent again
safely (docs/protocol.md, "Exactly once with event_id"), and
`gateway.outbox.Outbox` keeps events in a local SQLite file until the gateway
has acknowledged them (README, "Python client and outbox").
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.errors import GatewayError
from gateway.ingest.protocol import is_blank


class Unreachable(GatewayError, OSError):
    """Nothing accepted the connection at host:port (refused, no route, timed out)."""


# Over TLS, lines are sent this many at a time between reading their replies.
TLS_WINDOW = 1024

# Refusals that say "not now" rather than "never": the line was not stored and
# the same line (with its event_id) may be sent again later. Every other
# refusal is permanent: sending it again gets the same answer.
TRANSIENT_ERRORS = frozenset(
    {
        "retry",
        "disk_full",
        "rate_limited",
        "too_many_connections",
        "too_many_connections_from_source",
        "idle_timeout",
    }
)


@dataclass
class SendResult:
    sent: int = 0
    acked: int = 0
    refused: list[dict] = field(default_factory=list)
    # For each refusal, the index of its line among those sent (replies come in order).
    refused_at: list[int] = field(default_factory=list)
    hello: dict | None = None
    error: str | None = None
    replies: int = 0  # event replies read so far
    answers: list[dict] = field(default_factory=list)  # each reply read, in line order

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused and self.acked == self.sent


def event_lines(stream: Iterable[bytes]) -> list[bytes]:
    """The non-blank lines of the input, each ending in a newline."""
    return [line for _number, line in numbered_event_lines(stream)]


def numbered_event_lines(stream: Iterable[bytes]) -> list[tuple[int, bytes]]:
    """The non-blank lines of the input with their line numbers in it (from 1)."""
    lines = []
    for number, raw in enumerate(stream, 1):
        line = raw.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if not is_blank(line):
            lines.append((number, line + b"\n"))
    return lines


def _read_replies(reader, n: int, result: SendResult) -> bool:
    """Read `n` reply lines into `result`; False if the connection ended first."""
    for _ in range(n):
        try:
            line = reader.readline()
        except OSError as exc:
            result.error = f"connection failed: {exc}"
            return False
        if not line:
            result.error = "the gateway closed the connection before every event was acknowledged"
            return False
        reply = json.loads(line)
        result.answers.append(reply)
        if reply.get("ok"):
            result.acked += 1
        else:
            result.refused.append(reply)
            result.refused_at.append(result.replies)
        result.replies += 1
    return True


def with_event_id(line: bytes) -> tuple[bytes, str]:
    """`line` (one JSON object, newline-terminated or not) with an event_id, and the id.

    A line that has an event_id keeps it (returned if it is a string). One
    without gets a new UUID (version 4) inserted as its first member, textually,
    so every other byte stays as it was. A line that is not a JSON object is
    returned as it is with the id "" (the gateway will refuse it).
    """
    try:
        value = json.loads(line)
    except ValueError:
        return line, ""
    if not isinstance(value, dict):
        return line, ""
    if "event_id" in value:
        existing = value["event_id"]
        return line, existing if isinstance(existing, str) else ""
    event_id = str(uuid.uuid4())
    brace = line.index(b"{")
    member = b'"event_id":"%s"' % event_id.encode()
    sep = b"," if value else b""
    return line[: brace + 1] + member + sep + line[brace + 1 :], event_id


def client_tls_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """Verify the gateway against `ca` (default: the system's CAs); present `cert` if given."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key)
    return context


def send_events(
    host: str,
    port: int,
    lines: list[bytes],
    *,
    app: str | None = None,
    ack: bool = False,
    timeout: float = 30.0,
    token: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> SendResult:
    result = SendResult()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(
            exc.errno, f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
    with sock:
        if not ack and app is None and token is None:
            sock.sendall(b"".join(lines))
            result.sent = len(lines)
            sock.shutdown(socket.SHUT_WR)
            return result
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello: dict = {"ack": ack}
        if app:
            hello["app"] = app
        if token is not None:
            hello["token"] = token
        hello = {"hello": hello}
        sock.sendall(json.dumps(hello).encode() + b"\n")
        with sock.makefile("rb") as reader:
            return _converse(sock, reader, lines, ack, tls is not None, timeout, result)
    return result


def _converse(
    sock: socket.socket,
    reader,
    lines: list[bytes],
    ack: bool,
    tls: bool,
    timeout: float,
    result: SendResult,
) -> SendResult:
    """After the hello: read its reply, send the lines, read their replies."""
    first = reader.readline()
    try:
        reply = json.loads(first)
    except ValueError:
        result.error = f"no hello reply from the gateway: {first[:200]!r}"
        return result
    if "hello" not in reply:
        result.error = f"hello refused: {reply}"
        return result
    result.hello = reply["hello"]
    if not ack:
        sock.sendall(b"".join(lines))
        result.sent = len(lines)
        sock.shutdown(socket.SHUT_WR)
        return result
    if tls:
        # One SSL connection must not be written and read by two threads at
        # once: send a window of lines, read its replies, repeat.
        for start in range(0, len(lines), TLS_WINDOW):
            window = lines[start : start + TLS_WINDOW]
            sock.sendall(b"".join(window))
            result.sent += len(window)
            if not _read_replies(reader, len(window), result):
                break
        return result

    def writer() -> None:
        try:
            sock.sendall(b"".join(lines))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader sees the connection end and reports it

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    result.sent = len(lines)
    _read_replies(reader, len(lines), result)
    thread.join(timeout)
    return result


def send_with_retries(
    host: str,
    port: int,
    lines: list[bytes],
    *,
    retries: int,
    backoff_s: float = 0.5,
    sleep=None,
    **options,
) -> SendResult:
    """`send_events` with acknowledgements, sending again (up to `retries` more
    times, the wait doubling from `backoff_s`) every line that got no answer or
    a transient refusal. Safe only for lines with an event_id: a line whose
    acknowledgement was lost may be stored already."""
    import time

    sleep = sleep or time.sleep
    answers: list[dict | None] = [None] * len(lines)
    result = SendResult()
    for attempt in range(retries + 1):
        todo = [
            i
            for i, answer in enumerate(answers)
            if answer is None or answer.get("error") in TRANSIENT_ERRORS
        ]
        if not todo:
            break
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            this = send_events(host, port, [lines[i] for i in todo], ack=True, **options)
        except Unreachable:
            if attempt == retries:
                raise
            continue
        result.hello = this.hello or result.hello
        result.error = this.error
        for i, answer in zip(todo, this.answers, strict=False):
            answers[i] = answer
        if this.hello is None:
            break  # the hello was refused (a token): sending again gets the same answer
    result.sent = len(lines)
    result.answers = [a for a in answers if a is not None]
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        result.replies += 1
        if answer.get("ok"):
            result.acked += 1
        else:
            result.refused.append(answer)
            result.refused_at.append(i)
    if result.error is None and result.replies < len(lines):
        result.error = "the gateway did not answer every line"
    return result

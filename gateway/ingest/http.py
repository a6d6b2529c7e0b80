"""HTTP ingest: `POST /v1/events` on the gateway's own loop, answered once durable.

A front-end on top of the intake (gateway/ingest/intake.py), like the TCP one:
h11 (sans-I/O HTTP/1.1) turns bytes into requests, the body's lines go through
the same parser, validation, redaction and ledger path as TCP lines, and the
response is sent only after every stored line is durable: status 200 with a
JSON array holding, per line in order, `{"ok": true, "seq": N}` or
`{"ok": false, "error": CODE, "detail": TEXT}` (docs/protocol.md, "HTTP").

- Bodies: `application/x-ndjson` (one event per line) or `application/json`
  (one event, or an array of events; each element is handled as one line).
- `Authorization: Bearer <token>` is mapped to the app whose token it is,
  exactly as a TCP hello's token; a wrong token gets 401 and nothing is
  stored; with `ingest.require_token`, a request without one gets 401.
- A body over `ingest.http.max_body_bytes` gets 413 and nothing is stored:
  at once to `Expect: 100-continue`, else after reading and discarding the
  rest of the body (up to DISCARD_LIMIT_BYTES, so an ordinary client sees the
  413 rather than a reset).
- Keep-alive and pipelining: a second request is read only after the first
  one's response has been handed to the kernel.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable

import h11

from gateway.errors import RemoteInputError
from gateway.ingest.protocol import IngestProtocol, decode_value
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.server import RECV_BYTES, WOULD_BLOCK, Connection, IngestServer
from gateway.ingest.session import Session

log = logging.getLogger("gateway.ops")

__all__ = ["HttpConnection", "listen"]

# A request head (request line and headers) larger than 16 KiB is refused
# (431): a client of an event API needs a few hundred bytes. It also bounds what
# h11 buffers before a head is complete.
MAX_HEADER_BYTES = 16 * 1024
# Of a body over the limit, at most 64 MiB more are read and discarded before
# the 413 is sent; a client sending more is cut off (and sees a reset).
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024

PATH = b"/v1/events"
NDJSON = b"application/x-ndjson"
JSON = b"application/json"

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    411: b"Length Required",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}

# Statuses for a request cut short by a refusal of the sender.
_SENDER_REFUSALS = {"rate_limited": 429, "disk_full": 503}


def body_lines(content_type: bytes, body: bytes) -> bytes:
    """The body as NDJSON lines; a JSON body that does not decode raises RemoteInputError.

    An array's elements are re-encoded one per line (compact JSON never holds
    a raw newline): each is then checked as a line is, and a refused element's
    length, digest and excerpt are of that re-encoding.
    """
    if content_type == NDJSON:
        return body
    value = decode_value(body)
    items = value if isinstance(value, list) else [value]
    return b"\n".join(
        # ASCII escapes keep a lone surrogate visible to the line check (bad_unicode).
        json.dumps(item, separators=(",", ":")).encode()
        for item in items
    )


class HttpConnection(Connection):
    """One HTTP/1.1 client connection: one request at a time, in order."""

    __slots__ = ("body", "content_type", "discarding", "h11", "head_started", "status", "waiting")

    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        addr: tuple,
        conn_id: int,
        cert_app: str | None = None,
        protocol: Callable[[int], object] = IngestProtocol,
    ) -> None:
        super().__init__(server, sock, addr, conn_id, cert_app, protocol)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.body = bytearray()
        self.content_type = b""
        self.discarding = 0  # > 0: bytes of an oversized body still to be discarded
        self.status = 0  # the status owed for the request in progress (0: none yet)
        self.waiting = False  # the request's lines are staged: answer once durable
        self.head_started: float | None = None  # when the current request's first byte came

    # ---- reading

    def wants_read(self) -> bool:
        # One request at a time: nothing is read while one is being answered.
        return not self.waiting and self.h11.their_state is not h11.DONE

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_BYTES)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self.server.lost(self, exc)
            return
        self.last_active = self.server.loop.time()
        if self.head_started is None and data:
            self.head_started = self.last_active
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError:
            pass  # next_event raises it again, where it is answered
        self._events()

    def _events(self) -> None:
        while not self.closed and not self.waiting:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 hints 431 for an oversized head, else 400.
                status = exc.error_status_hint
                self._respond_error(status, "bad_request", str(exc)[:200], close=True)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self.finished = True
                return
            if isinstance(event, h11.Request):
                self._request(event)
            elif isinstance(event, h11.Data):
                self._data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._end()

    def _request(self, request: h11.Request) -> None:
        self.head_started = None
        self.body.clear()
        self.status = 0
        headers = {name: value for name, value in request.headers}
        if request.target.split(b"?", 1)[0] != PATH:
            self.status = 404
        elif request.method != b"POST":
            self.status = 405
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        self.content_type = content_type
        if not self.status and content_type not in (NDJSON, JSON):
            self.status = 415
        self.session = Session(self.addr, self.port, self.conn_id, self.server.policy)
        if not self.status:
            token = None
            auth = headers.get(b"authorization", b"")
            scheme, _, credentials = auth.partition(b" ")
            if auth and scheme.lower() == b"bearer":
                token = credentials.strip().decode("ascii", "replace")
            if self.server.intake.authenticate(self.session, token):
                self.status = 401
        limit = self.server.config.http.max_body_bytes
        length = headers.get(b"content-length")
        if not self.status and length is not None and int(length) > limit:
            self.status = 413
            if headers.get(b"expect", b"").lower() == b"100-continue":
                # The client waits for our word before sending the body: none is read.
                self._respond_error(413, "too_large", f"the body limit is {limit} bytes", True)
                return
        if self.status:
            self.discarding = DISCARD_LIMIT_BYTES

    def _data(self, data: bytes) -> None:
        if self.status:
            self.discarding -= len(data)
            if self.discarding < 0:
                self._respond_error(self.status, *self._error_for(self.status), close=True)
            return
        self.body += data
        if len(self.body) > self.server.config.http.max_body_bytes:
            self.status = 413
            self.discarding = DISCARD_LIMIT_BYTES
            self.body.clear()

    def _error_for(self, status: int) -> tuple[str, str]:
        limit = self.server.config.http.max_body_bytes
        return {
            401: ("bad_token", "the bearer token is wrong, or missing where one is required"),
            404: ("not_found", "events are posted to /v1/events"),
            405: ("method_not_allowed", "use POST"),
            413: ("too_large", f"the body limit is {limit} bytes"),
            415: ("bad_content_type", "use application/x-ndjson or application/json"),
        }.get(status, ("bad_request", ""))

    def _end(self) -> None:
        if self.status:
            self._respond_error(self.status, *self._error_for(self.status), close=False)
            return
        intake = self.server.intake
        body = bytes(self.body)
        self.body.clear()
        try:
            lines = body_lines(self.content_type, body)
        except RemoteInputError as exc:
            lines = b""
            intake.refuse(self.session, exc, self.pending, intake.clock.wall_us())
        proto = IngestProtocol(self.server.config.max_line_bytes, hellos=False)
        proto.receive_data(lines)
        proto.receive_data(b"")
        intake.feed(self.session, proto, self.pending, None)
        if not self.session.authorized:
            # The sender was refused mid-body (rate limit, disk full): the lines
            # after it are not stored, and each is answered with that refusal.
            refusal = _last_error(self.pending)
            code = refusal[0] if refusal else ""
            self.status = _SENDER_REFUSALS.get(code, 503)
            while True:
                try:
                    item = proto.next_event()
                except RemoteInputError:
                    item = {}  # a bad line is a line all the same
                if not isinstance(item, dict):
                    break
                if refusal:
                    self.pending.add(0, _error_line(*refusal))
        self.waiting = True
        self.server.waiting.add(self)
        self.on_durable(self.server.ledger.durable.seq)

    # ---- answering

    def on_durable(self, durable: int) -> None:
        if not self.waiting or not self.pending.all_due(durable):
            return
        self.server.waiting.discard(self)
        results = self.pending.take_due(durable)
        body = b"[" + b",".join(results.splitlines()) + b"]"
        self.waiting = False
        self._respond(self.status or 200, body, close=False)

    def _respond_error(self, status: int, code: str, detail: str, close: bool) -> None:
        body = json.dumps({"ok": False, "error": code, "detail": detail}).encode()
        self._respond(status, body, close)

    def _respond(self, status: int, body: bytes, close: bool) -> None:
        headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if close:
            headers.append((b"connection", b"close"))
        try:
            data = self.h11.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
            data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.finished = True  # the client's side is unusable: close after what was sent
            return
        self.send(data)
        self.status = 0
        self.discarding = 0
        if close or self.h11.our_state is h11.MUST_CLOSE or self.finished:
            self.finished = True
            return
        if self.h11.their_state is h11.DONE and self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
            self._events()  # a pipelined request already buffered
        elif self.h11.their_state is not h11.DONE:
            # Answered before the body ended (an early error): the rest is not read.
            self.finished = True

    def idle_reply(self, limit: float) -> bytes:
        return b""

    def overdue(self, now: float) -> bool:
        """A request head still incomplete after ingest.http.header_timeout_s: 408, close."""
        timeout = self.server.config.http.header_timeout_s
        if self.head_started is None or now - self.head_started <= timeout:
            return False
        self._respond_error(408, "timeout", f"the request head took over {timeout:g} s", True)
        return True

    def drain(self) -> None:
        """Shutdown: answer the request in progress once durable; read no more."""
        self.server.backlog.discard(self)
        self.finished = True
        if not self.closed:
            self.update_interest()


def _last_error(replies: ReplyQueue) -> tuple[str, str] | None:
    for item in reversed(replies.items):
        if isinstance(item, tuple):
            reply = json.loads(item[1])
            if not reply.get("ok"):
                return str(reply.get("error")), str(reply.get("detail"))
    return None


def _error_line(code: str, detail: str) -> bytes:
    return json.dumps({"ok": False, "error": code, "detail": detail}).encode() + b"\n"


def listen(server: IngestServer, source: str = "-") -> list[tuple[str, int]]:
    """Bind `ingest.http.listen` (plain) and `ingest.http.tls_listen` (HTTPS)."""
    config = server.config.http
    bound = [server.bind(a, None, connection=HttpConnection) for a in config.listen]
    if config.tls_listen:
        context = server.tls_context(source)
        bound += [server.bind(a, context, connection=HttpConnection) for a in config.tls_listen]
    return bound

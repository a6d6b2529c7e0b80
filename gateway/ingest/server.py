"""The TCP ingest server on the event loop: listeners, connections, replies.

Each connection runs an IngestProtocol (a SyslogProtocol on the listeners of
`ingest.syslog.listen`, which never get replies); every event goes through validation
into LedgerWriter.append (staged). Replies wait in a per-connection queue, in
line order, until the durability thread reports the batch that covers them;
then one send per connection carries all that became due.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.config import IngestConfig, parse_address
from gateway.errors import RemoteInputError
from gateway.ingest.limits import Policy
from gateway.ingest.protocol import EOF, Hello, IngestProtocol, bad_line
from gateway.ingest.redact import Redactor
from gateway.ingest.syslog import SyslogProtocol
from gateway.ingest.tls import WOULD_BLOCK, Handshake
from gateway.ingest.tls import server_context as server_tls_context
from gateway.ingest.tls import wrap as wrap_tls
from gateway.ingest.validate import validate_event
from gateway.ledger import entries
from gateway.ledger.store import MAX_BATCH_BYTES, LedgerWriter
from gateway.logs import RateLimitedLog
from gateway.loop import READ, WRITE, EventLoop

log = logging.getLogger("gateway.ops")
security_log = logging.getLogger("gateway.security")

# One recv takes up to 64 KiB: at ~200-byte events that is over 300 events
# per system call (the syscall is then a rounding error), and it bounds what
# one connection buffers beyond max_line_bytes. It is also what busy
# connections cost in memory: with 256 KiB, 512 connections at full speed held
# over 100 MB of unprocessed input (bench/RESULTS.md, scenario c).
RECV_BYTES = 64 * 1024

# Stop reading a connection while this many reply bytes wait for it to read
# them (about 13,000 acks): a client that does not read its acks gets
# backpressure instead of unbounded buffering.
OUTBUF_PAUSE_BYTES = 256 * 1024

# Accept at most this many connections per readiness event, so a connection
# flood cannot starve the connections already open.
ACCEPT_BATCH = 64

# A refused connection gets its one error line, then we read and discard what
# it sends for up to 2 s (so closing does not reset the line away), at most 256
# such sockets at a time.
LINGER_S = 2.0
MAX_LINGERING = 256

# Lines (events, refusals, the hello) handled per connection per loop turn:
# a connection with more waits for the next turn and is not read meanwhile.
# 512 small events are ~8 ms of work, so five busy senders make a ~40 ms turn.
ITEMS_PER_TURN = 512

# On shutdown, read at most this many chunks per connection: "what clients
# already sent" is what sits in the socket buffer, not an endless stream.
DRAIN_READS = 8

# Listen backlog: the kernel queues this many connections not yet accepted
# (at shutdown, that many are still taken in and drained).
LISTEN_BACKLOG = 1024


def bind_tcp(address: str, backlog: int) -> socket.socket:
    """A non-blocking listening TCP socket on HOST:PORT (IPv6 when the host has a colon)."""
    host, port = parse_address(address)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def json_line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class IngestStats:
    events: int = 0
    rejected: int = 0
    accepted_connections: int = 0
    refused_connections: int = 0
    idle_closed: int = 0


class Listener:
    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        address: str,
        tls: ssl.SSLContext | None = None,
        protocol: Callable[[int], Any] = IngestProtocol,
        replies: bool = True,
    ) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.tls = tls  # None: plain TCP
        self.protocol = protocol  # called with max_line_bytes for each connection
        self.replies = replies  # False: nothing is ever sent (syslog)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        self.accept(ACCEPT_BATCH)

    def accept(self, limit: int) -> None:
        for _ in range(limit):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, try again next turn
                log.error("accept failed", extra={"fields": {"error": str(exc)}})
                return
            self.server.accepted(sock, addr, self.tls, self.protocol, self.replies)

    def close(self) -> None:
        self.server.loop.remove(self)
        self.sock.close()

    def __repr__(self) -> str:
        return f"Listener({self.address})"


class Connection:
    __slots__ = (
        "addr",
        "app",
        "authorized",
        "cert_app",
        "closed",
        "conn_id",
        "events",
        "fd",
        "finished",
        "last_active",
        "outbuf",
        "pending",
        "port",
        "proto",
        "replies",
        "reply_mode",
        "server",
        "sock",
        "source",
    )

    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        addr: tuple,
        conn_id: int,
        cert_app: str | None = None,
        protocol: Callable[[int], Any] = IngestProtocol,
        replies: bool = True,
    ) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = str(addr[0])
        self.port = int(addr[1])
        self.conn_id = conn_id
        # The app named by a verified client certificate (mutual TLS), if any.
        self.cert_app = cert_app
        self.app: str | None = cert_app
        # May send events: with require_token, only after a hello whose token
        # checks (or with a verified client certificate).
        self.authorized = cert_app is not None or not server.policy.require_token
        self.proto = protocol(server.config.max_line_bytes)
        self.replies = replies  # False: never send anything, errors included (syslog)
        self.source = entries.encode_source(
            self.addr, self.port, cert_app, conn_id, authenticated=cert_app is not None
        )
        # Replies owed, in line order: an int is "ok" for that seq; a tuple is
        # (seq, reply bytes) for errors and the hello (seq 0: due at once).
        self.pending: collections.deque = collections.deque()
        self.reply_mode = False  # acknowledged mode (hello with "ack": true)
        self.outbuf = bytearray()
        self.events = 0  # selector interest currently registered
        self.finished = False  # no more input will be read (EOF, fatal error, shutdown)
        self.closed = False
        self.last_active = server.loop.clock()

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.server.close(self, linger=False)

    def __repr__(self) -> str:
        return f"Connection({self.conn_id} {self.addr}:{self.port})"

    def on_ready(self, mask: int) -> None:
        if mask & WRITE:
            self._write()
        if mask & READ and not self.closed:
            self._read()
        if not self.closed:
            self.update_interest()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_BYTES)
            if data and isinstance(self.sock, ssl.SSLSocket):
                # A TLS record decrypted but not read yet does not make the
                # socket readable again: take it now.
                while pending := self.sock.pending():
                    data += self.sock.recv(pending)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self.server.lost(self, exc)
            return
        self.last_active = self.server.loop.clock()
        self.proto.receive_data(data)
        self.server.process(self)

    def drain(self) -> None:
        """Shutdown: take in what the client already sent, then read no more."""
        self.server.backlog.discard(self)
        if not (self.finished or self.closed):
            self.server.process(self, budget=None)  # lines already buffered
        for _ in range(DRAIN_READS):
            if self.finished or self.closed:
                break
            try:
                data = self.sock.recv(RECV_BYTES)
            except WOULD_BLOCK:
                break
            except OSError as exc:
                self.server.lost(self, exc)
                return
            self.proto.receive_data(data)
            self.server.process(self, budget=None)
        if not self.closed and not self.finished:
            # The client has not closed its side, so a line still missing its
            # newline may be cut anywhere: record it as refused, without a reply.
            self.finished = True
            unfinished = self.proto.abandon()
            if unfinished is not None:
                self.server._reject(self, unfinished, self.server.wall_clock_us(), reply=False)
        if not self.closed:
            self.update_interest()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.outbuf:
            try:
                sent = self.sock.send(data)
            except WOULD_BLOCK:
                sent = 0
            except OSError as exc:
                self.server.lost(self, exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
        self.outbuf += data

    def _write(self) -> None:
        try:
            sent = self.sock.send(self.outbuf)
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self.server.lost(self, exc)
            return
        del self.outbuf[:sent]
        self.last_active = self.server.loop.clock()

    def update_interest(self) -> None:
        """Register for what the connection can use now; close it once it is done."""
        server = self.server
        if self.finished and not self.pending and not self.outbuf:
            server.close(self)
            return
        wanted = 0
        if (
            not self.finished
            and not server.paused
            and len(self.outbuf) < OUTBUF_PAUSE_BYTES
            and self not in server.backlog
        ):
            wanted = READ
        if self.outbuf:
            wanted |= WRITE
        if wanted != self.events:
            self.events = server.loop.set_interest(self, self.fd, self.events, wanted)


class _Lingerer:
    """A refused connection: its error line is sent; discard input until EOF or timeout."""

    def __init__(self, server: IngestServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.timer = server.loop.call_later(LINGER_S, self.close)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        try:
            if self.sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self in self.server.lingering:
            self.timer.cancel()
            self.server.lingering.discard(self)
            self.server.loop.remove(self)
            self.sock.close()


class IngestServer:
    def __init__(
        self,
        loop: EventLoop,
        ledger: LedgerWriter,
        config: IngestConfig,
        *,
        wall_clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.loop = loop
        self.ledger = ledger
        self.config = config
        self.wall_clock_us = wall_clock_us
        # Called with (seq, chain hash, payload, event) for every staged event
        # (the print spool's routing); None when nothing prints.
        self.on_event: Callable[[int, bytes, bytes, dict], None] | None = None
        self.policy = Policy(config)
        # Set by the service while free space is below ledger.min_free_bytes.
        self.disk_full = False
        # Set by the service from `redact:` (None: redaction off).
        self.redactor: Redactor | None = None
        self.listeners: list[Listener] = []
        self.connections: dict[int, Connection] = {}
        self.lingering: set[_Lingerer] = set()
        self.handshakes: set[Handshake] = set()  # TLS handshakes in progress
        self.waiting: set[Connection] = set()  # connections with replies not yet due
        # Connections with complete lines left over after their turn's budget.
        self.backlog: set[Connection] = set()
        loop.add_idle_hook(self._work_backlog)
        self.paused = False
        self.accepting = False
        self.stats = IngestStats()
        self._next_conn_id = 1
        self._security = RateLimitedLog(security_log)
        self._sweep_interval = max(0.5, min(5.0, config.idle_timeout_s / 10))

    def reconfigure(self, config: IngestConfig) -> None:
        """New limits (a reload): they apply to new connections and the next sweep.

        The listen addresses stay as bound (changing them needs a restart).
        """
        self.config = config
        self._sweep_interval = max(0.5, min(5.0, config.idle_timeout_s / 10))
        counts = self.policy.per_source
        self.policy = Policy(config)
        self.policy.per_source = counts

    # ---- listening

    def listen(self, source: str = "-") -> list[tuple[str, int]]:
        """Bind every configured address; returns the bound (host, port) pairs.

        Plain listeners first, then the TLS ones (`ingest.tls.listen`), then
        syslog's (`ingest.syslog.listen`).
        """
        bound = []
        tls = self.config.tls
        context = server_tls_context(tls, source) if tls.listen else None
        plain = [(a, None, IngestProtocol) for a in self.config.listen]
        secure = [(a, context, IngestProtocol) for a in tls.listen]
        syslog = [(a, None, SyslogProtocol) for a in self.config.syslog.listen]
        for address, context, protocol in [*plain, *secure, *syslog]:
            sock = bind_tcp(address, LISTEN_BACKLOG)
            replies = protocol is not SyslogProtocol
            listener = Listener(self, sock, address, context, protocol, replies)
            self.loop.add(listener, READ)
            self.listeners.append(listener)
            bound.append(sock.getsockname()[:2])
        self.accepting = True
        self.loop.call_later(self._sweep_interval, self._sweep)
        return bound

    def stop_accepting(self) -> None:
        """Close the listeners, first taking in the connections already queued.

        A client whose connection the kernel completed has written its events
        and may have closed; closing the listener would reset it unread.
        """
        self.accepting = False
        for listener in self.listeners:
            listener.accept(LISTEN_BACKLOG)
            listener.close()
        self.listeners.clear()

    def accepted(
        self,
        sock: socket.socket,
        addr: tuple,
        tls: ssl.SSLContext | None = None,
        protocol: Callable[[int], Any] = IngestProtocol,
        replies: bool = True,
    ) -> None:
        sock.setblocking(False)
        peer = str(addr[0])
        if not self.policy.allowed(peer):
            # Not one of ours: no reply at all, just the close.
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: source not allowed",
                {"peer": f"{peer}:{addr[1]}"},
                self.loop.clock(),
            )
            sock.close()
            return
        if self.policy.over_connection_cap(peer):
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: too many connections from this source",
                {"peer": f"{peer}:{addr[1]}", "limit": self.policy.max_per_source},
                self.loop.clock(),
            )
            self.refuse(
                sock,
                "too_many_connections_from_source",
                f"{self.policy.max_per_source} connections from {peer} are open already",
                send=replies,
            )
            return
        if len(self.connections) + len(self.handshakes) >= self.config.max_connections:
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: too many connections",
                {"peer": f"{addr[0]}:{addr[1]}", "limit": self.config.max_connections},
                self.loop.clock(),
            )
            self.refuse(
                sock,
                "too_many_connections",
                f"the gateway already has {self.config.max_connections} connections",
                send=replies,
            )
            return
        if tls is not None:
            self._handshake(tls, sock, addr)
            return
        self._admit(sock, addr, None, protocol, replies)

    def _handshake(self, context: ssl.SSLContext, sock: socket.socket, addr: tuple) -> None:
        try:
            tls_sock = wrap_tls(context, sock)
        except (OSError, ssl.SSLError) as exc:
            self._tls_failed(addr, str(exc))
            sock.close()
            return
        handshake = Handshake(
            self.loop, tls_sock, addr, self.config.tls.handshake_timeout_s, self._tls_done
        )
        self.handshakes.add(handshake)

    def _tls_done(self, handshake: Handshake, app: str | None, error: str) -> None:
        """A handshake ended: admit the connection, or log why it failed."""
        self.handshakes.discard(handshake)
        if error:
            self._tls_failed(handshake.addr, error)
        elif not self.accepting:
            handshake.sock.close()
        else:
            self._admit(handshake.sock, handshake.addr, app)

    def _tls_failed(self, addr: tuple, reason: str) -> None:
        self._security.warning(
            "TLS handshake failed",
            {"peer": f"{addr[0]}:{addr[1]}", "reason": reason},
            self.loop.clock(),
        )

    def _admit(
        self,
        sock: socket.socket,
        addr: tuple,
        cert_app: str | None = None,
        protocol: Callable[[int], Any] = IngestProtocol,
        replies: bool = True,
    ) -> None:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        conn = Connection(self, sock, addr, conn_id, cert_app, protocol, replies)
        self.connections[conn_id] = conn
        self.policy.per_source[conn.addr] += 1
        self.stats.accepted_connections += 1
        conn.update_interest()

    def refuse(self, sock: socket.socket, code: str, detail: str, *, send: bool = True) -> None:
        """One error line, then close: a refused client is never silently dropped.

        A syslog client (`send` False) reads nothing, so it gets only the close.
        """
        try:
            if send:
                sock.send(json_line({"ok": False, "error": code, "detail": detail}))
        except OSError:
            sock.close()
            return
        self._linger(sock)

    def _linger(self, sock: socket.socket) -> None:
        """Close gracefully: FIN after the last reply, then discard input until EOF.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy replies the client has not read yet.
        """
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self.lingering) >= MAX_LINGERING:
            sock.close()
            return
        lingerer = _Lingerer(self, sock)
        self.lingering.add(lingerer)
        self.loop.add(lingerer, READ)

    # ---- input

    def process(self, conn: Connection, budget: int | None = ITEMS_PER_TURN) -> None:
        """Turn complete lines in the connection's buffer into staged entries.

        At most `budget` items per call: a connection with more waits for the
        next loop turn (it is not read meanwhile), so that one fast sender
        cannot make a turn long for everybody else.
        """
        proto = conn.proto
        next_event = proto.next_event
        ledger = self.ledger
        append = ledger.append
        on_event = self.on_event
        encode = entries.encode_event
        validate = validate_event
        unsynced = entries.clock_unsynced()
        buckets = self.policy.buckets
        redactor = self.redactor
        pending = conn.pending
        received = self.wall_clock_us()
        source = conn.source
        reply_mode = conn.reply_mode
        events = 0
        left = budget if budget is not None else -1
        while True:
            if left == 0:
                self._defer(conn)
                break
            left -= 1
            try:
                item = next_event()
            except RemoteInputError as exc:
                self._reject(conn, exc, received)
                if exc.fatal:
                    conn.finished = True
                    break
                continue
            if item is None:
                break
            if type(item) is dict:
                if (
                    not conn.authorized
                    or self.disk_full
                    or (buckets is not None and not buckets.take(conn.addr, self.loop.clock()))
                ):
                    self._refuse_sender(conn, received)
                    break
                flags = validate(item)
                if redactor is not None and redactor.might_need(item, proto.last_line):
                    flags += redactor.event(item)
                if unsynced:
                    flags = [*flags, entries.CLOCK_UNSYNCED]
                payload = encode(received, source, item, flags)
                seq = append(payload)
                events += 1
                if on_event is not None:
                    on_event(seq, ledger.last_hash, payload, item)
                if reply_mode:
                    pending.append(seq)
                continue
            if item is EOF:
                conn.finished = True
                break
            assert isinstance(item, Hello)
            if not self._hello(conn, item):
                break
            source = conn.source
            reply_mode = conn.reply_mode
        self.stats.events += events
        if pending:
            self.waiting.add(conn)
            head = pending[0]
            if (head if type(head) is int else head[0]) <= self.ledger.durable.seq:
                self._flush(conn)
        if not self.paused and self.ledger.staged_bytes >= MAX_BATCH_BYTES:
            self._pause()

    def _defer(self, conn: Connection) -> None:
        """Come back to this connection's buffered lines on the next loop turn."""
        self.backlog.add(conn)
        self.loop.again()

    def _work_backlog(self) -> None:
        """Once per loop turn (an idle hook): one more budget for each connection set aside."""
        for conn in list(self.backlog):
            self.backlog.discard(conn)
            if not conn.closed:
                self.process(conn)
                if not conn.closed:
                    conn.update_interest()

    def _hello(self, conn: Connection, hello: Hello) -> bool:
        """Apply a hello; False (after one error line) if its token does not check."""
        if conn.cert_app is not None:
            # The certificate names the app: a hello may not claim another.
            refusal = "" if hello.app in (None, conn.cert_app) else "bad_token"
        else:
            refusal = self.policy.authenticate(hello.app, hello.token)
        if refusal:
            self.stats.rejected += 1
            self._security.warning(
                "hello refused: bad or missing token",
                {"peer": f"{conn.addr}:{conn.port}", "conn": conn.conn_id, "app": hello.app},
                self.loop.clock(),
            )
            detail = "the token is wrong, or missing for this app"
            conn.pending.append((0, json_line({"ok": False, "error": refusal, "detail": detail})))
            conn.finished = True
            return False
        conn.authorized = True
        if conn.cert_app is not None:
            hello = Hello(conn.cert_app, hello.ack, hello.token)
        conn.app = hello.app
        conn.reply_mode = hello.ack
        conn.source = entries.encode_source(
            conn.addr,
            conn.port,
            hello.app,
            conn.conn_id,
            authenticated=hello.token is not None or conn.cert_app is not None,
        )
        if hello.ack:
            # Acks are small and latency-bound: without NODELAY, Nagle plus the
            # peer's delayed ACK holds each reply back ~40 ms.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = {
            "ok": True,
            "version": __version__,
            "head_seq": self.ledger.durable.seq,
            "conn": conn.conn_id,
            "ack": hello.ack,
            "max_line_bytes": self.config.max_line_bytes,
        }
        conn.pending.append((0, json_line({"hello": reply})))
        return True

    def _refuse_sender(self, conn: Connection, received: int) -> None:
        """A line from a sender that may not send it: one error line, then close.

        Without a required token, nothing is recorded (an unauthenticated
        stranger must not fill the ledger); over the rate limit, the line is
        recorded as `rejected` (one per connection: it is closed right after)
        and the rest of its input is discarded.
        """
        line = conn.proto.last_line
        if not conn.authorized:
            code, detail = "token_required", "this gateway requires a hello with a token"
            exc = RemoteInputError(code, detail, fatal=True)
        elif self.disk_full:
            # Nothing can be stored, this line included: say so and close; the
            # client sends it again once the gateway takes events again.
            detail = "the gateway's storage is nearly full; nothing was stored from here on"
            exc = RemoteInputError("disk_full", detail, fatal=True)
        else:
            limit = self.policy.buckets
            assert limit is not None
            code = "rate_limited"
            detail = f"more than {limit.rate:g} events/s from {conn.addr}; closing"
            exc = bad_line(code, detail, line)
            exc.fatal = True
        self._reject(conn, exc, received)
        conn.finished = True

    def _reject(
        self, conn: Connection, exc: RemoteInputError, received: int, *, reply: bool = True
    ) -> None:
        self.stats.rejected += 1
        seq = 0
        if exc.length is not None:
            excerpt, digest, redacted = exc.excerpt or b"", exc.digest or b"", False
            if self.redactor is not None:
                excerpt, redacted = self.redactor.excerpt(excerpt)
                if redacted:
                    digest = self.redactor.keyed(digest)
            seq = self.ledger.append(
                entries.encode_rejected(
                    received,
                    conn.source,
                    exc.code,
                    exc.detail,
                    exc.length,
                    digest,
                    excerpt,
                    redacted,
                )
            )
        self._security.warning(
            "input refused",
            {
                "peer": f"{conn.addr}:{conn.port}",
                "conn": conn.conn_id,
                "error": exc.code,
                "seq": seq,
            },
            self.loop.clock(),
        )
        # Fire-and-forget clients get no reply; a bad hello is answered anyway,
        # since the client spoke the protocol and is about to be disconnected.
        if reply and conn.replies and (conn.reply_mode or exc.fatal):
            conn.pending.append((seq, exc.reply()))

    # ---- output

    def on_durable(self) -> None:
        """The durable head moved: send every reply that became due."""
        if self.waiting:
            for conn in list(self.waiting):
                self._flush(conn)
                if not conn.closed:
                    conn.update_interest()
        if self.paused and self.ledger.staged_bytes < MAX_BATCH_BYTES:
            self._resume()

    def _flush(self, conn: Connection) -> None:
        durable = self.ledger.durable.seq
        pending = conn.pending
        out = []
        while pending:
            head = pending[0]
            if type(head) is int:
                if head > durable:
                    break
                out.append(b'{"ok":true,"seq":%d}\n' % head)
            else:
                if head[0] > durable:
                    break
                out.append(head[1])
            pending.popleft()
        if not pending:
            self.waiting.discard(conn)
        if out:
            conn.send(b"".join(out))

    # ---- backpressure, idleness, closing

    def _pause(self) -> None:
        self.paused = True
        for conn in list(self.connections.values()):
            conn.update_interest()

    def _resume(self) -> None:
        self.paused = False
        for conn in list(self.connections.values()):
            conn.update_interest()

    def _sweep(self) -> None:
        now = self.loop.clock()
        limit = self.config.idle_timeout_s
        for conn in list(self.connections.values()):
            if now - conn.last_active > limit and not conn.pending:
                self.stats.idle_closed += 1
                if conn.reply_mode and not conn.outbuf:
                    conn.send(
                        json_line(
                            {
                                "ok": False,
                                "error": "idle_timeout",
                                "detail": f"no data for {limit:g} s",
                            }
                        )
                    )
                self.close(conn)
        if self.accepting:
            self.loop.call_later(self._sweep_interval, self._sweep)

    def lost(self, conn: Connection, exc: OSError) -> None:
        log.info(
            "connection lost",
            extra={
                "fields": {
                    "conn": conn.conn_id,
                    "peer": f"{conn.addr}:{conn.port}",
                    "error": str(exc),
                    "replies_dropped": len(conn.pending),
                }
            },
        )
        conn.pending.clear()
        conn.outbuf.clear()
        self.close(conn, linger=False)

    def close(self, conn: Connection, *, linger: bool = True) -> None:
        """Forget the connection; with `linger`, its socket closes gracefully."""
        if conn.closed:
            return
        conn.closed = True
        if conn.events:
            self.loop.set_interest(conn, conn.fd, conn.events, 0)
            conn.events = 0
        self.waiting.discard(conn)
        self.backlog.discard(conn)
        if self.connections.pop(conn.conn_id, None) is not None:
            counts = self.policy.per_source
            counts[conn.addr] -= 1
            if counts[conn.addr] <= 0:
                del counts[conn.addr]
        if linger and not conn.outbuf:
            self._linger(conn.sock)
        else:
            conn.sock.close()

    def drain_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.drain()

    def close_all(self) -> None:
        for conn in list(self.connections.values()):
            self.close(conn, linger=False)
        for lingerer in list(self.lingering):
            lingerer.close()
        for handshake in list(self.handshakes):
            handshake.close()

    @property
    def replies_owed(self) -> int:
        return sum(len(c.pending) + (1 if c.outbuf else 0) for c in self.connections.values())

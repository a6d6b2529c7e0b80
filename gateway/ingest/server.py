"""The TCP ingest front-end on the event loop: listeners, connections, readiness.

This module keeps sockets, readiness, fairness and backpressure only. Each
connection has a parser (IngestProtocol, or another front-end's), a Session
(who the client is, gateway/ingest/session.py) and a ReplyQueue; the Intake
(gateway/ingest/intake.py) turns parsed items into ledger entries and owed
replies. When the ledger publishes a durable head, one send per connection
carries every reply that became due. Connections on `ingest.syslog.listen`
parse syslog (gateway/ingest/syslog.py) and are never sent a byte.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import ssl
import struct
import termios
from collections.abc import Callable

from gateway.config import IngestConfig, parse_address
from gateway.ingest import replies as wire
from gateway.ingest.intake import DEFERRED, FINISHED, Intake
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ingest.tls import WOULD_BLOCK, Handshake
from gateway.ingest.tls import server_context as server_tls_context
from gateway.ingest.tls import wrap as wrap_tls
from gateway.ledger.commit import DurableBatch
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


class Listener:
    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        address: str,
        tls: ssl.SSLContext | None = None,
        protocol: Callable[[int], object] = IngestProtocol,
        connection: type[Connection] | None = None,
    ) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.tls = tls  # None: plain TCP
        # Makes a connection's parser from max_line_bytes: NDJSON, or another
        # front-end's line protocol with the same interface (syslog).
        self.protocol = protocol
        # The connection class: a line protocol (Connection) or HTTP.
        self.connection = connection or Connection

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
            self.server.accepted(sock, addr, self)

    def close(self) -> None:
        self.server.loop.remove(self)
        self.sock.close()

    def __repr__(self) -> str:
        return f"Listener({self.address})"


class Connection:
    __slots__ = (
        "addr",
        "closed",
        "conn_id",
        "events",
        "fd",
        "finished",
        "last_active",
        "nodelay",
        "outbuf",
        "pending",
        "port",
        "proto",
        "server",
        "session",
        "sock",
    )
    # Whether the client may be sent anything: error lines at accept included.
    replies = True

    def __init__(
        self,
        server: IngestServer,
        sock: socket.socket,
        addr: tuple,
        conn_id: int,
        cert_app: str | None = None,
        protocol: Callable[[int], object] = IngestProtocol,
    ) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = str(addr[0])
        self.port = int(addr[1])
        self.conn_id = conn_id
        self.session = Session(self.addr, self.port, conn_id, server.intake.policy, cert_app)
        self.proto = protocol(server.config.max_line_bytes)
        self.pending = ReplyQueue()  # replies owed, in line order
        self.nodelay = False
        self.outbuf = bytearray()
        self.events = 0  # selector interest currently registered
        self.finished = False  # no more input will be read (EOF, fatal error, shutdown)
        self.closed = False
        self.last_active = server.loop.time()

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

    def wants_read(self) -> bool:
        """Whether input may be read now (beyond the server's pause and backpressure)."""
        return True

    def on_durable(self, durable: int) -> None:
        """The durable head moved: send every reply that became due."""
        data = self.pending.take_due(durable)
        if not self.pending:
            self.server.waiting.discard(self)
        if data:
            self.send(data)

    def has_unread(self) -> bool:
        """Input waits for us: lines set aside for a later turn, in the TLS layer, or in
        the socket. (A partial line already read is not: a client that stops in the
        middle of a line is idle, as a slow drip is.)"""
        if self in self.server.backlog:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0] > 0
        except OSError:
            return False

    def overdue(self, now: float) -> bool:
        """Whether a front-end's own deadline has passed (it has then answered): close it."""
        return False

    def idle_reply(self, limit: float) -> bytes:
        """The last line for a connection closed as idle (ack-mode clients only)."""
        if self.session.ack and not self.outbuf:
            return wire.error("idle_timeout", f"no data for {limit:g} s")
        return b""

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
        self.last_active = self.server.loop.time()
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
                intake = self.server.intake
                intake.refuse(self.session, unfinished, None, intake.clock.wall_us())
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
        self.last_active = self.server.loop.time()

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
            and self.wants_read()
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
    def __init__(self, loop: EventLoop, intake: Intake, config: IngestConfig) -> None:
        self.loop = loop
        self.intake = intake
        self.ledger = intake.ledger
        self.config = config
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
        self.stats = intake.stats
        self._next_conn_id = 1
        self._security = RateLimitedLog(security_log)
        self._sweep_interval = max(0.5, min(5.0, config.idle_timeout_s / 10))

    @property
    def policy(self):
        return self.intake.policy

    def reconfigure(self, config: IngestConfig) -> None:
        """New limits (a reload): they apply to new connections and the next sweep.

        The listen addresses stay as bound (changing them needs a restart).
        """
        self.config = config
        self._sweep_interval = max(0.5, min(5.0, config.idle_timeout_s / 10))

    # ---- listening

    def listen(self, source: str = "-") -> list[tuple[str, int]]:
        """Bind every configured address; returns the bound (host, port) pairs.

        Plain listeners first, then the TLS ones (`ingest.tls.listen`). The other
        front-ends bind their own (http.listen, syslog.listen) through `bind`.
        """
        tls = self.config.tls
        context = self.tls_context(source) if tls.listen else None
        bound = [self.bind(address) for address in self.config.listen]
        bound += [self.bind(address, context) for address in tls.listen]
        self.accepting = True
        self.loop.call_later(self._sweep_interval, self._sweep)
        return bound

    def tls_context(self, source: str = "-") -> ssl.SSLContext:
        """The one certificate model of every TLS listener: `ingest.tls` cert and key."""
        return server_tls_context(self.config.tls, source)

    def bind(
        self,
        address: str,
        tls: ssl.SSLContext | None = None,
        protocol: Callable[[int], object] = IngestProtocol,
        connection: type[Connection] | None = None,
    ) -> tuple[str, int]:
        """Listen on HOST:PORT for one front-end; returns the bound (host, port).

        Every listener shares the admission rules (allow list, per-source and
        total connection caps, TLS handshakes), the idle sweep and shutdown.
        """
        sock = bind_tcp(address, LISTEN_BACKLOG)
        listener = Listener(self, sock, address, tls, protocol, connection)
        self.loop.add(listener, READ)
        self.listeners.append(listener)
        return sock.getsockname()[:2]

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

    def accepted(self, sock: socket.socket, addr: tuple, listener: Listener) -> None:
        sock.setblocking(False)
        peer = str(addr[0])
        if not self.policy.allowed(peer):
            # Not one of ours: no reply at all, just the close.
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: source not allowed",
                {"peer": f"{peer}:{addr[1]}"},
                self.loop.time(),
            )
            sock.close()
            return
        if self.policy.over_connection_cap(peer):
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: too many connections from this source",
                {"peer": f"{peer}:{addr[1]}", "limit": self.policy.max_per_source},
                self.loop.time(),
            )
            self.refuse(
                sock,
                "too_many_connections_from_source",
                f"{self.policy.max_per_source} connections from {peer} are open already",
                send=listener.connection.replies,
            )
            return
        if len(self.connections) + len(self.handshakes) >= self.config.max_connections:
            self.stats.refused_connections += 1
            self._security.warning(
                "connection refused: too many connections",
                {"peer": f"{addr[0]}:{addr[1]}", "limit": self.config.max_connections},
                self.loop.time(),
            )
            self.refuse(
                sock,
                "too_many_connections",
                f"the gateway already has {self.config.max_connections} connections",
                send=listener.connection.replies,
            )
            return
        if listener.tls is not None:
            self._handshake(listener, sock, addr)
            return
        self._admit(listener, sock, addr)

    def _handshake(self, listener: Listener, sock: socket.socket, addr: tuple) -> None:
        assert listener.tls is not None
        try:
            tls_sock = wrap_tls(listener.tls, sock)
        except (OSError, ssl.SSLError) as exc:
            self._tls_failed(addr, str(exc))
            sock.close()
            return
        handshake = Handshake(
            self.loop,
            tls_sock,
            addr,
            self.config.tls.handshake_timeout_s,
            lambda hs, app, error: self._tls_done(listener, hs, app, error),
        )
        self.handshakes.add(handshake)

    def _tls_done(
        self, listener: Listener, handshake: Handshake, app: str | None, error: str
    ) -> None:
        """A handshake ended: admit the connection, or log why it failed."""
        self.handshakes.discard(handshake)
        if error:
            self._tls_failed(handshake.addr, error)
        elif not self.accepting:
            handshake.sock.close()
        else:
            self._admit(listener, handshake.sock, handshake.addr, app)

    def _tls_failed(self, addr: tuple, reason: str) -> None:
        self._security.warning(
            "TLS handshake failed",
            {"peer": f"{addr[0]}:{addr[1]}", "reason": reason},
            self.loop.time(),
        )

    def _admit(
        self, listener: Listener, sock: socket.socket, addr: tuple, cert_app: str | None = None
    ) -> None:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        conn = listener.connection(self, sock, addr, conn_id, cert_app, listener.protocol)
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
                sock.send(wire.error(code, detail))
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
        """Hand the connection's buffered lines to the intake.

        At most `budget` items per call: a connection with more waits for the
        next loop turn (it is not read meanwhile), so that one fast sender
        cannot make a turn long for everybody else.
        """
        outcome = self.intake.feed(conn.session, conn.proto, conn.pending, budget)
        if outcome == DEFERRED:
            self._defer(conn)
        elif outcome == FINISHED:
            conn.finished = True
        if conn.session.ack and not conn.nodelay:
            # Acks are small and latency-bound: without NODELAY, Nagle plus the
            # peer's delayed ACK holds each reply back ~40 ms.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.nodelay = True
        pending = conn.pending
        if pending:
            self.waiting.add(conn)
            if pending.head_due(self.ledger.durable.seq):
                conn.on_durable(self.ledger.durable.seq)
        if not self.paused and self.ledger.backpressure:
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

    # ---- output

    def on_durable(self, batch: DurableBatch) -> None:
        """The durable head moved (a ledger subscriber): send every reply that became due."""
        if self.waiting:
            durable = batch.head.seq
            for conn in list(self.waiting):
                conn.on_durable(durable)
                if not conn.closed:
                    conn.update_interest()
        if self.paused and not self.ledger.backpressure:
            self._resume()

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
        now = self.loop.time()
        limit = self.config.idle_timeout_s
        for conn in list(self.connections.values()):
            if conn.overdue(now):
                conn.finished = True
                conn.update_interest()
                continue
            if now - conn.last_active > limit and not conn.pending:
                if conn.has_unread():
                    # Idle means no bytes: a client whose input waits unread (the
                    # gateway stalled, or paused reading) is not idle.
                    conn.last_active = now
                    continue
                self.stats.idle_closed += 1
                last = conn.idle_reply(limit)
                if last:
                    conn.send(last)
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

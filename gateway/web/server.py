"""The console's listeners and connections on the gateway's event loop, through h11.

`WebServer` binds `web.listen` (HTTP) and `web.tls_listen` (HTTPS with the
ingest.tls certificate and key, handshakes driven by the loop as for ingest),
reads one request at a time per connection with h11, hands it to the
sans-I/O `WebApp`, and writes the answer. Work the app hands back (password
hashes, index queries, export chunks) runs on two fixed worker threads
("web-hash", "web-pages"); each result comes back through `loop.post`, so
every socket and every piece of console state is touched only on the loop.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11

from gateway import zone
from gateway.ingest import tls
from gateway.ingest.server import bind_tcp
from gateway.loop import READ, WRITE, EventLoop
from gateway.statedir import raise_fd_limit
from gateway.web import certificate
from gateway.web.app import CSP, Later, Request, Response, WebApp, Work
from gateway.web.seqmap import MapFollower
from gateway.web.verifyrun import BackgroundVerify

log = logging.getLogger("gateway.ops")

# A request head over 16 KiB is refused with 431 (a browser sends 1-2 KiB;
# cookies here are one 43-character session id). It also bounds h11's buffer.
MAX_HEADER_BYTES = 16 * 1024
# A form body over 64 KiB is refused with 413: the largest form, anchors
# typed from paper, is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
# A request head must be complete within 10 s (as ingest.http's default), and
# a keep-alive connection with no request for 60 s is closed: browsers keep
# idle connections about that long and reopen them at no cost.
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
# Connections at once, across every web listener: a handful of users with six
# connections each need 50; 1,000 leaves room for 500 idle ones (the issue's
# test) while a user is served. When full, the connection idle longest makes room.
MAX_CONNECTIONS = 1000
LISTEN_BACKLOG = 128
# Timeouts are looked at once a second; failed-login summaries and the
# dashboard charts' samples every 30 s (120 points make the hour).
SWEEP_S = 1.0
TICK_S = 30.0
RECV_BYTES = 65536
# An export's next chunk is asked for when less than this much is unsent.
LOW_WATER_BYTES = 64 * 1024
TLS_HANDSHAKE_TIMEOUT_S = 10.0

REASONS = {
    200: b"OK",
    303: b"See Other",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}

SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
]


def certificate_fingerprint(cert_path: str) -> str:
    """SHA-256 of a PEM certificate, colon-separated (gateway/web/certificate.py)."""
    return certificate.fingerprint(cert_path)


class GatewayBackend:
    """The console's view of a running gateway (gateway/service.py's Gateway)."""

    def __init__(self, gateway: Any) -> None:
        self.gw = gateway
        self.state_dir = gateway.config.state_dir

    def status(self) -> dict[str, Any]:
        return self.gw.health.status()

    def record(self, name: str, detail: dict[str, Any]) -> None:
        self.gw.ledger.system(name, detail)

    def status_page(self, printer: str | None, by: str) -> dict[str, Any]:
        if self.gw.spool is None:
            return {"ok": False, "error": "no printers are configured"}
        return self.gw.spool.request_status_page(printer, by)

    def reprint(self, seq: int, by: str, reply: Callable[[dict], None]) -> None:
        if self.gw.spool is None:
            reply({"ok": False, "error": "no printers are configured"})
            return
        self.gw.spool.request_reprint(seq, None, by, reply)

    def report(self, date: dt.date, by: str, reply: Callable[[dict], None]) -> None:
        if self.gw.spool is None:
            reply({"ok": False, "error": "no printers are configured"})
            return
        self.gw.spool.request_report(date, None, by, reply)

    def zone(self) -> tuple[dt.tzinfo, str]:
        name = self.gw.config.zone_name
        return zone.get(name), name


class WebServer:
    def __init__(self, loop: EventLoop, config: Any, app: WebApp, tls_source: str = "-") -> None:
        self.loop = loop
        self.config = config  # WebConfig
        self.app = app
        self.tls_config = None
        self.tls_source = tls_source
        self.state_dir: Path | None = None
        self.bound: list[tuple[str, int]] = []
        self.listeners: list[_Listener] = []
        self.connections: set[WebConnection] = set()
        self.handshakes: set[tls.Handshake] = set()
        self.pools = {
            "pages": concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-pages"),
            "hash": concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-hash"),
        }
        self._sweeper = None
        self._ticker = None
        self.closed = False
        # Keeps the app's seq-to-offset map built ahead of the pages (gateway/web/seqmap.py);
        # started by the first durable batch, once the ledger is open.
        self.follower: MapFollower | None = None

    @classmethod
    def for_gateway(cls, gateway: Any) -> WebServer | None:
        """The console of a gateway, or None when `web.listen` and `web.tls_listen` are empty."""
        config = gateway.config
        web = config.web
        if not web.listen and not web.tls_listen:
            return None
        backend = GatewayBackend(gateway)
        loop = gateway.loop
        verifier = BackgroundVerify(
            config.state_dir, loop.post, backend.zone, loop.time, config.name
        )
        app = WebApp(backend, loop.time, verifier)
        server = cls(loop, web, app, config.source)
        server.tls_config = config.ingest.tls
        server.state_dir = config.state_dir
        app.seqmap.store_dir = config.state_dir / "web-seqmap"  # sealed segments' maps
        server.follower = MapFollower(app.seqmap)
        return server

    def on_durable(self, batch: Any) -> None:
        """The ledger's subscriber (gateway/service.py): the map follows the durable head."""
        follower = self.follower
        if follower is None or self.closed:
            return
        if not follower.started:
            follower.head = batch.head.seq
            follower.start()
        follower.on_durable(batch.head.seq)

    def listen(self) -> list[tuple[str, int]]:
        raise_fd_limit(MAX_CONNECTIONS + 512)
        bound = []
        for address in self.config.listen:
            bound.append(self._bind(address, None))
        if self.config.tls_listen:
            assert self.tls_config is not None
            tls_config = self.tls_config
            if not (tls_config.cert and tls_config.key):
                assert self.state_dir is not None
                cert, key = certificate.self_signed(self.state_dir, self.tls_source)
                tls_config = dataclasses.replace(tls_config, cert=cert, key=key, client_ca="")
            else:
                # Browsers carry no client certificate: ingest's client_ca is not asked here.
                tls_config = dataclasses.replace(tls_config, client_ca="")
            context = tls.server_context(tls_config, self.tls_source)
            self.app.fingerprint = certificate.fingerprint(tls_config.cert)
            for address in self.config.tls_listen:
                bound.append(self._bind(address, context))
        self.bound = bound
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)
        self._ticker = self.loop.call_later(TICK_S, self._tick)
        self.loop.call_later(SWEEP_S, self.app.sample)  # the charts' first point, once running
        return bound

    def _bind(self, address: str, context: ssl.SSLContext | None) -> tuple[str, int]:
        sock = bind_tcp(address, LISTEN_BACKLOG)
        listener = _Listener(self, sock, context)
        self.loop.add(listener, READ)
        self.listeners.append(listener)
        return sock.getsockname()[:2]

    def statistics(self) -> dict[str, Any]:
        stats = self.app.statistics()
        return {
            "listen": [f"{h}:{p}" for h, p in self.bound],
            "tls_fingerprint": self.app.fingerprint,
            "connections": len(self.connections),
            "requests": stats.requests,
            "sessions": stats.sessions,
            "logins": stats.logins,
            "failed_logins": stats.failed_logins,
            "refused_csrf": stats.refused_csrf,
            "refused_origin": stats.refused_origin,
            "seqmap": self._seqmap_statistics(),
        }

    def _seqmap_statistics(self) -> dict[str, Any]:
        stats = self.app.seqmap.statistics()
        built = self.follower.built_s if self.follower is not None else None
        stats["built_s"] = None if built is None else round(built, 2)
        return stats

    # ---- accepting

    def accepted(self, sock: socket.socket, addr: tuple, context: ssl.SSLContext | None) -> None:
        if len(self.connections) + len(self.handshakes) >= MAX_CONNECTIONS:
            idle = [c for c in self.connections if c.idle]
            if not idle:
                sock.close()
                return
            min(idle, key=lambda c: c.last_active).close()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is None:
            self.connections.add(WebConnection(self, sock, addr, False))
            return
        try:
            wrapped = tls.wrap(context, sock)
        except (ssl.SSLError, OSError):
            sock.close()
            return
        self.handshakes.add(
            tls.Handshake(self.loop, wrapped, addr, TLS_HANDSHAKE_TIMEOUT_S, self._tls_done)
        )

    def _tls_done(self, handshake: tls.Handshake, _app: str | None, error: str) -> None:
        self.handshakes.discard(handshake)
        if error or self.closed:
            return
        self.connections.add(WebConnection(self, handshake.sock, handshake.addr, True))

    # ---- timers

    def _sweep(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _tick(self) -> None:
        if self.closed:
            return
        self.app.tick()
        self.app.sample()
        self._ticker = self.loop.call_later(TICK_S, self._tick)

    # ---- work on the worker threads

    def submit(
        self, pool: str, job: Callable[[], Any], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        if self.closed:
            return
        future = self.pools[pool].submit(job)

        def finished(f: concurrent.futures.Future) -> None:
            if self.closed or f.cancelled():
                return  # stopping: the loop may be gone, and nobody waits for the answer
            error = f.exception()
            result = None if error is not None else f.result()
            self.loop.post(lambda: done(result, error))

        future.add_done_callback(finished)

    def close(self) -> None:
        """Stop: summaries recorded, listeners and connections closed, workers ended."""
        if self.closed:
            return
        self.app.flush()
        self.closed = True
        for listener in self.listeners:
            listener.close()
        for handshake in list(self.handshakes):
            handshake.close()
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.follower is not None:
            self.follower.close()


class _Listener:
    def __init__(self, server: WebServer, sock: socket.socket, context: ssl.SSLContext | None):
        self.server = server
        self.sock = sock
        self.context = context
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        # A few at a time, so that a flood of connects cannot starve the loop.
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("web accept failed", extra={"fields": {"error": str(exc)}})
                return
            self.server.accepted(sock, addr, self.context)

    def close(self) -> None:
        self.server.loop.remove(self)
        self.sock.close()


class WebConnection:
    """One browser connection: one request at a time, keep-alive, answers possibly streamed."""

    def __init__(self, server: WebServer, sock: socket.socket, addr: tuple, secure: bool) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.addr = addr
        self.secure = secure
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.outbuf = bytearray()
        self.closed = False
        self.busy = False  # a request is being answered: nothing more is read
        self.close_after = False
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.too_large = False
        self.stream: Any = None
        self.pulling = False
        self.head_started: float | None = None
        self.last_active = self.loop.time()
        self.events = READ
        self.loop.add(self, READ)

    @property
    def idle(self) -> bool:
        return not self.busy and self.head_started is None and not self.outbuf

    def fileno(self) -> int:
        return self.sock.fileno()

    def __repr__(self) -> str:
        return f"<WebConnection {self.addr}>"

    # ---- the loop's side

    def on_ready(self, mask: int) -> None:
        if mask & WRITE:
            self._write()
        if mask & READ and not self.closed and not self.busy:
            self._read()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self.close()
            return
        self.last_active = self.loop.time()
        if data and self.head_started is None:
            self.head_started = self.last_active
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError:
            pass  # next_event raises it again
        self._events()

    def _events(self) -> None:
        while not self.closed and not self.busy:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._error(exc.error_status_hint, "bad request")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self.close()
                return
            if isinstance(event, h11.Request):
                # h11 bounds a head still incomplete; one that came whole in a
                # single read is measured here, so the limit holds either way.
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > MAX_HEADER_BYTES:
                    self._error(431, f"the request head is over {MAX_HEADER_BYTES} bytes")
                    return
                self.request = event
                self.body.clear()
                self.too_large = False
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                    self._error(413, f"a form body is at most {MAX_BODY_BYTES} bytes")
                    return
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > MAX_BODY_BYTES:
                    self._error(413, f"a form body is at most {MAX_BODY_BYTES} bytes")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()

    def _dispatch(self) -> None:
        assert self.request is not None
        self.head_started = None
        self.busy = True
        req = self.request
        headers: dict[str, str] = {}
        for name, value in req.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}; {text}" if key == "cookie" and key in headers else text
        request = Request(
            req.method.decode("ascii", "replace"),
            req.target.decode("latin-1"),
            headers,
            bytes(self.body),
            str(self.addr[0]),
            self.secure,
        )
        self.body.clear()
        self._update_interest()
        try:
            answer = self.server.app.handle(request)
        except Exception:
            log.exception("web request failed", extra={"fields": {"target": request.target[:200]}})
            answer = Response(500, b"internal error\n", "text/plain; charset=utf-8")
        self._answer(answer, request.method == "HEAD")

    def _answer(self, answer: Response | Work | Later, head: bool) -> None:
        if isinstance(answer, Later):
            answered = False

            def respond(response: Response) -> None:
                nonlocal answered
                if not answered and not self.closed:
                    answered = True
                    self._answer(response, head)

            answer.start(respond)
            return
        if isinstance(answer, Work):
            then = answer.then

            def done(result: Any, error: BaseException | None) -> None:
                if self.closed:
                    return
                if error is not None:
                    log.error("web work failed", exc_info=error)
                    self._answer(Response(500, b"internal error\n", "text/plain"), head)
                    return
                try:
                    response = then(result)
                except Exception:
                    log.exception("web request failed")
                    response = Response(500, b"internal error\n", "text/plain")
                self._answer(response, head)

            self.server.submit(answer.pool, answer.job, done)
            return
        if answer.not_before > self.loop.time():
            self.loop.call_at(answer.not_before, lambda: self._send(answer, head))
            return
        self._send(answer, head)

    def _send(self, response: Response, head: bool) -> None:
        if self.closed:
            return
        headers = [(k, v) for k, v in SECURITY_HEADERS]
        headers.append(("content-type", response.content_type))
        if not any(k == "cache-control" for k, _ in response.headers):
            headers.append(("cache-control", "no-store"))
        headers += response.headers
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        if self.server.closed:
            headers.append(("connection", "close"))
        try:
            data = self.h11.send(
                h11.Response(
                    status_code=response.status,
                    headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                    reason=REASONS.get(response.status, b""),
                )
            )
            if response.stream is not None and not head:
                self.outbuf += data
                self.stream = response.stream
                self._flush()
                self._pull()
                return
            if response.stream is not None:
                self.server.submit("pages", response.stream.close, lambda _r, _e: None)
            if response.body and not head:
                data += self.h11.send(h11.Data(data=response.body))
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.close_after = True
            self._finish()
            return
        self.outbuf += data
        self._finish()

    def _pull(self) -> None:
        """The next chunk of a stream, from the pages thread, once the socket has taken most."""
        if self.stream is None or self.pulling or len(self.outbuf) > LOW_WATER_BYTES:
            return
        self.pulling = True
        stream = self.stream

        def job() -> bytes | None:
            return next(stream, None)

        def done(chunk: bytes | None, error: BaseException | None) -> None:
            self.pulling = False
            if self.closed:
                return
            if error is not None:
                # The response has begun: it can only be cut short, which the
                # client sees as an incomplete download (chunked, no final chunk).
                log.error("web export failed", exc_info=error)
                self.stream = None
                self.close()
                return
            if chunk is None:
                self.stream = None
                self.outbuf += self.h11.send(h11.EndOfMessage())
                self._finish()
                return
            if chunk:
                self.outbuf += self.h11.send(h11.Data(data=chunk))
            self._flush()
            self._pull()

        self.server.submit("pages", job, done)

    def _finish(self) -> None:
        """The answer is whole: on to the next request, or close once written."""
        self.busy = False
        if (
            not self.close_after
            and self.h11.our_state is h11.DONE
            and self.h11.their_state is h11.DONE
        ):
            self.h11.start_next_cycle()
        else:
            self.close_after = True
        self._flush()
        if not self.closed and not self.close_after:
            self._events()  # a pipelined request already buffered

    def _error(self, status: int, text: str) -> None:
        """Answer a request h11 could not take (or that breaks a limit), then close.

        Written by hand: after a protocol error h11 has no request to answer.
        """
        self.close_after = True
        self.busy = True
        self.head_started = None
        body = (text + "\n").encode()
        head = f"HTTP/1.1 {status} {REASONS.get(status, b'').decode()}\r\n"
        for key, value in SECURITY_HEADERS:
            head += f"{key}: {value}\r\n"
        head += (
            f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.outbuf += head.encode() + body
        self.busy = False
        self._flush()

    def _flush(self) -> None:
        if self.outbuf and not self.closed:
            self._write()
        elif not self.outbuf and self.close_after and not self.busy and self.stream is None:
            self.close()
        else:
            self._update_interest()

    def _write(self) -> None:
        try:
            sent = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            sent = 0
        except OSError:
            self.close()
            return
        del self.outbuf[:sent]
        if sent:
            self.last_active = self.loop.time()
        if not self.outbuf:
            if (
                self.close_after
                and self.stream is None
                and (not self.busy or self.h11.our_state is not h11.SEND_BODY)
            ):
                self.close()
                return
            self._pull()
        self._update_interest()

    def _update_interest(self) -> None:
        if self.closed:
            return
        wanted = (WRITE if self.outbuf else 0) | (0 if self.busy or self.close_after else READ)
        self.events = self.loop.set_interest(self, self.sock.fileno(), self.events, wanted)

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        if self.head_started is not None and not self.busy:
            if now - self.head_started > HEADER_TIMEOUT_S:
                self._error(408, f"the request head took over {HEADER_TIMEOUT_S:g} s")
        elif self.idle and now - self.last_active > IDLE_TIMEOUT_S:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            stream, self.stream = self.stream, None
            self.server.submit("pages", stream.close, lambda _r, _e: None)
        self.server.connections.discard(self)
        if self.events:
            try:
                self.loop.selector.unregister(self.sock.fileno())
            except (KeyError, ValueError):
                pass
            self.events = 0
        try:
            self.sock.close()
        except OSError:
            pass

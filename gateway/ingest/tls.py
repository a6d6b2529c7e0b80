"""TLS for ingest: the server context, and handshakes driven by the event loop.

The standard library's ssl does the work; the loop never blocks on it: each
accepted socket is wrapped with do_handshake_on_connect=False and this handler
calls do_handshake() whenever the socket is ready, until it succeeds, fails or
times out. Then the connection is an ordinary ingest connection over the
SSLSocket (docs/protocol.md, "TLS").
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from gateway.config import TlsConfig
from gateway.errors import ConfigError
from gateway.loop import READ, WRITE, EventLoop

# Errors that mean "try again when the socket is ready", like BlockingIOError.
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def server_context(config: TlsConfig, source: str) -> ssl.SSLContext:
    """TLS 1.2 or newer with the standard library's defaults; ConfigError if files are bad."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.cert, config.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(source, "ingest.tls.cert", f"cannot load cert/key: {exc}") from None
    if config.client_ca:
        try:
            context.load_verify_locations(config.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(source, "ingest.tls.client_ca", f"cannot load: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(sock: ssl.SSLSocket) -> str | None:
    """The peer certificate's subject common name (a verified client's app name)."""
    cert = sock.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class Handshake:
    """One TLS handshake in progress; ends with done(self, app, error) exactly once.

    `app` is the verified client certificate's common name (None without a
    client certificate); `error` is '' on success.
    """

    def __init__(
        self,
        loop: EventLoop,
        sock: ssl.SSLSocket,
        addr: tuple,
        timeout_s: float,
        done: Callable[[Handshake, str | None, str], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.addr = addr
        self.done = done
        self.events = READ
        self.finished = False
        self.timer = loop.call_later(timeout_s, lambda: self._fail("handshake timed out"))
        loop.add(self, READ)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(READ)
            return
        except ssl.SSLWantWriteError:
            self._want(WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(f"handshake failed: {exc}")
            return
        self._detach()
        verified = self.sock.context.verify_mode == ssl.CERT_REQUIRED
        self.done(self, common_name(self.sock) if verified else None, "")

    def _want(self, events: int) -> None:
        if events != self.events:
            self.loop.modify(self, events)
            self.events = events

    def _detach(self) -> None:
        self.finished = True
        self.timer.cancel()
        self.loop.remove(self)

    def _fail(self, reason: str) -> None:
        if self.finished:
            return
        self._detach()
        try:
            self.sock.close()
        except OSError:
            pass
        self.done(self, None, reason)

    def close(self) -> None:  # shutdown, or the loop after a handler raised
        self._fail("closed")


def wrap(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

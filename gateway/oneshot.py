"""One request, one answer, then close: the shape of control and metrics clients.

`OneShotListener` is the listening socket on the event loop: it accepts, keeps
at most `max_clients` at once, and hands each new socket to its subclass.
`OneShot` is one accepted client: the subclass says when the request is
complete (`received`) and answers with `respond`; the request is bounded in
size and time, and the socket is closed after the answer is written (or on any
error).
"""

from __future__ import annotations

import abc
import socket

from gateway.loop import READ, WRITE, EventLoop


class OneShot(abc.ABC):
    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        clients: set,
        max_request_bytes: int,
        timeout_s: float,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.clients = clients
        self.max_request_bytes = max_request_bytes
        self.inbuf = b""
        self.outbuf = b""
        self.answered = False
        # After the answer: discard what the client still sends until it closes,
        # so that closing does not reset the connection and destroy the answer
        # (a client whose request was too long is usually still writing it).
        self.discarding = False
        self.started = loop.time()
        self.timer = loop.call_later(timeout_s, self.close)
        clients.add(self)
        loop.add(self, READ)

    # -- for subclasses
    @abc.abstractmethod
    def received(self, data: bytes) -> None:
        """Everything read so far; answer with respond() once the request is whole."""

    def overflowed(self) -> None:
        """The request grew past max_request_bytes: by default, just close."""
        self.close()

    def respond(self, data: bytes) -> None:
        if self.answered or self.sock.fileno() < 0:
            return
        self.answered = True
        self.outbuf = data
        self.loop.modify(self, WRITE)

    # -- the loop's side
    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        if mask & WRITE:
            self._write()
            return
        if self.discarding:
            self._discard()
            return
        try:
            data = self.sock.recv(self.max_request_bytes)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.inbuf += data
        if len(self.inbuf) > self.max_request_bytes:
            self.overflowed()
            return
        self.received(self.inbuf)

    def _write(self) -> None:
        try:
            n = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.outbuf = self.outbuf[n:]
        if not self.outbuf:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()
                return
            self.discarding = True
            self.loop.modify(self, READ)

    def _discard(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            return  # more may come: the client timeout bounds how long we wait
        except OSError:
            pass
        self.close()  # EOF: the client has read the answer and closed

    def close(self) -> None:
        if self in self.clients:
            self.clients.discard(self)
            self.timer.cancel()
            self.loop.remove(self)
            self.sock.close()


class OneShotListener(abc.ABC):
    def __init__(self, loop: EventLoop, max_clients: int) -> None:
        self.loop = loop
        self.max_clients = max_clients
        self.sock: socket.socket | None = None
        self.clients: set[OneShot] = set()

    @abc.abstractmethod
    def client(self, sock: socket.socket) -> None:
        """Start serving an accepted, non-blocking socket (a OneShot of the subclass)."""

    def serve(self, sock: socket.socket) -> None:
        """Take requests on a bound, listening socket."""
        sock.setblocking(False)
        self.sock = sock
        self.loop.add(self, READ)

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self.clients) >= self.max_clients:
            # Full: the client that has waited longest without finishing its
            # request makes room, so that slow or silent clients cannot lock
            # the real ones (a Prometheus scraper, the CLI) out.
            waiting = [c for c in self.clients if not c.answered]
            if not waiting:
                conn.close()
                return
            min(waiting, key=lambda c: c.started).close()
        conn.setblocking(False)
        self.client(conn)

    def close(self) -> None:
        for client in list(self.clients):
            client.close()
        if self.sock is not None:
            self.loop.remove(self)
            self.sock.close()
            self.sock = None

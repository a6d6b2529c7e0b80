"""Delivering one job's bytes: raw TCP (AppSocket / port 9100) and files.

A delivery is one attempt. The event loop owns its socket; the spool gets
exactly one `Result` per attempt through `on_done`, and decides about retries.
`sent` counts bytes handed to the kernel: when an attempt fails with `sent > 0`
the printer may have printed part of the job, so the spool marks the next copy
"REPRINT - delivery uncertain".
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.loop import READ, WRITE, EventLoop, Timer
from gateway.printing.uri import WAITEOF_S, PrinterURI

# Hand the kernel at most 64 KiB per send: keeps each loop turn short.
SEND_CHUNK = 64 * 1024
# Once a job is handed to the kernel, look at what the printer has taken every
# 20 ms: short against a receipt's print time, cheap for one socket per printer.
DRAIN_POLL_S = 0.02


@dataclass(frozen=True)
class Result:
    ok: bool
    sent: int
    error: str = ""


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class SocketDelivery:
    """socket://: non-blocking connect, send with backpressure, half-close, wait for EOF.

    Bytes handed to the kernel are not bytes the printer took: the end of a job
    is judged by the socket's send queue (SIOCOUTQ: bytes not yet acknowledged
    by the printer), polled every 20 ms once everything is handed over. The job
    is delivered when the queue is empty and the printer closed its side (or,
    as CUPS does, when it stays open for WAITEOF_S after the queue emptied).
    A printer that stops reading (a zero window) makes no progress for
    `stall_timeout_s` and fails the attempt. Without `waiteof`, an empty send
    queue is enough.

    What TCP cannot tell: a printer whose kernel acknowledged the data and whose
    firmware then discarded it unread looks exactly like a printed job.
    """

    def __init__(
        self,
        loop: EventLoop,
        uri: PrinterURI,
        data: bytes,
        on_done: Callable[[Result], None],
        stall_timeout_s: float,
    ) -> None:
        self.loop = loop
        self.uri = uri
        self.data = memoryview(data)
        self.on_done = on_done
        self.stall_timeout_s = stall_timeout_s
        self.sent = 0
        self.phase = "connect"  # connect | send | drain | done
        self.sock: socket.socket | None = None
        self.timer: Timer | None = None  # connect timeout, then the stall timer
        self.registered = 0
        self.eof = False
        self.outq = -1  # bytes the printer has not acknowledged, at the last poll
        self.progress_at = 0.0
        self.drained_at: float | None = None

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def start(self) -> None:
        try:
            infos = socket.getaddrinfo(self.uri.host, self.uri.port, type=socket.SOCK_STREAM)
        except OSError as exc:  # a host name that does not resolve (numeric hosts never block)
            self._finish(False, f"cannot resolve {self.uri.host}: {exc}")
            return
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        # Keepalive: a printer that vanishes mid-wait is noticed by the kernel.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock = sock
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            self._finish(False, f"connect: {os.strerror(code)}")
            return
        self._arm(self.uri.contimeout_s, "connect timed out")
        self._interest(WRITE)

    def abort(self) -> None:
        if self.phase != "done":
            self._finish(False, "aborted", notify=False)

    def _interest(self, events: int) -> None:
        if self.registered == events:
            return
        if not self.registered:
            self.loop.add(self, events)
        elif events:
            self.loop.modify(self, events)
        else:
            self.loop.remove(self)
        self.registered = events

    def _arm(self, seconds: float, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, lambda: self._finish(False, reason))

    def on_ready(self, mask: int) -> None:
        sock = self.sock
        assert sock is not None
        if self.phase == "connect":
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._finish(False, f"connect: {os.strerror(code)}")
                return
            self.phase = "send"
            self._arm(self.stall_timeout_s, "printer stopped reading")
        if self.phase == "send":
            self._send()
        elif self.phase == "drain" and mask & READ:
            try:
                data = sock.recv(4096)  # status bytes some printers send: discarded
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(False, f"after sending: {exc.strerror or exc}")
                return
            if not data:
                self.eof = True
                self._interest(0)  # EOF stays readable; the poll takes it from here
                self._poll()

    def _send(self) -> None:
        sock = self.sock
        assert sock is not None
        while self.sent < len(self.data):
            try:
                n = sock.send(self.data[self.sent : self.sent + SEND_CHUNK])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(False, f"send: {exc.strerror or exc}")
                return
            self.sent += n
            self._arm(self.stall_timeout_s, "printer stopped reading")
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._finish(False, f"shutdown: {exc.strerror or exc}")
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "drain"
        self.progress_at = self.loop.clock()
        self._interest(READ if self.uri.waiteof else 0)
        self._poll()

    def _poll(self) -> None:
        """The drain phase: delivered, still draining, stalled, or reset?"""
        if self.phase != "drain":
            return
        sock = self.sock
        assert sock is not None
        now = self.loop.clock()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._finish(False, f"after sending: {os.strerror(code)}")
            return
        outq = _unacknowledged(sock)
        if self.outq < 0 or outq < self.outq:
            self.progress_at = now
        self.outq = outq
        if outq == 0:
            if self.drained_at is None:
                self.drained_at = now
            if self.eof or not self.uri.waiteof or now - self.drained_at >= WAITEOF_S:
                self._finish(True, "")
                return
        elif now - self.progress_at >= self.stall_timeout_s:
            self._finish(False, "printer stopped reading")
            return
        elif self.eof:
            # The printer closed but has not acknowledged everything: a reset
            # (data thrown away) usually follows; wait for it or for the bytes.
            pass
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(DRAIN_POLL_S, self._poll)

    def _finish(self, ok: bool, error: str, notify: bool = True) -> None:
        if self.phase == "done":
            return
        self.phase = "done"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.registered:
            self._interest(0)
        if self.sock is not None:
            if not ok:
                # Reset, do not just close: after close() the kernel would keep
                # delivering the queued rest of a failed attempt in the background,
                # and a late, complete, unmarked copy could come out after the retry.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.sock.close()
        if notify:
            self.on_done(Result(ok, self.sent, error))

    def close(self) -> None:  # the loop calls this if a handler raised
        self.abort()


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes in the socket's send queue: handed to the kernel, not acknowledged."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def write_job_file(directory: Path, name: str, data: bytes) -> Path:
    """file: one job, one file, atomically (temporary name, fsync, rename, fsync dir).

    Runs in the print worker thread, never on the event loop.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final

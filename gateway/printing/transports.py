"""Delivering one job's bytes: raw TCP (AppSocket / port 9100) and files.

A delivery is one attempt. The event loop owns its socket; the spool gets
exactly one `Result` per attempt through `on_done`, and decides about retries.
`sent` counts bytes handed to the kernel: when an attempt fails with `sent > 0`
the printer may have printed part of the job, so the spool marks the next copy
"REPRINT - delivery uncertain".
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.loop import READ, WRITE, EventLoop, Timer
from gateway.printing.uri import WAITEOF_S, PrinterURI

# Hand the kernel at most 64 KiB per send: keeps each loop turn short.
SEND_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Result:
    ok: bool
    sent: int
    error: str = ""


class SocketDelivery:
    """socket://: non-blocking connect, send with backpressure, half-close, wait for EOF.

    Progress is watched by a stall timer: a printer that accepts the
    connection and stops reading (a zero window) fails the attempt after
    `stall_timeout_s` without progress.
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
        self.phase = "connect"  # connect | send | waiteof | done
        self.sock: socket.socket | None = None
        self.timer: Timer | None = None
        self.registered = 0

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
        self.timer = self.loop.call_later(seconds, lambda: self._timeout(reason))

    def _timeout(self, reason: str) -> None:
        self.timer = None
        if self.phase == "waiteof":
            # Everything was sent and the printer kept the connection open:
            # as CUPS does, take the job as delivered.
            self._finish(True, "")
        else:
            self._finish(False, reason)

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
        elif self.phase == "waiteof" and mask & READ:
            try:
                data = sock.recv(4096)  # status bytes some printers send: discarded
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(False, f"after sending: {exc.strerror or exc}")
                return
            if not data:
                self._finish(True, "")

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
        if not self.uri.waiteof:
            self._finish(True, "")
            return
        self.phase = "waiteof"
        self._arm(WAITEOF_S, "")
        self._interest(READ)

    def _finish(self, ok: bool, error: str, notify: bool = True) -> None:
        self.phase = "done"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.registered:
            self._interest(0)
        if self.sock is not None:
            self.sock.close()
        if notify:
            self.on_done(Result(ok, self.sent, error))

    def close(self) -> None:  # the loop calls this if a handler raised
        self.abort()


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

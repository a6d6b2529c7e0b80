"""Delivering one job's bytes: raw TCP (AppSocket / port 9100), serial, files, memory.

Transports are looked up by URI scheme in TRANSPORTS, as pyserial's
serial_for_url does; each presents the same small interface to the spool:
`start()`, `abort()`, `sent`, and exactly one `on_done(Result)`.

A delivery is one attempt. The event loop owns its socket; the spool gets
exactly one `Result` per attempt through `on_done`, and decides about retries.
`sent` counts bytes handed to the kernel: when an attempt fails with `sent > 0`
the printer may have printed part of the job, so the spool marks the next copy
"REPRINT - delivery uncertain".
"""

from __future__ import annotations

import abc
import concurrent.futures
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.loop import READ, WRITE, EventLoop, Timer
from gateway.printing.uri import SCHEMES, WAITEOF_S, PrinterURI

# Hand the kernel at most 64 KiB per send: keeps each loop turn short.
SEND_CHUNK = 64 * 1024
# Once a job is handed to the kernel, look at what the printer has taken every
# 20 ms: short against a receipt's print time, cheap for one socket per printer.
DRAIN_POLL_S = 0.02
# After connecting, wait this long before sending, then look whether the printer
# has already closed its side: a printer that accepts and closes at once (busy,
# in an error state) would otherwise take a small job into its kernel's buffer
# unread, and TCP reports that exactly like a printed job. 100 ms: far above a
# LAN round trip and a printer's accept, small against the second a receipt
# takes to print (measured on the emulator under a loaded 2-CPU test machine).
SETTLE_S = 0.1


@dataclass(frozen=True)
class Result:
    ok: bool
    sent: int
    error: str = ""


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class _Delivery(abc.ABC):
    """One attempt over a byte stream the loop watches: send, then drain.

    Bytes handed to the kernel are not bytes the printer took: the end of a job
    is judged by the kernel's output queue (TIOCOUTQ/SIOCOUTQ: bytes not yet
    taken by the printer), polled every 20 ms once everything is handed over.
    A printer that takes nothing for `stall_timeout_s` (a zero window, serial
    flow control never released) fails the attempt. Subclasses open the
    stream and say what "end of job" and "printer gone" look like.
    """

    waiteof = False  # wait for the printer to close its side after the drain

    def __init__(
        self,
        loop: EventLoop,
        uri: PrinterURI,
        data: bytes,
        on_done: Callable[[Result], None],
        stall_timeout_s: float,
        **_context: object,  # what other transports need (file name, worker): unused here
    ) -> None:
        self.loop = loop
        self.uri = uri
        self.data = memoryview(data)
        self.on_done = on_done
        self.stall_timeout_s = stall_timeout_s
        self.sent = 0
        self.phase = "open"  # open | send | drain | done
        self.timer: Timer | None = None  # open timeout, stall timer, drain poll
        self.registered = 0
        self.eof = False
        self.outq = -1  # bytes the printer has not taken, at the last poll
        self.progress_at = 0.0
        self.drained_at: float | None = None

    # -- subclass hooks
    @abc.abstractmethod
    def fileno(self) -> int:
        """Provided by each transport."""

    @abc.abstractmethod
    def _write(self, view: memoryview) -> int:
        """Provided by each transport."""

    @abc.abstractmethod
    def _unsent(self) -> int:
        """Provided by each transport."""

    def _error(self) -> str:
        """A pending error on the stream, or ''."""
        return ""

    def _end_of_data(self) -> None:  # noqa: B027 - a hook most transports leave empty
        """All bytes handed over (a socket half-closes here)."""

    @abc.abstractmethod
    def _close(self, ok: bool) -> None:
        """Provided by each transport."""

    # -- the common part
    def abort(self) -> None:
        self._finish(False, "aborted", notify=False)

    def close(self) -> None:  # the loop calls this if a handler raised
        self.abort()

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

    def _start_sending(self) -> None:
        self.phase = "send"
        self._arm(self.stall_timeout_s, "printer stopped reading")
        self._interest(WRITE)
        self._send()

    def on_ready(self, mask: int) -> None:
        if self.phase == "send":
            self._send()
        elif self.phase == "drain" and mask & READ:
            self._readable()

    def _readable(self) -> None:  # noqa: B027 - a hook most transports leave empty
        """The stream became readable while draining (only sockets watch for it)."""

    def _send(self) -> None:
        while self.sent < len(self.data):
            try:
                n = self._write(self.data[self.sent : self.sent + SEND_CHUNK])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._finish(False, f"write: {exc.strerror or exc}")
                return
            if n == 0:
                return
            self.sent += n
            self._arm(self.stall_timeout_s, "printer stopped reading")
        try:
            self._end_of_data()
        except OSError as exc:
            self._finish(False, f"end of job: {exc.strerror or exc}")
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "drain"
        self.progress_at = self.loop.time()
        self._interest(READ if self.waiteof else 0)
        self._poll()

    def _poll(self) -> None:
        """The drain phase: delivered, still draining, stalled, or gone?"""
        if self.phase != "drain":
            return
        now = self.loop.time()
        try:
            error = self._error()
            outq = 0 if error else self._unsent()
        except OSError as exc:
            error = exc.strerror or str(exc)
        if error:
            self._finish(False, f"after sending: {error}")
            return
        if self.outq < 0 or outq < self.outq:
            self.progress_at = now
        self.outq = outq
        if outq == 0:
            if self.drained_at is None:
                self.drained_at = now
            if self.eof or not self.waiteof or now - self.drained_at >= WAITEOF_S:
                # (As CUPS does, a printer that stays open WAITEOF_S after taking
                # everything has printed it.)
                self._finish(True, "")
                return
        elif now - self.progress_at >= self.stall_timeout_s:
            self._finish(False, "printer stopped reading")
            return
        self.timer = self.loop.call_later(DRAIN_POLL_S, self._poll)

    def _finish(self, ok: bool, error: str, notify: bool = True) -> None:
        if self.phase == "done":
            return
        started = self.phase != "open" or self.registered
        self.phase = "done"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.registered:
            self._interest(0)
        if started or not ok:
            self._close(ok)
        if notify:
            self.on_done(Result(ok, self.sent, error))


class SocketDelivery(_Delivery):
    """socket://: non-blocking connect, send with backpressure, half-close, wait for EOF.

    With `waiteof` (the default) the job is delivered when the printer took
    every byte and closed its side. What TCP cannot tell: a printer whose
    kernel acknowledged the data and whose firmware then discarded it unread
    looks exactly like a printed job.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sock: socket.socket | None = None
        self.waiteof = self.uri.waiteof

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def start(self) -> None:
        RESOLVER.resolve(self.loop, self.uri.host, self.uri.port, self._resolved)

    def _resolved(self, info: tuple | None, error: str) -> None:
        if self.phase != "open" or self.registered:
            return  # aborted while the name was being resolved
        if info is None:
            self._finish(False, error)
            return
        family, kind, proto, address = info
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

    def on_ready(self, mask: int) -> None:
        if self.phase == "open":
            assert self.sock is not None
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._finish(False, f"connect: {os.strerror(code)}")
                return
            # Settle: nothing is sent until the printer has had time to say no.
            self.phase = "settle"
            self._interest(0)
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_later(SETTLE_S, self._settled)
            return
        super().on_ready(mask)

    def _closed_by_printer(self) -> str:
        """'' while the printer's side is open; else what it did (EOF or an error)."""
        assert self.sock is not None
        try:
            peeked = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return ""
        except OSError as exc:
            return exc.strerror or str(exc)
        return "" if peeked else "the printer closed the connection"

    def _settled(self) -> None:
        self.timer = None
        if self.phase != "settle":
            return
        closed = self._closed_by_printer()
        if closed:
            self._finish(False, f"{closed} before the job was sent")  # nothing sent: not uncertain
            return
        self._start_sending()

    def _write(self, view: memoryview) -> int:
        assert self.sock is not None
        return self.sock.send(view)

    def _unsent(self) -> int:
        assert self.sock is not None
        return _out_queue(self.sock.fileno())

    def _error(self) -> str:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return os.strerror(code) if code else ""

    def _end_of_data(self) -> None:
        assert self.sock is not None
        closed = self._closed_by_printer()
        if closed:  # closed while the job was being sent: what it took is unknown
            raise OSError(errno.EPIPE, f"{closed} before the end of the job")
        self.sock.shutdown(socket.SHUT_WR)

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(4096)  # status bytes some printers send: discarded
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(False, f"after sending: {exc.strerror or exc}")
            return
        if not data:
            self.eof = True
            self._interest(0)  # EOF stays readable; the poll takes it from here
            if self.timer is not None:
                self.timer.cancel()
            self._poll()

    def _close(self, ok: bool) -> None:
        if self.sock is None:
            return
        if not ok:
            # Reset, do not just close: after close() the kernel would keep
            # delivering the queued rest of a failed attempt in the background,
            # and a late, complete, unmarked copy could come out after the retry.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.sock.close()


# A printer's host name is resolved off the loop (getaddrinfo blocks, and a
# resolver that does not answer takes 5 s or more per try); an answer not back
# within 5 s counts as a failed attempt, and the last good address of the name
# is used instead when there is one. Two threads: one printer's dead resolver
# does not hold the others'.
RESOLVE_TIMEOUT_S = 5.0
RESOLVER_THREADS = 2


class Resolver:
    """Host names to addresses on worker threads; numeric hosts at once, on the loop."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._last_good: dict[tuple[str, int], tuple] = {}

    def resolve(
        self, loop: EventLoop, host: str, port: int, done: Callable[[tuple | None, str], None]
    ) -> None:
        """`done((family, type, proto, address), "")` or `done(None, reason)`, on the loop."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            done((family, socket.SOCK_STREAM, 0, (host, port)), "")
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                RESOLVER_THREADS, thread_name_prefix="resolve"
            )
        key = (host, port)
        answered = False

        def finish(info: tuple | None, error: str) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            timer.cancel()
            if info is not None:
                self._last_good[key] = info
            elif key in self._last_good:
                info, error = self._last_good[key], ""  # the last good address, as cached
            done(info, error)

        def lookup() -> None:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, kind, proto, _name, address = infos[0]
                result: tuple[tuple | None, str] = ((family, kind, proto, address), "")
            except OSError as exc:
                result = (None, f"cannot resolve {host}: {exc}")
            loop.post(lambda: finish(*result))

        timer = loop.call_later(
            RESOLVE_TIMEOUT_S,
            lambda: finish(None, f"cannot resolve {host}: no answer in {RESOLVE_TIMEOUT_S:g} s"),
        )
        self._pool.submit(lookup)


RESOLVER = Resolver()


class SerialDelivery(_Delivery):
    """serial:: the port opened per job with its speed, framing and flow control.

    The port is opened non-blocking and written from the loop. A USB adapter
    that is unplugged fails the write or the drain with EIO (or a hangup); a
    missing device fails the open. Either way the spool retries with backoff,
    which reopens the port.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.port = None

    def fileno(self) -> int:
        assert self.port is not None
        return self.port.fileno()

    def start(self) -> None:
        import serial  # pyserial: termios set-up for speed, framing, flow control

        uri = self.uri
        try:
            self.port = serial.Serial(
                port=uri.path,
                baudrate=uri.baud,
                bytesize=uri.bits,  # pyserial takes 5..8, "N"/"E"/"O" and 1/2 as they are
                parity={"none": "N", "even": "E", "odd": "O"}[uri.parity],
                stopbits=uri.stop,
                rtscts=uri.flow == "rtscts",
                xonxoff=uri.flow == "xonxoff",
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self.port = None
            self._finish(False, f"open {uri.path}: {exc}")
            return
        self._start_sending()

    def _write(self, view: memoryview) -> int:
        assert self.port is not None
        return os.write(self.port.fileno(), view)

    def _unsent(self) -> int:
        assert self.port is not None
        return _out_queue(self.port.fileno())

    def _close(self, ok: bool) -> None:
        if self.port is None:
            return
        if not ok:
            try:  # drop what a failed attempt left queued in the driver
                termios.tcflush(self.port.fileno(), termios.TCOFLUSH)
            except (OSError, termios.error):
                pass
        try:
            self.port.close()
        except OSError:
            pass


def _out_queue(fd: int) -> int:
    """Bytes handed to the kernel and not yet taken by the printer (TIOCOUTQ, which
    is SIOCOUTQ on a TCP socket: sent and unsent bytes not yet acknowledged)."""
    buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
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


# Runs a function on the spool's worker thread; the callback gets (result, exception) on the loop.
Worker = Callable[[Callable[[], object], Callable[[object, BaseException | None], None]], None]


class FileDelivery:
    """file:DIRECTORY: one job, one file, written by the spool's worker thread."""

    def __init__(
        self,
        loop: EventLoop,
        uri: PrinterURI,
        data: bytes,
        on_done: Callable[[Result], None],
        stall_timeout_s: float,
        *,
        name: str,
        worker: Callable[
            [Callable[[], object], Callable[[object, BaseException | None], None]], None
        ],
    ) -> None:
        self.uri = uri
        self.data = data
        self.on_done = on_done
        self.name = name
        self.worker = worker
        self.sent = 0
        self.aborted = False

    def start(self) -> None:
        directory, name, data = Path(self.uri.path), self.name, self.data

        def write() -> int:
            write_job_file(directory, name, data)
            return len(data)

        self.worker(write, self._written)

    def _written(self, n: object, exc: BaseException | None) -> None:
        if self.aborted:
            return
        self.sent = int(n) if isinstance(n, int) else 0
        self.on_done(Result(exc is None, self.sent, "" if exc is None else f"write: {exc}"))

    def abort(self) -> None:
        self.aborted = True


# memory:NAME printers: every job delivered, in order, per name (tests read them).
MEMORY_PRINTERS: dict[str, list[bytes]] = {}


class MemoryDelivery:
    """memory:NAME: an in-memory printer for tests; takes every job at once."""

    def __init__(
        self,
        loop: EventLoop,
        uri: PrinterURI,
        data: bytes,
        on_done: Callable[[Result], None],
        stall_timeout_s: float,
        **_context: object,
    ) -> None:
        self.loop = loop
        self.uri = uri
        self.data = data
        self.on_done = on_done
        self.sent = 0
        self.timer: Timer | None = None

    def start(self) -> None:
        MEMORY_PRINTERS.setdefault(self.uri.path, []).append(bytes(self.data))
        self.sent = len(self.data)
        self.timer = self.loop.call_later(0, lambda: self.on_done(Result(True, self.sent)))

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


# Transports by URI scheme: the spool looks a printer's delivery up here.
TRANSPORTS: dict[str, type] = {
    "socket": SocketDelivery,
    "serial": SerialDelivery,
    "file": FileDelivery,
    "memory": MemoryDelivery,
}
assert TRANSPORTS.keys() == SCHEMES.keys(), "every URI scheme needs its transport"

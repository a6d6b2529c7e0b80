"""A raw TCP (AppSocket/JetDirect, port 9100) printer that saves jobs to files and can misbehave.

A port-9100 printer has no protocol: a job is every byte sent on one connection, ended
by the sender closing its side. The gateway's printing code must survive printers that
refuse connections, reset them, stop reading, read slowly or hang up, and those
failures are hard to provoke with real hardware, so this emulator produces them on
demand (`Fault`). It also lets someone without a printer run the gateway and read the
"printed" receipts as files:

    python -m gateway.printing.emulator --port 9100 --out var/emulator

Like many real receipt printers it serves one connection at a time; the others wait in
the listen backlog until the current job ends. A gateway that opens a second
connection to a busy printer therefore waits instead of interleaving two receipts.

Jobs are numbered in the order they end: `job-000001.bin`, `job-000002.bin`, ... for
jobs that ended with the sender's EOF, `job-NNNNNN.partial` for jobs cut short by a
fault, a reset, the size limit or stop(). Both kinds share one sequence, so a directory
listing reads in chronological order. Numbering continues after the highest number
already in the directory, so earlier runs are never overwritten; use one directory per
emulator. A connection closed cleanly without sending a byte (a port probe) is not a job.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import selectors
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FAULTS = ("none", "refuse", "reset-after", "stall", "slow", "close-before-read")

# Connections the kernel queues while one job is being served: several senders may
# target one printer at once, and 16 covers any test without unbounded queueing.
BACKLOG = 16

# A job larger than this is cut off with a reset and kept as .partial: receipts are
# kilobytes, so anything this big is a runaway sender, and the limit bounds the disk
# one connection can use.
MAX_JOB_BYTES = 64 * 1024 * 1024

# Bytes asked of the kernel per recv() when reading at full speed.
READ_CHUNK = 64 * 1024

# The "slow" fault reads at most SLOW_CHUNK bytes every SLOW_INTERVAL seconds (6.4 KB/s):
# slow enough that a sender's buffers fill on any job of a few hundred KB, fast enough
# that a test job of a few KiB completes in well under a second.
SLOW_CHUNK = 64
SLOW_INTERVAL = 0.010  # seconds

# Receive buffer the listener hands to connections while "stall" is active. It has to
# be set before the handshake (on the listener) so the window advertised to the sender
# is small from the start; the kernel doubles it, so the sender's window closes after
# about 8 KiB instead of after the default 128 KiB or more.
STALL_RCVBUF = 4096

# Receive buffer restored on the listener, and given to stalled connections when they
# resume, once "stall" ends: large enough that the rest of a job of several MiB flows
# at loopback speed.
NORMAL_RCVBUF = 256 * 1024

# stop() waits at most this long for the serving thread to close everything.
STOP_TIMEOUT = 5.0  # seconds

# set_fault() waits at most this long for the serving thread to apply the new fault
# (it does so within one loop iteration, so this only bounds a wedged thread).
APPLY_TIMEOUT = 5.0  # seconds

# If the listener cannot be reopened after "refuse" (another socket took the port in
# the meantime), try again this often rather than give up on the port.
RELISTEN_RETRY = 0.1  # seconds

_JOB_NAME = re.compile(r"job-(\d{6,})\.(?:bin|partial)")

# SO_LINGER on with a zero timeout: close() then sends a TCP RST instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Fault:
    """How the emulator misbehaves towards connections accepted from now on.

    `times` limits the fault to that many connections, after which the emulator
    behaves normally. Two kinds cannot be counted that way and ignore `times`:
    "refuse" (a refused connection never reaches the emulator, so there is nothing to
    count; the port stays refused until set_fault() is called again) and "none".
    """

    kind: str = "none"  # one of FAULTS
    after_bytes: int = 0  # reset-after: bytes of the job read before the reset
    times: int | None = None  # connections the fault applies to; None: all of them

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}: expected one of {', '.join(FAULTS)}")
        if self.after_bytes < 0:
            raise ValueError(f"after_bytes must be 0 or more, not {self.after_bytes}")
        if self.after_bytes and self.kind != "reset-after":
            raise ValueError(f"after_bytes only applies to reset-after, not to {self.kind}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be 1 or more (or None for always), not {self.times}")

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse the command-line form: a kind, `reset-after=N`, then optionally `,times=N`.

        Examples: "none", "refuse", "stall", "slow", "close-before-read",
        "reset-after=100", "reset-after=100,times=1". Raises ValueError saying what
        is wrong, since the text usually comes from a command line or a config file.
        """
        head, *options = text.split(",")
        kind, has_value, value = head.strip().partition("=")
        kind = kind.strip()
        if kind not in FAULTS:
            raise ValueError(
                f"unknown fault {kind!r} in {text!r}: expected one of {', '.join(FAULTS)}"
            )
        after_bytes = 0
        if kind == "reset-after":
            if not has_value:
                raise ValueError(
                    f"reset-after needs a byte count, e.g. reset-after=100 (got {text!r})"
                )
            after_bytes = _parse_count(value, "reset-after", text)
        elif has_value:
            raise ValueError(f"fault {kind!r} takes no value (got {text!r})")
        times = None
        for option in options:
            name, has_value, value = option.strip().partition("=")
            if name.strip() != "times" or not has_value:
                raise ValueError(f"unknown option {option.strip()!r} in {text!r}: only times=N")
            if times is not None:
                raise ValueError(f"times given more than once in {text!r}")
            times = _parse_count(value, "times", text)
            if times < 1:
                raise ValueError(f"times must be 1 or more (got {text!r})")
        return cls(kind, after_bytes, times)


def _parse_count(value: str, name: str, text: str) -> int:
    """A plain decimal count: int() alone would also take "+5", "1_000" and non-ASCII digits."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{name} needs a whole number of 0 or more, not {value!r} (in {text!r})")
    return int(value)


NO_FAULT = Fault()


@dataclass(eq=False)
class _Job:
    """The connection being served and the file its bytes go to."""

    sock: socket.socket
    file: BinaryIO
    tmp: Path
    fault: Fault
    received: int = 0
    registered: bool = False  # watched by the selector for reading
    stalled: bool = False  # "stall": not read until set_fault() ends the stall
    resume_at: float | None = None  # "slow": monotonic time of the next read


class Emulator:
    """A port-9100 printer on a daemon thread; see the module docstring.

    All sockets belong to the serving thread once it runs. Other threads only change
    shared fields under the lock and wake the thread through a socketpair, so a fault
    change never races with the thread using a socket. stop() then start() again
    reopens the same port, like a printer being power-cycled.
    """

    def __init__(
        self,
        out_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        fault: Fault = NO_FAULT,
        *,
        max_job_bytes: int = MAX_JOB_BYTES,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.host = host
        self.port = port
        self.max_job_bytes = max_job_bytes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Shared with other threads, guarded by the lock.
        self._fault = fault
        self._remaining = fault.times
        self._fault_gen = 0  # bumped by set_fault(); the thread acknowledges in _applied_gen
        self._applied_gen = 0
        self._stopping = False
        self._serving = False  # the thread runs and will acknowledge fault changes
        self._connections = 0
        self._completed: list[Path] = []
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wake_w: socket.socket | None = None
        # Owned by the serving thread (by start() before the thread exists).
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._listener_watched = False
        self._listener_small = False  # SO_RCVBUF set to STALL_RCVBUF
        self._relisten_at: float | None = None
        self._seen_gen = 0
        self._job: _Job | None = None
        self._next_number = 1

    # Public API -----------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections accepted so far (refused ones never reach the emulator)."""
        with self._lock:
            return self._connections

    def start(self) -> None:
        """Bind and listen, then serve on a daemon thread.

        Binding happens here, not on the thread, so a port already in use raises in
        the caller and `port` holds the bound port when start() returns.
        """
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._next_number = _highest_job_number(self.out_dir) + 1
        self._selector = selectors.DefaultSelector()
        self._listener_watched = self._listener_small = False
        self._relisten_at = self._job = None
        try:
            self._listener = self._open_listener()
            self.port = self._listener.getsockname()[1]
            self._wake_r, wake_w = socket.socketpair()
            with self._lock:
                self._wake_w = wake_w
                self._stopping = False
                self._seen_gen = self._fault_gen
            self._wake_r.setblocking(False)
            wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
            # Apply the fault before anyone can connect: with "refuse" the port must
            # refuse from the moment start() returns.
            self._reconcile()
        except BaseException:
            self._close_all()
            with self._lock:
                if self._wake_w is not None:
                    self._wake_w.close()
                    self._wake_w = None
            raise
        self._thread = threading.Thread(
            target=self._serve, name=f"printer-emulator-{self.port}", daemon=True
        )
        with self._lock:
            self._serving = True
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and any connection, then join the thread (at most STOP_TIMEOUT).

        A job still in progress is cut off with a reset and kept as .partial: a
        sender must not mistake a printer going away for a finished job.
        """
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            self._stopping = True
            self._wake_locked()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"the printer emulator did not stop within {STOP_TIMEOUT} s")
        with self._lock:
            self._thread = None
            if self._wake_w is not None:
                self._wake_w.close()
                self._wake_w = None
            failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError("the printer emulator's serving thread failed") from failure

    def set_fault(self, fault: Fault) -> None:
        """Change the fault for connections accepted from now on.

        Returns once the serving thread has applied it, so "refuse" refuses and the
        end of "refuse" accepts again as soon as this returns. Any change away from
        "stall" also lets a stalled connection resume reading.
        """
        with self._cond:
            self._fault = fault
            self._remaining = fault.times
            self._fault_gen += 1
            generation = self._fault_gen
            if not self._serving:
                return  # start() applies it
            self._wake_locked()
            applied = self._cond.wait_for(
                lambda: self._applied_gen >= generation or not self._serving, APPLY_TIMEOUT
            )
        if not applied:
            raise RuntimeError(
                f"the printer emulator did not apply {fault} within {APPLY_TIMEOUT} s"
            )

    def jobs(self) -> list[bytes]:
        """The contents of the completed jobs (.bin), in completion order."""
        with self._lock:
            paths = list(self._completed)
        return [path.read_bytes() for path in paths]

    def wait_jobs(self, n: int, timeout: float) -> list[bytes]:
        """Wait until at least n jobs are complete or timeout seconds pass; return jobs().

        Returns early, with what there is, if the emulator is not serving: no job can
        complete then.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self._completed) >= n or not self._serving, timeout)
        return self.jobs()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Serving thread ---------------------------------------------------------------

    def _serve(self) -> None:
        assert self._selector is not None
        try:
            while not self._reconcile():
                for key, _mask in self._selector.select(self._select_timeout()):
                    key.data()
                self._resume_slow_job()
        except BaseException as exc:
            with self._lock:
                self._failure = exc
        finally:
            try:
                self._close_all()
            finally:
                with self._cond:
                    self._serving = False
                    self._cond.notify_all()

    def _reconcile(self) -> bool:
        """Bring the listener and the current job in line with the fault; True to stop."""
        with self._lock:
            fault, generation, stopping = self._fault, self._fault_gen, self._stopping
        if stopping:
            return True
        job = self._job
        if generation != self._seen_gen:
            self._seen_gen = generation
            if job is not None and job.stalled and fault.kind != "stall":
                job.stalled = False
                job.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NORMAL_RCVBUF)
                self._watch(job, True)
        if fault.kind == "refuse":
            if self._listener is not None:
                self._close_listener()
        elif self._listener is None:
            now = time.monotonic()
            if self._relisten_at is None or now >= self._relisten_at:
                try:
                    self._listener = self._open_listener()
                    self._relisten_at = None
                except OSError:
                    self._relisten_at = now + RELISTEN_RETRY
        if self._listener is not None and self._listener_small != (fault.kind == "stall"):
            self._listener_small = fault.kind == "stall"
            size = STALL_RCVBUF if self._listener_small else NORMAL_RCVBUF
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self._update_listener_watch()
        with self._cond:
            if self._applied_gen < generation:
                self._applied_gen = generation
                self._cond.notify_all()
        return False

    def _select_timeout(self) -> float | None:
        deadlines = [self._relisten_at] if self._relisten_at is not None else []
        if self._job is not None and self._job.resume_at is not None:
            deadlines.append(self._job.resume_at)
        if not deadlines:
            return None  # only a socket or a wake-up can change anything
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_accept(self) -> None:
        if self._listener is None or self._job is not None:
            return  # stale event: the listener closed or a job began in this iteration
        try:
            sock, _address = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        with self._lock:
            self._connections += 1
            number = self._connections
            fault = self._take_fault_locked()
        if fault.kind == "close-before-read":
            try:
                sock.shutdown(socket.SHUT_WR)  # the FIN goes out before anything else
            except OSError:
                pass
            sock.close()
            return
        if fault.kind != "stall" and _rcvbuf(sock) <= 2 * STALL_RCVBUF:
            # Handshaken while "stall" was active but served normally: undo the small buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NORMAL_RCVBUF)
        tmp = self.out_dir / f".incoming-{os.getpid()}-{self.port}-{number}.tmp"
        try:
            file = open(tmp, "wb")  # noqa: SIM115 - closed in _end_job
        except BaseException:
            sock.close()
            raise
        job = _Job(sock=sock, file=file, tmp=tmp, fault=fault)
        self._job = job
        self._update_listener_watch()
        if fault.kind == "stall":
            job.stalled = True
        elif fault.kind == "reset-after" and fault.after_bytes == 0:
            self._end_job(job, complete=False)
        else:
            self._watch(job, True)

    def _take_fault_locked(self) -> Fault:
        """The fault for a connection just accepted, counting down `times`."""
        fault = self._fault
        if fault.kind in ("none", "refuse"):
            # "refuse": this connection completed its handshake before the listener
            # closed; it is served normally.
            return NO_FAULT
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self._fault, self._remaining = NO_FAULT, None
        return fault

    def _on_readable(self, job: _Job) -> None:
        if self._job is not job:
            return  # stale event for a job that ended in this iteration
        want = SLOW_CHUNK if job.fault.kind == "slow" else READ_CHUNK
        if job.fault.kind == "reset-after":
            want = min(want, job.fault.after_bytes - job.received)
        want = min(want, self.max_job_bytes + 1 - job.received)
        try:
            data = job.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end_job(job, complete=False)  # the sender reset the connection
            return
        if not data:
            self._end_job(job, complete=True)
            return
        over_limit = job.received + len(data) > self.max_job_bytes
        if over_limit:
            data = data[: self.max_job_bytes - job.received]
        job.file.write(data)
        job.received += len(data)
        if over_limit or (
            job.fault.kind == "reset-after" and job.received >= job.fault.after_bytes
        ):
            self._end_job(job, complete=False)
        elif job.fault.kind == "slow":
            self._watch(job, False)
            job.resume_at = time.monotonic() + SLOW_INTERVAL

    def _resume_slow_job(self) -> None:
        job = self._job
        if job is not None and job.resume_at is not None and time.monotonic() >= job.resume_at:
            job.resume_at = None
            self._watch(job, True)

    def _end_job(self, job: _Job, *, complete: bool) -> None:
        """Save the job, then close the connection: FIN after EOF, RST otherwise.

        The file is renamed into place before the sender sees the close, so a sender
        that waits for the printer's EOF finds its job complete in jobs().
        """
        self._job = None
        self._watch(job, False)
        try:
            path = self._save(job, complete)
            if complete and path is not None:
                with self._cond:
                    self._completed.append(path)
                    self._cond.notify_all()
        finally:
            if not complete:
                try:
                    job.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass  # already reset by the peer
            job.sock.close()
        self._update_listener_watch()

    def _save(self, job: _Job, complete: bool) -> Path | None:
        """Fsync and rename the job's file into place; None for an empty clean job."""
        try:
            job.file.flush()
            os.fsync(job.file.fileno())
        finally:
            job.file.close()
        if complete and job.received == 0:
            job.tmp.unlink()
            return None
        number, self._next_number = self._next_number, self._next_number + 1
        path = self.out_dir / f"job-{number:06d}.{'bin' if complete else 'partial'}"
        os.replace(job.tmp, path)
        directory = os.open(self.out_dir, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
        return path

    def _watch(self, job: _Job, on: bool) -> None:
        assert self._selector is not None
        if on and not job.registered:
            callback = functools.partial(self._on_readable, job)
            self._selector.register(job.sock, selectors.EVENT_READ, callback)
        elif not on and job.registered:
            self._selector.unregister(job.sock)
        job.registered = on

    def _update_listener_watch(self) -> None:
        """Accept only while no job is active: one job at a time, the rest in the backlog."""
        assert self._selector is not None
        want = self._listener is not None and self._job is None
        if want and not self._listener_watched:
            self._selector.register(self._listener, selectors.EVENT_READ, self._on_accept)
        elif not want and self._listener_watched:
            self._selector.unregister(self._listener)
        self._listener_watched = want

    def _open_listener(self) -> socket.socket:
        # SO_REUSEADDR (set by create_server) lets "refuse" reopen the same port at once.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=BACKLOG)
        sock.setblocking(False)
        return sock

    def _close_listener(self) -> None:
        """Close the listener: connects are refused and queued connections are reset."""
        assert self._selector is not None and self._listener is not None
        if self._listener_watched:
            self._selector.unregister(self._listener)
            self._listener_watched = False
        self._listener.close()
        self._listener = None
        self._listener_small = False

    def _close_all(self) -> None:
        """On the way out of the thread: cut any job short and close every socket."""
        try:
            if self._job is not None:
                self._end_job(self._job, complete=False)
        finally:
            if self._listener is not None:
                self._close_listener()
            if self._selector is not None:
                self._selector.close()
                self._selector = None
            if self._wake_r is not None:
                self._wake_r.close()  # the write end is closed by stop(), under the lock
                self._wake_r = None

    def _wake_locked(self) -> None:
        """Wake the serving thread (lock held, so stop() cannot close the socket meanwhile)."""
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full of wake-ups already
        except OSError:
            pass  # the thread has exited and closed the read end


def _rcvbuf(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _highest_job_number(directory: Path) -> int:
    numbers = [0]
    for entry in directory.iterdir():
        match = _JOB_NAME.fullmatch(entry.name)
        if match:
            numbers.append(int(match.group(1)))
    return max(numbers)


# Command line -----------------------------------------------------------------------


def _fault_argument(text: str) -> Fault:
    # ArgumentTypeError keeps Fault.parse's message; a ValueError would be replaced
    # by argparse's generic "invalid value".
    try:
        return Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _port_argument(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, separate from main() so it can be checked without serving."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.printing.emulator",
        description=(
            "Emulate a raw TCP (port 9100) receipt printer: each job is saved to a file, "
            "and faults can be injected."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=_port_argument, default=9100, help="port to listen on (0: any free)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("var/emulator"), help="directory for the job files"
    )
    parser.add_argument(
        "--fault",
        type=_fault_argument,
        default="none",
        help=(
            f"one of {', '.join(FAULTS)}; reset-after takes a byte count (reset-after=100); "
            "add ,times=N to limit it to N connections"
        ),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM. Must run on the main thread (signal handlers)."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Emulator(args.out, args.host, args.port, args.fault) as emulator:
            print(
                f"emulating a printer on {args.host}:{emulator.port}, jobs in {args.out}",
                flush=True,
            )
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A RELP client for benchmarks: many pipelined connections driven by one selector loop.

RELP (the Reliable Event Logging Protocol, rsyslog's imrelp) is rsyslog's
acknowledged transport, so it is the peer of the gateway's acknowledged mode.
Every frame, in both directions, is

    TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER

with TXNR a transaction number (1..999,999,999; 0 for the server's
`serverclose`), DATALEN the byte length of DATA (no SP DATA when it is 0) and
TRAILER a newline. A session opens with `1 open LEN relp_version=0\\nrelp_software=
...\\ncommands=syslog`, which the server answers with `1 rsp LEN 200 OK\\n<its
offers>`; then each `N syslog LEN MSG` is answered with `N rsp 6 200 OK`; `close`
ends it.

The messages are the load generator's (bench.loadgen.build_events): each
syslog frame carries one JSON event, exactly the line the gateway receives
without its newline, and no syslog header. Up to --window messages are
outstanding per connection (as the load generator's ack mode). Reports
acknowledged messages/s and the latency from the send() that handed a message
to the kernel to the arrival of its `rsp`, in the load generator's format
(bench.loadgen.latency_summary). Prints one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import collections
import json
import selectors
import socket
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

from bench.loadgen import SIZES, _cpu_s, build_events, latency_summary, raise_nofile

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

# RELP's largest transaction number; the next one after it is 1 again.
TXNR_MAX = 999_999_999
# Longest TXNR, COMMAND and DATALEN fields the protocol allows (9 digits, 32 letters).
TXNR_DIGITS = 9
COMMAND_MAX = 32
DATALEN_DIGITS = 9
# Largest response DATA accepted: an `open` answer is ~100 B and a `rsp` 6 B;
# anything near this is not a RELP server (bounds this client's memory).
MAX_DATA = 64 * 1024

OPEN_OFFERS = b"relp_version=0\nrelp_software=print-gateway-bench\ncommands=syslog"

# Bytes read per recv(): one read takes thousands of 14-byte answers.
RECV_BYTES = 256 * 1024
# Bound on connecting and on the open handshake of all connections.
CONNECT_TIMEOUT_S = 10.0
# After the load: bound on waiting for the answers still outstanding.
DRAIN_TIMEOUT_S = 15.0
# Bound on the close handshake (one round trip on loopback).
CLOSE_TIMEOUT_S = 5.0
# At most this many messages are framed per send() (caps one connection's turn).
SEND_BATCH = 512


class RelpError(Exception):
    """The peer sent something that is not RELP, or not the answer expected."""


def frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One RELP frame; DATALEN counts bytes (so a UTF-8 message's, not its characters)."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


class RelpParser:
    """Sans-I/O frame parser: feed() bytes, get complete (txnr, command, data) frames.

    Raises RelpError on anything malformed: a non-numeric or over-long field, a
    DATALEN that does not match (the byte after DATA must be the newline), a
    separator missing. A frame cut short stays buffered until more bytes come;
    `pending` tells whether any are buffered (a close then means a short frame)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes]]:
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while True:
            parsed = self._one(buf, pos)
            if parsed is None:
                break
            pos, item = parsed
            frames.append(item)
        del buf[:pos]
        return frames

    @staticmethod
    def _field(buf: bytearray, pos: int, limit: int, what: str) -> tuple[bytes, int] | None:
        """The bytes from pos up to the next space, which must come within `limit` bytes
        and before any newline; None while the buffer ends before it."""
        segment = bytes(buf[pos : pos + limit + 1])
        end = segment.find(b" ")
        newline = segment.find(b"\n")
        if newline >= 0 and (end < 0 or newline < end):
            raise RelpError(f"{what} cut by a newline: {segment!r}")
        if end < 0:
            if len(segment) > limit:
                raise RelpError(f"{what} too long: {segment[:40]!r}")
            return None
        return segment[:end], pos + end + 1

    def _one(self, buf: bytearray, pos: int) -> tuple[int, tuple[int, bytes, bytes]] | None:
        got = self._field(buf, pos, TXNR_DIGITS, "TXNR")
        if got is None:
            return None
        txnr_text, p = got
        if not txnr_text.isdigit():
            raise RelpError(f"TXNR is not a number: {txnr_text[:20]!r}")
        got = self._field(buf, p, COMMAND_MAX, "COMMAND")
        if got is None:
            return None
        command, p = got
        if not command.isalpha():
            raise RelpError(f"COMMAND is not a word: {command[:40]!r}")
        # DATALEN ends at a space (DATA follows) or at the trailer (no DATA).
        end = p
        while end < len(buf) and end - p <= DATALEN_DIGITS and buf[end] not in b" \n":
            end += 1
        if end - p > DATALEN_DIGITS:
            raise RelpError(f"DATALEN too long: {bytes(buf[p:end])[:20]!r}")
        if end == len(buf):
            return None
        datalen_text = bytes(buf[p:end])
        if not datalen_text.isdigit():
            raise RelpError(f"DATALEN is not a number: {datalen_text!r}")
        datalen = int(datalen_text)
        if datalen > MAX_DATA:
            raise RelpError(f"DATALEN {datalen} is larger than any answer ({MAX_DATA})")
        if buf[end] == 0x0A:  # the trailer right after DATALEN
            if datalen:
                raise RelpError(f"DATALEN {datalen} but no DATA")
            return end + 1, (int(txnr_text), command, b"")
        start = end + 1
        if len(buf) < start + datalen + 1:
            return None
        if buf[start + datalen] != 0x0A:
            raise RelpError(
                f"no trailer after DATALEN {datalen} bytes: "
                f"{bytes(buf[pos : start + datalen + 1])[:80]!r}"
            )
        return start + datalen + 1, (int(txnr_text), command, bytes(buf[start : start + datalen]))


class RelpConn:
    """One RELP session: what is framed but not yet sent, and what awaits an answer."""

    __slots__ = (
        "alive",
        "blocked",
        "close_txnr",
        "closed",
        "next_msg",
        "next_txnr",
        "open_done",
        "out",
        "parser",
        "queued",
        "sent_at",
        "sent_bytes",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = RelpParser()
        self.out = bytearray()  # framed, not yet taken by the kernel
        self.sent_bytes = 0  # bytes of this session the kernel has taken
        self.queued: collections.deque[tuple[int, int]] = collections.deque()  # (end, txnr)
        self.sent_at: dict[int, float] = {}  # txnr -> when its last byte was sent
        self.next_txnr = 2  # 1 is the open
        self.next_msg = 0  # index into the messages, wrapping around
        self.open_done = False
        self.close_txnr: int | None = None
        self.closed = False  # the answer to our close came
        self.blocked = False  # a send() came back short: wait for writability
        self.alive = True

    @property
    def outstanding(self) -> int:
        """Messages framed and not yet answered (the window's occupancy)."""
        return len(self.queued) + len(self.sent_at)

    def take_txnr(self) -> int:
        txnr = self.next_txnr
        self.next_txnr = txnr + 1 if txnr < TXNR_MAX else 1
        return txnr


class RelpLoad:
    """The selector loop over all sessions, and the counts it keeps."""

    def __init__(self, messages: list[bytes]) -> None:
        # Everything of a syslog frame but its TXNR, per message, built once.
        self.tails = [b" syslog %d %s\n" % (len(m), m) for m in messages]
        self.sel = selectors.DefaultSelector()
        self.conns: list[RelpConn] = []
        self.samples = array("d")
        self.errors = 0
        self.error_lines: list[str] = []
        self.disconnects = 0
        self.framed = 0  # messages framed (what max_events bounds)
        self.sent = 0  # messages whose every byte the kernel has taken
        self.acked = 0
        self.last_ack_at = 0.0
        self.server_software: str | None = None

    # ------------------------------------------------------------ sessions

    def connect(self, host: str, port: int, n: int) -> None:
        for _ in range(n):
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            c = RelpConn(sock)
            self.conns.append(c)
            self.sel.register(sock, READ, c)
            c.out += frame(1, b"open", OPEN_OFFERS)
            self.flush(c, time.monotonic())

    def fail(self, c: RelpConn, why: str) -> None:
        """Count an error and drop the session (its unanswered messages are lost)."""
        self.errors += 1
        if len(self.error_lines) < 5:
            unanswered = f" with {c.outstanding} unanswered" if c.outstanding else ""
            self.error_lines.append(f"session lost{unanswered}: {why}")
        self.drop(c)

    def drop(self, c: RelpConn) -> None:
        if not c.alive:
            return
        c.alive = False
        if not c.closed:
            self.disconnects += 1
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def close(self) -> None:
        """Close whatever is still open (after a clean run, only the selector)."""
        for c in self.conns:
            if c.alive:
                c.alive = False
                c.sock.close()
        self.sel.close()

    def live(self) -> list[RelpConn]:
        return [c for c in self.conns if c.alive]

    # ------------------------------------------------------------ I/O

    def fill(self, c: RelpConn, window: int, limit: int, now: float) -> bool:
        """Frame messages up to the window (and the limit) and send; True if more could go now."""
        room = min(window - c.outstanding, limit - self.framed)
        if room <= 0 or c.blocked:
            return False
        batch = min(room, SEND_BATCH)
        tails = self.tails
        parts = []
        end = c.sent_bytes + len(c.out)
        for _ in range(batch):
            txnr = c.take_txnr()
            part = b"%d" % txnr + tails[c.next_msg]
            c.next_msg = (c.next_msg + 1) % len(tails)
            parts.append(part)
            end += len(part)
            c.queued.append((end, txnr))
        self.framed += batch
        c.out += b"".join(parts)
        self.flush(c, now)
        return room > batch and c.alive and not c.blocked

    def flush(self, c: RelpConn, now: float) -> None:
        """Hand c.out to the kernel; stamp the messages whose last byte went."""
        try:
            got = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            got = 0
        except OSError as exc:
            self.fail(c, str(exc))
            return
        del c.out[:got]
        c.sent_bytes += got
        queued = c.queued
        while queued and queued[0][0] <= c.sent_bytes:
            c.sent_at[queued.popleft()[1]] = now
            self.sent += 1
        blocked = bool(c.out)
        if blocked != c.blocked:
            c.blocked = blocked
            self.sel.modify(c.sock, READ | WRITE if blocked else READ, c)

    def pump(self, timeout: float) -> None:
        """One select(): send what waits for writability, read and match answers."""
        for key, mask in self.sel.select(timeout):
            c = key.data
            now = time.monotonic()
            if mask & WRITE and c.alive:
                self.flush(c, now)
            if mask & READ and c.alive:
                self.receive(c, now)

    def receive(self, c: RelpConn, now: float) -> None:
        try:
            data = c.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(c, str(exc))
            return
        if not data:
            if c.parser.pending:
                self.fail(c, "closed by the server in the middle of a frame")
            elif not c.closed:
                self.fail(c, "closed by the server")
            else:
                self.drop(c)
            return
        try:
            frames = c.parser.feed(data)
        except RelpError as exc:
            self.fail(c, str(exc))
            return
        for txnr, command, body in frames:
            if not self.answer(c, txnr, command, body, now):
                return

    def answer(self, c: RelpConn, txnr: int, command: bytes, body: bytes, now: float) -> bool:
        """Apply one frame from the server; False once the session is gone."""
        if command == b"serverclose":
            if c.closed:
                self.drop(c)
            else:
                self.fail(c, "the server ended the session (serverclose)")
            return False
        if command != b"rsp":
            self.fail(c, f"unexpected command {command[:40]!r} from the server")
            return False
        if not c.open_done:
            if txnr != 1 or not body.startswith(b"200 OK") or b"commands=syslog" not in body:
                self.fail(c, f"open refused (transaction {txnr}): {body[:120]!r}")
                return False
            c.open_done = True
            for offer in body.split(b"\n")[1:]:
                key, _, value = offer.partition(b"=")
                if key == b"relp_software":
                    self.server_software = value.decode(errors="replace")
            return True
        if txnr == c.close_txnr:
            c.closed = True
            self.drop(c)
            return False
        t = c.sent_at.pop(txnr, None)
        if t is None:
            self.fail(c, f"answer to transaction {txnr}, which is not outstanding")
            return False
        if not body.startswith(b"200"):
            self.fail(c, f"transaction {txnr} refused: {body[:120]!r}")
            return False
        self.acked += 1
        self.last_ack_at = now
        self.samples.append(now - t)
        return True

    def wait(self, done: Callable[[], bool], limit_s: float) -> bool:
        """Pump until done() or limit_s pass; whether done() came true."""
        deadline = time.monotonic() + limit_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.get_map():
                return bool(done())
            self.pump(min(0.05, left))
        return True


def run_relp(
    host: str,
    port: int,
    conns: int,
    messages: list[bytes],
    duration: float,
    window: int,
    max_events: int | None = None,
) -> dict[str, Any]:
    """Open `conns` sessions, send `messages` round-robin for `duration` s (or until
    `max_events` in all) with at most `window` unanswered per session, drain, close."""
    raise_nofile(conns + 64)
    load = RelpLoad(messages)
    cpu0 = _cpu_s()
    clock = time.monotonic
    t_connect = clock()
    try:
        load.connect(host, port, conns)
        load.wait(lambda: all(c.open_done for c in load.live()), CONNECT_TIMEOUT_S)
        for c in load.live():
            if not c.open_done:
                load.fail(c, "no answer to open")
        connect_s = clock() - t_connect

        limit = max_events if max_events is not None else 1 << 62
        t0 = clock()
        deadline = t0 + duration
        stop_at = t0
        while True:
            now = clock()
            live = load.live()
            if now >= deadline or load.sent >= limit or not live:
                stop_at = now
                break
            more_now = False
            for c in live:
                more_now |= load.fill(c, window, limit, now)
            load.pump(0.0 if more_now else min(0.05, max(0.0, deadline - now)))
        sent_at_stop, acked_at_stop = load.sent, load.acked

        load.wait(lambda: all(c.outstanding == 0 for c in load.live()), DRAIN_TIMEOUT_S)
        unanswered = sum(c.outstanding for c in load.live())
        end = clock()
        for c in load.live():
            c.close_txnr = c.take_txnr()
            c.out += frame(c.close_txnr, b"close")
            load.flush(c, end)
        load.wait(lambda: not load.live(), CLOSE_TIMEOUT_S)
        for c in load.live():
            load.fail(c, "no answer to close")
    finally:
        load.close()

    cpu = _cpu_s() - cpu0
    measured = max(1e-9, stop_at - t0)
    counted = acked_at_stop
    if max_events is not None and load.sent >= limit:
        # Count-bounded run: time it to the last answer, as bench.loadgen does.
        measured = max(1e-9, load.last_ack_at - t0)
        counted = load.acked
    event_bytes = len(messages[0])
    return {
        "conns": conns,
        "mode": "relp",
        "window": window,
        "event_bytes": event_bytes,
        "connect_s": round(connect_s, 3),
        "measured_s": round(measured, 3),
        "wall_s": round(end - t0, 3),
        "sent": load.sent,
        "sent_at_stop": sent_at_stop,
        "acked": load.acked,
        "counted": counted,
        "events_per_s": counted / measured,
        "mb_per_s": counted * event_bytes / measured / 1e6,
        "errors": load.errors,
        "error_lines": load.error_lines,
        "disconnects": load.disconnects,
        "unacked_at_end": unanswered,
        "closed_cleanly": sum(1 for c in load.conns if c.closed),
        "server_software": load.server_software,
        "loadgen_cpu_s": round(cpu, 3),
        "loadgen_wall_s": round(clock() - t_connect, 3),
        "t0_monotonic": t0,
        "stop_monotonic": stop_at,
        "latency_ms": latency_summary(load.samples),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.relp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=8, help="RELP sessions (default 8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    p.add_argument("--max-events", type=int, help="stop after this many messages in all")
    p.add_argument("--size", choices=SIZES, default="small", help="bench.loadgen event preset")
    p.add_argument("--window", type=int, default=256, help="messages in flight per session")
    args = p.parse_args(argv)
    if not 1 <= args.conns <= 5000 or args.window < 1:
        p.error("--conns must be 1..5000 and --window at least 1")
    messages = [line.rstrip(b"\n") for line in build_events(args.size)]
    result = run_relp(
        args.host, args.port, args.conns, messages, args.duration, args.window, args.max_events
    )
    result["size"] = args.size
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load generator for the gateway: N TCP connections driven by one selector loop.

Runs as its own process (``python -m bench.loadgen ...``, or with ``--procs 2``
as two worker processes) so that its CPU is never the gateway's. Per-event
client cost is kept tiny: every event of a size preset is padded to the same
length and a few hundred distinct events are laid end to end in one buffer, so
"send events i..j" is a zero-copy slice of that buffer, and acknowledgements
are counted with ``bytes.count(b"\\n")`` per received chunk.

Modes:
  ack   hello {"ack": true}, then pipelined: at most --window events
        outstanding per connection. Reports acknowledged events/s and ack
        latency (from the moment a send() completed a batch to the arrival of
        the ack of the batch's last event).
  fire  fire-and-forget: no hello, no replies; reports events/s *sent*
        (handed to the kernel; the gateway may still be reading them).

Prints one JSON object (the result) as the last line of stdout.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import time
from array import array
from typing import Any

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

# Largest single send(): big enough to amortise the syscall over thousands of
# small events, small enough to spread the gateway's reads over connections.
SEND_CHUNK = 256 * 1024
RECV_BYTES = 256 * 1024

HELLO = b'{"hello":{"app":"bench","ack":true}}\n'

SIZES = ("small", "audit", "large")
LARGE_BYTES = 8192

# ---------------------------------------------------------------- payloads

_EVENT_TYPES = (
    "subscription_created",
    "subscription_renewed",
    "subscription_canceled",
    "payment_succeeded",
    "payment_failed",
    "order_shipped",
)
_STATUSES = ("active", "past_due", "canceled", "trialing", "paid", "shipped")


def _timestamp(i: int) -> str:
    hh, mm, ss = 10 + i // 3600 % 10, i // 60 % 60, i % 60
    return f"2026-11-23T{hh:02d}:{mm:02d}:{ss:02d}.{i * 7919 % 1000000:06d}Z"


def _small(i: int) -> dict[str, Any]:
    return {
        "event_type": _EVENT_TYPES[i % len(_EVENT_TYPES)],
        "timestamp": _timestamp(i),
        "subscription_id": f"sub_{i * 104729 % 10**8:08d}",
        "user_id": f"usr_{i * 7919 % 10**7:07d}",
        "order_id": f"ord_{i * 31337 % 10**10:010d}",
        "status": _STATUSES[i % len(_STATUSES)],
    }


def _address(i: int, salt: int) -> dict[str, Any]:
    return {
        "street": f"{(i * salt) % 400 + 1} Harbour Road, Unit {(i + salt) % 90 + 10}",
        "city": ("Southampton", "Portsmouth", "Winchester", "Bournemouth")[(i + salt) % 4],
        "postcode": f"SO{(i + salt) % 90 + 10} {(i * salt) % 9 + 1}AB",
        "country": "GB",
        "phone": f"+44 23 8000 {(i * salt) % 10000:04d}",
    }


def _audit(i: int) -> dict[str, Any]:
    return {
        "event_type": "audit.record_changed",
        "timestamp": _timestamp(i),
        "actor": {
            "user_id": f"usr_{i * 7919 % 10**7:07d}",
            "name": f"operator-{i % 500:04d}",
            "ip": f"10.20.{i % 250}.{i * 7 % 250 + 1}",
        },
        "object": {"type": "customer", "id": f"cus_{i * 104729 % 10**8:08d}"},
        "field": "billing_address",
        "old_value": _address(i, 3),
        "new_value": _address(i, 11),
        "reason": "customer request",
        "ticket_id": f"tkt_{i * 613 % 10**6:06d}",
        "request_id": f"req_{i * 2654435761 % 2**64:016x}",
        "app": "crm",
    }


def _large(i: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_type": "report.daily_summary",
        "timestamp": _timestamp(i),
        "branch": f"branch-{i % 1000:03d}",
        "lines": [],
    }
    budget = LARGE_BYTES - 1
    j = 0
    while True:
        line = {
            "sku": f"SKU-{(i * 97 + j) % 10**6:06d}",
            "description": "Thermal paper roll 80mm x 80m, box of 20",
            "qty": (i + j) % 40 + 1,
            "unit_price_cents": (i * j) % 5000 + 100,
            "total_cents": ((i + j) % 40 + 1) * ((i * j) % 5000 + 100),
        }
        event["lines"].append(line)
        if len(_dumps(event)) > budget:
            event["lines"].pop()
            return event
        j += 1


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_BUILDERS = {"small": (_small, 512), "audit": (_audit, 256), "large": (_large, 64)}


def marked_for_print(i: int, print_every: int) -> bool:
    """Whether pre-built event i carries `"print": true` (every Nth, starting with the first).

    One rule shared by building and counting, so the count of acknowledged events
    that ask for a receipt is exact even though the pre-built events are reused."""
    return print_every > 0 and i % print_every == 0


def _build(size: str, i: int, print_every: int) -> dict[str, Any]:
    builder, _count = _BUILDERS[size]
    event = builder(i)
    if marked_for_print(i, print_every):
        event["print"] = True
        # A large event is already at its fixed length: make room for the marker.
        while size == "large" and len(_dumps(event)) > LARGE_BYTES - 1 and event["lines"]:
            event["lines"].pop()
    return event


def build_events(size: str, print_every: int = 0) -> list[bytes]:
    """Distinct events of one preset, all padded (JSON whitespace) to one length, with newline.

    With print_every N, every Nth event also carries `"print": true` (for a route
    that prints it); the padding keeps marked and unmarked events the same length."""
    _builder, count = _BUILDERS[size]
    raw = [_dumps(_build(size, i, print_every)) for i in range(count)]
    length = LARGE_BYTES - 1 if size == "large" else max(len(r) for r in raw)
    return [r + b" " * (length - len(r)) + b"\n" for r in raw]


def marked_among(first_n: int, ring_events: int, print_every: int) -> int:
    """How many of a connection's first `first_n` events carry `"print": true`.

    A connection sends the ring's events in order from index 0, wrapping around."""
    if print_every <= 0:
        return 0
    per_ring = sum(1 for i in range(ring_events) if marked_for_print(i, print_every))
    whole, rest = divmod(first_n, ring_events)
    return whole * per_ring + sum(1 for i in range(rest) if marked_for_print(i, print_every))


def build_ring(size: str, extra_bytes: int, print_every: int = 0) -> tuple[bytes, int, int]:
    """(buffer, event length, ring length): buffer[k*L:...] for k < ring/L, plus a tail."""
    events = build_events(size, print_every)
    length = len(events[0])
    ring = b"".join(events)
    reps = 1 + -(-extra_bytes // len(ring))
    return ring * (reps + 1), length, len(ring)


# ---------------------------------------------------------------- helpers


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(samples: list[float] | array) -> dict[str, Any]:
    s = sorted(samples)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        "samples": len(s),
        "p50": ms(percentile(s, 50)),
        "p95": ms(percentile(s, 95)),
        "p99": ms(percentile(s, 99)),
        "max": ms(s[-1] if s else None),
    }


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of another process (the gateway), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Conn:
    __slots__ = ("acked", "alive", "blocked", "lat", "ready", "sent_bytes", "sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent_bytes = 0
        self.acked = 0
        self.blocked = False  # a send() came back short: wait for writability
        self.ready = True  # may have something to send now
        self.alive = True
        self.tail = b""  # partial reply line carried to the next recv
        self.lat: collections.deque = collections.deque()  # (events sent, time)


def open_connections(
    host: str, port: int, n: int, hello: bool, timeout: float = 10.0
) -> tuple[list[Conn], list[str]]:
    """Connect n sockets; with hello, send it and wait for every hello reply."""
    raise_nofile(n + 64)
    conns: list[Conn] = []
    errors: list[str] = []
    for _ in range(n):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hello:
            sock.sendall(HELLO)
        sock.setblocking(False)
        conns.append(Conn(sock))
    if not hello:
        return conns, errors
    sel = selectors.DefaultSelector()
    waiting = {}
    for c in conns:
        sel.register(c.sock, READ, c)
        waiting[c.sock.fileno()] = c
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for key, _mask in sel.select(0.1):
            c = key.data
            try:
                data = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                data = b""
                errors.append(f"hello: {exc}")
            c.tail += data
            if not data or b"\n" in c.tail:
                sel.unregister(c.sock)
                del waiting[c.sock.fileno()]
                line, _, rest = c.tail.partition(b"\n")
                c.tail = rest
                if not data or b'"hello"' not in line:
                    c.alive = False
                    errors.append(f"hello refused: {line[:200].decode(errors='replace')}")
    sel.close()
    for c in waiting.values():
        c.alive = False
        errors.append("hello: no reply")
    return conns, errors


# ---------------------------------------------------------------- the loop


def run_load(
    host: str = "127.0.0.1",
    port: int = 50001,
    conns: int = 64,
    duration: float = 10.0,
    max_events: int | None = None,
    size: str = "small",
    mode: str = "ack",
    window: int = 256,
    rate: float = 0.0,
    min_batch: int = 1,
    watch_pid: int | None = None,
    drain_timeout: float = 15.0,
    print_every: int = 0,
) -> dict[str, Any]:
    """One process's share of the load. Returns counts, rates, raw latency samples."""
    ack = mode == "ack"
    buf, L, ring_bytes = build_ring(size, SEND_CHUNK, print_every)
    mv = memoryview(buf)
    chunk = max(L, SEND_CHUNK // L * L)
    cpu0 = _cpu_s()
    t_connect = time.monotonic()
    clist, errors_text = open_connections(host, port, conns, hello=ack)
    connect_s = time.monotonic() - t_connect
    live = [c for c in clist if c.alive]
    sel = selectors.DefaultSelector()
    for c in live:
        sel.register(c.sock, READ, c)

    samples = array("d")
    errors = len(errors_text)
    error_lines: list[str] = list(errors_text[:5])
    disconnects = 0
    total_sent = 0  # complete events handed to the kernel
    total_acked = 0
    limit = max_events if max_events is not None else 1 << 62
    clock = time.monotonic
    t0 = clock()
    watched0 = _proc_cpu_s(watch_pid)
    watched_stop = None
    deadline = t0 + duration
    stop_at: float | None = None
    sent_at_stop = acked_at_stop = 0
    last_ack_at = t0
    rotate = 0
    n = len(live)

    def lost(c: Conn, why: str) -> None:
        nonlocal disconnects, errors
        if not c.alive:
            return
        c.alive = False
        disconnects += 1
        if ack and c.sent_bytes // L > c.acked:
            errors += 1
            if len(error_lines) < 5:
                error_lines.append(
                    f"connection lost with {c.sent_bytes // L - c.acked} unacked: {why}"
                )
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while True:
        now = clock()
        if stop_at is None and (now >= deadline or total_sent >= limit or disconnects >= n):
            stop_at = now
            sent_at_stop, acked_at_stop = total_sent, total_acked
            watched_stop = _proc_cpu_s(watch_pid)
        if stop_at is not None:
            if not ack:
                break
            outstanding = sum(c.sent_bytes // L - c.acked for c in live if c.alive)
            if outstanding <= 0 or now - stop_at > drain_timeout:
                break

        more_now = False
        if stop_at is None:
            budget = limit - total_sent
            if rate:
                budget = min(budget, int(rate * (now - t0)) + 1 - total_sent)
                if budget < min_batch:
                    budget = 0
            if budget > 0:
                share = max(min_batch, budget // max(1, n)) if rate else budget
                start = rotate
                rotate = (rotate + 1) % max(1, n)
                for k in range(n):
                    c = live[(start + k) % n]
                    if not c.ready or c.blocked or not c.alive:
                        continue
                    sb = c.sent_bytes
                    cap = (c.acked + window) * L if ack else sb + chunk
                    cap = min(cap, (sb // L + min(share, budget)) * L, sb + chunk)
                    want = cap - sb
                    if want <= 0:
                        c.ready = False
                        continue
                    off = sb % ring_bytes
                    try:
                        got = c.sock.send(mv[off : off + want])
                    except (BlockingIOError, InterruptedError):
                        got = 0
                    except OSError as exc:
                        lost(c, str(exc))
                        continue
                    if got < want:
                        c.blocked = True
                        sel.modify(c.sock, READ | WRITE, c)
                    before = sb // L
                    c.sent_bytes = sb = sb + got
                    after = sb // L
                    if after > before:
                        total_sent += after - before
                        budget -= after - before
                        if ack:
                            c.lat.append((after, now))
                    if not c.blocked:
                        if ack and sb >= (c.acked + window) * L:
                            c.ready = False
                        elif not rate:
                            more_now = True  # capped by chunk, not by the window
                    if budget <= 0:
                        break
        if stop_at is not None:
            timeout = 0.05
        elif more_now:
            timeout = 0.0
        elif rate:
            timeout = 0.001
        else:
            timeout = min(0.05, max(0.0, deadline - now))
        for key, mask in sel.select(timeout):
            c = key.data
            if mask & WRITE:
                c.blocked = False
                c.ready = True
                sel.modify(c.sock, READ, c)
            if mask & READ:
                try:
                    data = c.sock.recv(RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    lost(c, str(exc))
                    continue
                if not data:
                    lost(c, "closed by the gateway")
                    continue
                if c.tail:
                    data = c.tail + data
                last = data.rfind(b"\n")
                if last < 0:
                    c.tail = data
                    continue
                c.tail = data[last + 1 :]
                got = data.count(b"\n")
                if b"false" in data:
                    bad = data[: last + 1].count(b'"ok":false')
                    if bad:
                        errors += bad
                        if len(error_lines) < 5:
                            for line in data[: last + 1].split(b"\n"):
                                if b'"ok":false' in line:
                                    error_lines.append(line[:200].decode(errors="replace"))
                                    break
                if not ack:
                    continue
                t = clock()
                c.acked += got
                total_acked += got
                last_ack_at = t
                lat = c.lat
                acked = c.acked
                while lat and lat[0][0] <= acked:
                    samples.append(t - lat.popleft()[1])
                if not c.blocked:
                    c.ready = True

    end = clock()
    for c in live:
        if c.alive:
            try:
                if not ack:
                    c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.sock.close()
    sel.close()
    cpu = _cpu_s() - cpu0
    assert stop_at is not None
    measured = max(1e-9, stop_at - t0)
    counted = acked_at_stop if ack else sent_at_stop
    if ack and max_events is not None and total_sent >= limit:
        # Count-bounded run: every event was acknowledged; time it to the last ack.
        measured = max(1e-9, last_ack_at - t0)
        counted = total_acked
    return {
        "conns": conns,
        "size": size,
        "mode": mode,
        "window": window if ack else None,
        "rate_target": rate or None,
        "event_bytes": L,
        "connect_s": round(connect_s, 3),
        "measured_s": round(measured, 3),
        "wall_s": round(end - t0, 3),
        "sent": total_sent,
        "acked": total_acked if ack else None,
        "counted": counted,
        "events_per_s": counted / measured,
        "mb_per_s": counted * L / measured / 1e6,
        "errors": errors,
        "error_lines": error_lines,
        "disconnects": disconnects,
        "unacked_at_end": (total_sent - total_acked) if ack else None,
        "loadgen_cpu_s": round(cpu, 3),
        "loadgen_wall_s": round(end - t_connect, 3),
        "t0_monotonic": t0,
        "stop_monotonic": stop_at,
        "watched_cpu_s": None
        if watched0 is None or watched_stop is None
        else round(watched_stop - watched0, 3),
        "samples": samples.tolist(),
        "print_every": print_every or None,
        # Events carrying "print": true, exactly (each connection starts at ring index 0).
        "sent_print": sum(
            marked_among(c.sent_bytes // L, ring_bytes // L, print_every) for c in live
        ),
        "acked_print": sum(marked_among(c.acked, ring_bytes // L, print_every) for c in live)
        if ack
        else None,
    }


def _worker(kwargs: dict[str, Any]) -> dict[str, Any]:
    return run_load(**kwargs)


def run_parallel(procs: int, **kwargs: Any) -> dict[str, Any]:
    """Split the connections (and rate, and count) over `procs` worker processes."""
    conns = kwargs["conns"]
    procs = max(1, min(procs, conns))
    if procs == 1:
        result = run_load(**kwargs)
        result["procs"] = 1
        result["loadgen_cpu_max_pct"] = 100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"]
        result["latency_ms"] = latency_summary(result.pop("samples"))
        return result
    shares = []
    for i in range(procs):
        kw = dict(kwargs)
        kw["conns"] = conns // procs + (1 if i < conns % procs else 0)
        if kwargs.get("rate"):
            kw["rate"] = kwargs["rate"] * kw["conns"] / conns
        if kwargs.get("max_events") is not None:
            kw["max_events"] = kwargs["max_events"] * kw["conns"] // conns
        shares.append(kw)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        parts = pool.map(_worker, shares)
    samples: list[float] = []
    for p in parts:
        samples.extend(p["samples"])
    merged = dict(parts[0])
    del merged["samples"]
    merged["conns"] = conns
    merged["rate_target"] = kwargs.get("rate") or None
    for key in ("sent", "counted", "errors", "disconnects", "loadgen_cpu_s"):
        merged[key] = sum(p[key] for p in parts)
    merged["sent_print"] = sum(p["sent_print"] for p in parts)
    for key in ("acked", "unacked_at_end", "acked_print"):
        merged[key] = None if parts[0][key] is None else sum(p[key] for p in parts)
    merged["events_per_s"] = sum(p["events_per_s"] for p in parts)
    merged["mb_per_s"] = sum(p["mb_per_s"] for p in parts)
    merged["measured_s"] = max(p["measured_s"] for p in parts)
    merged["t0_monotonic"] = min(p["t0_monotonic"] for p in parts)
    merged["stop_monotonic"] = max(p["stop_monotonic"] for p in parts)
    merged["watched_cpu_s"] = None  # the workers' windows differ; the runner measures it
    merged["loadgen_wall_s"] = max(p["loadgen_wall_s"] for p in parts)
    merged["error_lines"] = [line for p in parts for line in p["error_lines"]][:5]
    merged["procs"] = procs
    merged["loadgen_cpu_max_pct"] = max(
        100 * p["loadgen_cpu_s"] / p["loadgen_wall_s"] for p in parts
    )
    merged["latency_ms"] = latency_summary(samples)
    return merged


# ---------------------------------------------------------------- idle mode


def hold_idle(host: str, port: int, conns: int, hold: float) -> dict[str, Any]:
    """Open `conns` acknowledged connections (hello answered), print a ready line,
    then keep them idle until stdin reaches EOF (or a line arrives) or `hold` s pass."""
    t = time.monotonic()
    clist, errors = open_connections(host, port, conns, hello=True)
    opened = sum(1 for c in clist if c.alive)
    print(
        json.dumps({"ready": True, "open": opened, "connect_s": round(time.monotonic() - t, 3)}),
        flush=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), READ, None)
    for c in clist:
        if c.alive:
            sel.register(c.sock, READ, c)
    closed = 0
    deadline = time.monotonic() + hold
    done = False
    while not done and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            if key.data is None:
                done = True
                break
            c = key.data
            try:
                data = c.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(c.sock)
                c.alive = False
    still_open = sum(1 for c in clist if c.alive)
    for c in clist:
        c.sock.close()
    return {
        "conns": conns,
        "opened": opened,
        "closed_by_gateway": closed,
        "still_open": still_open,
        "errors": len(errors),
        "error_lines": errors[:5],
    }


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50001)
    p.add_argument("--conns", type=int, default=64, help="connections, 1..1000 (default 64)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    p.add_argument("--max-events", type=int, help="stop after this many events in all")
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--mode", choices=("ack", "fire"), default="ack")
    p.add_argument("--window", type=int, default=256, help="events in flight per connection")
    p.add_argument("--rate", type=float, default=0.0, help="target events/s in all (0: unlimited)")
    p.add_argument("--procs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--min-batch", type=int, default=1, help="with --rate: at least this many events per send"
    )
    p.add_argument("--watch-pid", type=int, help="report this process's CPU over the load window")
    p.add_argument(
        "--print-every",
        type=int,
        default=0,
        metavar="N",
        help='put "print": true into every Nth pre-built event (0: none; sizes stay equal)',
    )
    p.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="open --conns acknowledged connections and hold them idle",
    )
    args = p.parse_args(argv)
    if not 1 <= args.conns <= 5000:
        p.error("--conns must be 1..5000")
    if args.idle is not None:
        result = hold_idle(args.host, args.port, args.conns, args.idle)
    else:
        result = run_parallel(
            args.procs,
            host=args.host,
            port=args.port,
            conns=args.conns,
            duration=args.duration,
            max_events=args.max_events,
            size=args.size,
            mode=args.mode,
            window=args.window,
            rate=args.rate,
            min_batch=args.min_batch,
            watch_pid=args.watch_pid,
            print_every=args.print_every,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

"""`make bench-oneshot`: one-shot connections, the original PHP client's pattern.

Each of --clients concurrent clients repeats, for --duration seconds: connect,
send a hello asking for acknowledgements, wait for its reply, send one event
(bench.loadgen's small preset), wait for the event's acknowledgement, close.
The client reports connections/s (completed cycles) and the latency of each
cycle from the start of connect() to the return of close(): p50, p99, max.

The same clients then run against rsyslog's imtcp (bench/peers.py's instance:
omfile sync="on", stock queues), which has no acknowledgement and no hello, so
there a cycle is: connect, send the one line, shut down the sending side, wait
for rsyslog to close its side (it has read the line), close. A client that
closed at once, without that wait, would open connections faster than rsyslog
accepts them: they overflow its listen backlog (25 here) and the dropped SYNs
are retried after 1 s, which measures TCP's retry timer, not rsyslog. Its
figure is then checked against the file: lines stored/s from the first connect
until the file holds every line sent (bounded by bench.peers.CATCH_UP_S).

Each gateway row is one checkout's gateway (bench.run.GatewayProcess: fsync
batch, query index off, state on the local disk), started with that checkout's
own interpreter as bench.ab does (`--checkout PATH`, repeatable; default this
tree). Before each system the runner waits (up to --wait-quiet s) for other
processes to go quiet and reports the cores they used meanwhile ("other load").
The client is one process with one selector loop (`python -m bench.oneshot
client ...`), its CPU reported beside the server's. Appends one section to
bench/RESULTS.md unless --no-append.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from bench import ab, peers, run
from bench.loadgen import _cpu_s, build_events, latency_summary, raise_nofile

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

HELLO = b'{"hello":{"app":"bench-oneshot","ack":true}}\n'

# Concurrent clients and seconds of load (--clients, --duration): a handful of
# PHP workers each logging one event per request.
CLIENTS = 16
DURATION_S = 10.0
# One cycle (connect to close) that takes longer than this is abandoned and counted
# as an error: a loopback cycle takes milliseconds, 10 s means the server is stuck.
CYCLE_TIMEOUT_S = 10.0
# After --duration, cycles under way may finish for at most this long.
DRAIN_S = 10.0
# Bound on the number of cycles in one run, whatever the duration (memory for the
# latency samples: 8 bytes each).
MAX_CYCLES = 5_000_000
# Bound on the client process beyond --duration: drain plus start-up.
CLIENT_EXTRA_S = 60.0
# A reply line longer than this is a protocol error (a hello reply is ~110 B).
MAX_REPLY_BYTES = 64 * 1024


class Cycle:
    """One client's current connection."""

    __slots__ = ("buf", "phase", "sock", "started")

    def __init__(self, sock: socket.socket, started: float) -> None:
        self.sock = sock
        self.started = started
        self.phase = "connect"  # then (gateway) "hello", "event"
        self.buf = b""


def run_clients(host: str, port: int, clients: int, duration: float, mode: str) -> dict[str, Any]:
    """mode "ack": connect, hello, wait, event, wait for its ack, close.
    mode "line": connect, send one line, shut down the sending side, wait for
    the server's close (no reply exists; the server has read the line), close."""
    raise_nofile(clients + 64)
    events = build_events("small")
    sel = selectors.DefaultSelector()
    samples = array("d")
    errors = 0
    error_lines: list[str] = []
    sent = 0  # events handed to the kernel
    cycles_started = 0
    clock = time.monotonic
    cpu0 = _cpu_s()
    t0 = clock()
    deadline = t0 + duration
    drain_until = deadline + DRAIN_S
    live: dict[int, Cycle] = {}

    def error(text: str) -> None:
        nonlocal errors
        errors += 1
        if len(error_lines) < 5:
            error_lines.append(text)

    def start() -> None:
        nonlocal cycles_started
        cycles_started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Cycle(sock, clock())
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            error(f"connect: {os.strerror(code)}")
            return
        live[sock.fileno()] = c
        sel.register(sock, WRITE, c)

    def finish(c: Cycle, ok: bool, why: str = "") -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(c.sock)
        live.pop(c.sock.fileno(), None)
        c.sock.close()
        if ok:
            samples.append(clock() - c.started)
        else:
            error(why)

    def send_all(c: Cycle, data: bytes) -> bool:
        """A line of a few hundred bytes into an empty socket buffer goes whole."""
        try:
            n = c.sock.send(data)
        except OSError as exc:
            finish(c, False, f"{c.phase}: {exc}")
            return False
        if n != len(data):
            finish(c, False, f"{c.phase}: short send {n} of {len(data)}")
            return False
        return True

    for _ in range(clients):
        start()
    while True:
        now = clock()
        if now >= drain_until or (now >= deadline and not live):
            break
        for key, mask in sel.select(0.05):
            c = key.data
            if c.sock.fileno() not in live:
                continue
            if c.phase == "connect":
                code = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    finish(c, False, f"connect: {os.strerror(code)}")
                    continue
                if mode == "line":
                    c.phase = "line"
                    if send_all(c, events[sent % len(events)]):
                        sent += 1
                        c.sock.shutdown(socket.SHUT_WR)
                        sel.modify(c.sock, READ, c)
                    continue
                c.phase = "hello"
                if send_all(c, HELLO):
                    sel.modify(c.sock, READ, c)
                continue
            if not mask & READ:
                continue
            try:
                data = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                finish(c, False, f"{c.phase}: {exc}")
                continue
            if not data:
                # A line client's cycle ends when the server has read the line and closed.
                ok = c.phase == "line"
                finish(c, ok, "" if ok else f"{c.phase}: closed by the server")
                continue
            if c.phase == "line":
                finish(c, False, f"line: the server answered {data[:100]!r}")
                continue
            c.buf += data
            if b"\n" not in c.buf:
                if len(c.buf) > MAX_REPLY_BYTES:
                    finish(c, False, f"{c.phase}: reply too long")
                continue
            line, _, c.buf = c.buf.partition(b"\n")
            if c.phase == "hello":
                if b'"hello"' not in line or b'"ok":true' not in line:
                    finish(c, False, f"hello refused: {line[:200].decode(errors='replace')}")
                    continue
                c.phase = "event"
                if send_all(c, events[sent % len(events)]):
                    sent += 1
            elif b'"ok":true' in line:
                finish(c, True)
            else:
                finish(c, False, f"event refused: {line[:200].decode(errors='replace')}")
        now = clock()
        for c in [c for c in live.values() if now - c.started > CYCLE_TIMEOUT_S]:
            finish(c, False, f"{c.phase}: no answer within {CYCLE_TIMEOUT_S:g} s")
        # Keep `clients` cycles under way until the deadline.
        while now < deadline and len(live) < clients and cycles_started < MAX_CYCLES:
            start()
    end = clock()
    for c in list(live.values()):
        finish(c, False, f"{c.phase}: still open after the drain")
    sel.close()
    done = len(samples)
    # Cycles finish through the drain; the rate counts all of them over the time
    # from the first connect to the last close.
    measured = max(1e-9, end - t0)
    return {
        "mode": mode,
        "clients": clients,
        "duration": duration,
        "cycles": done,
        "sent": sent,
        "conns_per_s": done / measured,
        "measured_s": round(measured, 3),
        "t0_monotonic": t0,
        "end_monotonic": end,
        "errors": errors,
        "error_lines": error_lines,
        "event_bytes": len(events[0]),
        "latency_ms": latency_summary(samples),
        "client_cpu_s": round(_cpu_s() - cpu0, 3),
    }


def client_process(port: int, clients: int, duration: float, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.oneshot", "client", "--port", str(port),
           "--clients", str(clients), "--duration", str(duration), "--mode", mode]  # fmt: skip
    out = subprocess.run(cmd, cwd=run.REPO, capture_output=True, text=True,
                         timeout=duration + DRAIN_S + CLIENT_EXTRA_S)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"oneshot client failed ({out.returncode}): {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(system: str, pid: int, port: int, args: argparse.Namespace, mode: str) -> dict:
    """One system under the one-shot clients: the client's figures, the server's CPU."""
    if args.wait_quiet > 0:
        run.wait_quiet(args.wait_quiet)
    busy0, cpu0, t_start = run.system_busy_s(), peers.server_cpu(pid), time.monotonic()
    r = client_process(port, args.clients, args.duration, mode)
    cpu, busy = peers.server_cpu(pid) - cpu0, run.system_busy_s() - busy0
    wall = time.monotonic() - t_start
    r["system"] = system
    r["server_cpu_pct"] = round(100 * cpu / r["measured_s"], 1)
    r["server_us_per_conn"] = round(1e6 * cpu / r["cycles"], 1) if r["cycles"] else None
    r["client_cpu_pct"] = round(100 * r["client_cpu_s"] / r["measured_s"], 1)
    r["other_cores"] = round(max(0.0, busy - cpu - r["client_cpu_s"]) / wall, 2)
    r["notes"] = []
    lat = r["latency_ms"]
    print(f"  {system}: {r['conns_per_s']:,.0f} connections/s, p50 {lat['p50']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms, errors {r['errors']}, server CPU "
          f"{r['server_cpu_pct']}%, other load {r['other_cores']} cores", flush=True)  # fmt: skip
    return r


def measure_gateway(checkout: Path, root: Path, args: argparse.Namespace) -> dict:
    rev = ab.revision(checkout)
    gw = run.GatewayProcess(root / f"gateway-{rev}", run.free_port(), extra_config=run.INDEX_OFF,
                            checkout=checkout, python=ab.interpreter(checkout))  # fmt: skip
    gw.start()
    try:
        path = gw.status().get("ingest_path", "python")
        head0 = gw.status()["ledger"]["head_seq"]
        r = measure(f"gateway {rev} ({path} path)", gw.pid, gw.port, args, "ack")
        grew = gw.status()["ledger"]["head_seq"] - head0
    finally:
        code = gw.stop()
    r["notes"].append(f"{r['cycles']:,} events acknowledged, ledger grew by {grew:,}")
    if grew < r["cycles"]:
        r["errors"] += 1
        r["notes"].append("FEWER ledger entries than acknowledgements")
    if code != 0:
        r["notes"].append(f"exit code {code}")
    logged = gw.log_summary()
    if logged:
        r["notes"].append(", ".join(f"{n} x {m}" for m, n in logged.most_common(3)))
    return r


def measure_rsyslog(binary: str, root: Path, args: argparse.Namespace) -> dict:
    rs = peers.Rsyslog(binary, "imtcp", root)
    try:
        rs.start()
        counter = peers.LineCounter(rs.out)
        r = measure('rsyslog imtcp, omfile sync="on"', rs.pid, rs.port, args, "line")
        stored, seconds, complete = peers.catch_up(counter.count, r["sent"], r["t0_monotonic"])
    finally:
        rs.stop()
    if complete:
        r["notes"].append(f"{r['sent']:,} lines sent, all in the file {seconds:.1f} s after "
                          f"the first connect: {stored / seconds:,.0f} lines stored/s")  # fmt: skip
    else:
        r["errors"] += 1
        r["notes"].append(f"INCOMPLETE: {stored:,} of {r['sent']:,} lines reached the file "
                          f"within {peers.CATCH_UP_S:.0f} s")  # fmt: skip
    if rs.own_log():
        r["notes"].append(f"rsyslog said: {rs.own_log()}")
    return r


def _f(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def report(info: dict[str, str], rsyslog: str, args: argparse.Namespace, rows: list[dict]) -> list:
    lines = [
        f"## {info['date']}: one-shot connections (`make bench-oneshot`), {info['rev']}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; Python "
        f"{info['python']}; {rsyslog}. {args.clients} concurrent clients in one process, "
        f"{args.duration:g} s each system; gateway cycle: connect, hello with ack, wait for "
        "its reply, one small event, wait for its ack, close; rsyslog cycle (no "
        "acknowledgement exists): connect, send the line, shut down the sending side, wait for "
        "rsyslog to close its side, close. Latency: from connect() to "
        "close(). Gateways: fsync batch, query index off, state on the local disk.",
        "",
        "| system | connections/s | p50 ms | p99 ms | max ms | server CPU | server µs CPU/conn "
        "| client CPU | other load | errors | notes |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lat = r.get("latency_ms") or {}
        lines.append(
            f"| {r['system']} | {_f(r.get('conns_per_s'), '{:,.0f}')} | {_f(lat.get('p50'))} "
            f"| {_f(lat.get('p99'))} | {_f(lat.get('max'))} "
            f"| {_f(r.get('server_cpu_pct'), '{:.1f}%')} | {_f(r.get('server_us_per_conn'))} "
            f"| {_f(r.get('client_cpu_pct'), '{:.1f}%')} "
            f"| {_f(r.get('other_cores'), '{:.2f} cores')} | {r.get('errors', '-')} "
            f"| {'; '.join(r['notes'] + r.get('error_lines', [])[:2]).replace('|', '/')} |"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["client"]:
        p = argparse.ArgumentParser(prog="python -m bench.oneshot client")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--clients", type=int, default=CLIENTS)
        p.add_argument("--duration", type=float, default=DURATION_S)
        p.add_argument("--mode", choices=("ack", "line"), default="ack")
        a = p.parse_args(argv[1:])
        if not 1 <= a.clients <= 1000:
            p.error("--clients must be 1..1000")
        print(json.dumps(run_clients(a.host, a.port, a.clients, a.duration, a.mode)))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.oneshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--checkout",
        type=Path,
        action="append",
        help="a checkout whose gateway to measure (repeatable; default: this tree)",
    )
    p.add_argument("--clients", type=int, default=CLIENTS, help=f"default {CLIENTS}")
    p.add_argument("--duration", type=float, default=DURATION_S, help=f"default {DURATION_S:g}")
    p.add_argument("--no-rsyslog", action="store_true", help="the gateway rows only")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=ab.QUIET_WAIT_S,
        metavar="S",
        help="before each system wait up to S s for other processes to go quiet",
    )
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    checkouts = [c.resolve() for c in (args.checkout or [run.REPO])]
    info = run.machine()
    binary = peers.rsyslogd_binary()
    rsyslog = "rsyslog not installed"
    if binary is not None:
        rsyslog = f"rsyslog {peers.rsyslog_version(binary)}"
        if os.geteuid() == 0:
            rsyslog += " run as nobody"
    rows: list[dict] = []
    root = Path(tempfile.mkdtemp(prefix="gateway-oneshot-"))
    try:
        for checkout in checkouts:
            rows.append(measure_gateway(checkout, root, args))
        if args.no_rsyslog:
            pass
        elif binary is None or peers.rsyslog_module("imtcp") is None:
            why = "not measured: rsyslogd or imtcp missing (bench/peers-deps.sh installs it)"
            rows.append({"system": "rsyslog imtcp", "notes": [why]})
        else:
            rows.append(measure_rsyslog(binary, root, args))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    section = report(info, rsyslog, args, rows)
    print()
    print("\n".join(section))
    if not args.no_append:
        run.append_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-print`: printing benchmarks against the real gateway and a printer that reads fast.

Each scenario starts `python -m gateway run` (through bench.run's GatewayProcess) on a
fresh state directory with its own configuration, and points its socket printer at a
sink that runs in this process: a thread that accepts one connection at a time, notes
the arrival of each job's first byte, reads to EOF and closes, which is what a fast
port 9100 printer does. The gateway judges a job delivered when the printer has taken
every byte and closed its side, so the sink closes as soon as it has read EOF.

  1  event durable -> first byte at the printer: one acknowledged client sends one
     event, waits for its ack, then for the receipt's first byte (matched by the
     `seq N  hash` line on the receipt), ~20 ms apart. Target p99 < 50 ms.
  2  1,000 queued receipts: the printer's port refuses connections while 1,000
     fire-and-forget events are queued, then the sink starts listening; jobs/s until
     it has 1,000 complete jobs, compared with the same sink fed the same jobs by a
     plain Python client in another process.
  3  ingest with one event in ten printed: bench.run's scenario (a) load (64
     acknowledged connections, small events) with every 10th pre-built event carrying
     `"print": true`, against a gateway without printers and one whose route prints
     those events on the sink. Target: events/s with printing >= 0.8x without.

Before each scenario the runner waits (up to --wait-quiet s) for the machine to go
quiet, and reports in "other load" the cores other processes used meanwhile.
`--quick` runs 100 instead of 300 latency events and ~4 s instead of ~8 s of load.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import itertools
import json
import multiprocessing
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import run
from bench.loadgen import latency_summary
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader

# Scenario 1: acknowledged events sent one at a time (full run, --quick).
LATENCY_EVENTS = 300
LATENCY_EVENTS_QUICK = 100
# Scenario 1: one event every 20 ms, so each receipt meets an idle printer.
LATENCY_PACE_S = 0.02
# Scenario 1: give up on a receipt (count it missing) after this long.
RECEIPT_WAIT_S = 5.0
# Scenario 1: wait this long for each acknowledgement.
ACK_WAIT_S = 10.0

# Scenario 2: receipts queued while the printer is away.
DRAIN_JOBS = 1000
# Scenario 2: the refused printer is retried every 0.2 s (retry_start_s = retry_cap_s),
# so the drain starts at most 0.2 s after the sink listens.
DRAIN_RETRY_S = 0.2
# Scenario 2: bound on the wait for all 1,000 events to be queued.
QUEUE_WAIT_S = 30.0
# Scenario 2: bound on the drain itself (~1 job/ms expected; 60 s means something broke).
DRAIN_TIMEOUT_S = 60.0

# Scenario 3: seconds of load per configuration (full run, --quick); as bench.run's (a).
INGEST_S = 8.0
INGEST_S_QUICK = 4.0
# Scenario 3: acknowledged connections and events in flight on each, as bench.run's (a).
INGEST_CONNS = 64
INGEST_WINDOW = 256
# Scenario 3: every 10th pre-built event asks for a receipt.
PRINT_EVERY = 10
# Scenario 3: after the load, wait at most this long for the printer's queue to empty
# (full run, --quick), so that receipts can be compared with the ledger.
BACKLOG_WAIT_S = 30.0
BACKLOG_WAIT_S_QUICK = 15.0

# Before each scenario wait up to this long for other processes to go quiet.
QUIET_WAIT_S = 10.0
# `gateway status` is a whole Python start-up: poll it at most 5 times a second.
STATUS_POLL_S = 0.2
# Bound on one `gateway status` command.
STATUS_TIMEOUT_S = 30.0

# The sink: pending connections the kernel holds while one job is being read.
SINK_BACKLOG = 128
# The sink: read size; a receipt is ~0.3 KiB, so one read takes a whole job.
SINK_RECV_BYTES = 65536
# The sink: a job whose sender goes silent this long is cut (never expected).
SINK_JOB_TIMEOUT_S = 10.0
# The sink: how often the accept loop looks at its stop flag.
SINK_ACCEPT_POLL_S = 0.1

# The paper anchor every receipt carries (docs/printing.md, "What is on the paper").
SEQ_ON_PAPER = re.compile(rb"seq (\d+)  hash [0-9a-f]{16}")

# Goal, and how it reads in the targets table.
TARGETS = {
    "first_byte": (50.0, "durable -> first byte at the printer, p99 ms (<)"),
    "drain": (0.8, "1,000 queued receipts: jobs/s over the printer's own jobs/s (>=)"),
    "ingest": (0.8, "ingest with 1 in 10 printed: events/s over no printers (>=)"),
}


# ---------------------------------------------------------------- the printer


@dataclass(slots=True)
class SinkJob:
    """One connection the sink served: what a printer would have printed, and when."""

    accepted: float
    first_byte: float | None
    end: float
    size: int
    complete: bool  # read to EOF (not cut by a reset or the timeout)
    seq: int | None
    marked: bool  # says COPY or REPRINT


class Sink:
    """A port 9100 printer that reads as fast as it can: one connection at a time.

    Runs on a thread of the bench process, so its CPU is subtracted from "other
    load". The first-byte time is taken when the first recv() returns data; the
    seq is read from the receipt once the whole job is in. It listens from the
    moment it is made (on `port`, or on a free one with port 0)."""

    def __init__(self, port: int = 0) -> None:
        self.jobs: list[SinkJob] = []
        self.complete = 0  # jobs read to EOF
        self.first_byte_by_seq: dict[int, float] = {}
        self.sample = b""  # the first complete job, to replay in the baseline
        self.cpu_s = 0.0  # the sink thread's own CPU time
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port), backlog=SINK_BACKLOG)
        self._listener.settimeout(SINK_ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self.listening_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        cpu0 = time.thread_time()
        try:
            while not self._stop.is_set():
                try:
                    conn, _address = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        return
                    continue
                self._read_job(conn)
                self.cpu_s = time.thread_time() - cpu0
        finally:
            self.cpu_s = time.thread_time() - cpu0
            self._listener.close()

    def _read_job(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        first: float | None = None
        chunks: list[bytes] = []
        complete = False
        with conn:
            conn.settimeout(SINK_JOB_TIMEOUT_S)
            try:
                while True:
                    data = conn.recv(SINK_RECV_BYTES)
                    if not data:
                        complete = True
                        break
                    if first is None:
                        first = time.monotonic()
                    chunks.append(data)
            except OSError:
                pass  # reset or timed out: an incomplete job
        end = time.monotonic()
        body = b"".join(chunks)
        match = SEQ_ON_PAPER.search(body)
        seq = int(match.group(1)) if match else None
        job = SinkJob(
            accepted, first, end, len(body), complete, seq, b"COPY" in body or b"REPRINT" in body
        )
        with self._cond:
            self.jobs.append(job)
            self.complete += complete
            if complete and not self.sample:
                self.sample = body
            if seq is not None and first is not None and complete:
                self.first_byte_by_seq.setdefault(seq, first)
            self._cond.notify_all()

    def first_byte_of(self, seq: int, timeout: float) -> float | None:
        """The first-byte time of the receipt of `seq`, once it is complete (None: timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: seq in self.first_byte_by_seq, timeout)
            return self.first_byte_by_seq.get(seq)

    def wait_complete(self, n: int, timeout: float) -> int:
        """Wait until n complete jobs are in (or timeout); returns how many are."""
        with self._cond:
            self._cond.wait_for(lambda: self.complete >= n, timeout)
            return self.complete

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SINK_JOB_TIMEOUT_S + 1)


def plain_client(port: int, body: bytes, n: int) -> dict[str, float]:
    """n jobs the way the gateway sends them: connect, send, half-close, wait for EOF.

    Runs in its own process (spawned), so the sink thread has the bench process's
    interpreter to itself, as it does when the gateway is the sender."""
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=SINK_JOB_TIMEOUT_S) as s:
            s.sendall(body)
            s.shutdown(socket.SHUT_WR)
            while s.recv(SINK_RECV_BYTES):
                pass
    return {"wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0}


# ---------------------------------------------------------------- helpers


def printer_config(port: int, match_print: bool = False, retry_s: float | None = None) -> str:
    """YAML for one escpos socket printer `p` on 127.0.0.1:port and one route to it."""
    route = "{match: {print: true}, printer: p}" if match_print else "{printer: p}"
    text = (
        "printers:\n"
        f'  p: {{uri: "socket://127.0.0.1:{port}", language: escpos}}\n'
        f"routes: [{route}]\n"
    )
    if retry_s is not None:
        text += f"spool: {{retry_start_s: {retry_s}, retry_cap_s: {retry_s}}}\n"
    return text


def own_cpu_s() -> float:
    """CPU of this process, every thread (the sink's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Window:
    """CPU of the gateway, of this process and of the whole machine over one scenario,
    so that "other load" is what everybody else used meanwhile."""

    def __init__(self, gw: run.GatewayProcess) -> None:
        self.gw = gw
        self.busy0 = run.system_busy_s()
        self.own0 = own_cpu_s()
        self.before = gw.stats()

    def close(self) -> dict[str, float]:
        after = self.gw.stats()
        wall = max(1e-9, after.t - self.before.t)
        gw_cpu = after.cpu_s - self.before.cpu_s
        own = own_cpu_s() - self.own0
        busy = run.system_busy_s() - self.busy0
        return {
            "wall_s": wall,
            "gw_cpu_s": gw_cpu,
            "gw_cpu_pct": 100 * gw_cpu / wall,
            "own_cpu_s": own,
            "other_cores": max(0.0, busy - gw_cpu - own) / wall,
        }


def quiet(limit_s: float) -> float:
    """bench.run's wait_quiet (0: do not wait): other people's tests skew every figure."""
    return run.wait_quiet(limit_s) if limit_s > 0 else 0.0


def gateway_status(gw: run.GatewayProcess) -> dict[str, Any]:
    """`gateway status --json` of the running gateway ({} if it did not answer)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "--config", str(gw.config)],
        cwd=run.REPO,
        capture_output=True,
        text=True,
        timeout=STATUS_TIMEOUT_S,
    )
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {}


def printer_status(gw: run.GatewayProcess) -> dict[str, Any]:
    """The one printer's entry of the status (queued, state, printed), {} if none."""
    printers = gateway_status(gw).get("printers") or [{}]
    return printers[0]


def wait_printer(
    gw: run.GatewayProcess, ok: Callable[[dict[str, Any]], bool], timeout: float
) -> tuple[dict[str, Any], bool]:
    """Poll the printer's status until ok(status); (last status, whether it held)."""
    deadline = time.monotonic() + timeout
    while True:
        status = printer_status(gw)
        if status and ok(status):
            return status, True
        if time.monotonic() >= deadline:
            return status, False
        time.sleep(STATUS_POLL_S)


def ledger_printing(ledger_dir: Path) -> dict[str, Any]:
    """What the ledger says about printing: events asking for a receipt, job outcomes.

    Reads the stopped gateway's ledger directly (as `gateway export` would, without
    turning every entry into JSON); only entries whose bytes mention "print" are
    decoded."""
    marked = 0
    outcomes: collections.Counter = collections.Counter()
    printed: collections.Counter = collections.Counter()
    states: collections.Counter = collections.Counter()
    uncertain = 0
    attempts_max = 0
    for _seq, view, _hash in LedgerReader(ledger_dir).entries():
        payload = bytes(view)
        if b"print" not in payload:
            continue
        entry = entries.decode(payload)
        kind = entry.get("kind")
        if kind == entries.EVENT:
            event = entry.get("event")
            marked += isinstance(event, dict) and event.get("print") is True
        elif kind == entries.PRINT:
            outcomes[entry.get("outcome")] += 1
            if entry.get("outcome") == "printed":
                printed[tuple(entry.get("seqs") or ())] += 1
            uncertain += bool(entry.get("uncertain"))
            attempts_max = max(attempts_max, int(entry.get("attempts") or 0))
        elif kind == entries.PRINTER:
            states[entry.get("state")] += 1
    return {
        "marked_events": marked,
        "outcomes": dict(outcomes),
        "printed_jobs": sum(printed.values()),
        "printed_twice": sum(1 for n in printed.values() if n > 1),
        "uncertain": uncertain,
        "attempts_max": attempts_max,
        "printer_states": dict(states),
    }


def sink_summary(sink: Sink) -> dict[str, Any]:
    """Receipts on paper: complete, distinct, duplicated, out of seq order, marked."""
    done = [j for j in sink.jobs if j.complete]
    seqs = [j.seq for j in done if j.seq is not None]
    counts = collections.Counter(seqs)
    return {
        "jobs": len(sink.jobs),
        "complete": len(done),
        "incomplete": len(sink.jobs) - len(done),
        "distinct": len(counts),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b < a),
        "marked": sum(1 for j in done if j.marked),
        "mean_bytes": round(sum(j.size for j in done) / len(done)) if done else 0,
    }


def _ms(value: float | None) -> str:
    """Milliseconds for a table cell ("-" when there were no samples)."""
    return "-" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------- 1: durable -> first byte


def event_line(i: int, tag: str) -> bytes:
    """A small, well-formed event, distinct per i (one line)."""
    event = {
        "event_type": "subscription_cancelled",
        "timestamp": f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "subscription_id": f"sub_{i:08d}",
        "user_id": f"usr_{i * 7919 % 10**7:07d}",
        "status": "canceled",
        "reason": f"bench {tag} {i}",
    }
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def read_line(sock: socket.socket, buf: bytearray, timeout: float) -> bytes:
    """One reply line from an acknowledged connection (buf carries what follows it)."""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no reply")
        sock.settimeout(remaining)
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def scenario_first_byte(root: Path, n: int, wait_quiet_s: float) -> dict[str, Any]:
    """Scenario 1: one event at a time, so each receipt meets an idle printer and an
    idle spool, and the interval is the printing path's own latency."""
    sink = Sink()
    gw = run.GatewayProcess(
        root / "first-byte", run.free_port(), extra_config=printer_config(sink.port)
    )
    gw.start()
    send_ack: list[float] = []
    ack_fb: list[float] = []
    send_fb: list[float] = []
    errors: list[str] = []
    missing = 0
    try:
        quiet(wait_quiet_s)
        window = Window(gw)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=ACK_WAIT_S) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            s.sendall(b'{"hello":{"app":"bench","ack":true}}\n')
            read_line(s, buf, ACK_WAIT_S)
            for i in range(n):
                line = event_line(i, "first-byte")
                sent = time.monotonic()
                s.sendall(line)
                reply = json.loads(read_line(s, buf, ACK_WAIT_S))
                acked = time.monotonic()
                if not reply.get("ok"):
                    errors.append(json.dumps(reply)[:200])
                    continue
                send_ack.append(acked - sent)
                first = sink.first_byte_of(int(reply["seq"]), RECEIPT_WAIT_S)
                if first is None:
                    missing += 1
                else:
                    ack_fb.append(first - acked)
                    send_fb.append(first - sent)
                time.sleep(max(0.0, sent + LATENCY_PACE_S - time.monotonic()))
        cpu = window.close()
    finally:
        exit_code = gw.stop()
        sink.stop()
    result = {
        "events": n,
        "send_ack": latency_summary(send_ack),
        "ack_first_byte": latency_summary(ack_fb),
        "send_first_byte": latency_summary(send_fb),
        "negative": sum(1 for v in ack_fb if v < 0),
        "missing": missing,
        "errors": errors,
        "sink": sink_summary(sink),
        "cpu": cpu,
        "log": gw.log_summary(),
        "exit_code": exit_code,
    }
    fb = result["ack_first_byte"]
    print(
        f"  1: ack -> first byte p50 {fb['p50']} p99 {fb['p99']} max {fb['max']} ms; "
        f"send -> first byte p99 {result['send_first_byte']['p99']} ms; "
        f"missing {missing}",
        flush=True,
    )
    return result


# ---------------------------------------------------------------- 2: 1,000 queued receipts


def scenario_drain(root: Path, wait_quiet_s: float) -> dict[str, Any]:
    """Scenario 2: a printer back after an outage finds 1,000 receipts waiting; how fast
    they come out says what the gateway costs per job when nothing else is going on."""
    printer_port = run.free_port()  # nothing listens here until the sink starts
    gw = run.GatewayProcess(
        root / "drain",
        run.free_port(),
        extra_config=printer_config(printer_port, retry_s=DRAIN_RETRY_S),
    )
    gw.start()
    sink: Sink | None = None
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=ACK_WAIT_S) as s:
            s.sendall(b"".join(event_line(i, "drain") for i in range(DRAIN_JOBS)))
            s.shutdown(socket.SHUT_WR)
        queued_status, queued_ok = wait_printer(
            gw, lambda st: st.get("queued", 0) >= DRAIN_JOBS, QUEUE_WAIT_S
        )
        quiet(wait_quiet_s)
        window = Window(gw)
        sink = Sink(port=printer_port)
        complete = sink.wait_complete(DRAIN_JOBS, DRAIN_TIMEOUT_S)
        cpu = window.close()
        status, _ = wait_printer(gw, lambda st: st.get("queued") == 0, 5.0)
    finally:
        exit_code = gw.stop()
        if sink is not None:
            sink.stop()
    assert sink is not None
    done = [j for j in sink.jobs if j.complete]
    last = done[min(len(done), DRAIN_JOBS) - 1].end if done else sink.listening_at
    first_accept = sink.jobs[0].accepted if sink.jobs else sink.listening_at
    result = {
        "jobs": DRAIN_JOBS,
        "queued_before": queued_status.get("queued"),
        "queued_ok": queued_ok,
        "state_before": queued_status.get("state"),
        "complete": complete,
        "from_listen_s": last - sink.listening_at,
        "from_first_accept_s": last - first_accept,
        "jobs_per_s": min(complete, DRAIN_JOBS) / max(1e-9, last - sink.listening_at),
        "jobs_per_s_from_accept": min(complete, DRAIN_JOBS) / max(1e-9, last - first_accept),
        "sink_cpu_us_per_job": 1e6 * sink.cpu_s / max(1, len(sink.jobs)),
        "status_after": status,
        "sink": sink_summary(sink),
        "cpu": cpu,
        "gw_cpu_us_per_job": 1e6 * cpu["gw_cpu_s"] / max(1, complete),
        "log": gw.log_summary(),
        "exit_code": exit_code,
        "ledger": ledger_printing(gw.ledger_dir),
    }
    result["baseline"] = sink_baseline(sink.sample, DRAIN_JOBS, wait_quiet_s)
    result["ratio"] = result["jobs_per_s_from_accept"] / result["baseline"]["jobs_per_s"]
    print(
        f"  2: {complete} jobs in {result['from_listen_s']:.2f} s from listen "
        f"({result['jobs_per_s']:,.0f}/s; {result['jobs_per_s_from_accept']:,.0f}/s from the "
        f"first connection); the printer alone: {result['baseline']['jobs_per_s']:,.0f}/s; "
        f"gateway CPU {cpu['gw_cpu_pct']:.0f}%",
        flush=True,
    )
    return result


def sink_baseline(body: bytes, n: int, wait_quiet_s: float) -> dict[str, Any]:
    """The same sink, fed n copies of a real receipt by a plain Python client."""
    quiet(wait_quiet_s)
    sink = Sink()
    busy0, own0 = run.system_busy_s(), own_cpu_s()
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        client = pool.submit(plain_client, sink.port, body or b"x" * 320, n).result()
    wall = time.monotonic() - t0
    complete = sink.wait_complete(n, SINK_JOB_TIMEOUT_S)
    busy, own = run.system_busy_s() - busy0, own_cpu_s() - own0
    sink.stop()
    return {
        "jobs": n,
        "bytes": len(body),
        "complete": complete,
        "wall_s": client["wall_s"],
        "jobs_per_s": complete / client["wall_s"],
        "sink_cpu_us_per_job": 1e6 * sink.cpu_s / max(1, complete),
        "client_cpu_us_per_job": 1e6 * client["cpu_s"] / max(1, complete),
        # Includes the client process's start-up, which the window also spans.
        "other_cores": max(0.0, busy - own - client["cpu_s"]) / wall,
    }


# ---------------------------------------------------------------- 3: ingest while printing


def measure_ingest(
    gw: run.GatewayProcess, name: str, seconds: float, wait_quiet_s: float
) -> dict[str, Any]:
    """bench.run's measure() for scenario (a) with marked events; "other load" leaves
    out this process (the sink thread)."""
    saved, run.QUIET_WAIT_S = run.QUIET_WAIT_S, wait_quiet_s
    own0 = own_cpu_s()
    try:
        r = run.measure(
            gw,
            name,
            conns=INGEST_CONNS,
            duration=seconds,
            size="small",
            window=INGEST_WINDOW,
            print_every=PRINT_EVERY,
        )
    finally:
        run.QUIET_WAIT_S = saved
    wall = r["stop_monotonic"] - r["t0_monotonic"]
    r["other_cores"] = round(max(0.0, r["other_cores"] - (own_cpu_s() - own0) / wall), 2)
    return r


def scenario_ingest(
    root: Path, seconds: float, backlog_wait_s: float, wait_quiet_s: float
) -> dict[str, Any]:
    """Scenario 3: what printing costs ingest, and whether every receipt asked for under
    full load reaches the printer (compared with the load generator and the ledger)."""
    plain = run.GatewayProcess(root / "ingest-plain", run.free_port())
    plain.start()
    try:
        a = measure_ingest(plain, "3(i): no printers", seconds, wait_quiet_s)
    finally:
        a_exit = plain.stop()
    a_log = plain.log_summary()
    shutil.rmtree(plain.state_dir, ignore_errors=True)  # ~150 MB that nothing needs now

    sink = Sink()
    gw = run.GatewayProcess(
        root / "ingest-print",
        run.free_port(),
        extra_config=printer_config(sink.port, match_print=True),
    )
    gw.start()
    try:
        b = measure_ingest(gw, "3(ii): 1 in 10 printed", seconds, wait_quiet_s)
        at_end = printer_status(gw)
        t = time.monotonic()
        after, drained = wait_printer(gw, lambda st: st.get("queued") == 0, backlog_wait_s)
        backlog_s = time.monotonic() - t
        spool = gateway_status(gw)
    finally:
        b_exit = gw.stop()
        sink.stop()
    result = {
        "plain": a,
        "print": b,
        **print_rates(sink, b["t0_monotonic"], b["stop_monotonic"]),
        "ratio": b["events_per_s"] / a["events_per_s"] if a["events_per_s"] else 0.0,
        "status_at_load_end": at_end,
        "status_after": after,
        "drained": drained,
        "backlog_s": backlog_s,
        "spool_refused": spool.get("refused"),
        "sink": sink_summary(sink),
        "ledger": ledger_printing(gw.ledger_dir),
        "log_plain": a_log,
        "log": gw.log_summary(),
        "exit_codes": (a_exit, b_exit),
    }
    print(
        f"  3: {a['events_per_s']:,.0f} -> {b['events_per_s']:,.0f} events/s "
        f"(x{result['ratio']:.2f}); acked with print {b['acked_print']:,}, sink "
        f"{result['sink']['distinct']:,} receipts, ledger outcomes "
        f"{result['ledger']['outcomes']}",
        flush=True,
    )
    return result


def print_rates(sink: Sink, t0: float, stop: float) -> dict[str, Any]:
    """Receipts completed while the load ran and after it, per second.

    The load generator's window is in CLOCK_MONOTONIC, which every process on the
    machine shares, so the sink's times compare with it directly."""
    ends = [j.end for j in sink.jobs if j.complete]
    during = sum(1 for t in ends if t0 <= t <= stop)
    later = [t for t in ends if t > stop]
    return {
        "printed_during_load": during,
        "print_rate_during_load": during / max(1e-9, stop - t0),
        "printed_after_load": len(later),
        "print_rate_after_load": len(later) / max(1e-9, max(later) - stop) if later else 0.0,
    }


# ---------------------------------------------------------------- report


def _latency_row(name: str, s: dict[str, Any]) -> str:
    return (
        f"| {name} | {s['samples']} | {_ms(s['p50'])} | {_ms(s['p95'])} | {_ms(s['p99'])} "
        f"| {_ms(s['max'])} |"
    )


def _log_text(log: collections.Counter) -> str:
    return ", ".join(f"{n} x {m}" for m, n in log.most_common(6)) or "nothing above info"


def report(info: dict[str, str], quick: bool, res: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(markdown section, target lines)."""
    one, two, three = res["first_byte"], res["drain"], res["ingest"]
    p99 = one["ack_first_byte"]["p99"]
    met = {
        "first_byte": p99 is not None and p99 < TARGETS["first_byte"][0] and not one["missing"],
        "drain": two["complete"] >= DRAIN_JOBS and two["ratio"] >= TARGETS["drain"][0],
        "ingest": three["ratio"] >= TARGETS["ingest"][0],
    }
    base = two["baseline"]
    measured = {
        "first_byte": f"{p99} ms (send -> first byte p99 {one['send_first_byte']['p99']} ms)",
        "drain": f"{two['ratio']:.2f}: {two['jobs_per_s_from_accept']:,.0f} jobs/s "
        f"vs {base['jobs_per_s']:,.0f} jobs/s",
        "ingest": f"{three['ratio']:.2f}: {three['print']['events_per_s']:,.0f} "
        f"vs {three['plain']['events_per_s']:,.0f} events/s",
    }
    targets = [
        f"| {TARGETS[k][1]} | {TARGETS[k][0]:g} | {measured[k]} | {'yes' if met[k] else '**NO**'} |"
        for k in TARGETS
    ]
    b, sink3, led3 = three["print"], three["sink"], three["ledger"]
    outcomes3 = ", ".join(f"{v:,} {k}" for k, v in sorted(led3["outcomes"].items())) or "none"
    lines = [
        f"## {info['date']}: {info['rev']}: printing{' (quick)' if quick else ''}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}. `make bench-print` "
        "(`bench/printing.py`): the real gateway (fsync batch) with one ESC/POS socket "
        "printer on 127.0.0.1 whose other end is a sink thread in the bench process that "
        "reads each job to EOF and closes at once (a printer that reads as fast as it can).",
        "",
        "| target | goal | measured | met |",
        "|---|--:|---|---|",
        *targets,
        "",
        f"1: {one['events']} acknowledged events, one at a time, {LATENCY_PACE_S * 1000:.0f} ms "
        f"apart (other load {one['cpu']['other_cores']:.2f} cores, gateway CPU "
        f"{one['cpu']['gw_cpu_pct']:.0f}%):",
        "",
        "| interval | samples | p50 ms | p95 | p99 | max |",
        "|---|--:|--:|--:|--:|--:|",
        _latency_row("send -> ack received", one["send_ack"]),
        _latency_row("ack received -> first byte at the printer", one["ack_first_byte"]),
        _latency_row("send -> first byte at the printer", one["send_first_byte"]),
        "",
        f"3: bench.run scenario (a) load, {INGEST_CONNS} acknowledged connections, "
        f"{b['event_bytes']} B events, every {PRINT_EVERY}th pre-built event with "
        '`"print": true` (the same events in both rows):',
        "",
        *run.table([three["plain"], b]),
        "",
        '- 1: "ack received" is when the client read `{"ok":true,"seq":N}`, a little '
        "after the entry became durable (the ack's delivery), so ack -> first byte slightly "
        "underestimates durable -> first byte; send -> first byte includes the whole commit "
        "and bounds it from above. "
        f"Receipts missing: {one['missing']}; negative intervals: {one['negative']}; "
        f"errors: {len(one['errors'])}; receipts on paper {one['sink']['complete']} "
        f"({one['sink']['duplicates']} duplicates, {one['sink']['marked']} marked).",
        f"- 2: {two['queued_before']} receipts queued (printer state "
        f"`{two['state_before']}`, its port refusing); the sink then listened and had "
        f"{two['complete']:,} complete jobs {two['from_listen_s']:.2f} s later "
        f"({two['jobs_per_s']:,.0f} jobs/s; the first connection came "
        f"{two['from_listen_s'] - two['from_first_accept_s']:.2f} s after listening, within "
        f"the {DRAIN_RETRY_S:g} s retry, so from it: {two['from_first_accept_s']:.2f} s, "
        f"{two['jobs_per_s_from_accept']:,.0f} jobs/s). Gateway CPU during the drain "
        f"{two['cpu']['gw_cpu_pct']:.0f}% of a core, {two['gw_cpu_us_per_job']:,.0f} µs per "
        f"job; sink thread {two['sink_cpu_us_per_job']:,.0f} µs CPU per job; other load "
        f"{two['cpu']['other_cores']:.2f} cores. The same sink fed {base['complete']:,} copies "
        f"of a {base['bytes']} B receipt by a plain Python client in another process "
        f"(connect, send, half-close, wait for EOF): {base['wall_s']:.2f} s, "
        f"{base['jobs_per_s']:,.0f} jobs/s (sink {base['sink_cpu_us_per_job']:,.0f} µs, "
        f"client {base['client_cpu_us_per_job']:,.0f} µs CPU per job). On paper: "
        f"{two['sink']['distinct']:,} distinct receipts, {two['sink']['duplicates']} "
        f"duplicates, {two['sink']['out_of_order']} out of seq order, "
        f"{two['sink']['marked']} marked; ledger: {two['ledger']['outcomes']}, "
        f"printer states {two['ledger']['printer_states']}.",
        f"- 3: ingest {b['events_per_s']:,.0f} events/s while printing against "
        f"{three['plain']['events_per_s']:,.0f} without printers (x{three['ratio']:.2f}). "
        f"Receipts asked for: {b['acked_print']:,} of {b['acked']:,} acknowledged events "
        f"({100 * b['acked_print'] / max(1, b['acked']):.1f} %, counted exactly by the load "
        f"generator; {led3['marked_events']:,} in the ledger), "
        f"{b['acked_print'] / max(1e-9, b['measured_s']):,.0f}/s. Receipts completed while "
        f"the load ran: {three['printed_during_load']:,} "
        f"({three['print_rate_during_load']:,.0f}/s); after it: "
        f"{three['printed_after_load']:,} ({three['print_rate_after_load']:,.0f}/s). "
        f"The printer's queue at the end of the load: "
        f"{three['status_at_load_end'].get('queued')} jobs; {three['backlog_s']:.0f} s later "
        f"{three['status_after'].get('queued')} "
        f"({'empty' if three['drained'] else 'NOT empty: the wait is bounded'}); jobs refused "
        f"by the spool (full): {three['spool_refused']}. Ledger print outcomes: {outcomes3}; "
        f"{led3['printed_twice']} jobs printed twice, {led3['uncertain']} marked uncertain. "
        f"Sink: {sink3['complete']:,} complete receipts ({sink3['distinct']:,} distinct, "
        f"{sink3['duplicates']} duplicates, {sink3['incomplete']} cut, {sink3['marked']} "
        f"marked, {sink3['out_of_order']} out of seq order). The events/sync column counts "
        "write syscalls, and with printers those include the gateway's log lines (two per "
        "receipt, one per refusal), so for 3(ii) it is not a sync count.",
        f"- gateway logs: 1: {_log_text(one['log'])}; 2: {_log_text(two['log'])}; "
        f"3(i): {_log_text(three['log_plain'])}; 3(ii): {_log_text(three['log'])}. "
        f"Exit codes {one['exit_code']}, {two['exit_code']}, "
        f"{', '.join(map(str, three['exit_codes']))}. Whole run {res['wall_s']:.0f} s.",
        "",
    ]
    return lines, targets


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.printing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="100 latency events, ~4 s of load")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the state directories afterwards")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=QUIET_WAIT_S,
        metavar="S",
        help="before each scenario wait up to S s for other processes to go quiet (0: never)",
    )
    args = p.parse_args(argv)
    started = time.monotonic()
    info = run.machine()
    root = Path(tempfile.mkdtemp(prefix="gateway-bench-print-"))
    print(f"state in {root}", flush=True)
    res: dict[str, Any] = {}
    try:
        n = LATENCY_EVENTS_QUICK if args.quick else LATENCY_EVENTS
        res["first_byte"] = scenario_first_byte(root, n, args.wait_quiet)
        res["drain"] = scenario_drain(root, args.wait_quiet)
        seconds = INGEST_S_QUICK if args.quick else INGEST_S
        backlog = BACKLOG_WAIT_S_QUICK if args.quick else BACKLOG_WAIT_S
        res["ingest"] = scenario_ingest(root, seconds, backlog, args.wait_quiet)
    finally:
        if args.keep:
            print(f"state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    res["wall_s"] = time.monotonic() - started

    section, targets = report(info, args.quick, res)
    print()
    print("\n".join(section))
    print("targets:")
    print("\n".join(targets))
    if not args.no_append:
        if not run.RESULTS.exists():
            run.RESULTS.write_text("# Benchmark results\n\n")
        with run.RESULTS.open("a") as f:
            f.write("\n" + "\n".join(section))
        print(f"appended to {run.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

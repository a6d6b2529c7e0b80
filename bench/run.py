"""`make bench`: the real gateway, the load generator in its own process, real sockets.

Starts `python -m gateway run` on a fresh state directory (fsync batch) and a
free loopback port, runs the scenarios below with `bench.loadgen` as a separate
process, reads the gateway's CPU time, memory and disk writes from /proc around
each scenario, stops it with SIGTERM, verifies the ledger, prints a table and
appends it to bench/RESULTS.md.

  e  1000 idle acknowledged connections: gateway RSS (run first, on a fresh gateway)
  a  64 acknowledged connections, small events, as fast as acks come back
  g  write amplification during (a): gateway write_bytes / ledger growth
  b  ack latency at half of (a)'s throughput (rate-limited; each client writes one
     event at a time, ~1 ms apart)
  b2 the same rate with clients that write 16 events at a time (extra)
  c  connections curve: 1, 8, 64, 512 acknowledged connections, small events
  d  event size curve: small, audit, large with 64 connections
  h  fire-and-forget, 64 connections, small events (extra: sent/s and ledger growth/s)
  f  `verify_ledger` over everything the run wrote (entries/s, MB/s)

The machine is shared: before each scenario the runner waits (up to
--wait-quiet s) for other processes to go quiet, and reports in "other load"
how many cores other processes used while the scenario ran.

`--quick` runs each scenario for ~3 s instead of ~8-10 s. `--profile cprofile`
or `--profile py-spy` instead runs scenario (a) alone with the gateway profiled
and prints its hottest functions (nothing is appended to RESULTS.md).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ledger.store import list_segments
from gateway.ledger.verify import verify_ledger

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Scenario b2: the same rate as (b), but clients that write this many events at a time.
BATCHED_WRITES = 16

# Before each scenario, wait up to this long for the machine to be quiet (--wait-quiet).
QUIET_WAIT_S = 15.0

TARGETS = {
    "throughput": (50_000, "acknowledged events/s, 64 connections, ~200 B events (>=)"),
    "p99": (20.0, "ack p99 ms at half that rate (<)"),
    "idle_rss": (60.0, "gateway RSS MB with 1000 idle connections (<)"),
    "verify": (100.0, "verify MB/s (>=)"),
}


# ---------------------------------------------------------------- the gateway process


@dataclass
class ProcStats:
    t: float
    cpu_s: float
    rss_kb: int
    hwm_kb: int
    write_bytes: int
    wchar: int
    syscw: int


def system_busy_s() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle or iowait) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def wait_quiet(limit_s: float, busy_cores: float = 0.25) -> float:
    """Wait (at most limit_s) until other processes use under `busy_cores` cores over 1 s.

    The benchmark shares the machine with whatever else runs on it; returns the
    load seen last, in cores."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = system_busy_s(), time.monotonic()
        time.sleep(1.0)
        load = (system_busy_s() - b0) / (time.monotonic() - t0)
        if load < busy_cores or time.monotonic() >= deadline:
            return load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(
        self,
        state_dir: Path,
        port: int,
        profile_out: Path | None = None,
        extra_config: str = "",
    ) -> None:
        self.state_dir = state_dir
        self.port = port
        self.profile_out = profile_out
        # YAML appended to the configuration (top-level keys: printers, routes, spool).
        self.extra_config = extra_config
        self.config = state_dir.parent / f"{state_dir.name}.yaml"
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ledger_dir(self) -> Path:
        return self.state_dir / "ledger"

    def start(self) -> None:
        self.config.write_text(
            f"state_dir: {json.dumps(str(self.state_dir))}\n"
            "ingest:\n"
            f'  listen: ["127.0.0.1:{self.port}"]\n'
            "  max_connections: 2000\n"
            "  idle_timeout_s: 600\n"
            "ledger:\n"
            "  fsync: batch\n"
            "log:\n"
            "  level: info\n"
            # Measure the appliance's normal path: a synchronised clock (this
            # machine may have no NTP state, which would flag every event).
            "clock:\n"
            "  check_sync: false\n" + self.extra_config
        )
        cmd = [sys.executable]
        if self.profile_out is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile_out)]
        cmd += ["-m", "gateway", "run", "--config", str(self.config)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gateway did not open its port within 20 s")

    def stats(self) -> ProcStats:
        pid = self.pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
        status = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        io = {}
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    io[key] = int(value)
        except OSError:
            pass
        return ProcStats(
            t=time.monotonic(),
            cpu_s=cpu,
            rss_kb=int(status["VmRSS"].split()[0]),
            hwm_kb=int(status["VmHWM"].split()[0]),
            write_bytes=io.get("write_bytes", -1),
            wchar=io.get("wchar", -1),
            syscw=io.get("syscw", -1),
        )

    def head_seq(self) -> int:
        """The durable head, from the hello reply of a short-lived connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b'{"hello":{"app":"bench-probe","ack":true}}\n')
            data = b""
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"no hello reply: {data!r}")
                data += chunk
        return int(json.loads(data.split(b"\n", 1)[0])["hello"]["head_seq"])

    def ledger_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in list_segments(self.ledger_dir))

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_summary(self) -> collections.Counter:
        """Log lines above info, by level and message."""
        counts: collections.Counter = collections.Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                counts[f"(not JSON) {line[:80]}"] += 1
                continue
            if record.get("level") != "info":
                counts[f"{record.get('level')}: {record.get('message')}"] += 1
        return counts


# ---------------------------------------------------------------- the load generator process


def loadgen(port: int, **options: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port)]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(gw: GatewayProcess, name: str, **options: Any) -> dict[str, Any]:
    head0 = gw.head_seq()
    ledger0 = gw.ledger_bytes()
    if QUIET_WAIT_S > 0:
        wait_quiet(QUIET_WAIT_S)
    busy0 = system_busy_s()
    before = gw.stats()
    result = loadgen(gw.port, watch_pid=gw.pid, **options)
    after = gw.stats()
    busy = system_busy_s() - busy0
    head1 = gw.head_seq()
    ledger1 = gw.ledger_bytes()
    result["name"] = name
    wall = after.t - before.t
    cpu = after.cpu_s - before.cpu_s
    events = result["acked"] if result["mode"] == "ack" else result["sent"]
    window_cpu = result.get("watched_cpu_s")
    window_s = result["stop_monotonic"] - result["t0_monotonic"]
    result["gw"] = {
        "cpu_s": round(cpu, 2),
        # CPU share while the load ran (read by the load generator at its start and
        # stop); the whole scenario's (connecting, draining) if that is not available.
        "cpu_pct": round(
            100 * (window_cpu / window_s if window_cpu is not None else cpu / wall), 1
        ),
        "us_per_event": round(1e6 * cpu / events, 2) if events else None,
        "rss_mb": round(after.rss_kb / 1024, 1),
        "hwm_mb": round(after.hwm_kb / 1024, 1),
        "write_bytes": after.write_bytes - before.write_bytes,
        "wchar": after.wchar - before.wchar,
        # The gateway's only write()-family calls are one pwrite per commit batch
        # (each followed by one fdatasync; sockets use send()), so syscw counts
        # batches, i.e. syncs: an estimate (log lines count too), checked with strace.
        "batches": after.syscw - before.syscw,
        "ledger_growth": ledger1 - ledger0,
        "entries": head1 - head0,
    }
    # Everything else the machine did meanwhile (other processes), in cores.
    result["other_cores"] = round(max(0.0, busy - cpu - result["loadgen_cpu_s"]) / wall, 2)
    result["loadgen_cpu_pct"] = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    if result["mode"] == "ack" and head1 - head0 < (result["acked"] or 0):
        result["errors"] += 1
        result["error_lines"].append(
            f"acked {result['acked']} but the ledger grew by {head1 - head0}"
        )
    _progress(result)
    return result


def idle_connections(gw: GatewayProcess, conns: int, settle_s: float) -> dict[str, Any]:
    before = gw.stats()
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(gw.port)]
    cmd += ["--conns", str(conns), "--idle", "300"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    ready = json.loads(proc.stdout.readline())
    time.sleep(settle_s)
    held = gw.stats()
    proc.stdin.close()
    final = json.loads(proc.stdout.read().strip().splitlines()[-1])
    proc.wait(30)
    result = {
        "name": f"e: {conns} idle connections",
        "conns": conns,
        "open": ready["open"],
        "connect_s": ready["connect_s"],
        "still_open": final["still_open"],
        "errors": final["errors"],
        "error_lines": final["error_lines"],
        "rss_before_mb": round(before.rss_kb / 1024, 1),
        "rss_mb": round(held.rss_kb / 1024, 1),
        "hwm_mb": round(held.hwm_kb / 1024, 1),
        "kib_per_conn": round((held.rss_kb - before.rss_kb) / max(1, ready["open"]), 2),
    }
    print(
        f"  {result['name']}: open {result['open']}, RSS {result['rss_before_mb']} -> "
        f"{result['rss_mb']} MB ({result['kib_per_conn']} KiB/connection)",
        flush=True,
    )
    return result


def fire_and_forget(gw: GatewayProcess, duration: float, events: int) -> dict[str, Any]:
    """Fire-and-forget: the client's send rate, and how fast the ledger actually grew.

    The client can hand events to the kernel far faster than the gateway takes
    them (loopback socket buffers hold megabytes per connection), so the count
    is bounded to about `duration` seconds of what (a) measured, and the ingest
    rate is the ledger's growth from the first send until it has them all."""
    if QUIET_WAIT_S > 0:
        wait_quiet(QUIET_WAIT_S)
    head0 = gw.head_seq()
    before = gw.stats()
    result = loadgen(
        gw.port, conns=64, duration=duration * 4, max_events=events, size="small", mode="fire"
    )
    # Wait for the gateway to take in what was sent (it sits in socket buffers).
    deadline = time.monotonic() + 120
    head = gw.head_seq()
    while head - head0 < result["sent"] and time.monotonic() < deadline:
        time.sleep(0.02)
        head = gw.head_seq()
    after = gw.stats()
    result["name"] = "h: fire-and-forget"
    result["gw"] = {
        "cpu_s": round(after.cpu_s - before.cpu_s, 2),
        "cpu_pct": round(100 * (after.cpu_s - before.cpu_s) / (after.t - before.t), 1),
        "us_per_event": round(1e6 * (after.cpu_s - before.cpu_s) / max(1, head - head0), 2),
        "rss_mb": round(after.rss_kb / 1024, 1),
        "hwm_mb": round(after.hwm_kb / 1024, 1),
        "entries": head - head0,
        "ingest_per_s": (head - head0) / (after.t - result["t0_monotonic"]),
        "catch_up_s": round(after.t - result["t0_monotonic"], 2),
    }
    result["loadgen_cpu_pct"] = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    if head - head0 < result["sent"]:
        result["errors"] += 1
        result["error_lines"].append(f"sent {result['sent']}, ledger grew by {head - head0}")
    _progress(result)
    return result


def _progress(r: dict[str, Any]) -> None:
    lat = r.get("latency_ms") or {}
    print(
        f"  {r['name']}: {r['events_per_s']:,.0f} ev/s, {r['mb_per_s']:.1f} MB/s, "
        f"p99 {lat.get('p99')} ms, errors {r['errors']}, gateway CPU {r['gw']['cpu_pct']}%, "
        f"loadgen CPU {r['loadgen_cpu_pct']}%",
        flush=True,
    )


def run_verify(ledger_dir: Path) -> dict[str, Any]:
    t = time.perf_counter()
    cpu = time.process_time()
    res = verify_ledger(ledger_dir)
    wall = time.perf_counter() - t
    cpu = time.process_time() - cpu
    out = {
        "ok": res.ok,
        "entries": res.entries,
        "segments": res.segments,
        "bytes": res.bytes_read,
        "seconds": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "entries_per_s": res.entries / wall,
        "mb_per_s": res.bytes_read / wall / 1e6,
        "reason": res.reason,
    }
    print(
        f"  f: verify: {res.entries:,} entries, {res.bytes_read / 1e6:,.0f} MB in {wall:.2f} s: "
        f"{out['entries_per_s']:,.0f} entries/s, {out['mb_per_s']:.0f} MB/s, ok={res.ok}",
        flush=True,
    )
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
            or "?"
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        if dirty:
            rev += "+dirty"
    except OSError:
        rev = "?"
    kernel = platform.release()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": kernel,
        "python": platform.python_version(),
        "rev": rev,
    }


def _f(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| scenario | conns | event B | events/s | MB/s | ack p50 ms | p95 | p99 | max "
        "| errors | gateway CPU | µs CPU/event | events/sync | loadgen CPU | other load "
        "| RSS / peak MB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lat = r.get("latency_ms") or {}
        gw = r["gw"]
        rows.append(
            f"| {r['name']} | {r['conns']} | {r['event_bytes']} | {_f(r['events_per_s'])} "
            f"| {_f(r['mb_per_s'], '{:.1f}')} | {_f(lat.get('p50'), '{:.1f}')} "
            f"| {_f(lat.get('p95'), '{:.1f}')} | {_f(lat.get('p99'), '{:.1f}')} "
            f"| {_f(lat.get('max'), '{:.1f}')} | {r['errors']} | {gw['cpu_pct']}% "
            f"| {_f(gw['us_per_event'], '{:.1f}')} "
            f"| {_f(gw['entries'] / gw['batches'] if gw['batches'] > 0 else None)} "
            f"| {r['loadgen_cpu_pct']}% "
            f"| {r['other_cores']:.2f} cores "
            f"| {gw['rss_mb']} / {gw['hwm_mb']} |"
        )
    return rows


def report(
    info: dict[str, str], args: argparse.Namespace, res: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(markdown section, target lines)."""
    a, b, idle, ver, amp = res["a"], res["b"], res["e"], res["f"], res["g"]
    met = {
        "throughput": a["events_per_s"] >= TARGETS["throughput"][0],
        "p99": b["latency_ms"]["p99"] is not None and b["latency_ms"]["p99"] < TARGETS["p99"][0],
        "idle_rss": idle["rss_mb"] < TARGETS["idle_rss"][0] and idle["open"] == idle["conns"],
        "verify": ver["ok"] and ver["mb_per_s"] >= TARGETS["verify"][0],
    }
    measured = {
        "throughput": f"{a['events_per_s']:,.0f} events/s",
        "p99": f"{b['latency_ms']['p99']} ms at {b['events_per_s']:,.0f} events/s",
        "idle_rss": f"{idle['rss_mb']} MB ({idle['open']} open)",
        "verify": f"{ver['mb_per_s']:.0f} MB/s",
    }
    targets = [
        f"| {TARGETS[k][1]} | {TARGETS[k][0]:,} | {measured[k]} | {'yes' if met[k] else '**NO**'} |"
        for k in TARGETS
    ]
    lines = [
        f"## {info['date']}: {info['rev']}{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}. Gateway: fsync batch, "
        "state on the local disk; load generator: `bench.loadgen`, one process, "
        f"window {args.window} events per acknowledged connection.",
        "",
        "| target | goal | measured | met |",
        "|---|--:|---|---|",
        *targets,
        "",
        *table(res["load"]),
        "",
        f"- e: {idle['open']}/{idle['conns']} idle acknowledged connections: gateway RSS "
        f"{idle['rss_before_mb']} MB before, {idle['rss_mb']} MB with them open "
        f"({idle['kib_per_conn']} KiB per connection); {idle['still_open']} still open at the end.",
        f"- f: verify: {ver['entries']:,} entries, {ver['bytes'] / 1e6:,.0f} MB in "
        f"{ver['segments']} segments, {ver['seconds']} s: {ver['entries_per_s']:,.0f} entries/s, "
        f"{ver['mb_per_s']:.0f} MB/s (page cache warm: the ledger was just written), "
        f"ok={ver['ok']}.",
        "- g: write amplification during (a): gateway write_bytes "
        f"{amp['write_bytes'] / 1e6:,.1f} MB "
        f"/ ledger growth {amp['ledger_growth'] / 1e6:,.1f} MB = {amp['ratio']:.3f}; "
        f"{amp['ledger_bytes_per_entry']:.0f} ledger bytes per {a['event_bytes']} B event "
        f"({amp['ledger_vs_wire']:.2f}x the wire bytes). Syncs: the gateway does not count "
        f"them yet; estimated from its write syscalls (one pwrite + one fdatasync per batch): "
        f"{a['gw']['batches']:,} in (a), {a['gw']['batches'] / a['wall_s']:,.0f}/s, "
        f"{a['gw']['entries'] / max(1, a['gw']['batches']):,.0f} events per sync.",
    ]
    h = res.get("h")
    if h:
        lines.append(
            f"- h: fire-and-forget, 64 connections, {h['sent']:,} small events: the client "
            f"handed them to the kernel in {h['measured_s']} s ({h['events_per_s']:,.0f}/s); "
            f"the ledger had all {h['gw']['entries']:,} after {h['gw']['catch_up_s']} s = "
            f"{h['gw']['ingest_per_s']:,.0f} events/s ingested, gateway "
            f"{h['gw']['us_per_event']} µs CPU per event."
        )
    busiest = max(res["load"], key=lambda r: r["loadgen_cpu_pct"])
    lines.append(
        f"- load generator: at most {busiest['loadgen_cpu_pct']}% of one core "
        f"({busiest['name']}), so it is not the bottleneck; on 2 cores it does compete "
        "with the gateway for CPU."
    )
    errors = [line for r in res["load"] for line in r.get("error_lines", [])]
    if errors:
        lines.append(f"- errors seen: {'; '.join(errors[:5])}")
    logged = ", ".join(f"{n} x {m}" for m, n in res["log"].most_common()) or "nothing above info"
    lines.append(
        f"- gateway log: {logged}; exit code {res['exit_code']}; "
        f"peak RSS over the whole run {res['peak_rss_mb']} MB."
    )
    lines.append("")
    return lines, targets


# ---------------------------------------------------------------- profile


def profile_top(path: Path, n: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    stats.sort_stats("cumulative").print_stats(n)
    stats.sort_stats("tottime").print_stats(n)
    return out.getvalue()


def pyspy_top(raw: Path, n: int = 25) -> str:
    """Own and cumulative sample shares from py-spy's collapsed ('raw') stacks."""
    own: collections.Counter = collections.Counter()
    cum: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        # "func (path/file.py:123)": aggregate per function, not per line.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cum[frame] += count
    lines = [f"{total} samples", "", "cumulative:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in cum.most_common(n)]
    lines += ["", "own:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    return "\n".join(lines)


def run_profile(args: argparse.Namespace, root: Path) -> int:
    port = free_port()
    prof = root / "gateway.prof" if args.profile == "cprofile" else None
    gw = GatewayProcess(root / "state", port, profile_out=prof)
    gw.start()
    spy = None
    raw = root / "pyspy.txt"
    try:
        if args.profile == "py-spy":
            spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen(
                [spy_bin, "record", "--pid", str(gw.pid), "--rate", "250", "--threads",
                 "--format", "raw", "--output", str(raw), "--duration", str(int(args.duration) + 1),
                 "--nonblocking"],
            )  # fmt: skip
            time.sleep(0.5)
        measure(gw, "a: 64 ack, small (profiled)", conns=64, duration=args.duration, size="small",
                window=args.window)  # fmt: skip
    finally:
        if spy is not None:
            spy.wait(60)
        gw.stop()
    print()
    if prof is not None:
        print(profile_top(prof))
        print(f"profile: {prof}")
    else:
        print(pyspy_top(raw))
        print(f"py-spy samples: {raw}")
    return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    global QUIET_WAIT_S
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="~3 s per scenario instead of ~8-10 s")
    p.add_argument("--window", type=int, default=256, help="events in flight per ack connection")
    p.add_argument("--out", type=Path, help="state/log directory (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the state directory afterwards")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    p.add_argument("--profile", choices=("cprofile", "py-spy"),
                   help="only scenario (a), with the gateway profiled")  # fmt: skip
    p.add_argument("--duration", type=float, default=10.0, help="(a) duration with --profile")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=QUIET_WAIT_S,
        metavar="S",
        help="before each scenario wait up to S s for other processes to go quiet (0: never)",
    )
    args = p.parse_args(argv)
    QUIET_WAIT_S = args.wait_quiet

    long_s, curve_s, settle = (3.0, 3.0, 1.0) if args.quick else (10.0, 8.0, 2.0)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="run-", dir=args.out))
    else:
        root = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        if args.profile:
            return run_profile(args, root)
        return run_all(args, root, long_s, curve_s, settle)
    finally:
        if args.keep:
            print(f"state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_all(
    args: argparse.Namespace, root: Path, long_s: float, curve_s: float, settle: float
) -> int:
    info = machine()
    port = free_port()
    gw = GatewayProcess(root / "state", port)
    print(f"gateway on 127.0.0.1:{port}, state in {gw.state_dir}", flush=True)
    gw.start()
    res: dict[str, Any] = {"load": []}
    w = args.window
    try:
        if QUIET_WAIT_S > 0:
            wait_quiet(QUIET_WAIT_S)
        res["e"] = idle_connections(gw, 1000, settle)
        a = measure(gw, "a: max throughput", conns=64, duration=long_s, size="small", window=w)
        res["a"] = a
        res["load"].append(a)
        growth = a["gw"]["ledger_growth"]
        res["g"] = {
            "write_bytes": a["gw"]["write_bytes"],
            "ledger_growth": growth,
            "ratio": a["gw"]["write_bytes"] / growth if growth else float("nan"),
            "ledger_bytes_per_entry": growth / max(1, a["gw"]["entries"]),
            "ledger_vs_wire": growth / max(1, a["gw"]["entries"]) / a["event_bytes"],
        }
        half = round(a["events_per_s"] / 2)
        b = measure(gw, f"b: latency at {half:,}/s", conns=64, duration=long_s, size="small",
                    window=w, rate=half)  # fmt: skip
        res["b"] = b
        res["load"].append(b)
        b2 = measure(gw, f"b2: same, {BATCHED_WRITES} events/write", conns=64, duration=long_s,
                     size="small", window=w, rate=half, min_batch=BATCHED_WRITES)  # fmt: skip
        res["load"].append(b2)
        for n in (1, 8, 64, 512):
            r = measure(
                gw, f"c: {n} connections", conns=n, duration=curve_s, size="small", window=w
            )
            res["load"].append(r)
        for size in ("small", "audit", "large"):
            r = measure(gw, f"d: {size} events", conns=64, duration=curve_s, size=size, window=w)
            res["load"].append(r)
        res["h"] = fire_and_forget(gw, curve_s, int(a["events_per_s"] * curve_s))
        res["peak_rss_mb"] = round(gw.stats().hwm_kb / 1024, 1)
    finally:
        res["exit_code"] = gw.stop()
    res["log"] = gw.log_summary()
    res["f"] = run_verify(gw.ledger_dir)

    section, targets = report(info, args, res)
    print()
    print("\n".join(section))
    print("targets:")
    print("\n".join(targets))
    if not args.no_append:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\n")
        with RESULTS.open("a") as f:
            f.write("\n" + "\n".join(section))
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

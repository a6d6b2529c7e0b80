"""`make bench`: the real gateway, the load generator in its own process, real sockets.

Each gateway is `python -m gateway run` on a fresh state directory (fsync batch)
and a free loopback port; `bench.loadgen` runs as a separate process. Around each
scenario the runner reads the gateway's CPU time, memory and disk writes from
/proc, and its durable head and commit counters from its status (the control
socket request behind `gateway status --json`). Each ledger is verified once its
gateway has stopped; the runner prints a table and appends it to bench/RESULTS.md.

Default configuration (query index on), on a fresh gateway:
  e  1000 idle acknowledged connections: peak gateway RSS
  g  write amplification at a sustained 1,000 events/s (64 acknowledged
     connections, small events, rate-limited): gateway write_bytes / ledger
     growth, counted until the query index has caught up

Query index off. The index stops while ingest runs above 1,000 events/s and
catches up afterwards, at a few thousand entries/s with a core of CPU, which
would spill into every later scenario; g and g0 measure what it writes.
  g0 as g with the index off: the ledger path alone (the write amplification target)
  a  64 acknowledged connections, small events, as fast as acks come back
  b  ack latency at half of (a)'s throughput (rate-limited; each client writes one
     event at a time, ~1 ms apart)
  b2 the same rate with clients that write 16 events at a time (extra)
  c  connections curve: 1, 8, 64, 512 acknowledged connections, small events
  d  event size curve: small, audit, large with 64 connections
  h  fire-and-forget, 64 connections, small events (extra: sent/s and ledger growth/s)

Slow flash, one gateway per delay (index off): GATEWAY_SIMULATE_SYNC_MS=5 and 50
make every sync that much longer, as a slow SD card would.
  s  64 acknowledged connections, then 1: group commit should keep throughput
     up by putting more events into each sync

  f  `verify_ledger` over each gateway's ledger (entries/s; MB/s for information)

`make bench` then runs bench.curves on its own: verify speed, start-up recovery
and gateway start against ledger size (64 MiB, 512 MiB, 2 GiB by default; a
few more minutes and 2 GiB of disk, removed afterwards).

The machine is shared: before each scenario the runner waits (up to --wait-quiet s)
for other processes to go quiet, and reports in "other load" how many cores other
processes used while the scenario ran.

`--quick` runs each scenario for ~3 s instead of ~8-10 s. `--profile cprofile`,
`--profile py-spy` or `--profile perf` instead runs scenario (a) alone with the
gateway profiled and prints its hottest functions (nothing is appended to
RESULTS.md). perf (Debian's linux-perf) samples the whole process, kernel
included, by shared object and C symbol: the interpreter's own frames show as
libpython, the native ingest core as _native.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import free_port, gateway_command, stop_process
from gateway import control
from gateway.ledger.durability import SIMULATE_SYNC_ENV
from gateway.ledger.store import list_segments
from gateway.ledger.verify import verify_ledger

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Scenario b2: the same rate as (b), but clients that write this many events at a time.
BATCHED_WRITES = 16

# Before each scenario, wait up to this long for the machine to be quiet (--wait-quiet).
QUIET_WAIT_S = 15.0

# Scenarios g and g0: the lowest sustained rate the write amplification target
# covers. Commit batches are smallest there (each sync rewrites the ledger's last,
# partly filled page), so it is the worst case of the range the target speaks of.
AMPLIFICATION_RATE = 1000

# After scenario g, wait at most this long for the query index to catch up, so that
# its writes for g's events are counted. At 1,000 events/s it keeps up within its
# 1 s interval; a minute means it is stuck, and the report says how far behind it was.
INDEX_CATCH_UP_S = 60.0
# Status is polled this often meanwhile: a control request costs the gateway well under
# a millisecond, and 0.2 s is finer than the index's own 1 s interval.
INDEX_POLL_S = 0.2

# Slow flash: every sync made this many ms longer, an SD card on a good day and on a
# bad one (cards commonly take 5-50 ms per sync, gateway/ledger/durability.py).
SLOW_SYNC_MS = (5, 50)

# One status request over the control socket: the gateway answers from its loop in
# milliseconds, so 10 s means it is stuck (the CLI itself waits 30 s).
STATUS_TIMEOUT_S = 10.0

# The gateway's start: it serves within a second or two of the interpreter starting
# (recovery reads at most one 64 MiB segment), so 20 s means it is stuck. It is
# polled every 10 ms, fine enough for the start-up times bench.curves reports.
START_TIMEOUT_S = 20.0
START_POLL_S = 0.01

# --profile perf: samples per second (perf record -F). perf's own cost grows with
# it; ~1,000 per second over 10 s is enough to rank the symbols above 0.5 %.
PERF_FREQ = 999
# Rows of perf report printed (by shared object, then by symbol).
PERF_ROWS = 40

# Configuration appended for the gateways that run with the query index off.
INDEX_OFF = "index:\n  enabled: false\n"
# Scenario g50: g0 with ledger.min_sync_interval_ms at the value the README
# suggests for SD cards (at most 20 syncs per second).
CAPPED_SYNC_MS = 50

# name: (goal, comparison, what is measured)
TARGETS: dict[str, tuple[float, str, str]] = {
    "throughput": (
        100_000,
        ">=",
        "acknowledged durable events/s, 64 connections, ~150 B events (measured with "
        "bench.loadgen's small events)",
    ),
    "p99": (10.0, "<=", "ack p99 ms at half the maximum throughput"),
    "write_amp": (
        1.3,
        "<=",
        "bytes written to disk per byte of ledger, sustained 1,000 events/s, ledger path "
        "alone (index off)",
    ),
    "rss": (60.0, "<=", "peak gateway RSS MB with 1,000 connections"),
    "verify": (500_000, ">=", "verify entries/s"),
}


def met(value: float | None, op: str, goal: float) -> bool:
    if value is None or value != value:  # not measured, or NaN
        return False
    if op == ">=":
        return value >= goal
    if op == "<=":
        return value <= goal
    if op == "<":
        return value < goal
    raise ValueError(f"unknown comparison {op!r}")


def target_row(label: str, op: str, goal: float, value: float | None, measured: str) -> str:
    """One row of a target table; a target with no measurement says so instead of NO."""
    verdict = "not measured" if value is None else "yes" if met(value, op, goal) else "**NO**"
    return f"| {label} ({op}) | {goal:,} | {measured} | {verdict} |"


def target(name: str, value: float | None, measured: str) -> str:
    """The row of TARGETS[name]."""
    goal, op, label = TARGETS[name]
    return target_row(label, op, goal, value, measured)


TARGET_HEADER = ["| target | goal | measured | met |", "|---|--:|---|---|"]


# ---------------------------------------------------------------- the gateway process


@dataclass
class ProcStats:
    t: float
    cpu_s: float
    rss_kb: int
    hwm_kb: int
    write_bytes: int


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


def device_written(path: Path) -> int | None:
    """Bytes written since boot by the block device holding `path`: every process's
    writes and the filesystem's journal; None where /sys does not say."""
    dev = os.stat(path).st_dev
    try:
        fields = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text().split()
    except OSError:
        return None
    return int(fields[6]) * 512  # sectors written, always in 512-byte units


class GatewayProcess:
    def __init__(
        self,
        state_dir: Path,
        port: int,
        profile_out: Path | None = None,
        extra_config: str = "",
        env: dict[str, str] | None = None,
        min_sync_interval_ms: float = 0,
        checkout: Path | None = None,
        python: str | None = None,
        fsync: str = "batch",
    ) -> None:
        self.fsync = fsync  # ledger.fsync: "off" only to take the syncs out of a measurement
        self.state_dir = state_dir
        # The gateway runs in (and imports from) this checkout, with this interpreter
        # (bench.ab: another checkout with its own virtual environment); by default
        # this tree and the interpreter running the benchmark.
        self.checkout = checkout
        self.python = python
        self.min_sync_interval_ms = min_sync_interval_ms  # ledger.min_sync_interval_ms
        self.port = port
        self.profile_out = profile_out
        # YAML appended to the configuration (top-level keys: printers, routes, spool).
        self.extra_config = extra_config
        # Set in the gateway's environment on top of ours (GATEWAY_SIMULATE_SYNC_MS).
        self.env = env or {}
        self.config = state_dir.parent / f"{state_dir.name}.yaml"
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        # Seconds from starting the process to its port accepting a connection (it is
        # bound before ledger recovery), and to its answering a status request over the
        # control socket (opened last, once recovery is done: it serves from then on).
        self.port_s: float | None = None
        self.ready_s: float | None = None

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
            # Room for scenario e's 1,000 connections plus probes; idle ones are kept
            # for 10 minutes, longer than e holds them or any scenario pauses.
            "  max_connections: 2000\n"
            "  idle_timeout_s: 600\n"
            "ledger:\n"
            f"  fsync: {self.fsync}\n"
            f"  min_sync_interval_ms: {self.min_sync_interval_ms}\n"
            "log:\n"
            "  level: info\n"
            # Measure the appliance's normal path: a synchronised clock (this
            # machine may have no NTP state, which would flag every event).
            "clock:\n"
            "  check_sync: false\n" + self.extra_config
        )
        cmd = gateway_command("run", "--config", str(self.config))
        if self.python is not None:
            cmd[0] = self.python
        if self.profile_out is not None:
            cmd[1:1] = ["-m", "cProfile", "-o", str(self.profile_out)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.checkout or REPO,
            env={**os.environ, **self.env},
        )
        deadline = t0 + START_TIMEOUT_S
        self.port_s = self.ready_s = None
        while self.ready_s is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() >= deadline:
                state = "no open port" if self.port_s is None else "its port open, no status"
                raise RuntimeError(f"gateway not ready within {START_TIMEOUT_S:g} s: {state}")
            try:
                if self.port_s is None:  # a loopback connect is immediate; 1 s bounds a stuck one
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    self.port_s = time.monotonic() - t0
                self.status()
                self.ready_s = time.monotonic() - t0
            except OSError:
                time.sleep(START_POLL_S)

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
        )

    def reset_peak_rss(self) -> bool:
        """Start VmHWM afresh (Linux: "5" into clear_refs), so that it becomes the peak
        of what follows; False where that is not allowed (then it is the peak since start)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        """What `gateway status --json` prints: the same control request, made in-process."""
        path = self.state_dir / "control.sock"
        return control.request(path, {"cmd": "status"}, timeout=STATUS_TIMEOUT_S)["status"]

    def head_seq(self) -> int:
        """The durable head, from the hello reply of a short-lived connection (answered
        within milliseconds by a running gateway; 10 s means it is stuck)."""
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
        # A clean stop drains and commits in seconds; the indexer may take 30 s.
        code = stop_process(self.proc, signal.SIGTERM, 60.0)
        self._log.close()
        return code

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


@dataclass
class Snapshot:
    """The gateway's counters at one moment: /proc, its status, the ledger's size."""

    proc: ProcStats
    head_seq: int
    syncs: int
    batches: int
    sync_ms: dict[str, float]  # commit time p50/p99 over its last 1,000 commits
    index_lag: int
    ledger_bytes: int
    device_bytes: int | None


def snapshot(gw: GatewayProcess) -> Snapshot:
    st = gw.status()
    return Snapshot(
        proc=gw.stats(),
        head_seq=st["ledger"]["head_seq"],
        syncs=st["ledger"]["syncs"],
        batches=st["ledger"]["batches"],
        sync_ms=st["sync_ms"],
        index_lag=st["index"]["lag"],
        ledger_bytes=gw.ledger_bytes(),
        device_bytes=device_written(gw.state_dir),
    )


def per(value: float, count: float) -> float | None:
    return value / count if count else None


def gateway_window(s0: Snapshot, s1: Snapshot, events: int, load_s: float) -> dict[str, Any]:
    """The gateway's side of one scenario. `events`: what the client counts (acked or
    sent); `load_s`: from the first send to the last ack, the time the syncs took place."""
    cpu = s1.proc.cpu_s - s0.proc.cpu_s
    written = s1.proc.write_bytes - s0.proc.write_bytes
    syncs = s1.syncs - s0.syncs
    entries = s1.head_seq - s0.head_seq
    return {
        "cpu_s": round(cpu, 2),
        "us_per_event": round(1e6 * cpu / events, 2) if events else None,
        "cpu_s_per_100k": per(cpu * 100_000, events),
        "rss_mb": round(s1.proc.rss_kb / 1024, 1),
        "hwm_mb": round(s1.proc.hwm_kb / 1024, 1),
        "write_bytes": written,
        "disk_bytes_per_event": per(written, events),
        "device_bytes": None
        if s0.device_bytes is None or s1.device_bytes is None
        else s1.device_bytes - s0.device_bytes,
        "ledger_growth": s1.ledger_bytes - s0.ledger_bytes,
        "entries": entries,
        "syncs": syncs,
        "batches": s1.batches - s0.batches,
        "syncs_per_s": per(syncs, load_s),
        "events_per_sync": per(entries, syncs),
        "sync_ms": s1.sync_ms,
        "index_lag": s1.index_lag,
    }


def wait_index(gw: GatewayProcess) -> dict[str, Any]:
    """Until the query index has caught up with the durable head (at most INDEX_CATCH_UP_S)."""
    t = time.monotonic()
    while True:
        lag = gw.status()["index"]["lag"]
        if lag == 0 or time.monotonic() - t > INDEX_CATCH_UP_S:
            return {"seconds": round(time.monotonic() - t, 1), "lag": lag}
        time.sleep(INDEX_POLL_S)


@contextlib.contextmanager
def running(
    root: Path, label: str, res: dict[str, Any], extra_config: str = "", **kwargs: Any
) -> Iterator[GatewayProcess]:
    """A gateway for a group of scenarios. Once it has stopped, its exit code, log
    summary and the verification of its ledger go into res["gateways"]."""
    gw = GatewayProcess(root / label, free_port(), extra_config=extra_config, **kwargs)
    print(f"gateway {label} on 127.0.0.1:{gw.port}, state in {gw.state_dir}", flush=True)
    gw.start()
    try:
        yield gw
    finally:
        code = gw.stop()
        res["gateways"].append(
            {
                "label": label,
                "exit_code": code,
                "log": gw.log_summary(),
                "verify": run_verify(gw.ledger_dir, label),
            }
        )


# ---------------------------------------------------------------- the load generator process


def loadgen_cmd(port: int, **options: Any) -> list[str]:
    """The bench.loadgen command line: each option becomes --option-name value."""
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port)]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def loadgen(port: int, **options: Any) -> dict[str, Any]:
    cmd = loadgen_cmd(port, **options)
    # No scenario runs more than 10 s plus connecting and a 15 s drain: ten minutes
    # means the load generator hangs.
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(
    gw: GatewayProcess, name: str, *, index_caught_up: bool = False, **options: Any
) -> dict[str, Any]:
    """One load scenario (options go to bench.loadgen). With index_caught_up the
    window closes only once the query index has indexed the scenario's entries."""
    if QUIET_WAIT_S > 0:
        wait_quiet(QUIET_WAIT_S)
    peak_reset = gw.reset_peak_rss()
    busy0 = system_busy_s()
    s0 = snapshot(gw)
    result = loadgen(gw.port, watch_pid=gw.pid, **options)
    if index_caught_up:
        result["index"] = wait_index(gw)
    s1 = snapshot(gw)
    busy = system_busy_s() - busy0
    result["name"] = name
    wall = s1.proc.t - s0.proc.t
    ack = result["mode"] == "ack"
    events = result["acked"] if ack else result["sent"]
    gw_window = gateway_window(s0, s1, events, result["wall_s"])
    window_cpu = result.get("watched_cpu_s")
    window_s = result["stop_monotonic"] - result["t0_monotonic"]
    # CPU share while the load ran (read by the load generator at its start and stop);
    # the whole scenario's (connecting, draining) if that is not available.
    gw_window["cpu_pct"] = round(
        100 * (window_cpu / window_s if window_cpu is not None else gw_window["cpu_s"] / wall), 1
    )
    gw_window["peak_reset"] = peak_reset
    result["gw"] = gw_window
    # Everything else the machine did meanwhile (other processes), in cores.
    result["other_cores"] = round(
        max(0.0, busy - gw_window["cpu_s"] - result["loadgen_cpu_s"]) / wall, 2
    )
    result["loadgen_cpu_pct"] = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    if ack and gw_window["entries"] < (result["acked"] or 0):
        result["errors"] += 1
        result["error_lines"].append(
            f"acked {result['acked']} but the ledger grew by {gw_window['entries']}"
        )
    _progress(result)
    return result


def idle_connections(gw: GatewayProcess, conns: int, settle_s: float) -> dict[str, Any]:
    peak_reset = gw.reset_peak_rss()
    before = gw.stats()
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(gw.port)]
    cmd += ["--conns", str(conns), "--idle", "300"]  # held until stdin closes; 300 s cap
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    ready = json.loads(proc.stdout.readline())
    time.sleep(settle_s)
    held = gw.stats()
    proc.stdin.close()
    final = json.loads(proc.stdout.read().strip().splitlines()[-1])
    proc.wait(30)  # it only closes its sockets now
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
        "peak_reset": peak_reset,
        "kib_per_conn": round((held.rss_kb - before.rss_kb) / max(1, ready["open"]), 2),
    }
    print(
        f"  {result['name']}: open {result['open']}, RSS {result['rss_before_mb']} -> "
        f"{result['rss_mb']} MB, peak {result['hwm_mb']} MB "
        f"({result['kib_per_conn']} KiB/connection)",
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
    peak_reset = gw.reset_peak_rss()
    s0 = snapshot(gw)
    result = loadgen(
        gw.port, conns=64, duration=duration * 4, max_events=events, size="small", mode="fire"
    )
    # Wait for the gateway to take in what was sent (it sits in socket buffers); two
    # minutes is many times what (a)'s rate needs for this count.
    deadline = time.monotonic() + 120
    head = gw.status()["ledger"]["head_seq"]
    while head - s0.head_seq < result["sent"] and time.monotonic() < deadline:
        time.sleep(0.02)  # 20 ms: fine against seconds of catching up, cheap to ask
        head = gw.status()["ledger"]["head_seq"]
    s1 = snapshot(gw)
    catch_up_s = s1.proc.t - result["t0_monotonic"]
    entries = s1.head_seq - s0.head_seq
    result["name"] = "h: fire-and-forget"
    result["gw"] = gateway_window(s0, s1, entries, catch_up_s)
    result["gw"].update(
        cpu_pct=round(100 * result["gw"]["cpu_s"] / (s1.proc.t - s0.proc.t), 1),
        peak_reset=peak_reset,
        ingest_per_s=entries / catch_up_s,
        catch_up_s=round(catch_up_s, 2),
    )
    result["loadgen_cpu_pct"] = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    if entries < result["sent"]:
        result["errors"] += 1
        result["error_lines"].append(f"sent {result['sent']}, ledger grew by {entries}")
    _progress(result)
    return result


def _progress(r: dict[str, Any]) -> None:
    lat = r.get("latency_ms") or {}
    gw = r["gw"]
    print(
        f"  {r['name']}: {r['events_per_s']:,.0f} ev/s, {r['mb_per_s']:.1f} MB/s, "
        f"p99 {lat.get('p99')} ms, errors {r['errors']}, gateway CPU {gw['cpu_pct']}%, "
        f"{_f(gw['syncs_per_s'])} syncs/s, {_f(gw['events_per_sync'])} events/sync, "
        f"{_f(gw['disk_bytes_per_event'])} disk B/event, peak RSS {gw['hwm_mb']} MB, "
        f"loadgen CPU {r['loadgen_cpu_pct']}%",
        flush=True,
    )


def run_verify(ledger_dir: Path, label: str = "") -> dict[str, Any]:
    t = time.perf_counter()
    cpu = time.process_time()
    res = verify_ledger(ledger_dir)
    wall = time.perf_counter() - t
    cpu = time.process_time() - cpu
    out = {
        "label": label,
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
        f"  f: verify {label}: {res.entries:,} entries, {res.bytes_read / 1e6:,.0f} MB in "
        f"{wall:.2f} s: {out['entries_per_s']:,.0f} entries/s, {out['mb_per_s']:.0f} MB/s, "
        f"ok={res.ok}",
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
        "| errors | gateway CPU | CPU s/100k events | peak RSS MB | disk B/event | syncs/s "
        "| events/sync | loadgen CPU | other load |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lat = r.get("latency_ms") or {}
        gw = r["gw"]
        rows.append(
            f"| {r['name']} | {r['conns']} | {r['event_bytes']} | {_f(r['events_per_s'])} "
            f"| {_f(r['mb_per_s'], '{:.1f}')} | {_f(lat.get('p50'), '{:.1f}')} "
            f"| {_f(lat.get('p95'), '{:.1f}')} | {_f(lat.get('p99'), '{:.1f}')} "
            f"| {_f(lat.get('max'), '{:.1f}')} | {r['errors']} | {gw['cpu_pct']}% "
            f"| {_f(gw['cpu_s_per_100k'], '{:.2f}')} | {gw['hwm_mb']} "
            f"| {_f(gw['disk_bytes_per_event'])} | {_f(gw['syncs_per_s'])} "
            f"| {_f(gw['events_per_sync'])} | {r['loadgen_cpu_pct']}% "
            f"| {r['other_cores']:.2f} cores |"
        )
    return rows


def amplification(r: dict[str, Any]) -> float:
    """Bytes the gateway caused to be written over the bytes its ledger grew by."""
    growth = r["gw"]["ledger_growth"]
    return r["gw"]["write_bytes"] / growth if growth else float("nan")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def amplification_line(g: dict[str, Any], g0: dict[str, Any], a: dict[str, Any]) -> str:
    r0, r1 = amplification(g0), amplification(g)
    w0, w1 = g0["gw"], g["gw"]
    per_event = (w1["disk_bytes_per_event"] or 0) - (w0["disk_bytes_per_event"] or 0)
    device = (
        f" Whole-device writes meanwhile (every process on the machine, the filesystem "
        f"journal included): {_mb(w0['device_bytes'])} during g0, {_mb(w1['device_bytes'])} "
        "during g."
        if w0["device_bytes"] is not None and w1["device_bytes"] is not None
        else ""
    )
    return (
        f"- g: write amplification at a sustained {AMPLIFICATION_RATE:,} events/s (the "
        "target's rate condition: rate-limited, 64 acknowledged connections, small events, "
        f"{g0['measured_s']:.0f} s; measured {g0['events_per_s']:,.0f} events/s): ledger path "
        f"alone (g0, index off): write_bytes {_mb(w0['write_bytes'])} / ledger growth "
        f"{_mb(w0['ledger_growth'])} = **{r0:.2f}** ({_f(w0['disk_bytes_per_event'])} B "
        f"written per event for {w0['ledger_growth'] / max(1, w0['entries']):.0f} ledger B; "
        f"{_f(w0['events_per_sync'], '{:.1f}')} events per sync). Default configuration (g, "
        f"query index on, counted until the index had caught up, {g['index']['seconds']} s "
        f"after the load, lag left {g['index']['lag']}): {_mb(w1['write_bytes'])} / "
        f"{_mb(w1['ledger_growth'])} = {r1:.2f}; the index adds {r1 - r0:.2f} bytes per "
        f"ledger byte ({per_event:,.0f} B per event). At full speed (a): {amplification(a):.3f}. "
        "write_bytes counts each page when it becomes dirty, so a sync that leaves the last "
        "page partly filled makes the next batch write that page again; it does not count the "
        "filesystem's own journal writes. The index's SQLite copies its write-ahead log into "
        "the database every ~4 MB of log (SQLite's default) and when the gateway stops: a "
        f"copy after the window is not counted.{device}"
    )


def slow_flash_line(res: dict[str, Any]) -> str:
    """Throughput and events per sync at 64 and 1 connections, without and with slow syncs."""
    parts = []
    for conns, base in ((64, res["a"]), (1, res["c1"])):
        rows = [(0, base)] + [(ms, res["slow"][ms, conns]) for ms in SLOW_SYNC_MS]
        cells = [
            f"+{ms} ms: {r['events_per_s']:,.0f} events/s, "
            f"{_f(r['gw']['events_per_sync'])} events/sync, commit p50 "
            f"{r['gw']['sync_ms']['p50']} ms, ack p99 {r['latency_ms']['p99']} ms"
            for ms, r in rows
        ]
        parts.append(f"{conns} connection{'s' if conns > 1 else ''}: " + "; ".join(cells))
    return (
        f"- s: slow flash ({SIMULATE_SYNC_ENV}=N adds N ms to every sync; +0 ms is (a) and "
        "(c: 1 connection); commit p50 is the gateway's own figure over its last 1,000 "
        "commits; one connection has at most a window of events in flight, so no sync can "
        "carry more of its events than that): " + ". ".join(parts) + "."
    )


def report(
    info: dict[str, str], args: argparse.Namespace, res: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(markdown section, target lines)."""
    a, b, idle = res["a"], res["b"], res["e"]
    ver = max((gw["verify"] for gw in res["gateways"]), key=lambda v: v["entries"])
    b_p99 = b["latency_ms"]["p99"]
    amp = amplification(res["g0"])
    all_open = idle["open"] == idle["conns"]
    targets = [
        target(
            "throughput",
            a["events_per_s"],
            f"{a['events_per_s']:,.0f} events/s ({a['event_bytes']} B events)",
        ),
        target("p99", b_p99, f"{b_p99} ms at {b['events_per_s']:,.0f} events/s (b)"),
        target(
            "write_amp",
            amp,
            f"{amp:.2f} (g0, default configuration but the index off); with the query index "
            f"{amplification(res['g']):.2f} (g); with ledger.min_sync_interval_ms "
            f"{CAPPED_SYNC_MS} {amplification(res['g50']):.2f} (g{CAPPED_SYNC_MS}, ack p99 "
            f"{(res['g50'].get('latency_ms') or {}).get('p99')} ms)",
        ),
        target(
            "rss",
            idle["hwm_mb"] if all_open else float("nan"),
            f"{idle['hwm_mb']} MB ({idle['open']} of {idle['conns']} open, idle)",
        ),
        target(
            "verify",
            ver["entries_per_s"] if ver["ok"] else float("nan"),
            f"{ver['entries_per_s']:,.0f} entries/s ({ver['mb_per_s']:.0f} MB/s), ok={ver['ok']}",
        ),
    ]
    peak_reset = all(r["gw"]["peak_reset"] for r in res["load"]) and idle["peak_reset"]
    lines = [
        f"## {info['date']}: {info['rev']}{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}. Gateways: fsync batch, state on the "
        "local disk; e and g with the default configuration, every other scenario with the "
        "query index off (see g for what it adds). Load generator: `bench.loadgen`, one "
        f"process, window {args.window} events per acknowledged connection. Columns: CPU "
        "s/100k events is the gateway's CPU time (all threads) per 100,000 events; peak RSS "
        "is VmHWM "
        + (
            "over the scenario alone (reset before it through /proc/PID/clear_refs)"
            if peak_reset
            else "since the gateway started (it could not be reset here)"
        )
        + "; disk B/event is the gateway's /proc/PID/io write_bytes over the scenario per "
        "event; syncs/s and events/sync come from the gateway's own count of fdatasync calls "
        "(status `ledger.syncs`) from the first send to the last ack.",
        "",
        *TARGET_HEADER,
        *targets,
        "",
        *table(res["load"]),
        "",
        f"- e: {idle['open']}/{idle['conns']} idle acknowledged connections (default "
        f"configuration, fresh gateway): RSS {idle['rss_before_mb']} MB before, "
        f"{idle['rss_mb']} MB with them open, peak {idle['hwm_mb']} MB "
        f"({idle['kib_per_conn']} KiB per connection); {idle['still_open']} still open at "
        "the end.",
        f"- f: verify (`verify_ledger` in the bench process once the gateway had stopped; page "
        f"cache warm: the ledger was just written): {ver['label']}: {ver['entries']:,} entries, "
        f"{ver['bytes'] / 1e6:,.0f} MB in {ver['segments']} segments, {ver['seconds']} s: "
        f"**{ver['entries_per_s']:,.0f} entries/s**, {ver['mb_per_s']:.0f} MB/s, "
        f"ok={ver['ok']}; "
        + ", ".join(
            f"{gw['verify']['label']} ok={gw['verify']['ok']} ({gw['verify']['entries']:,})"
            for gw in res["gateways"]
            if gw["verify"] is not ver
        )
        + ".",
        amplification_line(res["g"], res["g0"], a),
        slow_flash_line(res),
    ]
    h = res.get("h")
    if h:
        lines.append(
            f"- h: fire-and-forget, 64 connections, {h['sent']:,} small events: the client "
            f"handed them to the kernel in {h['measured_s']} s ({h['events_per_s']:,.0f}/s); "
            f"the ledger had all {h['gw']['entries']:,} after {h['gw']['catch_up_s']} s = "
            f"{h['gw']['ingest_per_s']:,.0f} events/s ingested, gateway "
            f"{_f(h['gw']['cpu_s_per_100k'], '{:.2f}')} CPU s per 100,000 events, "
            f"{_f(h['gw']['events_per_sync'])} events per sync."
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
    logged = "; ".join(
        f"{gw['label']}: "
        + (", ".join(f"{n} x {m}" for m, n in gw["log"].most_common()) or "nothing above info")
        + f", exit code {gw['exit_code']}"
        for gw in res["gateways"]
    )
    peak = max([idle["hwm_mb"]] + [r["gw"]["hwm_mb"] for r in res["load"]])
    lines.append(f"- gateway logs: {logged}. Highest peak RSS of any scenario: {peak} MB.")
    lines.append(
        "- time taken: "
        + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in res["parts"].items())
        + "."
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


def perf_top(data: Path) -> str:
    """perf report's self time by shared object, then by symbol (the top PERF_ROWS)."""
    out = []
    for sort in ("dso", "dso,sym"):
        cmd = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
               "--sort", sort, "--percent-limit", "0.3"]  # fmt: skip
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
        rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        out += [f"by {sort}:", *rows[:PERF_ROWS], ""]
    return "\n".join(out)


def run_profile(args: argparse.Namespace, root: Path) -> int:
    global QUIET_WAIT_S
    port = free_port()
    prof = root / "gateway.prof" if args.profile == "cprofile" else None
    gw = GatewayProcess(root / "state", port, profile_out=prof, extra_config=INDEX_OFF)
    gw.start()
    spy = None
    raw = root / "pyspy.txt"
    perf_data = root / "perf.data"
    # Wait for quiet before the profiler starts, not inside measure(): py-spy and perf
    # record for a fixed time, which a wait would use up.
    if QUIET_WAIT_S > 0:
        wait_quiet(QUIET_WAIT_S)
        QUIET_WAIT_S = 0
    try:
        if args.profile == "perf":
            spy = subprocess.Popen(
                ["perf", "record", "-F", str(PERF_FREQ), "-g", "-p", str(gw.pid),
                 "-o", str(perf_data), "--", "sleep", str(int(args.duration) + 1)],
            )  # fmt: skip
            time.sleep(0.5)
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
    if args.profile == "perf":
        print(perf_top(perf_data))
        print(f"perf data: {perf_data}")
    elif prof is not None:
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
    p.add_argument("--profile", choices=("cprofile", "py-spy", "perf"),
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
    res: dict[str, Any] = {"load": [], "slow": {}, "gateways": [], "parts": {}}
    w = args.window
    small = {"size": "small", "window": w}
    t = time.monotonic()

    def part_done(name: str) -> None:
        nonlocal t
        res["parts"][name] = time.monotonic() - t
        t = time.monotonic()

    with running(root, "default", res) as gw:
        if QUIET_WAIT_S > 0:
            wait_quiet(QUIET_WAIT_S)
        res["e"] = idle_connections(gw, 1000, settle)
        res["g"] = measure(gw, f"g: {AMPLIFICATION_RATE:,}/s, index on", index_caught_up=True,
                           conns=64, duration=long_s, rate=AMPLIFICATION_RATE, **small)  # fmt: skip
        res["load"].append(res["g"])
    part_done("e and g (default configuration)")

    with running(root, "load", res, INDEX_OFF) as gw:
        res["g0"] = measure(gw, f"g0: {AMPLIFICATION_RATE:,}/s, index off", conns=64,
                            duration=long_s, rate=AMPLIFICATION_RATE, **small)  # fmt: skip
        res["a"] = measure(gw, "a: max throughput", conns=64, duration=long_s, **small)
        half = round(res["a"]["events_per_s"] / 2)
        res["b"] = measure(gw, f"b: latency at {half:,}/s", conns=64, duration=long_s, rate=half,
                           **small)  # fmt: skip
        b2 = measure(gw, f"b2: same, {BATCHED_WRITES} events/write", conns=64, duration=long_s,
                     rate=half, min_batch=BATCHED_WRITES, **small)  # fmt: skip
        res["load"] += [res["g0"], res["a"], res["b"], b2]
        for n in (1, 8, 64, 512):
            r = measure(gw, f"c: {n} connections", conns=n, duration=curve_s, **small)
            res["load"].append(r)
            if n == 1:
                res["c1"] = r
        for size in ("small", "audit", "large"):
            r = measure(gw, f"d: {size} events", conns=64, duration=curve_s, size=size, window=w)
            res["load"].append(r)
        res["h"] = fire_and_forget(gw, curve_s, int(res["a"]["events_per_s"] * curve_s))
    part_done("g0, a-d, h (index off)")

    with running(root, "capped", res, INDEX_OFF, min_sync_interval_ms=CAPPED_SYNC_MS) as gw:
        res["g50"] = measure(gw, f"g{CAPPED_SYNC_MS}: {AMPLIFICATION_RATE:,}/s, index off, "
                             f"min_sync_interval_ms {CAPPED_SYNC_MS}", conns=64,
                             duration=long_s, rate=AMPLIFICATION_RATE, **small)  # fmt: skip
        res["load"].append(res["g50"])
    part_done("g50 (sync rate capped)")

    for ms in SLOW_SYNC_MS:
        env = {SIMULATE_SYNC_ENV: str(ms)}
        with running(root, f"sync-{ms}ms", res, INDEX_OFF, env=env) as gw:
            for n in (64, 1):
                r = measure(gw, f"s: sync +{ms} ms, {n} conn", conns=n, duration=curve_s, **small)
                res["slow"][ms, n] = r
                res["load"].append(r)
    part_done("s (slow flash)")

    section, targets = report(info, args, res)
    print()
    print("\n".join(section))
    print("targets:")
    print("\n".join(targets))
    if not args.no_append:
        append_results(section)
    return 0


def append_results(section: list[str]) -> None:
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\n")
    with RESULTS.open("a") as f:
        f.write("\n" + "\n".join(section))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())

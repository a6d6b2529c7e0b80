"""`make bench-peers`: the gateway beside the naive listener and rsyslog, one client workload.

Every system gets the same events (bench.loadgen's "small" preset: JSON lines of
186 B), from a client in its own process on loopback, for --duration seconds:

  gateway, acknowledged   bench.loadgen --mode ack, 8 connections, window 256:
                          acknowledged (durable) events/s and ack latency
  gateway, fire           bench.loadgen --mode fire, 8 connections: ledger entries/s
                          from the first send until the ledger holds every event sent
  naive listener          bench/baselines/naive_listener.py (one client at a time,
                          open/append/close per line, no fsync), so bench.loadgen
                          --mode fire with ONE connection: lines/s until its file
                          holds every line sent
  rsyslog imtcp           imtcp -> omfile sync="on", bench.loadgen --mode fire,
                          8 connections: lines/s until the file holds every line sent
  rsyslog imrelp          imrelp -> omfile sync="on", bench.relp (our RELP client),
                          8 sessions, window 256: acknowledged messages/s and ack
                          latency; also lines/s until the file holds every message

The gateway is started as bench.run does (its GatewayProcess: fsync batch, state
on the local disk). Each rsyslogd is its own foreground instance (`rsyslogd -n -f
CONFIG -i PIDFILE`) with its own work and output directories under this run's
temporary directory and a loopback port; it loads only the one input module (no
imuxsock, imjournal or imklog) and never touches the system's syslog. Run as root,
it is started as `nobody` through setpriv, in directories given to that user.
Its output template is the received line alone (%rawmsg%), so lines can be counted;
rsyslog's own messages go to a separate file. Nothing is tuned beyond that: queues
and batch sizes are rsyslog's defaults (omfile syncs after each batch).

"Waiting until the file holds every line" is bounded (CATCH_UP_S); what arrived by
then is reported, marked incomplete. Before each scenario the runner waits (up to
--wait-quiet s) for other processes to go quiet and reports in "other load" the
cores other processes used meanwhile. Prints a table and appends one section to
bench/RESULTS.md with the ratios the product requires: gateway acknowledged events/s
at least 1.4x rsyslog's RELP acknowledged messages/s and at least 2x rsyslog's
omfile sync="on" throughput (the imtcp scenario). A system that cannot run here
(rsyslog not installed: bench/peers-deps.sh) is reported as not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import run
from bench.loadgen import _proc_cpu_s

RESULTS = run.RESULTS

# The client workload: bench.loadgen's preset, connections, events in flight per
# acknowledged connection (bench.run's default), seconds of load (--duration).
SIZE = "small"
CONNS = 8
WINDOW = 256
DURATION_S = 10.0

# Before each scenario, wait up to this long for the machine to be quiet (--wait-quiet);
# as bench.run.
QUIET_WAIT_S = 15.0
# After a fire-and-forget load: bound on waiting for the server to store everything
# sent. Loopback socket buffers and rsyslog's in-memory queue take ~300,000 small
# events within seconds; at the ~6,000 lines/s rsyslog's omfile sync="on" managed
# while this machine was busy that is ~50 s, so twice that before calling it incomplete.
CATCH_UP_S = 120.0
# How often the stored count is read while waiting (sets the end time's resolution).
POLL_S = 0.02
# Bound on a server's start (Python start-up, or rsyslogd loading its modules).
START_TIMEOUT_S = 20.0
# Bound on a server's exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15.0
# Bound on the RELP client process beyond its --duration: connecting, draining and
# closing are bounded inside it (bench.relp) by 10 + 15 + 5 s.
RELP_CLIENT_EXTRA_S = 60.0
# Bytes read per step when counting an output file's lines.
COUNT_CHUNK = 1 << 20

# The product's requirement: the gateway's acknowledged events/s over each peer's figure.
RATIOS = {
    "relp": (1.4, "gateway acknowledged events/s over rsyslog RELP acknowledged msgs/s (>=)"),
    "omfile": (
        2.0,
        'gateway acknowledged events/s over rsyslog imtcp + omfile sync="on" lines stored/s (>=)',
    ),
}

RSYSLOG_MODULE_DIRS = ("/usr/lib/*/rsyslog", "/usr/lib/rsyslog", "/usr/lib64/rsyslog")


# ---------------------------------------------------------------- what is measured


@dataclass
class Row:
    """One line of the table; `rate` is None when the system was not measured."""

    system: str
    client: str
    conns: int
    counted: str  # what `rate` counts
    rate: float | None = None
    event_bytes: int | None = None
    p50: float | None = None
    p99: float | None = None
    server_cpu_pct: float | None = None
    us_per_event: float | None = None
    client_cpu_pct: float | None = None
    other_cores: float | None = None
    errors: int = 0
    notes: list[str] = field(default_factory=list)


class LineCounter:
    """Counts the lines of a file that only grows, reading each byte once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while chunk := f.read(COUNT_CHUNK):
                    self.offset += len(chunk)
                    self.lines += chunk.count(b"\n")
        except FileNotFoundError:
            pass
        return self.lines


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp, without connecting:
    a probe connection would take the naive listener's only slot or upset RELP)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return any(
            fields[1] == local and fields[3] == "0A" for fields in (line.split() for line in f)
        )


def server_cpu(pid: int) -> float:
    cpu = _proc_cpu_s(pid)
    if cpu is None:
        raise RuntimeError(f"process {pid} is gone")
    return cpu


def catch_up(stored: Callable[[], int], target: int, t0: float) -> tuple[int, float, bool]:
    """Poll stored() until it reaches target (bounded by CATCH_UP_S).

    Returns (stored, seconds from t0 to the last increase seen, complete)."""
    deadline = time.monotonic() + CATCH_UP_S
    last = stored()
    last_at = time.monotonic()
    while last < target and time.monotonic() < deadline:
        time.sleep(POLL_S)
        now_count = stored()
        if now_count != last:
            last, last_at = now_count, time.monotonic()
    return last, last_at - t0, last >= target


def fire(
    port: int, conns: int, duration: float, pid: int, stored: Callable[[], int], row: Row
) -> Row:
    """bench.loadgen --mode fire, then how fast the server stored what it was sent."""
    if QUIET_WAIT_S > 0:
        run.wait_quiet(QUIET_WAIT_S)
    base = stored()
    t_start, busy0, cpu0 = time.monotonic(), run.system_busy_s(), server_cpu(pid)
    result = run.loadgen(port, conns=conns, duration=duration, size=SIZE, mode="fire")
    t0 = result["t0_monotonic"]
    got, seconds, complete = catch_up(lambda: stored() - base, result["sent"], t0)
    cpu, t_end, busy = server_cpu(pid) - cpu0, time.monotonic(), run.system_busy_s() - busy0
    row.rate = got / seconds if seconds > 0 else None
    row.event_bytes = result["event_bytes"]
    # The server's share of a core from the first send to the end of the wait.
    row.server_cpu_pct = round(100 * cpu / (t_end - t0), 1)
    row.us_per_event = round(1e6 * cpu / got, 1) if got else None
    row.client_cpu_pct = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    row.other_cores = max(0.0, busy - cpu - result["loadgen_cpu_s"]) / (t_end - t_start)
    row.errors = result["errors"]
    if complete:
        row.notes.append(
            f"{result['sent']:,} sent in {result['measured_s']:.1f} s, all stored "
            f"{seconds:.1f} s after the first send"
        )
    else:
        row.notes.append(
            f"INCOMPLETE: {got:,} of {result['sent']:,} sent were stored within "
            f"{CATCH_UP_S:.0f} s after the load (rate over those)"
        )
    row.notes += result["error_lines"][:2]
    return row


# ---------------------------------------------------------------- servers


class ServerProcess:
    """A foreground server with its output in a log file, stopped with SIGTERM."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def popen(self, cmd: list[str], cwd: Path, stdout: int | None = None) -> subprocess.Popen:
        """Start it with stderr (and stdout, unless given) in the log file."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, stdout=log if stdout is None else stdout, stderr=log
            )
        return self.proc

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class NaiveListener(ServerProcess):
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        super().__init__(root / "naive.log")
        self.out = root / "naive.jsonl"
        self.port = 0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "bench.baselines.naive_listener", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--out", str(self.out)]
        proc = self.popen(cmd, run.REPO, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        # Its first line says which port the kernel gave it.
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(START_TIMEOUT_S):
                raise RuntimeError(f"the naive listener did not start: {self.log_tail()}")
        line = proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the naive listener said {line!r}: {self.log_tail()}")
        self.port = int(line.rsplit(":", 1)[1])


def rsyslogd_binary() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


def rsyslog_module(name: str) -> str | None:
    for pattern in RSYSLOG_MODULE_DIRS:
        found = sorted(glob.glob(f"{pattern}/{name}.so"))
        if found:
            return found[0]
    return None


def rsyslog_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    first = out.stdout.splitlines()[0] if out.stdout else "?"
    return first.split()[1] if first.startswith("rsyslogd") else first


class Rsyslog(ServerProcess):
    """One rsyslogd: `input_module` (imtcp or imrelp) on a loopback port into omfile sync="on".

    As root it runs as `nobody` (setpriv: its user, its group, no supplementary
    groups), owning its own directory; otherwise as the current user."""

    def __init__(self, binary: str, input_module: str, root: Path) -> None:
        self.dir = root / f"rsyslog-{input_module}"
        for sub in ("work", "out"):
            (self.dir / sub).mkdir(parents=True)
        super().__init__(self.dir / "rsyslogd.stderr")
        self.binary = binary
        self.input_module = input_module
        self.port = run.free_port()
        self.out = self.dir / "out" / "messages"

    def config(self) -> str:
        d = self.dir
        return (
            # processInternalMessages: rsyslog's own messages go through this config (to
            # rsyslogd.log below) instead of to the system's /dev/log.
            f'global(workDirectory="{d / "work"}" processInternalMessages="on")\n'
            f'module(load="{self.input_module}")\n'
            'template(name="line" type="string" string="%rawmsg%\\n")\n'
            f'input(type="{self.input_module}" address="127.0.0.1" port="{self.port}" '
            'ruleset="bench")\n'
            'ruleset(name="bench") {\n'
            f'  action(type="omfile" file="{self.out}" template="line" sync="on")\n'
            "}\n"
            "# rsyslog's own messages (start, stop, errors), apart from the counted file.\n"
            f'action(type="omfile" file="{d / "rsyslogd.log"}")\n'
        )

    def start(self) -> None:
        conf = self.dir / "rsyslog.conf"
        conf.write_text(self.config())
        cmd = [self.binary, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root and setpriv (util-linux) is missing")
            # Readable path down to its directory, which it owns.
            self.dir.parent.chmod(0o711)
            for path in (self.dir, *self.dir.rglob("*")):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            cmd = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups", "--", *cmd]  # fmt: skip
        proc = self.popen(cmd, self.dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not listening(self.port):
            if proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not listen within {START_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)

    def own_log(self) -> str:
        """rsyslog's messages above info (errors, warnings), for the report."""
        try:
            text = (self.dir / "rsyslogd.log").read_text(errors="replace")
        except OSError:
            return ""
        return " / ".join(
            line.split(": ", 1)[-1][:160]
            for line in text.splitlines()
            if "error" in line.lower() or "warning" in line.lower()
        )[:400]


# ---------------------------------------------------------------- scenarios


def progress(row: Row) -> None:
    print(f"  {row.system}: {_f(row.rate)} {row.counted}, ack p99 {_f(row.p99, '{:.1f}')} ms; "
          f"{'; '.join(row.notes[:2])}", flush=True)  # fmt: skip


def measure_gateway(ack: Row, fired: Row, root: Path, duration: float,
                    stack: contextlib.ExitStack) -> None:  # fmt: skip
    gw = run.GatewayProcess(root / "gateway", run.free_port())
    stack.callback(lambda: gw.proc is not None and gw.stop())
    gw.start()
    print(f"  gateway on 127.0.0.1:{gw.port}", flush=True)
    r = run.measure(gw, "gateway, acknowledged", conns=CONNS, duration=duration, size=SIZE,
                    window=WINDOW)  # fmt: skip
    ack.rate = r["events_per_s"]
    ack.event_bytes = r["event_bytes"]
    ack.p50, ack.p99 = r["latency_ms"]["p50"], r["latency_ms"]["p99"]
    ack.server_cpu_pct = r["gw"]["cpu_pct"]
    ack.us_per_event = r["gw"]["us_per_event"]
    ack.client_cpu_pct = r["loadgen_cpu_pct"]
    ack.other_cores = r["other_cores"]
    ack.errors = r["errors"]
    ack.notes.append(f"{r['acked']:,} acknowledged, ledger grew by {r['gw']['entries']:,}")
    ack.notes += r["error_lines"][:2]
    fire(gw.port, CONNS, duration, gw.pid, gw.head_seq, fired)
    progress(fired)
    code = gw.stop()
    if code != 0:
        fired.notes.append(f"gateway exit code {code}")


def measure_naive(row: Row, root: Path, duration: float, stack: contextlib.ExitStack) -> None:
    naive = NaiveListener(root / "naive")
    stack.callback(naive.stop)
    naive.start()
    fire(naive.port, row.conns, duration, naive.pid, LineCounter(naive.out).count, row)
    row.notes.append("it serves one client at a time, so one connection")
    naive.stop()
    progress(row)


def measure_imtcp(row: Row, binary: str, root: Path, duration: float,
                  stack: contextlib.ExitStack) -> None:  # fmt: skip
    rs = Rsyslog(binary, "imtcp", root)
    stack.callback(rs.stop)
    rs.start()
    fire(rs.port, row.conns, duration, rs.pid, LineCounter(rs.out).count, row)
    rs.stop()
    if rs.own_log():
        row.notes.append(f"rsyslog said: {rs.own_log()}")
    progress(row)


def measure_relp(row: Row, binary: str, root: Path, duration: float,
                 stack: contextlib.ExitStack) -> None:  # fmt: skip
    """bench.relp against imrelp; then how long the file took to hold every message."""
    rs = Rsyslog(binary, "imrelp", root)
    stack.callback(rs.stop)
    rs.start()
    counter = LineCounter(rs.out)
    if QUIET_WAIT_S > 0:
        run.wait_quiet(QUIET_WAIT_S)
    t_start, busy0, cpu0 = time.monotonic(), run.system_busy_s(), server_cpu(rs.pid)
    cmd = [sys.executable, "-m", "bench.relp", "--port", str(rs.port), "--conns", str(row.conns)]
    cmd += ["--duration", str(duration), "--size", SIZE, "--window", str(WINDOW)]
    out = subprocess.run(cmd, cwd=run.REPO, capture_output=True, text=True,
                         timeout=duration + RELP_CLIENT_EXTRA_S)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bench.relp failed ({out.returncode}): {out.stderr[-1500:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    in_file_at_end = counter.count()
    cpu, t_end, busy = server_cpu(rs.pid) - cpu0, time.monotonic(), run.system_busy_s() - busy0
    stored, seconds, complete = catch_up(counter.count, r["acked"], r["t0_monotonic"])
    rs.stop()
    row.rate = r["events_per_s"]
    row.event_bytes = r["event_bytes"]
    row.p50, row.p99 = r["latency_ms"]["p50"], r["latency_ms"]["p99"]
    # The server's share of a core from the first message to the client's close.
    row.server_cpu_pct = round(100 * cpu / (t_end - r["t0_monotonic"]), 1)
    row.us_per_event = round(1e6 * cpu / r["acked"], 1) if r["acked"] else None
    row.client_cpu_pct = round(100 * r["loadgen_cpu_s"] / r["loadgen_wall_s"], 1)
    row.other_cores = max(0.0, busy - cpu - r["loadgen_cpu_s"]) / (t_end - t_start)
    row.errors = r["errors"]
    row.notes.append(
        f"{r['acked']:,} acknowledged; when the client had every answer and had closed, "
        f"the file held {in_file_at_end:,}"
    )
    if complete:
        row.notes.append(f"all in the file {seconds:.1f} s after the first send: "
                         f"{stored / seconds:,.0f} lines stored/s")  # fmt: skip
    else:
        row.notes.append(f"INCOMPLETE: {stored:,} of {r['acked']:,} acknowledged reached "
                         f"the file within {CATCH_UP_S:.0f} s")  # fmt: skip
    row.notes.append(f"server: {r['server_software']}")
    row.notes += r["error_lines"][:2]
    if rs.own_log():
        row.notes.append(f"rsyslog said: {rs.own_log()}")
    progress(row)


# ---------------------------------------------------------------- report


def _f(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| system | client | conns | event B | measured | counted as | ack p50 ms | ack p99 ms "
        "| server CPU | µs CPU/event | client CPU | other load | errors | notes |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.system} | {r.client} | {r.conns} | {_f(r.event_bytes)} | {_f(r.rate)} "
            f"| {r.counted} | {_f(r.p50, '{:.1f}')} | {_f(r.p99, '{:.1f}')} "
            f"| {_f(r.server_cpu_pct, '{:.1f}%')} | {_f(r.us_per_event, '{:.1f}')} "
            f"| {_f(r.client_cpu_pct, '{:.1f}%')} | {_f(r.other_cores, '{:.2f} cores')} "
            f"| {r.errors} | {'; '.join(r.notes).replace('|', '/')} |"
        )
    return lines


def ratio_checks(gateway: Row, relp: Row, omfile: Row) -> list[str]:
    lines = ["| check | goal | measured | met |", "|---|--:|---|---|"]
    for key, peer in (("relp", relp), ("omfile", omfile)):
        goal, text = RATIOS[key]
        if gateway.rate is None or peer.rate is None or peer.rate <= 0:
            lines.append(f"| {text} | {goal}x | not measured | - |")
            continue
        ratio = gateway.rate / peer.rate
        met = "yes" if ratio >= goal else "**NO**"
        lines.append(
            f"| {text} | {goal}x | {gateway.rate:,.0f} / {peer.rate:,.0f} = {ratio:.2f}x | {met} |"
        )
    return lines


def report(
    info: dict[str, str], rsyslog: str, duration: float, rows: list[Row], checks: list[str]
) -> list[str]:
    return [
        f"## {info['date']}: peers, {info['rev']}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}; {rsyslog}. `make bench-peers`: "
        f"every system gets bench.loadgen's {SIZE} events from a client in its own process "
        f"over loopback, {duration:g} s of load; window {WINDOW} per acknowledged "
        "connection. Gateway: fsync batch, state on the local disk.",
        "",
        *checks,
        "",
        *table(rows),
        "",
        "- Fire-and-forget rows count what the server stored (ledger head, or lines in its "
        "output file) from the first send until it held everything sent, not what the client "
        "handed to the kernel.",
        "- rsyslog: stock queues and batch sizes; omfile syncs the file and its directory "
        "after each batch. It answers a RELP message once the message is in its in-memory "
        "queue, before omfile writes or syncs it (the file count at the client's end shows "
        "how far behind the file was); the gateway acknowledges an event once it is synced "
        "to its ledger.",
        "- The RELP messages are the JSON lines without their newline and without a syslog "
        "header (so 1 byte shorter per event).",
        "",
    ]


# ---------------------------------------------------------------- main


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    global QUIET_WAIT_S
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--duration", type=float, default=DURATION_S,
                   help=f"seconds of load per system (default {DURATION_S:g})")  # fmt: skip
    p.add_argument("--wait-quiet", type=float, default=QUIET_WAIT_S, metavar="S",
                   help="before each scenario wait up to S s for other processes to go quiet "
                        "(0: never)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    QUIET_WAIT_S = run.QUIET_WAIT_S = args.wait_quiet
    signal.signal(signal.SIGTERM, _terminate)
    duration = args.duration

    info = run.machine()
    binary = rsyslogd_binary()
    missing = [m for m in ("imtcp", "imrelp") if rsyslog_module(m) is None]
    rsyslog = "rsyslog not installed"
    if binary is not None:
        rsyslog = f"rsyslog {rsyslog_version(binary)}"
        if os.geteuid() == 0:
            rsyslog += " run as nobody"
    ack = Row("gateway, acknowledged", "bench.loadgen ack", CONNS, "acknowledged events/s")
    fired = Row("gateway, fire-and-forget", "bench.loadgen fire", CONNS, "ledger entries/s")
    naive = Row("naive listener", "bench.loadgen fire", 1, "lines stored/s")
    imtcp = Row('rsyslog imtcp, omfile sync="on"', "bench.loadgen fire", CONNS, "lines stored/s")
    relp = Row('rsyslog imrelp, omfile sync="on"', "bench.relp", CONNS, "acknowledged msgs/s")
    rows = [ack, fired, naive, imtcp, relp]

    root = Path(tempfile.mkdtemp(prefix="gateway-peers-"))
    print(f"temporary directory {root}", flush=True)
    try:
        with contextlib.ExitStack() as stack:
            steps: list[tuple[list[Row], Callable[[], None]]] = [
                ([ack, fired], lambda: measure_gateway(ack, fired, root, duration, stack)),
                ([naive], lambda: measure_naive(naive, root, duration, stack)),
            ]
            if binary is None or missing:
                why = "rsyslogd not found" if binary is None else f"no {', '.join(missing)}"
                for row in (imtcp, relp):
                    row.notes.append(f"not measured: {why} (bench/peers-deps.sh installs it)")
            else:
                rsyslogd = binary
                steps += [
                    ([imtcp], lambda: measure_imtcp(imtcp, rsyslogd, root, duration, stack)),
                    ([relp], lambda: measure_relp(relp, rsyslogd, root, duration, stack)),
                ]
            for its_rows, step in steps:
                print(f"{its_rows[0].system}:", flush=True)
                try:
                    step()
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    print(f"  FAILED: {exc}", flush=True)
                    for row in its_rows:
                        if row.rate is None:
                            row.notes.append(f"FAILED: {str(exc)[:300]}")
                        else:
                            row.notes.append(f"afterwards: {str(exc)[:300]}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    section = report(info, rsyslog, duration, rows, ratio_checks(ack, relp, imtcp))
    print()
    print("\n".join(section))
    if not args.no_append:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\n")
        with RESULTS.open("a") as f:
            f.write("\n" + "\n".join(section))
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

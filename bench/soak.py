"""`make bench-soak`: 1,000 acknowledged connections for 10 minutes; memory must stay flat.

Starts the gateway (default configuration: fsync batch, query index on) on a fresh
state directory, then bench.loadgen in its own process: 1,000 acknowledged
connections sending small events at a moderate total rate (5,000 events/s, 5 per
connection per second) for --minutes (10). Every 10 s the gateway's RSS and CPU
time are read from /proc. Reported: RSS before the load, when it starts, after the
first minute, at the end and at its highest (samples, and VmHWM for what falls
between them); the slope of RSS after the first minute (least squares, MB per
minute); events acknowledged, errors and ack latency; the gateway's commits and
disk writes; the ledger verified afterwards. Appends a section to bench/RESULTS.md.

Flat means both: RSS at the end is less than 5 MB above RSS after the first minute,
and the slope after the first minute is under 0.5 MB/min. The first minute is left
out because buffers, caches and allocator pools fill up then. 5 MB is a few times
the wobble of a Python process's RSS under steady load; 0.5 MB/min would add that
much over the ten minutes and double a 60 MB gateway in two hours.

Everything is bounded: the load generator gets --minutes plus CONNECT_DRAIN_S to
finish and is killed after that, the gateway gets a minute to stop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import (
    QUIET_WAIT_S,
    REPO,
    TARGET_HEADER,
    TARGETS,
    GatewayProcess,
    _f,
    append_results,
    free_port,
    gateway_window,
    loadgen_cmd,
    machine,
    run_verify,
    snapshot,
    system_busy_s,
    target_row,
    wait_quiet,
)

# Defaults: the spec's 1,000 connections for 10 minutes at a moderate total rate.
CONNS = 1000
MINUTES = 10.0
RATE = 5000.0
SAMPLE_S = 10.0

# Flat: RSS at the end less than this above RSS after the first minute, and a slope
# after the first minute under FLAT_SLOPE_MB_PER_MIN (module docstring: why these).
WARM_UP_S = 60.0
FLAT_RISE_MB = 5.0
FLAT_SLOPE_MB_PER_MIN = 0.5

# The load generator's time beyond --minutes: opening 1,000 connections (each hello
# answered within 10 s) and draining the acks of the last events (at most 15 s),
# with room to spare. Past it, the load generator is killed and the soak fails.
CONNECT_DRAIN_S = 120.0


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute; None under 2 points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return 60 * cov / var


def summarise(samples: list[tuple[float, float]], t0: float, stop: float) -> dict[str, Any]:
    """RSS figures from (monotonic time, MB) samples and the load's start and stop times."""
    before = [m for t, m in samples if t < t0]
    during = [(t - t0, m) for t, m in samples if t0 <= t <= stop]
    after_warm_up = [(t, m) for t, m in during if t >= WARM_UP_S]
    slope = slope_mb_per_min(after_warm_up)
    out = {
        "before_mb": before[-1] if before else None,
        "start_mb": during[0][1] if during else None,
        "warm_mb": after_warm_up[0][1] if after_warm_up else None,
        "end_mb": during[-1][1] if during else None,
        "max_mb": max((m for _, m in during), default=None),
        "slope_mb_per_min": slope,
        "samples_after_warm_up": len(after_warm_up),
    }
    out["rise_mb"] = (
        out["end_mb"] - out["warm_mb"] if after_warm_up and out["end_mb"] is not None else None
    )
    out["flat"] = is_flat(out["rise_mb"], slope)
    return out


def is_flat(rise_mb: float | None, slope: float | None) -> bool:
    """The rule of the module docstring; not enough samples after the warm-up is not flat."""
    if rise_mb is None or slope is None:
        return False
    return rise_mb < FLAT_RISE_MB and slope < FLAT_SLOPE_MB_PER_MIN


def by_minute(samples: list[tuple[float, float]], t0: float, stop: float) -> str:
    """The first RSS sample of each minute of the load: 'minute: MB' pairs."""
    seen: dict[int, float] = {}
    for t, m in samples:
        if t0 <= t <= stop:
            seen.setdefault(int((t - t0) // 60), m)
    return ", ".join(f"{minute}: {mb:.1f}" for minute, mb in sorted(seen.items()))


def soak(gw: GatewayProcess, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load, sampling the gateway every args.sample_s; everything measured."""
    duration = args.minutes * 60
    cmd = loadgen_cmd(gw.port, conns=args.conns, duration=duration, rate=args.rate,
                      size="small", window=args.window, watch_pid=gw.pid)  # fmt: skip
    busy0 = system_busy_s()
    s0 = snapshot(gw)
    samples: list[tuple[float, float]] = [(s0.proc.t, s0.proc.rss_kb / 1024)]
    # stderr to a file: a pipe nobody reads for ten minutes could fill and stall it.
    err_path = gw.state_dir.parent / "loadgen.err"
    with open(err_path, "wb") as err_file:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err_file)
    started = time.monotonic()
    deadline = started + duration + CONNECT_DRAIN_S
    killed = False
    while True:
        try:
            proc.wait(timeout=max(0.0, min(args.sample_s, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            killed = True
            break
        st = gw.stats()
        samples.append((st.t, st.rss_kb / 1024))
        cpu_pct = 100 * (st.cpu_s - s0.proc.cpu_s) / (st.t - s0.proc.t)
        print(
            f"  {st.t - started:5.0f} s: RSS {st.rss_kb / 1024:.1f} MB, peak "
            f"{st.hwm_kb / 1024:.1f} MB, gateway CPU {cpu_pct:.0f}% (average)",
            flush=True,
        )
    out, _ = proc.communicate()
    if killed or proc.returncode != 0:
        raise RuntimeError(
            f"the load generator {'was killed at its deadline' if killed else 'failed'} "
            f"({proc.returncode}): {err_path.read_text(errors='replace')[-2000:]}"
        )
    result = json.loads(out.decode().strip().splitlines()[-1])
    s1 = snapshot(gw)
    busy = system_busy_s() - busy0
    samples.append((s1.proc.t, s1.proc.rss_kb / 1024))
    result["gw"] = gateway_window(s0, s1, result["acked"], result["wall_s"])
    # What every other process used meanwhile, in cores (this one's sampling is negligible).
    others = busy - result["gw"]["cpu_s"] - result["loadgen_cpu_s"]
    result["other_cores"] = max(0.0, others) / (s1.proc.t - s0.proc.t)
    # VmHWM can miss a peak (the kernel updates it lazily) and samples miss what falls
    # between them: the peak is the higher of the two.
    result["peak_mb"] = max(s1.proc.hwm_kb / 1024, max(m for _, m in samples))
    result["gw"]["cpu_pct"] = round(100 * result["watched_cpu_s"] / result["measured_s"], 1)
    t0, stop = result["t0_monotonic"], result["stop_monotonic"]
    result["rss"] = summarise(samples, t0, stop)
    result["rss"]["by_minute"] = by_minute(samples, t0, stop)
    result["rss"]["samples"] = len(samples)
    result["loadgen_cpu_pct"] = round(100 * result["loadgen_cpu_s"] / result["loadgen_wall_s"], 1)
    return result


def report(info: dict[str, str], args: argparse.Namespace, res: dict[str, Any]) -> list[str]:
    r, rss, gw, ver = res["load"], res["load"]["rss"], res["load"]["gw"], res["verify"]
    lat = r["latency_ms"]
    goal, op, label = TARGETS["rss"]
    rise, slope = rss["rise_mb"], rss["slope_mb_per_min"]
    flat_text = (
        f"end {_f(rss['end_mb'], '{:.1f}')} MB - after 1 min {_f(rss['warm_mb'], '{:.1f}')} MB "
        f"= {_f(rise, '{:+.1f}')} MB; slope {_f(slope, '{:+.2f}')} MB/min "
        f"({rss['samples_after_warm_up']} samples after the first minute)"
    )
    flat_verdict = (
        "not measured" if rise is None or slope is None else "yes" if rss["flat"] else "**NO**"
    )
    missing = r["acked"] - gw["entries"]
    return [
        f"## {info['date']}: {info['rev']}: soak{'' if args.minutes >= MINUTES else ' (short)'}",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}. `make bench-soak` (`bench/soak.py`): "
        "the gateway (default configuration: fsync batch, query index on, state on the local "
        f"disk) with {args.conns:,} acknowledged connections from `bench.loadgen` (one "
        f"process, window {args.window}) sending small events at {args.rate:,.0f} events/s "
        f"in all for {args.minutes:g} minutes; RSS read from /proc/PID/status every "
        f"{args.sample_s:g} s.",
        "",
        *TARGET_HEADER,
        target_row(
            f"{label}, active, over the whole soak",
            op,
            goal,
            r["peak_mb"],
            f"{r['peak_mb']:.1f} MB (the higher of VmHWM and the highest sample)",
        ),
        f"| RSS flat over the soak: end - RSS after 1 min < {FLAT_RISE_MB:g} MB and slope "
        f"after 1 min < {FLAT_SLOPE_MB_PER_MIN:g} MB/min | flat | {flat_text} | {flat_verdict} |",
        "",
        f"- load: {r['acked']:,} events acknowledged in {r['measured_s']:,.0f} s = "
        f"{r['events_per_s']:,.0f} events/s (asked for {args.rate:,.0f}); errors {r['errors']}, "
        f"disconnects {r['disconnects']}; ack p50 {lat['p50']} ms, p99 {lat['p99']} ms, max "
        f"{lat['max']} ms ({lat['samples']:,} samples); load generator "
        f"{r['loadgen_cpu_pct']}% of a core; other processes on the machine meanwhile "
        f"{r['other_cores']:.2f} cores."
        + (f" Errors: {'; '.join(r['error_lines'][:5])}." if r["error_lines"] else ""),
        f"- RSS (MB): before the load {_f(rss['before_mb'], '{:.1f}')}, at its start "
        f"{_f(rss['start_mb'], '{:.1f}')}, after 1 min {_f(rss['warm_mb'], '{:.1f}')}, at the "
        f"end {_f(rss['end_mb'], '{:.1f}')}, highest sample {_f(rss['max_mb'], '{:.1f}')}, "
        f"peak {r['peak_mb']:.1f}; by minute of the load: {rss['by_minute']}.",
        f"- gateway: {gw['cpu_pct']}% of a core while the load ran, "
        f"{_f(gw['cpu_s_per_100k'], '{:.2f}')} CPU s per 100,000 events, "
        f"{_f(gw['syncs_per_s'])} syncs/s, {_f(gw['events_per_sync'], '{:.1f}')} events per "
        f"sync, {_f(gw['disk_bytes_per_event'])} bytes written to disk per event "
        f"({gw['ledger_growth'] / max(1, gw['entries']):.0f} ledger bytes per entry); query "
        f"index {gw['index_lag']:,} entries behind at the end (it waits while ingest runs "
        "above 1,000 events/s).",
        f"- ledger: grew by {gw['entries']:,} entries for {r['acked']:,} acknowledged "
        f"events ({'none missing' if missing <= 0 else f'**{missing:,} missing**'}); "
        f"verify ok={ver['ok']}, {ver['entries']:,} entries in {ver['seconds']} s "
        f"({ver['entries_per_s']:,.0f} entries/s).",
        "- gateway log: "
        + (", ".join(f"{n} x {m}" for m, n in res["log"].most_common()) or "nothing above info")
        + f"; exit code {res['exit_code']}. Whole soak {res['seconds']:.0f} s.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--minutes", type=float, default=MINUTES, help="load time (default 10)")
    p.add_argument("--rate", type=float, default=RATE, help="events/s in all (default 5000)")
    p.add_argument("--conns", type=int, default=CONNS, help="connections (default 1000)")
    p.add_argument("--window", type=int, default=256, help="events in flight per connection")
    p.add_argument("--sample-s", type=float, default=SAMPLE_S, help="RSS sampling interval")
    p.add_argument("--out", type=Path, help="state/log directory (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the state directory afterwards")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    p.add_argument("--wait-quiet", type=float, default=QUIET_WAIT_S, metavar="S",
                   help="before the load wait up to S s for the machine to go quiet")  # fmt: skip
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.sample_s <= 0:
        p.error("--minutes, --rate and --sample-s must be positive")

    info = machine()
    t = time.monotonic()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="gateway-soak-", dir=args.out))
    res: dict[str, Any] = {}
    try:
        gw = GatewayProcess(root / "state", free_port())
        print(f"gateway on 127.0.0.1:{gw.port}, state in {gw.state_dir}", flush=True)
        gw.start()
        try:
            if args.wait_quiet > 0:
                wait_quiet(args.wait_quiet)
            res["load"] = soak(gw, args)
        finally:
            res["exit_code"] = gw.stop()
        res["log"] = gw.log_summary()
        res["verify"] = run_verify(gw.ledger_dir, "soak")
        res["seconds"] = time.monotonic() - t
        section = report(info, args, res)
    finally:
        if args.keep:
            print(f"state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("\n".join(section))
    if not args.no_append:
        append_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

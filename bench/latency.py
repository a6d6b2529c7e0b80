"""`python -m bench.latency`: where scenario (b)'s acknowledgement latency goes.

Scenario (b) of bench.run: 64 acknowledged connections, small events, one event
per write, at a fixed rate. This runs it at several rates (--rates) on one
gateway with `fsync: batch` and on one with `fsync: off` (no fdatasync at all:
what is left is the loop turn and the reply path), and reports for each:

- the client's ack p50/p99 (bench.loadgen: from send() to the ack's arrival);
- the gateway's commits: syncs/s, events per sync and its own write+fdatasync
  time per commit batch, p50/p99 (status `sync_ms`, its last 1,000 commits);
- the gateway's CPU share, and the time its threads spent runnable but waiting
  for a CPU (run-queue delay, /proc/PID/task/*/schedstat, in ms per second of
  load): on a shared machine this is how long other processes held the cores;
- the other processes' load (cores) meanwhile.

The gateway is this tree's (or --checkout's, with its own interpreter), query
index off. Prints a markdown table; nothing is appended to RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import ab, run

# The rates of scenario (b) measured by default: from a light load up to about
# half of what the native path sustains on a shared 2-core machine.
RATES = (2_000, 10_000, 20_000, 40_000)
# Seconds of load per rate (--duration).
DURATION_S = 5.0


def schedstat_ns(pid: int) -> tuple[int, int]:
    """(on-CPU ns, run-queue wait ns) summed over the process's threads."""
    cpu = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        cpu += int(fields[0])
        wait += int(fields[1])
    return cpu, wait


def one(gw: run.GatewayProcess, rate: int, duration: float) -> dict:
    cpu0, wait0 = schedstat_ns(gw.pid)
    r = run.measure(gw, f"b {rate:,}/s", conns=64, duration=duration, rate=rate,
                    size="small", window=64)  # fmt: skip
    cpu1, wait1 = schedstat_ns(gw.pid)
    load_s = r["wall_s"]
    r["runq_ms_per_s"] = (wait1 - wait0) / 1e6 / load_s
    r["oncpu_ms_per_s"] = (cpu1 - cpu0) / 1e6 / load_s
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--checkout", type=Path, default=run.REPO)
    p.add_argument("--rates", type=lambda s: [int(v) for v in s.split(",")], default=RATES)
    p.add_argument("--duration", type=float, default=DURATION_S)
    p.add_argument("--wait-quiet", type=float, default=ab.QUIET_WAIT_S, metavar="S")
    args = p.parse_args(argv)
    run.QUIET_WAIT_S = args.wait_quiet
    checkout = args.checkout.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gateway-latency-") as tmp:
        for fsync in ("batch", "off"):
            gw = run.GatewayProcess(Path(tmp) / f"fsync-{fsync}", run.free_port(),
                                    extra_config=run.INDEX_OFF, checkout=checkout,
                                    python=ab.interpreter(checkout), fsync=fsync)  # fmt: skip
            gw.start()
            try:
                path = gw.status().get("ingest_path", "python")
                for rate in args.rates:
                    rows.append((fsync, path, one(gw, rate, args.duration)))
            finally:
                gw.stop()
    info = run.machine()
    print()
    print(f"Machine: {info['cpu']}, {info['cores']} cores; gateway {ab.revision(checkout)}; "
          f"{args.duration:g} s per rate")  # fmt: skip
    print("| fsync | path | rate | events/s | ack p50 ms | ack p99 ms | max | syncs/s "
          "| events/sync | commit write+sync p50 ms | p99 | gateway CPU | run-queue wait ms/s "
          "| other load |")  # fmt: skip
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    f = run._f
    for fsync, path, r in rows:
        gw, lat = r["gw"], r["latency_ms"]
        print(
            f"| {fsync} | {path} | {r['rate_target']:,.0f} | {r['events_per_s']:,.0f} "
            f"| {lat['p50']} | {lat['p99']} | {lat['max']} | {f(gw['syncs_per_s'])} "
            f"| {f(gw['events_per_sync'], '{:.1f}')} | {gw['sync_ms']['p50']} "
            f"| {gw['sync_ms']['p99']} | {gw['cpu_pct']}% | {r['runq_ms_per_s']:.0f} "
            f"| {r['other_cores']:.2f} cores |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

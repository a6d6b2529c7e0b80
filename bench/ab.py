"""`python -m bench.ab BEFORE AFTER`: two checkouts of the gateway, interleaved runs.

For a change that must not cost throughput or latency: each round starts a
fresh gateway from each checkout in turn (B, A, B, A, ...), measures scenario
(a) (64 acknowledged connections, small events, as fast as acks come back)
and scenario (b) (the same clients at a fixed rate, one event per write: ack
latency), and reports the median and the spread (min..max) of each.

`--full` adds, on the same gateway in each round: scenario (b) again at half of
that checkout's own (a) in that round (the latency target's condition), audit
events (~650 B, nested) and large events (8 KiB) as fast as acks come back, and
for every scenario the gateway's CPU time per acknowledged event (µs, all its
threads, from /proc over the load window) and the other processes' load.

Each gateway runs in its checkout's directory (it imports the gateway from
there) with that checkout's own interpreter, `CHECKOUT/.venv/bin/python`, when
it has one (a native extension is built into each venv's install), otherwise
with this interpreter. The load generator always runs from this tree.
`--json PATH` also writes every round's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import run

# Scenario (b) at a fixed rate for both checkouts, so their latencies compare:
# about half of what this machine sustains in (a) on the pure Python path.
DEFAULT_RATE = 20_000

# Before each scenario, wait up to this long for other processes to go quiet
# (--wait-quiet); shorter than bench.run's 15 s so that rounds fit on a shared
# machine. The load that remains is reported per scenario.
QUIET_WAIT_S = 5.0

# --full: the scenarios beyond (a) and (b), as (key, label, loadgen options).
SIZE_SCENARIOS = (
    ("audit", "audit events/s", {"size": "audit", "window": 64}),
    ("large", "8 KiB events/s", {"size": "large", "window": 64}),
)


def interpreter(checkout: Path) -> str:
    venv = checkout / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def revision(checkout: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout,
                         capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=checkout, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def cells(r: dict[str, Any]) -> dict[str, Any]:
    """The figures ab keeps of one bench.run.measure result."""
    gw = r["gw"]
    return {
        "eps": r["events_per_s"],
        "p50": r["latency_ms"]["p50"],
        "p99": r["latency_ms"]["p99"],
        "us": gw["us_per_event"],
        "cpu_pct": gw["cpu_pct"],
        "syncs_per_s": gw["syncs_per_s"],
        "events_per_sync": gw["events_per_sync"],
        "sync_ms": gw["sync_ms"],
        "other": r["other_cores"],
        "errors": r["errors"],
        "event_bytes": r["event_bytes"],
        "rate": r.get("rate_target"),
    }


def one(checkout: Path, root: Path, label: str, duration: float, rate: int, full: bool) -> dict:
    gw = run.GatewayProcess(root / label, run.free_port(), extra_config=run.INDEX_OFF,
                            checkout=checkout, python=interpreter(checkout))  # fmt: skip
    gw.start()
    out: dict[str, Any] = {}
    try:
        out["ingest_path"] = gw.status().get("ingest_path", "python")
        small = {"size": "small", "window": 64}
        out["a"] = cells(run.measure(gw, "a", conns=64, duration=duration, **small))
        out["b"] = cells(run.measure(gw, "b", conns=64, duration=duration, rate=rate, **small))
        if full:
            half = round(out["a"]["eps"] / 2)
            out["b_half"] = cells(
                run.measure(gw, "b half", conns=64, duration=duration, rate=half, **small)
            )
            for key, _label, options in SIZE_SCENARIOS:
                out[key] = cells(run.measure(gw, key, conns=64, duration=duration, **options))
    finally:
        out["exit_code"] = gw.stop()
    out["log"] = dict(gw.log_summary())
    return out


def summary(values: list[float], fmt: str = "{:,.1f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{fmt.format(med)} ({fmt.format(lo)}..{fmt.format(hi)})"


def report(results: dict[str, list[dict]], args: argparse.Namespace, revs: dict) -> list[str]:
    info = run.machine()
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"{args.rounds} interleaved rounds of {args.duration:g} s per scenario; "
        + "; ".join(
            f"{name} {revs[name]} ({', '.join(sorted({r['ingest_path'] for r in results[name]}))}"
            " path)"
            for name in ("before", "after")
        ),
        "",
        "| checkout | (a) acked events/s, median (min..max) | (b) ack p99 ms at "
        f"{args.rate:,}/s, median (min..max) |",
        "|---|--:|--:|",
    ]
    for name in ("before", "after"):
        rs = results[name]
        lines.append(
            f"| {name} | {summary([r['a']['eps'] for r in rs], '{:,.0f}')} "
            f"| {summary([r['b']['p99'] for r in rs])} |"
        )
    if not args.full:
        return lines
    lines += [
        "",
        "| checkout | scenario | events/s | ack p50 ms | ack p99 ms | gateway µs CPU/event "
        "| gateway CPU | syncs/s | events/sync | other load (cores) | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    scenarios = [("a", "(a) small, max"), ("b", f"(b) small, {args.rate:,}/s"),
                 ("b_half", "(b) small, half of own (a)")]  # fmt: skip
    scenarios += [(key, f"{key}, max") for key, _label, _opts in SIZE_SCENARIOS]
    for key, label in scenarios:
        for name in ("before", "after"):
            rs = [r[key] for r in results[name]]
            lines.append(
                f"| {name} | {label} | {summary([r['eps'] for r in rs], '{:,.0f}')} "
                f"| {summary([r['p50'] for r in rs])} | {summary([r['p99'] for r in rs])} "
                f"| {summary([r['us'] for r in rs])} "
                f"| {summary([r['cpu_pct'] for r in rs], '{:.0f}%')} "
                f"| {summary([r['syncs_per_s'] for r in rs], '{:,.0f}')} "
                f"| {summary([r['events_per_sync'] for r in rs])} "
                f"| {summary([r['other'] for r in rs], '{:.2f}')} "
                f"| {sum(r['errors'] for r in rs)} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    p.add_argument("--rate", type=int, default=DEFAULT_RATE, help="scenario (b) events/s")
    p.add_argument("--full", action="store_true",
                   help="also (b) at half of (a), audit, 8 KiB events, µs CPU/event")  # fmt: skip
    p.add_argument("--wait-quiet", type=float, default=QUIET_WAIT_S, metavar="S",
                   help="before each scenario wait up to S s for other processes to go quiet "
                        "(0: never)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write every round's figures here")
    args = p.parse_args(argv)
    run.QUIET_WAIT_S = args.wait_quiet
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    revs = {name: revision(path) for name, path in checkouts.items()}
    results: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="gateway-ab-") as tmp:
        root = Path(tmp)
        for n in range(args.rounds):
            for name in ("before", "after"):
                r = one(checkouts[name], root, f"{name}-{n}", args.duration, args.rate, args.full)
                results[name].append(r)
                print(f"round {n + 1} {name} ({r['ingest_path']}): {r['a']['eps']:,.0f} "
                      f"events/s, b p99 {r['b']['p99']} ms", flush=True)  # fmt: skip
                if args.json:
                    data = {"revs": revs, "args": vars(args), "results": results}
                    args.json.write_text(json.dumps(data, indent=1, default=str))
    print()
    print("\n".join(report(results, args, revs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

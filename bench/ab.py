"""`python -m bench.ab BEFORE AFTER`: two checkouts of the gateway, interleaved runs.

For a change that must not cost throughput or latency: each round starts a
fresh gateway from each checkout in turn (B, A, B, A, ...), measures scenario
(a) (64 acknowledged connections, small events, as fast as acks come back)
and scenario (b) (the same clients at a fixed rate, one event per write: ack
latency), and reports the median and the spread (min..max) of each. Both
checkouts run with this interpreter and its installed dependencies; the
gateway package comes from each checkout's directory (its working directory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import run

# Scenario (b) at a fixed rate for both checkouts, so their latencies compare:
# about half of what this machine sustains in (a).
DEFAULT_RATE = 20_000


def one(checkout: Path, root: Path, label: str, duration: float, rate: int) -> dict:
    run.REPO = checkout  # the gateway process starts in (and imports from) this directory
    gw = run.GatewayProcess(root / label, run.free_port(), extra_config=run.INDEX_OFF)
    gw.start()
    try:
        small = {"size": "small", "window": 64}
        a = run.measure(gw, "a", conns=64, duration=duration, **small)
        b = run.measure(gw, "b", conns=64, duration=duration, rate=rate, **small)
    finally:
        gw.stop()
    return {"eps": a["events_per_s"], "p99": b["latency_ms"]["p99"]}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}..{max(values):,.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    p.add_argument("--rate", type=int, default=DEFAULT_RATE, help="scenario (b) events/s")
    args = p.parse_args(argv)
    results: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="gateway-ab-") as tmp:
        root = Path(tmp)
        for n in range(args.rounds):
            for name in ("before", "after"):
                checkout = getattr(args, name).resolve()
                r = one(checkout, root, f"{name}-{n}", args.duration, args.rate)
                results[name].append(r)
                print(f"round {n + 1} {name}: {r['eps']:,.0f} events/s, b p99 {r['p99']} ms",
                      flush=True)  # fmt: skip
    info = run.machine()
    print(f"\nMachine: {info['cpu']}, {info['cores']} cores; {args.rounds} interleaved rounds")
    print("| checkout | (a) acked events/s, median (min..max) | (b) ack p99 ms at "
          f"{args.rate:,}/s, median (min..max) |")  # fmt: skip
    print("|---|--:|--:|")
    for name in ("before", "after"):
        eps = [r["eps"] for r in results[name]]
        p99 = [r["p99"] for r in results[name]]
        print(f"| {name} | {summary(eps)} | {summary(p99)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ledger size curves: verify speed, start-up recovery and gateway start against ledger size.

`python -m bench.curves` on its own, or `python -m bench.run --curves` as part of
the main run. Start-up must not grow with the ledger (recovery reads only the
newest segment), and verify must keep its pace however long the chain is; this
measures both at several sizes (64 MiB, 512 MiB and 2 GiB by default).

One ledger is built with the real writer (LedgerWriter.append, take_batch and
write_batch: the gateway's frames, chain and segment rotation) from bench.loadgen's
audit events, encoded as the gateway encodes events (entries.encode_event), and
grown through the sizes. Each size stops before the entry that would come
within 16 KiB of it (room for the gateway's own entries when it starts there), so
with multiples of the 64 MiB segment size the newest segment is full: the most
start-up recovery ever reads. At each size, each in a fresh process:

  recovery  LedgerWriter(...).open(), timed inside the process (interpreter
            start-up left out)
  verify    verify_ledger, timed inside the process: entries/s, and MB/s
  start     `python -m gateway run` with the query index off (it would start
            indexing the whole ledger): seconds until its port accepts a connection
            (it is bound before recovery runs) and until it answers on its control
            socket (opened once recovery is done: ready to serve); both include the
            interpreter's start-up and imports

each warm (the ledger was just written and sits in the page cache) and, where the
runner may write /proc/sys/vm/drop_caches (root), cold: `sync; echo 3 >
drop_caches` first, which empties the page cache for every process on the machine.
The gateway starts come last at each size because each start and stop appends two
entries. The ledger is removed afterwards.

The entries are 256 distinct payloads used round robin: encoding each entry afresh
would double the build time and change nothing measured here (neither recovery nor
verify decodes payloads). Batches are written without fdatasync; the whole ledger
is synced once per size (os.sync), which a cold read needs anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import build_events
from bench.run import (
    INDEX_OFF,
    REPO,
    TARGET_HEADER,
    GatewayProcess,
    append_results,
    free_port,
    machine,
    target_row,
    wait_quiet,
)
from gateway.config import LedgerConfig
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import MAX_BATCH_BYTES, LedgerWriter, list_segments, write_batch
from gateway.ledger.verify import verify_ledger

MiB = 1024 * 1024

# Ledger sizes in MiB: one segment, eight, and 2 GiB (the target's size), a year or
# more of a branch office's events.
SIZES_MIB = (64, 512, 2048)

# The gateway's segment size: what recovery reads at most.
SEGMENT_BYTES = LedgerConfig().segment_bytes

# Each size is built this far short of it: room for the `started` and `stopped`
# entries (a few hundred bytes each) of the two gateway starts at that size, so
# that they stay in the newest segment and every start recovers a full one.
START_ROOM_BYTES = 16 * 1024

# Target: start-up recovery of a 2 GiB ledger in under a second.
RECOVERY_TARGET_S = 1.0
RECOVERY_TARGET_MIB = 2048

# A fresh process opening the writer reads at most one 64 MiB segment: a minute
# bounds a cold read from a very slow disk.
RECOVER_TIMEOUT_S = 60.0
# Verify reads everything: a minute plus 20 MB/s (well below any disk's cold read).
VERIFY_TIMEOUT_BASE_S = 60.0
VERIFY_TIMEOUT_BYTES_PER_S = 20e6

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_sizes(text: str) -> tuple[int, ...]:
    """Sizes in MiB from a list such as 64,512,2048; they must grow, as the ledger does."""
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or any(s <= 0 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"sizes must be increasing positive MiB counts: {text!r}")
    return sizes


def payloads() -> list[bytes]:
    """bench.loadgen's audit events as the gateway stores them (one connection's source)."""
    source = entries.encode_source("127.0.0.1", 40000, "bench-curves", 1)
    t0 = time.time_ns() // 1000
    events = [json.loads(line) for line in build_events("audit")]
    return [entries.encode_event(t0 + i, source, event, []) for i, event in enumerate(events)]


def growth(segment: int, total: int, frame: int) -> tuple[int, int]:
    """(segment size, ledger size) after appending a frame of `frame` bytes.

    LedgerWriter.append's rule: a frame that does not fit the segment starts a new
    one (unless the segment holds no frame yet), whose 64-byte header counts too."""
    if segment + frame > SEGMENT_BYTES and segment > fmt.SEGMENT_HEADER_BYTES:
        return fmt.SEGMENT_HEADER_BYTES + frame, total + fmt.SEGMENT_HEADER_BYTES + frame
    return segment + frame, total + frame


def ledger_bytes(ledger_dir: Path) -> int:
    return sum(p.stat().st_size for _, p in list_segments(ledger_dir))


def grow(ledger_dir: Path, target: int, ring: list[bytes]) -> dict[str, Any]:
    """Append entries until the next one would take the ledger past `target` bytes."""
    t = time.monotonic()
    writer = LedgerWriter(ledger_dir, segment_bytes=SEGMENT_BYTES).open()
    segment = list_segments(ledger_dir)[-1][1].stat().st_size
    total = ledger_bytes(ledger_dir)
    fds: dict[Path, int] = {}
    added = 0
    try:
        while True:
            payload = ring[writer.next_seq % len(ring)]
            after = growth(segment, total, len(payload) + fmt.FRAME_OVERHEAD)
            if after[1] > target:
                break
            writer.append(payload)
            segment, total = after
            added += 1
            # Batches as large as the gateway ever stages (it stops reading clients there).
            if writer.staged_bytes >= MAX_BATCH_BYTES:
                write_batch(writer.take_batch(), fds, False)
        batch = writer.take_batch()
        if batch is not None:
            write_batch(batch, fds, False)
    finally:
        for fd in fds.values():
            os.close(fd)
    os.sync()
    actual = ledger_bytes(ledger_dir)
    if actual != total:
        raise RuntimeError(f"the ledger is {actual} bytes where {total} were expected")
    return {"added": added, "seconds": time.monotonic() - t}


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False if not allowed."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def in_child(kind: str, ledger_dir: Path) -> dict[str, Any]:
    """Run `kind` (recover or verify) in a fresh process; its JSON result."""
    timeout = RECOVER_TIMEOUT_S
    if kind == "verify":
        timeout = VERIFY_TIMEOUT_BASE_S + ledger_bytes(ledger_dir) / VERIFY_TIMEOUT_BYTES_PER_S
    out = subprocess.run(
        [sys.executable, "-m", "bench.curves", "--child", kind, str(ledger_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(kind: str, ledger_dir: Path) -> dict[str, Any]:
    """The timed part, inside the fresh process."""
    t = time.perf_counter()
    if kind == "recover":
        writer = LedgerWriter(ledger_dir, segment_bytes=SEGMENT_BYTES).open()
        seconds = time.perf_counter() - t
        # A built ledger ends cleanly: recovery must find nothing to cut.
        return {"seconds": seconds, "head_seq": writer.next_seq - 1, "cut": bool(writer.recovery)}
    res = verify_ledger(ledger_dir)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "ok": res.ok,
        "entries": res.entries,
        "bytes": res.bytes_read,
        "entries_per_s": res.entries / seconds,
        "mb_per_s": res.bytes_read / seconds / 1e6,
        "reason": res.reason,
    }


def gateway_start(state_dir: Path) -> dict[str, Any]:
    """Start the gateway on the ledger: seconds until its port accepts, and until it serves."""
    gw = GatewayProcess(state_dir, free_port(), extra_config=INDEX_OFF)
    try:
        gw.start()
    finally:
        code = gw.stop()
    logged = gw.log_summary()
    if code != 0:
        raise RuntimeError(f"the gateway exited with {code}: {dict(logged)}")
    return {"port_s": gw.port_s, "ready_s": gw.ready_s, "log": logged}


def measure_size(state_dir: Path, cold: bool, quiet_s: float) -> dict[str, Any]:
    """Warm, then (if allowed) cold: recovery, verify; the gateway's start last."""
    ledger_dir = state_dir / "ledger"
    out: dict[str, Any] = {
        "bytes": ledger_bytes(ledger_dir),
        "segments": len(list_segments(ledger_dir)),
    }

    def timed(kind: str, cache: str) -> None:
        if quiet_s > 0:
            wait_quiet(quiet_s)
        if cache == "cold" and not drop_caches():
            out[kind, cache] = None
            return
        if kind == "start":
            out[kind, cache] = gateway_start(state_dir)
        else:
            out[kind, cache] = in_child(kind, ledger_dir)
            if out[kind, cache].get("cut"):
                raise RuntimeError("recovery cut the tail of a ledger that was closed cleanly")
        print(f"    {kind} {cache}: {summary(kind, out[kind, cache])}", flush=True)

    for kind, cache in [("recover", "warm"), ("verify", "warm")] + (
        [("recover", "cold"), ("verify", "cold")] if cold else []
    ):
        timed(kind, cache)
    timed("start", "warm")
    if cold:
        timed("start", "cold")
    out["entries"] = out["verify", "warm"]["entries"]
    # After the starts: a lower bound of what every measurement at this size recovered.
    out["newest_bytes"] = list_segments(ledger_dir)[-1][1].stat().st_size
    if not out["verify", "warm"]["ok"]:
        raise RuntimeError(f"the built ledger does not verify: {out['verify', 'warm']['reason']}")
    return out


def summary(kind: str, r: dict[str, Any]) -> str:
    if kind == "recover":
        return f"{r['seconds']:.3f} s"
    if kind == "verify":
        return (
            f"{r['seconds']:.2f} s, {r['entries_per_s']:,.0f} entries/s, "
            f"{r['mb_per_s']:.0f} MB/s, ok={r['ok']}"
        )
    return f"port {r['port_s']:.3f} s, ready {r['ready_s']:.3f} s"


def run_curves(
    root: Path, sizes_mib: tuple[int, ...], cold: bool, quiet_s: float
) -> dict[str, Any]:
    """Grow one ledger through the sizes, measuring at each; the ledger is removed after."""
    state = root / "state"
    ring = payloads()
    res: dict[str, Any] = {
        "sizes": [],
        "entry_bytes": sum(len(p) for p in ring) / len(ring) + fmt.FRAME_OVERHEAD,
    }
    t = time.monotonic()
    try:
        for size in sizes_mib:
            print(f"  curves: growing the ledger to {size} MiB", flush=True)
            built = grow(state / "ledger", size * MiB - START_ROOM_BYTES, ring)
            print(
                f"    built {built['added']:,} entries in {built['seconds']:.1f} s "
                f"({built['added'] / built['seconds']:,.0f} entries/s)",
                flush=True,
            )
            point = measure_size(state, cold, quiet_s)
            point.update(size_mib=size, build=built)
            res["sizes"].append(point)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    res["seconds"] = time.monotonic() - t
    # Whether cold figures exist (not root: drop_caches refused).
    res["cold"] = cold and all(p.get(("recover", "cold")) is not None for p in res["sizes"])
    return res


def _s(r: dict[str, Any] | None, key: str, fmt_: str = "{:.3f}") -> str:
    return "-" if r is None else fmt_.format(r[key])


def target_line(res: dict[str, Any]) -> str:
    """Recovery of a 2 GiB ledger: cold if measured, else warm; not measured if smaller."""
    cache = "cold" if res["cold"] else "warm"
    big = [p for p in res["sizes"] if p["size_mib"] >= RECOVERY_TARGET_MIB]
    value = big[-1]["recover", cache]["seconds"] if big else None
    measured = (
        f"{value:.3f} s ({cache} cache, {big[-1]['size_mib']} MiB)"
        if value is not None
        else f"largest ledger measured: {res['sizes'][-1]['size_mib']} MiB"
    )
    label = "start-up recovery s of a 2 GiB ledger (LedgerWriter.open in a fresh process)"
    return target_row(label, "<", RECOVERY_TARGET_S, value, measured)


def report_lines(res: dict[str, Any]) -> list[str]:
    rows = [
        "| ledger | segments | entries | newest segment MiB | recovery warm s | cold s "
        "| verify warm entries/s | MB/s | verify cold entries/s | MB/s | start: port warm s "
        "| ready warm s | port cold s | ready cold s | build entries/s |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in res["sizes"]:
        vw, vc = p["verify", "warm"], p.get(("verify", "cold"))
        sw, sc = p["start", "warm"], p.get(("start", "cold"))
        rows.append(
            f"| {p['size_mib']:,} MiB | {p['segments']} | {p['entries']:,} "
            f"| {p['newest_bytes'] / MiB:.1f} | {_s(p['recover', 'warm'], 'seconds')} "
            f"| {_s(p.get(('recover', 'cold')), 'seconds')} "
            f"| {_s(vw, 'entries_per_s', '{:,.0f}')} | {_s(vw, 'mb_per_s', '{:.0f}')} "
            f"| {_s(vc, 'entries_per_s', '{:,.0f}')} | {_s(vc, 'mb_per_s', '{:.0f}')} "
            f"| {_s(sw, 'port_s')} | {_s(sw, 'ready_s')} | {_s(sc, 'port_s')} "
            f"| {_s(sc, 'ready_s')} | {p['build']['added'] / p['build']['seconds']:,.0f} |"
        )
    cache = "cold" if res["cold"] else "warm"
    first, last = res["sizes"][0], res["sizes"][-1]
    r0, r1 = first["recover", cache]["seconds"], last["recover", cache]["seconds"]
    flat = (
        [
            f"- recovery ({cache}) {r0:.3f} s at {first['size_mib']:,} MiB and {r1:.3f} s at "
            f"{last['size_mib']:,} MiB ({r1 / r0:.2f}x for "
            f"{last['bytes'] / first['bytes']:.0f}x the ledger): it reads only the newest "
            "segment."
        ]
        if last is not first
        else []
    )
    logged = sorted(
        {
            f"{n} x {m}"
            for p in res["sizes"]
            for c in ("warm", "cold")
            if p.get(("start", c))
            for m, n in p["start", c]["log"].items()
        }
    )
    return [
        f"Ledger size curves (bench.curves, {res['seconds']:.0f} s): one ledger of "
        f"bench.loadgen's audit events ({res['entry_bytes']:.0f} B per entry on disk) built "
        "with the real writer and grown through the sizes; each size ends with a full "
        "newest segment, the most recovery reads. Every figure is from a fresh process. "
        + (
            "Cold: after `sync; echo 3 > /proc/sys/vm/drop_caches`."
            if res["cold"]
            else "Cold figures not measured (the page cache could not be dropped)."
        ),
        "",
        *rows,
        "",
        *flat,
        "- start: port = until the gateway's port accepts a connection (it is bound before "
        "recovery); ready = until it answers a status request on its control socket "
        "(opened once recovery is done); both from the process's start, "
        "interpreter and imports included, query index off. Each size is built "
        f"{START_ROOM_BYTES // 1024} KiB short, room for the `started` and `stopped` entries "
        "of its gateway starts; the newest segment column is its size after them.",
        "- gateway logs above info: " + (", ".join(logged) or "none") + ".",
    ]


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", default=",".join(map(str, SIZES_MIB)), metavar="MIB,...",
                   help="ledger sizes in MiB, increasing (default %(default)s)")  # fmt: skip
    p.add_argument("--no-cold", action="store_true", help="no cold-cache runs (drop_caches)")
    p.add_argument("--out", type=Path, help="where to build the ledger (default: a temp dir)")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    p.add_argument("--wait-quiet", type=float, default=5.0, metavar="S",
                   help="before each measurement wait up to S s for quiet (0: never)")  # fmt: skip
    p.add_argument("--child", nargs=2, metavar=("KIND", "LEDGER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        p.error(str(exc))
    info = machine()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="gateway-curves-", dir=args.out))
    try:
        res = run_curves(root, sizes, not args.no_cold, args.wait_quiet)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    section = [
        f"## {info['date']}: {info['rev']}: ledger size curves",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; "
        f"Python {info['python']}; git {info['rev']}. Ledger on the local disk.",
        "",
        *TARGET_HEADER,
        target_line(res),
        "",
        *report_lines(res),
        "",
    ]
    print()
    print("\n".join(section))
    if not args.no_append:
        append_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

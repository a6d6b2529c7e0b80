"""event_id deduplication: memory per id, ingest with and without ids, and start-up
with a full window (from a snapshot after a clean stop, after kill -9, and rebuilt
from the ledger alone).

    .venv/bin/python -m bench.dedup [--ids 1000000] [--events 400000]

Real sockets: 8 client processes, one acknowledged connection each, pipelining
their own distinct lines (ids "<process>-<n>", never repeated across
processes). Prints JSON; the figures go into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import free_port, wait_for
from bench.run import GatewayProcess, machine

CLIENTS = 8  # one connection per client process (scenario "8 connections" of bench/run.py)
SEND_CHUNK = 256 * 1024  # bytes per sendall: many lines per syscall, as real pipelining clients do


def lines_for(client: int, n: int, with_ids: bool, salt: str) -> bytes:
    """`n` small events; with ids, each unique to (salt, client, index). Without, the
    same events padded to the same length, so both runs move the same bytes."""
    out = []
    for i in range(n):
        event_id = f"{salt}-{client}-{i:09d}"
        head = f'"event_id":"{event_id}",' if with_ids else " " * (len(event_id) + 14)
        out.append(
            f'{{{head}"event_type":"subscription_renewed","timestamp":"2026-12-01T10:00:00Z",'
            f'"subscription_id":"sub_{i:08d}","user_id":"usr_{client:07d}","status":"active"}}\n'
        )
    return "".join(out).encode()


def client(args: tuple[int, int, bytes, int]) -> tuple[float, float, int, int]:
    """(first send, last reply, acks, duplicates) of one connection sending `data`."""
    port, n, data, _client = args
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b'{"hello":{"app":"bench","ack":true}}\n')
    reader = sock.makefile("rb")
    reader.readline()
    t0 = time.monotonic()

    def write() -> None:
        view = memoryview(data)
        for start in range(0, len(view), SEND_CHUNK):
            sock.sendall(view[start : start + SEND_CHUNK])

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    acks = duplicates = 0
    for _ in range(n):
        reply = reader.readline()
        if reply.startswith(b'{"ok":true'):
            acks += 1
            duplicates += b'"duplicate"' in reply
    t1 = time.monotonic()
    writer.join()
    sock.close()
    return t0, t1, acks, duplicates


def load(port: int, per_client: int, with_ids: bool, salt: str) -> dict[str, Any]:
    jobs = [(port, per_client, lines_for(c, per_client, with_ids, salt), c) for c in range(CLIENTS)]
    with multiprocessing.get_context("fork").Pool(CLIENTS) as pool:
        results = pool.map(client, jobs)
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    acks = sum(r[2] for r in results)
    return {
        "events": CLIENTS * per_client,
        "acked": acks,
        "duplicates": sum(r[3] for r in results),
        "seconds": round(end - start, 3),
        "events_per_s": round(acks / (end - start)),
    }


def table_memory(ids: int) -> dict[str, Any]:
    """RSS growth of a process that fills an IdTable with `ids` random keys."""
    code = (
        "import random, sys\n"
        "from gateway.ingest.dedup import IdTable\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        f"n = {ids}\n"
        "t = IdTable(n)\n"
        "before = rss()\n"
        "r = random.Random(1)\n"
        "for i in range(n):\n"
        "    t.add(r.getrandbits(64), r.getrandbits(64), i + 1)\n"
        "print(rss() - before)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    grown = int(out.stdout)
    return {"ids": ids, "rss_bytes": grown, "bytes_per_id": round(grown / ids, 2)}


def ready(gw: GatewayProcess, timeout: float = 600) -> dict[str, Any]:
    """Seconds from the process's start to READY (its status answers) and to the id
    table answering (dedup state ready), and where the table came from."""
    t0 = time.monotonic() - gw.ready_s

    def loaded() -> dict | None:
        dedup = gw.status()["dedup"]
        return dedup if dedup["state"] == "ready" else None

    dedup = wait_for(loaded, timeout, "the id table to load", interval=0.02)
    return {
        "ready_s": round(gw.ready_s, 3),
        "ids_ready_s": round(time.monotonic() - t0, 3),
        "load_s": dedup["load_s"],
        "from": dedup["loaded_from"],
        "ids": dedup["ids"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__)
    p.add_argument("--ids", type=int, default=1_000_000, help="ids in the full window")
    p.add_argument("--events", type=int, default=400_000, help="events per throughput run")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of each kind")
    args = p.parse_args(argv)
    out: dict[str, Any] = {"machine": machine(), "memory": table_memory(args.ids)}
    root = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    per_client = args.events // CLIENTS

    # Throughput: without ids, with new ids, resends of those (duplicates), alternating.
    gw = GatewayProcess(root / "throughput", free_port())
    gw.start()
    runs: dict[str, list[dict]] = {"no_ids": [], "new_ids": [], "resends": []}
    for r in range(args.rounds):
        runs["no_ids"].append(load(gw.port, per_client, False, f"r{r}"))
        runs["new_ids"].append(load(gw.port, per_client, True, f"r{r}"))
        runs["resends"].append(load(gw.port, per_client, True, f"r{r}"))
    gw.stop()
    out["throughput"] = runs

    # A full window: fill, then restart three ways.
    gw = GatewayProcess(root / "window", free_port())
    gw.start()
    fill = load(gw.port, args.ids // CLIENTS, True, "fill")
    out["fill"] = fill
    assert gw.stop() == 0
    gw.start()
    out["after_clean_stop"] = ready(gw)
    more = 100_000 // CLIENTS
    load(gw.port, more, True, "more")  # beyond the snapshot
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait()
    gw.start()
    out["after_kill_9"] = ready(gw)
    assert gw.stop() == 0
    (gw.state_dir / "dedup.snapshot").unlink()
    gw.start()
    out["rebuilt_from_ledger"] = ready(gw)
    # The newest ids (the oldest of the fill went when the table filled up).
    probe = lines_for(3, more, True, "more").splitlines(keepends=True)[-1]
    out["probe_after_rebuild_is_duplicate"] = client((gw.port, 1, probe, 3))[3] == 1
    gw.stop()
    out["snapshot_bytes"] = (gw.state_dir / "dedup.snapshot").stat().st_size
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fleet benchmarks against a real Ceph RGW on loopback (tests/cephrgw.py).

`python -m bench.fleet [--rounds N] [--duration S] [--boxes N] [--replicate-rounds N]
[--memstore-gib G]`, appending to bench/RESULTS.md:

1. ingest with and without replication: the same gateway configuration
   (1 MiB segments, so that replication is busy all along), the same load
   (bench.loadgen, acknowledged, audit-sized events), rounds interleaved;
   acknowledged events/s, the gateway's CPU and its RSS at the end;
2. replication throughput: the ledger written by a replication-off round,
   then the gateway started with replication on; MB/s until every sealed
   segment is confirmed, and the gateway's CPU seconds over that time (the
   uploader's cost: the gateway does nothing else then);
3. `gateway fleet verify` across 10 boxes: entries verified per second.

The machine is shared: figures are as measured, with the load said.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.harness import free_port, gateway_command, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cephrgw import CephRGW  # noqa: E402

SEGMENT_BYTES = 1024 * 1024
# The store keeps everything a run puts (locked, in RAM: memstore). With the
# native ingest path an 8 s round writes ~0.3-0.6 GB, and every replication-on
# round, replicated ledger and verify box stays in the store: 6 GiB holds
# 5 rounds, one replicated ledger and 3 boxes (the 2 GiB the tests use does not).
MEMSTORE_GIB = 6.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A start takes well under a second; replication of ~100 MB on loopback well
# under a minute; the bounds only catch a hang.
START_TIMEOUT_S = 30.0
REPLICATE_TIMEOUT_S = 600.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """The gateway's CPU seconds by thread: the loop (the main thread), the uploader
    (the only thread at nice 10, UPLOADER_NICE) and every other thread together."""
    out = {"loop": 0.0, "uploader": 0.0, "other threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended while listed
        used = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(task.name) == pid:
            out["loop"] += used
        elif int(fields[16]) == 10:
            out["uploader"] += used
        else:
            out["other threads"] += used
    return out


def run_delay_s(pid: int, tid: int) -> float:
    """Seconds thread `tid` has spent runnable but waiting for a CPU (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (FileNotFoundError, IndexError):
        return 0.0


def processes_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of every process on the machine."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                text = (d / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            comm = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[int(d.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def machine_busy_s() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def cpu_snapshot(gateway_pid: int, store: CephRGW) -> dict[str, float]:
    """CPU seconds so far: the gateway's threads, each Ceph daemon, the load generator
    (children of this process, counted once it was waited for) and the whole machine."""
    snap = {f"gateway {k}": v for k, v in thread_cpu(gateway_pid).items()}
    for name, proc in store.procs.items():
        try:
            snap[name] = cpu_s(proc.pid)
        except FileNotFoundError:
            snap[name] = 0.0
    children = os.times()
    snap["load generator"] = children.children_user + children.children_system
    snap["machine"] = machine_busy_s()
    return snap


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Box:
    def __init__(self, root: Path, name: str, fleet: dict | None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = {
            "state_dir": str(root / "state"),
            "name": name,
            "ingest": {"listen": [f"127.0.0.1:{self.port}"]},
            "ledger": {"segment_bytes": SEGMENT_BYTES},
            "index": {"enabled": False},
            "clock": {"check_sync": False},
            "log": {"level": "warning"},
        }
        if fleet:
            self.config["fleet"] = fleet
        self.path = root / "gateway.yaml"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))
        self.proc = subprocess.Popen(
            gateway_command("run", "--config", str(self.path)),
            cwd=ROOT,
            stdout=open(self.root / "out.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_for(self.status, START_TIMEOUT_S, "the gateway to start")

    def status(self) -> dict | None:
        done = subprocess.run(
            gateway_command("status", "--json", "--config", str(self.path)),
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        return json.loads(done.stdout) if done.returncode == 0 else None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def load(port: int, duration: float, pid: int, store: CephRGW | None = None) -> dict:
    """One load round; with `store`, where the cores went meanwhile (CPU s per wall s)."""
    before, t0 = (cpu_snapshot(pid, store), time.monotonic()) if store else ({}, 0.0)
    procs0, wait0 = (processes_cpu(), run_delay_s(pid, pid)) if store else ({}, 0.0)
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--conns", "16",
           "--duration", str(duration), "--size", "audit", "--mode", "ack",
           "--watch-pid", str(pid)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    if store is not None:
        after, wall = cpu_snapshot(pid, store), time.monotonic() - t0
        cores = {k: (after[k] - before.get(k, 0.0)) / wall for k in after}
        # Its pool's workers are ended, not waited for: their own count is the one.
        cores["load generator"] = max(
            cores["load generator"], result.get("loadgen_cpu_s", 0.0) / wall
        )
        cores["other processes"] = cores.pop("machine") - sum(cores.values())
        result["cores"] = cores
        result["loop_waiting"] = (run_delay_s(pid, pid) - wait0) / wall
        # The other processes by name (those alive at both ends; ours excluded).
        ours = {pid, os.getpid(), *(p.pid for p in store.procs.values())}
        by_name: dict[str, float] = {}
        for other, (comm, used) in processes_cpu().items():
            if other in procs0 and other not in ours:
                by_name[comm] = by_name.get(comm, 0.0) + (used - procs0[other][1]) / wall
        result["others"] = sorted(by_name.items(), key=lambda kv: -kv[1])[:4]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--boxes", type=int, default=10)
    p.add_argument(
        "--replicate-rounds",
        type=int,
        default=1,
        help="how many of the replication-off rounds' ledgers to replicate afterwards",
    )
    p.add_argument(
        "--memstore-gib",
        type=float,
        default=MEMSTORE_GIB,
        help="the test store's capacity (RAM): everything the run puts stays, locked",
    )
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    store = CephRGW(work / "ceph", memstore_bytes=int(args.memstore_gib * 1024**3))
    store.start()
    try:
        return run(args, work, store)
    finally:
        store.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, store: CephRGW) -> int:
    from gateway.fleet.s3 import Credentials, S3Client

    creds = work / "s3.yaml"
    creds.write_text(
        yaml.safe_dump({"access_key_id": store.access_key, "secret_access_key": store.secret_key})
    )
    client = S3Client(store.endpoint, "bench", Credentials(store.access_key, store.secret_key))
    client.create_bucket()
    client.close()
    fleet = {"endpoint": store.endpoint, "bucket": "bench", "credentials_file": str(creds),
             "retain_days": 1}  # fmt: skip
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    replication: list[dict] = []
    for r in range(args.rounds):
        for mode in ("off", "on"):
            box = Box(work / f"{mode}-{r}", f"ingest-{mode}-{r}", fleet if mode == "on" else None)
            box.start()
            assert box.proc is not None
            result = load(box.port, args.duration, box.proc.pid, store)
            result["rss_kib"] = rss_kib(box.proc.pid)
            result["ingest_path"] = (box.status() or {}).get("ingest_path", "?")
            rows[mode].append(result)
            box.stop()
            if mode == "off" and r < args.replicate_rounds:
                replication.append(replicate(box, fleet))
    print(json.dumps({"rows": rows, "replication": replication}), file=sys.stderr)  # raw
    verify = fleet_verify(args, work, fleet, creds, store)
    report(args, rows, replication, verify, store)
    return 0


def replicate(box: Box, fleet: dict) -> dict:
    """Start a written ledger with replication on; time until every sealed segment is confirmed."""
    ledger = Path(box.config["state_dir"]) / "ledger"
    sealed = sorted(ledger.glob("*.seg"))[:-1]
    nbytes = sum(p.stat().st_size for p in sealed)
    box.config["fleet"] = fleet
    box.config["name"] = box.config["name"] + "-r"
    box.start()
    assert box.proc is not None
    t0, c0 = time.monotonic(), cpu_s(box.proc.pid)

    def done() -> bool:
        st = box.status()
        return bool(st) and st["replication"]["confirmed"] >= len(sealed)

    wait_for(done, REPLICATE_TIMEOUT_S, "replication", interval=0.1)
    elapsed, cpu = time.monotonic() - t0, cpu_s(box.proc.pid) - c0
    rss = rss_kib(box.proc.pid)
    box.stop()
    return {"segments": len(sealed), "bytes": nbytes, "seconds": elapsed, "cpu_s": cpu,
            "rss_kib": rss}  # fmt: skip


def fleet_verify(args, work: Path, fleet: dict, creds: Path, store: CephRGW) -> dict:
    """`gateway fleet verify` over every box in the bucket (the ingest rounds' and 10 more)."""
    for i in range(args.boxes):
        box = Box(work / f"box-{i}", f"box-{i:02d}", fleet)
        box.start()
        assert box.proc is not None
        load(box.port, 2.0, box.proc.pid)
        ledger = Path(box.config["state_dir"]) / "ledger"
        sealed = len(sorted(ledger.glob("*.seg"))) - 1

        def caught_up(box=box, sealed=sealed) -> bool:
            st = box.status()
            return bool(st) and st["replication"]["confirmed"] >= sealed

        wait_for(caught_up, REPLICATE_TIMEOUT_S, "replication", interval=0.1)
        box.stop()
    t0 = time.monotonic()
    done = subprocess.run(
        gateway_command("fleet", "verify", "--endpoint", store.endpoint, "--bucket", "bench",
                        "--credentials-file", str(creds), "--json"),
        cwd=ROOT, capture_output=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    out = json.loads(done.stdout)
    entries = sum(b["head_seq"] for b in out["boxes"])
    return {"ok": out["ok"], "boxes": len(out["boxes"]), "entries": entries, "seconds": elapsed,
            "segments": sum(b["segments"] for b in out["boxes"])}  # fmt: skip


def report(args, rows, replication, verify, store: CephRGW) -> None:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[mode])

    def rounds(mode: str) -> str:
        return ", ".join(f"{r['events_per_s']:,.0f}" for r in rows[mode])

    def core(mode: str, key: str) -> float:
        return statistics.median(r["cores"].get(key, 0.0) for r in rows[mode])

    def paths(mode: str) -> str:
        return ", ".join(sorted({r["ingest_path"] for r in rows[mode]}))

    off, on = med("off", "events_per_s"), med("on", "events_per_s")
    mb_s = [r["bytes"] / r["seconds"] / 1e6 for r in replication]
    cpu_per_mb = [r["cpu_s"] / (r["bytes"] / 1e6) for r in replication]
    runs = ", ".join(
        f"{r['segments']} segments {r['bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s"
        for r in replication
    )
    rep_rss = statistics.median(r["rss_kib"] for r in replication) / 1024
    per_s = verify["entries"] / verify["seconds"]
    lines = [
        "",
        f"## {time.strftime('%Y-%m-%d')}: fleet replication "
        f"(`python -m bench.fleet --rounds {args.rounds} --duration {args.duration:g} "
        f"--boxes {args.boxes} --replicate-rounds {args.replicate_rounds}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work (load "
        f"average {os.getloadavg()[0]:.1f} at the end), Linux, Python "
        f"{platform.python_version()}; the store is a one-node Ceph {store_version()} RGW "
        "(memstore) on loopback, on the same cores. Gateway: 1 MiB segments, `fsync: batch`, "
        "index off; load: bench.loadgen, 16 acknowledged connections, audit-sized events, "
        f"{args.duration:g} s per round, rounds interleaved.",
        "",
        "| | replication off | replication on | ratio |",
        "|---|--:|--:|--:|",
        f"| acked events/s, median of {args.rounds} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |",
        f"| rounds (events/s) | {rounds('off')} | {rounds('on')} | |",
        f"| gateway RSS at the end, median | {med('off', 'rss_kib') / 1024:.1f} MB | "
        f"{med('on', 'rss_kib') / 1024:.1f} MB | |",
        "",
        "Replication of a written ledger (sealed 1 MiB segments, the gateway started with "
        f"replication on, timed until the store confirmed every one): {runs}; median "
        f"{statistics.median(mb_s):.1f} MB/s; the gateway's CPU over that time (the uploader, "
        f"its only work then) {statistics.median(cpu_per_mb):.3f} CPU s per MB; RSS "
        f"{rep_rss:.1f} MB. Each object: one PUT with Content-MD5 and a COMPLIANCE lock, then "
        "its retention read back.",
        "",
        f"`gateway fleet verify` over {verify['boxes']} boxes ({verify['segments']} segments, "
        f"{verify['entries']:,} entries): {verify['seconds']:.1f} s, {per_s:,.0f} entries/s, "
        f"ok={verify['ok']} (download, chain verification, metadata, checkpoint signatures; "
        "one process).",
        "",
    ]
    lines += [
        "Where the cores went during the ingest rounds (CPU seconds per second of the round, "
        "median over the rounds; /proc per-thread times for the gateway, the loop being its "
        "main thread and the uploader its one nice-10 thread; `other processes` is the "
        f"machine's busy time less all of these). Ingest path: off {paths('off')}, on "
        f"{paths('on')}.",
        "",
        "| | replication off | replication on |",
        "|---|--:|--:|",
        *(f"| {k} | {core('off', k):.2f} | {core('on', k):.2f} |" for k in rows["on"][0]["cores"]),
        f"| all | {sum(core('off', k) for k in rows['off'][0]['cores']):.2f} | "
        f"{sum(core('on', k) for k in rows['on'][0]['cores']):.2f} |",
        "",
        "Each round (cores: CPU s per s; `loop waiting`: seconds per second the loop "
        "thread was runnable but waiting for a CPU, from /proc schedstat; events per loop "
        "CPU second; the busiest other processes on the machine, by name):",
        "",
        "| round | events/s | loop | loop waiting | events per loop CPU s | uploader "
        "| osd + rgw | other processes | busiest others |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
        *(
            f"| {mode} {i} | {r['events_per_s']:,.0f} | {r['cores']['gateway loop']:.2f} | "
            f"{r['loop_waiting']:.2f} | "
            f"{r['events_per_s'] / max(r['cores']['gateway loop'], 1e-9):,.0f} | "
            f"{r['cores']['gateway uploader']:.2f} | "
            f"{r['cores'].get('osd.0', 0) + r['cores'].get('rgw.a', 0):.2f} | "
            f"{r['cores']['other processes']:.2f} | "
            + ", ".join(f"{n} {c:.2f}" for n, c in r["others"] if c >= 0.02)
            + " |"
            for i in range(args.rounds)
            for mode in ("off", "on")
            for r in [rows[mode][i]]
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write(text)


def store_version() -> str:
    done = subprocess.run(["ceph", "--version"], capture_output=True, text=True, check=False)
    parts = done.stdout.split()
    return parts[2] if len(parts) > 2 else "?"


if __name__ == "__main__":
    sys.exit(main())

"""Mutation run, by hand: one-line changes to the ledger, ingest and spool code,
each run against the tests that should notice; prints which were killed.

    .venv/bin/python tools/mutate.py            # every mutant (about 15 minutes)
    .venv/bin/python tools/mutate.py 3 17       # only these (numbers from --list)
    .venv/bin/python tools/mutate.py --list

The work happens in a temporary copy of the tracked files, so the checkout is
never modified, not even when the run is interrupted. Not part of CI: results
and the survivors judged harmless are in docs/testing.md, "Mutation run".
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A mutant's targeted tests take well under a minute; five minutes means a hang
# (which counts as killed: the suite's own per-test timeout would fail it).
MUTANT_TIMEOUT_S = 300

LEDGER = "tests/test_ledger_format.py tests/test_ledger_store.py tests/test_ledger_verify.py"
CRASH = "tests/test_crash_states.py"
DURABILITY = "tests/test_durability.py"
E2E = "tests/test_e2e.py"
PROTOCOL = "tests/test_ingest_protocol.py tests/test_access.py"
PRINTING = "tests/test_printing.py"


@dataclass(frozen=True)
class Mutant:
    path: str
    old: str  # must occur exactly once in the file
    new: str
    tests: str
    why: str = ""


MUTANTS = [
    Mutant("gateway/ledger/store.py", "os.fdatasync(fd)", "None", CRASH, "no data sync"),
    Mutant(
        "gateway/ledger/store.py",
        "            fsync_directory(w.path.parent)",
        "            None",
        CRASH,
        "no directory sync for a new segment",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "MAX_BATCH_BYTES = 8 * 1024 * 1024",
        "MAX_BATCH_BYTES = 2**40",
        DURABILITY,
        "no staging bound",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "SYNC_UNIT_BYTES = 2 * 1024 * 1024",
        "SYNC_UNIT_BYTES = 2**40",
        LEDGER,
        "one sync per batch, however large",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "            if discarded > MAX_TORN_BYTES:",
        "            if False:",
        LEDGER,
        "recovery cuts any amount",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "check_from = max(fmt.SEGMENT_HEADER_BYTES, size - MAX_TORN_BYTES)",
        "check_from = size",
        LEDGER,
        "recovery checks no chain links",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "self.durable = Head(batch.last_seq, batch.last_hash)",
        "self.durable = Head(batch.last_seq + 1, batch.last_hash)",
        f"{DURABILITY} {CRASH}",
        "durable head one too far",
    ),
    Mutant(
        "gateway/ledger/store.py",
        "if self._seg_size + size > self.segment_bytes and",
        "if self._seg_size + size >= self.segment_bytes and",
        LEDGER,
        "segment boundary off by one byte",
    ),
    Mutant(
        "gateway/ledger/format.py",
        "    if zlib.crc32(data[offset : offset + 12]) != crc:",
        "    if False:",
        LEDGER,
        "frame header CRC ignored",
    ),
    Mutant(
        "gateway/ledger/format.py",
        "    if length > MAX_PAYLOAD_BYTES:",
        "    if False:",
        LEDGER,
        "frame length unbounded",
    ),
    Mutant(
        "gateway/ledger/format.py",
        "    h = blake3(prev_hash)",
        "    h = blake3()",
        LEDGER,
        "chain hash ignores the previous hash",
    ),
    Mutant(
        "gateway/ledger/durability.py",
        "delay = min(delay * 2, RETRY_CAP_S)",
        "delay = min(delay * 1, RETRY_CAP_S)",
        DURABILITY,
        "ledger retry not doubled",
    ),
    Mutant(
        "gateway/ledger/durability.py",
        "if self._stopping.wait(delay):",
        "if time.sleep(delay):",
        "tests/test_stop.py",
        "retry deaf to the stop",
    ),
    Mutant(
        "gateway/ledger/durability.py",
        "            if result.error is None:\n                self.busy = False",
        "            if True:\n                self.busy = False",
        DURABILITY,
        "a failed batch frees the slot",
    ),
    Mutant(
        "gateway/ledger/verify.py",
        "if seq != expect or length > fmt.MAX_PAYLOAD_BYTES:",
        "if length > fmt.MAX_PAYLOAD_BYTES:",
        LEDGER,
        "verify ignores seq gaps",
    ),
    Mutant(
        "gateway/ledger/verify.py",
        "older = [seq for seq in records.checkpoints if seq < start.seq]",
        "older = [seq for seq in records.checkpoints if seq <= start.seq]",
        LEDGER,
        "checkpoint boundary",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "OUTBUF_PAUSE_BYTES = 256 * 1024",
        "OUTBUF_PAUSE_BYTES = 2**40",
        f"{E2E} -k backpressure",
        "no reply bound",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "                if head > durable:",
        "                if head > durable + 1:",
        f"{DURABILITY} {CRASH}",
        "ack one entry early",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "if now - conn.last_active > limit and not conn.pending:",
        "if now - conn.last_active > limit:",
        f"{E2E} {DURABILITY}",
        "idle sweep closes connections owed replies",
    ),
    Mutant(
        "gateway/ingest/server.py",
        ">= self.config.max_connections:",
        "> self.config.max_connections:",
        E2E,
        "one connection over the cap",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "        if len(self.lingering) >= MAX_LINGERING:",
        "        if False:",
        f"{E2E} {PROTOCOL}",
        "lingering sockets unbounded",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "ITEMS_PER_TURN = 512",
        "ITEMS_PER_TURN = 2**40",
        DURABILITY,
        "no fairness between connections",
    ),
    Mutant(
        "gateway/ingest/server.py",
        "        if self.paused and self.ledger.staged_bytes < MAX_BATCH_BYTES:",
        "        if False:",
        DURABILITY,
        "reading never resumes after a pause",
    ),
    Mutant(
        "gateway/ingest/protocol.py",
        "MAX_APP_NAME = 64",
        "MAX_APP_NAME = 2**20",
        PROTOCOL,
        "app name unbounded",
    ),
    Mutant(
        "gateway/ingest/protocol.py",
        "    if token is not None and app is None:",
        "    if False:",
        PROTOCOL,
        "token without an app",
    ),
    Mutant(
        "gateway/ingest/protocol.py",
        "MAX_TOKEN = 256",
        "MAX_TOKEN = 2**20",
        PROTOCOL,
        "token length unbounded",
    ),
    Mutant(
        "gateway/ingest/limits.py",
        "        if tokens < 1.0:",
        "        if tokens < 0.0:",
        PROTOCOL,
        "rate limit lets one more through",
    ),
    Mutant(
        "gateway/ingest/limits.py",
        "tokens = min(self.burst, tokens + (now - at) * self.rate)",
        "tokens = tokens + (now - at) * self.rate",
        PROTOCOL,
        "bucket grows past its burst",
    ),
    Mutant(
        "gateway/printing/spool.py",
        "self.delay = min(self.delay * 2, self.spool.config.spool.retry_cap_s)",
        "self.delay = self.delay * 2",
        f"{PRINTING} -k backoff",
        "printer backoff uncapped",
    ),
    Mutant(
        "gateway/printing/spool.py",
        "            self.delay = self.spool.config.spool.retry_start_s\n"
        "            self._finished",
        "            self._finished",
        f"{PRINTING} -k backoff",
        "printer backoff not reset",
    ),
    Mutant(
        "gateway/printing/spool.py",
        "job.uncertain = True  # part of it may be on paper",
        "job.uncertain = False  # part of it may be on paper",
        PRINTING,
        "partly sent job not marked uncertain",
    ),
    Mutant(
        "gateway/printing/spool.py",
        "if len(self.queue) >= limits.max_jobs or",
        "if len(self.queue) > limits.max_jobs or",
        PRINTING,
        "one job over the spool cap",
    ),
]


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def pytest(copy: Path, tests: str) -> tuple[int | None, float]:
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow and not faults",
           "-p", "no:cacheprovider", *tests.split()]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, cwd=copy, capture_output=True, timeout=MUTANT_TIMEOUT_S, check=False
        )
        code: int | None = result.returncode
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", type=int, help="mutant numbers to run")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [(n, m) for n, m in enumerate(MUTANTS, 1) if not args.only or n in args.only]
    if args.list:
        for n, m in chosen:
            print(f"{n:3} {m.path}: {m.why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        probe = subprocess.run(
            [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
            cwd=copy, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert probe.stdout.strip().startswith(str(copy)), f"imports {probe.stdout} not the copy"
        baseline = sorted(
            {t for _n, m in chosen for t in m.tests.split() if t.startswith("tests/")}
        )
        code, seconds = pytest(copy, " ".join(baseline))
        print(f"baseline: {' '.join(baseline)}: exit {code} in {seconds:.0f} s", flush=True)
        if code != 0:
            print("the unmutated tests fail: nothing to learn from mutants")
            return 1
        killed = 0
        for n, m in chosen:
            path = copy / m.path
            original = path.read_text()
            assert original.count(m.old) == 1, f"mutant {n}: {m.old!r} not found exactly once"
            path.write_text(original.replace(m.old, m.new))
            try:
                code, seconds = pytest(copy, m.tests)
            finally:
                path.write_text(original)
            verdict = "killed" if code not in (0, 5) else "SURVIVED" if code == 0 else "error"
            if code is None:
                verdict = "killed (timeout)"
            killed += verdict.startswith("killed")
            print(f"{n:3} {verdict:16} {seconds:5.0f} s  {m.path}: {m.why}", flush=True)
        print(f"score: {killed} of {len(chosen)} killed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

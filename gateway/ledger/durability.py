"""The durability thread: writes and syncs each commit batch off the event loop.

Group commit: the loop hands over everything staged while the previous batch
was syncing, so one write and one fdatasync cover many entries. Results come
back through the loop's wake-up channel; the loop never waits on the disk.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.ledger.store import CommitBatch, write_batch

log = logging.getLogger("gateway.ops")
perf_log = logging.getLogger("gateway.perf")

# Retry a failed batch after 0.1 s, doubling up to 5 s: fast enough to recover
# within a second from a transient error, slow enough not to spin on a dead card.
RETRY_START_S = 0.1
RETRY_CAP_S = 5.0

# How long stop() waits for the thread once the gateway has given up on the
# commit (or has nothing left to commit). An idle thread ends at once; one that
# is retrying wakes on the stop signal at once; only a write that never returns
# (a card or controller that hangs) holds it, and then waiting longer would not
# help: the thread is a daemon and the process exits without it (status 1).
STOP_JOIN_S = 2.0

# A sync slower than this is logged on the performance stream. SD cards commonly
# show 5-50 ms; half a second means the card or the filesystem is in trouble.
SLOW_SYNC_S = 0.5

# Benchmarks only: GATEWAY_SIMULATE_SYNC_MS=N makes every sync take N ms longer,
# as a slow SD card would, to show what group commit does then (bench/RESULTS.md).
# Not a configuration key on purpose: no deployment should ever set it.
SIMULATE_SYNC_ENV = "GATEWAY_SIMULATE_SYNC_MS"


def simulated_sync_s() -> float:
    raw = os.environ.get(SIMULATE_SYNC_ENV, "")
    try:
        value = float(raw or 0) / 1000
    except ValueError:
        raise ValueError(f"{SIMULATE_SYNC_ENV} must be a number of milliseconds") from None
    if value < 0:
        raise ValueError(f"{SIMULATE_SYNC_ENV} must not be negative")
    return value


@dataclass(frozen=True, slots=True)
class BatchResult:
    batch: CommitBatch
    error: OSError | None
    elapsed_s: float
    syncs: int


class DurabilityThread:
    """One thread, one batch at a time. `post` delivers results onto the loop."""

    def __init__(
        self,
        post: Callable[[Callable[[], None]], None],
        on_result: Callable[[BatchResult], None],
        *,
        sync: bool,
        writer: Callable[[CommitBatch, dict[Path, int], bool], int] = write_batch,
    ) -> None:
        self._post = post
        self._on_result = on_result
        self._sync = sync
        # Fault-injection seam: tests replace the writer to raise ENOSPC or EIO.
        self.writer = writer
        self.extra_sync_s = simulated_sync_s()
        self._queue: queue.SimpleQueue[CommitBatch | None] = queue.SimpleQueue()
        self._stopping = threading.Event()  # cuts a retry's back-off wait short
        self._fds: dict[Path, int] = {}
        self._thread = threading.Thread(target=self._run, name="durability", daemon=True)
        self.busy = False
        self.submitted_at = 0.0  # when the batch in flight was handed over (monotonic)
        self.last_ok_at = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, batch: CommitBatch) -> None:
        assert not self.busy, "one batch in flight at a time"
        self.busy = True
        self.submitted_at = time.monotonic()
        self._queue.put(batch)

    def stop(self, timeout: float = STOP_JOIN_S) -> bool:
        """End the thread; False when it is still stuck in a write after `timeout` s."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _deliver(self, result: BatchResult) -> None:
        def done() -> None:
            if result.error is None:
                self.busy = False
            self._on_result(result)

        self._post(done)

    def _run(self) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                delay = RETRY_START_S
                while True:
                    started = time.monotonic()
                    try:
                        syncs = self.writer(batch, self._fds, self._sync)
                        if self.extra_sync_s and syncs:
                            time.sleep(self.extra_sync_s * syncs)
                    except OSError as exc:
                        self._close_fds()
                        self._deliver(BatchResult(batch, exc, time.monotonic() - started, 0))
                        if self._stopping.wait(delay):
                            return  # the gateway gave up on this batch
                        delay = min(delay * 2, RETRY_CAP_S)
                        continue
                    elapsed = time.monotonic() - started
                    if elapsed > SLOW_SYNC_S:
                        perf_log.warning(
                            "slow ledger sync",
                            extra={"fields": {"seconds": round(elapsed, 3), "bytes": batch.nbytes}},
                        )
                    self.last_ok_at = time.monotonic()
                    self._deliver(BatchResult(batch, None, elapsed, syncs))
                    break
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

"""The ledger as the running gateway uses it: append, group commit, durable heads.

One component decides when to commit, runs the durability thread, and
publishes each durable head to subscribers registered once at wiring time:
acknowledgements, the print spool, the query index, retention, and whatever
comes later. A subscriber that needs the entries a batch made durable says so
when it subscribes; the others get the head alone, at no cost per entry.
Nothing outside reads this component's internals: they ask `durable`,
`refusal()`, `health()` and `statistics()`.

Group commit: everything staged while one batch is being written and synced
goes to the disk as the next batch, in one write and one fdatasync (per
SYNC_UNIT_BYTES). A finished batch is handled on the loop between two ready
handlers (an urgent post), and the next batch is handed over before the
subscribers run, so the disk is never idle while there is work.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import LedgerConfig
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.durability import BatchResult, DurabilityThread
from gateway.ledger.store import (
    MAX_BATCH_BYTES,
    Head,
    LedgerDamage,
    LedgerWriter,
    RecoveryReport,
)
from gateway.loop import EventLoop, Timer

log = logging.getLogger("gateway.ops")

# A commit pending this long makes the gateway unhealthy (watchdog pings stop):
# an SD card syncs in well under a second; 10 s means the storage is stuck.
SYNC_PENDING_LIMIT_S = 10.0
# Commit durations and acknowledgement waits kept for the status's p50/p99:
# the last 1,000 commits.
SYNC_SAMPLES = 1000
# The acknowledgement wait's p50/p99 cover the commits of the last 60 s (at most
# the last 1,000), so that the dashboard's chart shows the present, not the
# last busy minute of a quiet day.
ACK_WAIT_WINDOW_S = 60.0
# While entries are committed, the high-water mark is moved up to the durable
# head at most this often, on a thread of its own (never on the commit path):
# after a crash only entries synced in the last 10 s can be taken for a torn
# tail. Two small syncs per 10 s: nothing against the commits' own.
MARK_INTERVAL_S = 10.0

__all__ = ["DurableBatch", "Ledger", "LedgerStatistics", "StagedEntry"]


@dataclass(frozen=True, slots=True)
class StagedEntry:
    """One entry of a batch: its seq, chain hash, stored payload, and the map it
    encodes when the appender had it at hand (None: decode the payload)."""

    seq: int
    hash: bytes
    payload: bytes
    value: dict[str, Any] | None = None

    def decoded(self) -> dict[str, Any]:
        return self.value if self.value is not None else entries.decode(self.payload)


@dataclass(frozen=True, slots=True)
class DurableBatch:
    """What one commit made durable: entries first_seq..head.seq.

    `entries` is filled only when a subscriber asked for entries.
    """

    first_seq: int
    head: Head
    entries: tuple[StagedEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    head_seq: int
    head_hash: str
    next_seq: int
    staged_entries: int
    staged_bytes: int
    batches: int  # commit batches written since start
    syncs: int  # the fdatasync calls they took
    sync_ms_p50: float
    sync_ms_p99: float
    sync_samples: int
    # Per commit, from its first entry's staging (the loop turn that read the
    # line) until the commit's result reached the loop, where its
    # acknowledgements are queued: the longest any entry of the batch waited.
    # Over the last ACK_WAIT_WINDOW_S; 0 with no commit in it.
    ack_wait_ms_p50: float
    ack_wait_ms_p99: float
    ack_wait_samples: int
    error: str | None  # the last write error, while writes fail
    disk_full: bool
    free_bytes: int | None
    commit_pending_s: float  # how long the commit in flight has been pending (0: none)
    damage: dict[str, Any] | None = None  # acknowledged entries gone (LedgerDamage.as_json)
    dropped: int = 0  # appends refused since the damage was found (not recorded)


Subscriber = Callable[[DurableBatch], None]


class Ledger:
    """Append on the loop thread; commits run on the durability thread."""

    def __init__(self, config: LedgerConfig, directory: Path, loop: EventLoop) -> None:
        self.config = config
        self.directory = directory
        self.loop = loop
        self.clock = loop.clock
        self.writer = LedgerWriter(
            directory,
            segment_bytes=config.segment_bytes,
            per_entry_sync=config.fsync == "always",
            clock=self.clock.monotonic,
        )
        # Public as a fault-injection seam: tests replace `durability.writer`.
        self.durability = DurabilityThread(
            functools.partial(loop.post, urgent=True), self._on_result, sync=config.fsync != "off"
        )
        self._subscribers: list[Subscriber] = []
        self._keep_entries = False
        self._staged: list[StagedEntry] = []
        self._in_flight: list[StagedEntry] = []
        self._submitted_at = 0.0
        self._timer: Timer | None = None
        # ledger.min_sync_interval_ms: at most one commit per this many seconds.
        self._min_interval_s = config.min_sync_interval_ms / 1000
        self._flushing = False
        self.error: OSError | None = None
        self.batches = 0
        self.syncs = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=SYNC_SAMPLES)
        # (when the result arrived, how long the batch's first entry waited)
        self.waits: collections.deque[tuple[float, float]] = collections.deque(maxlen=SYNC_SAMPLES)
        self.disk_full = False
        self.free: int | None = None
        self.dropped = 0  # appends refused while damaged
        self._marker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mark")
        self._marked_at = 0.0

    # ---- wiring

    def subscribe(self, callback: Subscriber, *, entries: bool = False) -> None:
        """Call `callback(batch)` on the loop after each commit, in subscription order.

        `entries=True`: the batch carries the entries it made durable.
        """
        self._subscribers.append(callback)
        self._keep_entries = self._keep_entries or entries

    def want_entries(self) -> None:
        """Carry entries in batches from now on (a subscriber started to need them)."""
        self._keep_entries = True

    @property
    def wants_values(self) -> bool:
        """Whether appenders should pass the decoded map along (a subscriber reads entries)."""
        return self._keep_entries

    def open(self) -> RecoveryReport | None:
        """Recover the tail; returns what recovery discarded (None: nothing)."""
        self.writer.sync = self.config.fsync != "off"
        self.writer.open()
        if self.writer.damage is not None:
            self._log_damage(self.writer.damage)
        return self.writer.recovery

    @property
    def damage(self) -> LedgerDamage | None:
        """Acknowledged entries gone or damaged: nothing is stored until accept-loss."""
        return self.writer.damage

    def _log_damage(self, damage: LedgerDamage) -> None:
        log.error(
            "LEDGER DAMAGED: acknowledged entries are gone or damaged; new events are "
            "refused (ledger_damaged) until an operator runs `gateway accept-loss`",
            extra={"fields": damage.as_json()},
        )

    def check_files(self) -> None:
        """Every health tick: is the open segment still the file being written?"""
        if self.writer.damage is None and self.writer.check_files() is not None:
            assert self.writer.damage is not None
            self._log_damage(self.writer.damage)

    def start(self) -> None:
        self.durability.start()
        self.loop.add_idle_hook(self._commit_if_idle)

    # ---- appending (loop thread)

    @property
    def durable(self) -> Head:
        return self.writer.durable

    @property
    def next_seq(self) -> int:
        return self.writer.next_seq

    @property
    def last_hash(self) -> bytes:
        return self.writer.last_hash

    @property
    def staged_head(self) -> Head:
        """The newest entry appended, durable or not yet."""
        return Head(self.writer.next_seq - 1, self.writer.last_hash)

    @property
    def staged_bytes(self) -> int:
        return self.writer.staged_bytes

    @property
    def backpressure(self) -> bool:
        """Too much is staged for the next commit: readers of input should pause."""
        return self.writer.staged_bytes >= MAX_BATCH_BYTES

    def append_frames(self, frames: bytes, count: int, last_hash: bytes) -> int:
        """Stage frames made by the native core (Writer.append_frames); the first seq."""
        first = self.writer.append_frames(frames, count, last_hash)
        if self._keep_entries:
            staged = self._staged
            pos = 0
            not_unit_start = ~fmt.UNIT_START  # the length field without the unit start bit
            for seq in range(first, first + count):
                length = int.from_bytes(frames[pos : pos + 4], "big") & not_unit_start
                start = pos + fmt.FRAME_HEADER_BYTES
                end = start + length
                digest = frames[end : end + fmt.HASH_BYTES]
                staged.append(StagedEntry(seq, digest, frames[start:end], None))
                pos = end + fmt.HASH_BYTES
        return first

    def append(self, payload: bytes, value: dict[str, Any] | None = None) -> int:
        """Stage one entry; durable once a DurableBatch covering its seq is published.

        While the ledger is damaged nothing is staged: returns 0 (not recorded).
        """
        if self.writer.damage is not None:
            self.dropped += 1
            return 0
        seq = self.writer.append(payload)
        if self._keep_entries:
            self._staged.append(StagedEntry(seq, self.writer.last_hash, payload, value))
        return seq

    def record(self, kind: str, fields: dict[str, Any]) -> int:
        """Any kind but events and refused lines: received now, flagged while unsynced."""
        value = entries.record_value(kind, self.clock.wall_us(), fields, not self.clock.synced)
        return self.append(entries.encode_value(value), value)

    def system(self, name: str, detail: dict[str, Any]) -> int:
        return self.record(entries.SYSTEM, {"name": name, "detail": detail})

    def seal_segment(self) -> bool:
        """The next entry starts a new segment (sealing by age); False if the live one is empty.

        Subscribers see the seal as `writer.segments_created` going up."""
        return self.writer.seal_segment()

    # ---- group commit

    def _commit_if_idle(self) -> None:
        """An idle hook: hand everything staged to the disk when no commit runs."""
        if self.durability.busy or not self.writer.staged_entries or self.writer.damage:
            return
        wait = self._submitted_at + self._min_interval_s - self.clock.monotonic()
        if wait > 0 and not self._flushing:
            if self._timer is None:
                self._timer = self.loop.call_later(wait, self._timer_fired)
            return
        batch = self.writer.take_batch()
        if batch is None:
            return
        self._in_flight, self._staged = self._staged, []
        self._submitted_at = self.clock.monotonic()
        self.durability.submit(batch)

    def _timer_fired(self) -> None:
        self._timer = None
        self._commit_if_idle()

    def flush(self) -> None:
        """From now on commit without waiting for min_sync_interval_ms (shutdown)."""
        self._flushing = True
        self._commit_if_idle()

    def _on_result(self, result: BatchResult) -> None:
        if result.error is not None:
            if self.error is None:
                log.error(
                    "ledger write failed; retrying, no acknowledgements until it succeeds",
                    extra={
                        "fields": {"error": str(result.error), "first_seq": result.batch.first_seq}
                    },
                )
            self.error = result.error
            return
        if self.error is not None:
            log.warning("ledger writes succeed again")
            self.error = None
        if self.writer.damage is not None:
            # Written to a segment that is gone: never acknowledged, never published.
            self._in_flight = []
            return
        self.batches += 1
        self.syncs += result.syncs
        self.latencies.append(result.elapsed_s)
        now = self.clock.monotonic()
        self.waits.append((now, now - result.batch.staged_at))
        self.writer.batch_done(result.batch)
        made_durable = tuple(self._in_flight)
        self._in_flight = []
        self._commit_if_idle()  # what was staged meanwhile goes to the disk at once
        if now - self._marked_at >= MARK_INTERVAL_S and self.config.fsync != "off":
            self._marked_at = now
            try:
                self._marker.submit(self._mark, self.writer.durable)
            except RuntimeError:
                pass  # closing: the clean-stop mark follows
        published = DurableBatch(result.batch.first_seq, self.writer.durable, made_durable)
        for subscriber in self._subscribers:
            subscriber(published)

    def _mark(self, head: Head) -> None:
        """On the marker thread: move the high-water mark up to a durable head."""
        try:
            self.writer.write_periodic_mark(head)
        except OSError as exc:  # the next interval tries again; the commits are unaffected
            log.warning("high-water mark not written", extra={"fields": {"error": str(exc)}})

    @property
    def settled(self) -> bool:
        """Everything appended so far is durable (damaged: nothing more will be)."""
        if self.writer.damage is not None:
            return not self.durability.busy
        return self.writer.durable.seq == self.writer.next_seq - 1 and not self.durability.busy

    # ---- what others may ask

    def refusal(self) -> tuple[str, str] | None:
        """Why new events cannot be taken now: (code, detail), or None."""
        if self.writer.damage is not None:
            return (
                "ledger_damaged",
                f"acknowledged entries are gone or damaged ({self.writer.damage.describe()}); "
                "nothing is stored until an operator accepts the loss",
            )
        if self.disk_full:
            return (
                "disk_full",
                "the gateway's storage is nearly full; nothing was stored from here on",
            )
        return None

    def check_space(self) -> None:
        """Refuse new events while free space is below ledger.min_free_bytes (every second)."""
        try:
            free = self.free_bytes(self.directory)
        except OSError:
            return
        self.free = free
        full = free < self.config.min_free_bytes
        if full == self.disk_full:
            return
        self.disk_full = full
        fields = {"free_bytes": free, "min_free_bytes": self.config.min_free_bytes}
        if full:
            log.error(
                "storage nearly full: new events are refused (disk_full)", extra={"fields": fields}
            )
        else:
            log.warning("storage has room again: events are accepted", extra={"fields": fields})

    @staticmethod
    def free_bytes(path: Path) -> int:
        """Free space for the service on the filesystem holding `path` (a test seam)."""
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def pending_s(self) -> float:
        """How long the commit in flight has been pending (0 when none is)."""
        if not self.durability.busy:
            return 0.0
        return self.clock.monotonic() - self._submitted_at

    def health(self) -> str:
        """'' when the ledger can do its job, else why (the watchdog's rules)."""
        if not self.durability.is_alive():
            return "the durability thread has stopped"
        if self.error is not None:
            return f"the ledger cannot be written: {self.error}"
        pending = self.pending_s()
        if pending > SYNC_PENDING_LIMIT_S:
            return f"a ledger commit has been pending for {pending:.0f} s"
        return ""

    def statistics(self) -> LedgerStatistics:
        latencies = sorted(self.latencies)
        since = self.clock.monotonic() - ACK_WAIT_WINDOW_S
        waits = sorted(wait for at, wait in self.waits if at >= since)

        def pick(q: float, samples: list[float] = latencies) -> float:
            if not samples:
                return 0.0
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 2)

        head = self.writer.durable
        return LedgerStatistics(
            head_seq=head.seq,
            head_hash=head.hash.hex(),
            next_seq=self.writer.next_seq,
            staged_entries=self.writer.staged_entries,
            staged_bytes=self.writer.staged_bytes,
            batches=self.batches,
            syncs=self.syncs,
            sync_ms_p50=pick(0.50),
            sync_ms_p99=pick(0.99),
            sync_samples=len(latencies),
            ack_wait_ms_p50=pick(0.50, waits),
            ack_wait_ms_p99=pick(0.99, waits),
            ack_wait_samples=len(waits),
            error=str(self.error) if self.error is not None else None,
            disk_full=self.disk_full,
            free_bytes=self.free,
            commit_pending_s=round(self.pending_s(), 3),
            damage=self.writer.damage.as_json() if self.writer.damage is not None else None,
            dropped=self.dropped,
        )

    def close(self) -> bool:
        """Stop the durability thread; False when a write never returned (it is left)."""
        if self._timer is not None:
            self._timer.cancel()
        stopped = True
        if self.durability.is_alive():
            stopped = self.durability.stop()
        self._marker.shutdown(wait=True)  # a periodic mark never follows the clean one
        if stopped and self.error is None and self.settled:
            try:
                # A clean stop: the next start holds every entry to this head.
                self.writer.write_clean_mark()
            except OSError as exc:
                log.error(
                    "the clean-stop mark was not written", extra={"fields": {"error": str(exc)}}
                )
        return stopped

"""Retention: archive closed segments, remove old ones, and keep what remains verifiable.

A closed segment (any but the newest, fully durable) whose last entry is
`retention.archive_after_days` old is copied, gzip-compressed, into
`retention.archive_dir`; once its last entry is `retention.remove_after_days`
old, it leaves the live ledger. Both steps are on the record, through the
ledger's one write path, as `system` entries (docs/ledger-format.md,
"Retention"):

- `archived`: the segment's seqs, size and BLAKE3, and the archive file. It is
  recorded only after the archive was written (temporary name, fsync, atomic
  rename, fsync of the directory) and read back from the storage to the same
  BLAKE3.
- `checkpoint`: the segment about to be removed and the chain hash of its last
  entry, which is the prev_hash in the header of the segment after it. It is
  recorded, and committed, before the file is deleted: a crash in between
  leaves a checkpoint whose segment is still there, which is harmless and is
  finished by the next pass; a segment never disappears without one.

`gateway verify` starts the chain at that checkpoint when the oldest live
segment starts after seq 1 (gateway/ledger/verify.py).

Archives are written and read through gateway/ledger/archive.py (one store
interface; the reasons for gzip are there).

Threads: the gateway's loop decides when a pass is due and records its
results; a pass runs on a thread of its own (reading, hashing, compressing and
deleting never block ingest) and hands each result back with the loop's
post(). What the ledger says about retention so far (which segments are
archived or checkpointed) is read from the ledger itself, incrementally: a
pass continues where the previous one stopped, and `<state_dir>/retention.json`
remembers where that was across restarts (a hint: deleted, the live ledger is
read again).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import RetentionConfig
from gateway.errors import StorageError
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.archive import (
    DirectoryArchive,
    Stopped,
    segment_digest,
)
from gateway.ledger.store import (
    LedgerFollower,
    LedgerReader,
    SegmentReader,
    fsync_directory,
    list_segments,
)
from gateway.loop import EventLoop, Timer

if TYPE_CHECKING:
    from gateway.ledger.commit import DurableBatch, Ledger

log = logging.getLogger("gateway.ops")

# The system entry names of retention (docs/ledger-format.md, "Retention").
ARCHIVED = "archived"
CHECKPOINT = "checkpoint"
# `gateway fleet restore --head-only` starts a ledger after a replaced box's head
# (its first segment starts after seq 1, as retention leaves one): the `restored`
# entry with head_only true records that seq and hash, and vouches for the start
# the way a checkpoint does (verify.py).
RESTORED = "restored"

STATE_FILE = "retention.json"
# Entries read per step while catching up with the ledger (as the query index).
SCAN_BATCH = 2000
# At shutdown, wait this long for a pass to notice the stop (it checks between
# pieces, each far below a second even on a Raspberry Pi).
CLOSE_TIMEOUT_S = 10.0
DAY_US = 86_400 * 1_000_000
# The map header, "kind" and "system" take 14 bytes as the gateway encodes
# them; 32 leaves room for any encoding that puts `kind` first.
RECORD_PREFIX_BYTES = 32


class RetentionError(StorageError):
    """A pass cannot go on: the reason is logged, shown in the status, and retried next pass."""


def remove_segment(path: Path) -> None:
    """Delete a checkpointed segment and make the deletion durable."""
    path.unlink(missing_ok=True)  # missing: a crash came after the unlink, before this returned
    fsync_directory(path.parent)


# --------------------------------------------------------------------------- ledger records


def record_of(
    payload: bytes | memoryview, names: tuple[str, ...] = (ARCHIVED, CHECKPOINT)
) -> tuple[str, dict[str, Any]] | None:
    """(name, detail) when `payload` is a system entry named in `names` (by default
    retention's own, `archived` and `checkpoint`), else None.

    Cheap for every other entry (verify calls it for each frame once retention
    matters): only payloads whose first RECORD_PREFIX_BYTES hold the bytes
    "system" are decoded. The gateway writes `kind` as the first key of every
    entry, so its own records always pass; a record encoded otherwise is not
    recognised, which can make verification fail, never pass.
    """
    if bytes(payload[:RECORD_PREFIX_BYTES]).find(b"system") < 0:  # find: cheaper than `in`
        return None
    try:
        entry = entries.decode(payload)
    except Exception:  # undecodable is simply not a record (the chain hash judges damage)
        return None
    name, detail = entry.get("name"), entry.get("detail")
    if entry.get("kind") != entries.SYSTEM or name not in names:
        return None
    return (name, detail) if isinstance(detail, dict) else None


@dataclass(frozen=True, slots=True)
class Segment:
    """A closed segment: its seqs, its file, and the segment that follows it."""

    first: int
    last: int
    path: Path
    next_path: Path


def closed_segments(ledger_dir: Path, durable: int) -> list[Segment]:
    """Every segment but the newest, oldest first, up to the durable head."""
    segments = list_segments(ledger_dir)
    out = []
    for (first, path), (next_first, next_path) in itertools.pairwise(segments):
        if next_first - 1 > durable:
            break
        # After an accepted loss the next segment starts `skipped` seqs later.
        last = next_first - 1 - _skipped(next_path)
        out.append(Segment(first, last, path, next_path))
    return out


def _skipped(path: Path) -> int:
    try:
        with SegmentReader(path) as reader:
            return reader.read_header().skipped
    except (OSError, EOFError, fmt.HeaderDamaged):
        return 0


@dataclass
class LedgerRecords:
    """What the live ledger says about retention, read incrementally up to the durable head.

    `archived` and `checkpoints` map a live segment's file name to the detail
    of its latest entry of that name, with that entry's seq as "seq".
    """

    seq: int = 0  # entries up to this one have been read
    hash: str = ""  # the chain hash of entry `seq` (hex): a replaced ledger does not match
    archived: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    _follower: LedgerFollower | None = None

    @classmethod
    def load(cls, path: Path) -> LedgerRecords:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["seq"], data["hash"], data[ARCHIVED], data["checkpoints"])
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("retention state unreadable; reading the live ledger again",
                        extra={"fields": {"error": str(exc)}})  # fmt: skip
            return cls()

    def save(self, path: Path, live: set[str]) -> None:
        """Keep what concerns live segments; no fsync (lost, the ledger is read again)."""
        for records in (self.archived, self.checkpoints):
            for name in set(records) - live:
                del records[name]
        data = {"seq": self.seq, "hash": self.hash, ARCHIVED: self.archived,
                "checkpoints": self.checkpoints}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def catch_up(self, ledger_dir: Path, durable: int, stop: threading.Event) -> None:
        if self._follower is None:
            if self.seq and not self._cursor_holds(ledger_dir, durable):
                log.warning("retention state does not match the ledger; reading it again")
                self.seq, self.hash, self.archived, self.checkpoints = 0, "", {}, {}
            self._follower = LedgerFollower(ledger_dir, self.seq + 1)
        while items := self._follower.read(SCAN_BATCH, durable):
            if stop.is_set():
                raise Stopped
            for seq, payload, _hash in items:
                record = record_of(payload)
                if record is not None:
                    name, detail = record
                    target = self.archived if name == ARCHIVED else self.checkpoints
                    target[str(detail.get("segment"))] = {**detail, "seq": seq}
            self.seq, self.hash = items[-1][0], items[-1][2].hex()

    def _cursor_holds(self, ledger_dir: Path, durable: int) -> bool:
        if self.seq > durable:
            return False
        for seq, _payload, chain_hash in LedgerReader(ledger_dir).entries(self.seq, self.seq):
            return seq == self.seq and chain_hash.hex() == self.hash
        return False


# --------------------------------------------------------------------------- one pass


@dataclass(frozen=True)
class PassInput:
    """What the loop hands a pass: it reads nothing of the loop's while it runs."""

    config: RetentionConfig
    durable: int  # the durable head: nothing after it is read or counted on
    keep_from: int  # the oldest seq a reader in the gateway still needs (print spool, index)
    now_us: int  # wall-clock time, for ages


@dataclass
class PassReport:
    removed: list[str] = field(default_factory=list)
    error: str = ""


class Pass:
    """One look at the ledger: finish recorded removals, archive, record new removals.

    Runs on the retention thread. `record(name, detail)` hands an entry to the
    loop, which appends it; the next pass starts only once it is durable, and
    reads it back from the ledger.
    """

    def __init__(
        self,
        ledger_dir: Path,
        state: LedgerRecords,
        received: dict[str, int],
        record: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
    ) -> None:
        self.ledger_dir = ledger_dir
        self.state = state
        self.received = received  # segment name -> received_at of its last entry (memo)
        self.record = record
        self.stop = stop

    def run(self, job: PassInput) -> PassReport:
        report = PassReport()
        cfg = job.config
        self.state.catch_up(self.ledger_dir, job.durable, self.stop)
        closed = closed_segments(self.ledger_dir, job.durable)
        # Removals on the record: right after their checkpoints, or after a crash.
        while closed and self._checkpointed(closed[0]):
            segment = closed.pop(0)
            remove_segment(segment.path)
            report.removed.append(segment.path.name)
            log.info("segment removed", extra={"fields": {"segment": segment.path.name}})
        if cfg.archive_dir is not None:
            if not cfg.archive_dir.is_dir():
                raise RetentionError(f"archive_dir {cfg.archive_dir} is not a directory")
            for segment in closed:
                if segment.path.name not in self.state.archived and self._old(
                    segment, cfg.archive_after_days, job.now_us
                ):
                    detail = DirectoryArchive(cfg.archive_dir).put(segment.path, self.stop)
                    self.record(
                        ARCHIVED, {**detail, "first_seq": segment.first, "last_seq": segment.last}
                    )
        if cfg.remove_after_days is not None:
            for segment in closed:  # oldest first, and only while each one qualifies
                if self._checkpointed(segment):
                    continue  # recorded by an earlier pass; removed once those before it are
                if segment.last >= job.keep_from:
                    break
                if not self._old(segment, cfg.remove_after_days, job.now_us):
                    break
                archived = self.state.archived.get(segment.path.name)
                if cfg.archive_dir is not None and archived is None:
                    break  # archived (and recorded) first, by a pass before this one
                self.record(CHECKPOINT, self._checkpoint(segment, archived))
        return report

    def _checkpointed(self, segment: Segment) -> bool:
        checkpoint = self.state.checkpoints.get(segment.path.name)
        return checkpoint is not None and checkpoint.get("last_seq") == segment.last

    def _old(self, segment: Segment, days: int, now_us: int) -> bool:
        """Whether the segment's last entry was received at least `days` days ago."""
        name = segment.path.name
        if name not in self.received:
            for _seq, payload, _hash in LedgerReader(self.ledger_dir).entries(
                segment.last, segment.last
            ):
                self.received[name] = int(entries.decode(payload)["received_at"])
        return now_us - self.received[name] >= days * DAY_US

    def _checkpoint(self, segment: Segment, archived: dict[str, Any] | None) -> dict[str, Any]:
        """The `checkpoint` detail, after checking everything it will vouch for."""
        with open(segment.next_path, "rb") as f:
            header = fmt.decode_segment_header(f.read(fmt.SEGMENT_HEADER_BYTES))
        with open(segment.path, "rb") as f:
            f.seek(-fmt.HASH_BYTES, os.SEEK_END)
            last_hash = f.read(fmt.HASH_BYTES)
        if header.prev_hash != last_hash:
            raise RetentionError(
                f"{segment.path.name} does not end with the chain hash that "
                f"{segment.next_path.name} starts from: run `gateway verify`"
            )
        detail: dict[str, Any] = {
            "segment": segment.path.name,
            "first_seq": segment.first,
            "last_seq": segment.last,
            "hash": last_hash.hex(),
            "archived_seq": None,
            "archive_dir": None,
            "archive_file": None,
        }
        if archived is not None:
            recorded = (archived.get("blake3"), archived.get("bytes"))
            if segment_digest(segment.path, self.stop) != recorded:
                raise RetentionError(
                    f"{segment.path.name} no longer matches its archived entry (seq "
                    f"{archived['seq']}): run `gateway verify`"
                )
            directory, name = str(archived.get("archive_dir")), str(archived.get("archive_file"))
            if DirectoryArchive(Path(directory)).digest(segment.path.name, self.stop) != recorded:
                raise RetentionError(
                    f"archive {Path(directory) / name} does not match {segment.path.name}"
                )
            detail.update(archived_seq=archived["seq"], archive_dir=directory, archive_file=name)
        return detail


# --------------------------------------------------------------------------- the gateway's side


class Retention:
    """Schedules passes on the gateway's loop and records what they did.

    A pass is due at start, every `check_interval_s`, after a reload, and
    right after each entry it recorded is durable (so a checkpoint's deletion
    follows its commit). At most one pass runs at a time.
    """

    def __init__(
        self,
        config: RetentionConfig,
        state_dir: Path,
        loop: EventLoop,
        ledger: Ledger,
        keep_from: Callable[[], int],
    ) -> None:
        self.config = config
        self.loop = loop
        self.ledger = ledger
        self.keep_from = keep_from
        self.state_path = state_dir / STATE_FILE
        self.passes = 0
        self.archived = 0
        self.removed = 0
        self.error = ""
        self._state: LedgerRecords | None = None
        self._received: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timer: Timer | None = None
        self._due = False
        self._awaiting = 0  # the last entry recorded: no pass until it is durable

    @property
    def idle(self) -> bool:
        """No pass running and none due (tests wait for this)."""
        return self._thread is None and not self._due

    def start(self) -> None:
        """Passes from the loop's next turn on (nothing runs before the loop does)."""
        if self.config.active:
            self._timer = self.loop.call_later(0, self._tick)

    def reconfigure(self, config: RetentionConfig) -> None:
        self.config = config
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.start()

    def check_now(self) -> None:
        self._due = True
        self._maybe_start()

    def on_durable(self, batch: DurableBatch) -> None:
        """A ledger subscriber: a pass may be waiting for its entries to be durable."""
        self._maybe_start()

    def status(self) -> dict[str, Any]:
        return {
            "active": self.config.active,
            "passes": self.passes,
            "archived": self.archived,
            "removed": self.removed,
            "error": self.error,
        }

    def stop(self) -> None:
        """No more passes, and the one running gives up (its results are not recorded)."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()

    def close(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)

    def _tick(self) -> None:
        self._timer = self.loop.call_later(self.config.check_interval_s, self._tick)
        self.check_now()

    def _maybe_start(self) -> None:
        if not self._due or self._thread is not None or self._stop.is_set():
            return
        if self.ledger.durable.seq < self._awaiting:
            return
        self._due = False
        job = PassInput(
            self.config,
            self.ledger.durable.seq,
            self.keep_from(),
            self.ledger.clock.wall_us(),  # ages are by received_at
        )
        self._thread = threading.Thread(target=self._run, args=(job,), name="retention")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, job: PassInput) -> None:
        """The retention thread: one pass, then back to the loop."""
        report = PassReport()
        try:
            if self._state is None:
                self._state = LedgerRecords.load(self.state_path)
            state = self._state
            one = Pass(self.ledger.directory, state, self._received, self._post_record, self._stop)
            report = one.run(job)
            live = {path.name for _first, path in list_segments(self.ledger.directory)}
            state.save(self.state_path, live)
            for name in set(self._received) - live:
                del self._received[name]
        except Stopped:
            pass
        except (StorageError, OSError) as exc:
            report.error = str(exc)
        except Exception as exc:  # a damaged entry or a bug: logged, shown, tried again
            log.exception("retention pass failed unexpectedly")
            report.error = repr(exc)
        finally:
            self.loop.post(lambda: self._done(report))

    def _post_record(self, name: str, detail: dict[str, Any]) -> None:
        self.loop.post(lambda: self._record(name, detail))

    def _record(self, name: str, detail: dict[str, Any]) -> None:
        """On the loop: append a pass's entry; a further pass follows once it is durable."""
        if self._stop.is_set():
            return  # not recorded: the next start does the step again
        self._awaiting = self.ledger.system(name, detail)
        self._due = True
        if name == ARCHIVED:
            self.archived += 1
            log.info("segment archived", extra={"fields": detail})
        else:
            log.info("segment removal recorded", extra={"fields": detail})

    def _done(self, report: PassReport) -> None:
        self._thread = None
        self.passes += 1
        self.removed += len(report.removed)
        if report.error:
            log.error("retention pass failed", extra={"fields": {"error": report.error}})
        self.error = report.error
        self._maybe_start()

"""Signed checkpoints on the running box: when they are made, and who hears of them.

A `signed_checkpoint` system entry records a signed note (gateway/fleet/note.py)
over the ledger's head: every `checkpoints.interval_s` while entries arrive,
whenever a segment is sealed with replication on (at most one a second),
and at a clean stop (just before `stopped`).
The head signed is the last entry appended, staged or durable: the
checkpoint's own entry comes after it, so once that entry is durable so is
everything the note covers, and only then is the note handed on (to the
replicator, and to `<state>/fleet/checkpoint.note` for `gateway verify
--checkpoint`). With replication on, the live segment is also sealed once it
has held entries for `fleet.seal_after_s`, and that seal's checkpoint is the
sealed segment's last entry exactly.

Runs on the loop; appends through the ledger like any other recorder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.fleet.identity import BoxIdentity
from gateway.fleet.note import sign_checkpoint
from gateway.ledger.commit import DurableBatch, Ledger
from gateway.loop import EventLoop, Timer

log = logging.getLogger("gateway.ops")

__all__ = ["SIGNED_CHECKPOINT", "Checkpointer", "CheckpointerStatistics", "NoteListener"]

# The system entry's name ("checkpoint" is retention's, docs/ledger-format.md).
SIGNED_CHECKPOINT = "signed_checkpoint"
LATEST_NOTE_FILE = "checkpoint.note"
# Seals closer together than this share the next checkpoint (periodic or at
# the next seal): with 64 MiB segments seals are minutes apart at the most.
SEAL_SIGN_MIN_S = 1.0

NoteListener = Callable[[int, int, str], None]  # (entry seq, signed seq, note)


@dataclass(frozen=True)
class CheckpointerStatistics:
    signed: int  # checkpoints recorded since start
    latest_seq: int  # the head seq the latest durable checkpoint signs (0: none yet)
    latest_hash: str
    latest_entry_seq: int
    latest_short: str


class Checkpointer:
    def __init__(
        self,
        ledger: Ledger,
        loop: EventLoop,
        identity: BoxIdentity,
        interval_s: float,
        note_dir: Path,
        seal_after_s: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.loop = loop
        self.identity = identity
        self.interval_s = interval_s
        self.seal_after_s = seal_after_s
        self.note_dir = note_dir
        self.listeners: list[NoteListener] = []
        self._timer: Timer | None = None
        self._last_entry_seq = 0  # our latest signed_checkpoint entry (0: none this run)
        self._pending: list[tuple[int, int, str]] = []  # appended, not yet durable
        self._segments = ledger.writer.segments_created
        self._segment_since = loop.clock.monotonic()
        self.signed = 0
        self.latest: tuple[int, int, str] | None = None  # (entry seq, signed seq, note)
        self._stopped = False

    def start(self) -> None:
        self.note_dir.mkdir(mode=0o750, exist_ok=True)
        self._timer = self.loop.call_later(self._next_wait(), self._tick)

    def _next_wait(self) -> float:
        if self.seal_after_s is None:
            return self.interval_s
        return min(self.interval_s, self.seal_after_s)

    # ---- when

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        now = self.loop.clock.monotonic()
        if (
            self.seal_after_s is not None
            and now - self._segment_since >= self.seal_after_s
            and self.ledger.writer.live_segment_has_entries
        ):
            self.seal_segment()
        elif self._entries_since_last() and now - self._signed_at >= self.interval_s - 1e-6:
            self.sign("interval")
        self._timer = self.loop.call_later(self._next_wait(), self._tick)

    _signed_at = float("-inf")

    def _entries_since_last(self) -> bool:
        return self.ledger.next_seq - 1 > self._last_entry_seq

    def seal_segment(self) -> None:
        """Seal the live segment now (by age) and sign its last entry."""
        if self.ledger.seal_segment():
            self._segments = self.ledger.writer.segments_created
            self._segment_since = self.loop.clock.monotonic()
            self.sign("seal")

    def on_durable(self, batch: DurableBatch) -> None:
        """A ledger subscriber: hand on notes now durable; sign at a size seal."""
        while self._pending and self._pending[0][0] <= batch.head.seq:
            entry_seq, seq, note = self._pending.pop(0)
            self.latest = (entry_seq, seq, note)
            self._write_latest(note)
            for listener in self.listeners:
                listener(entry_seq, seq, note)
        segments = self.ledger.writer.segments_created
        if segments != self._segments and not self._stopped:
            self._segments = segments
            self._segment_since = self.loop.clock.monotonic()
            # Only with replication on (a seal's checkpoint goes to the store
            # with the segment); never when the seal came with our own
            # checkpoint entry alone (a checkpoint that fills a segment must
            # not sign itself forever); and at most one per SEAL_SIGN_MIN_S, so
            # that tiny segments and retention's `archived` entries cannot feed
            # each other a seal and a checkpoint at a time.
            now = self.loop.clock.monotonic()
            if (
                self.seal_after_s is not None
                and self._entries_since_last()
                and now - self._signed_at >= SEAL_SIGN_MIN_S
            ):
                self.sign("seal")

    def stop(self) -> None:
        """A clean stop: sign what came since the last checkpoint (before `stopped`)."""
        if self._stopped:
            return
        if self._entries_since_last():
            self.sign("stop")
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- what

    def sign(self, reason: str) -> int:
        """Record a checkpoint over the last entry appended; returns the entry's seq."""
        seq = self.ledger.next_seq - 1
        head_hash = self.ledger.last_hash
        note = sign_checkpoint(self.identity, seq, head_hash)
        # The note's parts, not its text: note_from_entry() rebuilds it exactly.
        key_name, signature = note.rstrip("\n").rsplit("\n", 1)[1].split(" ")[1:]
        entry_seq = self.ledger.system(
            SIGNED_CHECKPOINT,
            {
                "seq": seq,
                "hash": head_hash.hex(),
                "origin": self.identity.public.origin,
                "key_name": key_name,
                "signature": signature,
                "reason": reason,
            },
        )
        self._last_entry_seq = entry_seq
        self._signed_at = self.loop.clock.monotonic()
        self._pending.append((entry_seq, seq, note))
        self.signed += 1
        return entry_seq

    def _write_latest(self, note: str) -> None:
        """The latest durable note as a file (a convenience copy: the ledger holds it)."""
        path = self.note_dir / LATEST_NOTE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(note, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning(
                "cannot write the latest checkpoint note",
                extra={"fields": {"path": str(path), "error": str(exc)}},
            )

    def statistics(self) -> CheckpointerStatistics:
        from gateway.fleet.note import parse_note

        if self.latest is None:
            return CheckpointerStatistics(self.signed, 0, "", 0, "")
        entry_seq, seq, note = self.latest
        checkpoint = parse_note(note)
        return CheckpointerStatistics(
            self.signed, seq, checkpoint.hash.hex(), entry_seq, checkpoint.short()
        )

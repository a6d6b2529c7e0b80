"""The spool's state as one pure fold over durable ledger entries.

`SpoolFold.apply(seq, chain_hash, entry)` is the only derivation of what the
spool owes: the live spool feeds it every entry the ledger makes durable, and
a restart feeds it the same entries again from a floor. Both therefore arrive
at the same state (tests/test_spool_fold.py checks this against a model with
random kills). No files, no clock, no printers here.

What the state holds:
- `owed`: every print job queued by a durable entry and not yet ended by a
  durable `print` entry, in the order of their origin seqs. A receipt is owed
  for a durable event that the routes send to a printer, but only while
  routing was on when it was received (each `started` and `reloaded` system
  entry records that): a ledger that gains its first printer does not print
  its history. Reprints, reports and status pages are owed from their
  `reprint`, `report` and `status_page` entries.
- the report numbering (the highest number and date seen) and the last
  printed receipt (what a button press reprints).
- the latest `signed_checkpoint` entry folded (gateway/fleet/checkpoints.py):
  each receipt job carries the one recorded before its event, which its paper
  prints (docs/printing.md), the same live and after a restart.

A checkpoint (`checkpoint()`, kept in spool.json as a hint) holds the floor, the
lowest origin seq of any owed job, and what the fold knew before it: a
restart folds from the floor on with those values and gets the live state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.fleet.checkpoints import SIGNED_CHECKPOINT
from gateway.ledger import entries

__all__ = ["REQUEST_KINDS", "Job", "SpoolFold", "receipt_job", "request_job"]

# Memory a job is charged beyond its entry data (its bookkeeping).
JOB_OVERHEAD_BYTES = 256
# What a receipt keeps of the checkpoint it prints: the note's parts
# (gateway/fleet/note.py, note_from_entry) and the seq of the entry.
CHECKPOINT_FIELDS = ("seq", "hash", "origin", "key_name", "signature")

REQUEST_KINDS = {
    entries.REPRINT: "reprint",
    entries.REPORT: "report",
    entries.STATUS_PAGE: "status",
}


@dataclass(slots=True)
class Job:
    id: str  # "<origin seq>/<printer>": unique, the same after a restart
    type: str  # receipt | reprint | report | status
    printer: str
    origin: int  # seq of the event (receipt) or of the entry that queued the job
    seqs: tuple[int, ...]  # the ledger entries printed
    request: dict[str, Any] = field(default_factory=dict)  # the queuing entry's fields
    payload: bytes = b""  # receipt: the event entry (CBOR), until printed
    hash_hex: str = ""  # receipt: the event's chain hash
    uncertain: bool = False
    attempts: int = 0
    sent: int = 0
    conn: int | None = None  # receipt: the ingest connection id, read from the entry once
    # The latest signed checkpoint recorded before the origin entry (None: none):
    # a receipt prints it; the fold's checkpoint takes the floor job's.
    checkpoint: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        return len(self.payload) + JOB_OVERHEAD_BYTES

    def key(self) -> tuple:
        """What identifies the job and what it prints (not its delivery progress)."""
        checkpoint = self.checkpoint["entry_seq"] if self.checkpoint else None
        return (self.id, self.type, self.printer, self.origin, self.seqs, self.hash_hex, checkpoint)


def receipt_job(
    seq: int,
    printer: str,
    payload: bytes,
    chain_hash: bytes,
    checkpoint: dict[str, Any] | None = None,
) -> Job:
    return Job(
        f"{seq}/{printer}",
        "receipt",
        printer,
        seq,
        (seq,),
        {},
        payload,
        chain_hash.hex(),
        checkpoint=checkpoint,
    )


def checkpoint_of(seq: int, entry: dict[str, Any]) -> dict[str, Any] | None:
    """What paper needs of a `signed_checkpoint` system entry at `seq` (None: not one)."""
    if entry.get("kind") != entries.SYSTEM or entry.get("name") != SIGNED_CHECKPOINT:
        return None
    detail = entry.get("detail")
    if not isinstance(detail, dict) or not all(k in detail for k in CHECKPOINT_FIELDS):
        return None
    return {"entry_seq": seq, **{k: detail[k] for k in CHECKPOINT_FIELDS}}


def request_job(seq: int, entry: dict[str, Any]) -> Job:
    """The job a `reprint`, `report` or `status_page` entry queued."""
    kind = REQUEST_KINDS[entry["kind"]]
    if kind == "reprint":
        seqs: tuple = (int(entry["event_seq"]),)
    elif kind == "report" and entry.get("first_seq"):
        seqs = (int(entry["first_seq"]), int(entry["last_seq"]))
    else:
        seqs = ()
    return Job(str(entry["job"]), kind, str(entry["printer"]), seq, seqs, dict(entry))


Router = Callable[[dict[str, Any]], tuple[str, ...]]


class SpoolFold:
    def __init__(self, router: Router, checkpoint: dict[str, Any] | None = None) -> None:
        self.router = router
        cp = checkpoint or {}
        self.floor_hint = int(cp.get("floor", 1))
        # Without a checkpoint the fold starts at seq 1, where routing is off
        # until a `started` entry says otherwise.
        # A version-1 checkpoint has no "routing": its floor was set by a running
        # spool, so routing was on there.
        self.routing = bool(cp.get("routing", bool(cp)))
        self.owed: dict[str, Job] = {}
        self.report_number = int(cp.get("report_number") or 0)
        date = cp.get("report_date")
        self.report_date: dt.date | None = dt.date.fromisoformat(date) if date else None
        last = cp.get("last_receipt")
        self.last_receipt: tuple[int, str] | None = (int(last[0]), str(last[1])) if last else None
        self.head = self.floor_hint - 1  # the last seq folded in
        # The latest signed checkpoint folded in (before the floor: the hint's).
        self.signed_checkpoint: dict[str, Any] | None = cp.get("signed_checkpoint") or None
        # (seq, routing) whenever routing changed, so that the checkpoint can
        # say what routing was at its floor; trimmed below the floor.
        self._routing_at: list[tuple[int, bool]] = [(self.head, self.routing)]

    def apply(
        self, seq: int, chain_hash: bytes, entry: dict[str, Any], payload: bytes = b""
    ) -> list[Job]:
        """Fold one durable entry in; returns the jobs it newly makes owed."""
        self.head = seq
        kind = entry.get("kind")
        if kind == entries.EVENT:
            if not self.routing:
                return []
            event = entry.get("event")
            if not isinstance(event, dict):
                return []
            made = [
                receipt_job(seq, name, payload, chain_hash, self.signed_checkpoint)
                for name in self.router(event)
            ]
            for job in made:
                self.owed[job.id] = job
            return made
        if kind == entries.PRINT:
            self.owed.pop(str(entry.get("job")), None)
            seqs = entry.get("seqs")
            if (
                entry.get("outcome") == "printed"
                and entry.get("type") in ("receipt", "reprint")
                and isinstance(seqs, list)
                and seqs
            ):
                self.last_receipt = (int(seqs[0]), str(entry.get("printer")))
            return []
        if kind in REQUEST_KINDS:
            job = request_job(seq, entry)
            job.checkpoint = self.signed_checkpoint
            self.owed[job.id] = job
            if job.type == "report":
                self.report_number = max(self.report_number, int(entry["number"]))
                date = dt.date.fromisoformat(str(entry["date"]))
                if self.report_date is None or date > self.report_date:
                    self.report_date = date
            return [job]
        checkpoint = checkpoint_of(seq, entry)
        if checkpoint is not None:
            self.signed_checkpoint = checkpoint
            return []
        if kind == entries.SYSTEM and entry.get("name") in ("started", "reloaded"):
            detail = entry.get("detail")
            routing = isinstance(detail, dict) and detail.get("printing") is True
            if routing != self.routing:
                self.routing = routing
                self._routing_at.append((seq, routing))
        return []

    def fold(self, items: Iterable[tuple[int, bytes, bytes]]) -> int:
        """Fold (seq, payload, chain hash) items as read from the ledger; returns how many."""
        n = 0
        for seq, payload, chain_hash in items:
            n += 1
            raw = bytes(payload)
            self.apply(seq, chain_hash, entries.decode(raw), raw)
        return n

    def floor(self) -> int:
        """The lowest seq a restart must fold from to rebuild every owed job."""
        if self.owed:
            return min(job.origin for job in self.owed.values())
        return self.head + 1

    def checkpoint(self) -> dict[str, Any]:
        floor = self.floor()
        routing = self.routing
        for seq, value in self._routing_at:
            if seq < floor:
                routing = value
        # Changes below the floor are no longer needed (but the one in force there).
        self._routing_at = [(floor - 1, routing)] + [c for c in self._routing_at if c[0] >= floor]
        # Every owed job carries the latest checkpoint recorded before its
        # origin: the floor's job has the one a fold from the floor starts with.
        at_floor = [job for job in self.owed.values() if job.origin == floor]
        signed = at_floor[0].checkpoint if at_floor else self.signed_checkpoint
        return {
            "version": 2,
            "floor": floor,
            "routing": routing,
            "report_number": self.report_number,
            "report_date": self.report_date.isoformat() if self.report_date else None,
            "last_receipt": list(self.last_receipt) if self.last_receipt else None,
            # The latest signed checkpoint recorded below the floor (what a
            # receipt folded from the floor on prints until the next one).
            "signed_checkpoint": signed,
        }

    def state(self) -> dict[str, Any]:
        """Everything the fold derived, comparable between a live and a rebuilt fold."""
        return {
            "owed": [job.key() for job in sorted(self.owed.values(), key=lambda j: j.origin)],
            "routing": self.routing,
            "report_number": self.report_number,
            "report_date": self.report_date,
            "last_receipt": self.last_receipt,
            "signed_checkpoint": self.signed_checkpoint,
        }

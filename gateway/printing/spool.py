"""The print spool: jobs derived from the ledger, queued per printer, retried until done.

The ledger is the spool's only source of truth (docs/printing.md, "The spool"):

- a receipt job follows from a durable `event` entry and the routes, so it
  needs no entry of its own;
- reprints, reports and status pages are queued by a durable `reprint`,
  `report` or `status_page` entry;
- a job ends with one `print` entry (printed, failed, cancelled, refused).

What is owed is one pure fold over durable entries (gateway/printing/fold.py):
live, the spool subscribes to the ledger's durable batches and folds each
entry in; after a restart it folds the ledger again from its floor (kept in
`spool.json` as a hint: lost or stale, it only makes the scan longer). Delivery
is at least once: a job that may have been partly printed is printed again in
full, marked "REPRINT - delivery uncertain".

Everything here runs on the event loop, except `prepare` (rendering, ledger
reads) and file writes, which run on one worker thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, PrinterConfig
from gateway.errors import LedgerError
from gateway.ledger import entries
from gateway.ledger.commit import DurableBatch, Ledger
from gateway.ledger.store import LedgerReader, list_segments
from gateway.logs import RateLimitedLog
from gateway.loop import EventLoop, Timer
from gateway.printing import reports
from gateway.printing.fold import Job, SpoolFold, checkpoint_of, request_job
from gateway.printing.transports import TRANSPORTS, Result
from gateway.printing.uri import PrinterURI, parse_uri
from gateway.render import templates
from gateway.render.languages import LANGUAGES, render

log = logging.getLogger("gateway.print")

CHECKPOINT_FILE = "spool.json"
# The checkpoint (a hint for the restart scan) is rewritten at most every 5 s.
CHECKPOINT_INTERVAL_S = 5.0
# While the clock is unsynchronised, look again for due reports every minute.
CLOCK_WAIT_S = 60.0
UNCERTAIN = "REPRINT - delivery uncertain"


class Router:
    """Routes: first match wins; a match is equality on top-level event fields."""

    def __init__(self, config: Config) -> None:
        self.routes = [
            (tuple(route.match.items()), route.printer)
            for route in config.routes
            if all(name in config.printers for name in route.printer)
        ]

    def __call__(self, event: dict[str, Any]) -> tuple[str, ...]:
        for match, printers in self.routes:
            for key, value in match:
                if event.get(key, _MISSING) != value:
                    break
            else:
                return printers
        return ()


_MISSING = object()


class Printer:
    """One printer: a FIFO of jobs, one delivery at a time, retries with backoff."""

    def __init__(self, spool: Spool, name: str, config: PrinterConfig) -> None:
        self.spool = spool
        self.name = name
        self.config = config
        self.uri: PrinterURI = parse_uri(config.uri)
        self.queue: collections.deque[Job] = collections.deque()
        self.queued_bytes = 0
        self.state = "ready"  # ready | error (a ledger entry on every change)
        self.error = ""
        self.error_since: float | None = None
        self.alerted = False
        self.busy = False  # a job is being prepared or delivered
        self.stopped = False  # the gateway is stopping, or a reload removed this printer
        self.delivery: Any = None  # the attempt in progress (a transport's delivery)
        self.retry_timer: Timer | None = None
        self.alert_timer: Timer | None = None
        self.delay = spool.config.spool.retry_start_s
        self.printed = 0

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.config.uri,
            "state": self.state,
            "error": self.error,
            "error_for_s": round(self.spool.loop.time() - self.error_since, 1)
            if self.error_since is not None
            else 0,
            "alert": self.alerted,
            "queued": len(self.queue),
            "queued_bytes": self.queued_bytes,
            "printed": self.printed,
            "current": self.queue[0].id if self.busy and self.queue else None,
        }

    def add(self, job: Job) -> bool:
        limits = self.spool.config.spool
        if len(self.queue) >= limits.max_jobs or self.queued_bytes + job.size > limits.max_bytes:
            return False
        self.queue.append(job)
        self.queued_bytes += job.size
        self.kick()
        return True

    def kick(self) -> None:
        if self.stopped or self.busy or not self.queue or self.retry_timer is not None:
            return
        if not self.spool.running:
            return
        job = self.queue[0]
        job.attempts += 1
        self.busy = True
        snapshot = self.spool.status_provider() if job.type == "status" else None
        log.info("print attempt", extra={"fields": self._fields(job)})
        self.spool.in_worker(
            lambda: prepare(self.spool.context, self.config, job, snapshot),
            lambda data, exc: self._prepared(job, data, exc),
        )

    def _prepared(self, job: Job, data: bytes | None, exc: BaseException | None) -> None:
        if self.stopped:
            self.busy = False
            return
        if exc is not None or data is None:
            # The job cannot be rendered (its entry is unreadable, or a bug):
            # retrying cannot help, so it fails for good, on the record.
            log.error(
                "print job failed: cannot prepare it",
                extra={"fields": {**self._fields(job), "error": repr(exc)}},
            )
            self._finished(job, "failed", 0, f"cannot prepare: {exc!r}")
            return
        extension = LANGUAGES[self.config.language].extension
        self.delivery = TRANSPORTS[self.uri.scheme](
            self.spool.loop,
            self.uri,
            data,
            lambda result: self._delivered(job, result),
            self.spool.config.spool.stall_timeout_s,
            name=f"{job.origin:012d}-{job.type}.{extension}",
            worker=self.spool.in_worker,
        )
        self.delivery.start()

    def _delivered(self, job: Job, result: Result) -> None:
        self.delivery = None
        if self.stopped:
            self.busy = False
            return
        fields = {**self._fields(job), "bytes": result.sent}
        if result.ok:
            log.info("print job delivered", extra={"fields": fields})
            self._set_state("ready", "")
            self.delay = self.spool.config.spool.retry_start_s
            self._finished(job, "printed", result.sent, "")
            return
        if result.sent:
            job.uncertain = True  # part of it may be on paper: the next copy says so
        retry_in = self.delay
        self.delay = min(self.delay * 2, self.spool.config.spool.retry_cap_s)
        log.warning(
            "print attempt failed",
            extra={"fields": {**fields, "error": result.error, "retry_in_s": retry_in}},
        )
        self._set_state("error", result.error)
        self.busy = False
        self.retry_timer = self.spool.loop.call_later(retry_in, self._retry)

    def _retry(self) -> None:
        self.retry_timer = None
        self.kick()

    def _finished(self, job: Job, outcome: str, sent: int, detail: str) -> None:
        self.queue.popleft()
        self.queued_bytes -= job.size
        self.busy = False
        if outcome == "printed":
            self.printed += 1
        self.spool.record_outcome(job, outcome, sent, detail)
        self.kick()

    def _set_state(self, state: str, error: str) -> None:
        self.error = error
        if state == self.state:
            return
        self.state = state
        clock = self.spool.loop.time()
        if state == "error":
            self.error_since = clock
            self.alert_timer = self.spool.loop.call_later(
                self.spool.config.spool.alert_after_s, self._alert
            )
        else:
            if self.alerted:
                log.warning("printer back after an alert", extra={"fields": {"printer": self.name}})
            self.error_since = None
            self.alerted = False
            if self.alert_timer is not None:
                self.alert_timer.cancel()
                self.alert_timer = None
        self.spool.append(entries.PRINTER, {"printer": self.name, "state": state, "error": error})

    def _alert(self) -> None:
        self.alert_timer = None
        if self.state != "error":
            return
        self.alerted = True
        log.error(
            "printer in error for too long",
            extra={
                "fields": {
                    "printer": self.name,
                    "error": self.error,
                    "seconds": self.spool.config.spool.alert_after_s,
                    "queued": len(self.queue),
                }
            },
        )

    def stop(self) -> list[str]:
        """Abort what is in flight; returns the ids of jobs that were being delivered."""
        self.stopped = True
        in_flight = [self.queue[0].id] if self.busy and self.queue else []
        if self.delivery is not None:
            in_flight = [self.queue[0].id] if self.delivery.sent and self.queue else []
            self.delivery.abort()
            self.delivery = None
        for timer in (self.retry_timer, self.alert_timer):
            if timer is not None:
                timer.cancel()
        return in_flight

    def _fields(self, job: Job) -> dict[str, Any]:
        """Log fields of a job: the event seqs, and for a receipt the id of the
        connection its event came in on (as in the ingest log lines), so that
        one event can be followed from its connection to the paper."""
        fields = {
            "printer": self.name,
            "job": job.id,
            "type": job.type,
            "seqs": list(job.seqs),
            "attempt": job.attempts,
        }
        if job.conn is None and job.payload:
            source = entries.decode(job.payload).get("source")
            job.conn = source.get("conn") if isinstance(source, dict) else None
        if job.conn is not None:
            fields["conn"] = job.conn
        return fields


# A reprint looks for the latest signed checkpoint before its event in the
# event's segment and the one before it, once, when it is requested (the
# reprint entry records what it found): with checkpoints on one is recorded
# every checkpoints.interval_s while entries arrive and at each seal when
# replicating, so two segments hold one unless the box signs nothing.
REPRINT_CHECKPOINT_SEGMENTS = 2


@dataclass(frozen=True)
class Context:
    """What the worker thread needs to prepare jobs (immutable, shared)."""

    name: str
    ledger_dir: Path


def prepare(
    context: Context, printer: PrinterConfig, job: Job, status: dict[str, Any] | None
) -> bytes:
    """A job's bytes in its printer's language (worker thread)."""
    mark = UNCERTAIN if job.uncertain else ""
    if job.type in ("receipt", "reprint"):
        seq = job.seqs[0]
        payload, hash_hex = job.payload, job.hash_hex
        if not payload:
            payload, hash_hex = read_entry(context.ledger_dir, seq)
        # A receipt prints the checkpoint its fold found; a reprint the one its entry records.
        signed = job.checkpoint
        if job.type == "reprint":
            copy = f"COPY {job.request.get('copy', 1)}"
            mark = f"{copy} - {mark}" if mark else copy
            signed = job.request.get("checkpoint")
        doc = templates.receipt(
            context.name,
            seq,
            hash_hex,
            entries.decode(payload),
            mark,
            checkpoint=templates.paper_checkpoint(signed),
        )
    elif job.type == "report":
        r = job.request
        date = dt.date.fromisoformat(r["date"])
        if r.get("first_seq") is None:
            rows: list = []
        else:
            rows, *_ = reports.collect_day(context.ledger_dir, date, r["first_seq"], r["last_seq"])
        doc = templates.daily_report(
            context.name,
            r["date"],
            r["number"],
            rows,
            r.get("first_seq"),
            r.get("last_seq"),
            r.get("last_hash"),
            mark,
        )
    elif job.type == "status":
        doc = templates.status_page(context.name, status or {})
    else:
        raise ValueError(f"unknown job type {job.type!r}")
    return render(doc, printer.language, printer.width)


def checkpoint_before(
    ledger_dir: Path, seq: int, segments: int = REPRINT_CHECKPOINT_SEGMENTS
) -> dict[str, Any] | None:
    """The latest `signed_checkpoint` entry before `seq`, looked for in the segment
    holding `seq` and the `segments` - 1 before it (None: none there)."""
    firsts = [first for first, _path in list_segments(ledger_dir) if first < seq]
    end = seq - 1
    for first in reversed(firsts[-segments:]):
        found = None
        for at, payload, _hash in LedgerReader(ledger_dir).entries(first, end):
            raw = bytes(payload)
            if b"signed_checkpoint" in raw:  # a cheap filter, then decode
                found = checkpoint_of(at, entries.decode(raw)) or found
        if found is not None:
            return found
        end = first - 1
    return None


def read_entry(ledger_dir: Path, seq: int) -> tuple[bytes, str]:
    for found, payload, chain_hash in LedgerReader(ledger_dir).entries(seq, seq):
        if found == seq:
            return bytes(payload), chain_hash.hex()
    raise LedgerError(f"seq {seq} is not in the ledger")


class Spool:
    def __init__(
        self,
        config: Config,
        loop: EventLoop,
        ledger: Ledger,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.ledger = ledger
        self.router = Router(config)
        self.context = Context(config.name or socket.gethostname(), config.ledger_dir)
        self.printers = {name: Printer(self, name, pc) for name, pc in config.printers.items()}
        # What is owed: rebuilt from the ledger at start(), then fed durable entries.
        self.fold = SpoolFold(self.router)
        # Report numbers and dates handed out by requests not yet durable.
        self._issued_number = 0
        self._issued_date: dt.date | None = None
        # A reprint's entry read while it was requested: printed without a second read.
        self._prefetched: dict[str, tuple[bytes, str]] = {}
        self._printed_last: tuple[int, str] | None = None
        self.running = False  # printing: between start() and stop()
        self.stopping = False
        self.refused = 0
        # A burst of refusals (a flood of events for a slow printer) logs 10
        # lines per 10 s and a count of the rest; every refusal is in the ledger.
        self._refusals = RateLimitedLog(log)
        # The whole gateway's status, for status pages.
        self.status_provider: Callable[[], dict[str, Any]] = status or self.status
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="print")
        self._checkpoint_dirty = True
        self._checkpoint_timer: Timer | None = None
        self._report_timer: Timer | None = None

    # ---- the one way to write: through the ledger's write path

    def append(self, kind: str, fields: dict[str, Any]) -> int:
        return self.ledger.record(kind, fields)

    @property
    def report_number(self) -> int:
        return max(self.fold.report_number, self._issued_number)

    @property
    def report_date(self) -> dt.date | None:
        dates = [d for d in (self.fold.report_date, self._issued_date) if d is not None]
        return max(dates) if dates else None

    @property
    def last_receipt(self) -> tuple[int, str] | None:
        """The receipt printed last: this run's latest outcome (its entry may not be
        folded in yet), else what the fold found in the ledger."""
        return self._printed_last or self.fold.last_receipt

    def in_worker(
        self, fn: Callable[[], Any], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Run `fn` on the worker thread; `done(result, exception)` runs on the loop."""

        def finished(future: concurrent.futures.Future) -> None:
            exc = future.exception()
            result = None if exc is not None else future.result()
            self.loop.post(lambda: done(result, exc))

        self._worker.submit(fn).add_done_callback(finished)

    # ---- from the ledger: durable entries only

    def on_durable(self, batch: DurableBatch) -> None:
        """A ledger subscriber (with entries): fold them in, queue what became owed."""
        fold = self.fold
        for entry in batch.entries:
            if entry.seq <= fold.head:
                continue  # folded already by start()'s scan
            made = fold.apply(entry.seq, entry.hash, entry.decoded(), entry.payload)
            for job in made:
                prefetched = self._prefetched.pop(job.id, None)
                if prefetched is not None:
                    job.payload, job.hash_hex = prefetched
                self._queue(job)
        if batch.entries:
            self._checkpoint_dirty = True

    def _queue(self, job: Job) -> None:
        printer = self.printers.get(job.printer)
        if printer is None:
            self.record_outcome(job, "cancelled", 0, f"no printer named {job.printer!r}")
            return
        if not printer.add(job):
            self.refused += 1
            self._refusals.error(
                "print job refused: the spool is full",
                {"printer": job.printer, "job": job.id, "queued": len(printer.queue)},
                self.loop.time(),
            )
            self.record_outcome(job, "refused", 0, "spool full")

    def record_outcome(self, job: Job, outcome: str, sent: int, detail: str) -> None:
        """One `print` entry ends the job (the fold settles it once durable)."""
        if outcome == "printed" and job.type in ("receipt", "reprint"):
            self._printed_last = (job.seqs[0], job.printer)
        self.append(
            entries.PRINT,
            {
                "job": job.id,
                "type": job.type,
                "printer": job.printer,
                "seqs": list(job.seqs),
                "outcome": outcome,
                "bytes": sent,
                "attempts": job.attempts,
                "uncertain": job.uncertain,
                "detail": detail,
            },
        )

    # ---- requests (control socket, button, schedule)

    def request_status_page(self, printer: str | None, by: str) -> dict[str, Any]:
        name = printer or self._default_printer()
        if name not in self.printers:
            return {"ok": False, "error": f"no printer named {name!r}"}
        job = self._request(entries.STATUS_PAGE, {"printer": name, "requested_by": by})
        return {"ok": True, "job": job.id}

    def _request(self, kind: str, fields: dict[str, Any]) -> Job:
        """Append a request entry; its job is queued once the entry is durable."""
        origin = self.ledger.next_seq
        fields = {"job": f"{origin}/{fields['printer']}", **fields}
        self.append(kind, fields)
        return request_job(origin, {"kind": kind, **fields})

    def request_reprint(
        self, seq: int | None, printer: str | None, by: str, reply: Callable[[dict], None]
    ) -> None:
        """Reprint a receipt (default: the last one printed), marked COPY n."""
        if seq is None:
            if self.last_receipt is None:
                reply({"ok": False, "error": "no receipt has been printed yet"})
                return
            seq, last_printer = self.last_receipt
            printer = printer or last_printer
        name = printer or self._default_printer()
        if name not in self.printers:
            reply({"ok": False, "error": f"no printer named {name!r}"})
            return
        if not 1 <= seq <= self.ledger.durable.seq:
            reply({"ok": False, "error": f"seq {seq} is not a durable entry"})
            return
        ledger_dir = self.config.ledger_dir

        def find() -> tuple[bytes, str, int, dict[str, Any] | None]:
            payload, hash_hex = read_entry(ledger_dir, seq)
            if entries.decode(payload).get("kind") != entries.EVENT:
                raise LedgerError(f"seq {seq} is not an event")
            copies = 0
            for _s, later, _h in LedgerReader(ledger_dir).entries(seq + 1):
                if bytes(later[:40]).find(b"reprint") >= 0:  # cheap filter, then decode
                    e = entries.decode(later)
                    if e.get("kind") == entries.REPRINT and e.get("event_seq") == seq:
                        copies += 1
            return payload, hash_hex, copies, checkpoint_before(ledger_dir, seq)

        def found(result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                reply({"ok": False, "error": str(exc)})
                return
            payload, hash_hex, copies, signed = result
            fields = {"printer": name, "event_seq": seq, "copy": copies + 1, "hash": hash_hex}
            if signed is not None:
                fields["checkpoint"] = signed
            job = self._request(entries.REPRINT, {**fields, "requested_by": by})
            self._prefetched[job.id] = (payload, hash_hex)  # no second read to print it
            reply({"ok": True, "job": job.id, "seq": seq, "copy": copies + 1})

        self.in_worker(find, found)

    def request_report(
        self, date: dt.date, printer: str | None, by: str, reply: Callable[[dict], None]
    ) -> None:
        """Make the numbered report of `date` and queue it."""
        name = printer or self._default_printer(report=True)
        if name not in self.printers:
            reply({"ok": False, "error": f"no printer named {name!r}"})
            return
        ledger_dir, to_seq = self.config.ledger_dir, self.ledger.durable.seq

        def found(result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                reply({"ok": False, "error": str(exc)})
                return
            rows, first, last, last_hash = result
            number = self._issued_number = self.report_number + 1
            if self._issued_date is None or date > self._issued_date:
                self._issued_date = date
            fields = {
                "printer": name,
                "number": number,
                "date": date.isoformat(),
                "first_seq": first,
                "last_seq": last,
                "count": len(rows),
                "last_hash": last_hash,
                "requested_by": by,
            }
            job = self._request(entries.REPORT, fields)
            self._checkpoint_dirty = True
            reply({"ok": True, "job": job.id, "number": number, "count": len(rows)})

        self.in_worker(lambda: reports.collect_day(ledger_dir, date, to_seq=to_seq), found)

    def _default_printer(self, report: bool = False) -> str:
        daily = self.config.reports.daily
        if report and daily is not None:
            return daily.printer
        if self.config.routes:
            return self.config.routes[0].printer[0]
        return next(iter(self.printers), "")

    # ---- the daily schedule

    def _schedule_reports(self) -> None:
        daily = self.config.reports.daily
        if daily is None or self.stopping:
            return
        first = self._first_day
        if not self.loop.clock.synced:
            # Without a synchronised clock "yesterday" is unknown: wait for it.
            self._report_timer = self.loop.call_later(CLOCK_WAIT_S, self._schedule_reports)
            return
        if first is not None:
            now = self.loop.clock.wall()
            for date in reports.due_dates(self.report_date, first, daily.at, now):
                self.request_report(date, daily.printer, "schedule", self._log_reply)
                self._issued_date = date  # each missed day once, even before the reply
        self._report_timer = self.loop.call_later(
            reports.next_due(daily.at, self.loop.clock.wall()), self._schedule_reports
        )

    @staticmethod
    def _log_reply(reply: dict) -> None:
        level = logging.INFO if reply.get("ok") else logging.ERROR
        log.log(level, "daily report", extra={"fields": reply})

    # ---- a reload

    def reconfigure(self, config: Config) -> None:
        """New printers, routes, reports and limits, keeping every queued job.

        A changed printer keeps its queue (the next attempt uses the new
        settings); a removed printer's queued jobs are cancelled, each with a
        `print` entry; new printers start empty.
        """
        self.config = config
        self.router = self.fold.router = Router(config)
        self.context = Context(config.name or socket.gethostname(), config.ledger_dir)
        for name in [n for n in self.printers if n not in config.printers]:
            printer = self.printers.pop(name)
            printer.stop()
            for job in printer.queue:
                self.record_outcome(job, "cancelled", 0, "printer removed by a reload")
        for name, printer_config in config.printers.items():
            printer = self.printers.get(name)
            if printer is None:
                self.printers[name] = Printer(self, name, printer_config)
            elif printer.config != printer_config:
                printer.config = printer_config
                printer.uri = parse_uri(printer_config.uri)
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        self._schedule_reports()
        for printer in self.printers.values():
            printer.kick()

    # ---- start, stop, status

    def start(self, clean_stop: dict | None) -> None:
        """Rebuild the queues from the ledger, then start printing."""
        started = time.monotonic()
        checkpoint = self._read_checkpoint()
        self.fold = SpoolFold(self.router, checkpoint)
        floor = self.fold.floor_hint
        head = self.ledger.durable.seq
        scanned = self.fold.fold(LedgerReader(self.config.ledger_dir).entries(floor, head))
        self.fold.head = max(self.fold.head, head)
        for job in self.fold.owed.values():  # dicts keep insertion order: seq order
            self._queue(job)
        in_flight = set()
        if clean_stop is not None and clean_stop.get("head") == head:
            in_flight = set(clean_stop.get("in_flight", []))
        for printer in self.printers.values():
            for i, job in enumerate(printer.queue):
                if job.id in in_flight or (clean_stop is None and i == 0):
                    job.uncertain = True  # it may have been on its way when we stopped
        self._first_day = self._first_ledger_day()
        # The clean-stop record is spent: a crash from here on must not look clean.
        self._write_checkpoint({})
        log.info(
            "spool ready",
            extra={
                "fields": {
                    "floor": floor,
                    "scanned": scanned,
                    "seconds": round(time.monotonic() - started, 3),
                    "queued": {n: len(p.queue) for n, p in self.printers.items()},
                }
            },
        )
        self._checkpoint_timer = self.loop.call_later(CHECKPOINT_INTERVAL_S, self._checkpoint_tick)
        self._schedule_reports()
        self.running = True
        for printer in self.printers.values():
            printer.kick()

    def _first_ledger_day(self) -> dt.date | None:
        for _seq, payload, _hash in LedgerReader(self.config.ledger_dir).entries(1, 1):
            received = entries.decode(payload).get("received_at")
            if isinstance(received, int):
                return dt.datetime.fromtimestamp(received / 1e6).date()
        return None

    def stop(self) -> list[str]:
        """Abort deliveries in flight; returns their job ids for the `stopped` entry."""
        self.stopping = True
        self.running = False
        in_flight: list[str] = []
        for printer in self.printers.values():
            in_flight += printer.stop()
        for timer in (self._checkpoint_timer, self._report_timer):
            if timer is not None:
                timer.cancel()
        return in_flight

    def close(self, in_flight: list[str]) -> None:
        """After the last commit: write the checkpoint, stop the worker."""
        self._write_checkpoint(
            {"clean_stop": {"head": self.ledger.durable.seq, "in_flight": in_flight}}
        )
        self._worker.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {
            "printers": [p.status() for p in self.printers.values()],
            "report_number": self.report_number,
            "report_date": self.report_date.isoformat() if self.report_date else None,
            "refused": self.refused,
        }

    @property
    def healthy(self) -> bool:
        return not any(p.alerted for p in self.printers.values())

    # ---- the checkpoint: a hint, never the truth

    def floor(self) -> int:
        """The oldest seq the spool still needs (retention keeps its segment)."""
        return self.fold.floor()

    def _checkpoint_tick(self) -> None:
        if self._checkpoint_dirty:
            self._write_checkpoint({})
        self._checkpoint_timer = self.loop.call_later(CHECKPOINT_INTERVAL_S, self._checkpoint_tick)

    def _write_checkpoint(self, extra: dict[str, Any]) -> None:
        self._checkpoint_dirty = False
        data = {**self.fold.checkpoint(), **extra}
        path = self.config.state_dir / CHECKPOINT_FILE
        tmp = path.with_suffix(".tmp")
        try:
            # No fsync: after a power cut an old (lower) floor only lengthens the
            # next scan, and a missing file means a scan from seq 1.
            tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the spool checkpoint", extra={"fields": {"error": str(exc)}})

    def _read_checkpoint(self) -> dict[str, Any]:
        path = self.config.state_dir / CHECKPOINT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("spool checkpoint unreadable; scanning the whole ledger",
                        extra={"fields": {"error": str(exc)}})  # fmt: skip
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("floor"), int):
            return {}
        return data

    def clean_stop_hint(self) -> dict | None:
        """The previous run's clean-stop record, if the checkpoint has one."""
        hint = self._read_checkpoint().get("clean_stop")
        return hint if isinstance(hint, dict) else None

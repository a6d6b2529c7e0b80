"""`gateway run`: wire the loop, the ledger, the durability thread and ingest.

Start-up: lock the state directory, recover the ledger tail, record what
recovery did and a `started` entry, bind the listeners. Shutdown (SIGTERM or
SIGINT): stop accepting, take in what clients already sent, commit it, send
the last replies, append `stopped`, exit 0.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import errno
import fcntl
import functools
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from board.button import Button
from board.evdev import Press
from board.fake import make_fake_board
from board.leds import StatusLed
from gateway import __version__, clock
from gateway.audit.index import Indexer
from gateway.config import Config, load_config
from gateway.control import ControlServer
from gateway.errors import ConfigError, LedgerError
from gateway.ingest.redact import Redactor
from gateway.ingest.server import IngestServer
from gateway.ledger import entries
from gateway.ledger.durability import BatchResult, DurabilityThread
from gateway.ledger.retention import Retention
from gateway.ledger.store import DIR_MODE, LedgerWriter
from gateway.loop import EventLoop, Timer
from gateway.metrics import MetricsServer
from gateway.notify import Notifier
from gateway.printing.spool import Spool

log = logging.getLogger("gateway.ops")

# After the last entry is durable, wait at most this long for clients to read
# their final replies before closing their connections anyway.
SHUTDOWN_FLUSH_S = 5.0
# A commit pending this long makes the gateway unhealthy (watchdog pings stop):
# an SD card syncs in well under a second; 10 s means the storage is stuck.
SYNC_PENDING_LIMIT_S = 10.0
# STATUS= is sent when it changes, and at least this often under systemd.
STATUS_INTERVAL_S = 10.0
# Status figures: the last 1,000 commit durations, and 15 minutes of
# once-a-second event counts (the 1, 5 and 15 minute ingest rates).
SYNC_SAMPLES = 1000
RATE_SAMPLES = 15 * 60 + 1
# Above this many events per second (over the last health tick) the query
# index waits: it catches up when ingest has time to spare (docs/audit.md).
INDEX_YIELD_EPS = 1000
# Health is checked (and the LED updated) every second; the watchdog is pinged
# at that pace or at half WATCHDOG_USEC, whichever is more often.
HEALTH_TICK_S = 1.0

LOCK_FILE = "gateway.lock"
# The key of redaction digests and of refused lines' keyed digests.
REDACT_KEY_FILE = "redact.key"

# File descriptors beyond the client connections: listeners, ledger segments,
# the wake-up pair, printers, the control socket, lingering refused sockets.
FD_HEADROOM = 512


def raise_fd_limit(connections: int) -> None:
    """Lift the soft RLIMIT_NOFILE (often 1024) so max_connections can be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning(
                "file descriptor limit is below what max_connections needs",
                extra={"fields": {"limit": new, "wanted": wanted}},
            )


def lock_state_dir(state_dir: Path) -> int:
    """Take the exclusive lock that makes this process the ledger's only writer."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LedgerError(
                f"another gateway is already running on {state_dir} (lock {LOCK_FILE} is held)"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte secret kept in the state directory (mode 0600), made on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise LedgerError(f"{path} is not a 32-byte key; restore it or remove it") from None
        return key
    key = os.urandom(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _always_synced() -> bool:
    return True


class Gateway:
    def __init__(
        self,
        config: Config,
        loop: EventLoop | None = None,
        notifier: Notifier | None = None,
        clock_synced: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        # The kernel's NTP state (a seam for tests); not asked with check_sync off.
        if not config.clock.check_sync:
            clock_synced = _always_synced
        self.clock_synced = clock_synced or clock.clock_synced
        self.clock_ok = True
        self.loop = loop or EventLoop()
        self.notifier = notifier if notifier is not None else Notifier()
        self.unhealthy_reason = ""
        self._last_status = ""
        # The last commits' durations (for p50/p99) and one (time, events)
        # sample per health tick over 15 minutes (for the ingest rates).
        self.sync_latencies: collections.deque[float] = collections.deque(maxlen=SYNC_SAMPLES)
        self.event_samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=RATE_SAMPLES
        )
        self._status_sent_at = 0.0
        self.button: Button | None = None
        self.led: StatusLed | None = None
        self.ledger = LedgerWriter(
            config.ledger_dir,
            segment_bytes=config.ledger.segment_bytes,
            per_entry_sync=config.ledger.fsync == "always",
            clock=self.loop.clock,
        )
        self.durability = DurabilityThread(
            functools.partial(self.loop.post, urgent=True),
            self._on_batch,
            sync=config.ledger.fsync != "off",
        )
        self.ingest = IngestServer(self.loop, self.ledger, config.ingest)
        # A configuration without printers prints nothing and has no spool.
        self.spool = self._new_spool(config) if config.printers else None
        if self.spool is not None and config.routes:
            self.ingest.on_event = self.spool.on_event
        self.control = ControlServer(self.loop, config.control_path, self._control)
        self.metrics = (
            MetricsServer(self.loop, config.metrics.listen, self.status)
            if config.metrics.listen
            else None
        )
        self.metrics_address: tuple[str, int] | None = None
        self.indexer = (
            Indexer(config.state_dir, config.ledger_dir) if config.index.enabled else None
        )
        self.retention = Retention(
            config.retention, config.state_dir, self.loop, self.ledger, self._needed_from
        )
        self.bound: list[tuple[str, int]] = []
        self.sync_interval_s = config.ledger.min_sync_interval_ms / 1000
        self._commit_timer: Timer | None = None
        self._in_flight: list[str] = []
        self.started_at = time.monotonic()
        self.stopping = False
        self.exit_code = 0
        self.ledger_error: OSError | None = None
        self.syncs = 0
        self.batches = 0
        self._lock_fd: int | None = None

    # ---- start

    def start(self) -> list[tuple[str, int]]:
        """Lock, bind, recover, rebuild the spool; on failure release what was taken."""
        try:
            return self._start()
        except BaseException:
            self.ingest.stop_accepting()
            self.ingest.close_all()
            self.control.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.durability.is_alive():
                self.durability.stop()
            self.loop.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise

    def _start(self) -> list[tuple[str, int]]:
        self._lock_fd = lock_state_dir(self.config.state_dir)
        self.ingest.redactor = self._redactor(self.config)
        raise_fd_limit(self.config.ingest.max_connections)
        # Bind first: a port in use stops the start before recovery touches the
        # ledger, so a `recovered` entry can never be lost to a failed start.
        bound = self.bound = self.ingest.listen(self.config.source)
        if self.metrics is not None:
            self.metrics_address = self.metrics.listen()
        if self.config.ledger.fsync == "off":
            log.warning(
                "ledger.fsync is off: acknowledged events can be lost on power failure; "
                "use this for benchmarks only"
            )
        self.ledger.open()
        self._check_clock(first=True)
        self._check_disk()
        clean_stop = None
        if self.spool is not None:
            hint = self.spool.clean_stop_hint()
            if hint is not None and hint.get("head") == self.ledger.next_seq - 1:
                clean_stop = hint  # the last run stopped cleanly and nothing came after
        now = time.time_ns() // 1000
        if self.ledger.recovery is not None:
            report = asdict(self.ledger.recovery)
            log.warning("ledger tail recovered", extra={"fields": report})
            self.ledger.append(entries.encode_system(now, "recovered", report))
        self.ledger.append(
            entries.encode_system(
                now,
                "started",
                {
                    "version": __version__,
                    "config_hash": self.config.digest(),
                    "pid": os.getpid(),
                    # Whether events from here on are routed to printers: the
                    # spool's restart scan owes receipts only for those.
                    "printing": self.ingest.on_event is not None,
                    "timezone": self.config.zone_name,
                },
            )
        )
        self.durability.start()
        if self.indexer is not None:
            self.indexer.start()
            self.indexer.notify(self.ledger.durable.seq)
        self.retention.start()
        self.loop.add_idle_hook(self._commit_if_idle)
        self.control.listen()
        if self.spool is not None:
            self.spool.start(clean_stop)
        # Recovery is done and every listener is bound: now systemd may count us up.
        self._start_board()
        self.notifier.ready(self.status_line())
        self._supervise()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.request_stop)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info(
            "gateway ready",
            extra={
                "fields": {
                    "version": __version__,
                    "listen": [f"{h}:{p}" for h, p in bound],
                    "state_dir": str(self.config.state_dir),
                    "head_seq": self.ledger.next_seq - 1,
                    "fsync": self.config.ledger.fsync,
                }
            },
        )
        return bound

    # ---- group commit

    def _commit_if_idle(self) -> None:
        if self.durability.busy or not self.ledger.staged_entries:
            return
        wait = self.durability.submitted_at + self.sync_interval_s - time.monotonic()
        if wait > 0 and not self.stopping:
            # ledger.min_sync_interval_ms: come back when the interval is over.
            if self._commit_timer is None:
                self._commit_timer = self.loop.call_later(wait, self._commit_timer_fired)
            return
        batch = self.ledger.take_batch()
        if batch is not None:
            self.durability.submit(batch)

    def _commit_timer_fired(self) -> None:
        self._commit_timer = None
        self._commit_if_idle()

    def _on_batch(self, result: BatchResult) -> None:
        if result.error is not None:
            if self.ledger_error is None:
                log.error(
                    "ledger write failed; retrying, no acknowledgements until it succeeds",
                    extra={
                        "fields": {"error": str(result.error), "first_seq": result.batch.first_seq}
                    },
                )
            self.ledger_error = result.error
            return
        if self.ledger_error is not None:
            log.warning("ledger writes succeed again")
            self.ledger_error = None
        self.batches += 1
        self.syncs += result.syncs
        self.sync_latencies.append(result.elapsed_s)
        self.ledger.batch_done(result.batch)
        self._commit_if_idle()  # what was staged meanwhile goes to the disk at once
        self.ingest.on_durable()
        if self.spool is not None:
            self.spool.on_durable()
        if self.indexer is not None:
            self.indexer.notify(result.batch.last_seq)
        self.retention.on_durable()

    def _needed_from(self) -> int:
        """The oldest seq this process still reads: retention keeps the segment holding it."""
        needed = [self.ledger.durable.seq + 1]
        if self.spool is not None:
            needed.append(self.spool.floor())
        if self.indexer is not None and not self.indexer.error:
            needed.append(self.indexer.indexed + 1)
        return min(needed)

    # ---- status and control

    def status(self) -> dict:
        head = self.ledger.durable
        printing = self.spool.status() if self.spool is not None else {"printers": []}
        health = "ok"
        reason = self.health()
        if reason:
            health = f"unhealthy: {reason}"
        elif self.ingest.disk_full:
            health = "disk full: new events refused"
        elif self.spool is not None and not self.spool.healthy:
            health = "printer alert"
        return {
            "version": __version__,
            "health": health,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "state_dir": str(self.config.state_dir),
            "listen": [f"{h}:{p}" for h, p in self.bound],
            "ledger": {
                "entries": head.seq,
                "head_seq": head.seq,
                "head_hash": head.hash.hex(),
                "error": str(self.ledger_error) if self.ledger_error else None,
                # Since start: commit batches written, and the fdatasync calls they took.
                "batches": self.batches,
                "syncs": self.syncs,
            },
            "connections": len(self.ingest.connections),
            "acks_pending": self.ingest.replies_owed,
            "ingest_rates": self.ingest_rates(),
            "sync_ms": self.sync_percentiles(),
            "free_bytes": self._free_or_none(),
            "index": {
                "enabled": self.indexer is not None,
                "indexed_seq": self.indexer.indexed if self.indexer else 0,
                "lag": self.indexer.lag if self.indexer else 0,
                "error": self.indexer.error if self.indexer else "",
            },
            "retention": self.retention.status(),
            "events": self.ingest.stats.events,
            "rejected": self.ingest.stats.rejected,
            **printing,
        }

    def ingest_rates(self) -> dict[str, float]:
        """Events per second over the last 1, 5 and 15 minutes (or as long as we ran)."""
        rates: dict[str, float] = {}
        if not self.event_samples:
            return {"1m": 0.0, "5m": 0.0, "15m": 0.0}
        now, count = self.event_samples[-1]
        for label, window in (("1m", 60), ("5m", 300), ("15m", 900)):
            old_t, old_n = next(
                ((t, n) for t, n in self.event_samples if now - t <= window), (now, count)
            )
            rates[label] = round((count - old_n) / (now - old_t), 1) if now > old_t else 0.0
        return rates

    def sync_percentiles(self) -> dict[str, float]:
        latencies = sorted(self.sync_latencies)
        if not latencies:
            return {"p50": 0.0, "p99": 0.0, "samples": 0}
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        return {
            "p50": round(pick(0.50) * 1000, 2),
            "p99": round(pick(0.99) * 1000, 2),
            "samples": len(latencies),
        }

    def _free_or_none(self) -> int | None:
        try:
            return self.free_bytes(self.config.ledger_dir)
        except OSError:
            return None

    def status_line(self) -> str:
        """One line for systemd's STATUS=: entries, head, connections, printers."""
        head = self.ledger.durable.seq
        printers = ""
        if self.spool is not None:
            printers = ", printers: " + " ".join(
                f"{p.name}={p.state}" for p in self.spool.printers.values()
            )
        health = "" if not self.unhealthy_reason else f"UNHEALTHY ({self.unhealthy_reason}), "
        return (
            f"{health}entries {head}, head seq {head}, "
            f"connections {len(self.ingest.connections)}{printers}"
        )

    def health(self) -> str:
        """'' when healthy, else why (docs/operations.md, "Watchdog").

        Healthy: the loop turns (this runs on it), the durability thread is
        alive, no commit has been pending longer than SYNC_PENDING_LIMIT_S, and
        the last commit succeeded. Printers do not count: restarting the
        gateway does not bring a printer back.
        """
        if not self.durability.is_alive():
            return "the durability thread has stopped"
        if self.ledger_error is not None:
            return f"the ledger cannot be written: {self.ledger_error}"
        pending = time.monotonic() - self.durability.submitted_at
        if self.durability.busy and pending > SYNC_PENDING_LIMIT_S:
            return f"a ledger commit has been pending for {pending:.0f} s"
        return ""

    def _supervise(self) -> None:
        """Every HEALTH_TICK_S on the loop: health, WATCHDOG=1 while healthy, STATUS=, LED."""
        if self.stopping:
            return
        self._check_clock()
        self._check_disk()
        self.event_samples.append((self.loop.clock(), self.ingest.stats.events))
        if self.indexer is not None and len(self.event_samples) >= 2:
            (t0, n0), (t1, n1) = self.event_samples[-2], self.event_samples[-1]
            busy = t1 > t0 and (n1 - n0) / (t1 - t0) > INDEX_YIELD_EPS
            self.indexer.yield_to_ingest = busy
        reason = self.health()
        if reason != self.unhealthy_reason:
            if reason:
                log.error("unhealthy: watchdog pings stop", extra={"fields": {"reason": reason}})
            else:
                log.warning("healthy again: watchdog pings resume")
            self.unhealthy_reason = reason
        now = self.loop.clock()
        interval = self.notifier.watchdog_interval_s
        if not reason and interval is not None:
            self.notifier.watchdog()
        if self.notifier.enabled:
            line = self.status_line()
            if line != self._last_status or now - self._status_sent_at >= STATUS_INTERVAL_S:
                self.notifier.status(line)
                self._last_status, self._status_sent_at = line, now
        if self.led is not None:
            printer_error = self.spool is not None and any(
                p.state == "error" for p in self.spool.printers.values()
            )
            self.led.show("ledger" if reason else "printer" if printer_error else "ok")
        self.loop.call_later(min(interval or HEALTH_TICK_S, HEALTH_TICK_S), self._supervise)

    def _check_disk(self) -> None:
        """Refuse new events while free space is below ledger.min_free_bytes."""
        try:
            free = self.free_bytes(self.config.ledger_dir)
        except OSError:
            return
        full = free < self.config.ledger.min_free_bytes
        if full == self.ingest.disk_full:
            return
        self.ingest.disk_full = full
        fields = {"free_bytes": free, "min_free_bytes": self.config.ledger.min_free_bytes}
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

    def _check_clock(self, first: bool = False) -> None:
        """Follow the clock's sync state: flag entries and hold the report while unsynced."""
        synced = self.clock_synced()
        if synced == self.clock_ok and not first:
            return
        self.clock_ok = synced
        entries.set_clock_unsynced(not synced)
        if first and synced:
            return  # the normal case: nothing to record
        self.ledger.append(
            entries.encode_system(time.time_ns() // 1000, "clock", {"synced": synced})
        )
        if synced:
            log.info("system clock synchronised: entries are no longer flagged")
        else:
            log.warning(
                "system clock not synchronised: entries are flagged clock_unsynced and the "
                "daily report waits"
            )

    # ---- front panel

    def _start_board(self) -> None:
        board = self.config.board
        device, led = board.button.device, board.leds.status
        if board.fake:
            fifo, fake_led = make_fake_board(self.config.fake_board_dir)
            device, led = device or str(fifo), led or str(fake_led)
        if led:
            self.led = StatusLed(led)
        if device:
            self.button = Button(self.loop, device, board.button.keycode, self._on_press)
            self.button.start()

    def _on_press(self, press: Press) -> None:
        """Short press: reprint the last receipt; long press: the status page."""
        long = press.held_s >= self.config.board.button.long_press_s
        action = "status_page" if long else "reprint"
        if self.spool is None:
            action = "none (no printers)"
        self.ledger.append(
            entries.encode_record(
                entries.BUTTON,
                time.time_ns() // 1000,
                {"button": "reprint", "held_s": round(press.held_s, 3), "action": action},
            )
        )
        log.info("button pressed", extra={"fields": {"held_s": press.held_s, "action": action}})
        if self.spool is None:
            return
        if long:
            self.spool.request_status_page(None, "button")
        else:
            self.spool.request_reprint(None, None, "button", self._log_button_reply)

    @staticmethod
    def _log_button_reply(reply: dict) -> None:
        if not reply.get("ok"):
            log.warning("button: nothing to reprint", extra={"fields": reply})

    def _control(self, request: dict, reply) -> None:
        cmd = request["cmd"]
        spool = self.spool
        if cmd == "status":
            reply({"ok": True, "status": self.status()})
        elif spool is None:
            reply({"ok": False, "error": "no printers are configured"})
        elif not isinstance(request.get("printer"), str | None):
            reply({"ok": False, "error": "printer must be a printer's name"})
        elif cmd == "reprint":
            seq = request.get("seq")
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
                reply({"ok": False, "error": "seq must be a number"})
                return
            spool.request_reprint(seq, request.get("printer"), "control", reply)
        elif cmd == "print_status_page":
            reply(spool.request_status_page(request.get("printer"), "control"))
        elif cmd == "report":
            try:
                date = dt.date.fromisoformat(str(request.get("date")))
            except ValueError:
                reply({"ok": False, "error": "date must be YYYY-MM-DD"})
                return
            spool.request_report(date, request.get("printer"), "control", reply)
        else:
            reply({"ok": False, "error": f"unknown command {cmd!r}"})

    # ---- stop

    def reload(self) -> None:
        """SIGHUP: apply the configuration file again, without dropping anything.

        Printers, routes, reports, spool and ingest limits, the name and the log
        level change in place; connections stay open and queued jobs stay queued
        (a removed printer's jobs are cancelled on the record). `state_dir`,
        `ingest.listen`, `ledger` and `board` need a restart: a change there is
        logged and kept for the next start. A file that does not load is refused
        and the running configuration stays. Either way the ledger records it.
        """
        if self.stopping:
            return
        self.notifier.send("RELOADING=1")
        now = time.time_ns() // 1000
        old = self.config
        try:
            if old.source == "<defaults>":
                new = load_config(None, old.state_dir)
            else:
                new = load_config(Path(old.source))
        except ConfigError as exc:
            log.error("configuration reload refused", extra={"fields": {"reason": str(exc)}})
            self.ledger.append(entries.encode_system(now, "reload_refused", {"reason": str(exc)}))
            self.notifier.ready(self.status_line())
            return
        restart_needed = [
            key
            for key, before, after in (
                ("state_dir", old.state_dir, new.state_dir),
                ("ingest.listen", old.ingest.listen, new.ingest.listen),
                ("ledger", old.ledger, new.ledger),
                ("board", old.board, new.board),
            )
            if before != after
        ]
        if restart_needed:
            log.warning(
                "configuration changes that need a restart were not applied",
                extra={"fields": {"keys": restart_needed}},
            )
        effective = dataclasses.replace(
            new,
            state_dir=old.state_dir,
            ingest=dataclasses.replace(new.ingest, listen=old.ingest.listen),
            ledger=old.ledger,
            board=old.board,
        )
        self.config = effective
        self.ingest.reconfigure(effective.ingest)
        self.ingest.redactor = self._redactor(effective)
        logging.getLogger("gateway").setLevel(effective.log.level.upper())
        self._reconfigure_printing(effective)
        self.retention.reconfigure(effective.retention)
        self.ledger.append(
            entries.encode_system(
                now,
                "reloaded",
                {
                    "config_hash": new.digest(),
                    "printing": self.ingest.on_event is not None,
                    "restart_needed": restart_needed,
                    "timezone": effective.zone_name,
                },
            )
        )
        log.info(
            "configuration reloaded",
            extra={"fields": {"config_hash": new.digest(), "restart_needed": restart_needed}},
        )
        self.notifier.ready(self.status_line())

    def _redactor(self, config: Config) -> Redactor | None:
        """Redaction as configured (None when it has nothing to do)."""
        redact = config.redact
        if not redact.keys and not redact.cards:
            return None
        key = load_or_create_key(config.state_dir / REDACT_KEY_FILE)
        return Redactor(redact.keys, redact.cards, key, redact.digest)

    def _new_spool(self, config: Config) -> Spool:
        spool = Spool(config, self.loop, self.ledger)
        spool.status_provider = self.status
        spool.clock_ok = lambda: self.clock_ok
        return spool

    def _reconfigure_printing(self, config: Config) -> None:
        if self.spool is not None and not config.printers:
            self.spool.stop()  # unprinted jobs stay owed in the ledger
            self.spool.close([])
            self.spool = None
        elif self.spool is not None:
            self.spool.reconfigure(config)
        elif config.printers:
            self.spool = self._new_spool(config)
            self.spool.start(None)
        routing = self.spool is not None and bool(config.routes)
        self.ingest.on_event = self.spool.on_event if routing and self.spool else None

    def request_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.notifier.stopping()
        log.info("stopping: no new connections; committing what clients already sent")
        self.ingest.stop_accepting()
        self.ingest.drain_all()
        self._in_flight = self.spool.stop() if self.spool is not None else []
        self.retention.stop()
        self.ledger.append(
            entries.encode_system(
                time.time_ns() // 1000,
                "stopped",
                {
                    "version": __version__,
                    "events": self.ingest.stats.events,
                    "print_in_flight": self._in_flight,
                },
            )
        )
        self.loop.stop()

    def run(self) -> int:
        self.loop.run()
        self._finish()
        return self.exit_code

    def _finish(self) -> None:
        """Commit the rest, send the last replies, then close everything."""
        deadline = self.loop.clock() + SHUTDOWN_FLUSH_S
        target = self.ledger.next_seq - 1
        while self.ledger.durable.seq < target or self.durability.busy:
            self.loop.run_once(max_wait=0.1)
            if self.ledger_error is not None and self.loop.clock() > deadline:
                log.error("stopping with entries not yet durable: the ledger cannot be written")
                self.exit_code = 1
                break
        flush_deadline = self.loop.clock() + SHUTDOWN_FLUSH_S
        while (
            self.ingest.connections or self.ingest.lingering
        ) and self.loop.clock() < flush_deadline:
            self.loop.run_once(max_wait=0.1)
        self.ingest.close_all()
        self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.button is not None:
            self.button.close()
        if self.spool is not None:
            self.spool.close(self._in_flight)
        self.retention.close()
        self.durability.stop()
        if self.indexer is not None:
            self.indexer.stop()
        self.notifier.close()
        self.loop.close()
        log.info(
            "gateway stopped",
            extra={
                "fields": {"head_seq": self.ledger.durable.seq, "events": self.ingest.stats.events}
            },
        )
        if self._lock_fd is not None:
            os.close(self._lock_fd)

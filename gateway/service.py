"""`gateway run`: the wiring, in start-up order, and the stop.

Start-up: lock the state directory, bind the listeners (a port in use stops
the start before recovery touches the ledger), recover the ledger tail, record
what recovery did and a `started` entry, start committing, rebuild the spool,
then tell systemd we are ready. Every component that follows the ledger is a
subscriber registered once, here: acknowledgements, the spool, the query
index, retention. Shutdown (SIGTERM or SIGINT): stop accepting, take in what
clients already sent, commit it, send the last replies, append `stopped`,
exit 0.

What each part owns: health and status (gateway/health.py), the front panel
(gateway/panel.py), control commands (gateway/commands.py), the state
directory's lock and keys (gateway/statedir.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from dataclasses import asdict
from pathlib import Path

from gateway import __version__
from gateway.audit.index import Indexer
from gateway.clock import Clock
from gateway.commands import Commands
from gateway.config import Config, load_config
from gateway.control import ControlServer
from gateway.errors import ConfigError
from gateway.fleet.member import FleetMember
from gateway.health import Health
from gateway.ingest import http, syslog
from gateway.ingest.dedup import Deduplicator
from gateway.ingest.intake import Intake
from gateway.ingest.redact import Redactor
from gateway.ingest.server import IngestServer
from gateway.ledger.commit import DurableBatch, Ledger
from gateway.ledger.retention import Retention
from gateway.loop import EventLoop
from gateway.metrics import MetricsServer
from gateway.notify import Notifier
from gateway.panel import Panel
from gateway.printing.spool import Spool
from gateway.statedir import (
    REDACT_KEY_FILE,
    load_or_create_key,
    lock_state_dir,
    make_durable_dirs,
    raise_fd_limit,
)
from gateway.web.server import WebServer

log = logging.getLogger("gateway.ops")

# After the last entry is durable, wait at most this long for clients to read
# their final replies before closing their connections anyway; and while the
# ledger cannot be written, give up committing after this long (exit 1).
SHUTDOWN_FLUSH_S = 5.0

__all__ = ["Gateway"]


class Gateway:
    def __init__(
        self,
        config: Config,
        loop: EventLoop | None = None,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        if loop is None:
            loop = EventLoop(clock or Clock())
        if not config.clock.check_sync:
            loop.clock.probe_sync = False  # the kernel is never asked
        self.loop = loop
        self.notifier = notifier if notifier is not None else Notifier()
        self.ledger = Ledger(config.ledger, config.ledger_dir, loop)
        self.dedup = Deduplicator(config.ingest.dedup, config.state_dir, self.ledger)
        self.intake = Intake(self.ledger, config.ingest, dedup=self.dedup)
        self.ingest = IngestServer(loop, self.intake, config.ingest)
        # A configuration without printers prints nothing and has no spool.
        self.spool = self._new_spool(config) if config.printers else None
        self.health = Health(self)
        self.panel = Panel(self)
        self.control = ControlServer(loop, config.control_path, Commands(self))
        self.metrics = (
            MetricsServer(loop, config.metrics.listen, self.status)
            if config.metrics.listen
            else None
        )
        self.metrics_address: tuple[str, int] | None = None
        # The web console (gateway/web/), when web.listen or web.tls_listen is set.
        self.web = WebServer.for_gateway(self)
        self.web_bound: list[tuple[str, int]] = []
        self.indexer = (
            Indexer(config.state_dir, config.ledger_dir) if config.index.enabled else None
        )
        self.retention = Retention(
            config.retention, config.state_dir, loop, self.ledger, self._needed_from
        )
        # The ledger's subscribers, in the order they hear of a durable batch:
        # acknowledgements first (latency), then what follows the ledger.
        self.ledger.subscribe(self.ingest.on_durable)
        self.ledger.subscribe(self._spool_durable, entries=bool(config.printers))
        if self.indexer is not None:
            indexer = self.indexer
            self.ledger.subscribe(lambda batch: indexer.notify(batch.head.seq))
        self.ledger.subscribe(self.retention.on_durable)
        if self.web is not None:  # the console's seq-to-offset map follows the head
            self.ledger.subscribe(self.web.on_durable)
        # Signed checkpoints and replication (gateway/fleet/).
        self.fleet = FleetMember(config, loop, self.ledger)
        self.ledger.subscribe(self.fleet.on_durable)
        self.bound: list[tuple[str, int]] = []
        self._in_flight: list[str] = []
        self.stopping = False
        self.exit_code = 0
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
            if self.web is not None:
                self.web.close()
            self.ledger.close()
            self.dedup.close(save=False)
            self.loop.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise

    def _start(self) -> list[tuple[str, int]]:
        config = self.config
        # Signals first: a SIGTERM at any moment of start-up is taken in and
        # handled once the loop runs (a clean stop, exit 0), never by the default
        # action. Until then it only queues request_stop.
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.request_stop)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._lock_fd = lock_state_dir(config.state_dir)
        self.intake.reconfigure(config.ingest, self._redactor(config))
        raise_fd_limit(config.ingest.max_connections)
        # Bind first: a port in use stops the start before recovery touches the
        # ledger, so a `recovered` entry can never be lost to a failed start.
        bound = self.ingest.listen(config.source)
        bound += http.listen(self.ingest, config.source)
        bound += syslog.listen(self.ingest)
        self.bound = bound
        if self.metrics is not None:
            self.metrics_address = self.metrics.listen()
        if self.web is not None:
            self.web_bound = self.web.listen()
        if not config.printers:
            log.warning("no printer is configured: events are stored, nothing is printed")
        if config.ledger.fsync == "off":
            log.warning(
                "ledger.fsync is off: acknowledged events can be lost on power failure; "
                "use this for benchmarks only"
            )
        make_durable_dirs(config.ledger_dir)
        recovery = self.ledger.open()
        self.dedup.start(self.ledger.durable)
        self.health.check_clock()
        self.ledger.check_space()
        clean_stop = None
        if self.spool is not None:
            hint = self.spool.clean_stop_hint()
            if hint is not None and hint.get("head") == self.ledger.next_seq - 1:
                clean_stop = hint  # the last run stopped cleanly and nothing came after
        if recovery is not None:
            report = asdict(recovery)
            log.warning("ledger tail recovered", extra={"fields": report})
            self.ledger.system("recovered", report)
        self.ledger.system(
            "started",
            {
                "version": __version__,
                "config_hash": config.digest(),
                "pid": os.getpid(),
                # Whether events from here on are routed to printers: the
                # spool's restart scan owes receipts only for those.
                "printing": self._routing(),
                "timezone": config.zone_name,
            },
        )
        self.fleet.start()
        self.ledger.start()
        if self.indexer is not None:
            self.indexer.start()
            self.indexer.notify(self.ledger.durable.seq)
        damaged = self.ledger.damage is not None  # up, refusing events, until accept-loss
        if not damaged:
            self.retention.start()
        self.control.listen()
        if self.spool is not None and not damaged:
            self.spool.start(clean_stop)
        self.panel.start()
        # Recovery is done and every listener is bound: now systemd may count us up.
        self.health.start()
        log.info(
            "gateway ready",
            extra={
                "fields": {
                    "version": __version__,
                    "listen": [f"{h}:{p}" for h, p in bound],
                    "web": [f"{h}:{p}" for h, p in self.web_bound],
                    "state_dir": str(config.state_dir),
                    "head_seq": self.ledger.next_seq - 1,
                    "fsync": config.ledger.fsync,
                    "ingest_path": self.intake.path,
                }
            },
        )
        return bound

    def _routing(self) -> bool:
        return self.spool is not None and bool(self.config.routes)

    def _spool_durable(self, batch: DurableBatch) -> None:
        if self.spool is not None:
            self.spool.on_durable(batch)

    def _needed_from(self) -> int:
        """The oldest seq this process still reads: retention keeps the segment holding it."""
        needed = [self.ledger.durable.seq + 1]
        if self.spool is not None:
            needed.append(self.spool.floor())
        if self.indexer is not None and not self.indexer.error:
            needed.append(self.indexer.indexed + 1)
        replicating = self.fleet.keep_from()  # not removed before the store confirms it
        if replicating is not None:
            needed.append(replicating)
        return min(needed)

    def status(self) -> dict:
        return self.health.status()

    # ---- reload

    def reload(self) -> None:
        """SIGHUP: apply the configuration file again, without dropping anything.

        Printers, routes, reports, spool and ingest limits, the name and the log
        level change in place; connections stay open and queued jobs stay queued
        (a removed printer's jobs are cancelled on the record). `state_dir`,
        the listen addresses, `ledger` and `board` need a restart: a change there is
        logged and kept for the next start. A file that does not load is refused
        and the running configuration stays. Either way the ledger records it.
        """
        if self.stopping:
            return
        self.notifier.send("RELOADING=1")
        old = self.config
        try:
            if old.source == "<defaults>":
                new = load_config(None, old.state_dir)
            else:
                new = load_config(Path(old.source))
        except ConfigError as exc:
            log.error("configuration reload refused", extra={"fields": {"reason": str(exc)}})
            self.ledger.system("reload_refused", {"reason": str(exc)})
            self.notifier.ready(self.health.status_line())
            return
        restart_needed = [
            key
            for key, before, after in (
                ("state_dir", old.state_dir, new.state_dir),
                ("ingest.listen", old.ingest.listen, new.ingest.listen),
                ("ingest.tls.listen", old.ingest.tls.listen, new.ingest.tls.listen),
                ("ingest.http.listen", old.ingest.http.listen, new.ingest.http.listen),
                ("ingest.http.tls_listen", old.ingest.http.tls_listen, new.ingest.http.tls_listen),
                ("ingest.syslog.listen", old.ingest.syslog.listen, new.ingest.syslog.listen),
                ("ledger", old.ledger, new.ledger),
                ("board", old.board, new.board),
                ("web", old.web, new.web),
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
            ingest=dataclasses.replace(
                new.ingest,
                # Listeners stay as bound: a change of address needs a restart.
                listen=old.ingest.listen,
                tls=dataclasses.replace(new.ingest.tls, listen=old.ingest.tls.listen),
                http=dataclasses.replace(
                    new.ingest.http,
                    listen=old.ingest.http.listen,
                    tls_listen=old.ingest.http.tls_listen,
                ),
                syslog=old.ingest.syslog,
            ),
            ledger=old.ledger,
            board=old.board,
            web=old.web,
        )
        self.config = effective
        self.ingest.reconfigure(effective.ingest)
        self.intake.reconfigure(effective.ingest, self._redactor(effective))
        logging.getLogger("gateway").setLevel(effective.log.level.upper())
        self._reconfigure_printing(effective)
        self.retention.reconfigure(effective.retention)
        self.ledger.system(
            "reloaded",
            {
                "config_hash": new.digest(),
                "printing": self._routing(),
                "restart_needed": restart_needed,
                "timezone": effective.zone_name,
            },
        )
        log.info(
            "configuration reloaded",
            extra={"fields": {"config_hash": new.digest(), "restart_needed": restart_needed}},
        )
        self.notifier.ready(self.health.status_line())

    def _redactor(self, config: Config) -> Redactor | None:
        """Redaction as configured (None when it has nothing to do)."""
        redact = config.redact
        if not redact.keys and not redact.cards:
            return None
        key = load_or_create_key(config.state_dir / REDACT_KEY_FILE)
        return Redactor(redact.keys, redact.cards, key, redact.digest)

    def _new_spool(self, config: Config) -> Spool:
        return Spool(config, self.loop, self.ledger, status=self.status)

    def _reconfigure_printing(self, config: Config) -> None:
        if self.spool is not None and not config.printers:
            self.spool.stop()  # unprinted jobs stay owed in the ledger
            self.spool.close([])
            self.spool = None
        elif self.spool is not None:
            self.spool.reconfigure(config)
        elif config.printers:
            self.ledger.want_entries()  # the first printer since start: it reads entries
            self.spool = self._new_spool(config)
            self.spool.start(None)

    # ---- stop

    def request_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.notifier.stopping()
        self.health.stop()
        log.info("stopping: no new connections; committing what clients already sent")
        self.ingest.stop_accepting()
        self.ingest.drain_all()
        if self.web is not None:
            self.web.close()  # its failed-login summaries go into the ledger before `stopped`
        self._in_flight = self.spool.stop() if self.spool is not None else []
        self.retention.stop()
        self.fleet.stop()
        self.intake.summarise(force=True)
        self.ledger.system(
            "stopped",
            {
                "version": __version__,
                "events": self.intake.stats.events,
                "print_in_flight": self._in_flight,
            },
        )
        self.ledger.flush()
        self.loop.stop()

    def run(self) -> int:
        self.loop.run()
        self._finish()
        return self.exit_code

    def _finish(self) -> None:
        """Commit the rest, send the last replies, then close everything."""
        deadline = self.loop.time() + SHUTDOWN_FLUSH_S
        while not self.ledger.settled:
            self.loop.run_once(max_wait=0.1)
            # Failing writes or one that never returns: either way nothing more is coming.
            if self.loop.time() > deadline:
                log.error("stopping with entries not yet durable: the ledger cannot be written")
                self.exit_code = 1
                break
        # After giving up no reply is coming that a client could wait to read.
        flush_deadline = self.loop.time() + (0 if self.exit_code else SHUTDOWN_FLUSH_S)
        while (self.ingest.connections or self.ingest.lingering) and self.loop.time() < (
            flush_deadline
        ):
            self.loop.run_once(max_wait=0.1)
        self.ingest.close_all()
        self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.web is not None:
            self.web.close()
        self.panel.close()
        if self.spool is not None:
            self.spool.close(self._in_flight)
        self.retention.close()
        self.fleet.close()
        settled = self.ledger.close()
        if not settled:
            log.error("a ledger write never returned; exiting without it")
            self.exit_code = 1
        self.dedup.close(save=settled)  # a snapshot is valid up to the settled head
        if self.indexer is not None:
            self.indexer.stop()
        self.notifier.close()
        self.loop.close()
        log.info(
            "gateway stopped",
            extra={
                "fields": {"head_seq": self.ledger.durable.seq, "events": self.intake.stats.events}
            },
        )
        if self._lock_fd is not None:
            os.close(self._lock_fd)

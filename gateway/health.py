"""Health and status: the watchdog's rules, `gateway status`, STATUS=, the LED, the clock.

Every HEALTH_TICK_S the tick (on the loop) reads the clock's sync state and the
free space, judges health, pings the watchdog while healthy, sends systemd a
STATUS= line when it changes, and sets the status LED. `status()` is the one
snapshot the control socket, /metrics and status pages read.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gateway import __version__

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("gateway.ops")

# STATUS= is sent when it changes, and at least this often under systemd.
STATUS_INTERVAL_S = 10.0
# Status figures: 15 minutes of once-a-second event counts (the 1, 5 and 15
# minute ingest rates).
RATE_SAMPLES = 15 * 60 + 1
# Above this many events per second (over the last health tick) the query
# index waits: it catches up when ingest has time to spare (docs/audit.md).
INDEX_YIELD_EPS = 1000
# Health is checked (and the LED updated) every second; the watchdog is pinged
# at that pace or at half WATCHDOG_USEC, whichever is more often.
HEALTH_TICK_S = 1.0

__all__ = ["Health"]


class Health:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.clock = gateway.loop.clock
        self.started_at = self.clock.monotonic()
        self.unhealthy_reason = ""
        self._last_status = ""
        self._status_sent_at = 0.0
        # One (time, events) sample per tick over 15 minutes (the ingest rates).
        self.event_samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=RATE_SAMPLES
        )
        self._stopped = False

    # ---- judging

    def reason(self) -> str:
        """'' when healthy, else why (README, "Watchdog").

        Healthy: the loop turns (this runs on it), the durability thread is
        alive, no commit has been pending longer than SYNC_PENDING_LIMIT_S, and
        the last commit succeeded. Printers do not count: restarting the
        gateway does not bring a printer back.
        """
        return self.gw.ledger.health()

    def status(self) -> dict[str, Any]:
        gw = self.gw
        ledger = gw.ledger.statistics()
        spool = gw.spool
        printing = spool.status() if spool is not None else {"printers": []}
        health = "ok"
        reason = self.reason()
        if reason:
            health = f"unhealthy: {reason}"
        elif ledger.damage is not None:
            health = (
                f"ledger damaged: seqs {ledger.damage['first_seq']} to {ledger.damage['last_seq']} "
                f"({ledger.damage['reason']}); new events refused until `gateway accept-loss`"
            )
        elif ledger.disk_full:
            health = "disk full: new events refused"
        elif spool is not None and not spool.healthy:
            health = "printer alert"
        elif not self.clock.synced and spool is not None and gw.config.reports.daily is not None:
            health = "degraded: the clock is not synchronised; the daily report waits"
        elif fleet_reason := gw.fleet.health():
            health = f"degraded: {fleet_reason}"
        indexer = gw.indexer
        return {
            "version": __version__,
            "health": health,
            "uptime_s": round(self.clock.monotonic() - self.started_at, 1),
            "state_dir": str(gw.config.state_dir),
            "listen": [f"{h}:{p}" for h, p in gw.bound],
            "ledger": {
                "entries": ledger.head_seq,
                "head_seq": ledger.head_seq,
                "head_hash": ledger.head_hash,
                "error": ledger.error,
                # Since start: commit batches written, and the fdatasync calls they took.
                "batches": ledger.batches,
                "syncs": ledger.syncs,
                "damage": ledger.damage,
            },
            "clock": {
                "synced": self.clock.synced,
                "unsynced_for_s": round(self.clock.monotonic() - self.clock.unsynced_since, 1)
                if self.clock.unsynced_since is not None
                else 0,
            },
            "connections": len(gw.ingest.connections),
            "acks_pending": gw.ingest.replies_owed,
            "ingest_rates": self.ingest_rates(),
            "sync_ms": {
                "p50": ledger.sync_ms_p50,
                "p99": ledger.sync_ms_p99,
                "samples": ledger.sync_samples,
            },
            "ack_wait_ms": {
                "p50": ledger.ack_wait_ms_p50,
                "p99": ledger.ack_wait_ms_p99,
                "samples": ledger.ack_wait_samples,
            },
            "free_bytes": ledger.free_bytes,
            "index": {
                "enabled": indexer is not None,
                "indexed_seq": indexer.indexed if indexer else 0,
                "lag": indexer.lag if indexer else 0,
                "error": indexer.error if indexer else "",
            },
            "retention": gw.retention.status(),
            "dedup": asdict(gw.dedup.statistics()),
            # The web console (gateway/web/): None when it is off.
            "web": gw.web.statistics() if gw.web is not None else None,
            **gw.fleet.status(),
            # Which code takes plain events: "native" (gateway/native/) or "python".
            "ingest_path": gw.intake.path,
            "events": gw.intake.stats.events,
            "rejected": gw.intake.stats.rejected,
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

    def status_line(self) -> str:
        """One line for systemd's STATUS=: entries, head, connections, printers."""
        gw = self.gw
        head = gw.ledger.durable.seq
        printers = ""
        if gw.spool is not None:
            printers = ", printers: " + " ".join(
                f"{p.name}={p.state}" for p in gw.spool.printers.values()
            )
        health = "" if not self.unhealthy_reason else f"UNHEALTHY ({self.unhealthy_reason}), "
        return (
            f"{health}entries {head}, head seq {head}, "
            f"connections {len(gw.ingest.connections)}{printers}"
        )

    # ---- the tick

    def check_clock(self) -> None:
        """Follow the clock's sync state: record each change (flags follow the clock).

        The clock starts out counted as synchronised, so a start with a
        synchronised clock records nothing, and one without records `clock`.
        """
        if not self.clock.check_sync():
            return
        synced = self.clock.synced
        self.gw.ledger.system("clock", {"synced": synced})
        if synced:
            log.info("system clock synchronised: entries are no longer flagged")
        else:
            log.warning(
                "system clock not synchronised: entries are flagged clock_unsynced and the "
                "daily report waits"
            )

    def start(self) -> None:
        self.gw.notifier.ready(self.status_line())
        self.tick()

    def stop(self) -> None:
        self._stopped = True

    def tick(self) -> None:
        """Every HEALTH_TICK_S on the loop: health, WATCHDOG=1 while healthy, STATUS=, LED."""
        if self._stopped:
            return
        gw = self.gw
        self.check_clock()
        gw.ledger.check_space()
        gw.ledger.check_files()
        gw.intake.summarise()  # refused lines counted, not stored one by one
        self.event_samples.append((self.clock.monotonic(), gw.intake.stats.events))
        if gw.indexer is not None and len(self.event_samples) >= 2:
            (t0, n0), (t1, n1) = self.event_samples[-2], self.event_samples[-1]
            gw.indexer.yield_to_ingest = t1 > t0 and (n1 - n0) / (t1 - t0) > INDEX_YIELD_EPS
        reason = self.reason()
        if reason != self.unhealthy_reason:
            if reason:
                log.error("unhealthy: watchdog pings stop", extra={"fields": {"reason": reason}})
            else:
                log.warning("healthy again: watchdog pings resume")
            self.unhealthy_reason = reason
        now = self.clock.monotonic()
        notifier = gw.notifier
        interval = notifier.watchdog_interval_s
        if not reason and interval is not None:
            notifier.watchdog()
        if notifier.enabled:
            line = self.status_line()
            if line != self._last_status or now - self._status_sent_at >= STATUS_INTERVAL_S:
                notifier.status(line)
                self._last_status, self._status_sent_at = line, now
        gw.panel.show(
            "ledger"
            if reason or gw.ledger.damage is not None
            else "printer"
            if gw.spool is not None and any(p.state == "error" for p in gw.spool.printers.values())
            else "ok"
        )
        gw.loop.call_later(min(interval or HEALTH_TICK_S, HEALTH_TICK_S), self.tick)

"""What this box does for the fleet: its identity, its signed checkpoints, its replication.

One object the service wires in four places (start after recovery, a ledger
subscriber, stop before `stopped`, close); everything else lives in this
package: identity.py (the key), checkpoints.py (when a note is signed),
replicate.py (the upload thread, with replication on).
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.fleet.checkpoints import Checkpointer
from gateway.fleet.identity import BoxIdentity, load_identity
from gateway.ledger.commit import DurableBatch, Ledger
from gateway.loop import EventLoop

__all__ = ["FLEET_DIR", "FleetMember"]

# Under the state directory: the latest note and the replicator's own state.
FLEET_DIR = "fleet"


class FleetMember:
    def __init__(self, config: Config, loop: EventLoop, ledger: Ledger) -> None:
        self.config = config
        self.loop = loop
        self.ledger = ledger
        self.identity: BoxIdentity | None = None
        self.checkpoints: Checkpointer | None = None
        self.replicator: Any = None

    def start(self) -> None:
        """After recovery, before the ledger's `started` entry is committed."""
        config = self.config
        self.identity = load_identity(config.state_dir, config.name)
        fleet = config.fleet
        self.checkpoints = Checkpointer(
            self.ledger,
            self.loop,
            self.identity,
            config.checkpoints.interval_s,
            config.state_dir / FLEET_DIR,
            seal_after_s=fleet.seal_after_s if fleet.enabled else None,
        )
        self.checkpoints.start()
        if fleet.enabled:
            from gateway.fleet.replicate import Replicator

            self.replicator = Replicator(config, self.loop, self.ledger, self.identity)
            self.checkpoints.listeners.append(self.replicator.on_note)
            self.replicator.start()

    def on_durable(self, batch: DurableBatch) -> None:
        if self.checkpoints is not None:
            self.checkpoints.on_durable(batch)
        if self.replicator is not None:
            self.replicator.on_durable(batch)

    def stop(self) -> None:
        """A clean stop: the last checkpoint, then no more uploads."""
        if self.checkpoints is not None:
            self.checkpoints.stop()
        if self.replicator is not None:
            self.replicator.stop()

    def close(self) -> None:
        if self.replicator is not None:
            self.replicator.close()

    def keep_from(self) -> int | None:
        """The oldest seq retention must keep for replication (None: no constraint)."""
        return self.replicator.keep_from() if self.replicator is not None else None

    def health(self) -> str:
        """'' or why the fleet part degrades health (replication lag)."""
        return self.replicator.health() if self.replicator is not None else ""

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.identity is not None:
            out["identity"] = self.identity.public.as_json()
        if self.checkpoints is not None:
            out["checkpoint"] = self.checkpoints.statistics().__dict__
        out["replication"] = (
            self.replicator.status() if self.replicator is not None else {"enabled": False}
        )
        return out

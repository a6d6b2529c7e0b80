"""Helpers for tests that run a Gateway in the test process and turn its loop by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.service import Gateway


def pump(gw: Gateway, until: Callable[[], Any], timeout: float = 10.0) -> None:
    """Run the gateway's loop until `until()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        gw.loop.run_once(max_wait=0.02)


def settle(gw: Gateway) -> None:
    """Until everything appended so far is durable."""
    pump(gw, lambda: gw.ledger.durable.seq == gw.ledger.next_seq - 1)


def ledger(gw: Gateway) -> list[dict]:
    """Every entry readable now, decoded, with its seq."""
    return [
        {"seq": seq, **entries.decode(payload)}
        for seq, payload, _hash in LedgerReader(gw.config.ledger_dir).entries()
    ]

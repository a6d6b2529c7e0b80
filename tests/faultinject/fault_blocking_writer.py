"""Fault: the first ledger write never returns, as on a card or controller that hangs."""

import threading

from gateway.ledger import durability

_never = threading.Event()


def _blocking_writer(batch, fds, sync):
    _never.wait()
    raise AssertionError("unreachable")


durability.DurabilityThread.__init__.__kwdefaults__["writer"] = _blocking_writer

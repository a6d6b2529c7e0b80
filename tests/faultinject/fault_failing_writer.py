"""Fault: every ledger write fails with EIO, as on a dead SD card."""

import errno

from gateway.ledger import durability


def _failing_writer(batch, fds, sync):
    raise OSError(errno.EIO, "injected EIO")


durability.DurabilityThread.__init__.__kwdefaults__["writer"] = _failing_writer

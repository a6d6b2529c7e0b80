"""Mutant: a batch is reported durable once written, while its sync is still running.

The writer writes the batch, then hands the syncs to a thread that starts them
a little later, and returns at once: the gateway acknowledges before the sync
completes.
"""

import os
import threading
import time

from gateway.ledger import durability, store

# Long enough that the acknowledgement is surely sent before the sync ends.
SYNC_DELAY_S = 0.02


def _late_sync(fds: list[int], directories: list) -> None:
    time.sleep(SYNC_DELAY_S)
    for fd in fds:
        os.fdatasync(fd)
        os.close(fd)
    for path in directories:
        store.fsync_directory(path)


def _ack_before_sync(batch, fds, sync):
    store.write_batch(batch, fds, False)
    dups = [os.dup(fds[w.path]) for w in batch.writes if w.path in fds]
    directories = [w.path.parent for w in batch.writes if w.create]
    threading.Thread(target=_late_sync, args=(dups, directories), daemon=True).start()
    return len(dups) + len(directories)


durability.DurabilityThread.__init__.__kwdefaults__["writer"] = _ack_before_sync

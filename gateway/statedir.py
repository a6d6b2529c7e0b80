"""The state directory: the lock that makes one process its writer, and its secret keys."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
from pathlib import Path

from gateway.errors import LedgerError
from gateway.ledger.store import DIR_MODE, fsync_directory

log = logging.getLogger("gateway.ops")

LOCK_FILE = "gateway.lock"
# The key of redaction digests and of refused lines' keyed digests.
REDACT_KEY_FILE = "redact.key"

# File descriptors beyond the client connections: listeners, ledger segments,
# the wake-up pair, printers, the control socket, lingering refused sockets.
FD_HEADROOM = 512

__all__ = ["load_or_create_key", "lock_state_dir", "make_durable_dirs", "raise_fd_limit"]


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


def make_durable_dirs(path: Path) -> None:
    """Create `path` and missing parents, syncing each new entry into its parent:
    an unsynced directory entry can vanish in a power cut with everything under it,
    acknowledged entries included (docs/ledger-format.md, "Power cuts")."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for new in reversed(missing):
        new.mkdir(mode=DIR_MODE if new is missing[0] else 0o777, exist_ok=True)
        fsync_directory(new.parent)


def lock_state_dir(state_dir: Path) -> int:
    """Take the exclusive lock that makes this process the ledger's only writer."""
    make_durable_dirs(state_dir)
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

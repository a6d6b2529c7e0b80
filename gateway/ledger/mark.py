"""The high-water mark: how far the ledger is known to have been made durable.

A small JSON file beside the segments (`highwater.json`), replaced atomically
(temporary file, fsync, rename, directory fsync). It is written:

- at start, once recovery is done and the newest segment synced (`running`);
- after each batch that starts a new segment, before that batch's
  acknowledgements are sent (`running`): once per segment, never per commit;
- every 10 s while entries are committed, up to the durable head, on a thread
  of its own (`running`; commit.py MARK_INTERVAL_S);
- at a clean stop, after the last commit (`clean`);
- when the running gateway finds its open segment removed, replaced or cut
  (`damaged`, naming the last seq it ever gave out);
- by `gateway accept-loss` once the loss is recorded (`running`).

Entry `seq` was synced when the mark was written, so start-up recovery and
`gateway verify` hold the segments to it: every entry up to `seq` must be
there, intact, with the chain hash the mark records. Only what follows `seq`
can be a torn write (docs/ledger-format.md, "High-water mark").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import LedgerCorruption

MARK_FILE = "highwater.json"
MARK_FORMAT = 1
MARK_MODE = 0o640  # as the segments: readable by the gateway's group
RUNNING, CLEAN, DAMAGED = "running", "clean", "damaged"

# One writer at a time (the loop and the durability thread both may write),
# and a `damaged` mark is never replaced by this process (only accept-loss,
# another process, clears it).
_lock = threading.Lock()
_damaged_dirs: set[Path] = set()
# The highest seq this process marked per directory: a `running` mark never
# goes back (a late periodic mark must not undo a newer one).
_last_seq: dict[Path, int] = {}


@dataclass(frozen=True, slots=True)
class Mark:
    seq: int
    hash: bytes
    state: str = RUNNING
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["hash"] = self.hash.hex()
        out["format"] = MARK_FORMAT
        return out


def read_mark(directory: Path) -> Mark | None:
    """The mark, None when there is none (a ledger from before marks, or a new one).

    A mark that cannot be parsed is damage: it was replaced atomically, so a
    power cut cannot leave it half written.
    """
    path = directory / MARK_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        digest = bytes.fromhex(data["hash"])
        if data.get("format") != MARK_FORMAT or len(digest) != 32:
            raise ValueError("unknown format")
        seq = data["seq"]
        if not isinstance(seq, int) or seq < 0:
            raise ValueError("bad seq")
        state = data.get("state", RUNNING)
        if state not in (RUNNING, CLEAN, DAMAGED):
            raise ValueError(f"unknown state {state!r}")
        return Mark(seq, digest, state, dict(data.get("detail") or {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LedgerCorruption(str(path), 0, 0, f"high-water mark unreadable: {exc}") from None


def _fsync_directory(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_mark(
    directory: Path,
    mark: Mark,
    *,
    sync: bool = True,
    dirsync: Callable[[Path], None] = _fsync_directory,
    reset: bool = False,
) -> bool:
    """Replace the mark atomically; False when a `damaged` mark must stay.

    `dirsync`: how the directory is synced (the ledger's own function, so that
    a test build without directory syncs has none here either). `reset`: start-up
    recovery's mark, which may be below one this process wrote before."""
    with _lock:
        if mark.state != DAMAGED and directory in _damaged_dirs:
            return False
        if mark.state == RUNNING and not reset and mark.seq < _last_seq.get(directory, -1):
            return False
        _last_seq[directory] = mark.seq
        if mark.state == DAMAGED:
            _damaged_dirs.add(directory)
        tmp = directory / f".{MARK_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MARK_MODE)
        try:
            os.write(fd, json.dumps(mark.as_json(), sort_keys=True).encode() + b"\n")
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / MARK_FILE)
        if sync:
            dirsync(directory)
        return True


def forget_damage(directory: Path) -> None:
    """This process accepted the loss (accept-loss, tests): marks may be written again."""
    with _lock:
        _damaged_dirs.discard(directory)

"""Mutant: fdatasync does nothing (the ledger's data never forced to the disk)."""

import os


def _no_fdatasync(fd: int) -> None:
    return None


os.fdatasync = _no_fdatasync

"""`gateway verify` throughput: `verify_ledger` over a 20,000-entry ledger.

The ledger is written once per module by the real `LedgerWriter` (staged batches
written with `write_entries`, unsynced: durability is not what is measured) into a
temporary directory; the entries alternate small and audit events, as a mix of
subscription and audit traffic. The files stay in the page cache, so this measures
reading frames and re-deriving the chain, not the disk (target: >= 100 MB/s). At ~9 MB
the ledger is one segment, far below the size at which verify shares segments among
worker processes, so this is the single-process rate.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.ledger.store import LedgerWriter, write_entries
from gateway.ledger.verify import verify_ledger

ENTRIES = 20_000
BATCH = 1_000
SEGMENT_BYTES = 64 * 1024 * 1024  # ledger.segment_bytes default


@pytest.fixture(scope="module")
def ledger(corpus, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("verify") / "ledger"
    writer = LedgerWriter(directory, segment_bytes=SEGMENT_BYTES).open()
    small, audit = (
        itertools.cycle(corpus.payloads["small"]),
        itertools.cycle(corpus.payloads["audit"]),
    )
    payloads = (next(small if i % 2 else audit) for i in range(1, ENTRIES + 1))
    write_entries(writer, payloads, batch=BATCH, sync=False)
    assert writer.durable.seq == ENTRIES
    return directory


def test_verify(benchmark, items_per_call, ledger):
    result = benchmark(verify_ledger, ledger)
    assert result.ok and result.entries == ENTRIES and not result.tail_incomplete
    items_per_call(ENTRIES, result.bytes_read)

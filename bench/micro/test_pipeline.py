"""The whole in-process path of an event, without sockets or disk.

For a buffer of lines, what the ingest server's `process` does per event: parse
(`IngestProtocol`), validate, redact (default configuration, pre-check then walk),
encode the CBOR payload and stage it in the `LedgerWriter` (frame and chain hash);
then one `take_batch`. Reads, replies, the event loop and the durability thread's
writes and syncs come on top, so this is a lower bound on the CPU per event, to hold
against the budget of about 10 µs.
"""

from __future__ import annotations

import os

import pytest

from bench.micro.corpus import RECEIVED_US, SOURCE
from gateway.config import RedactConfig
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.redact import Redactor
from gateway.ingest.validate import validate_event
from gateway.ledger import entries
from gateway.ledger.store import LedgerWriter

MAX_LINE_BYTES = 65536  # ingest.max_line_bytes default
SEGMENT_BYTES = 64 * 1024 * 1024  # ledger.segment_bytes default


@pytest.mark.parametrize("preset", ["small", "audit", "large", "card"])
def test_event_path(benchmark, items_per_call, corpus, tmp_path, preset):
    lines = corpus.lines[preset]
    data = b"".join(lines)
    config = RedactConfig()
    redactor = Redactor(config.keys, config.cards, os.urandom(32), config.digest)
    writer = LedgerWriter(tmp_path, segment_bytes=SEGMENT_BYTES).open()

    def run() -> int:
        proto = IngestProtocol(MAX_LINE_BYTES)
        proto.receive_data(data)
        next_event, append, encode = proto.next_event, writer.append, entries.encode_event
        might_need, redact = redactor.might_need, redactor.event
        while (item := next_event()) is not None:
            flags = validate_event(item)
            if might_need(item, proto.last_line):
                flags += redact(item)
            append(encode(RECEIVED_US, SOURCE, item, flags))
        batch = writer.take_batch()
        assert batch is not None
        return batch.entries

    assert benchmark(run) == len(lines)
    items_per_call(len(lines), len(data))

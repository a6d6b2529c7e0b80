"""The ingest front end: the sans-I/O line protocol and event validation.

`IngestProtocol` is what every connection runs on its received bytes. Two feeding
patterns bracket reality: a busy connection delivers many lines per recv() (here a
preset's batch in one buffer: 23 KiB small, 38 KiB audit, 63 KiB large, about the most
the server reads at a time), a quiet one a single line per recv(). Validation
(`validate_event`) runs on every parsed event; its cost is the RFC 3339 timestamp check.
"""

from __future__ import annotations

import pytest

from bench.loadgen import SIZES
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.validate import validate_event

MAX_LINE_BYTES = 65536  # ingest.max_line_bytes default


@pytest.mark.parametrize("size", SIZES)
def test_parse_buffer(benchmark, items_per_call, corpus, size):
    """A preset's batch of lines in one receive_data, then next_event until it wants more."""
    lines = corpus.lines[size]
    data = b"".join(lines)

    def parse() -> int:
        proto = IngestProtocol(MAX_LINE_BYTES)
        proto.receive_data(data)
        next_event = proto.next_event
        count = 0
        while next_event() is not None:
            count += 1
        return count

    assert benchmark(parse) == len(lines)
    items_per_call(len(lines), len(data))


@pytest.mark.parametrize("size", SIZES)
def test_parse_line_per_feed(benchmark, items_per_call, corpus, size):
    """One receive_data per line on a long-lived connection, each drained at once."""
    lines = corpus.lines[size]
    proto = IngestProtocol(MAX_LINE_BYTES)

    def parse() -> int:
        receive, next_event = proto.receive_data, proto.next_event
        count = 0
        for line in lines:
            receive(line)
            while next_event() is not None:
                count += 1
        return count

    assert benchmark(parse) == len(lines)
    assert proto.buffered == 0
    items_per_call(len(lines), sum(map(len, lines)))


@pytest.mark.parametrize("size", SIZES)
def test_validate(benchmark, items_per_call, corpus, size):
    """validate_event on well-formed events (every check runs, no flag is raised)."""
    events = corpus.events[size]

    def validate() -> int:
        return sum(len(validate_event(e)) for e in events)

    assert benchmark(validate) == 0
    items_per_call(len(events))

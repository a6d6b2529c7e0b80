"""The uploader's reads of a segment stay in small pieces, whatever the segment's size.

A `gateway run` replicating a backlog of 1 MiB segments once grew its heap by
~1 MB per segment: the hashing read (1 MiB) and the segment reader's chunk
(4 MiB) were each a new buffer per segment, and once glibc's mmap threshold
had risen past them they came from the heap and left it fragmented
(docs/fleet.md, "Memory"; tests/test_fleet_replication.py measures the
process itself against a real store). Here the Python allocations are traced:
every read of a segment peaks at a few pieces, not at the segment's size.
"""

from __future__ import annotations

import tracemalloc

from gateway.fleet import replicate
from gateway.fleet.replicate import segment_facts
from gateway.fleet.s3 import SEND_CHUNK_BYTES, _pieces, digests
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerWriter, SegmentReader, list_segments, write_entries

SOURCE = entries.encode_source("10.0.0.1", 40000, "crm", 1)
# A segment several times the old buffers' size: 6 MiB of ~2 kB events.
SEGMENT_BYTES = 6 * 1024 * 1024
EVENTS = 3300
# Allowed peak: a few pieces (the hashing buffer, the reader's chunk and its
# copy when a frame spans two reads, ~270 KiB measured); the old reads peaked at
# 8 MiB here.
PEAK_BYTES = 6 * SEND_CHUNK_BYTES


def _ledger(tmp_path):
    writer = LedgerWriter(tmp_path, segment_bytes=SEGMENT_BYTES).open()
    payloads = [
        entries.encode_event(1_790_000_000_000_000 + i, SOURCE, {"i": i, "pad": "x" * 2000}, [])
        for i in range(EVENTS * 2)
    ]
    write_entries(writer, payloads, batch=500, sync=False)
    segments = list_segments(tmp_path)
    assert len(segments) >= 2
    return segments


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_segment_facts_read_in_pieces_and_match_the_next_segment(tmp_path):
    segments = _ledger(tmp_path)
    (_first, path), (next_first, next_path) = segments[0], segments[1]
    assert path.stat().st_size > 4 * 1024 * 1024
    facts = segment_facts(path)
    with SegmentReader(next_path) as nxt:
        header = nxt.read_header()
    assert facts.last_seq == next_first - 1
    assert facts.last_hash == header.prev_hash.hex()
    assert facts.first_seq == fmt.parse_segment_name(path.name)
    assert facts.bytes == path.stat().st_size
    peak = _peak(lambda: segment_facts(path))
    assert peak < PEAK_BYTES, f"segment_facts peaked at {peak} bytes"
    assert replicate.HASH_CHUNK_BYTES <= SEND_CHUNK_BYTES


def test_a_file_body_is_hashed_and_sent_through_one_piece_buffer(tmp_path):
    path = tmp_path / "body"
    path.write_bytes(bytes(range(256)) * (5 * 4096))  # 5 MiB
    peak = _peak(lambda: digests(path))
    assert peak < PEAK_BYTES, f"digests peaked at {peak} bytes"
    sent = []
    peak = _peak(lambda: sent.append(sum(len(p) for p in _pieces(path))))
    assert sent == [path.stat().st_size]
    assert peak < PEAK_BYTES, f"the pieces peaked at {peak} bytes"

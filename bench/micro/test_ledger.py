"""The ledger's per-entry work: CBOR payload, chain hash, frames, staging, decoding.

In the order the gateway does it for an event: `entries.encode_event` builds the CBOR
payload, `LedgerWriter.append` frames it (`format.encode_frame`: header with CRC, then
BLAKE3 over the previous hash and the stored bytes) and stages it for the durability
thread. `format.chain_hash` is the same BLAKE3 as `verify` computes it, measured alone;
frame decoding is what readers do per frame before any hash or CBOR work, and
`entries.decode` is the CBOR decode that export, reports and queries pay per entry.
"""

from __future__ import annotations

import pytest

from bench.loadgen import SIZES
from bench.micro.corpus import RECEIVED_US, SOURCE
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import LedgerWriter

SEGMENT_BYTES = 64 * 1024 * 1024  # ledger.segment_bytes default


def _frames(payloads: list[bytes]) -> tuple[list[bytes], bytes]:
    """Each payload's frame, chained from genesis, and the last chain hash."""
    frames, prev = [], fmt.GENESIS_HASH
    for seq, payload in enumerate(payloads, 1):
        frame, prev = fmt.encode_frame(seq, payload, prev)
        frames.append(frame)
    return frames, prev


@pytest.mark.parametrize("size", SIZES)
def test_encode_event(benchmark, items_per_call, corpus, size):
    """entries.encode_event: the CBOR payload of an event entry (source pre-encoded)."""
    events = corpus.events[size]
    encode = entries.encode_event

    def run() -> list[bytes]:
        return [encode(RECEIVED_US, SOURCE, event, []) for event in events]

    payloads = benchmark(run)
    assert entries.decode(payloads[-1])["event"] == events[-1]
    items_per_call(len(events), sum(map(len, payloads)))


@pytest.mark.parametrize("size", SIZES)
def test_chain_hash(benchmark, items_per_call, corpus, size):
    """format.chain_hash over each entry's stored bytes, chained from genesis."""
    frames, last = _frames(corpus.payloads[size])
    stored = [frame[: -fmt.HASH_BYTES] for frame in frames]
    chain = fmt.chain_hash

    def run() -> bytes:
        prev = fmt.GENESIS_HASH
        for item in stored:
            prev = chain(prev, item)
        return prev

    assert benchmark(run) == last
    items_per_call(len(stored), sum(map(len, stored)))


@pytest.mark.parametrize("size", SIZES)
def test_frame_encode(benchmark, items_per_call, corpus, size):
    """format.encode_frame: header, CRC, chain hash and the frame's bytes."""
    payloads = corpus.payloads[size]
    encode = fmt.encode_frame

    def run() -> tuple[int, bytes]:
        total, prev = 0, fmt.GENESIS_HASH
        for seq, payload in enumerate(payloads, 1):
            frame, prev = encode(seq, payload, prev)
            total += len(frame)
        return total, prev

    total, last = benchmark(run)
    assert total == sum(len(p) + fmt.FRAME_OVERHEAD for p in payloads)
    assert last == _frames(payloads)[1]
    items_per_call(len(payloads), total)


@pytest.mark.parametrize("size", SIZES)
def test_frame_decode(benchmark, items_per_call, corpus, size):
    """format.parse_frame_header over a buffer of frames, slicing payload and hash."""
    payloads = corpus.payloads[size]
    frames, last = _frames(payloads)
    data = memoryview(b"".join(frames))
    parse = fmt.parse_frame_header
    header, overhead = fmt.FRAME_HEADER_BYTES, fmt.FRAME_OVERHEAD

    def run() -> tuple[int, int, bytes]:
        pos, end, payload_bytes, seq, digest = 0, len(data), 0, 0, b""
        while pos < end:
            length, seq = parse(data, pos)
            payload_end = pos + header + length
            payload_bytes += len(data[pos + header : payload_end])
            digest = data[payload_end : payload_end + fmt.HASH_BYTES]
            pos += overhead + length
        return seq, payload_bytes, bytes(digest)

    assert benchmark(run) == (len(payloads), sum(map(len, payloads)), last)
    items_per_call(len(payloads), len(data))


@pytest.mark.parametrize("size", SIZES)
def test_entry_decode(benchmark, items_per_call, corpus, size):
    """entries.decode: an event entry's CBOR payload back to a dict."""
    payloads = corpus.payloads[size]
    decode = entries.decode

    def run() -> list:
        return [decode(payload) for payload in payloads]

    decoded = benchmark(run)
    assert decoded[-1]["event"] == corpus.events[size][-1]
    items_per_call(len(payloads), sum(map(len, payloads)))


@pytest.mark.parametrize("size", SIZES)
def test_ledger_append(benchmark, items_per_call, corpus, tmp_path, size):
    """LedgerWriter.append for every payload, then take_batch (nothing written to disk)."""
    payloads = corpus.payloads[size]
    writer = LedgerWriter(tmp_path, segment_bytes=SEGMENT_BYTES).open()

    def run() -> int:
        append = writer.append
        for payload in payloads:
            append(payload)
        batch = writer.take_batch()
        assert batch is not None
        return batch.entries

    assert benchmark(run) == len(payloads)
    items_per_call(len(payloads), sum(len(p) + fmt.FRAME_OVERHEAD for p in payloads))

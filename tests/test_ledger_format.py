"""Pure framing: segment headers, frames, the chain hash, segment names (no disk)."""

from __future__ import annotations

import struct
import zlib

import pytest
from blake3 import blake3

from gateway.ledger import format as fmt

PREV = bytes(range(32))


def test_genesis_is_blake3_of_documented_string():
    genesis = fmt.GENESIS_HASH
    assert genesis == blake3(b"print-gateway ledger genesis v1").digest()
    # The value docs/ledger-format.md prints.
    assert genesis.hex() == "48eef873dea6631f7f6c5aebdeb1e20034130ef9a2962179a59ccea975be0681"
    assert len(genesis) == fmt.HASH_BYTES == 32


@pytest.mark.parametrize("first_seq", [1, 2, 1000, 2**63, 2**64 - 1])
def test_segment_header_round_trip(first_seq):
    data = fmt.encode_segment_header(first_seq, PREV)
    assert len(data) == fmt.SEGMENT_HEADER_BYTES == 64
    assert data[:8] == b"PGWLEDGR"
    assert data[8:10] == b"\x00\x02"  # version 2: frames mark their sync units
    assert data[10:16] == bytes(6)
    assert data[16:24] == first_seq.to_bytes(8, "big")
    assert data[24:56] == PREV
    assert data[56:64] == blake3(data[:56]).digest()[:8]
    header = fmt.decode_segment_header(data)
    assert header == fmt.SegmentHeader(first_seq, PREV)
    # Trailing bytes (the first frame) are ignored.
    assert fmt.decode_segment_header(data + b"\x01" * 100) == header


def test_every_single_byte_change_of_a_segment_header_is_detected():
    data = fmt.encode_segment_header(42, PREV)
    for i in range(len(data)):
        for x in range(1, 256):
            damaged = bytearray(data)
            damaged[i] ^= x
            with pytest.raises(fmt.HeaderDamaged):
                fmt.decode_segment_header(bytes(damaged))


@pytest.mark.parametrize("size", [0, 1, 32, 63])
def test_short_segment_header_is_damaged(size):
    data = fmt.encode_segment_header(1, fmt.GENESIS_HASH)
    with pytest.raises(fmt.HeaderDamaged):
        fmt.decode_segment_header(data[:size])


def _sealed(body: bytes) -> bytes:
    """A header whose check is valid for arbitrary (possibly invalid) contents."""
    return body + blake3(body).digest()[:8]


def test_version_1_segment_headers_are_still_read():
    old = fmt.encode_segment_header(5, PREV, version=1)
    assert old == _sealed(struct.pack(">8sHHIQ32s", b"PGWLEDGR", 1, 0, 0, 5, PREV))
    assert fmt.decode_segment_header(old) == fmt.SegmentHeader(5, PREV, 0, 1)


def test_segment_header_fields_are_checked_even_when_check_matches():
    good = struct.pack(">8sHHIQ32s", b"PGWLEDGR", 2, 0, 0, 5, PREV)
    assert fmt.decode_segment_header(_sealed(good)).first_seq == 5
    bad_magic = struct.pack(">8sHHIQ32s", b"PGWLEDGX", 2, 0, 0, 5, PREV)
    bad_version = struct.pack(">8sHHIQ32s", b"PGWLEDGR", 3, 0, 0, 5, PREV)
    zero_seq = struct.pack(">8sHHIQ32s", b"PGWLEDGR", 1, 0, 0, 0, PREV)
    for body in (bad_magic, bad_version, zero_seq):
        with pytest.raises(fmt.HeaderDamaged):
            fmt.decode_segment_header(_sealed(body))


def test_all_zero_segment_header_is_damaged():
    with pytest.raises(fmt.HeaderDamaged):
        fmt.decode_segment_header(bytes(64))


@pytest.mark.parametrize("payload", [b"", b"\xa0", b"x" * 1000])
def test_frame_round_trip(payload):
    seq = 7
    frame, digest = fmt.encode_frame(seq, payload, PREV)
    assert len(frame) == len(payload) + fmt.FRAME_OVERHEAD
    length, got_seq = fmt.parse_frame_header(frame)
    assert (length, got_seq) == (len(payload), seq)
    assert frame[:4] == len(payload).to_bytes(4, "big")
    assert frame[4:12] == seq.to_bytes(8, "big")
    assert frame[12:16] == zlib.crc32(frame[:12]).to_bytes(4, "big")
    assert frame[16 : 16 + length] == payload
    assert frame[16 + length :] == digest
    # At an offset inside a larger buffer, and from a memoryview.
    buf = b"\xff" * 9 + frame + b"\xee" * 3
    assert fmt.parse_frame_header(buf, 9) == (len(payload), seq)
    assert fmt.parse_frame_header(memoryview(buf), 9) == (len(payload), seq)


def test_frame_header_matches_encode_frame():
    frame, _ = fmt.encode_frame(2**64 - 1, b"abc", PREV)
    assert fmt.frame_header(3, 2**64 - 1) == frame[:16]
    marked, _ = fmt.encode_frame(2**64 - 1, b"abc", PREV, unit_start=True)
    assert fmt.frame_header(3, 2**64 - 1, unit_start=True) == marked[:16]


@pytest.mark.parametrize("length", [0, 3, fmt.MAX_PAYLOAD_BYTES])
def test_a_unit_start_is_bit_31_of_the_length_and_is_hashed(length):
    payload = b"\xa0" * length if length < 100 else b""
    plain, plain_digest = fmt.encode_frame(7, payload, PREV)
    marked, marked_digest = fmt.encode_frame(7, payload, PREV, unit_start=True)
    assert marked[0] == plain[0] | 0x80 and marked[1:12] == plain[1:12]
    assert marked[12:16] == zlib.crc32(marked[:12]).to_bytes(4, "big")
    assert fmt.parse_frame_header(marked) == fmt.parse_frame_header(plain) == (len(payload), 7)
    assert fmt.is_unit_start(marked) and not fmt.is_unit_start(plain)
    # The bit is part of the stored bytes: the chain hash covers it.
    assert marked_digest == fmt.chain_hash(PREV, marked[:-32]) != plain_digest
    header = fmt.frame_header(length, 1, unit_start=True)
    assert fmt.parse_frame_header(header) == (length, 1)


def test_every_single_bit_flip_of_a_frame_header_is_detected():
    frame, _ = fmt.encode_frame(123456, b"payload bytes", PREV)
    header = frame[:16]
    for bit in range(16 * 8):
        damaged = bytearray(header)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(fmt.HeaderDamaged):
            fmt.parse_frame_header(bytes(damaged))


def test_every_single_byte_change_of_a_frame_header_is_detected():
    frame, _ = fmt.encode_frame(9, b"\xa1\x01\x02", PREV)
    for i in range(16):
        for x in range(1, 256):
            damaged = bytearray(frame[:16])
            damaged[i] ^= x
            with pytest.raises(fmt.HeaderDamaged):
                fmt.parse_frame_header(bytes(damaged))


def test_zero_frame_header_is_damaged():
    # A zero-filled region never parses as a frame: CRC-32 of 12 zero bytes is not 0.
    with pytest.raises(fmt.HeaderDamaged):
        fmt.parse_frame_header(bytes(16))


def test_frame_length_limit():
    ok = fmt.frame_header(fmt.MAX_PAYLOAD_BYTES, 1)
    assert fmt.parse_frame_header(ok) == (fmt.MAX_PAYLOAD_BYTES, 1)
    too_long = fmt.frame_header(fmt.MAX_PAYLOAD_BYTES + 1, 1)  # CRC is valid
    with pytest.raises(fmt.HeaderDamaged):
        fmt.parse_frame_header(too_long)
    assert fmt.MAX_PAYLOAD_BYTES == 16 * 1024 * 1024


def test_chain_hash_matches_encode_frame_digest():
    prev = fmt.GENESIS_HASH
    for seq, payload in enumerate([b"", b"a", b"\x00" * 300, bytes(range(256))], start=1):
        frame, digest = fmt.encode_frame(seq, payload, prev)
        stored = frame[: -fmt.HASH_BYTES]
        assert fmt.chain_hash(prev, stored) == digest
        assert fmt.chain_hash(prev, memoryview(stored)) == digest
        assert digest == blake3(prev + stored).digest()
        # The hash depends on the previous hash, not only on the entry.
        assert fmt.chain_hash(bytes(32), stored) != digest
        prev = digest


def test_chain_hash_covers_header_and_payload():
    frame, digest = fmt.encode_frame(3, b"hello", PREV)
    stored = frame[:-32]
    for i in range(len(stored)):
        changed = bytearray(stored)
        changed[i] ^= 0x01
        assert fmt.chain_hash(PREV, bytes(changed)) != digest


@pytest.mark.parametrize("seq", [1, 9, 10, 12345678901234567890, 2**64 - 1])
def test_segment_name_round_trip(seq):
    name = fmt.segment_name(seq)
    assert len(name) == 24
    assert name.endswith(".seg")
    assert fmt.parse_segment_name(name) == seq


def test_segment_names_sort_in_seq_order():
    seqs = [1, 2, 9, 10, 11, 99, 100, 10**12, 2**64 - 1]
    names = [fmt.segment_name(s) for s in seqs]
    assert sorted(names) == names
    assert fmt.segment_name(1) == "00000000000000000001.seg"


@pytest.mark.parametrize(
    "name",
    [
        "1.seg",
        "0000000000000000001.seg",  # 19 digits
        "000000000000000000001.seg",  # 21 digits
        "0000000000000000000a.seg",
        "00000000000000000001.SEG",
        "00000000000000000001.seg.tail",
        "00000000000000000001.seq",
        "quarantine",
        "",
        " 0000000000000000001.seg",
    ],
)
def test_parse_segment_name_rejects_other_names(name):
    assert fmt.parse_segment_name(name) is None

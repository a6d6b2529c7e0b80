"""Pure encoding of the ledger: segment headers, entry frames, the chain hash.

No files here: everything works on bytes, so corruption tests need no disk.
docs/ledger-format.md is the normative description; keep the two in step.

Segment file:   [segment header, 64 bytes] [frame] [frame] ...
Segment header: magic "PGWLEDGR" | version u16 | reserved u16 (0) | skipped u32
                | first_seq u64 | prev_hash 32 bytes | check = BLAKE3(first 56 bytes)[:8]
Frame:          length u32 (bit 31: the frame starts a sync unit) | seq u64
                | crc32(length||seq) u32 | payload (CBOR) | chain hash 32 bytes
Chain hash:     h(seq) = BLAKE3(h(seq-1) || length||seq||crc||payload); h(0) = GENESIS.

All integers are big-endian.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from blake3 import blake3

from gateway.errors import GatewayError

MAGIC = b"PGWLEDGR"
# Version 2 segments mark the first frame of each sync unit (UNIT_START), so
# that start-up recovery can tell a torn write from damage to synced entries;
# version 1 segments (written before) never set the bit and are read as before.
VERSION = 2
READABLE_VERSIONS = (1, 2)
HASH_BYTES = 32
SEGMENT_HEADER_BYTES = 64
FRAME_HEADER_BYTES = 16  # length u32 + seq u64 + crc32 u32
FRAME_OVERHEAD = FRAME_HEADER_BYTES + HASH_BYTES

# Largest payload a frame may carry. The biggest entry the gateway writes is an
# event of up to ingest.max_line_bytes of JSON plus its source and flags; 16 MiB
# leaves room for any allowed max_line_bytes (capped at 8 MiB in config.py) and
# lets a reader reject an absurd length without allocating it.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

# Bit 31 of a frame's length field: this frame is the first of a sync unit
# (docs/ledger-format.md, "Sync units"). The writer syncs the unit before it
# writes any byte of the next, so a unit start found after a bad frame proves
# that the bad frame was covered by a completed sync: damage, not a torn write.
UNIT_START = 0x8000_0000

# The chain starts from a fixed, documented value rather than zeros so that a
# hash of an empty prefix can never be confused with an all-zero region.
GENESIS_HASH = blake3(b"print-gateway ledger genesis v1").digest()

_SEG_BODY = struct.Struct(">8sHHIQ32s")  # 56 bytes, followed by an 8-byte check
_FRAME_LEN_SEQ = struct.Struct(">IQ")
_FRAME_HEADER = struct.Struct(">IQI")
_CRC = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    first_seq: int
    prev_hash: bytes
    # Seqs given up for good just before first_seq (`gateway accept-loss`): the
    # chain continues from prev_hash, the hash of seq first_seq - skipped - 1.
    skipped: int = 0
    version: int = VERSION


class HeaderDamaged(GatewayError, ValueError):
    """A segment or frame header fails its check: damage, not a torn write."""


def encode_segment_header(
    first_seq: int, prev_hash: bytes, skipped: int = 0, version: int = VERSION
) -> bytes:
    body = _SEG_BODY.pack(MAGIC, version, 0, skipped, first_seq, prev_hash)
    return body + blake3(body).digest()[:8]


def decode_segment_header(data: bytes) -> SegmentHeader:
    """Decode a 64-byte segment header; raises HeaderDamaged if it fails its check."""
    if len(data) < SEGMENT_HEADER_BYTES:
        raise HeaderDamaged(f"segment header is {len(data)} bytes, expected 64")
    body = bytes(data[:56])
    if blake3(body).digest()[:8] != bytes(data[56:64]):
        raise HeaderDamaged("segment header check does not match")
    magic, version, _r1, skipped, first_seq, prev_hash = _SEG_BODY.unpack(body)
    if magic != MAGIC:
        raise HeaderDamaged("not a ledger segment (bad magic)")
    if version not in READABLE_VERSIONS:
        raise HeaderDamaged(f"unsupported segment format version {version}")
    if first_seq < 1 or skipped >= first_seq:
        raise HeaderDamaged("segment first_seq must be at least 1 and above its skipped seqs")
    return SegmentHeader(first_seq, prev_hash, skipped, version)


def frame_header(length: int, seq: int, unit_start: bool = False) -> bytes:
    ls = _FRAME_LEN_SEQ.pack(length | (UNIT_START if unit_start else 0), seq)
    return ls + zlib.crc32(ls).to_bytes(4, "big")


def encode_frame(
    seq: int, payload: bytes, prev_hash: bytes, unit_start: bool = False
) -> tuple[bytes, bytes]:
    """Return (frame bytes, chain hash of this entry). frame_header(), inlined: hot path."""
    ls = _FRAME_LEN_SEQ.pack(len(payload) | (UNIT_START if unit_start else 0), seq)
    stored = ls + _CRC.pack(zlib.crc32(ls)) + payload
    digest = blake3(prev_hash + stored).digest()
    return stored + digest, digest


def parse_frame_header(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Return (payload length, seq) of the frame header at offset.

    Raises HeaderDamaged when the header's CRC does not match or the length is
    impossible. The caller must supply at least FRAME_HEADER_BYTES bytes.
    The UNIT_START bit is not part of the length (is_unit_start reads it).
    """
    length, seq, crc = _FRAME_HEADER.unpack_from(data, offset)
    if zlib.crc32(data[offset : offset + 12]) != crc:
        raise HeaderDamaged("frame header CRC does not match")
    length &= ~UNIT_START
    if length > MAX_PAYLOAD_BYTES:
        raise HeaderDamaged(f"frame length {length} exceeds the maximum")
    return length, seq


def is_unit_start(data: bytes | memoryview, offset: int = 0) -> bool:
    """Whether the frame at offset starts a sync unit (its header already checked)."""
    return bool(data[offset] & 0x80)


def chain_hash(prev_hash: bytes, stored: bytes | memoryview) -> bytes:
    """h(n) = BLAKE3(h(n-1) || stored bytes of entry n) (header and payload)."""
    h = blake3(prev_hash)
    h.update(stored)
    return h.digest()


def segment_name(first_seq: int) -> str:
    """Segment files sort by name in seq order: 20 digits holds any u64."""
    return f"{first_seq:020d}.seg"


def parse_segment_name(name: str) -> int | None:
    digits = name[:20]
    if len(name) == 24 and name.endswith(".seg") and digits.isascii() and digits.isdigit():
        return int(name[:20])
    return None

"""The native scan keeps nothing: a million lines through gateway._native, RSS flat.

Mixed lines (plain and nested audit events, blank lines, CRLF, escapes, lines
for the Python path) go through `Scanner.scan` the way gateway/ingest/fast.py
calls it: bytes, bytearray and memoryview buffers, both scanner kinds (plain
and redacting), budgets, small segments and sync units. A reference or a
buffer kept per call (a frames bytes object, an unreleased buffer view) shows
as resident memory growing between the warm-up and the end, or as the inputs'
reference counts moving. The fuzzing harness (tests/fuzz/, `make test-fuzz`)
covers the C core's memory safety itself; this covers the CPython wrapper.

Skipped when the extension is not built, unless GATEWAY_REQUIRE_NATIVE=1.
"""

from __future__ import annotations

import gc
import os
import sys
import time

import cbor2
import pytest

REQUIRE_NATIVE_ENV = "GATEWAY_REQUIRE_NATIVE"

# Lines scanned in all, and after how many the baseline RSS is taken: the
# scanners' kept buffers and the allocator's arenas have grown by then.
LINES = 1_000_000
WARMUP_LINES = 200_000
# Growth allowed from the warm-up to the end: a leak of one small object per
# event (~50 bytes) over 800,000 lines would be ~40 MB, twenty times this.
MAX_GROWTH_BYTES = 2 * 1024 * 1024
# Lines per buffer handed to one run of scans (a connection's read is similar).
BLOCK_LINES = 1000
# Wall-clock bound of the whole run (about 1 s measured on a shared 2-CPU
# machine); past it the test fails rather than running on.
DEADLINE_SECONDS = 120
LITERALS = (b"password", b"token", b"secret")
HASH_BYTES = 32


def _native():
    try:
        from gateway import _native
    except ImportError as exc:
        if os.environ.get(REQUIRE_NATIVE_ENV) == "1":
            pytest.fail(f"gateway._native is not built ({exc}) and {REQUIRE_NATIVE_ENV}=1")
        pytest.skip(f"gateway._native is not built ({exc})")
    return _native


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _head(received_us: int) -> bytes:
    """The entry's CBOR up to the event's map (gateway/ledger/entries.py)."""
    source = {"addr": "127.0.0.1", "port": 50123, "app": "pos", "conn": 7}
    return b"".join(
        (
            b"\xa5",
            cbor2.dumps("kind"),
            cbor2.dumps("event"),
            cbor2.dumps("received_at"),
            cbor2.dumps(received_us),
            cbor2.dumps("source"),
            cbor2.dumps(source),
            cbor2.dumps("event"),
        )
    )


def _line(i: int) -> bytes:
    """Line i of a block: mostly events the core takes, some it leaves to Python."""
    kind = i % 10
    ts = f"2026-01-02T03:{i % 60:02d}:{(i * 7) % 60:02d}Z"
    if kind in (0, 1, 2):
        return b'{"event_type":"user.login","timestamp":"%s","user":"u%d","n":%d}\n' % (
            ts.encode(),
            i,
            i * 31,
        )
    if kind == 3:  # a nested audit record, ~600 bytes, CRLF
        return (
            b'{"event_type":"record.update","timestamp":"%s","actor":{"id":%d,'
            b'"name":"Jane Example","roles":["clerk","reviewer"]},"target":{"table":'
            b'"invoices","id":%d,"path":"/ledger/2026/01/invoice"},"changes":[{"field":'
            b'"amount","old":{"value":120.5,"currency":"EUR"},"new":{"value":125.0,'
            b'"currency":"EUR"}},{"field":"status","old":"draft","new":"approved"},'
            b'{"field":"approver","old":null,"new":{"id":17,"name":"Max Mustermann"}}],'
            b'"ip":"192.0.2.10","session":{"id":"c0ffee00-1234-5678","mfa":true,'
            b'"age_s":3600},"note":"quarterly review, see ticket OPS-1234 \\u00e9\\ud83d\\ude00",'
            b'"tags":["a","b","c"],"ok":false}\r\n' % (ts.encode(), i, i * 3)
        )
    if kind == 4:
        return b"  \r\n" if i % 20 < 10 else b"\n"
    if kind == 5:  # the Python path's: exactly-once ids
        return b'{"event_type":"x","event_id":"e-%d"}\n' % i
    if kind == 6:  # not JSON
        return b'{"event_type":"x",bad}\n'
    if kind == 7:  # a key redaction matches (a plain event for the plain scanner)
        return b'{"event_type":"auth","password":"hunter%d","timestamp":"%s"}\n' % (
            i,
            ts.encode(),
        )
    if kind == 8:  # flags: missing or bad fields
        return b'{"timestamp":12,"v":[1,2.5,-3,"\\n\\t"]}\n'
    return b'{"event_type":"","e":"caf\xc3\xa9","big":-999999999999999999}\n'


def _block(offset: int) -> tuple[bytes, int]:
    lines = [_line(offset + i) for i in range(BLOCK_LINES)]
    nonblank = sum(1 for ln in lines if ln.strip(b" \t\r\n"))
    return b"".join(lines), nonblank


def test_a_million_lines_leave_rss_flat():
    native = _native()
    plain = native.Scanner(1 << 20, None, False)
    redacting = native.Scanner(1 << 20, LITERALS, True)
    raw = [_block(k * BLOCK_LINES) for k in range(4)]
    array = bytearray(raw[1][0])
    # The buffer kinds a connection hands over: bytes, bytearray, a memoryview.
    blocks = [
        (raw[0][0], raw[0][0], raw[0][1]),
        (array, raw[1][0], raw[1][1]),
        (memoryview(raw[2][0]), raw[2][0], raw[2][1]),
        (raw[3][0], raw[3][0], raw[3][1]),
    ]
    head = _head(1_767_323_045_000_000)
    refs_before = [sys.getrefcount(b) for b, _, _ in blocks] + [sys.getrefcount(head)]

    seq = 1
    prev = bytes(HASH_BYTES)
    lines = events = slow = calls = 0
    baseline = None
    start = time.monotonic()
    for k in range(LINES // BLOCK_LINES):
        assert time.monotonic() - start < DEADLINE_SECONDS, f"{lines} lines in {DEADLINE_SECONDS}s"
        buf, data, nonblank = blocks[k % len(blocks)]
        scanner = redacting if k % 3 == 2 else plain
        budget = 7 if k % 5 == 1 else -1
        # Mostly a roomy segment; now and then a small one or a small sync unit (GW_FULL).
        room = 4096 if k % 7 == 3 else 1 << 30
        unit_left = 2048 if k % 11 == 5 else 1 << 20
        empty = k % 2 == 0
        # The connection's own max_line_bytes now and then (the optional argument).
        line_limit = (1 << 16,) if k % 6 == 4 else (None,) if k % 6 == 5 else ()
        pos, taken, skipped = 0, 0, 0
        end = len(buf)
        for _ in range(4 * BLOCK_LINES):  # every call moves on, or ends the block
            pos, n, stop, frames, flags, last = scanner.scan(
                buf,
                pos,
                head,
                k % 4 == 0,
                seq,
                prev,
                budget,
                room,
                empty,
                unit_left,
                k % 3 == 0,  # the first frame starts a sync unit
                *line_limit,
            )
            calls += 1
            assert len(flags) == n and (len(frames) > 0) == (n > 0)
            assert len(last) == HASH_BYTES
            if n:
                seq += n
                prev = last
                taken += n
                room -= len(frames)
                unit_left -= len(frames)
                empty = False
            if stop == native.SLOW:
                pos = data.index(b"\n", pos) + 1
                skipped += 1
                seq += 1  # the Python path writes that line's entry
            elif stop == native.FULL:
                room, unit_left, empty = 1 << 30, 1 << 20, True
            elif stop == native.MORE:
                break
            if pos >= end:
                break
        assert pos == end, f"block {k} stopped at {pos} of {end}"
        assert taken + skipped == nonblank, f"block {k}: {taken} events, {skipped} slow"
        events += taken
        slow += skipped
        lines += BLOCK_LINES
        if baseline is None and lines >= WARMUP_LINES:
            gc.collect()
            baseline = _rss_bytes()
    gc.collect()
    growth = _rss_bytes() - baseline
    elapsed = time.monotonic() - start

    assert lines == LINES and events > LINES // 2 and slow > 0
    del buf, data  # the loop's own references to the last block
    refs_after = [sys.getrefcount(b) for b, _, _ in blocks] + [sys.getrefcount(head)]
    assert refs_after == refs_before, "a reference to an input was kept"
    array.append(0)  # a view still exported would make this raise BufferError
    array.pop()
    print(
        f"RSS growth {growth:,} bytes; {events:,} events, {slow:,} slow, {calls:,} calls, "
        f"{elapsed:.1f}s"
    )
    assert growth < MAX_GROWTH_BYTES, (
        f"RSS grew {growth / 1e6:.1f} MB between line {WARMUP_LINES:,} and {LINES:,} "
        f"({events:,} events, {calls:,} calls, {elapsed:.1f}s)"
    )

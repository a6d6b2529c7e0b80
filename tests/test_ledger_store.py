"""Segment store: tail recovery at open, quarantine, rotation, reading, per-entry sync.

Ledgers are built with the real writer (LedgerWriter + write_batch), then damaged
on disk the way a power cut or a bad card would leave them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from blake3 import blake3

from gateway.errors import LedgerCorruption
from gateway.ledger import entries, store
from gateway.ledger import format as fmt
from gateway.ledger import mark as hwm
from gateway.ledger.store import (
    Head,
    LedgerReader,
    LedgerWriter,
    SegmentReader,
    TailState,
    list_segments,
    start_ledger_at,
    write_batch,
    write_entries,
)
from gateway.ledger.verify import verify_ledger

T0 = 1_700_000_000_000_000  # received_at of entry 0, microseconds
SOURCE = entries.encode_source("192.0.2.10", 40000, "pos-7", 3)


# ----------------------------------------------------------------------------------------- helpers


def payload(i: int, pad: int = 0) -> bytes:
    """Entry i: mostly events (some flagged), every third a system entry."""
    if i % 3 == 2:
        return entries.encode_system(T0 + i, "note", {"i": i})
    flags = [] if i % 2 else ["missing_timestamp"]
    return entries.encode_event(
        T0 + i, SOURCE, {"event_type": "print", "n": i, "pad": "x" * pad}, flags
    )


def commit(writer: LedgerWriter, payloads: list[bytes], batch: int = 4) -> list[int]:
    """Append payloads, committing every `batch` entries with a synced write_batch."""
    seqs = write_entries(writer, payloads, batch=batch)
    assert writer.durable.seq == writer.next_seq - 1
    return seqs


def build(directory: Path, n: int, *, segment_bytes: int = 1 << 20, pad: int = 0) -> LedgerWriter:
    writer = LedgerWriter(directory, segment_bytes=segment_bytes).open()
    commit(writer, [payload(i, pad) for i in range(n)])
    return writer


def seg_paths(directory: Path) -> list[Path]:
    return [p for _first, p in list_segments(directory)]


def frames_of(path: Path) -> list[tuple[int, int, int]]:
    """(offset, end, seq) of each frame of a clean segment, parsed without SegmentReader."""
    data = path.read_bytes()
    out = []
    pos = fmt.SEGMENT_HEADER_BYTES
    while pos < len(data):
        length, seq = fmt.parse_frame_header(data, pos)
        end = pos + fmt.FRAME_HEADER_BYTES + length + fmt.HASH_BYTES
        assert end <= len(data)
        out.append((pos, end, seq))
        pos = end
    return out


def chain_hashes(directory: Path) -> list[bytes]:
    """hashes[s] = chain hash of entry s (hashes[0] = genesis), from a verified ledger."""
    out = [fmt.GENESIS_HASH]
    for path in seg_paths(directory):
        data = path.read_bytes()
        for _offset, end, seq in frames_of(path):
            assert seq == len(out)
            out.append(data[end - 32 : end])
    return out


def quarantined(directory: Path) -> dict[str, bytes]:
    qdir = directory / store.QUARANTINE_DIR
    if not qdir.exists():
        return {}
    return {p.name: p.read_bytes() for p in qdir.iterdir()}


def read_all(directory: Path, from_seq: int = 1, to_seq: int | None = None) -> list[tuple]:
    return [(s, bytes(p), h) for s, p, h in LedgerReader(directory).entries(from_seq, to_seq)]


def assert_verifies(directory: Path, entries_count: int) -> None:
    result = verify_ledger(directory)
    assert result.ok, result.as_json()
    assert result.entries == entries_count
    assert not result.tail_incomplete


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------- (a) torn tails


def test_truncation_at_every_offset_of_the_last_three_entries_recovers_a_valid_prefix(tmp_path):
    src = tmp_path / "src"
    n = 14
    build(src, n, segment_bytes=700)
    paths = seg_paths(src)
    assert len(paths) >= 3
    last = paths[-1]
    frames = frames_of(last)
    assert len(frames) >= 3, "the last segment must hold at least three entries"
    original = last.read_bytes()
    hashes = chain_hashes(src)
    assert len(hashes) == n + 1
    entries_before = frames[0][2] - 1  # entries in earlier segments
    ends = [fmt.SEGMENT_HEADER_BYTES] + [end for _o, end, _s in frames]

    # Torn tails the high-water mark never covered (a crash before it was
    # written); what the mark covers is never cut (tests/test_loss.py).
    (src / hwm.MARK_FILE).unlink()
    start = frames[-3][0]
    for cut in range(start, len(original) + 1):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        seg = d / last.name
        with open(seg, "r+b") as f:
            f.truncate(cut)

        writer = LedgerWriter(d, segment_bytes=700).open()

        boundary = max(e for e in ends if e <= cut)
        complete = entries_before + sum(1 for e in ends[1:] if e <= cut)
        assert writer.next_seq == complete + 1, cut
        assert writer.last_hash == hashes[complete]
        assert writer.durable == Head(complete, hashes[complete])
        assert seg.stat().st_size == boundary
        if cut == boundary:
            assert writer.recovery is None, cut
            assert quarantined(d) == {}
        else:
            rec = writer.recovery
            assert rec is not None, cut
            assert rec.segment == last.name
            assert rec.offset == boundary
            assert rec.discarded_bytes == cut - boundary
            assert rec.discarded_blake3 == blake3(original[boundary:cut]).hexdigest()
            assert rec.removed_segments == []
            assert rec.reason
            q = quarantined(d)
            assert list(q.values()) == [original[boundary:cut]], cut
            assert rec.quarantine_file == f"{store.QUARANTINE_DIR}/{next(iter(q))}"
        assert_verifies(d, complete)

        # Appending continues the chain from the recovered head.
        more = [payload(100 + i) for i in range(3)]
        if writer.recovery is not None:
            more.insert(0, entries.encode_system(T0, "recovered", asdict(writer.recovery)))
        seqs = commit(writer, more, batch=2)
        assert seqs == list(range(complete + 1, complete + 1 + len(more)))
        assert_verifies(d, complete + len(more))
        assert [p for _s, p, _h in read_all(d, complete + 1)] == more
        shutil.rmtree(d)


def test_open_of_an_intact_ledger_changes_nothing(tmp_path):
    d = tmp_path / "l"
    writer = build(d, 9, segment_bytes=500)
    before = {p.name: p.read_bytes() for p in seg_paths(d)}
    again = LedgerWriter(d, segment_bytes=500).open()
    assert again.recovery is None
    assert again.next_seq == 10
    assert again.durable == writer.durable
    assert {p.name: p.read_bytes() for p in seg_paths(d)} == before
    assert not (d / store.QUARANTINE_DIR).exists()


# ---------------------------------------------------------------------------------- (b) zero tails


@pytest.mark.parametrize("zeros", [1, 3, 15, 16, 17, 47, 48, 49, 100, 4096])
def test_zero_bytes_after_the_last_frame_are_a_torn_tail(tmp_path, zeros):
    d = tmp_path / "l"
    n = 7
    build(d, n)
    last = seg_paths(d)[-1]
    size = last.stat().st_size
    with open(last, "ab") as f:
        f.write(bytes(zeros))

    before = verify_ledger(d)
    assert before.ok and before.tail_incomplete and before.entries == n
    assert [s for s, _p, _h in read_all(d)] == list(range(1, n + 1))

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.next_seq == n + 1
    assert last.stat().st_size == size
    rec = writer.recovery
    assert rec is not None
    assert (rec.offset, rec.discarded_bytes) == (size, zeros)
    assert rec.discarded_blake3 == blake3(bytes(zeros)).hexdigest()
    assert list(quarantined(d).values()) == [bytes(zeros)]
    commit(writer, [payload(50), payload(51)])
    assert_verifies(d, n + 2)


@pytest.mark.parametrize("extra_zeros", [0, 1, 100])
def test_last_frame_replaced_by_zeros_is_a_torn_tail(tmp_path, extra_zeros):
    d = tmp_path / "l"
    n = 6
    build(d, n)
    last = seg_paths(d)[-1]
    offset, end, seq = frames_of(last)[-1]
    assert seq == n
    data = last.read_bytes()
    torn = data[:offset] + bytes(end - offset + extra_zeros)
    last.write_bytes(torn)

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.next_seq == n  # entry n was never complete on disk
    assert last.stat().st_size == offset
    assert writer.recovery is not None
    assert writer.recovery.offset == offset
    assert writer.recovery.discarded_bytes == len(torn) - offset
    assert list(quarantined(d).values()) == [torn[offset:]]
    commit(writer, [payload(60)])
    assert_verifies(d, n)


def test_zeroed_payload_pages_of_the_last_batch_are_cut_at_the_first_bad_link(tmp_path):
    # Pages written out of order: frame headers survive, a payload reads back as zeros.
    d = tmp_path / "l"
    n = 8
    build(d, n)
    last = seg_paths(d)[-1]
    frames = frames_of(last)
    data = bytearray(last.read_bytes())
    bad_offset, bad_end, bad_seq = frames[-3]
    data[bad_offset + 16 : bad_end] = bytes(bad_end - bad_offset - 16)
    last.write_bytes(bytes(data))

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.next_seq == bad_seq
    assert writer.recovery is not None
    assert writer.recovery.offset == bad_offset
    assert "chain hash" in writer.recovery.reason
    assert list(quarantined(d).values()) == [bytes(data[bad_offset:])]
    commit(writer, [payload(70)])
    assert_verifies(d, bad_seq)


# -------------------------------------------------------------------------- (c) damage, not a tear


def _big_ledger(directory: Path) -> tuple[Path, list[tuple[int, int, int]]]:
    """One segment with more than MAX_TORN_BYTES (patched to 256) after entry 1."""
    writer = LedgerWriter(directory, segment_bytes=64 << 20).open()
    commit(writer, [payload(i, pad=100) for i in range(20)], batch=3)
    (path,) = seg_paths(directory)
    frames = frames_of(path)
    assert path.stat().st_size - frames[1][0] > store.MAX_TORN_BYTES
    return path, frames


def test_damage_far_from_the_tail_is_kept_as_damage_rather_than_discarded(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_TORN_BYTES", 256)
    d = tmp_path / "l"
    path, frames = _big_ledger(d)
    offset, _end, seq = frames[1]
    flip(path, offset + 11)  # low byte of entry 2's seq: its header CRC fails
    damaged = path.read_bytes()

    writer = LedgerWriter(d, segment_bytes=64 << 20).open()
    damage = writer.damage
    assert damage is not None
    assert (damage.file, damage.offset, damage.first_seq) == (str(path), offset, seq)
    assert damage.last_seq == len(frames)  # every seq the file holds stays given out
    assert "damage, not a torn write" in damage.reason
    assert writer.next_seq == len(frames) + 1
    assert path.read_bytes() == damaged  # nothing truncated
    assert not (d / store.QUARANTINE_DIR).exists()


def test_unreadable_bytes_past_the_torn_bound_are_damage_holding_every_seq_they_could(
    tmp_path, monkeypatch
):
    # No frame can be read after the bad one: the range named is as many seqs as
    # the bytes could hold, so none of them is ever given out again.
    monkeypatch.setattr(store, "MAX_TORN_BYTES", 256)
    d = tmp_path / "l"
    path, frames = _big_ledger(d)
    offset = frames[1][0]
    data = bytearray(path.read_bytes())
    data[offset:] = b"\x55" * (len(data) - offset)
    path.write_bytes(bytes(data))

    writer = LedgerWriter(d, segment_bytes=64 << 20).open()
    damage = writer.damage
    assert damage is not None and (damage.first_seq, damage.offset) == (2, offset)
    assert damage.last_seq == 1 + (len(data) - offset) // fmt.FRAME_OVERHEAD
    assert damage.last_seq >= len(frames)
    assert "more than one unsynced write" in damage.reason


# ------------------------------------------------- (c') a later sync unit proves the earlier synced


def _units_ledger(directory: Path) -> tuple[Path, list[tuple[int, int, int]]]:
    """Twelve entries in three commits of four (units starting at seqs 1, 5 and 9);
    the high-water mark is at seq 0, as after a crash soon after a start."""
    writer = LedgerWriter(directory, segment_bytes=1 << 20).open()
    commit(writer, [payload(i) for i in range(12)], batch=4)
    assert hwm.read_mark(directory).seq == 0
    (path,) = seg_paths(directory)
    frames = frames_of(path)
    data = path.read_bytes()
    assert [seq for o, _e, seq in frames if fmt.is_unit_start(data, o)] == [1, 5, 9]
    return path, frames


@pytest.mark.parametrize("where", ["payload", "chain hash", "frame header", "zeros"])
def test_damage_in_a_synced_unit_before_the_last_is_kept_and_its_seqs_never_given_again(
    tmp_path, where
):
    d = tmp_path / "l"
    path, frames = _units_ledger(d)
    offset, end, _seq = frames[5]  # seq 6, in the unit of seqs 5-8
    data = bytearray(path.read_bytes())
    if where == "payload":
        data[offset + 20] ^= 0x01
    elif where == "chain hash":
        data[end - 1] ^= 0x80
    elif where == "frame header":
        data[offset + 5] ^= 0x10
    else:  # a page of the synced unit read back as zeros
        data[offset : frames[7][1]] = bytes(frames[7][1] - offset)
    path.write_bytes(bytes(data))

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    damage = writer.damage
    assert damage is not None, "recovery cut entries that a completed sync covered"
    assert (damage.first_seq, damage.last_seq, damage.offset) == (6, 12, offset)
    assert damage.good == Head(5, chain_hashes_upto(data, frames, 5))
    assert "sync unit starting at offset" in damage.reason
    assert path.read_bytes() == bytes(data) and not quarantined(d)
    assert writer.next_seq == 13 and writer.recovery is None
    with pytest.raises(store.LedgerDamaged):
        writer.append(payload(99))

    seq_of_loss, cut = writer.accept_loss(entries.encode_system(T0, "loss", {}))
    assert seq_of_loss == 13 and cut is not None and cut.offset == offset
    result = verify_ledger(d)
    assert result.ok and [(x["first_seq"], x["last_seq"]) for x in result.as_json()["losses"]] == [
        (6, 12)
    ]


def test_damage_before_the_mark_names_every_seq_the_file_holds_after_it(tmp_path):
    # Entries after the mark's seq were synced (and may have been acknowledged)
    # since the mark was written: the range must run past the mark to the last
    # of them, or accept-loss would give their seqs to new entries.
    d = tmp_path / "l"
    path, frames = _units_ledger(d)
    data = path.read_bytes()
    hwm.write_mark(d, hwm.Mark(8, chain_hashes_upto(data, frames, 8)))
    flip(path, frames[2][0] + 20)  # seq 3's payload

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    damage = writer.damage
    assert damage is not None and (damage.first_seq, damage.last_seq) == (3, 12)
    assert writer.next_seq == 13
    loss_seq, _cut = writer.accept_loss(entries.encode_system(T0, "loss", {}))
    assert loss_seq == 13


def chain_hashes_upto(
    data: bytes | bytearray, frames: list[tuple[int, int, int]], seq: int
) -> bytes:
    _offset, end, got = frames[seq - 1]
    assert got == seq
    return bytes(data[end - 32 : end])


@pytest.mark.parametrize("where", ["payload", "frame header", "zeros to the end"])
def test_damage_in_the_last_unit_is_still_a_torn_write(tmp_path, where):
    d = tmp_path / "l"
    path, frames = _units_ledger(d)
    offset, _end, seq = frames[9]  # seq 10, in the last unit (seqs 9-12)
    data = bytearray(path.read_bytes())
    if where == "payload":
        data[offset + 20] ^= 0x01
    elif where == "frame header":
        data[offset + 5] ^= 0x10
    else:
        data[offset:] = bytes(len(data) - offset)
    path.write_bytes(bytes(data))

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.damage is None
    assert writer.recovery is not None and writer.recovery.offset == offset
    assert writer.next_seq == seq
    assert list(quarantined(d).values()) == [bytes(data[offset:])]


def test_a_unit_start_forged_in_the_last_unit_s_payload_is_not_taken_for_a_later_unit(tmp_path):
    # Frames are followed while their headers hold: a header inside a payload is
    # never looked at then, whatever its bytes.
    d = tmp_path / "l"
    path, frames = _units_ledger(d)
    forged = fmt.frame_header(10, 14, unit_start=True)  # as seq 14 would start a unit
    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    commit(writer, [entries.encode_system(T0, "note", {"x": forged * 3})])
    data = bytearray(path.read_bytes())
    offset = frames[-1][1]  # the new entry, seq 13, a unit of its own
    data[offset + 20] ^= 0x01  # its payload is damaged, before the forged headers
    path.write_bytes(bytes(data))
    assert data.find(forged) > offset + 20

    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.damage is None and writer.recovery is not None
    assert writer.next_seq == 13


def test_a_version_1_segment_is_recovered_as_before_and_filled_unmarked(tmp_path):
    """A ledger written before sync units were marked: the old rule (the torn tail
    may be anywhere in the last MAX_TORN_BYTES after the mark) until the next
    segment, which is version 2."""
    d = tmp_path / "l"
    d.mkdir()
    path = d / fmt.segment_name(1)
    out = bytearray(fmt.encode_segment_header(1, fmt.GENESIS_HASH, version=1))
    prev = fmt.GENESIS_HASH
    for i in range(12):
        frame, prev = fmt.encode_frame(i + 1, payload(i), prev)
        out += frame
    path.write_bytes(bytes(out))
    frames = frames_of(path)
    flip(path, frames[5][0] + 20)  # seq 6, damaged: without marks it looks torn

    writer = LedgerWriter(d, segment_bytes=2000).open()
    assert writer.damage is None and writer.next_seq == 6
    commit(writer, [payload(i, pad=200) for i in range(8)], batch=2)
    segments = seg_paths(d)
    assert len(segments) >= 2
    old = path.read_bytes()
    assert not any(fmt.is_unit_start(old, o) for o, _e, _s in frames_of(path))
    new = segments[1].read_bytes()
    assert fmt.decode_segment_header(new).version == 2
    assert fmt.is_unit_start(new, fmt.SEGMENT_HEADER_BYTES)
    assert_verifies(d, 5 + 8)


def test_payload_damage_far_from_the_tail_is_left_for_verify(tmp_path, monkeypatch):
    # Start-up checks chain links only near the tail; it must not discard anything here.
    monkeypatch.setattr(store, "MAX_TORN_BYTES", 256)
    d = tmp_path / "l"
    path, frames = _big_ledger(d)
    offset, _end, seq = frames[1]
    flip(path, offset + 100)
    damaged = path.read_bytes()

    writer = LedgerWriter(d, segment_bytes=64 << 20).open()
    assert writer.recovery is None
    assert writer.next_seq == len(frames) + 1
    assert path.read_bytes() == damaged
    result = verify_ledger(d)
    assert not result.ok
    assert (result.first_bad_seq, result.offset) == (seq, offset)


# ----------------------------------------------------------------------- (d) torn segment creation


def _two_segment_ledger(directory: Path) -> tuple[int, bytes]:
    writer = build(directory, 10, segment_bytes=600)
    assert len(seg_paths(directory)) >= 2
    return writer.next_seq, writer.last_hash


def test_torn_creation_of_a_new_segment_is_removed_and_appending_continues(tmp_path):
    src = tmp_path / "src"
    next_seq, last_hash = _two_segment_ledger(src)
    name = fmt.segment_name(next_seq)
    header = fmt.encode_segment_header(next_seq, last_hash)
    for k in range(fmt.SEGMENT_HEADER_BYTES):
        d = tmp_path / f"k{k}"
        shutil.copytree(src, d)
        (d / name).write_bytes(header[:k])

        result = verify_ledger(d)
        assert result.ok and result.tail_incomplete and result.entries == next_seq - 1, k
        assert [s for s, _p, _h in read_all(d)] == list(range(1, next_seq))
        assert LedgerReader(d).head() == Head(next_seq - 1, last_hash)

        writer = LedgerWriter(d, segment_bytes=600).open()
        assert not (d / name).exists(), k
        assert writer.next_seq == next_seq
        assert writer.last_hash == last_hash
        rec = writer.recovery
        assert rec is not None
        assert rec.removed_segments == [name]
        assert rec.discarded_bytes == 0
        q = quarantined(d)
        if k:
            assert list(q.values()) == [header[:k]]
            assert next(iter(q)).startswith(f"{name}.0.")
        else:
            assert q == {}
        # Enough entries to rotate: new segments are created properly.
        segments_before = len(seg_paths(d))
        commit(writer, [payload(200 + i) for i in range(8)], batch=3)
        assert len(seg_paths(d)) > segments_before
        assert_verifies(d, next_seq + 7)
        shutil.rmtree(d)


@pytest.mark.parametrize("size", [64, 65, 200, 4096])
def test_zero_filled_new_segment_is_torn_creation(tmp_path, size):
    d = tmp_path / "l"
    next_seq, last_hash = _two_segment_ledger(d)
    name = fmt.segment_name(next_seq)
    (d / name).write_bytes(bytes(size))
    writer = LedgerWriter(d, segment_bytes=600).open()
    assert not (d / name).exists()
    assert writer.next_seq == next_seq and writer.last_hash == last_hash
    assert writer.recovery is not None and writer.recovery.removed_segments == [name]
    assert list(quarantined(d).values()) == [bytes(size)]
    commit(writer, [payload(300 + i) for i in range(8)], batch=8)
    assert_verifies(d, next_seq + 7)


def test_torn_creation_of_the_first_segment_starts_a_fresh_ledger(tmp_path):
    d = tmp_path / "l"
    d.mkdir()
    first = d / fmt.segment_name(1)
    first.write_bytes(fmt.encode_segment_header(1, fmt.GENESIS_HASH)[:10])
    writer = LedgerWriter(d, segment_bytes=600).open()
    assert writer.next_seq == 1 and writer.last_hash == fmt.GENESIS_HASH
    assert writer.recovery is not None
    assert writer.recovery.removed_segments == [first.name]
    assert first.read_bytes() == fmt.encode_segment_header(1, fmt.GENESIS_HASH)
    commit(writer, [payload(1), payload(2)])
    assert_verifies(d, 2)


@pytest.mark.parametrize("variant", ["flipped", "ones", "zero_header_then_data"])
def test_damaged_segment_header_with_data_makes_open_refuse(tmp_path, variant):
    # A ledger from before high-water marks: a bad header with data cannot be told
    # from damage. (With a mark it can: tests/test_crash_states.py.)
    d = tmp_path / "l"
    next_seq, last_hash = _two_segment_ledger(d)
    (d / hwm.MARK_FILE).unlink()
    name = fmt.segment_name(next_seq)
    path = d / name
    if variant == "flipped":
        header = bytearray(fmt.encode_segment_header(next_seq, last_hash))
        header[20] ^= 0x01
        path.write_bytes(bytes(header) + fmt.encode_frame(next_seq, payload(0), last_hash)[0])
    elif variant == "ones":
        path.write_bytes(b"\xff" * 64)
    else:
        path.write_bytes(bytes(64) + b"\x01")
    content = path.read_bytes()
    with pytest.raises(LedgerCorruption) as info:
        LedgerWriter(d, segment_bytes=600).open()
    assert (info.value.file, info.value.offset, info.value.seq) == (str(path), 0, next_seq)
    assert path.read_bytes() == content
    assert not (d / store.QUARANTINE_DIR).exists()


def test_second_recovery_at_the_same_place_keeps_the_first_quarantine_file(tmp_path, monkeypatch):
    # Quarantined bytes are evidence and are never deleted. Two recoveries of the same
    # segment at the same offset within one second (a crash loop: the `recovered`
    # entry's own write torn again) must not overwrite the first quarantine file.
    fixed = time.gmtime(1_700_000_000)
    monkeypatch.setattr(store.time, "gmtime", lambda *_a: fixed)
    d = tmp_path / "l"
    n = 5
    build(d, n)
    last = seg_paths(d)[-1]
    size = last.stat().st_size
    first_tail = fmt.encode_frame(n + 1, payload(10), b"\x11" * 32)[0][:30]
    with open(last, "ab") as f:
        f.write(first_tail)
    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert writer.recovery is not None and writer.recovery.offset == size

    writer.append(entries.encode_system(T0, "recovered", asdict(writer.recovery)))
    batch = writer.take_batch()
    assert batch is not None
    second_tail = bytes(batch.writes[0].data[:40])  # the write is torn after 40 bytes
    assert second_tail != first_tail
    with open(last, "ab") as f:
        f.write(second_tail)
    again = LedgerWriter(d, segment_bytes=1 << 20).open()
    assert again.recovery is not None and again.recovery.offset == size

    assert sorted(quarantined(d).values()) == sorted([first_tail, second_tail])


# ------------------------------------------------------------------------ (e) rotation and reading


def test_rotation_and_reader_ranges(tmp_path):
    d = tmp_path / "l"
    n = 23
    segment_bytes = 300
    writer = build(d, n, segment_bytes=segment_bytes)
    paths = seg_paths(d)
    assert len(paths) >= 8
    for path in paths:
        frames = frames_of(path)
        assert frames, "every segment holds at least one entry"
        assert path.name == fmt.segment_name(frames[0][2])
        assert path.stat().st_size <= segment_bytes
    expected = [payload(i) for i in range(n)]
    hashes = chain_hashes(d)

    full = read_all(d)
    assert full == [(s, expected[s - 1], hashes[s]) for s in range(1, n + 1)]
    for lo in range(0, n + 3):
        for hi in [None, *range(0, n + 3)]:
            got = [s for s, _p, _h in LedgerReader(d).entries(lo, hi)]
            top = n if hi is None else min(hi, n)
            assert got == list(range(max(lo, 1), top + 1)), (lo, hi)

    result = verify_ledger(d)
    assert result.ok and result.entries == n and result.segments == len(paths)
    head = LedgerReader(d).head()
    assert head == Head(result.head_seq, result.head_hash) == writer.durable

    # Reopen and keep going: rotation continues from the recovered segment size.
    writer = LedgerWriter(d, segment_bytes=segment_bytes).open()
    assert writer.recovery is None
    commit(writer, [payload(i) for i in range(n, n + 9)], batch=5)
    assert_verifies(d, n + 9)
    assert LedgerReader(d).head() == writer.durable
    assert [s for s, _p, _h in read_all(d, n - 1, n + 2)] == [n - 1, n, n + 1, n + 2]


def test_entry_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path):
    d = tmp_path / "l"
    writer = LedgerWriter(d, segment_bytes=300).open()
    commit(writer, [payload(0), payload(1, pad=1000), payload(3)], batch=1)
    sizes = [len(frames_of(p)) for p in seg_paths(d)]
    assert sizes == [1, 1, 1]
    assert_verifies(d, 3)


def test_reader_head_of_empty_and_fresh_ledgers(tmp_path):
    assert LedgerReader(tmp_path / "missing").head() == Head(0, fmt.GENESIS_HASH)
    d = tmp_path / "l"
    LedgerWriter(d, segment_bytes=300).open()
    assert LedgerReader(d).head() == Head(0, fmt.GENESIS_HASH)
    assert read_all(d) == []


# ---------------------------------------------------------------------- (f) reader tails vs damage


def test_reader_ends_at_an_incomplete_frame_at_the_live_tail(tmp_path):
    src = tmp_path / "src"
    n = 9
    build(src, n, segment_bytes=500)
    last = seg_paths(src)[-1]
    frames = frames_of(last)
    offset, end, _seq = frames[-1]
    for cut in [offset + 1, offset + 15, offset + 16, offset + 17, end - 33, end - 1]:
        d = tmp_path / f"c{cut}"
        shutil.copytree(src, d)
        with open(d / last.name, "r+b") as f:
            f.truncate(cut)
        assert [s for s, _p, _h in read_all(d)] == list(range(1, n)), cut
        assert LedgerReader(d).head().seq == n - 1
    # A segment whose header is still incomplete ends the ledger too.
    d = tmp_path / "short"
    shutil.copytree(src, d)
    (d / fmt.segment_name(n + 1)).write_bytes(b"PGWLED")
    assert [s for s, _p, _h in read_all(d)] == list(range(1, n + 1))


def test_reader_ends_at_a_zero_filled_new_segment(tmp_path):
    # The writer removes such a segment as a torn creation at the next start; until
    # then, read-only commands must treat it as the live tail, not as damage.
    d = tmp_path / "l"
    next_seq, _last_hash = _two_segment_ledger(d)
    (d / fmt.segment_name(next_seq)).write_bytes(bytes(64))
    assert [s for s, _p, _h in read_all(d)] == list(range(1, next_seq))


def _collect_until_error(directory: Path) -> tuple[list[int], LedgerCorruption]:
    seqs = []
    with pytest.raises(LedgerCorruption) as info:
        for seq, _p, _h in LedgerReader(directory).entries():
            seqs.append(seq)
    return seqs, info.value


def test_reader_raises_for_damage_in_the_middle(tmp_path):
    src = tmp_path / "src"
    n = 12
    build(src, n, segment_bytes=500)
    paths = seg_paths(src)
    assert len(paths) >= 3
    mid = paths[1]
    frames = frames_of(mid)
    offset, end, seq = frames[-1]

    # A frame header that fails its CRC in a middle segment.
    d = tmp_path / "crc"
    shutil.copytree(src, d)
    flip(d / mid.name, offset + 2)
    seqs, exc = _collect_until_error(d)
    assert seqs == list(range(1, seq))
    assert (exc.file, exc.offset, exc.seq) == (str(d / mid.name), offset, seq)

    # A middle segment cut short.
    d = tmp_path / "short"
    shutil.copytree(src, d)
    with open(d / mid.name, "r+b") as f:
        f.truncate(end - 5)
    seqs, exc = _collect_until_error(d)
    assert seqs == list(range(1, seq))
    assert (exc.file, exc.offset, exc.seq) == (str(d / mid.name), offset, seq)

    # A damaged segment header.
    d = tmp_path / "header"
    shutil.copytree(src, d)
    flip(d / mid.name, 30)
    seqs, exc = _collect_until_error(d)
    first = frames[0][2]
    assert seqs == list(range(1, first))
    assert (exc.file, exc.offset, exc.seq) == (str(d / mid.name), 0, first)

    # A frame header that fails its CRC in the last segment, with data after it.
    last = paths[-1]
    lframes = frames_of(last)
    assert len(lframes) >= 2
    loffset, _lend, lseq = lframes[-2]
    d = tmp_path / "last"
    shutil.copytree(src, d)
    flip(d / last.name, loffset + 5)
    seqs, exc = _collect_until_error(d)
    assert seqs == list(range(1, lseq))
    assert (exc.file, exc.offset, exc.seq) == (str(d / last.name), loffset, lseq)

    # A range that ends before the damage reads without error.
    d = tmp_path / "crc"
    assert [s for s, _p, _h in read_all(d, 1, seq - 2)] == list(range(1, seq - 1))
    d = tmp_path / "header"
    assert [s for s, _p, _h in read_all(d, 1, first - 1)] == list(range(1, first))


def test_segment_reader_gives_the_same_result_for_any_chunk_size(tmp_path):
    d = tmp_path / "l"
    build(d, 6)
    (path,) = seg_paths(d)
    good = path.read_bytes()
    offset, end, _seq = frames_of(path)[-1]
    damaged = bytearray(good)
    damaged[frames_of(path)[2][0] + 3] ^= 0x40
    variants = {
        "clean": good,
        "torn": good[: end - 7],
        "short": good[: offset + 9],
        "zeros": good + bytes(70),
        "damaged": bytes(damaged),
    }
    for label, data in variants.items():
        path.write_bytes(data)

        def scan(chunk: int) -> tuple:
            with SegmentReader(path, chunk_bytes=chunk) as r:
                got = [(o, s, bytes(st), bytes(h)) for o, s, st, h in r.frames()]
                return got, r.end_offset, r.tail, r.damage, r.frame_count

        reference = scan(store.READ_CHUNK_BYTES)
        expected_tail = {
            "clean": TailState.CLEAN,
            "torn": TailState.INCOMPLETE,
            "short": TailState.INCOMPLETE,
            "zeros": TailState.ZEROS,
            "damaged": TailState.DAMAGED,
        }[label]
        assert reference[2] == expected_tail, label
        for chunk in range(1, 130):
            assert scan(chunk) == reference, (label, chunk)


# ------------------------------------------------------------------------------ (g) per-entry sync


def test_per_entry_sync_writes_the_same_bytes_as_batch_mode(tmp_path):
    payloads = [payload(i, pad=(i * 37) % 150) for i in range(40)]
    results = {}
    for mode in (False, True):
        d = tmp_path / ("always" if mode else "batch")
        writer = LedgerWriter(d, segment_bytes=700, per_entry_sync=mode).open()
        fds: dict[Path, int] = {}
        syncs = 0
        pos = 0
        for size in [1, 5, 2, 9, 3, 7, 13]:
            for p in payloads[pos : pos + size]:
                writer.append(p)
            pos += size
            b = writer.take_batch()
            assert b is not None
            syncs += write_batch(b, fds, True)
            writer.batch_done(b)
        for fd in fds.values():
            os.close(fd)
        assert pos == len(payloads)
        results[mode] = ({p.name: p.read_bytes() for p in seg_paths(d)}, syncs)
        assert_verifies(d, len(payloads))

    (batch_files, batch_syncs), (entry_files, entry_syncs) = results[False], results[True]
    assert len(batch_files) >= 4
    # The same entries; per-entry mode marks every frame as a unit start.
    assert entry_files.keys() == batch_files.keys()
    for name, data in entry_files.items():
        batch_data = batch_files[name]
        assert len(data) == len(batch_data)
        for offset, end, _seq in frames_of_bytes(data[64:], 64):
            assert fmt.is_unit_start(data, offset)
            assert data[offset + 1 : offset + 12] == batch_data[offset + 1 : offset + 12]
            assert data[offset + 16 : end - 32] == batch_data[offset + 16 : end - 32]
    # Per-entry mode really syncs once per entry (plus new segment headers).
    assert batch_syncs < len(payloads)
    assert entry_syncs >= len(payloads) + len(batch_files) - 1


# ------------------------------------------------------------------- sync units bound a torn write


def test_a_large_batch_is_synced_in_units_that_end_at_frame_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SYNC_UNIT_BYTES", 1000)
    d = tmp_path / "l"
    writer = LedgerWriter(d, segment_bytes=1 << 20).open()
    for i in range(40):
        writer.append(payload(i, pad=50))
    batch = writer.take_batch()
    (write,) = batch.writes
    # Every sync point is a frame end, and no unit is longer than the limit plus one frame.
    ends = {end for _offset, end, _seq in frames_of_bytes(bytes(write.data))}
    assert write.sync_points and set(write.sync_points) <= ends
    starts = [0, *write.sync_points]
    largest_frame = max(e - o for o, e, _s in frames_of_bytes(bytes(write.data)))
    assert all(b - a < 1000 + largest_frame for a, b in itertools.pairwise(starts))
    # The first frame of each unit, and only those, carry UNIT_START.
    marked = [o for o, _e, _s in frames_of_bytes(bytes(write.data)) if write.data[o] & 0x80]
    assert marked == starts
    syncs = store.write_batch(batch, {}, True)
    assert syncs == len(write.sync_points) + 1
    writer.batch_done(batch)
    assert verify_ledger(d).entries == 40


def frames_of_bytes(data: bytes, base: int = 0) -> list[tuple[int, int, int]]:
    out, pos = [], 0
    while pos < len(data):
        length, seq = fmt.parse_frame_header(data, pos)
        end = pos + fmt.FRAME_OVERHEAD + length
        out.append((base + pos, base + end, seq))
        pos = end
    return out


def test_reader_detects_a_missing_middle_segment(tmp_path):
    d = tmp_path / "l"
    build(d, 30, segment_bytes=600)
    paths = seg_paths(d)
    assert len(paths) >= 3
    paths[1].unlink()
    with pytest.raises(LedgerCorruption, match="expected"):
        list(LedgerReader(d).entries())


def test_segment_names_with_non_ascii_digits_are_not_segments(tmp_path):
    assert fmt.parse_segment_name("0000000000000000000\u00b2.seg") is None
    d = tmp_path / "l"
    build(d, 3)
    (d / "0000000000000000000\u00b2.seg").write_bytes(b"junk")
    assert verify_ledger(d).ok  # the odd file is ignored, not a crash


# ---- a ledger started after a given head (gateway fleet restore --head-only)


def _restored_ledger(directory, head_seq: int, head_hash: bytes, detail_hash: str, **extra):
    start_ledger_at(directory, Head(head_seq, head_hash))
    writer = LedgerWriter(directory, segment_bytes=65536).open()
    detail = {"box": "b", "endpoint": "s3.test", "bucket": "k", "head_only": True,
              "head_seq": head_seq, "head_hash": detail_hash, **extra}  # fmt: skip
    restored = entries.encode_system(1_700_000_000_000_000, "restored", detail)
    write_entries(writer, [restored, entries.encode_system(1_700_000_000_000_001, "s", {})])
    return writer


def test_a_ledger_started_after_a_head_verifies_from_its_restored_entry(tmp_path):
    head_hash = bytes(range(32))
    writer = _restored_ledger(tmp_path, 41, head_hash, head_hash.hex())
    assert [p.name for _f, p in list_segments(tmp_path)] == [fmt.segment_name(42)]
    assert writer.next_seq == 44
    result = verify_ledger(tmp_path)
    assert result.ok, result.reason
    assert (result.start.seq, result.start.hash) == (41, head_hash)
    assert result.checkpoint_seq == 42 and result.entries == 2 and result.head_seq == 43
    assert result.restored_from == {"endpoint": "s3.test", "bucket": "k", "box": "b"}
    # A writer taking it up again continues after the last entry.
    again = LedgerWriter(tmp_path, segment_bytes=65536).open()
    assert again.next_seq == 44 and again.damage is None


@pytest.mark.parametrize(
    "detail_hash, extra",
    [
        ("ab" * 32, {}),  # records another hash than the segment starts from
        (bytes(range(32)).hex(), {"head_only": False}),  # a full restore vouches for nothing
    ],
)
def test_a_restored_entry_that_does_not_match_the_start_does_not_vouch(
    tmp_path, detail_hash, extra
):
    _restored_ledger(tmp_path, 41, bytes(range(32)), detail_hash, **extra)
    result = verify_ledger(tmp_path)
    assert not result.ok and result.restored_from is None
    assert "checkpoint" in (result.reason or ""), result.reason


def test_start_ledger_at_refuses_a_ledger_and_a_head_before_seq_1(tmp_path):
    with pytest.raises(ValueError):
        start_ledger_at(tmp_path, Head(0, fmt.GENESIS_HASH))
    start_ledger_at(tmp_path, Head(5, bytes(32)))
    with pytest.raises(FileExistsError):
        start_ledger_at(tmp_path, Head(9, bytes(32)))
    assert [p.name for _f, p in list_segments(tmp_path)] == [fmt.segment_name(6)]

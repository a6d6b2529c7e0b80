"""An acknowledged seq is never given again, and its loss is never silent.

The high-water mark (gateway/ledger/mark.py, docs/ledger-format.md) holds the
segments to what a completed sync covered: start-up recovery cuts nothing up
to it, `gateway verify` reports entries missing up to it, the running gateway
notices its open segment removed, and `gateway accept-loss` records the loss
and gives those seqs up for good. The two reproductions of issue 13's first
finding are here: the newest segment removed while running, and a byte flipped
in an acknowledged entry of a cleanly stopped gateway.
"""

from __future__ import annotations

import json
import signal
import time

from gatewayproc import AckClient, GatewayProcess, event_line, run_gateway_command, wait_for

from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger import mark as hwm
from gateway.ledger.store import (
    QUARANTINE_DIR,
    LedgerFollower,
    LedgerReader,
    LedgerWriter,
    list_segments,
    write_entries,
)
from gateway.ledger.verify import verify_ledger

SEGMENT = 4096


def _payload(i: int) -> bytes:
    return entries.encode_system(1_700_000_000_000_000 + i, "test", {"i": i, "pad": "x" * 100})


def _build(directory, n: int) -> LedgerWriter:
    writer = LedgerWriter(directory, segment_bytes=SEGMENT).open()
    write_entries(writer, [_payload(i) for i in range(n)], batch=4)
    return writer


def _clean_stop(writer: LedgerWriter) -> None:
    assert writer.write_clean_mark()


def _frames(path):
    from gateway.ledger.store import SegmentReader

    with SegmentReader(path) as reader:
        return [(o, s, len(st) + 32) for o, s, st, _d in reader.frames()]


# ------------------------------------------------------------------ unit: the writer and verify


def test_a_byte_flipped_in_an_acknowledged_entry_after_a_clean_stop_is_kept_and_reported(
    tmp_path,
):
    d = tmp_path / "ledger"
    writer = _build(d, 52)
    _clean_stop(writer)
    head = writer.next_seq - 1
    _first, newest = list_segments(d)[-1]
    frames = _frames(newest)
    assert len(frames) >= 4
    offset, flipped_seq, _n = frames[-4]  # the fourth entry from the end: acknowledged
    data = bytearray(newest.read_bytes())
    data[offset + 20] ^= 0x01  # inside its payload
    newest.write_bytes(bytes(data))

    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    damage = reopened.damage
    assert damage is not None
    assert (damage.first_seq, damage.last_seq) == (flipped_seq, head)
    assert newest.read_bytes() == bytes(data), "nothing a completed sync covered is cut"
    assert not (d / QUARANTINE_DIR).exists()
    assert reopened.next_seq > head, "no acknowledged seq is given again"
    result = verify_ledger(d, jobs=1)
    assert not result.ok and result.first_bad_seq == flipped_seq

    loss_seq, cut = reopened.accept_loss(_payload(999))
    assert loss_seq == head + 1
    assert cut is not None and cut.quarantine_file is not None
    assert (d / cut.quarantine_file).read_bytes() == bytes(data[offset:])
    more = write_entries(reopened, [_payload(1000)])
    assert more == [head + 2]
    result = verify_ledger(d, jobs=1)
    assert result.ok, result
    assert result.losses == [(flipped_seq, head, fmt.segment_name(head + 1))]
    seqs = [seq for seq, _p, _h in LedgerReader(d).entries()]
    assert seqs == [*range(1, flipped_seq), head + 1, head + 2]
    # The query index's follower crosses the gap the same way.
    followed = LedgerFollower(d, 1).read(10_000, head + 2)
    assert [seq for seq, _p, _h in followed] == seqs
    # And after another start the ledger is whole: nothing damaged, nothing reused.
    again = LedgerWriter(d, segment_bytes=SEGMENT).open()
    assert again.damage is None and again.next_seq == head + 3


def test_the_newest_segment_removed_is_a_loss_verify_names(tmp_path):
    d = tmp_path / "ledger"
    writer = _build(d, 60)
    _clean_stop(writer)
    head = writer.next_seq - 1
    first, newest = list_segments(d)[-1]
    assert first > 1
    newest.unlink()
    result = verify_ledger(d, jobs=1)
    assert not result.ok
    assert result.first_bad_seq == first
    assert f"seq {first} to {head} are missing" in (result.reason or "")
    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    assert reopened.damage is not None
    assert (reopened.damage.first_seq, reopened.damage.last_seq) == (first, head)
    loss_seq, cut = reopened.accept_loss(_payload(0))
    assert loss_seq == head + 1 and cut is None
    result = verify_ledger(d, jobs=1)
    assert result.ok and result.losses == [(first, head, fmt.segment_name(head + 1))]


def test_every_segment_removed_is_a_loss_too(tmp_path):
    d = tmp_path / "ledger"
    writer = _build(d, 30)
    _clean_stop(writer)
    head = writer.next_seq - 1
    for _f, p in list_segments(d):
        p.unlink()
    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    assert reopened.damage is not None
    assert (reopened.damage.first_seq, reopened.damage.last_seq) == (1, head)
    loss_seq, _cut = reopened.accept_loss(_payload(0))
    assert loss_seq == head + 1
    result = verify_ledger(d, jobs=1)
    assert result.ok and result.losses == [(1, head, fmt.segment_name(head + 1))]
    assert result.start.seq == 0


def test_a_torn_tail_after_the_mark_is_still_cut(tmp_path):
    # What follows the mark's seq was never covered by a sync the mark knows of:
    # a torn write there is cut into quarantine as before.
    d = tmp_path / "ledger"
    _build(d, 10)
    mark = hwm.read_mark(d)
    assert mark is not None and mark.state == hwm.RUNNING
    _f, newest = list_segments(d)[-1]
    frames = _frames(newest)
    last_offset, last_seq, _n = frames[-1]
    assert last_seq > mark.seq
    with open(newest, "r+b") as f:
        f.truncate(last_offset + 10)
    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    assert reopened.damage is None
    assert reopened.next_seq == last_seq
    assert reopened.recovery is not None


def test_the_running_writer_notices_its_segment_removed_replaced_or_cut(tmp_path):
    for how in ("removed", "replaced", "cut"):
        d = tmp_path / how / "ledger"
        writer = _build(d, 20)
        assert writer.check_files() is None
        _f, newest = list_segments(d)[-1]
        if how == "removed":
            newest.unlink()
        elif how == "replaced":
            data = newest.read_bytes()
            newest.unlink()
            newest.write_bytes(data)
        else:
            with open(newest, "r+b") as f:
                f.truncate(newest.stat().st_size - 10)
        damage = writer.check_files()
        assert damage is not None, how
        assert damage.last_seq == writer.next_seq - 1
        mark = hwm.read_mark(d)
        assert mark is not None and mark.state == hwm.DAMAGED
        assert mark.seq == damage.last_seq
        hwm.forget_damage(d)


# ------------------------------------------------------------------ the real gateway


def _status(gw: GatewayProcess) -> dict:
    done = run_gateway_command("status", "--json", "--config", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _send_acked(port: int, n: int, start: int = 0) -> list[int]:
    with AckClient(port) as client:
        client.send_lines(event_line(type="t", n=i) for i in range(start, start + n))
        replies = client.read_replies(n, timeout=20)
    assert all(r.get("ok") for r in replies), replies[:3]
    return [r["seq"] for r in replies]


def test_newest_segment_removed_while_running(tmp_path):
    gw = GatewayProcess(tmp_path, ledger={"segment_bytes": 65536})
    try:
        acked = _send_acked(gw.port, 600)
        segments = list_segments(gw.state_dir / "ledger")
        assert len(segments) >= 2
        first, newest = segments[-1]
        newest.unlink()
        # Noticed at the next health tick: health, the log, and refusals.
        wait_for(lambda: "ledger damaged" in _status(gw)["health"], 10, "the damage noticed")
        status = _status(gw)
        assert status["ledger"]["damage"]["first_seq"] == first
        with AckClient(gw.port) as client:
            client.send_lines([event_line(type="t", n=-1)])
            (reply,) = client.read_replies(1, timeout=10)
        assert reply.get("error") == "ledger_damaged", reply
        assert any("LEDGER DAMAGED" in str(r.get("msg", r)) for r in gw.log_records())
        assert gw.stop(signal.SIGTERM) == 0
        code, result = gw.verify()
        assert code == 1 and not result["ok"]
        assert result["first_bad_seq"] == first
        # Started again it stays up, refusing, until the loss is accepted.
        gw.start()
        assert "ledger damaged" in _status(gw)["health"]
        assert gw.stop() == 0
        done = run_gateway_command("accept-loss", "--config", str(gw.config_path))
        assert done.returncode == 0, done.stderr
        assert f"seqs {first} to" in done.stdout.decode()
        gw.start()
        again = _send_acked(gw.port, 20, 1000)
        assert min(again) > max(acked), "an acknowledged seq was given again"
        assert gw.stop() == 0
        code, result = gw.verify()
        assert code == 0, result
        assert result["losses"][0]["first_seq"] == first
    finally:
        gw.close()


def test_byte_flip_in_an_acknowledged_entry_of_a_cleanly_stopped_gateway(tmp_path):
    gw = GatewayProcess(tmp_path)
    try:
        acked = _send_acked(gw.port, 50)
        assert gw.stop() == 0
        ledger = gw.state_dir / "ledger"
        _first, newest = list_segments(ledger)[-1]
        frames = {seq: (o, n) for o, seq, n in _frames(newest)}
        target = acked[-6]
        offset, _n = frames[target]
        data = bytearray(newest.read_bytes())
        data[offset + 30] ^= 0x40
        newest.write_bytes(bytes(data))
        gw.start()
        assert "ledger damaged" in _status(gw)["health"]
        assert newest.read_bytes() == bytes(data), "recovery cut acknowledged entries"
        with AckClient(gw.port) as client:
            client.send_lines([event_line(type="t", n=-1)])
            (reply,) = client.read_replies(1, timeout=10)
        assert reply.get("error") == "ledger_damaged", reply
        assert gw.stop() == 0
        done = run_gateway_command("accept-loss", "--config", str(gw.config_path))
        assert done.returncode == 0, done.stderr
        gw.start()
        again = _send_acked(gw.port, 5, 100)
        assert min(again) > max(acked)
        assert gw.stop() == 0
        code, result = gw.verify()
        assert code == 0, result
        assert result["losses"][0]["first_seq"] == target
    finally:
        gw.close()


def test_sigterm_while_damaged_is_a_clean_stop_and_the_watchdog_is_fed(tmp_path):
    gw = GatewayProcess(tmp_path)
    try:
        _send_acked(gw.port, 5)
        assert gw.stop() == 0
        for _f, p in list_segments(gw.state_dir / "ledger"):
            p.unlink()
        gw.start()
        status = _status(gw)
        assert status["health"].startswith("ledger damaged")
        started = time.monotonic()
        assert gw.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
    finally:
        gw.close()


def test_a_loss_from_the_first_entry_leaves_a_header_only_segment_the_follower_passes(tmp_path):
    d = tmp_path / "ledger"
    writer = LedgerWriter(d, segment_bytes=SEGMENT).open()
    write_entries(writer, [_payload(i) for i in range(3)])
    _clean_stop(writer)
    ((_f, only),) = list_segments(d)
    data = bytearray(only.read_bytes())
    data[64 + 20] ^= 0x01  # seq 1's payload
    only.write_bytes(bytes(data))
    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    assert reopened.damage is not None and reopened.damage.first_seq == 1
    loss_seq, _cut = reopened.accept_loss(_payload(9))
    assert loss_seq == 4 and only.stat().st_size == fmt.SEGMENT_HEADER_BYTES
    followed = LedgerFollower(d, 1).read(100, 4)  # returns: no loop on the empty segment
    assert [seq for seq, _p, _h in followed] == [4]
    result = verify_ledger(d, jobs=1)
    assert result.ok and result.losses == [(1, 3, fmt.segment_name(4))]


def test_the_mark_follows_the_durable_head_every_ten_seconds_off_the_commit_path(tmp_path):
    from gateway.clock import FakeClock
    from gateway.config import LedgerConfig
    from gateway.ledger import commit
    from gateway.ledger.commit import Ledger
    from gateway.loop import EventLoop

    clock = FakeClock()
    loop = EventLoop(clock)
    ledger = Ledger(LedgerConfig(), tmp_path / "ledger", loop)
    ledger.open()
    ledger.start()
    try:

        def commit_some(n: int) -> None:
            for i in range(n):
                ledger.append(_payload(i))
            for _ in range(2000):
                if ledger.settled:
                    return
                loop.run_once(max_wait=0.01)
            raise AssertionError("not committed")

        def mark_seq() -> int:
            mark = hwm.read_mark(tmp_path / "ledger")
            assert mark is not None
            return mark.seq

        clock.advance(commit.MARK_INTERVAL_S)
        commit_some(5)
        wait_for(lambda: mark_seq() == 5, 10, "the first periodic mark")
        commit_some(5)  # within the interval: the mark stays
        assert mark_seq() == 5
        clock.advance(commit.MARK_INTERVAL_S)
        commit_some(5)
        wait_for(lambda: mark_seq() == 15, 10, "the next periodic mark")
        assert ledger.syncs == ledger.batches  # the commits took no sync for the mark
    finally:
        assert ledger.close()
        loop.close()
    mark = hwm.read_mark(tmp_path / "ledger")
    assert mark is not None and mark.state == hwm.CLEAN and mark.seq == 15


def test_retention_sees_where_a_segment_before_an_accepted_loss_ends(tmp_path):
    from gateway.ledger.retention import closed_segments

    d = tmp_path / "ledger"
    writer = _build(d, 60)
    _clean_stop(writer)
    head = writer.next_seq - 1
    segments = list_segments(d)
    first, newest = segments[-1]
    newest.unlink()
    reopened = LedgerWriter(d, segment_bytes=SEGMENT).open()
    loss_seq, _cut = reopened.accept_loss(_payload(0))
    closed = closed_segments(d, loss_seq)
    assert closed[-1].path == segments[-2][1]
    assert closed[-1].last == first - 1  # not head: the seqs after it were given up
    assert loss_seq == head + 1

"""The console's seq-to-offset map gives what a scan from the segment's start gives."""

from __future__ import annotations

import json
import threading
import time

from gateway.audit.check import checked_entries
from gateway.audit.query import QueryView
from gateway.ledger.store import list_segments
from gateway.web import seqmap as seqmap_module
from gateway.web.seqmap import MapFollower, SeqMap
from tests.gatewayproc import GatewayProcess
from tests.webtools import send_events


def _ledger(tmp_path, n: int) -> GatewayProcess:
    # 64 KiB segments (the smallest allowed): a few thousand entries make several.
    gateway = GatewayProcess(tmp_path, ledger={"segment_bytes": 65536})
    send_events(
        gateway, [json.dumps({"event_type": "t", "i": i, "pad": "x" * 40}) for i in range(n)]
    )
    return gateway


def test_every_entry_as_a_scan_finds_it_while_the_ledger_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(seqmap_module, "STRIDE", 7)  # many marks, and lookups between them
    gateway = _ledger(tmp_path, 1500)
    try:
        ledger_dir = gateway.state_dir / "ledger"
        assert len(list_segments(ledger_dir)) >= 3
        m = SeqMap(ledger_dir)
        scanned = {c.seq: c for c in checked_entries(ledger_dir)}
        order = sorted(scanned, key=lambda s: (s * 7919) % len(scanned))  # out of order
        for seq in order:
            got = m.get(seq)
            assert got is not None and got.damage is None, seq
            assert (got.hash, got.record) == (scanned[seq].hash, scanned[seq].record), seq
        head = max(scanned)
        assert m.get(head + 1) is None
        send_events(gateway, [json.dumps({"event_type": "later"})])  # the live segment grows
        later = m.get(head + 1)
        assert later is not None and later.record["event"]["event_type"] == "later"
        assert m.get(0) is None
        with QueryView(gateway.state_dir) as view:
            from gateway.audit.query import Filters

            rows = view.page(Filters(limit=100))
        assert m.check_rows(rows) == {}
        rows[0]["record"]["event"] = {"forged": True}
        assert m.check_rows(rows) == {rows[0]["seq"]: "the index differs from the ledger"}
    finally:
        gateway.stop()


def test_a_changed_byte_is_damage_at_that_seq(tmp_path, monkeypatch):
    monkeypatch.setattr(seqmap_module, "STRIDE", 5)
    gateway = _ledger(tmp_path, 300)
    gateway.stop()
    ledger_dir = gateway.state_dir / "ledger"
    _first, path = list_segments(ledger_dir)[0]
    data = bytearray(path.read_bytes())
    # The event with i = 123: key "i" (0x61 0x69), then the CBOR integer 123
    # (0x18 0x7b). The pair alone can also occur in a chain hash or a time,
    # where a flip breaks two links instead of one.
    at = data.index(b"ai\x18{") + 2
    data[at + 1] ^= 0x01  # 123 becomes 122: the frame is intact, its hash no longer matches
    path.write_bytes(bytes(data))
    scanned = {c.seq: c.damage for c in checked_entries(ledger_dir)}
    bad = [s for s, d in scanned.items() if d]
    assert len(bad) == 1
    m = SeqMap(ledger_dir)
    assert m.get(bad[0]).damage == scanned[bad[0]]
    assert m.get(bad[0] + 1).damage is None  # its own link holds


def _wait(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_the_follower_maps_every_segment_ahead_and_follows_the_head(tmp_path, monkeypatch):
    monkeypatch.setattr(seqmap_module, "STRIDE", 7)
    monkeypatch.setattr(seqmap_module, "FOLLOWER_CHUNK_FRAMES", 50)  # many chunks a segment
    monkeypatch.setattr(seqmap_module, "FOLLOW_S", 0.01)
    gateway = _ledger(tmp_path, 1500)
    follower = None
    try:
        ledger_dir = gateway.state_dir / "ledger"
        segments = len(list_segments(ledger_dir))
        assert segments >= 3
        scanned = {c.seq: c for c in checked_entries(ledger_dir)}
        head = max(scanned)
        m = SeqMap(ledger_dir)
        follower = MapFollower(m, head)
        follower.start()
        _wait(lambda: follower.built_s is not None)
        stats = m.statistics()
        assert stats["segments_mapped"] == segments and stats["mapped_to"] == head, stats
        # Every seq found through marks the follower made: no page mapped anything itself.
        for seq in sorted(scanned, key=lambda s: (s * 7919) % len(scanned)):
            got = m.get(seq)
            assert got is not None and (got.hash, got.record) == (
                scanned[seq].hash,
                scanned[seq].record,
            ), seq
        assert m.mapped_on_demand == 0
        assert len(m.get_many(list(scanned))) == len(scanned)
        send_events(gateway, [json.dumps({"event_type": "later", "i": i}) for i in range(40)])
        new_head = max(c.seq for c in checked_entries(ledger_dir))
        assert new_head >= head + 40
        follower.on_durable(new_head)  # as the ledger publishes a batch
        _wait(lambda: m.statistics()["mapped_to"] >= new_head)
        later = m.get(new_head)
        assert later is not None and later.damage is None
        assert m.mapped_on_demand == 0
    finally:
        if follower is not None:
            follower.close()
            assert not follower.thread.is_alive()
        gateway.stop()


def test_a_page_before_the_follower_maps_what_it_needs_itself(tmp_path):
    gateway = _ledger(tmp_path, 600)
    try:
        ledger_dir = gateway.state_dir / "ledger"
        m = SeqMap(ledger_dir)  # no follower: the map lags behind everything
        seq = max(c.seq for c in checked_entries(ledger_dir)) - 3
        got = m.get(seq)
        assert got is not None and got.damage is None and got.seq == seq
        assert m.mapped_on_demand > 0
    finally:
        gateway.stop()


def test_sealed_segments_maps_are_stored_and_loaded_only_when_they_check(tmp_path):
    gateway = _ledger(tmp_path, 1500)
    gateway.stop()
    ledger_dir = gateway.state_dir / "ledger"
    store = tmp_path / "web-seqmap"
    segments = list_segments(ledger_dir)
    sealed = len(segments) - 1
    assert sealed >= 2
    scanned = {c.seq: c for c in checked_entries(ledger_dir)}
    first = SeqMap(ledger_dir, store)
    first.catch_up(max(scanned), threading.Event())
    assert sorted(p.name for p in store.iterdir()) == sorted(
        p.name + ".map" for _, p in segments[:-1]
    )
    again = SeqMap(ledger_dir, store)  # a restart
    for seq in sorted(scanned):
        got = again.get(seq)
        assert got is not None and (got.hash, got.record) == (
            scanned[seq].hash,
            scanned[seq].record,
        ), seq
    assert again.statistics()["segments_loaded"] == sealed
    assert again.mapped_on_demand == len(
        [s for s in scanned if s >= segments[-1][0]]
    )  # the live segment only
    # A map that does not check is not used: one changed byte, or another size of segment.
    maps = sorted(store.iterdir())
    data = bytearray(maps[0].read_bytes())
    data[100] ^= 0x40
    maps[0].write_bytes(bytes(data))
    with open(segments[1][1], "ab") as f:
        f.write(b"\0" * 16)  # zeros after the last frame: the same frames, another size
    third = SeqMap(ledger_dir, store)
    third._refresh()
    assert third.statistics()["segments_loaded"] == sealed - 2
    assert third.get(segments[0][0] + 3).damage is None  # mapped again instead
    # Stored maps of segments that are gone are removed.
    (store / "00000000000000000001.seg.map.tmp").write_bytes(b"x")
    segments[0][1].unlink()
    third.prune()
    assert maps[0].name not in {p.name for p in store.iterdir()}
    assert not list(store.glob("*.tmp"))

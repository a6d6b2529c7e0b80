"""event_id deduplication: the id table against a model, snapshots, the intake's answers,
and a real gateway across clean stops, kill -9 and a snapshot that disagrees with the ledger."""

from __future__ import annotations

import http.client
import json
import random
import socket
import uuid

import pytest
from gatewayproc import GatewayProcess, free_port, run_gateway_command, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_intake import staged

from gateway.clock import FakeClock
from gateway.config import DedupConfig, IngestConfig, LedgerConfig, RedactConfig
from gateway.ingest import dedup as ids
from gateway.ingest.intake import Intake
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.redact import Redactor
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ledger.commit import Ledger
from gateway.ledger.store import Head, list_segments
from gateway.loop import EventLoop

# ---------------------------------------------------------------- the table


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 40),
    ops=st.lists(st.tuples(st.sampled_from("aae"), st.integers(0, 60)), max_size=300),
)
def test_the_table_matches_a_model(capacity, ops):
    """Adds, evictions of the oldest and lookups, against a dict and a list in seq order.
    Keys are chosen to collide in the index (small values share home slots)."""
    table = ids.IdTable(capacity)
    model: dict[int, tuple[int, int]] = {}
    order: list[int] = []
    seq = 0
    for op, k in ops:
        key = k * 16 + (k % 3)  # several keys per home slot: long probe runs
        if op == "a":
            seq += 1
            added = table.add(key, key ^ 7, seq)
            assert added == (key not in model)
            if added:
                if len(order) == capacity:
                    del model[order.pop(0)]
                model[key] = (key ^ 7, seq)
                order.append(key)
        elif order:
            table.evict_oldest()
            del model[order.pop(0)]
        assert len(table) == len(model)
        assert table.oldest_seq() == (model[order[0]][1] if order else 0)
        for probe in range(0, 61 * 16, 5):
            assert table.get(probe) == model.get(probe)
    assert [r[0] for r in table.records()] == order
    again = ids.IdTable(capacity)
    again.load_records(table.record_bytes())
    assert list(again.records()) == list(table.records())
    for key, value in model.items():
        assert again.get(key) == value


def test_the_ring_wraps_and_a_snapshot_of_a_wrapped_ring_loads_in_order():
    table = ids.IdTable(5)
    for n in range(1, 13):
        table.add(1000 + n, n, n)
    assert [r[2] for r in table.records()] == [8, 9, 10, 11, 12]
    smaller = ids.IdTable(3)  # a snapshot from a larger table keeps the newest
    smaller.load_records(table.record_bytes())
    assert [r[2] for r in smaller.records()] == [10, 11, 12]
    assert smaller.get(1012) == (12, 12) and smaller.get(1009) is None


def test_memory_is_32_bytes_and_a_bit_per_id():
    table = ids.IdTable(1_000_000)
    assert table.memory_bytes / 1_000_000 == pytest.approx(32.4, abs=0.1)
    table.close()


# ---------------------------------------------------------------- snapshots


def test_a_snapshot_round_trips_and_any_damage_is_refused():
    snap = ids.Snapshot(Head(42, b"h" * 32), bytes(range(48)), ((10, 1), (20, 5)))
    data = snap.encode(100)
    assert ids.Snapshot.decode(data) == snap
    for pos in (0, 9, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 1
        with pytest.raises(ids.SnapshotUnusable):
            ids.Snapshot.decode(bytes(bad))
    for cut in (0, 10, len(data) - 1):
        with pytest.raises(ids.SnapshotUnusable):
            ids.Snapshot.decode(data[:cut])


# ---------------------------------------------------------------- the intake's answers

EID = "4f0c2a9e-1d7b-4c52-9a43-0c6b2f1e8d11"


@pytest.fixture
def make(tmp_path):
    loops = []

    def build(ready=True, **ingest):
        clock = FakeClock()
        loop = EventLoop(clock)
        loops.append(loop)
        ledger = Ledger(LedgerConfig(), tmp_path / f"ledger{len(loops)}", loop)
        ledger.open()
        dedup = ids.Deduplicator(DedupConfig(max_ids=1000, window_s=3600), tmp_path, ledger)
        if ready:
            dedup._loaded(ids.IdTable(1000), dedup._marks, "ledger", 0.0)
        defaults = RedactConfig()
        redactor = Redactor(defaults.keys, defaults.cards, b"k" * 32)
        intake = Intake(ledger, IngestConfig(**ingest), redactor, dedup)
        return intake, clock

    yield build
    for loop in loops:
        loop.close()


def send(intake, lines: list[object], app="shop", ack=True, conn=1) -> list[dict]:
    session = Session("10.0.0.7", 4000, conn, intake.policy)
    proto = IngestProtocol(65536)
    hello = {"hello": {"app": app, "ack": ack}}
    proto.receive_data(b"".join(json.dumps(x).encode() + b"\n" for x in [hello, *lines]))
    replies = ReplyQueue()
    intake.feed(session, proto, replies, None)
    return [json.loads(line) for line in replies.take_due(10**9).splitlines()][1:]


def event(n=1, **extra):
    base = {"event_type": "t", "timestamp": "2026-12-01T10:00:00Z", "event_id": EID, "n": n}
    return {**base, **extra}


def test_a_resend_gets_the_original_seq_and_is_not_stored(make):
    intake, _ = make()
    first = send(intake, [event()])
    again = send(intake, [event(), event()], conn=2)
    assert first == [{"ok": True, "seq": 1}]
    assert again == [{"ok": True, "seq": 1, "duplicate": True}] * 2
    assert intake.ledger.next_seq == 2 and intake.stats.events == 1
    assert intake.dedup.duplicates == 2


def test_the_same_id_in_another_app_is_another_event(make):
    intake, _ = make()
    assert send(intake, [event()], app="shop") == [{"ok": True, "seq": 1}]
    assert send(intake, [event()], app="blog") == [{"ok": True, "seq": 2}]


def test_a_different_event_under_a_known_id_is_refused_and_recorded(make):
    intake, _ = make()
    send(intake, [event(1)])
    replies = send(intake, [event(2)])
    assert replies[0]["error"] == "event_id_conflict" and "seq 1" in replies[0]["detail"]
    assert intake.ledger.next_seq == 3  # the rejected entry
    assert intake.dedup.conflicts == 1
    # Member order is part of the content: documented in docs/protocol.md.
    reordered = dict(reversed(list(event(1).items())))
    assert send(intake, [reordered])[0]["error"] == "event_id_conflict"


def test_bad_ids_are_flagged_and_stored_every_time(make):
    intake, _ = make()
    for bad in ("", "x" * 129, "caf\u00e9", "tab\there", 7, None, ["a"]):
        replies = send(intake, [event(event_id=bad), event(event_id=bad)])
        assert [r["ok"] for r in replies] == [True, True]
        assert "bad_event_id" in replies[0]["flags"], bad
    ok = send(intake, [event(event_id=" " + "~" * 127)])
    assert "flags" not in ok[0]


def test_while_loading_acked_lines_get_retry_and_fire_and_forget_are_stored(make):
    intake, _ = make(ready=False)
    assert send(intake, [event(), {"event_type": "t", "n": 0}])[0]["error"] == "retry"
    assert intake.ledger.next_seq == 2  # only the event without an id
    send(intake, [event(5)], ack=False)
    assert intake.ledger.next_seq == 3 and intake.dedup.unchecked == 1
    dedup = intake.dedup
    dedup._loaded(ids.IdTable(1000), dedup._marks, "ledger", 0.0)
    assert send(intake, [event(5)]) == [{"ok": True, "seq": 2, "duplicate": True}]


def test_a_uuid_that_looks_like_a_card_number_is_kept(make):
    intake, _ = make()
    # A random UUID whose run "853-7278-4150-808" is a Luhn-valid 15-digit number.
    eid = "ef72c853-7278-4150-808e-32c1afec042d"
    assert send(intake, [event(event_id=eid, note="card 4111 1111 1111 1111")])[0]["flags"]
    stored = staged(intake)[-1]["event"]
    assert stored["event_id"] == eid and "4111 1111" not in stored["note"]
    assert send(intake, [event(event_id=eid, note="card 4111 1111 1111 1111")])[0]["duplicate"]


def test_the_window_forgets_old_ids_in_steps_of_a_minute(make):
    intake, clock = make()
    send(intake, [event(1)])
    clock.set_wall(clock.wall() + 3600 - 120)  # still within the hour
    assert send(intake, [event(event_id="other")])[0]["seq"] == 2
    assert send(intake, [event(1)])[0]["duplicate"]
    clock.set_wall(clock.wall() + 240)  # the first id is now 62 minutes old
    assert send(intake, [event(event_id="third")])[0]["seq"] == 3
    assert send(intake, [event(1)]) == [{"ok": True, "seq": 4}]  # stored again


def test_a_full_table_forgets_the_oldest_and_counts_it(make):
    intake, _ = make()
    send(intake, [event(event_id=f"id-{n}") for n in range(1001)])
    assert intake.dedup.evicted_early == 1
    assert send(intake, [event(event_id="id-0")])[0]["seq"] == 1002  # stored again...
    assert intake.dedup.evicted_early == 2  # ...forgetting id-1
    assert send(intake, [event(event_id="id-2")])[0] == {"ok": True, "seq": 3, "duplicate": True}


def test_replies_stay_in_order_when_a_duplicate_follows_a_pending_ack():
    queue = ReplyQueue()
    queue.add_ack(10)
    queue.add(3, b"dup\n")  # the original seq 3 is durable, but the ack for 10 is not
    queue.add(0, b"error\n")
    assert not queue.all_due(9) and queue.take_due(9) == b""
    assert queue.all_due(10)
    assert queue.take_due(10) == b'{"ok":true,"seq":10}\ndup\nerror\n'


# ---------------------------------------------------------------- a real gateway


def acked(gw: GatewayProcess, lines: list[dict], app="shop") -> list[dict]:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        f = s.makefile("rwb")
        f.write(json.dumps({"hello": {"app": app, "ack": True}}).encode() + b"\n")
        f.write(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        f.flush()
        f.readline()
        return [json.loads(f.readline()) for _ in lines]


def until_ready(gw: GatewayProcess, probe: dict) -> dict:
    """Send `probe` until it is no longer answered `retry` (the table loaded)."""
    answer: dict = {}

    def answered() -> bool:
        nonlocal answer
        answer = acked(gw, [probe])[0]
        return answer.get("error") != "retry"

    wait_for(answered, 30, "the event_id table to load")
    return answer


def uuids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def test_ids_survive_a_clean_stop_a_kill_and_a_snapshot_that_disagrees(tmp_path):
    for name in ("gw", "other"):
        (tmp_path / name).mkdir()
    gw = GatewayProcess(tmp_path / "gw", ingest={"dedup": {"save_interval_s": 10}})
    try:
        batch = [event(n, event_id=i) for n, i in enumerate(uuids(200, 1))]
        until_ready(gw, event(0, event_id="warm-up"))
        first = acked(gw, batch)
        seqs = [r["seq"] for r in first]
        assert until_ready(gw, batch[0]) == {"ok": True, "seq": seqs[0], "duplicate": True}

        gw.stop()  # clean: the snapshot is saved
        gw.start()
        again = until_ready(gw, batch[1])
        assert again == {"ok": True, "seq": seqs[1], "duplicate": True}
        assert gw.status()["dedup"]["loaded_from"] == "snapshot"

        later = [event(n, event_id=i) for n, i in enumerate(uuids(50, 2))]
        later_seqs = [r["seq"] for r in acked(gw, later)]
        gw.kill()  # kill -9: the snapshot on disk is older than these ids
        gw.start()
        assert until_ready(gw, later[-1])["seq"] == later_seqs[-1]
        assert gw.status()["dedup"]["loaded_from"] == "snapshot"
        replies = acked(gw, batch + later)
        assert [r["seq"] for r in replies] == seqs + later_seqs
        assert all(r["duplicate"] for r in replies)

        # A snapshot from another ledger (its seq and hash do not match): ignored.
        gw.stop()
        other = GatewayProcess(tmp_path / "other")
        acked(other, [event(1, event_id="only-in-the-other-ledger")])
        other.stop()
        (gw.state_dir / "dedup.snapshot").write_bytes(
            (other.state_dir / "dedup.snapshot").read_bytes()
        )
        gw.start()
        until_ready(gw, batch[2])
        status = gw.status()["dedup"]
        assert status["loaded_from"] == "ledger" and status["ids"] == 251  # with the warm-up
        probe = event(1, event_id="only-in-the-other-ledger")
        assert "duplicate" not in acked(gw, [probe])[0]
    finally:
        gw.stop()


def test_http_resends_are_answered_like_tcp(tmp_path):
    port = free_port()
    gw = GatewayProcess(tmp_path, ingest={"http": {"listen": [f"127.0.0.1:{port}"]}})
    try:
        body = b"".join(json.dumps(event(n, event_id=f"h-{n}")).encode() + b"\n" for n in range(3))

        def post() -> list[dict]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
                return json.loads(conn.getresponse().read())
            finally:
                conn.close()

        until_ready(gw, event(99, event_id="probe"))
        first = post()
        second = post()
        assert [r["seq"] for r in second] == [r["seq"] for r in first]
        assert all(r["duplicate"] for r in second) and not any("duplicate" in r for r in first)
        text = run_gateway_command("status", "--config", str(gw.config_path)).stdout.decode()
        assert "event ids   ready, 4 of 1000000 held (24 h window), 3 resends" in text, text
    finally:
        gw.stop()


def test_ids_of_entries_lost_and_accepted_are_forgotten_the_rest_kept(tmp_path):
    """The newest segment removed while running, the loss accepted: a resend of an
    event that was in it is stored again (the table never answers for an entry the
    ledger no longer holds); a resend of one from before the loss is a duplicate."""
    gw = GatewayProcess(tmp_path, ledger={"segment_bytes": 65536})
    try:
        until_ready(gw, event(0, event_id="warm-up"))
        batch = [event(n, event_id=i) for n, i in enumerate(uuids(600, 3))]
        seqs = [r["seq"] for r in acked(gw, batch)]
        first, newest = list_segments(gw.state_dir / "ledger")[-1]
        assert first > seqs[0], "the test needs ids before the newest segment"
        newest.unlink()
        wait_for(lambda: "ledger damaged" in gw.status()["health"], 10, "the damage noticed")
        assert gw.stop() == 0
        done = run_gateway_command("accept-loss", "--config", str(gw.config_path))
        assert done.returncode == 0, done.stderr
        gw.start()
        lost = [e for e, s in zip(batch, seqs, strict=True) if s >= first]
        kept = [e for e, s in zip(batch, seqs, strict=True) if s < first]
        assert lost and kept
        again = until_ready(gw, lost[-1])
        assert "duplicate" not in again and again["seq"] > seqs[-1]
        before = {"ok": True, "seq": seqs[len(kept) - 1], "duplicate": True}
        assert acked(gw, kept[-1:])[0] == before
    finally:
        gw.stop()

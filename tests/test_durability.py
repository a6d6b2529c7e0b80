"""Group commit under faults: no acknowledgement before the sync that covers it.

The gateway runs in-process here (its loop pumped by the test) so that the
durability thread's writer can be replaced by one that fails on demand.
"""

from __future__ import annotations

import errno
import itertools
import json
import socket
import threading
import time

import pytest
from inproc import pump, settle

from gateway.config import Config, IngestConfig, LedgerConfig
from gateway.ingest.server import RECV_BYTES
from gateway.ledger import durability, entries
from gateway.ledger.commit import Ledger
from gateway.ledger.store import MAX_BATCH_BYTES, LedgerReader, write_batch
from gateway.ledger.verify import verify_ledger
from gateway.service import Gateway


class FlakyWriter:
    """Fails with the given errno until `fail` is cleared; then writes for real."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.fail = True
        self.calls = 0

    def __call__(self, batch, fds, sync):
        self.calls += 1
        if self.fail:
            raise OSError(self.code, "injected fault")
        return write_batch(batch, fds, sync)


class Replies:
    """Collects the reply lines a non-blocking client socket has received so far."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines: list[dict] = []

    def poll(self) -> list[dict]:
        try:
            while chunk := self.sock.recv(65536):
                self.lines.extend(json.loads(line) for line in chunk.splitlines())
        except BlockingIOError:
            pass
        return self.lines


@pytest.fixture
def gateway_factory(tmp_path, monkeypatch):
    monkeypatch.setattr(durability, "RETRY_START_S", 0.005)
    monkeypatch.setattr(durability, "RETRY_CAP_S", 0.02)
    made = []

    def make(writer=None, **ingest) -> tuple[Gateway, tuple[str, int]]:
        config = Config(
            state_dir=tmp_path / "state",
            ingest=IngestConfig(listen=("127.0.0.1:0",), **ingest),
            ledger=LedgerConfig(fsync="batch"),
        )
        gw = Gateway(config)
        if writer is not None:
            gw.ledger.durability.writer = writer
        bound = gw.start()
        made.append(gw)
        return gw, bound[0]

    yield make
    for gw in made:
        if not gw.stopping:
            gw.request_stop()
            gw._finish()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_no_ack_while_writes_fail_and_ack_once_they_succeed(gateway_factory, code):
    writer = FlakyWriter(code)
    gw, address = gateway_factory(writer)
    client = socket.create_connection(address)
    client.setblocking(False)
    client.sendall(
        b'{"hello":{"app":"t","ack":true}}\n{"event_type":"a","timestamp":"2026-01-01T00:00:00Z"}\n'
    )
    replies = Replies(client)
    pump(gw, lambda: writer.calls >= 3 and replies.poll())
    assert [r.get("hello", {}).get("ok") for r in replies.lines] == [True]
    assert gw.ledger.error is not None and gw.ledger.error.errno == code
    assert gw.ledger.durable.seq == 0  # nothing durable, so nothing acknowledged

    writer.fail = False
    pump(gw, lambda: len(replies.poll()) >= 2)
    assert replies.lines[1] == {"ok": True, "seq": 2}
    assert gw.ledger.error is None
    client.close()
    gw.request_stop()
    gw._finish()
    result = verify_ledger(gw.config.ledger_dir)
    assert result.ok
    seqs = [seq for seq, _payload, _hash in LedgerReader(gw.config.ledger_dir).entries()]
    assert seqs == [1, 2, 3, 4]  # started, the event, the signed checkpoint, stopped


def test_fire_and_forget_events_are_committed_after_the_client_closes(gateway_factory):
    gw, address = gateway_factory()
    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"a","timestamp":"2026-01-01T00:00:00Z"}\n{"event_type":"b"}')
    pump(gw, lambda: gw.ledger.durable.seq >= 3)
    pump(gw, lambda: not gw.ingest.connections)
    assert gw.ingest.stats.events == 2


def test_shutdown_records_a_line_still_missing_its_newline_as_incomplete(gateway_factory):
    gw, address = gateway_factory()
    client = socket.create_connection(address)
    client.sendall(b'{"event_type":"whole","timestamp":"2026-01-01T00:00:00Z"}\n{"event_type":"cut')
    pump(gw, lambda: gw.ingest.stats.events >= 1)
    gw.request_stop()
    gw._finish()
    client.close()
    decoded = [
        entries.decode(payload)
        for _seq, payload, _hash in LedgerReader(gw.config.ledger_dir).entries()
    ]
    # started, the whole event, the fragment (the client had not closed), the
    # signed checkpoint of a clean stop, stopped
    assert [d["kind"] for d in decoded] == ["system", "event", "rejected", "system", "system"]
    assert decoded[2]["reason"] == "incomplete_line"
    assert decoded[2]["excerpt"] == b'{"event_type":"cut'


def test_shutdown_stores_a_last_line_without_newline_from_a_client_that_closed(gateway_factory):
    gw, address = gateway_factory()
    client = socket.create_connection(address)
    client.sendall(b'{"event_type":"last"}')
    client.shutdown(socket.SHUT_WR)
    gw.request_stop()
    gw._finish()
    client.close()
    kinds = [
        entries.decode(payload)["kind"]
        for _seq, payload, _hash in LedgerReader(gw.config.ledger_dir).entries()
    ]
    assert kinds == ["system", "event", "system", "system"]  # ..., signed_checkpoint, stopped


def test_a_port_in_use_stops_the_start_before_recovery_touches_the_ledger(tmp_path):
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
    )
    first = Gateway(config)
    first.start()
    first.request_stop()
    first._finish()
    segment = next((config.ledger_dir).glob("*.seg"))
    segment.write_bytes(segment.read_bytes() + b"torn")  # a torn tail to recover
    before = segment.read_bytes()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = Config(
            state_dir=config.state_dir,
            ingest=IngestConfig(listen=(f"127.0.0.1:{squatter.getsockname()[1]}",)),
        )
        gw = Gateway(busy)
        with pytest.raises(OSError):
            gw.start()
        gw.loop.close()
    assert segment.read_bytes() == before  # not truncated: recovery never ran


def test_disk_guard_refuses_new_events_and_resumes_by_itself(gateway_factory, monkeypatch):
    free = {"bytes": 10**12}
    monkeypatch.setattr(Ledger, "free_bytes", staticmethod(lambda path: free["bytes"]))
    gw, address = gateway_factory()
    settle(gw)
    head = gw.ledger.durable.seq
    free["bytes"] = 1024  # below ledger.min_free_bytes
    pump(gw, lambda: gw.ledger.disk_full)  # noticed within a health tick
    assert gw.status()["health"] == "disk full: new events refused"
    client = socket.create_connection(address)
    client.sendall(b'{"hello":{"ack":true}}\n{"event_type":"a"}\n')
    client.setblocking(False)
    replies = Replies(client)
    pump(gw, lambda: len(replies.poll()) >= 2)
    assert replies.lines[1]["error"] == "disk_full"
    settle(gw)
    assert gw.ingest.stats.events == 0 and gw.ledger.durable.seq == head  # nothing stored
    client.close()
    free["bytes"] = 10**12
    pump(gw, lambda: not gw.ledger.disk_full)
    with socket.create_connection(address) as again:
        again.sendall(b'{"event_type":"b"}\n')
    pump(gw, lambda: gw.ingest.stats.events == 1)


def test_status_reports_rates_sync_latency_and_free_space(gateway_factory):
    gw, address = gateway_factory()
    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"a"}\n' * 50)
    pump(gw, lambda: gw.ingest.stats.events == 50)
    ticks = len(gw.health.event_samples)
    pump(gw, lambda: len(gw.health.event_samples) >= ticks + 2)  # two health ticks later
    status = gw.status()
    assert status["ingest_rates"]["1m"] > 0 and set(status["ingest_rates"]) == {"1m", "5m", "15m"}
    assert (
        status["sync_ms"]["samples"] >= 1 and status["sync_ms"]["p99"] >= status["sync_ms"]["p50"]
    )
    assert status["free_bytes"] > 0 and status["acks_pending"] == 0


def test_ack_wait_counts_from_staging_to_durable_over_the_last_minute(tmp_path):
    """The acknowledgement wait starts when a batch's first entry is staged (the turn
    that read its line), so time spent waiting for the commit interval counts, and
    only the last minute's commits are in the figure."""
    from gateway.clock import FakeClock
    from gateway.ledger.commit import ACK_WAIT_WINDOW_S
    from gateway.loop import EventLoop

    clock = FakeClock()
    loop = EventLoop(clock)
    ledger = Ledger(LedgerConfig(min_sync_interval_ms=200), tmp_path / "ledger", loop)
    try:
        ledger.open()
        ledger.start()
        published = []
        ledger.subscribe(published.append)

        def commit_one(wait_s: float) -> None:
            count = len(published)
            ledger.append(entries.encode_value({"kind": "event", "n": count}))
            clock.advance(wait_s)  # staged, not yet committed: the loop has not run
            deadline = time.monotonic() + 10
            while len(published) == count and time.monotonic() < deadline:
                loop.run_once(max_wait=0.01)
            assert len(published) == count + 1

        commit_one(0.25)  # the commit interval held this one back
        commit_one(0.25)
        stats = ledger.statistics()
        assert stats.ack_wait_samples == 2
        assert 250 <= stats.ack_wait_ms_p50 <= stats.ack_wait_ms_p99 < 300
        assert stats.sync_ms_p99 < stats.ack_wait_ms_p99  # the sync itself is not the wait
        clock.advance(ACK_WAIT_WINDOW_S + 1)
        stats = ledger.statistics()
        assert (stats.ack_wait_samples, stats.ack_wait_ms_p99) == (0, 0.0)  # a quiet minute
    finally:
        ledger.close()
        loop.close()


def test_a_busy_connection_is_served_in_turns_and_nothing_is_lost(gateway_factory):
    from gateway.ingest.server import ITEMS_PER_TURN

    gw, address = gateway_factory()
    n = ITEMS_PER_TURN * 4
    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"a"}\n' * n)
        pump(gw, lambda: gw.ingest.stats.events > 0)
        # one turn handled at most its budget and set the rest aside
        assert gw.ingest.stats.events <= ITEMS_PER_TURN * 2
        pump(gw, lambda: gw.ingest.stats.events == n)
    pump(gw, lambda: not gw.ingest.backlog and not gw.ingest.connections)


def test_shutdown_stores_lines_set_aside_for_a_later_turn(gateway_factory):
    from gateway.ingest.server import ITEMS_PER_TURN

    gw, address = gateway_factory()
    n = ITEMS_PER_TURN * 3
    client = socket.create_connection(address)
    client.sendall(b'{"event_type":"a"}\n' * n)
    pump(gw, lambda: gw.ingest.backlog)  # lines are waiting for their turn
    gw.request_stop()
    gw._finish()
    client.close()
    assert gw.ingest.stats.events == n


def test_a_simulated_slow_sync_lengthens_every_commit(gateway_factory, monkeypatch):
    """The benchmarks' slow-flash knob: each sync takes at least the given time longer."""
    monkeypatch.setenv(durability.SIMULATE_SYNC_ENV, "30")
    gw, address = gateway_factory()
    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"a"}\n' * 20)
    pump(gw, lambda: gw.ingest.stats.events == 20 and not gw.ledger.durability.busy)
    assert gw.ledger.latencies and min(gw.ledger.latencies) >= 0.030
    monkeypatch.setenv(durability.SIMULATE_SYNC_ENV, "fast")
    with pytest.raises(ValueError, match="milliseconds"):
        durability.simulated_sync_s()


def test_status_counts_commit_batches_and_syncs(gateway_factory):
    gw, address = gateway_factory()
    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"a"}\n' * 10)
    pump(gw, lambda: gw.ingest.stats.events == 10 and gw.ledger.durable.seq >= 10)
    ledger = gw.status()["ledger"]
    assert 1 <= ledger["batches"] <= ledger["syncs"] and ledger["batches"] == gw.ledger.batches


def test_min_sync_interval_gathers_what_arrives_meanwhile_into_one_sync(tmp_path):
    """ledger.min_sync_interval_ms: after a sync, the next waits out the interval,
    so events sent one by one in the meantime share one sync."""
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        ledger=LedgerConfig(fsync="batch", min_sync_interval_ms=1000),
    )
    gw = Gateway(config)
    address = gw.start()[0]
    try:
        pump(gw, lambda: gw.ledger.durable.seq >= 1 and not gw.ledger.durability.busy)  # `started`
        first_batches = gw.ledger.batches
        with socket.create_connection(address) as client:
            client.sendall(b'{"hello":{"app":"t","ack":true}}\n')
            replies = Replies(client)
            client.setblocking(False)
            for n in range(5):
                client.sendall(b'{"event_type":"e%d"}\n' % n)
                pump(gw, lambda n=n: gw.ingest.stats.events == n + 1)
            pump(gw, lambda: len(replies.poll()) == 6)
        assert [r.get("ok") for r in replies.lines[1:]] == [True] * 5
        assert gw.ledger.batches - first_batches == 1  # five events, one sync
    finally:
        gw.request_stop()
        gw._finish()


class HeldWriter:
    """Holds every commit until released, as a very slow card would; then writes."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, batch, fds, sync):
        self.release.wait(60.0)
        return write_batch(batch, fds, sync)


class FailingWriter(HeldWriter):
    """Fails every commit with EIO until released, as a card that errors for a while."""

    def __call__(self, batch, fds, sync):
        if not self.release.is_set():
            raise OSError(errno.EIO, "injected fault")
        return write_batch(batch, fds, sync)


@pytest.mark.parametrize("writer_kind", [HeldWriter, FailingWriter])
def test_reading_pauses_at_the_staging_bound_while_a_commit_is_held(gateway_factory, writer_kind):
    """MAX_BATCH_BYTES (8 MiB): while the disk holds a commit, or fails it, the
    gateway stages at most that much and then stops reading, so the client's sends
    stall (memory stays bounded); released, everything is stored."""
    writer = writer_kind()
    gw, address = gateway_factory(writer)
    line = b'{"event_type":"bulk","pad":"%s","n":%%d}\n' % (b"x" * 1000)
    total = 32 * 1024 * 1024 // len(line)  # 32 MiB: four times the bound, more than
    payload = b"".join(line % n for n in range(total))  # the kernel buffers besides
    sent = {"bytes": 0}
    client = socket.create_connection(address)

    def flood() -> None:
        view = memoryview(payload)
        try:
            while sent["bytes"] < len(payload):
                sent["bytes"] += client.send(view[sent["bytes"] : sent["bytes"] + 65536])
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        # Stalled: nothing more read for a second (bounded by the test's 30 s).
        deadline = time.monotonic() + 30.0
        last, changed_at = -1, time.monotonic()
        while time.monotonic() - changed_at < 1.0:
            assert time.monotonic() < deadline, "the flood never stalled"
            gw.loop.run_once(max_wait=0.02)
            if sent["bytes"] != last:
                last, changed_at = sent["bytes"], time.monotonic()
        assert sent["bytes"] < len(payload), "the whole flood was read: no staging bound"
        # One turn's reads past the bound at most (8 reads of 64 KiB per connection).
        assert gw.ledger.staged_bytes <= MAX_BATCH_BYTES + 8 * RECV_BYTES + len(line) * 2
        assert gw.ledger.staged_bytes >= MAX_BATCH_BYTES // 2  # it did read while it could
        writer.release.set()
        pump(gw, lambda: gw.ingest.stats.events == total, timeout=60.0)
        settle(gw)
    finally:
        writer.release.set()
        client.close()
        thread.join(10.0)
    assert sum(1 for _s, p, _h in LedgerReader(gw.config.ledger_dir).entries()
               if entries.decode(p)["kind"] == "event") == total  # fmt: skip


def test_ledger_retries_back_off_doubling(gateway_factory, monkeypatch):
    """RETRY_START_S doubling up to RETRY_CAP_S (scaled down here): a dead card is
    not hammered. Only lower bounds are checked, so a loaded machine cannot fail it."""
    monkeypatch.setattr(durability, "RETRY_START_S", 0.01)
    monkeypatch.setattr(durability, "RETRY_CAP_S", 0.08)
    calls: list[float] = []

    def failing(batch, fds, sync):
        calls.append(time.monotonic())
        raise OSError(errno.EIO, "injected fault")

    gw, _address = gateway_factory(failing)
    pump(gw, lambda: len(calls) >= 7)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    for gap, least in zip(gaps, [0.01, 0.02, 0.04, 0.08, 0.08, 0.08], strict=False):
        assert gap >= least * 0.95, gaps
    gw.ledger.durability.writer = write_batch  # let the fixture's stop commit


def test_a_connection_waiting_for_the_disk_is_not_closed_as_idle(gateway_factory):
    """docs/protocol.md, idle timeout: replies still waiting for the disk keep the
    connection open past idle_timeout_s; the acknowledgement arrives once the commit does."""
    writer = HeldWriter()
    gw, address = gateway_factory(writer, idle_timeout_s=1.0)
    client = socket.create_connection(address)
    try:
        client.sendall(b'{"hello":{"app":"slow","ack":true}}\n{"event_type":"x"}\n')
        client.setblocking(False)
        replies = Replies(client)
        pump(gw, lambda: replies.poll())  # the hello's reply
        # Three idle timeouts with the commit held (the sweep runs every 0.5 s).
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            gw.loop.run_once(max_wait=0.05)
        assert len(gw.ingest.connections) == 1, "closed while its reply waited for the disk"
        writer.release.set()
        pump(gw, lambda: len(replies.poll()) >= 2)
        assert replies.lines[1]["ok"] is True, replies.lines
    finally:
        writer.release.set()
        client.close()

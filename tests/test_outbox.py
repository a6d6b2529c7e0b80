"""The Python outbox against a real gateway: every event stored exactly once through a
gateway that is down, killed while the outbox drains, and back; refusals kept."""

from __future__ import annotations

from gatewayproc import GatewayProcess
from test_dedup import until_ready

from gateway import outbox as outbox_module
from gateway.outbox import DRAIN_BATCH, Outbox


class Clock:
    """The outbox's wall clock, moved by hand past its backoff."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def stored_ids(gw: GatewayProcess) -> list[str]:
    return [e["event"].get("event_id") for e in gw.export() if e["kind"] == "event"]


def test_down_acks_lost_killed_and_back_every_event_once(tmp_path, monkeypatch):
    """The gateway down; then, in one drain, a batch whose acknowledgements are lost after
    it was stored and the gateway killed before the next: a later drain stores the rest
    and the lost batch is answered as duplicates, each event once in the ledger."""
    (tmp_path / "gw").mkdir()
    gw = GatewayProcess(tmp_path / "gw")
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.sqlite3", port=gw.port, app="py", clock=clock)
    calls = 0

    def faulty(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            gw.kill()
        result = real_send(*args, **kwargs)
        if calls == 2:  # stored, and the acknowledgements never arrive
            result.answers, result.error = [], "connection lost (test)"
        return result

    real_send = outbox_module.send_events
    try:
        until_ready(gw, {"event_type": "probe", "event_id": "probe"})
        gw.stop()
        ids = [outbox.add({"event_type": "t", "n": n}) for n in range(3 * DRAIN_BATCH)]
        down = outbox.drain()
        assert down.acked == 0 and down.error and outbox.pending() == 3 * DRAIN_BATCH

        gw.start()
        until_ready(gw, {"event_type": "probe", "event_id": "probe"})
        monkeypatch.setattr(outbox_module, "send_events", faulty)
        clock.now += 3600  # past any backoff
        first = outbox.drain()  # batch 1 acknowledged, batch 2 stored unacknowledged
        assert first.acked == DRAIN_BATCH and first.error and "lost" in first.error
        clock.now += 3600
        assert outbox.drain().acked == 0  # killed: refused connection
        assert outbox.pending() == 2 * DRAIN_BATCH
        monkeypatch.setattr(outbox_module, "send_events", real_send)

        gw.start()
        until_ready(gw, {"event_type": "probe", "event_id": "probe"})
        clock.now += 3600
        last = outbox.drain()
        assert last.error is None and outbox.pending() == 0
        assert (last.acked, last.duplicates) == (2 * DRAIN_BATCH, DRAIN_BATCH)
        stored = [i for i in stored_ids(gw) if i != "probe"]
        assert sorted(stored) == sorted(ids)  # each exactly once
        assert set(outbox.acknowledged()) == set(ids)
    finally:
        outbox.close()
        gw.stop()


def test_permanent_refusals_are_kept_with_the_answer_and_pruning_keeps_pending(tmp_path):
    gw = GatewayProcess(tmp_path)
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.sqlite3", port=gw.port, app="py", clock=clock)
    try:
        until_ready(gw, {"event_type": "probe", "event_id": "probe"})
        good = outbox.add({"event_type": "t"})
        bad = outbox.add(b'{"event_type":"t","deep":' + b"[" * 40 + b"]" * 40 + b"}")
        result = outbox.drain()
        assert (result.acked, result.failed) == (1, 1)
        assert outbox.failed() == [(bad, outbox.failed()[0][1])]
        assert outbox.failed()[0][1]["error"] == "too_deep"
        assert good in outbox.acknowledged()
        clock.now += 10
        assert outbox.prune(5) == 1 and outbox.acknowledged() == {}
        assert len(outbox.failed()) == 1  # refused rows stay until someone looks
    finally:
        outbox.close()
        gw.stop()

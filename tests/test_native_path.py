"""The native path's plumbing: choosing it, naming it, and what it hands the writer
and the reply queue. (That it stores what the Python path stores, byte for byte,
is tests/test_native_differential.py.)

Without the extension these tests skip, unless GATEWAY_REQUIRE_NATIVE=1 (CI),
where a missing extension fails them.
"""

from __future__ import annotations

import os

import pytest

from gateway.clock import FakeClock
from gateway.config import Config, IngestConfig, LedgerConfig
from gateway.ingest import fast
from gateway.ingest.intake import Intake
from gateway.ingest.protocol import IngestProtocol
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ledger.commit import Ledger
from gateway.ledger.store import SYNC_UNIT_BYTES
from gateway.loop import EventLoop
from gateway.metrics import exposition
from gateway.service import Gateway

if fast.native_module() is None:
    if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
        pytest.fail("the native ingest core is not built", pytrace=False)
    pytest.skip("the native ingest core is not built", allow_module_level=True)


@pytest.fixture
def make(tmp_path):
    loops = []

    def build(native=None, **ledger):
        loop = EventLoop(FakeClock())
        loops.append(loop)
        led = Ledger(LedgerConfig(**ledger), tmp_path / f"ledger{len(loops)}", loop)
        led.open()
        intake = Intake(led, IngestConfig(), native=native)
        return intake, Session("10.0.0.7", 4000, 1, intake.policy)

    yield build
    for loop in loops:
        loop.close()


def feed(intake, session, data: bytes, budget=None):
    proto = IngestProtocol(65536)
    proto.receive_data(b'{"hello":{"app":"shop","ack":true}}\n' + data)
    replies = ReplyQueue()
    outcome = intake.feed(session, proto, replies, budget)
    return outcome, replies, proto


def test_the_path_is_chosen_named_and_can_be_forced(make, monkeypatch):
    assert make()[0].path == "native"
    assert make(native=False)[0].path == "python"
    monkeypatch.setenv(fast.PURE_PYTHON_ENV, "1")
    assert make()[0].path == "python"
    with pytest.raises(RuntimeError, match="not built"):
        make(native=True)


def test_status_metrics_and_the_status_command_name_the_path(tmp_path):
    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    gw = Gateway(config, clock=FakeClock())
    gw.start()
    try:
        status = gw.status()
        assert status["ingest_path"] == "native"
        assert "gateway_ingest_native 1" in exposition(status)
    finally:
        gw.request_stop()
        gw._finish()


TS = b'"timestamp":"2026-12-01T10:00:00Z"'


def test_plain_events_are_one_run_of_acks_and_flagged_ones_their_own(make):
    intake, session = make()
    good = b'{"event_type":"a",%s}\n' % TS
    _outcome, replies, proto = feed(intake, session, good * 2 + b'{"x":1}\n' + good)
    assert proto.lines == 5  # the hello and four events
    hello, run, flagged, last = replies.items
    assert hello[0] == 0 and run == range(1, 3) and last == range(4, 5)
    assert flagged[0] == 3 and b'"flags":["missing_event_type","missing_timestamp"]' in flagged[1]
    assert len(replies) == 5
    # Due up to 1: the run is cut there and the rest waits.
    out = replies.take_due(1)
    assert out.count(b'"ok":true') == 2 and out.endswith(b'{"ok":true,"seq":1}\n')
    assert not replies.head_due(1) and replies.head_due(2)
    assert not replies.all_due(3) and replies.all_due(4)
    assert replies.take_due(10).count(b'"seq"') == 3


def test_the_budget_counts_native_events(make):
    intake, session = make()
    events = b"".join(b'{"event_type":"e","i":%d}\n' % i for i in range(10))
    outcome, _replies, proto = feed(intake, session, events, budget=4)
    assert outcome == 1  # DEFERRED
    assert intake.stats.events == 3  # the hello used one item of the budget
    assert proto.lines == 4


def test_with_fsync_always_every_frame_is_a_sync_point(make):
    synced = {}
    for native in (True, False):
        intake, session = make(native=native, fsync="always")
        feed(intake, session, b'{"event_type":"a"}\n' * 5)
        (write,) = intake.ledger.writer._writes
        synced[native] = (bytes(write.data), list(write.sync_points))
    assert synced[True] == synced[False]
    assert len(synced[True][1]) == 5


def test_a_full_sync_unit_ends_the_scan_at_its_boundary(make):
    line = b'{"event_type":"a","pad":"%s"}\n' % (b"x" * 900)
    count = SYNC_UNIT_BYTES // 1000 + 50
    points = {}
    for native in (True, False):
        intake, session = make(native=native)
        feed(intake, session, line * count)
        (write,) = intake.ledger.writer._writes
        points[native] = list(write.sync_points)
    assert points[True] == points[False]
    (at,) = points[True]
    assert SYNC_UNIT_BYTES <= at < SYNC_UNIT_BYTES + 1100

"""The sans-I/O ingest pieces fed values: session, intake, reply encoder; no sockets.

The intake stages entries in a real (opened, never committed) ledger, so what
would be stored is read back from its staged bytes; replies are read from the
ReplyQueue as the front-end would send them once durable.
"""

from __future__ import annotations

import json

import pytest

from gateway.clock import FakeClock
from gateway.config import IngestConfig, LedgerConfig
from gateway.ingest import replies as wire
from gateway.ingest.intake import DEFERRED, FINISHED, MORE, Intake
from gateway.ingest.limits import Policy
from gateway.ingest.protocol import Hello, IngestProtocol
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.commit import Ledger
from gateway.loop import EventLoop

SECRET = "0123456789abcdef-secret"


@pytest.fixture
def make(tmp_path):
    loops = []

    def build(**ingest):
        clock = FakeClock()
        loop = EventLoop(clock)
        loops.append(loop)
        ledger = Ledger(LedgerConfig(), tmp_path / f"ledger{len(loops)}", loop)
        ledger.open()
        config = IngestConfig(**ingest)
        intake = Intake(ledger, config)
        session = Session("10.0.0.7", 4000, 1, intake.policy)
        return intake, session, clock

    yield build
    for loop in loops:
        loop.close()


def staged(intake: Intake) -> list[dict]:
    """The entries staged so far, decoded from the bytes that would be written."""
    out = []
    for write in intake.ledger.writer._writes:
        data, pos = bytes(write.data), 0
        while pos < len(data):
            length, _seq = fmt.parse_frame_header(data, pos)
            start = pos + fmt.FRAME_HEADER_BYTES
            out.append(entries.decode(data[start : start + length]))
            pos = start + length + fmt.HASH_BYTES
    return out


def feed(intake, session, data: bytes, budget=None, hellos=True):
    proto = IngestProtocol(65536, hellos)
    proto.receive_data(data)
    replies = ReplyQueue()
    outcome = intake.feed(session, proto, replies, budget)
    return outcome, [json.loads(line) for line in replies.take_due(10**9).splitlines()], proto


def test_events_flags_and_refusals_in_ack_mode(make):
    intake, session, _ = make()
    data = (
        b'{"hello":{"app":"shop","ack":true}}\n'
        b'{"event_type":"a","timestamp":"2026-12-01T10:00:00Z"}\n'
        b'{"event_type":"b"}\n'
        b"[1]\n"
    )
    outcome, replies, _ = feed(intake, session, data)
    assert outcome == MORE
    assert replies[0]["hello"]["ok"] and replies[0]["hello"]["conn"] == 1
    assert replies[1] == {"ok": True, "seq": 1}
    assert replies[2] == {"ok": True, "seq": 2, "flags": ["missing_timestamp"]}
    assert replies[3]["error"] == "not_object" and replies[3]["detail"]
    stored = staged(intake)
    assert [e["kind"] for e in stored] == ["event", "event", "rejected"]
    assert stored[0]["source"] == {"addr": "10.0.0.7", "port": 4000, "app": "shop", "conn": 1}
    assert session.app == "shop" and session.ack and intake.stats.events == 2


def test_fire_and_forget_stores_the_same_and_answers_nothing(make):
    intake, session, _ = make()
    outcome, replies, _ = feed(intake, session, b'{"event_type":"a"}\n[1]\n')
    assert replies == [] and [e["kind"] for e in staged(intake)] == ["event", "rejected"]
    assert outcome == MORE


def test_the_budget_defers_and_eof_finishes(make):
    intake, session, _ = make()
    proto = IngestProtocol(65536)
    proto.receive_data(b'{"n":1}\n{"n":2}\n{"n":3}\n')
    proto.receive_data(b"")
    replies = ReplyQueue()
    assert intake.feed(session, proto, replies, 2) == DEFERRED
    assert intake.feed(session, proto, replies, 2) == FINISHED
    assert intake.stats.events == 3


def test_a_required_token_refuses_without_storing_and_a_good_one_authenticates(make):
    intake, session, _ = make(tokens={"shop": SECRET}, require_token=True)
    assert not session.authorized
    outcome, replies, _ = feed(intake, session, b'{"event_type":"a"}\n')
    assert outcome == FINISHED and replies[0]["error"] == "token_required"
    assert staged(intake) == [] and session.state == "closed"
    good = Session("10.0.0.7", 4001, 2, intake.policy)
    hello = json.dumps({"hello": {"app": "shop", "token": SECRET, "ack": True}}).encode()
    outcome, replies, _ = feed(intake, good, hello + b'\n{"event_type":"a"}\n')
    assert replies[1] == {"ok": True, "seq": 1, "flags": ["missing_timestamp"]}
    assert staged(intake)[0]["source"]["auth"] is True


def test_a_wrong_token_is_refused_with_one_line(make):
    intake, session, _ = make(tokens={"shop": SECRET})
    hello = json.dumps({"hello": {"app": "shop", "token": "x" * 20}}).encode()
    outcome, replies, _ = feed(intake, session, hello + b'\n{"event_type":"a"}\n')
    assert outcome == FINISHED and replies == [
        {"ok": False, "error": "bad_token", "detail": "the token is wrong, or missing for this app"}
    ]
    assert staged(intake) == []


def test_disk_full_refuses_the_sender_and_stores_nothing(make):
    intake, session, _ = make()
    intake.ledger.disk_full = True
    outcome, replies, _ = feed(intake, session, b'{"hello":{"ack":true}}\n{"event_type":"a"}\n')
    assert outcome == FINISHED and replies[1]["error"] == "disk_full" and staged(intake) == []


def test_rate_limit_uses_the_clock_and_records_the_line_once(make):
    intake, session, clock = make(rate_limit_eps=2, rate_burst=2)
    lines = b'{"hello":{"ack":true}}\n' + b'{"event_type":"a"}\n' * 3
    outcome, replies, _ = feed(intake, session, lines)
    assert [r.get("ok") for r in replies[1:]] == [True, True, False]
    assert replies[3]["error"] == "rate_limited" and outcome == FINISHED
    assert [e["kind"] for e in staged(intake)] == ["event", "event", "rejected"]
    # The bucket refills with time on the injected clock, not the machine's.
    clock.advance(1.0)
    again = Session("10.0.0.7", 4002, 2, intake.policy)
    _, replies, _ = feed(intake, again, b'{"hello":{"ack":true}}\n{"event_type":"a"}\n')
    assert replies[1]["ok"] is True


def test_an_unsynced_clock_flags_events_and_refusals(make):
    intake, session, clock = make()
    clock.kernel_synced = False
    clock.check_sync()
    _, replies, _ = feed(intake, session, b'{"hello":{"ack":true}}\n{"event_type":"a"}\n[]\n')
    assert replies[1]["flags"] == ["missing_timestamp", "clock_unsynced"]
    assert staged(intake)[1]["clock_unsynced"] is True


def test_an_http_body_has_no_hello():
    proto = IngestProtocol(65536, hellos=False)
    proto.receive_data(b'{"hello":{"app":"x"}}\n')
    with pytest.raises(Exception) as raised:
        proto.next_event()
    assert raised.value.code == "unexpected_hello"


def test_session_states_and_certificate_identity():
    policy = Policy(IngestConfig(tokens={"shop": SECRET}))
    session = Session("127.0.0.1", 1, 1, policy, cert_app="till")
    assert session.authorized and session.app == "till" and session.authenticated
    assert session.hello(Hello("other", True), policy) == "bad_token"
    assert session.state == "closed"
    bearer = Session("127.0.0.1", 2, 2, policy)
    assert bearer.bearer(None, SECRET, policy) == "" and bearer.app == "shop" and bearer.ack
    wrong = Session("127.0.0.1", 3, 3, policy)
    assert wrong.bearer(None, "not-a-token-of-anyone", policy) == "bad_token"


def test_reply_encoder_and_queue_order():
    assert wire.ack(7) == b'{"ok":true,"seq":7}\n'
    assert json.loads(wire.ack(7, ["x"], duplicate=True)) == {
        "ok": True,
        "seq": 7,
        "duplicate": True,
        "flags": ["x"],
    }
    assert json.loads(wire.error("bad_json", "d")) == {
        "ok": False,
        "error": "bad_json",
        "detail": "d",
    }
    queue = ReplyQueue()
    queue.add(0, wire.hello({"conn": 1}))
    queue.add_ack(5)
    queue.add(6, wire.error("x", "y"))
    queue.add_ack(9)
    assert queue.take_due(4).count(b"\n") == 1  # the hello only: 5 is not durable yet
    assert not queue.all_due(8) and queue.head_due(5)
    assert queue.take_due(8) == b'{"ok":true,"seq":5}\n' + wire.error("x", "y")
    assert len(queue) == 1 and queue.all_due(9)


def test_a_stranger_garbage_first_line_stores_nothing_and_is_closed(make):
    intake, session, _ = make(tokens={"shop": SECRET}, require_token=True)
    outcome, replies, _ = feed(intake, session, b"G" * 300 + b"\n" + b'{"event_type":"a"}\n' * 5)
    assert outcome == FINISHED and session.state == "closed"
    assert [r["error"] for r in replies] == ["token_required"]
    assert staged(intake) == []


def test_with_the_disk_full_refused_lines_are_counted_not_written(make):
    intake, session, _ = make()
    intake.ledger.disk_full = True
    feed(intake, session, b"not json\n" * 3)
    assert staged(intake) == [] and intake.stats.unstored == 3


HELLO = json.dumps({"hello": {"app": "shop", "token": SECRET}}).encode() + b"\n"


@pytest.mark.parametrize(
    ("before", "line"),
    [
        # an extra key next to hello on the first line (bad_hello)
        (b"", json.dumps({"hello": {"app": "shop", "token": SECRET}, "v": 1}).encode()),
        # a second valid hello (unexpected_hello)
        (HELLO, HELLO.rstrip(b"\n")),
        # any refused line whose bytes hold a configured token
        (b"", b'{"note": "' + SECRET.encode() + b'"'),
    ],
)
def test_no_hello_refusal_stores_a_secret_even_with_redaction_off(make, before, line):
    intake, session, _ = make(tokens={"shop": SECRET})
    assert intake.redactor is None
    feed(intake, session, before + line + b"\n")
    rejected = [e for e in staged(intake) if e["kind"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["excerpt"] == b""
    assert rejected[0]["length"] == len(line)


def test_redaction_of_an_excerpt_matches_keys_after_json_unescaping():
    from gateway.config import RedactConfig
    from gateway.ingest.redact import Redactor

    config = RedactConfig()
    redactor = Redactor(config.keys, config.cards, b"k" * 32, False)
    excerpt, redacted = redactor.excerpt(b'{"tok\\u0065n": "hunter2-secret", "x": 1')
    assert redacted and b"hunter2" not in excerpt


def test_repeated_keys_are_flagged_and_every_value_kept_redacted_like_the_event(make):
    from gateway.config import RedactConfig
    from gateway.ingest.redact import Redactor

    intake, session, _ = make()
    defaults = RedactConfig()
    intake.redactor = Redactor(defaults.keys, defaults.cards, b"k" * 32)
    line = (
        b'{"event_type":"a","event_type":"b","timestamp":"2026-12-01T10:00:00Z",'
        b'"new":{"role":"x","role":"y","role":"z"},"password":"p1","password":"p2"}\n'
    )
    _, replies, _ = feed(intake, session, b'{"hello":{"ack":true}}\n' + line)
    assert "duplicate_key" in replies[1]["flags"]
    stored = staged(intake)[0]
    assert stored["event"]["event_type"] == "b" and stored["event"]["new"] == {"role": "z"}
    repeats = stored["duplicate_keys"]
    assert {"role": ["x", "y", "z"]} in repeats and {"event_type": ["a", "b"]} in repeats
    (password,) = [r["password"] for r in repeats if "password" in r]
    assert "p1" not in json.dumps(password) and "p2" not in json.dumps(password)
    # An event without repeats has neither the flag nor the field.
    feed(intake, session, b'{"event_type":"a"}\n')
    assert "duplicate_keys" not in staged(intake)[1]


def test_a_hello_with_a_repeated_key_is_refused_and_keeps_no_excerpt(make):
    intake, session, _ = make(tokens={"shop": SECRET})
    hello = b'{"hello":{"app":"shop","token":"%s","token":"x"}}\n' % SECRET.encode()
    outcome, replies, _ = feed(intake, session, hello)
    assert outcome == FINISHED and replies[0]["error"] == "bad_hello"
    assert all(SECRET not in repr(e) for e in staged(intake))


def _summaries(intake: Intake) -> list[dict]:
    return [e["detail"] for e in staged(intake) if e.get("name") == "refused_summary"]


def test_refused_lines_count_against_the_rate_limit_and_are_then_summarised(make):
    intake, session, clock = make(rate_limit_eps=10, rate_burst=10)
    feed(intake, session, b"not json\n" * 500)
    rejected = [e for e in staged(intake) if e["kind"] == "rejected"]
    assert len(rejected) == 10  # the burst; the rest is counted, not stored one by one
    assert intake.stats.summarised == 490
    # They took the source's tokens: an event right after is over the limit.
    outcome, replies, _ = feed(intake, session, b'{"event_type": "a"}\n')
    assert outcome == FINISHED and replies[-1]["error"] == "rate_limited"
    assert intake.summarise() == 0  # not before the interval
    clock.advance(60)
    assert intake.summarise() == 1
    (summary,) = _summaries(intake)
    assert summary["source"] == "10.0.0.7" and summary["reason"] == "rate_limited"
    assert summary["lines"] == 490 and summary["codes"] == {"bad_json": 490}
    assert summary["bytes"] == 490 * len(b"not json")


def test_refused_lines_counted_while_the_disk_is_full_are_summarised_when_space_returns(make):
    intake, session, _clock = make()
    intake.ledger.disk_full = True
    feed(intake, session, b"not json\n" * 3 + b"[1]\n")
    assert intake.summarise() == 0 and staged(intake) == []  # nothing can be written yet
    intake.ledger.disk_full = False
    assert intake.summarise() == 1  # at once, not after the interval
    (summary,) = _summaries(intake)
    assert summary["reason"] == "disk_full" and summary["lines"] == 4
    assert sum(summary["codes"].values()) == 4


def test_the_summary_holds_a_bounded_number_of_sources(make, monkeypatch):
    from gateway.ingest import intake as intake_module

    monkeypatch.setattr(intake_module, "SUMMARY_MAX_SOURCES", 3)
    intake, _session, _clock = make()
    intake.ledger.disk_full = True
    for i in range(10):
        other = Session(f"10.0.1.{i}", 4000, i + 2, intake.policy)
        feed(intake, other, b"not json\n")
    intake.ledger.disk_full = False
    assert intake.summarise() == 4
    by_source = {s["source"]: s["lines"] for s in _summaries(intake)}
    assert by_source["*"] == 7 and len(by_source) == 4


def test_a_lone_surrogate_in_a_repeated_key_s_overridden_value_is_refused(make):
    # The overridden value is stored too (duplicate_keys), so it must pass the
    # same check as the event: it once reached the CBOR encoder and raised
    # UnicodeEncodeError out of feed, closing the connection unrecorded.
    intake, session, _ = make()
    lines = b'{"a":"\\ud800","a":"x"}\n{"e":{"k":["\\udc00"],"k":1}}\n{"event_type":"ok"}\n'
    _outcome, replies, _proto = feed(intake, session, b'{"hello":{"ack":true}}\n' + lines)
    assert [r.get("error") for r in replies[1:3]] == ["bad_unicode", "bad_unicode"]
    assert replies[3]["ok"] is True
    assert [e["kind"] for e in staged(intake)] == ["rejected", "rejected", "event"]

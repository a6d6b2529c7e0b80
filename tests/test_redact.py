"""Redaction at ingest: secrets and card numbers never reach the ledger's files."""

from __future__ import annotations

import json
import socket

from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inproc import pump, settle

from gateway.config import Config, IngestConfig, RedactConfig
from gateway.ingest.redact import REDACTED_CARD, REDACTED_KEY, Redactor, has_digit_run, luhn_ok
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.service import Gateway

KEYS = RedactConfig().keys
KEY = b"k" * 32
CARD = "4111 1111 1111 1111"  # a test Visa number, Luhn-valid
SECRET = "hunter2-correct-horse"


def test_luhn_and_the_digit_run_precheck():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert has_digit_run(b"pay 4111-1111-1111-1111") and has_digit_run(b"1234567890123")
    assert not has_digit_run(b'"timestamp":"2026-11-23T10:00:00Z","id":123456789012')


def test_keys_nested_values_lists_and_globs_are_redacted():
    r = Redactor(KEYS, True, KEY)
    event = {
        "event_type": "audit",
        "Password": SECRET,
        "db_password": {"nested": SECRET},
        "access_token": 12345,
        "old_value": {"settings": [{"api_key": SECRET}, {"note": f"card {CARD} used"}]},
        "plain": "keep me",
        "order": "4111111111111112",  # not Luhn-valid: not a card
    }
    flags = r.event(event)
    assert flags == [REDACTED_CARD, REDACTED_KEY]
    text = json.dumps(event)
    assert SECRET not in text and "4111 1111 1111 1111" not in text
    assert event["Password"] == "[redacted value]" and event["access_token"] == "[redacted value]"
    assert event["old_value"]["settings"][1]["note"] == "card [redacted card ****1111] used"
    assert event["plain"] == "keep me" and event["order"] == "4111111111111112"


def test_keyed_digests_match_equal_values_without_storing_them():
    r = Redactor(("secret",), True, KEY, digest_values=True)
    a, b, c = {"secret": "x1"}, {"secret": "x1"}, {"secret": "x2"}
    for e in (a, b, c):
        r.event(e)
    assert a == b != c and "blake3k:" in a["secret"] and "x1" not in a["secret"]


def test_a_clean_flat_event_skips_the_walk():
    r = Redactor(KEYS, True, KEY)
    event = {"event_type": "x", "timestamp": "2026-11-23T10:00:00Z", "user_id": 7}
    assert not r.might_need(event, json.dumps(event).encode())
    assert r.might_need({"note": "x"}, b'{"note":"4111 1111 1111 1111"}')
    nested = {"meta": {"db_password": "x"}}
    assert r.might_need(nested, json.dumps(nested).encode())  # a nested key: walked
    clean = {"meta": {"a": "b"}}
    assert not r.might_need(clean, json.dumps(clean).encode())  # nothing in its line


def test_an_excerpt_is_redacted_as_text():
    r = Redactor(KEYS, True, KEY)
    excerpt = ('{"password": "' + SECRET + '", "card":"' + CARD + '", "x": [').encode()
    out, found = r.excerpt(excerpt)
    assert found and SECRET.encode() not in out and b"4111 1111" not in out
    assert b'"password": "[redacted value]"' in out
    assert r.excerpt(b'{"a": 1, "b"') == (b'{"a": 1, "b"', False)


def test_nothing_redacted_reaches_the_segment_files(tmp_path):
    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    gw = Gateway(config)
    address = gw.start()[0]
    good = {"event_type": "login", "user": "anna", "password": SECRET, "note": f"card {CARD}"}
    bad = '{"event_type": "x", "token": "' + SECRET + '", "card": "' + CARD + '", oops}'
    with socket.create_connection(address) as c:
        c.sendall(json.dumps(good).encode() + b"\n" + bad.encode() + b"\n")
    pump(gw, lambda: gw.ingest.stats.events == 1 and gw.ingest.stats.rejected == 1)
    settle(gw)
    gw.request_stop()
    gw._finish()
    stored = b"".join(p.read_bytes() for p in config.ledger_dir.glob("*.seg"))
    for needle in (SECRET.encode(), b"4111 1111 1111 1111", b"4111111111111111"):
        assert needle not in stored, needle
    decoded = [entries.decode(p) for _s, p, _h in LedgerReader(config.ledger_dir).entries()]
    event = next(e for e in decoded if e["kind"] == "event")
    assert event["flags"] == ["missing_timestamp", REDACTED_CARD, REDACTED_KEY]
    assert event["event"]["password"] == "[redacted value]"
    rejected = next(e for e in decoded if e["kind"] == "rejected")
    assert rejected["redacted"] is True
    assert rejected["digest"] != blake3(bad.encode()).digest()  # keyed, not the plain hash
    assert (config.state_dir / "redact.key").stat().st_mode & 0o777 == 0o600


def test_redaction_can_be_turned_off(tmp_path):
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        redact=RedactConfig(keys=(), cards=False),
    )
    gw = Gateway(config)
    address = gw.start()[0]
    assert gw.intake.redactor is None
    with socket.create_connection(address) as c:
        c.sendall(b'{"event_type":"x","password":"visible"}\n')
    pump(gw, lambda: gw.ingest.stats.events == 1)
    gw.request_stop()
    gw._finish()
    stored = b"".join(p.read_bytes() for p in config.ledger_dir.glob("*.seg"))
    assert b"visible" in stored


# ---- the pre-check never says "nothing to do" when the walk would redact

_KEYS = st.sampled_from(
    ["event_type", "note", "Password", "db_PASSWD", "api_key", "x-Authorization", "cvv",
     "user", "tokens", "\u212aey", "p\u00e4sswort", "\u0130d", "old_value"]
)  # fmt: skip
_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from([CARD, "4111-1111-1111-1111", "+44 23 8000 1234", "4111111111111112",
                     f"paid with {CARD}.", "378282246310005", "12345678901234567890"]),
)  # fmt: skip
_VALUES = st.recursive(
    st.one_of(_TEXT, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.dictionaries(_KEYS, _VALUES, max_size=6), ascii_only=st.booleans())
def test_the_precheck_agrees_with_the_walk(event, ascii_only):
    """might_need() False must mean the walk finds nothing, however the line spells it."""
    r = Redactor((*KEYS, "pässwort", "ke?", "[xy]-auth*"), True, KEY)
    line = json.dumps(event, ensure_ascii=ascii_only).encode()
    decoded = json.loads(line)
    if not r.might_need(decoded, line):
        assert r.event(decoded) == [], line


def test_precheck_patterns_without_a_literal_always_walk():
    r = Redactor(("*",), False, KEY)
    assert r.might_need({"a": {"b": 1}}, b'{"a":{"b":1}}') and r.event({"a": 1}) == [REDACTED_KEY]
    r = Redactor(("[a-z]*word",), False, KEY)  # the literal is "word", not "a-z"
    assert r.might_need({"m": {"password": 1}}, b'{"m":{"password":1}}')

"""Who may send: the allow list, per-app tokens, per-source connection and rate limits."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
from inproc import pump, settle

from gateway.config import Config, IngestConfig, load_config
from gateway.errors import ConfigError
from gateway.ingest.limits import Policy, TokenBuckets
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.service import Gateway

SECRET = "s3cret-token-for-the-shop"


def ledger(gw: Gateway) -> list[dict]:
    settle(gw)
    return [
        {"seq": seq, **entries.decode(p)}
        for seq, p, _h in LedgerReader(gw.config.ledger_dir).entries()
    ]


@pytest.fixture
def gateway_with(tmp_path):
    made = []

    def make(**ingest) -> tuple[Gateway, tuple[str, int]]:
        config = Config(
            state_dir=tmp_path / "state",
            ingest=IngestConfig(listen=("127.0.0.1:0",), **ingest),
        )
        gw = Gateway(config)
        address = gw.start()[0]
        made.append(gw)
        return gw, address

    yield make
    for gw in made:
        gw.request_stop()
        gw._finish()


def talk(gw: Gateway, address, data: bytes, replies: int = 1) -> tuple[list[dict], bool]:
    """Send `data`; return the reply lines and whether the gateway closed the connection."""
    sock = socket.create_connection(address)
    sock.setblocking(False)
    sock.sendall(data)
    received = b""
    closed = False

    def done() -> bool:
        nonlocal received, closed
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed = True
        return closed or (received.count(b"\n") >= replies and replies > 0)

    pump(gw, done)
    sock.close()
    return [json.loads(line) for line in received.splitlines()], closed


def hello(app: str | None = None, token: str | None = None, ack: bool = True) -> bytes:
    body: dict = {"ack": ack}
    if app is not None:
        body["app"] = app
    if token is not None:
        body["token"] = token
    return json.dumps({"hello": body}).encode() + b"\n"


EVENT = b'{"event_type":"x","timestamp":"2026-11-30T10:00:00Z"}\n'


def fire(address, data: bytes) -> None:
    """A fire-and-forget client: write and close."""
    with socket.create_connection(address) as sock:
        sock.sendall(data)


def events(gw: Gateway) -> list[dict]:
    return [e for e in ledger(gw) if e["kind"] == "event"]


# ---- the policy on its own


def test_allow_list_matches_ipv4_ipv6_and_mapped_addresses():
    policy = Policy(IngestConfig(allow=("10.0.0.0/8", "fe80::/10")))
    assert policy.allowed("10.1.2.3") and policy.allowed("::ffff:10.1.2.3")
    assert policy.allowed("fe80::1%eth0")
    assert not policy.allowed("192.168.1.1") and not policy.allowed("8.8.8.8")
    assert not policy.allowed("not an address")
    assert Policy(IngestConfig()).allowed("127.0.0.1")
    assert Policy(IngestConfig()).allowed("192.168.1.20")
    assert not Policy(IngestConfig()).allowed("203.0.113.7")


def test_token_bucket_refills_at_its_rate():
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take("b", 0.0)  # per source
    assert not b.take("a", 0.2) and b.take("a", 0.6)  # 0.6 s: 1.2 tokens came back
    b.forget_idle(100.0)
    assert b.state == {}


def test_a_quiet_source_gets_its_burst_back_and_no_more():
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("a", 0.0) for _ in range(3)] == [True, True, True]
    # An hour of quiet refills the bucket to its burst, not to 7,200 tokens.
    assert [b.take("a", 3600.0) for _ in range(4)] == [True, True, True, False]


def test_configuration_of_access_is_checked(tmp_path):
    path = tmp_path / "g.yaml"
    for text, key in {
        "ingest: {allow: ['10.0.0.0/33']}": "ingest.allow[0]",
        "ingest: {tokens: {shop: short}}": "ingest.tokens.shop",
        "ingest: {rate_limit_eps: -1}": "ingest.rate_limit_eps",
    }.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == key


def test_the_configuration_hash_never_contains_a_secret():
    config = Config(ingest=IngestConfig(tokens={"shop": SECRET}))
    plain = json.dumps(config.effective())
    assert SECRET not in plain and "blake3:" in plain
    other = Config(ingest=IngestConfig(tokens={"shop": SECRET + "x"}))
    assert config.digest() != other.digest()  # rotating a token is a visible change


# ---- a running gateway


def test_a_source_outside_the_allow_list_is_closed_without_a_byte(gateway_with, caplog):
    gw, address = gateway_with(allow=("10.0.0.0/8",))
    replies, closed = talk(gw, address, EVENT, replies=0)
    assert replies == [] and closed
    assert events(gw) == []
    assert any("source not allowed" in r.getMessage() for r in caplog.records)


def test_a_right_token_authenticates_the_app_name(gateway_with):
    gw, address = gateway_with(tokens={"shop": SECRET})
    replies, _ = talk(gw, address, hello("shop", SECRET) + EVENT, replies=2)
    assert replies[0]["hello"]["ok"] is True and replies[1]["ok"] is True
    (event,) = events(gw)
    assert event["source"]["app"] == "shop" and event["source"]["auth"] is True


@pytest.mark.parametrize("token", ["wrong-token-wrong-token", None])
def test_a_wrong_or_missing_token_gets_one_line_and_a_close_and_no_entry(
    gateway_with, token, caplog
):
    gw, address = gateway_with(tokens={"shop": SECRET})
    replies, closed = talk(gw, address, hello("shop", token) + EVENT, replies=2)
    assert closed and [r["error"] for r in replies] == ["bad_token"]
    assert [e["kind"] for e in ledger(gw)] == ["system"]  # only `started`
    assert any("bad or missing token" in r.getMessage() for r in caplog.records)


def test_without_require_token_other_apps_may_send_unauthenticated(gateway_with):
    gw, address = gateway_with(tokens={"shop": SECRET})
    talk(gw, address, hello("kiosk") + EVENT, replies=2)
    fire(address, EVENT)  # no hello
    pump(gw, lambda: gw.ingest.stats.events == 2)
    assert [e["source"].get("auth") for e in events(gw)] == [None, None]


def test_require_token_refuses_anything_else_without_recording_it(gateway_with):
    gw, address = gateway_with(tokens={"shop": SECRET}, require_token=True)
    replies, closed = talk(gw, address, EVENT + EVENT, replies=1)
    assert closed and [r["error"] for r in replies] == ["token_required"]
    replies, closed = talk(gw, address, hello("kiosk") + EVENT, replies=1)
    assert closed and [r["error"] for r in replies] == ["bad_token"]
    assert events(gw) == [] and not any(e["kind"] == "rejected" for e in ledger(gw))
    replies, _ = talk(gw, address, hello("shop", SECRET) + EVENT, replies=2)
    assert replies[1]["ok"] is True


def test_a_malformed_hello_never_stores_its_token(gateway_with):
    gw, address = gateway_with(tokens={"shop": SECRET})
    bad = json.dumps({"hello": {"app": "shop", "token": SECRET, "ack": "yes"}}).encode() + b"\n"
    replies, closed = talk(gw, address, bad, replies=1)
    assert closed and replies[0]["error"] == "bad_hello"
    (rejected,) = [e for e in ledger(gw) if e["kind"] == "rejected"]
    assert (
        rejected["excerpt"] == b""
        and SECRET.encode() not in json.dumps(entries.to_jsonable(rejected)).encode()
    )


def test_connections_per_source_are_capped(gateway_with):
    gw, address = gateway_with(max_connections_per_source=2)
    held = [socket.create_connection(address) for _ in range(2)]
    try:
        pump(gw, lambda: len(gw.ingest.connections) == 2)
        replies, closed = talk(gw, address, b"", replies=1)
        assert closed and replies[0]["error"] == "too_many_connections_from_source"
    finally:
        for s in held:
            s.close()
    pump(gw, lambda: not gw.ingest.connections)
    assert dict(gw.ingest.policy.per_source) == {}  # counts go back down
    fire(address, EVENT)
    pump(gw, lambda: gw.ingest.stats.events == 1)


def test_going_over_the_rate_gets_one_line_a_record_and_a_close(gateway_with):
    gw, address = gateway_with(rate_limit_eps=1, rate_burst=5)
    replies, closed = talk(gw, address, EVENT * 20, replies=1)
    assert closed and replies == [
        {"ok": False, "error": "rate_limited", "detail": replies[0]["detail"]}
    ]
    assert len(events(gw)) == 5
    (rejected,) = [e for e in ledger(gw) if e["kind"] == "rejected"]
    assert rejected["reason"] == "rate_limited"


def test_limits_change_with_a_reload(gateway_with):
    gw, _ = gateway_with()
    counts_before = gw.intake.policy.per_source
    new = dataclasses.replace(gw.config.ingest, max_connections_per_source=3)
    gw.intake.reconfigure(new, gw.intake.redactor)
    assert gw.intake.policy.max_per_source == 3
    assert gw.intake.policy.per_source is counts_before


def test_gateway_send_with_a_token(tmp_path):
    from gatewayproc import GatewayProcess, run_gateway_command

    gw = GatewayProcess(tmp_path, ingest={"tokens": {"shop": SECRET}, "require_token": True})
    try:
        token_file = tmp_path / "token"
        token_file.write_text(SECRET + "\n")
        args = ["send", "--ack", "--port", str(gw.port), "--app", "shop"]
        good = run_gateway_command(*args, "--token-file", str(token_file), input=EVENT)
        assert good.returncode == 0, good.stderr
        bad = run_gateway_command(*args, input=EVENT)
        assert bad.returncode == 1 and b"bad_token" in bad.stderr
        env_token = run_gateway_command(
            *args, input=EVENT, env={"GATEWAY_TOKEN": SECRET, "PATH": ""}
        )
        assert env_token.returncode == 0, env_token.stderr
    finally:
        gw.close()


def test_an_app_may_hold_two_tokens_while_one_is_rotated(tmp_path):
    """Both tokens of an app are accepted, a third is refused; the configuration
    takes one token or a list of at most two."""
    new, old = "new-token-0123456789", "old-token-0123456789"
    path = tmp_path / "gateway.yaml"
    path.write_text(f"ingest: {{tokens: {{shop: [{new}, {old}]}}, require_token: true}}\n")
    config = load_config(path, tmp_path / "state")
    policy = Policy(config.ingest)
    assert policy.authenticate("shop", new) == "" and policy.authenticate("shop", old) == ""
    assert policy.authenticate("shop", "some-other-token-000") == "bad_token"
    assert policy.app_for_token(old) == "shop"
    path.write_text(f"ingest: {{tokens: {{shop: [{new}, {old}, x{old}]}}}}\n")
    with pytest.raises(ConfigError, match="1 to 2 tokens"):
        load_config(path, tmp_path / "state")
    # One token as before: the same configuration hash as a plain string.
    path.write_text(f"ingest: {{tokens: {{shop: {new}}}}}\n")
    single = load_config(path, tmp_path / "state")
    assert single.ingest.tokens == {"shop": (new,)}
    assert single.effective()["ingest"]["tokens"]["shop"].startswith("blake3:")


def test_allow_list_verdicts_are_remembered_within_a_bound(monkeypatch):
    from gateway.ingest import limits

    monkeypatch.setattr(limits, "ALLOWED_MEMO_SIZE", 8)
    policy = Policy(IngestConfig(allow=("10.0.0.0/8",)))
    for round_ in range(3):
        for i in range(20):
            assert policy.allowed(f"10.0.0.{i}")
            assert not policy.allowed(f"192.168.0.{i}")
        assert len(policy._allowed) <= 8, round_

"""HTTP ingest against a real `gateway run`: curl, http.client, raw sockets.

Every answer is checked against what the ledger holds afterwards: an "ok"
names the seq of exactly that event, a refusal stores nothing (or a
`rejected` entry, for a bad line), and nothing is answered before it is durable.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess

import pytest
from gatewayproc import GatewayProcess, free_port, wait_for

SECRET = "s3cret-token-for-the-shop-app"


def http_gateway(tmp_path, **ingest) -> GatewayProcess:
    port = free_port()
    overrides = {"ingest": {"http": {"listen": [f"127.0.0.1:{port}"]}, **ingest}}
    gw = GatewayProcess(tmp_path, **overrides)
    gw.http_port = port
    return gw


@pytest.fixture
def gw(tmp_path):
    proc = http_gateway(tmp_path)
    try:
        yield proc
    finally:
        assert proc.close() == 0


def post(port: int, body: bytes, content_type="application/x-ndjson", headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST", "/v1/events", body=body, headers={"Content-Type": content_type, **(headers or {})}
    )
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, json.loads(data) if data else None


def events(gw: GatewayProcess) -> list[dict]:
    return [e for e in gw.export() if e["kind"] == "event"]


def test_ndjson_lines_are_answered_per_line_in_order_once_durable(gw):
    body = (
        b'{"event_type":"a","timestamp":"2026-12-01T10:00:00Z"}\n'
        b"\n"
        b'{"event_type":"b"}\n'
        b'{"oops\n'
        b'{"event_type":"c","timestamp":"2026-12-01T10:00:01Z"}'
    )
    status, results = post(gw.http_port, body)
    assert status == 200
    assert [r["ok"] for r in results] == [True, True, False, True]
    assert results[1]["flags"] == ["missing_timestamp"]
    assert results[2]["error"] == "bad_json"
    stored = {e["seq"]: e for e in gw.export()}
    for result, event_type in zip([results[0], results[1], results[3]], "abc", strict=True):
        assert stored[result["seq"]]["event"]["event_type"] == event_type
    rejected = [e for e in stored.values() if e["kind"] == "rejected"]
    assert [r["reason"] for r in rejected] == ["bad_json"]
    assert all(e["source"]["app"] is None for e in stored.values() if e["kind"] == "event")


def test_a_json_body_holds_one_event_or_an_array(gw):
    status, results = post(gw.http_port, b'{"event_type": "one"}', "application/json")
    assert status == 200 and len(results) == 1 and results[0]["ok"]
    body = b'[{"event_type": "x"}, [1, 2], {"event_type": "y",\n "n": 12345678901234567890123}]'
    status, results = post(gw.http_port, body, "application/json; charset=utf-8")
    assert status == 200
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["error"] == "not_object"
    stored = {e["seq"]: e for e in events(gw)}
    assert stored[results[2]["seq"]]["event"]["n"] == 12345678901234567890123
    status, results = post(gw.http_port, b"[1, 2", "application/json")
    assert status == 200 and results[0]["error"] == "bad_json"


def test_curl_posts_a_file_of_events(gw, tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl is needed (Debian package curl; .ci/run installs it)"
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(b'{"event_type":"curl","i":%d}\n' % i for i in range(50)))
    out = subprocess.run(
        [curl, "-sS", "-H", "Content-Type: application/x-ndjson", "--data-binary", f"@{path}",
         f"http://127.0.0.1:{gw.http_port}/v1/events"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    results = json.loads(out.stdout)
    assert len(results) == 50 and all(r["ok"] for r in results)
    stored = {e["seq"]: e["event"]["i"] for e in events(gw)}
    assert [stored[r["seq"]] for r in results] == list(range(50))


def test_tokens_map_to_the_app_and_a_wrong_token_stores_nothing(tmp_path):
    gw = http_gateway(tmp_path, tokens={"shop": SECRET}, require_token=True)
    try:
        before = len(gw.export())
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
            status, body = post(gw.http_port, b'{"event_type":"x"}\n', headers=headers)
            assert status == 401 and body["error"] == "bad_token"
        assert len(gw.export()) == before  # nothing stored for a refused request
        status, results = post(
            gw.http_port, b'{"event_type":"x"}\n', headers={"Authorization": f"Bearer {SECRET}"}
        )
        assert status == 200 and results[0]["ok"]
        (event,) = events(gw)
        assert event["source"]["app"] == "shop" and event["source"]["auth"] is True
    finally:
        assert gw.close() == 0


def test_a_body_over_the_limit_gets_413_and_nothing_is_stored(tmp_path):
    port = free_port()
    proc = GatewayProcess(
        tmp_path, ingest={"http": {"listen": [f"127.0.0.1:{port}"], "max_body_bytes": 4096}}
    )
    try:
        big = b'{"event_type":"x","pad":"' + b"p" * 5000 + b'"}\n'
        status, body = post(port, big)
        assert status == 413 and body["error"] == "too_large"
        # Expect: 100-continue: the 413 comes at once, before any body byte is sent.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
            )
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 413")
        assert not [e for e in proc.export() if e["kind"] in ("event", "rejected")]
    finally:
        assert proc.close() == 0


def test_keep_alive_and_a_pipelined_second_request(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=30)
    first = post(gw.http_port, b'{"event_type":"k1"}\n', conn=conn)
    second = post(gw.http_port, b'{"event_type":"k2"}\n', conn=conn)
    conn.close()
    assert first[0] == second[0] == 200 and second[1][0]["seq"] > first[1][0]["seq"]
    # Two requests written back to back before reading: answered in order.
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Content-Length: %d\r\n\r\n%s"
    )
    one, two = b'{"event_type":"p1"}\n', b'{"event_type":"p2"}\n'
    with socket.create_connection(("127.0.0.1", gw.http_port), timeout=30) as sock:
        sock.sendall(request % (len(one), one) + request % (len(two), two))
        data = b""

        def both() -> bool:
            nonlocal data
            data += sock.recv(65536)
            return data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"]")

        wait_for(both, 20, "two responses")
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in data.split(b"HTTP/1.1 ")[1:]]
    stored = {e["seq"]: e["event"]["event_type"] for e in events(gw)}
    assert [stored[b[0]["seq"]] for b in bodies] == ["p1", "p2"]


def test_a_request_cut_mid_body_stores_nothing(gw):
    with socket.create_connection(("127.0.0.1", gw.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b'Content-Length: 1000\r\n\r\n{"event_type":"cut"}\n{"event_type":"cut2"}\n'
        )
    # A complete request afterwards is stored: the cut one left nothing behind.
    status, _ = post(gw.http_port, b'{"event_type":"after"}\n')
    assert status == 200
    assert [e["event"]["event_type"] for e in events(gw)] == ["after"]


def test_wrong_path_method_and_content_type(gw):
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
    conn.request("GET", "/v1/events")
    assert conn.getresponse().status == 405
    conn.close()
    assert post(gw.http_port, b"{}", "text/plain")[0] == 415
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
    conn.request("POST", "/elsewhere", body=b"{}", headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 404
    conn.close()
    assert not events(gw)


def test_many_idle_keep_alive_connections_while_tcp_ingest_goes_on(tmp_path):
    port = free_port()
    proc = GatewayProcess(
        tmp_path,
        ingest={"max_connections": 1200, "http": {"listen": [f"127.0.0.1:{port}"]}},
    )
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        status, results = post(port, b'{"event_type":"h"}\n')
        assert status == 200 and results[0]["ok"]
        from gatewayproc import AckClient, event_line

        with AckClient(proc.port) as client:
            client.send_lines([event_line(i=i) for i in range(2000)])
            replies = client.read_replies(2000)
        assert all(r["ok"] for r in replies)
    finally:
        for sock in socks:
            sock.close()
        assert proc.close() == 0


def test_https_uses_the_one_certificate_model(tmp_path):
    """`ingest.http.tls_listen` serves HTTPS with ingest.tls's certificate and key."""
    import ssl

    from test_tls import openssl

    pki = tmp_path / "pki"
    pki.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.pem", "-days", "2", "-subj", "/CN=gateway", "-addext",
            "subjectAltName=IP:127.0.0.1", cwd=pki)  # fmt: skip
    port = free_port()
    (tmp_path / "gw").mkdir()
    proc = GatewayProcess(
        tmp_path / "gw",
        ingest={
            "tls": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")},
            "http": {"tls_listen": [f"127.0.0.1:{port}"]},
        },
    )
    try:
        context = ssl.create_default_context(cafile=str(pki / "server.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        status, results = post(port, b'{"event_type":"tls"}\n', conn=conn)
        conn.close()
        assert status == 200 and results[0]["ok"]
        assert [e["event"]["event_type"] for e in events(proc)] == ["tls"]
    finally:
        assert proc.close() == 0


def test_a_sender_refused_mid_body_gets_every_answer_in_one_response(tmp_path):
    """The refusals owed for the lines after a rate limit are due at once; the response
    must still wait for the acknowledgements queued ahead of them."""
    gw = http_gateway(tmp_path, rate_limit_eps=1, rate_burst=3)
    try:
        body = b"".join(b'{"event_type":"t","n":%d}\n' % n for n in range(6))
        status, replies = post(gw.http_port, body)
        assert status == 429, replies
        assert [r["ok"] for r in replies] == [True] * 3 + [False] * 3
        assert [r.get("error") for r in replies[3:]] == ["rate_limited"] * 3
        assert len(events(gw)) == 3
    finally:
        assert gw.close() == 0

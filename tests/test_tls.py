"""TLS ingest: handshakes in the event loop, server-only and mutual TLS, gateway send --tls."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from inproc import pump, settle

from gateway.client import client_tls_context, send_events
from gateway.config import Config, IngestConfig, TlsConfig, load_config
from gateway.errors import ConfigError
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.service import Gateway

EVENT = b'{"event_type":"x","timestamp":"2026-11-30T10:00:00Z"}\n'


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1, and a client certificate with CN=shop."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=test ca", cwd=d)  # fmt: skip
    for name, cn, ext in (
        ("server", "gateway", "subjectAltName=IP:127.0.0.1"),
        ("client", "shop", "extendedKeyUsage=clientAuth"),
    ):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def tls_gateway(tmp_path, pki):
    made = []

    def make(client_ca: bool = False, timeout: float = 10.0):
        tls = TlsConfig(
            listen=("127.0.0.1:0",),
            cert=str(pki / "server.pem"),
            key=str(pki / "server.key"),
            client_ca=str(pki / "ca.pem") if client_ca else "",
            handshake_timeout_s=timeout,
        )
        config = Config(
            state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",), tls=tls)
        )
        gw = Gateway(config)
        plain, secure = gw.start()
        made.append(gw)
        return gw, plain, secure

    yield make
    for gw in made:
        gw.request_stop()
        gw._finish()


def run_client(gw: Gateway, fn):
    """Run a blocking client in a thread while the gateway's loop turns."""
    import threading

    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    pump(gw, lambda: not t.is_alive())
    return out[0]


def events(gw: Gateway) -> list[dict]:
    settle(gw)
    return [
        e
        for _s, p, _h in LedgerReader(gw.config.ledger_dir).entries()
        if (e := entries.decode(p))["kind"] == "event"
    ]


def test_events_over_tls_are_acknowledged(tls_gateway, pki):
    gw, _plain, secure = tls_gateway()
    context = client_tls_context(str(pki / "ca.pem"))
    lines = [EVENT] * 3000  # more than one window of 1024
    result = run_client(
        gw, lambda: send_events(*secure, lines, app="kiosk", ack=True, tls=context, timeout=10)
    )
    assert result.ok and result.acked == 3000, result
    assert len(events(gw)) == 3000
    assert events(gw)[0]["source"].get("auth") is None  # server-only TLS: app not proven


def test_fire_and_forget_over_tls(tls_gateway, pki):
    gw, _plain, secure = tls_gateway()
    context = client_tls_context(str(pki / "ca.pem"))
    run_client(gw, lambda: send_events(*secure, [EVENT, EVENT], tls=context, timeout=10))
    pump(gw, lambda: gw.ingest.stats.events == 2)


def test_mutual_tls_names_the_app_from_the_certificate(tls_gateway, pki):
    gw, _plain, secure = tls_gateway(client_ca=True)
    context = client_tls_context(
        str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key")
    )
    result = run_client(
        gw, lambda: send_events(*secure, [EVENT], ack=True, tls=context, timeout=10)
    )
    assert result.ok, result
    (event,) = events(gw)
    assert event["source"]["app"] == "shop" and event["source"]["auth"] is True
    # a hello claiming another app is refused
    result = run_client(
        gw, lambda: send_events(*secure, [EVENT], app="bank", ack=True, tls=context, timeout=10)
    )
    assert result.error and "bad_token" in result.error


def test_mutual_tls_refuses_a_client_without_a_certificate(tls_gateway, pki, caplog):
    gw, _plain, secure = tls_gateway(client_ca=True)
    context = client_tls_context(str(pki / "ca.pem"))

    def attempt():
        try:
            return send_events(*secure, [EVENT], ack=True, tls=context, timeout=5)
        except (ssl.SSLError, OSError) as exc:
            return exc

    outcome = run_client(gw, attempt)
    assert isinstance(outcome, OSError) or (outcome.error is not None), outcome
    pump(gw, lambda: any("TLS handshake failed" in r.getMessage() for r in caplog.records))
    assert events(gw) == []


def test_a_stalled_handshake_is_dropped_after_its_timeout(tls_gateway):
    gw, _plain, secure = tls_gateway(timeout=0.3)
    with socket.create_connection(secure) as sock:  # connects, never says hello in TLS
        pump(gw, lambda: len(gw.ingest.handshakes) == 1)
        pump(gw, lambda: not gw.ingest.handshakes, timeout=5.0)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the gateway


def test_plain_bytes_on_the_tls_port_are_not_events(tls_gateway):
    gw, _plain, secure = tls_gateway()
    with socket.create_connection(secure) as sock:
        sock.sendall(EVENT)
        pump(gw, lambda: not gw.ingest.handshakes and gw.ingest.stats.events == 0)
    assert events(gw) == []


def test_the_plain_listener_still_works(tls_gateway):
    gw, plain, _secure = tls_gateway()
    with socket.create_connection(plain) as sock:
        sock.sendall(EVENT)
    pump(gw, lambda: gw.ingest.stats.events == 1)


def test_tls_configuration_is_checked(tmp_path, pki):
    path = tmp_path / "g.yaml"
    path.write_text("ingest: {tls: {listen: ['127.0.0.1:0']}}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "ingest.tls"
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(
            listen=("127.0.0.1:0",),
            tls=TlsConfig(listen=("127.0.0.1:0",), cert=str(pki / "ca.pem"), key="/nonexistent"),
        ),
    )
    with pytest.raises(ConfigError) as info:
        Gateway(config).start()
    assert info.value.key == "ingest.tls.cert"


def test_gateway_send_tls_from_the_command_line(tmp_path, pki):
    from gatewayproc import GatewayProcess, free_port, run_gateway_command

    port = free_port()
    tls = {"listen": [f"127.0.0.1:{port}"], "cert": str(pki / "server.pem"),
           "key": str(pki / "server.key")}  # fmt: skip
    gw = GatewayProcess(tmp_path, ingest={"tls": tls})
    try:
        done = run_gateway_command(
            "send", "--ack", "--tls", "--ca", str(pki / "ca.pem"), "--port", str(port),
            input=EVENT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        untrusted = run_gateway_command("send", "--ack", "--tls", "--port", str(port), input=EVENT)
        assert untrusted.returncode == 1 and b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        exported = gw.export()
        assert sum(e["kind"] == "event" for e in exported) == 1
    finally:
        gw.close()

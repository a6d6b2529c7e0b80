"""`web` in the configuration, and the console over HTTPS with ingest.tls's certificate."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.web.server import certificate_fingerprint
from tests.gatewayproc import free_port, run_gateway_command
from tests.webtools import PASSWORD, web_gateway


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_off_in_files_on_loopback_in_the_embedded_defaults(tmp_path):
    assert load_config(_write(tmp_path, "{}\n")).web.listen == ()
    assert load_config(None, tmp_path).web.listen == ("127.0.0.1:8080",)


def test_refusals_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "web:\n  listen: ['nowhere']\n"))
    assert info.value.key == "web.listen[0]"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "web:\n  tls_listen: ['127.0.0.1:99999']\n"))
    assert info.value.key == "web.tls_listen[0]"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "web:\n  port: 80\n"))
    assert "web" in info.value.key


def test_https_with_the_ingest_certificate(tmp_path):
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    gateway, _base = web_gateway(
        tmp_path,
        ingest={"tls": {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}},
        web={"tls_listen": [f"127.0.0.1:{port}"]},
    )
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        body = f"name=otto&password={PASSWORD.replace(' ', '+')}"
        conn.request(
            "POST",
            "/login",
            body,
            {
                "Origin": f"https://127.0.0.1:{port}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 303
        cookie = answer.getheader("set-cookie")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.request("GET", "/", headers={"Cookie": cookie.split(";", 1)[0]})
        page = conn.getresponse().read().decode()
        fingerprint = certificate_fingerprint(str(tmp_path / "cert.pem"))
        assert len(fingerprint) == 95 and fingerprint in page
        conn.close()
    finally:
        gateway.stop()


def test_a_self_signed_certificate_is_made_at_first_start_and_kept(tmp_path):
    port = free_port()
    gateway, _base = web_gateway(tmp_path, web={"tls_listen": [f"127.0.0.1:{port}"]})
    cert = tmp_path / "state" / "web-tls" / "cert.pem"
    try:
        assert cert.exists()
        assert (tmp_path / "state" / "web-tls" / "key.pem").stat().st_mode & 0o777 == 0o600
        first = certificate_fingerprint(str(cert))
        seen = ssl.get_server_certificate(("127.0.0.1", port), timeout=30)
        assert certificate_fingerprint_of_pem(seen) == first
        gateway.restart()
        assert certificate_fingerprint(str(cert)) == first  # kept across restarts
        status = run_gateway_command("status", "--config", str(gateway.config_path))
        assert status.returncode == 0, status.stderr
        assert f"TLS SHA-256 {first}".encode() in status.stdout
    finally:
        gateway.stop()


def certificate_fingerprint_of_pem(pem: str) -> str:
    import hashlib

    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def test_the_printed_status_page_shows_the_console_certificate_fingerprint():
    from gateway.render.languages import render
    from gateway.render.templates import status_page

    fingerprint = ":".join(["A1"] * 32)
    status = {
        "ledger": {"entries": 5, "head_seq": 5, "head_hash": "ab" * 32},
        "web": {"listen": ["0.0.0.0:443"], "tls_fingerprint": fingerprint},
    }
    text = render(status_page("branch-1", status), "text", 48).decode()
    assert "console cert" in text
    assert "A1:A1:A1" in text

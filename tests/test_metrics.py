"""The read-only Prometheus listener."""

from __future__ import annotations

import re
import socket
import threading
import urllib.error
import urllib.request

from inproc import pump

from gateway.config import Config, IngestConfig, MetricsConfig, PrinterConfig, RouteConfig
from gateway.service import Gateway


def fetch(gw: Gateway, url: str, method: str = "GET") -> tuple[int, str]:
    out: list = []

    def get() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
                out.append((r.status, r.read().decode()))
        except urllib.error.HTTPError as exc:
            out.append((exc.code, ""))
            exc.close()

    t = threading.Thread(target=get, daemon=True)
    t.start()
    pump(gw, lambda: not t.is_alive())
    return out[0]


def test_metrics_expose_the_status_read_only(tmp_path):
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
        printers={"p": PrinterConfig(uri=f"file:{tmp_path / 'out'}")},
        routes=(RouteConfig(printer=("p",)),),
    )
    gw = Gateway(config)
    address = gw.start()[0]
    with socket.create_connection(address) as c:
        c.sendall(b'{"event_type":"a"}\n' * 3)
    # Three events stored, and a commit's result handled (the sync counters).
    pump(gw, lambda: gw.ingest.stats.events == 3 and gw.ledger.syncs > 0)
    host, port = gw.metrics_address
    code, body = fetch(gw, f"http://{host}:{port}/metrics")
    assert code == 200
    assert "gateway_events_total 3" in body and "gateway_up 1" in body
    assert "gateway_ledger_damaged 0" in body
    assert 'gateway_printer_queued{printer="p"}' in body
    assert 'gateway_commit_seconds{quantile="0.99"}' in body
    assert re.search(r"^gateway_syncs_total [1-9]", body, re.M) and "gateway_commits_total" in body
    assert fetch(gw, f"http://{host}:{port}/other")[0] == 404
    assert fetch(gw, f"http://{host}:{port}/metrics", method="POST")[0] == 405
    gw.request_stop()
    gw._finish()


def test_an_oversized_control_request_gets_its_error_line_not_a_reset(tmp_path):
    """A client still writing a too-long request reads the refusal (no reset)."""
    import json as _json

    from gateway.control import MAX_REQUEST_BYTES

    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    gw = Gateway(config)
    gw.start()
    answers: list[bytes] = []

    def client() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(config.control_path))
            try:
                sock.sendall(b'{"cmd":"status","pad":"' + b"x" * (MAX_REQUEST_BYTES * 8))
            except OSError:
                pass  # the gateway stopped reading the request: expected
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            answers.append(data)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        pump(gw, lambda: not thread.is_alive())
    finally:
        thread.join(10)
        gw.request_stop()
        gw._finish()
    assert _json.loads(answers[0]) == {"ok": False, "error": "request too long"}


def test_an_oversized_metrics_request_is_answered_431(tmp_path):
    from gateway.metrics import MAX_REQUEST_BYTES

    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
    )
    gw = Gateway(config)
    gw.start()
    answers: list[bytes] = []

    def client() -> None:
        with socket.create_connection(gw.metrics_address, timeout=10) as sock:
            try:
                sock.sendall(b"GET /metrics HTTP/1.0\r\nX-Pad: " + b"x" * (MAX_REQUEST_BYTES * 4))
            except OSError:
                pass
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            answers.append(data)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        pump(gw, lambda: not thread.is_alive())
    finally:
        thread.join(10)
        gw.request_stop()
        gw._finish()
    assert answers[0].startswith(b"HTTP/1.0 431 ")


def test_silent_clients_do_not_lock_scrapers_out(tmp_path):
    """With every slot held by clients that send nothing, a scraper still gets its
    answer: the longest-waiting silent client makes room."""
    from gateway.metrics import MAX_CLIENTS

    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
    )
    gw = Gateway(config)
    gw.start()
    silent = []
    try:
        for _ in range(MAX_CLIENTS):
            silent.append(socket.create_connection(gw.metrics_address, timeout=10))
        pump(gw, lambda: len(gw.metrics.clients) == MAX_CLIENTS)
        body: list[bytes] = []

        def scrape() -> None:
            url = f"http://{gw.metrics_address[0]}:{gw.metrics_address[1]}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                body.append(response.read())

        thread = threading.Thread(target=scrape)
        thread.start()
        pump(gw, lambda: not thread.is_alive())
        thread.join(10)
        assert body and b"gateway_up" in body[0]
    finally:
        for sock in silent:
            sock.close()
        gw.request_stop()
        gw._finish()

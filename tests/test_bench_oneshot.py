"""bench/oneshot.py's client against small loopback servers, and bench.ab's helpers."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time

import pytest

from bench import ab, latency, oneshot

# Each client run lasts this long; the servers answer at once on loopback.
RUN_S = 0.3
# Bound on a server thread's wait for a client's next bytes.
SERVER_TIMEOUT_S = 5.0


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def serve(handler: type[socketserver.BaseRequestHandler]):
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return server, thread


@pytest.fixture
def run_server():
    started = []

    def start(handler):
        server, thread = serve(handler)
        started.append((server, thread))
        return server.server_address[1]

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(SERVER_TIMEOUT_S)


def read_line(f) -> bytes:
    return f.readline(70_000)


class Gateway(socketserver.StreamRequestHandler):
    """Answers a hello and one event as the gateway does, then waits for the close."""

    refuse = False

    def handle(self):
        self.request.settimeout(SERVER_TIMEOUT_S)
        try:
            hello = read_line(self.rfile)
            if b'"hello"' not in hello:
                return
            self.wfile.write(b'{"hello":{"ok":true,"version":"0","head_seq":0,"ack":true}}\n')
            event = read_line(self.rfile)
            if not event.startswith(b"{"):
                return
            if self.refuse:
                self.wfile.write(b'{"ok":false,"error":"bad_json","detail":"x"}\n')
            else:
                self.wfile.write(b'{"ok":true,"seq":1}\n')
            read_line(self.rfile)  # until the client closes
        except OSError:
            pass


class Refusing(Gateway):
    refuse = True


class Silent(socketserver.StreamRequestHandler):
    """Reads the hello and never answers."""

    def handle(self):
        self.request.settimeout(SERVER_TIMEOUT_S)
        try:
            read_line(self.rfile)
            self.request.recv(1)
        except OSError:
            pass


class LineSink(socketserver.StreamRequestHandler):
    """Reads until the client shuts its side down, then closes (as rsyslog's imtcp)."""

    lines: list[bytes] = []

    def handle(self):
        self.request.settimeout(SERVER_TIMEOUT_S)
        try:
            data = self.rfile.read()
        except OSError:
            return
        LineSink.lines.append(data)


class Talker(socketserver.StreamRequestHandler):
    """Answers a line with text, which no syslog receiver does."""

    def handle(self):
        self.request.settimeout(SERVER_TIMEOUT_S)
        try:
            read_line(self.rfile)
            self.wfile.write(b"hello?\n")
            self.request.recv(1)
        except OSError:
            pass


def test_ack_cycles_complete_against_a_gateway(run_server):
    port = run_server(Gateway)
    r = oneshot.run_clients("127.0.0.1", port, 4, RUN_S, "ack")
    assert r["errors"] == 0, r["error_lines"]
    assert r["cycles"] > 4
    assert r["sent"] == r["cycles"]
    assert r["latency_ms"]["samples"] == r["cycles"]
    assert r["conns_per_s"] == pytest.approx(r["cycles"] / r["measured_s"], rel=0.01)


def test_a_refused_event_is_an_error_not_a_cycle(run_server):
    port = run_server(Refusing)
    r = oneshot.run_clients("127.0.0.1", port, 2, RUN_S, "ack")
    assert r["cycles"] == 0
    assert r["errors"] > 0
    assert "event refused" in r["error_lines"][0]


def test_an_unanswered_cycle_times_out(run_server, monkeypatch):
    monkeypatch.setattr(oneshot, "CYCLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(oneshot, "DRAIN_S", 0.5)
    port = run_server(Silent)
    r = oneshot.run_clients("127.0.0.1", port, 2, RUN_S, "ack")
    assert r["cycles"] == 0
    assert r["errors"] >= 2
    assert any("no answer within" in line for line in r["error_lines"])
    # Bounded: the run ends within the duration plus the drain and a cycle timeout.
    assert r["measured_s"] < RUN_S + 0.5 + 0.2 + 1.0


def test_line_cycles_wait_for_the_servers_close(run_server):
    LineSink.lines = []
    port = run_server(LineSink)
    r = oneshot.run_clients("127.0.0.1", port, 3, RUN_S, "line")
    assert r["errors"] == 0, r["error_lines"]
    assert r["cycles"] > 3
    assert r["sent"] == r["cycles"]
    # Every completed cycle's line reached the server whole, one per connection.
    assert len(LineSink.lines) >= r["cycles"]
    assert all(data.count(b"\n") == 1 and data.startswith(b"{") for data in LineSink.lines)


def test_a_line_server_that_answers_is_an_error(run_server):
    port = run_server(Talker)
    r = oneshot.run_clients("127.0.0.1", port, 2, RUN_S, "line")
    assert r["cycles"] == 0
    assert r["errors"] > 0
    assert "answered" in r["error_lines"][0]


def test_connect_refused_is_counted():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        r = oneshot.run_clients("127.0.0.1", port, 2, 0.1, "ack")
    assert r["cycles"] == 0
    assert r["errors"] > 0
    assert "connect" in r["error_lines"][0]


def test_ab_summary():
    assert ab.summary([3.0, 1.0, 2.0]) == "2.0 (1.0..3.0)"
    assert ab.summary([1000.0, 3000.0], "{:,.0f}") == "2,000 (1,000..3,000)"
    assert ab.summary([None, None]) == "-"


def test_ab_interpreter_prefers_the_checkouts_venv(tmp_path):
    assert ab.interpreter(tmp_path) == ab.sys.executable
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert ab.interpreter(tmp_path) == str(python)


def test_schedstat_counts_this_process():
    cpu0, wait0 = latency.schedstat_ns(os.getpid())
    # The kernel adds a running thread's time at scheduling events: work, then sleep
    # (a switch), at most 50 times (well under a second).
    for _ in range(50):
        sum(range(100_000))
        time.sleep(0.001)
        cpu1, wait1 = latency.schedstat_ns(os.getpid())
        if cpu1 > cpu0:
            break
    assert cpu1 > cpu0
    assert wait1 >= wait0

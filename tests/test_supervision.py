"""systemd supervision: READY, STATUS, WATCHDOG and STOPPING over a real NOTIFY_SOCKET."""

from __future__ import annotations

import errno
import itertools
import os
import signal
import socket
import time

import pytest
from gatewayproc import GatewayProcess, wait_for

from gateway.config import Config, IngestConfig
from gateway.ledger import durability
from gateway.notify import Notifier
from gateway.service import Gateway


class NotifySocket:
    """The systemd side: an AF_UNIX datagram socket collecting messages."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))
        return [m for _, m in self.messages]

    def count(self, key: str) -> int:
        return sum(1 for m in self.poll() if key in m)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    yield ns
    ns.close()


def test_ready_watchdog_status_and_stopping_from_a_real_process(tmp_path, notify_socket):
    # A 2 s deadline: the gateway pings every second (its health tick).
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    gw = GatewayProcess(tmp_path, env=env)
    try:
        # GatewayProcess returns once the port answers; READY came before that
        # (it is sent once recovery is done and every listener is bound).
        first = notify_socket.poll()[0]
        assert first["READY"] == "1" and "head seq" in first["STATUS"]
        wait_for(lambda: notify_socket.count("WATCHDOG") >= 3, 10.0, "watchdog pings")
        assert gw.stop(signal.SIGTERM) == 0
    finally:
        gw.close()
    messages = notify_socket.poll()
    assert any(m.get("STOPPING") == "1" for m in messages)
    pings = [t for t, m in notify_socket.messages if "WATCHDOG" in m]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 2.0  # never late against the deadline


def test_no_watchdog_for_another_pid(tmp_path, notify_socket):
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    gw = GatewayProcess(tmp_path, env=env)
    try:
        wait_for(lambda: notify_socket.count("READY"), 5.0, "READY")
        gw.stop(signal.SIGTERM)
    finally:
        gw.close()
    assert notify_socket.count("WATCHDOG") == 0


def test_notifier_is_a_no_op_without_notify_socket():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval_s is None
    assert n.ready("x") is False and n.watchdog() is False


def test_notifier_abstract_socket_and_utf8(tmp_path):
    name = f"gateway-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"})
        assert n.watchdog_interval_s == 0.5
        assert n.status("drucker \u00fcber 9100\nsecond line")
        assert server.recv(100).decode() == "STATUS=drucker \u00fcber 9100 second line"
        n.close()


def test_a_failed_send_is_reported_not_hidden(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.ready("x") is False
    assert n.watchdog() is False
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1  # once, not per message
    n.close()


def test_watchdog_stops_while_the_ledger_cannot_be_written(tmp_path, notify_socket, monkeypatch):
    monkeypatch.setattr(durability, "RETRY_START_S", 0.01)
    monkeypatch.setattr(durability, "RETRY_CAP_S", 0.02)
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "100000"})
    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    gw = Gateway(config, notifier=notifier)
    failing = {"on": False}
    real_writer = gw.ledger.durability.writer

    def writer(batch, fds, sync):
        if failing["on"]:
            raise OSError(errno.EIO, "injected EIO")
        return real_writer(batch, fds, sync)

    gw.ledger.durability.writer = writer
    address = gw.start()[0]

    def run(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            gw.loop.run_once(max_wait=0.02)

    run(0.5)
    assert notify_socket.count("WATCHDOG") >= 3
    failing["on"] = True
    with socket.create_connection(address) as c:
        c.sendall(b'{"event_type":"x"}\n')
    run(0.5)
    assert "cannot be written" in gw.health.unhealthy_reason
    before = notify_socket.count("WATCHDOG")
    run(0.5)
    assert notify_socket.count("WATCHDOG") == before  # no pings while writes fail
    assert gw.status()["health"].startswith("unhealthy")
    failing["on"] = False
    run(0.5)
    assert notify_socket.count("WATCHDOG") > before  # recovered: pings resume
    assert gw.health.unhealthy_reason == ""
    gw.request_stop()
    gw._finish()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_watchdog_stops_when_the_durability_thread_dies(tmp_path, notify_socket):
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "100000"})
    config = Config(state_dir=tmp_path / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    gw = Gateway(config, notifier=notifier)

    def writer(batch, fds, sync):
        raise SystemExit("the thread dies")  # not an OSError: the thread ends

    gw.ledger.durability.writer = writer
    gw.start()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        gw.loop.run_once(max_wait=0.02)
    assert gw.health.unhealthy_reason == "the durability thread has stopped"
    before = notify_socket.count("WATCHDOG")
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        gw.loop.run_once(max_wait=0.02)
    assert notify_socket.count("WATCHDOG") == before
    gw.stopping = True  # it cannot commit a stopped entry: close without one
    gw.ingest.stop_accepting()
    gw.control.close()
    gw.notifier.close()
    gw.loop.close()
    os.close(gw._lock_fd)

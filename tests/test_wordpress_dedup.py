"""The plugin after a lost acknowledgement: its resend must not store the events twice
(the gateway's event_id deduplication; run by `make test-php`)."""

from __future__ import annotations

import socket
import threading

import pytest
from gatewayproc import GatewayProcess, free_port
from wpsite import MariaDB, WordPress, assert_delivered_once, ledger_events, need

pytestmark = pytest.mark.php


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need("php")
    base = tmp_path_factory.mktemp("wordpress")
    db = MariaDB(base)
    try:
        wp = WordPress(base, db)
        wp.php("install")
        yield wp
    finally:
        db.stop()


class AckDroppingProxy:
    """Passes one connection's bytes to the gateway and the hello reply back, then swallows the
    event replies and closes the client once `n` of them came: the events are stored, the
    acknowledgements are lost on the way."""

    def __init__(self, upstream_port: int, n: int) -> None:
        self._upstream = upstream_port
        self.port = free_port()
        self.n = n
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=30)
        client.settimeout(30)

        def pump() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump, daemon=True).start()
        reader = upstream.makefile("rb")
        client.sendall(reader.readline())  # the hello reply
        for _ in range(self.n):
            reader.readline()
        client.close()
        upstream.close()
        self.listener.close()

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the proxy never saw every reply"


def test_a_resend_after_lost_acks_is_stored_once(site: WordPress, tmp_path) -> None:
    wp = site
    gw = GatewayProcess(tmp_path)
    try:
        # What the fresh site captured by itself (widget options on the first load) goes first.
        wp.php("configure", {"port": gw.port, "app": "wp-dedup", "batch_size": 20})
        wp.php("drain", {"force": True})
        before = len(ledger_events(gw))
        proxy = AckDroppingProxy(gw.port, 20)
        wp.php("configure", {"port": proxy.port})
        wp.php("emit", {"n": 20, "tag": "lost-ack"})
        first = wp.php("drain", {"force": True})
        proxy.join()
        assert first["acked"] == 0 and first["error"], first
        assert len(ledger_events(gw)) == before + 20  # stored, but the plugin never heard so

        wp.php("configure", {"port": gw.port})
        second = wp.php("drain", {"force": True})
        assert second["error"] is None, second
        rows = wp.php("rows")
        assert second["acked"] == 20, second
        rows = wp.php("rows")
        assert_delivered_once(rows, ledger_events(gw))
    finally:
        gw.close()

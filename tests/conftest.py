"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def synchronised_clock(monkeypatch):
    """In-process gateways see a synchronised clock, whatever this machine's NTP state
    (tests/test_clock.py injects the unsynchronised case explicitly)."""
    from gateway import clock

    monkeypatch.setattr(clock, "clock_synced", lambda: True)


@pytest.fixture
def gateway(request, tmp_path):
    """A started `gateway run` process (tests/gatewayproc.py), stopped at teardown.

    Configuration overrides come from indirect parametrization, e.g.
    @pytest.mark.parametrize("gateway", [{"ingest": {"max_connections": 3}}], indirect=True).
    A gateway still running at teardown must stop cleanly (SIGTERM, exit 0).
    """
    from gatewayproc import GatewayProcess

    overrides = getattr(request, "param", None) or {}
    proc = GatewayProcess(tmp_path, **overrides)
    try:
        yield proc
    finally:
        was_running = proc.running
        code = proc.close()
        if was_running:
            assert code == 0, f"gateway exited with {code} at teardown\n{proc.log_text()}"


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    """A real one-node Ceph with radosgw on loopback (tests/cephrgw.py), for the fleet suite."""
    from cephrgw import CephRGW

    store = CephRGW(tmp_path_factory.mktemp("ceph") / "cluster")
    try:
        store.start()
        yield store
    finally:
        store.stop()


_buckets = iter(range(1, 1_000_000))


@pytest.fixture
def bucket(ceph):
    """A new bucket with Object Lock on the session's Ceph store."""
    from gateway.fleet.s3 import Credentials, S3Client

    client = S3Client(
        ceph.endpoint, f"fleet-{next(_buckets)}", Credentials(ceph.access_key, ceph.secret_key)
    )
    client.create_bucket(object_lock=True)
    yield client
    client.close()

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

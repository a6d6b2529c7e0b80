"""A stop always ends: with a ledger that cannot be written, or a write that never returns.

Real `gateway run` processes with their writer replaced at start-up through a
test-only hook (tests/faultinject): SIGTERM must end them with status 1 within
the documented bound, and the watchdog must stop while a commit hangs.
"""

from __future__ import annotations

import signal
import time

from faultinject import hook_env
from gatewayproc import AckClient, GatewayProcess, ReplyTimeout, event_line, wait_for
from test_supervision import NotifySocket

from gateway.ledger.commit import SYNC_PENDING_LIMIT_S
from gateway.ledger.durability import STOP_JOIN_S
from gateway.service import SHUTDOWN_FLUSH_S

# docs/protocol.md: give up on the commit after 5 s, then at most STOP_JOIN_S
# for the durability thread; one more second covers the process's own exit.
STOP_BOUND_S = SHUTDOWN_FLUSH_S + STOP_JOIN_S + 1.0


def _stop_while_unwritable(tmp_path, hook: str) -> tuple[int, float, GatewayProcess]:
    gw = GatewayProcess(tmp_path, env=hook_env(hook))
    try:
        with AckClient(gw.port) as client:
            assert "hello" in client.hello, client.hello
            client.send_lines([event_line(n=1)])
            try:
                replies = client.read_replies(1, timeout=0.5)
            except ReplyTimeout:
                replies = []
            assert replies == [], f"acknowledged although nothing can be written: {replies}"
            started = time.monotonic()
            code = gw.stop(signal.SIGTERM, timeout=STOP_BOUND_S + 5)
            return code, time.monotonic() - started, gw
    finally:
        gw.kill()


def test_a_stop_while_every_write_fails_exits_1_after_the_commit_wait(tmp_path):
    code, elapsed, gw = _stop_while_unwritable(tmp_path, "fault_failing_writer")
    assert code == 1, gw.log_text()
    # It waited for the commit first (the retry loop kept trying), then gave up.
    assert SHUTDOWN_FLUSH_S - 0.5 <= elapsed <= STOP_BOUND_S, elapsed
    assert "stopping with entries not yet durable" in gw.log_text()
    assert "never returned" not in gw.log_text()  # the retrying thread heard the stop


def test_a_stop_while_a_write_never_returns_exits_1_within_the_bound(tmp_path):
    code, elapsed, gw = _stop_while_unwritable(tmp_path, "fault_blocking_writer")
    assert code == 1, gw.log_text()
    assert SHUTDOWN_FLUSH_S - 0.5 <= elapsed <= STOP_BOUND_S, elapsed
    assert "a ledger write never returned" in gw.log_text()


def test_the_watchdog_stops_once_a_commit_has_been_pending_over_the_limit(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    env = {
        **hook_env("fault_blocking_writer"),
        "NOTIFY_SOCKET": notify.path,
        "WATCHDOG_USEC": "2000000",  # pings every second (the health tick)
    }
    gw = GatewayProcess(tmp_path, env=env)
    try:
        wait_for(lambda: notify.count("READY"), 5.0, "READY")
        ready_at = next(t for t, m in notify.messages if "READY" in m)
        # Healthy while the first commit is younger than the limit: pings come.
        wait_for(lambda: notify.count("WATCHDOG") >= 3, 10.0, "watchdog pings")
        wait_for(
            lambda: "has been pending" in gw.log_text(),
            SYNC_PENDING_LIMIT_S + 5,
            "the unhealthy log line",
        )
        pings = [t for t, m in notify.messages if "WATCHDOG" in m]
        assert pings[-1] - ready_at < SYNC_PENDING_LIMIT_S + 1.5, pings
        # Three health ticks later, still no ping.
        before = notify.count("WATCHDOG")
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert notify.count("WATCHDOG") == before, "pinged while a commit hangs"
            time.sleep(0.1)
        assert gw.stop(timeout=STOP_BOUND_S + 5) == 1
    finally:
        gw.kill()
        notify.close()

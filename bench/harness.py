"""Starting and stopping real gateway processes: the pieces bench/ and tests/ share.

Both the benchmarks (bench/run.py) and the integration tests
(tests/gatewayproc.py) run `python -m gateway run` on a free loopback port and
poll against deadlines; the primitives live here once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["free_port", "gateway_command", "stop_process", "wait_for"]


def free_port() -> int:
    """A port nobody listens on right now (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_command(*args: str) -> list[str]:
    """`python -m gateway ARGS...` with this interpreter."""
    return [sys.executable, "-m", "gateway", *args]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Send `sig`, wait up to `timeout` s, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode

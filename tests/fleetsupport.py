"""Helpers of the fleet suite: a gateway replicating into a bucket of the test Ceph store."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from gatewayproc import GatewayProcess, run_gateway_command

# Replication on loopback confirms a small segment within a second or two;
# 60 s covers a loaded CI machine and a store that was just restarted (the
# uploader's retry backs off to at most 60 s, so waits after an outage are longer).
CONFIRM_TIMEOUT_S = 60.0
OUTAGE_TIMEOUT_S = 150.0
POLL_S = 0.1
# Small segments: about 60 events of 1 kB seal one.
SEGMENT_BYTES = 65536  # the smallest the configuration allows


def credentials_file(tmp: Path, ceph) -> Path:
    path = tmp / "s3.yaml"
    path.write_text(
        yaml.safe_dump({"access_key_id": ceph.access_key, "secret_access_key": ceph.secret_key})
    )
    path.chmod(0o600)
    return path


def fleet_gateway(tmp: Path, ceph, bucket: str, name: str, **fleet: Any) -> GatewayProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(
        tmp,
        name=name,
        ledger={"segment_bytes": SEGMENT_BYTES},
        fleet={
            "endpoint": ceph.endpoint,
            "bucket": bucket,
            "credentials_file": str(credentials_file(tmp, ceph)),
            "retain_days": 1,
            **fleet,
        },
    )


def status(proc: GatewayProcess) -> dict:
    done = run_gateway_command("status", "--json", "--config", str(proc.config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(POLL_S)


def send(proc: GatewayProcess, n: int, start: int = 0, pad: int = 1000) -> None:
    lines = b"".join(
        b'{"event_type":"sale","i":%d,"note":"%s"}\n' % (i, b"x" * pad)
        for i in range(start, start + n)
    )
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as c:
        c.sendall(b'{"hello":{"app":"t","ack":true}}\n' + lines)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while got.count(b"\n") < n + 1:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got.count(b'"ok":true') == n + 1, got[-300:]


def caught_up(proc: GatewayProcess, min_confirmed: int = 1) -> dict | None:
    st = status(proc)["replication"]
    if (
        st["lag_segments"] == 0
        and st["confirmed"] >= min_confirmed
        and st["notes_pending"] == 0
        and not st["error"]
    ):
        return st
    return None


def fleet_cli(*args: str, timeout: float = 120.0):
    return run_gateway_command("fleet", *args, timeout=timeout)

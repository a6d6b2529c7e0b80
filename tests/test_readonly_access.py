"""Read-only access for auditors, with real users and file permissions.

The gateway runs as a service user with the appliance's umask (0027); an
auditor is another user in the service's group; a stranger is in neither.
docs/audit.md promises that the auditor can query, show, export, verify and
ask for the status, but not reprint or print, and that the stranger can do
none of it. Each role runs in a forked child that switches to its user ids:
every module it needs is imported before the fork, so nothing has to be read
from the (possibly private) directory holding Python and the sources.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Imported here, before any fork, for the children that cannot read the sources.
import gateway.audit.index
import gateway.audit.present
import gateway.audit.query
import gateway.ledger.verify
import gateway.logs  # noqa: F401
from gateway import cli, control
from gateway.config import Config, IngestConfig
from gateway.service import Gateway

# Switching users needs root. Elsewhere these tests skip, except where
# GATEWAY_TESTS_REQUIRE_ROOT=1 says the run must cover them (.ci/run sets it):
# there a missing root fails them, so a skip can never pass for a pass.
REQUIRE_ROOT_ENV = "GATEWAY_TESTS_REQUIRE_ROOT"


@pytest.fixture(autouse=True)
def running_as_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get(REQUIRE_ROOT_ENV) == "1":
        pytest.fail(f"switching users needs root, and {REQUIRE_ROOT_ENV}=1 requires this test")
    pytest.skip("switching users needs root")


# Arbitrary ids no real account uses: setuid() needs no passwd entry.
SERVICE, AUDITOR, STRANGER = 40100, 40101, 40102
SERVICE_UMASK = 0o027  # the systemd unit's UMask=
CHILD_TIMEOUT_S = 30  # each role's work takes well under a second


def as_user(uid: int, groups: list[int], work: Callable[[], Any], umask: int = 0o022) -> Any:
    """Run `work` in a forked child under `uid` (primary group groups[0]); return its result.

    An exception in the child comes back as {"error": "<type>: <message>"}.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(groups[0])
            os.setuid(uid)
            os.umask(umask)
            try:
                result: Any = work()
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(result, default=str).encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    data = read_until_closed(read_end, pid)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"child for uid {uid} failed (status {status})"
    return json.loads(data)


def read_until_closed(fd: int, pid: int) -> bytes:
    """Everything a child writes to its pipe; a child silent for too long is killed
    and fails the test (a fork can inherit a lock another thread held)."""
    data = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], CHILD_TIMEOUT_S)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"child {pid} silent for {CHILD_TIMEOUT_S} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
    finally:
        os.close(fd)


def run_cli(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(list(argv))
    return {"code": code, "out": out.getvalue()}


@pytest.fixture
def appliance():
    """A gateway running as SERVICE under umask 0027, holding three events."""
    base = Path(tempfile.mkdtemp(prefix="gateway-access-"))
    os.chown(base, SERVICE, SERVICE)
    base.chmod(0o755)
    config = Config(state_dir=base / "state", ingest=IngestConfig(listen=("127.0.0.1:0",)))
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the service: runs until SIGTERM
        status = 1
        try:
            os.close(ready_r)
            os.setgroups([SERVICE])
            os.setgid(SERVICE)
            os.setuid(SERVICE)
            os.umask(SERVICE_UMASK)
            gw = Gateway(config)
            port = gw.start()[0][1]
            os.write(ready_w, str(port).encode())
            os.close(ready_w)  # end of file for the test: the port is complete
            status = gw.run()
        finally:
            os._exit(status)
    os.close(ready_w)
    try:
        port = int(read_until_closed(ready_r, pid) or 0)
        assert port, "the gateway did not start"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b'{"hello":{"app":"crm","ack":true}}\n')
            for n in range(3):
                event = {"event_type": "audit", "user_id": f"u{n}", "action": "update"}
                c.sendall(json.dumps(event).encode() + b"\n")
            replies = b""
            while replies.count(b"\n") < 4:
                chunk = c.recv(4096)
                assert chunk, f"connection closed after {replies!r}"
                replies += chunk
        yield config
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        for path in sorted(base.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
        base.rmdir()


def test_an_auditor_in_the_service_group_reads_everything_and_prints_nothing(appliance):
    state = str(appliance.state_dir)
    sock = appliance.control_path

    def auditor() -> dict[str, Any]:
        query = run_cli("query", "--state", state, "--format", "jsonl")
        return {
            "verify": run_cli("verify", "--state", state),
            "query_rows": [json.loads(x) for x in query["out"].splitlines() if x.startswith("{")],
            "query_code": query["code"],
            "show": run_cli("show", "--state", state, "2"),
            "export": run_cli("export", "--state", state),
            "status": control.request(sock, {"cmd": "status"}),
            "reprint": control.request(sock, {"cmd": "reprint"}),
        }

    seen = as_user(AUDITOR, [AUDITOR, SERVICE], auditor)
    assert seen["verify"]["code"] == 0 and seen["verify"]["out"].startswith("ok:"), seen["verify"]
    assert seen["query_code"] == 0
    users = [r["event"]["user_id"] for r in seen["query_rows"] if r["kind"] == "event"]
    assert sorted(users) == ["u0", "u1", "u2"], seen["query_rows"]
    assert seen["show"]["code"] == 0 and '"u0"' in seen["show"]["out"], seen["show"]
    assert seen["export"]["code"] == 0 and seen["export"]["out"].count('"user_id"') == 3
    assert seen["status"]["ok"] and seen["status"]["status"]["ledger"]["head_seq"] >= 4
    assert seen["reprint"] == {
        "ok": False,
        "error": "not permitted: this user may only read (status)",
    }
    # The service's own user and root may act (here: no printer, so the spool says so).
    assert control.request(sock, {"cmd": "reprint"})["error"] == "no printers are configured"


def test_a_user_outside_the_group_can_neither_read_nor_connect(appliance):
    state = str(appliance.state_dir)

    def stranger() -> dict[str, Any]:
        try:
            control.request(appliance.control_path, {"cmd": "status"})
            status = "answered"
        except PermissionError:
            status = "denied"
        return {"status": status, "verify": run_cli("verify", "--state", state)}

    seen = as_user(STRANGER, [STRANGER], stranger)
    assert "error" not in seen, seen
    assert seen["status"] == "denied"
    assert seen["verify"]["code"] != 0 and "ermission" in seen["verify"]["out"], seen["verify"]

"""A real rsyslog forwarding to a real `gateway run`: omfwd over TCP, octet-counted, RFC 5424.

`logger` (util-linux) sends RFC 5424 messages into rsyslogd's imtcp input;
rsyslogd forwards them with the documented omfwd action (docs/syslog.md) to
the gateway's `ingest.syslog.listen` port. rsyslogd runs in the foreground
with its own configuration, pid file and work directory under tmp_path, and
loads no imuxsock: the system's syslog is not touched. `make test-syslog`
installs rsyslog (as root); without rsyslogd this test fails, it never skips.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from gatewayproc import GatewayProcess, free_port, run_gateway_command, wait_for

from gateway.ingest.validate import is_rfc3339

pytestmark = pytest.mark.syslog

# rsyslogd loads its modules and binds imtcp in well under a second; 15 s
# bounds a loaded 2-core machine.
START_TIMEOUT_S = 15.0
# Everything sent is on loopback: it arrives within milliseconds once rsyslog's
# forwarding connection is up; 30 s bounds rsyslog's action retry on a slow
# machine (it retries a failed connection after a few seconds).
ARRIVAL_TIMEOUT_S = 30.0
# A SIGTERM'd rsyslogd flushes its queues and exits well within this.
STOP_TIMEOUT_S = 15.0

MESSAGES = 50
# Sent as an SD-PARAM value with all three escapes RFC 5424 defines.
NOTE_SENT = r"q\"u\\o\]te"
NOTE_STORED = 'q"u\\o]te'

FORWARD = """\
# The gateway's syslog listener: RFC 5424 over TCP, octet-counted framing.
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       action.resumeRetryCount="-1")
"""


def binary(name: str, package: str) -> str:
    for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if path and Path(path).is_file():
            return path
    raise AssertionError(
        f"{name} not found: install the Debian package {package} "
        "(`make test-syslog` does so when run as root)"
    )


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Rsyslogd:
    """One foreground rsyslogd: imtcp on a free loopback port, forwarding to `forward_port`."""

    def __init__(self, root: Path, forward_port: int) -> None:
        self.dir = root / "rsyslog"
        (self.dir / "work").mkdir(parents=True)
        self.port = free_port()
        self.own_log = self.dir / "rsyslogd.log"
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(
            # processInternalMessages: rsyslog's own messages go to rsyslogd.log
            # below instead of to the system's /dev/log.
            f'global(workDirectory="{self.dir / "work"}" processInternalMessages="on")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="forward")\n'
            'ruleset(name="forward") {\n'
            f"{FORWARD.format(port=forward_port)}"
            "}\n"
            f'action(type="omfile" file="{self.own_log}")\n',
            encoding="utf-8",
        )
        self.stderr = self.dir / "rsyslogd.stderr"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    binary("rsyslogd", "rsyslog"),
                    "-n",
                    "-f",
                    str(self.conf),
                    "-i",
                    str(self.dir / "rsyslogd.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not listening(self.port):
            code = self.proc.poll()
            assert code is None, f"rsyslogd exited with {code}\n{self.log_text()}"
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"rsyslogd not listening after {START_TIMEOUT_S:g} s")
            time.sleep(0.05)

    def log_text(self) -> str:
        parts = []
        for path in (self.stderr, self.own_log):
            try:
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def logger(port: int, *args: str, stdin: str | None = None) -> None:
    """util-linux logger: RFC 5424 over TCP into rsyslog's imtcp input."""
    command = [binary("logger", "bsdutils"), "--tcp", "-n", "127.0.0.1", "-P", str(port)]
    result = subprocess.run(
        [*command, "--rfc5424", "--octet-count", *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"logger failed: {result.stderr}"


def syslog_events(entries: list[dict]) -> list[dict]:
    return [
        e["event"]
        for e in entries
        if e["kind"] == "event" and e["event"].get("event_type") == "syslog"
    ]


@pytest.fixture
def make_chain(tmp_path):
    """make_chain(**ingest) -> (gateway, rsyslogd, the gateway's syslog port)."""
    started: list = []

    def make(**ingest) -> tuple[GatewayProcess, Rsyslogd, int]:
        syslog_port = free_port()
        ingest = {"syslog": {"listen": [f"127.0.0.1:{syslog_port}"]}, **ingest}
        gw = GatewayProcess(tmp_path, ingest=ingest)
        started.append(gw)
        rs = Rsyslogd(tmp_path, syslog_port)
        started.append(rs)
        return gw, rs, syslog_port

    yield make
    for process in reversed(started):  # rsyslogd first: it forwards to the gateway
        if isinstance(process, Rsyslogd):
            process.stop()
        else:
            process.close()


@pytest.fixture
def chain(make_chain):
    return make_chain()


def test_rsyslog_forwards_rfc5424_messages_that_arrive_with_every_field(chain):
    gw, rs, _ = chain
    lines = "".join(f"order {i} printed\n" for i in range(MESSAGES))
    logger(
        rs.port,
        "-t",
        "shop",
        "-p",
        "local3.warning",
        "--id=4242",
        "--msgid",
        "ORD",
        "--sd-id",
        "order@32473",
        "--sd-param",
        'till="3"',
        "--sd-param",
        f'note="{NOTE_SENT}"',
        stdin=lines,
    )
    logger(rs.port, "--rfc5424=notq,nohost", "-t", "till", "-p", "user.err", "ça marche")

    def arrived(entries: list[dict]) -> bool:
        return len(syslog_events(entries)) >= MESSAGES + 1

    try:
        entries = gw.wait_export(arrived, ARRIVAL_TIMEOUT_S, f"{MESSAGES + 1} syslog events")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rs.log_text()}\n{gw.log_text()}") from None
    events = syslog_events(entries)
    assert len(events) == MESSAGES + 1
    shop = [e for e in events if e["app_name"] == "shop"]
    assert [e["msg"] for e in shop] == [f"order {i} printed" for i in range(MESSAGES)]
    host = socket.gethostname()
    for e in shop:
        assert (e["facility"], e["severity"]) == (19, 4)  # local3.warning
        assert e["hostname"] in (host, host.split(".")[0])
        assert (e["procid"], e["msgid"]) == ("4242", "ORD")
        assert is_rfc3339(e["timestamp"]), e["timestamp"]
        assert e["structured_data"]["order@32473"] == {"till": "3", "note": NOTE_STORED}
        assert "timeQuality" in e["structured_data"]  # logger's own SD-ELEMENT
    (till,) = [e for e in events if e["app_name"] == "till"]
    assert (till["facility"], till["severity"], till["hostname"]) == (1, 3, None)
    assert (till["structured_data"], till["procid"], till["msgid"]) == ({}, None, None)
    assert till["msg"] == "ça marche"
    sources = {(e["source"]["addr"], e["source"]["app"]) for e in entries if e["kind"] == "event"}
    assert sources == {("127.0.0.1", None)}
    assert [e for e in entries if e["kind"] == "rejected"] == []
    code, result = gw.verify()
    assert code == 0, result


def test_malformed_messages_sent_by_hand_are_stored_as_rejected(chain):
    gw, rs, syslog_port = chain
    bad_time = b"<13>1 yesterday host app - - - hello"
    bsd = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed"
    with socket.create_connection(("127.0.0.1", syslog_port), timeout=10) as sock:
        sock.sendall(b"%d %s" % (len(bad_time), bad_time) + bsd + b"\n")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # no reply, ever: the gateway only closes
    # And rsyslog's forwarding still works beside it.
    logger(rs.port, "-t", "after", "still fine")

    def stored(entries: list[dict]) -> bool:
        rejected = [e for e in entries if e["kind"] == "rejected"]
        return len(rejected) >= 2 and any(e["app_name"] == "after" for e in syslog_events(entries))

    entries = gw.wait_export(stored, ARRIVAL_TIMEOUT_S, "2 rejected entries and 1 event")
    rejected = [e for e in entries if e["kind"] == "rejected"]
    assert [(e["reason"], e["excerpt"], e["length"]) for e in rejected] == [
        ("bad_syslog", bad_time.decode(), len(bad_time)),
        ("bad_syslog", bsd.decode(), len(bsd)),
    ]
    assert rejected[0]["detail"].startswith("TIMESTAMP:")
    assert rejected[1]["detail"].startswith("VERSION:")
    assert all(e["source"]["app"] is None for e in rejected)


def test_messages_after_the_gateway_closed_an_idle_connection_still_arrive(make_chain):
    # rsyslog keeps one connection; the gateway closes it after idle_timeout_s.
    # rsyslog must notice the close and reconnect, not lose the next message.
    gw, rs, _ = make_chain(idle_timeout_s=1)
    logger(rs.port, "-t", "before", "one")
    gw.wait_export(
        lambda entries: [e["app_name"] for e in syslog_events(entries)] == ["before"],
        ARRIVAL_TIMEOUT_S,
        "the first message",
    )

    def connections() -> int:
        result = run_gateway_command("status", "--json", "--config", str(gw.config_path))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["connections"]

    # The idle sweep runs every 0.5 s at this timeout: closed within ~2 s.
    wait_for(lambda: connections() == 0, 10.0, "the idle syslog connection to be closed")
    for i in range(3):
        logger(rs.port, "-t", "after", f"message {i}")
    entries = gw.wait_export(
        lambda entries: len(syslog_events(entries)) >= 4, ARRIVAL_TIMEOUT_S, "4 syslog events"
    )
    assert [e["msg"] for e in syslog_events(entries)] == [
        "one",
        "message 0",
        "message 1",
        "message 2",
    ]

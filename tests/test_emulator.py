"""The port-9100 printer emulator: jobs as files, one connection at a time, every fault.

Real sockets on 127.0.0.1. Every wait is bounded: TIMEOUT for what must happen, QUIET
for confirming that something does not happen.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.printing.emulator import (
    SLOW_CHUNK,
    SLOW_INTERVAL,
    Emulator,
    Fault,
    build_parser,
    main,
)

# Upper bound for anything that must happen; generous because the machine may be busy.
TIMEOUT = 10.0
# How long a test watches to confirm that something does not happen.
QUIET = 0.3
# Send buffer of the stall test's sender: far below the 4 MiB it tries to send.
SENDER_SNDBUF = 256 * 1024
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(tmp_path / "jobs") as emu:
        yield emu


def connect(emu: Emulator, timeout: float = TIMEOUT) -> socket.socket:
    return socket.create_connection(("127.0.0.1", emu.port), timeout=timeout)


def finish(sock: socket.socket) -> None:
    """End the job and wait for the printer's EOF, as CUPS' socket backend does with waiteof."""
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(1) == b""


def print_job(emu: Emulator, data: bytes) -> None:
    with connect(emu) as sock:
        sock.sendall(data)
        finish(sock)


def files(emu: Emulator) -> list[str]:
    """Every file in the job directory, temporary ones included (there should be none)."""
    return sorted(path.name for path in emu.out_dir.iterdir())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_job_round_trip(emulator: Emulator) -> None:
    payload = os.urandom(300 * 1024)
    print_job(emulator, payload)
    # No waiting: the job is saved before the emulator closes its side.
    assert emulator.jobs() == [payload]
    assert files(emulator) == ["job-000001.bin"]
    assert (emulator.out_dir / "job-000001.bin").read_bytes() == payload
    assert emulator.connections == 1


def test_jobs_are_numbered_in_sequence(emulator: Emulator) -> None:
    print_job(emulator, b"first receipt\n")
    print_job(emulator, b"second receipt\n")
    assert files(emulator) == ["job-000001.bin", "job-000002.bin"]
    assert emulator.wait_jobs(2, timeout=0) == [b"first receipt\n", b"second receipt\n"]


def test_numbering_continues_after_earlier_runs(tmp_path: Path) -> None:
    (tmp_path / "job-000007.partial").write_bytes(b"from an earlier run")
    with Emulator(tmp_path) as emu:
        print_job(emu, b"new")
        assert emu.jobs() == [b"new"]
        assert (tmp_path / "job-000008.bin").read_bytes() == b"new"


def test_a_connection_without_data_is_not_a_job(emulator: Emulator) -> None:
    with connect(emulator) as sock:
        finish(sock)
    assert emulator.connections == 1
    assert emulator.jobs() == []
    assert files(emulator) == []


def test_one_job_at_a_time(emulator: Emulator) -> None:
    with connect(emulator) as first:
        first.sendall(b"first ")
        wait_until(lambda: emulator.connections == 1, "the first connection")
        with connect(emulator) as second:  # completes its handshake in the backlog
            second.sendall(b"second")
            second.shutdown(socket.SHUT_WR)
            second.settimeout(QUIET)
            with pytest.raises(TimeoutError):
                second.recv(1)  # not served, so no EOF
            assert emulator.wait_jobs(1, timeout=QUIET) == []
            assert emulator.connections == 1

            first.sendall(b"job")
            finish(first)
            second.settimeout(TIMEOUT)
            assert second.recv(1) == b""
    assert emulator.wait_jobs(2, timeout=TIMEOUT) == [b"first job", b"second"]
    assert emulator.connections == 2


def test_reset_after(emulator: Emulator) -> None:
    emulator.set_fault(Fault.parse("reset-after=10,times=1"))
    with connect(emulator) as sock:
        sock.sendall(b"0123456789" + b"x" * 1000)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.recv(1)
    assert files(emulator) == ["job-000001.partial"]
    assert (emulator.out_dir / "job-000001.partial").read_bytes() == b"0123456789"
    assert emulator.jobs() == []
    # times=1: the next connection is served normally.
    print_job(emulator, b"next")
    assert emulator.jobs() == [b"next"]
    assert files(emulator) == ["job-000001.partial", "job-000002.bin"]


@pytest.mark.parametrize("from_start", [True, False], ids=["from-start", "set-later"])
def test_refuse(tmp_path: Path, from_start: bool) -> None:
    # times does not end a refusal: nothing reaches the emulator to be counted.
    refuse = Fault.parse("refuse,times=1")
    with Emulator(tmp_path, fault=refuse if from_start else Fault()) as emu:
        if not from_start:
            emu.set_fault(refuse)
        port = emu.port
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        emu.set_fault(Fault())
        assert emu.port == port
        print_job(emu, b"after the refusal")
        assert emu.jobs() == [b"after the refusal"]
        assert emu.connections == 1


def test_stall(emulator: Emulator) -> None:
    emulator.set_fault(Fault.parse("stall"))
    payload = os.urandom(4 * 1024 * 1024)
    view = memoryview(payload)
    with connect(emulator, timeout=1.0) as sock:
        # A fixed send buffer: autotuning grows it up to net.ipv4.tcp_wmem's maximum, which
        # on some hosts would swallow all 4 MiB even though the printer reads nothing.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SENDER_SNDBUF)
        # sendall() with the 1 s timeout, written out with send() to know where it stopped.
        sent = 0
        with pytest.raises(TimeoutError):
            while sent < len(payload):
                sent += sock.send(view[sent:])
        assert emulator.wait_jobs(1, timeout=0) == []
        emulator.set_fault(Fault())
        sock.settimeout(TIMEOUT)
        sock.sendall(view[sent:])
        finish(sock)
    assert emulator.jobs() == [payload]


def test_slow(emulator: Emulator) -> None:
    emulator.set_fault(Fault.parse("slow"))
    payload = os.urandom(2048)
    started = time.monotonic()
    print_job(emulator, payload)
    elapsed = time.monotonic() - started
    assert emulator.jobs() == [payload]
    reads = len(payload) // SLOW_CHUNK
    assert elapsed >= (reads - 1) * SLOW_INTERVAL


def test_close_before_read(emulator: Emulator) -> None:
    emulator.set_fault(Fault.parse("close-before-read,times=1"))
    with connect(emulator) as sock:
        assert sock.recv(1) == b""  # a FIN straight after the accept
    assert emulator.connections == 1
    assert files(emulator) == []
    print_job(emulator, b"second try")
    assert emulator.jobs() == [b"second try"]
    assert files(emulator) == ["job-000001.bin"]


def test_job_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    payload = os.urandom(5000)
    with Emulator(tmp_path, max_job_bytes=1000) as emu:
        with connect(emu) as sock, pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.sendall(payload)
            sock.recv(1)
        assert files(emu) == ["job-000001.partial"]
        assert (tmp_path / "job-000001.partial").read_bytes() == payload[:1000]
        print_job(emu, payload[:1000])  # exactly at the limit is fine
        assert emu.jobs() == [payload[:1000]]


def test_stop_cuts_the_active_job_and_start_reopens_the_port(tmp_path: Path) -> None:
    emu = Emulator(tmp_path)
    emu.start()
    try:
        port = emu.port
        with connect(emu) as sock:
            sock.sendall(b"abc")
            wait_until(lambda: emu.connections == 1, "the connection")
            emu.stop()
            # A reset, not an EOF: the sender must not think the job was printed.
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
        assert files(emu) == ["job-000001.partial"]
        assert b"abc".startswith((tmp_path / "job-000001.partial").read_bytes())
        assert emu.jobs() == []

        emu.start()
        assert emu.port == port
        print_job(emu, b"after the restart")
        assert emu.jobs() == [b"after the restart"]
    finally:
        emu.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", Fault()),
        ("refuse", Fault("refuse")),
        ("stall", Fault("stall")),
        ("slow", Fault("slow")),
        ("close-before-read", Fault("close-before-read")),
        ("reset-after=100", Fault("reset-after", after_bytes=100)),
        ("reset-after=0", Fault("reset-after", after_bytes=0)),
        ("reset-after=100,times=1", Fault("reset-after", after_bytes=100, times=1)),
        ("stall,times=3", Fault("stall", times=3)),
        (" slow , times = 2 ", Fault("slow", times=2)),
    ],
)
def test_fault_parse(text: str, expected: Fault) -> None:
    assert Fault.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown fault"),
        ("on-fire", "unknown fault"),
        ("Stall", "unknown fault"),
        ("reset-after", "needs a byte count"),
        ("reset-after=", "whole number"),
        ("reset-after=-1", "whole number"),
        ("reset-after=1e3", "whole number"),
        ("stall=5", "takes no value"),
        ("stall,times=0", "1 or more"),
        ("stall,times=two", "whole number"),
        ("stall,times", "only times=N"),
        ("stall,count=1", "only times=N"),
        ("stall,times=1,times=2", "more than once"),
    ],
)
def test_fault_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault.parse(text)


def test_fault_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("bogus")
    with pytest.raises(ValueError, match="only applies to reset-after"):
        Fault("stall", after_bytes=10)
    with pytest.raises(ValueError, match="1 or more"):
        Fault("slow", times=0)


def test_command_line_arguments() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.out, args.fault) == (
        "127.0.0.1",
        9100,
        Path("var/emulator"),
        Fault(),
    )
    argv = ["--host", "::1", "--port", "0", "--out", "/tmp/x", "--fault", "reset-after=5,times=2"]
    args = build_parser().parse_args(argv)
    assert (args.host, args.port, args.out, args.fault) == (
        "::1",
        0,
        Path("/tmp/x"),
        Fault("reset-after", after_bytes=5, times=2),
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fault", "on-fire"], "unknown fault 'on-fire'"),
        (["--port", "70000"], "not a TCP port"),
        (["--port", "http"], "not a TCP port"),
    ],
)
def test_command_line_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_line_serves_until_signalled(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "jobs"
    command = [sys.executable, "-W", "error", "-m", "gateway.printing.emulator"]
    command += ["--port", "0", "--out", str(out)]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
            assert ready, "the emulator printed nothing"
            line = proc.stdout.readline().decode()
            match = re.fullmatch(r"emulating a printer on 127\.0\.0\.1:(\d+), jobs in (.+)\n", line)
            assert match, line
            assert match.group(2) == str(out)
            with socket.create_connection(("127.0.0.1", int(match.group(1))), TIMEOUT) as sock:
                sock.sendall(b"receipt")
                finish(sock)
            proc.send_signal(signum)
            assert proc.wait(TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
        assert proc.stderr.read() == b""
    assert (out / "job-000001.bin").read_bytes() == b"receipt"

"""Integration test support: the real `gateway run` process on a loopback port.

GatewayProcess writes a YAML configuration (state in the test's tmp_path, a
free 127.0.0.1 port), starts `sys.executable -m gateway run --config ...` with
its output in files, and waits (bounded) until the port accepts connections.
AckClient is a minimal acknowledged-mode client over a plain socket.

Every wait here polls against a deadline; nothing sleeps to "let things settle".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

# Shared with the benchmarks; re-exported for the tests that import them from here.
from bench.harness import free_port, gateway_command, wait_for  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

START_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
POLL_S = 0.02


def run_gateway_command(*args: str, timeout: float = COMMAND_TIMEOUT_S, **kwargs: Any):
    """Run a short-lived `gateway ...` command; returns the CompletedProcess."""
    return subprocess.run(
        gateway_command(*args),
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class GatewayProcess:
    """`gateway run` in a subprocess with its own state directory and port."""

    def __init__(
        self, tmp_path: Path, env: dict[str, str] | None = None, **config_overrides: Any
    ) -> None:
        self.tmp_path = Path(tmp_path)
        self.env = env  # extra environment variables for the process
        self.state_dir = self.tmp_path / "state"
        self.port = free_port()
        base = {
            "state_dir": str(self.state_dir),
            "ingest": {"listen": [f"127.0.0.1:{self.port}"]},
            "log": {"level": "info"},
            # Test machines often have no NTP state; tests/test_clock.py covers it.
            "clock": {"check_sync": False},
        }
        self.config = _merge(base, config_overrides)
        self.config_path = self.tmp_path / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.stdout_path = self.tmp_path / "gateway.stdout.log"
        self.stderr_path = self.tmp_path / "gateway.stderr.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    # ---- life cycle

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running, "the gateway is already running"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **self.env} if self.env else None,
            )
        self._wait_ready()

    def command(self) -> list[str]:
        """The command line started; a subclass may wrap it (tests/crashsim.py: strace)."""
        return gateway_command("run", "--config", str(self.config_path))

    def signal_pid(self) -> int:
        """The process that signals go to: the gateway itself, not a wrapper."""
        return self.pid

    def _wait_ready(self) -> None:
        """Poll until the port accepts a connection and the gateway handles it."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"gateway exited with {code} during start-up\n{self.log_text()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(
                    f"gateway not accepting on port {self.port} after {START_TIMEOUT_S:g} s\n"
                    f"{self.log_text()}"
                )
            try:
                probe = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            except OSError:
                time.sleep(POLL_S)
                continue
            # Half-close and wait for the gateway to close its side: the probe
            # connection is then gone and does not count against max_connections.
            with probe:
                probe.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    probe.shutdown(socket.SHUT_WR)
                    data = probe.recv(4096)
                except OSError as exc:
                    raise AssertionError(
                        f"start-up probe failed: {exc!r}\n{self.log_text()}"
                    ) from None
                assert data == b"", f"the gateway answered an empty connection with {data!r}"
            return

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig` and wait for the exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.signal_pid(), sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"gateway did not exit within {timeout:g} s of signal {sig}\n{self.log_text()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL and reap."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def restart(self) -> None:
        """Stop (SIGTERM) if running, then start again on the same port and state."""
        if self.running:
            code = self.stop()
            assert code == 0, f"gateway exited with {code} on restart\n{self.log_text()}"
        self.start()

    # ---- looking at it

    def log_text(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                text = ""
            parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)

    def log_records(self) -> list[dict]:
        """The JSON log lines on stdout, parsed (other lines are skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.stdout_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def export(self, *args: str) -> list[dict]:
        """`gateway export --config ...`, one dict per ledger entry."""
        result = run_gateway_command("export", "--config", str(self.config_path), *args)
        assert result.returncode == 0, (
            f"export exited with {result.returncode}: {result.stderr.decode(errors='replace')}"
        )
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def status(self) -> dict:
        """`gateway status --json` of the running gateway."""
        result = run_gateway_command("status", "--json", "--config", str(self.config_path))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def verify(self) -> tuple[int, dict]:
        """`gateway verify --json`: (exit code, parsed result)."""
        result = run_gateway_command("verify", "--json", "--config", str(self.config_path))
        try:
            data = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(
                f"verify printed no JSON (exit {result.returncode}): "
                f"{result.stdout!r} {result.stderr!r}"
            ) from None
        return result.returncode, data

    def wait_export(
        self, predicate: Callable[[list[dict]], Any], timeout: float = 10.0, what: str = "export"
    ) -> list[dict]:
        """Poll export until `predicate(entries)` holds; returns those entries."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.export()
            if predicate(entries):
                return entries
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}; "
                    f"export has {len(entries)} entries, last: {entries[-3:]}"
                )
            time.sleep(0.05)

    def close(self) -> int | None:
        """Teardown: SIGTERM if still running; returns its exit code (None if not started)."""
        if self.proc is None:
            return None
        return self.stop()


class ReplyTimeout(AssertionError):
    pass


class AckClient:
    """A client in acknowledged mode: sends the hello, then lines; reads JSON replies."""

    def __init__(
        self,
        port: int,
        app: str | None = "test",
        *,
        timeout: float = 10.0,
        ack: bool = True,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so that the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
        except OSError:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.eof = False
        hello: dict[str, Any] = {"ack": ack}
        if app is not None:
            hello["app"] = app
        self.sock.sendall(json.dumps({"hello": hello}).encode() + b"\n")
        # The first reply: {"hello": {...}} or an error (too many connections).
        self.hello: dict = self.read_replies(1, timeout)[0]

    def __enter__(self) -> AckClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_lines(self, lines: Iterable[bytes]) -> None:
        """Send every line (a newline is added where missing) in one sendall."""
        self.sock.sendall(
            b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        )

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, deadline: float) -> bool:
        """One recv into the buffer; False at EOF. Raises ReplyTimeout past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyTimeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise ReplyTimeout("deadline passed") from None
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def read_line(self, timeout: float) -> bytes | None:
        """The next reply line (without newline), or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self.eof or not self._recv(deadline):
                return None

    def read_replies(self, n: int, timeout: float = 10.0) -> list[dict]:
        """Exactly `n` parsed replies within `timeout` seconds (AssertionError otherwise)."""
        deadline = time.monotonic() + timeout
        replies: list[dict] = []
        while len(replies) < n:
            try:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
            except ReplyTimeout:
                raise ReplyTimeout(
                    f"got {len(replies)} of {n} replies within {timeout:g} s; last: {replies[-3:]}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"connection closed after {len(replies)} of {n} replies; last: {replies[-3:]}"
                )
            replies.append(json.loads(line))
        return replies

    def read_until_eof(self, timeout: float = 10.0) -> list[dict]:
        """Every reply until the gateway closes the connection (or resets it)."""
        deadline = time.monotonic() + timeout
        replies: list[dict] = []
        while True:
            try:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
            except ReplyTimeout:
                raise ReplyTimeout(
                    f"no EOF within {timeout:g} s after {len(replies)} replies"
                ) from None
            except ConnectionResetError:
                self.eof = True
                return replies
            if line is None:
                return replies
            replies.append(json.loads(line))

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


def event(**fields: Any) -> dict:
    """A well-formed event (event_type and an RFC 3339 timestamp) plus `fields`."""
    return {"event_type": "test_event", "timestamp": "2026-11-23T10:00:00Z", **fields}


def event_line(**fields: Any) -> bytes:
    return json.dumps(event(**fields), separators=(",", ":")).encode() + b"\n"


# ---- streaming acknowledged clients (end-to-end, fault and crash tests)


def by_seq(entries: list[dict]) -> dict[int, dict]:
    return {e["seq"]: e for e in entries}


def assert_verify_ok(gw: GatewayProcess) -> dict:
    code, result = gw.verify()
    assert code == 0 and result["ok"], f"verify failed: {result}"
    return result


class Streamer:
    """An acknowledged client streaming events from a writer thread while a
    reader thread collects replies, until told to stop or the connection ends.

    With a `window`, like a real pipelining client, it keeps at most that many
    events unacknowledged, so the ledger grows with the gateway's pace rather
    than with the socket buffers; without one it writes as fast as it can.
    When the gateway closes the connection the client stops writing.
    """

    CHUNK = 50

    def __init__(
        self, port: int, index: int, window: int | None = 500, rcvbuf: int | None = None
    ) -> None:
        self.index = index
        self.window = window
        self.client = AckClient(port, app=f"stream{index}", timeout=30.0, rcvbuf=rcvbuf)
        assert "hello" in self.client.hello, self.client.hello
        self.sent = 0
        self.replies: list[dict] = []
        self.reader_error: BaseException | None = None
        self.stopping = threading.Event()
        self.progress = threading.Condition()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer.start()
        self.reader.start()

    def line(self, n: int) -> bytes:
        return event_line(client=self.index, n=n)

    def expected(self, n: int) -> dict:
        return event(client=self.index, n=n)

    def _write(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.window is not None:
                    with self.progress:
                        if self.sent - len(self.replies) + self.CHUNK > self.window:
                            self.progress.wait(0.1)
                            continue
                chunk = b"".join(self.line(self.sent + k) for k in range(self.CHUNK))
                self.client.sock.sendall(chunk)
                self.sent += self.CHUNK
            self.client.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the gateway went away: expected when it is stopped or killed

    def _read(self) -> None:
        try:
            while True:
                try:
                    line = self.client.read_line(30.0)
                except (ConnectionResetError, BrokenPipeError):
                    return
                if line is None:
                    return
                with self.progress:
                    self.replies.append(json.loads(line))
                    self.progress.notify()
        except BaseException as exc:  # reported by finish()
            self.reader_error = exc
        finally:
            self.stopping.set()  # the gateway closed: stop writing, like a real client

    def finish(self, timeout: float = 15.0) -> None:
        """Stop writing, wait for both threads (bounded), close the socket."""
        self.stopping.set()
        self.reader.join(timeout)
        assert not self.reader.is_alive(), f"client {self.index}: no EOF within {timeout:g} s"
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)  # unblocks a writer stuck in sendall
        except OSError:
            pass
        self.writer.join(timeout)
        assert not self.writer.is_alive(), f"client {self.index}: writer did not stop"
        self.client.close()
        assert self.reader_error is None, f"client {self.index}: {self.reader_error!r}"

    def acked(self) -> list[int]:
        return [r["seq"] for r in self.replies]


def check_streamed(streamers: list[Streamer], entries: list[dict]) -> set[int]:
    """Every acknowledged seq is in `entries` with the event that reply stands for."""
    index = by_seq(entries)
    all_seqs: set[int] = set()
    for s in streamers:
        assert all(r.get("ok") is True for r in s.replies), (
            f"client {s.index}: non-ok replies {[r for r in s.replies if not r.get('ok')][:3]}"
        )
        seqs = s.acked()
        assert seqs == sorted(set(seqs)), f"client {s.index}: seqs not strictly increasing"
        assert not all_seqs & set(seqs), "the same seq was acknowledged to two clients"
        all_seqs |= set(seqs)
        for n, seq in enumerate(seqs):
            entry = index.get(seq)
            assert entry is not None, (
                f"client {s.index}: acknowledged seq {seq} missing from export"
            )
            assert entry["kind"] == "event", entry
            assert entry["event"] == s.expected(n), (
                f"seq {seq}: {entry['event']} != {s.expected(n)}"
            )
            assert entry["source"]["app"] == f"stream{s.index}"
    return all_seqs

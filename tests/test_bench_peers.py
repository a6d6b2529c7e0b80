"""The peer benchmark's own pieces: the naive listener baseline and the RELP client.

The naive listener runs as its real process; the RELP client (bench.relp) talks to
a small RELP server written here, with its own frame reader (not the client's
parser), so that a framing mistake on either side shows up as a mismatch. No
rsyslog is needed and nothing here asserts on timing.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gatewayproc import ROOT, wait_for

from bench.relp import TXNR_MAX, RelpConn, RelpError, RelpParser, frame, run_relp

# Bound on any single wait in these tests (a process start, a file filling up).
WAIT_S = 15.0
# The fake server answers once the client has sent nothing more for this long: a
# client sends its whole window in one send(), so this only has to outlast loopback.
IDLE_S = 0.2


# ---------------------------------------------------------------- the naive listener


def start_naive(out: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baselines.naive_listener", "--port", "0", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT_S)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate(timeout=WAIT_S)
        pytest.fail(f"naive listener did not start: {line!r} {err[-1000:]!r}")
    return proc, int(line.rsplit(":", 1)[1])


def test_naive_listener_stores_two_clients_one_after_the_other(tmp_path):
    out = tmp_path / "out.jsonl"
    proc, port = start_naive(out)
    try:
        first = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        first.sendall(b'{"client":1,"n":1}\n{"client":1,"n":2}\n')
        wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") == 2, WAIT_S, "2 lines")
        # The second client connects and sends everything while the first is still
        # connected: it waits in the kernel's queue until the first one is done.
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as second:
            second.sendall('{"client":2,"n":1,"name":"Zoë"}\nnot json\n{"client":2,"n":2}'.encode())
        first.sendall(b'{"client":1,"n":3}\n')
        first.close()
        expected = (
            b'{"client":1,"n":1}\n{"client":1,"n":2}\n{"client":1,"n":3}\n'
            + '{"client":2,"n":1,"name":"Zoë"}\n{"client":2,"n":2}\n'.encode()
        )
        wait_for(lambda: out.read_bytes() == expected, WAIT_S, "both clients' lines")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0


# ---------------------------------------------------------------- a fake RELP server


OPEN_OK = b"200 OK\nrelp_version=0\nrelp_software=fake-relp\ncommands=syslog"


class Wire:
    """Reads RELP frames off a blocking socket, independently of bench.relp."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _token(self, stops: bytes) -> tuple[bytes, int]:
        """Bytes up to the first of `stops`, and that stop byte."""
        while True:
            for i, b in enumerate(self.buf):
                if b in stops:
                    token, stop, self.buf = self.buf[:i], b, self.buf[i + 1 :]
                    return token, stop
            self._more()

    def frame(self) -> tuple[int, bytes, bytes]:
        txnr, _ = self._token(b" ")
        command, _ = self._token(b" ")
        datalen, stop = self._token(b" \n")
        data = b""
        if stop == ord(" "):
            data = self._take(int(datalen))
            if self._take(1) != b"\n":
                raise ValueError(f"no trailer after {datalen.decode()} bytes of {data!r}")
        elif int(datalen) != 0:
            raise ValueError(f"DATALEN {datalen!r} without DATA")
        return int(txnr), command, data

    def idle(self) -> bool:
        """Nothing buffered and nothing arrives within IDLE_S."""
        return not self.buf and not select.select([self.sock], [], [], IDLE_S)[0]


@dataclass
class Session:
    offers: bytes = b""
    txnrs: list[int] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    max_unanswered: int = 0
    close_txnr: int | None = None
    error: str | None = None


class FakeRelp:
    """Serves `conns` RELP sessions, each on its own thread.

    Holds its answers until the client stops sending (IDLE_S), so max_unanswered
    is what the client sent without waiting for an answer: its window if it
    pipelines, 1 if it does not, more if it overruns. `answer(txnr)` makes the
    bytes of each answer; with `cut`, the server sends only the first and closes."""

    def __init__(self, conns: int, answer=None, open_answer: bytes = OPEN_OK,
                 cut: bool = False) -> None:  # fmt: skip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT_S)
        self.port = self.listener.getsockname()[1]
        self.answer = answer or (lambda txnr: b"%d rsp 6 200 OK\n" % txnr)
        self.open_answer = open_answer
        self.cut = cut
        self.sessions = [Session() for _ in range(conns)]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        threads = []
        with self.listener:
            for s in self.sessions:
                conn, _ = self.listener.accept()
                t = threading.Thread(target=self._serve, args=(conn, s), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join(WAIT_S)

    def _serve(self, conn: socket.socket, s: Session) -> None:
        conn.settimeout(WAIT_S)
        with conn:
            w = Wire(conn)
            try:
                txnr, command, s.offers = w.frame()
                if (txnr, command) != (1, b"open"):
                    s.error = f"first frame {txnr} {command!r}"
                    return
                conn.sendall(frame(1, b"rsp", self.open_answer))
                unanswered: list[int] = []
                while True:
                    txnr, command, data = w.frame()
                    if command == b"close":
                        s.close_txnr = txnr
                        conn.sendall(b"%d rsp 0\n0 serverclose 0\n" % txnr)
                        return
                    if command != b"syslog":
                        s.error = f"unexpected command {command!r}"
                        return
                    s.txnrs.append(txnr)
                    s.messages.append(data)
                    unanswered.append(txnr)
                    s.max_unanswered = max(s.max_unanswered, len(unanswered))
                    if w.idle():
                        if self.cut:
                            conn.sendall(self.answer(unanswered[0]))
                            return
                        conn.sendall(b"".join(self.answer(t) for t in unanswered))
                        unanswered.clear()
            except EOFError:
                return
            except (OSError, ValueError) as exc:
                s.error = str(exc)

    def join(self) -> None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the fake RELP server did not finish"


MESSAGES = [
    '{"name":"Zoë","city":"Köln","note":"€ ✓ 😀"}'.encode(),
    b'{"event_type":"order_shipped","n":2}',
    '{"ünïcode":"日本語"}'.encode(),
]


def test_relp_client_pipelines_a_window_and_frames_by_bytes():
    conns, window, per_session = 2, 4, 12
    server = FakeRelp(conns)
    result = run_relp("127.0.0.1", server.port, conns, MESSAGES, duration=WAIT_S,
                      window=window, max_events=conns * per_session)  # fmt: skip
    server.join()
    assert result["errors"] == 0, result["error_lines"]
    assert result["acked"] == result["sent"] == conns * per_session
    assert result["closed_cleanly"] == conns and result["disconnects"] == 0
    assert result["unacked_at_end"] == 0
    assert result["server_software"] == "fake-relp"
    assert result["latency_ms"]["samples"] == conns * per_session
    assert sum(len(s.messages) for s in server.sessions) == conns * per_session
    for s in server.sessions:
        assert s.error is None
        assert b"relp_version=0" in s.offers.split(b"\n")
        assert b"commands=syslog" in s.offers.split(b"\n")
        n = len(s.messages)
        # Each session starts at the first message and numbers from 2 (1 is the open).
        assert s.messages == [MESSAGES[i % len(MESSAGES)] for i in range(n)]
        assert s.txnrs == list(range(2, 2 + n))
        assert s.close_txnr == 2 + n
        # Never more than the window unanswered.
        assert s.max_unanswered <= window
    # A whole window was in flight at once: the client did not wait for each answer.
    assert max(s.max_unanswered for s in server.sessions) == window


def test_relp_frame_counts_bytes_not_characters():
    assert frame(7, b"syslog", "é".encode()) == b"7 syslog 2 \xc3\xa9\n"
    assert frame(9, b"close") == b"9 close 0\n"


def test_relp_transaction_numbers_wrap_to_one():
    with socket.socket() as sock:
        c = RelpConn(sock)
        c.next_txnr = TXNR_MAX
        assert [c.take_txnr(), c.take_txnr()] == [TXNR_MAX, 1]


def test_relp_parser_reads_frames_cut_anywhere():
    stream = b"1 rsp 22 200 OK\ncommands=syslog\n2 rsp 6 200 OK\n3 rsp 0\n0 serverclose 0\n"
    expected = [
        (1, b"rsp", b"200 OK\ncommands=syslog"),
        (2, b"rsp", b"200 OK"),
        (3, b"rsp", b""),
        (0, b"serverclose", b""),
    ]
    parser = RelpParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i : i + 1])
    assert got == expected
    assert not parser.pending
    assert RelpParser().feed(stream) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"2 rsp 6 200 OK!\n",  # DATALEN too short for the data: no trailer where expected
        b"x rsp 6 200 OK\n",  # TXNR not a number
        b"2 rsp six 200 OK\n",  # DATALEN not a number
        b"2 rsp 3\n",  # DATALEN without DATA
        b"hello\n",  # not RELP at all
        b"1234567890 rsp 6 200 OK\n",  # TXNR longer than 9 digits
    ],
)
def test_relp_parser_refuses_malformed_frames(data):
    with pytest.raises(RelpError):
        RelpParser().feed(data)


def test_relp_parser_keeps_a_short_frame_pending():
    parser = RelpParser()
    assert parser.feed(b"2 rsp 6 200") == []
    assert parser.pending


@pytest.mark.parametrize(
    ("server", "complaint"),
    [
        ({"answer": lambda txnr: b"%d rsp 6 200" % txnr, "cut": True}, "middle of a frame"),
        ({"answer": lambda txnr: b"%d rsp 6 200 OK!\n" % txnr}, "no trailer"),
        ({"answer": lambda txnr: b"%d rsp 9 500 Error\n" % txnr}, "refused"),
        ({"answer": lambda txnr: b"%d rsp 6 200 OK\n" % (txnr + 100)}, "not outstanding"),
        ({"open_answer": b"500 no"}, "open refused"),
    ],
)
def test_relp_client_detects_a_bad_answer(server, complaint):
    fake = FakeRelp(1, **server)
    result = run_relp("127.0.0.1", fake.port, 1, MESSAGES, duration=WAIT_S, window=4,
                      max_events=8)  # fmt: skip
    fake.join()
    assert result["errors"] >= 1
    assert result["acked"] == 0
    assert any(complaint in line for line in result["error_lines"]), result["error_lines"]

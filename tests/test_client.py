"""`gateway send`: refused lines named by their line in the file, connection errors by peer."""

from __future__ import annotations

import json
import socket
import threading

from gateway.cli import main as cli_main
from gateway.client import numbered_event_lines


def test_numbered_lines_count_blank_lines_too():
    lines = numbered_event_lines([b"{}\n", b"\n", b"  \r\n", b'{"a":1}\r\n'])
    assert lines == [(1, b"{}\n"), (4, b'{"a":1}\n')]


def fake_gateway(replies: list[bytes]) -> tuple[int, threading.Thread, socket.socket]:
    """A peer on 127.0.0.1 that reads the hello and one line per reply, then answers."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            f.readline()  # the hello
            conn.sendall(b'{"hello":{"ack":true}}\n')
            for reply in replies:
                f.readline()
                conn.sendall(reply + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, server


def test_send_ack_names_the_line_of_each_refused_one(tmp_path, capsys):
    path = tmp_path / "events.ndjson"
    path.write_text('{"n":1}\n\nnot json\n{"n":2}\n{oops\n', encoding="utf-8")
    refused = b'{"ok":false,"error":"bad_json","detail":"x"}'
    port, thread, server = fake_gateway([b'{"ok":true,"seq":1}', refused, b'{"ok":true,"seq":3}',
                                         refused])  # fmt: skip
    try:
        code = cli_main(["send", "--ack", "--port", str(port), str(path)])
    finally:
        thread.join(10)
        server.close()
    out, err = capsys.readouterr()
    assert code == 1 and "acknowledged 2, refused 2" in out
    assert [line.split(": {")[0] for line in err.splitlines()] == [
        f"refused: {path} line 3",
        f"refused: {path} line 5",
    ]


def test_connection_errors_name_host_and_port(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        (tmp_path / "e.ndjson").write_text("{}\n", encoding="utf-8")
        code = cli_main(["send", "--port", str(port), str(tmp_path / "e.ndjson")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot connect to 127.0.0.1:{port}" in err, err


def test_a_missing_file_is_said_not_a_traceback(tmp_path, capsys):
    assert cli_main(["send", str(tmp_path / "events.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_with_event_id_inserts_one_and_keeps_every_other_byte():
    from gateway.client import with_event_id

    line, eid = with_event_id(b'  { "a" : 1.50, "b":"\\u00e9" }')
    assert line == b'  {"event_id":"%s", "a" : 1.50, "b":"\\u00e9" }' % eid.encode()
    assert json.loads(line)["event_id"] == eid and len(eid) == 36
    empty, eid = with_event_id(b"{}")
    assert empty == b'{"event_id":"%s"}' % eid.encode()
    assert with_event_id(b'{"event_id":"mine","a":1}') == (b'{"event_id":"mine","a":1}', "mine")
    assert with_event_id(b"[1]") == (b"[1]", "") and with_event_id(b"{oops") == (b"{oops", "")


def test_send_retries_unanswered_lines_with_the_same_ids(capsys):
    """A gateway that dies after answering two of four lines: the other two are sent
    again on a new connection, byte for byte, and the command succeeds."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[list[bytes]] = []

    def serve() -> None:
        for answers in (2, 2):
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as f:
                f.readline()
                conn.sendall(b'{"hello":{"ack":true}}\n')
                got = [f.readline() for _ in range(answers)]
                seen.append(got)
                for n in range(answers):
                    conn.sendall(b'{"ok":true,"seq":%d}\n' % (len(seen) * 10 + n))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    import io
    import sys

    data = b"".join(b'{"n":%d}\n' % n for n in range(4))
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    try:
        code = cli_main(["send", "--ack", "--port", str(port)])
    finally:
        sys.stdin = old
    thread.join(10)
    server.close()
    assert code == 0, capsys.readouterr()
    assert "acknowledged 4" in capsys.readouterr().out
    first, second = seen
    ids = [json.loads(line)["event_id"] for line in first + second]
    assert len(set(ids)) == 4

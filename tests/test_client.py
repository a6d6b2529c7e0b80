"""`gateway send`: refused lines named by their line in the file, connection errors by peer."""

from __future__ import annotations

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

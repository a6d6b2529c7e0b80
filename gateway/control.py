"""The control socket: a UNIX stream socket in the state directory for the CLI.

One JSON request line, one JSON reply line, then the gateway closes
(docs/printing.md, "Control socket"). The socket is mode 0660: the service's
group may connect. Who may do what is decided by the peer's credentials
(SO_PEERCRED), not by the request: the service's user and root may run every
command; anyone else who could connect (an auditor in the service's group,
docs/audit.md) only the read-only ones. Requests are handled on the event
loop; a slow request (a reprint looks the entry up on the worker thread)
replies when it is done.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.loop import EventLoop
from gateway.oneshot import OneShot, OneShotListener

log = logging.getLogger("gateway.control")

# A request is a short JSON line; anything longer is refused.
MAX_REQUEST_BYTES = 4096
# A client that does not finish its request (or read the reply) in 10 s is dropped.
CLIENT_TIMEOUT_S = 10.0
# At most this many control clients at once (the CLI opens one per command).
MAX_CLIENTS = 16
# How long the CLI waits for a reply (a reprint of an old seq scans the ledger).
CLI_TIMEOUT_S = 30.0

# What a connecting member of the service's group (not its user, not root) may
# run: commands that only read. Printing, reprinting and reports stay with the
# service's operators.
READ_ONLY_COMMANDS = frozenset({"status"})
# Socket file mode 0660 (umask 0117 while binding): user and group only.
SOCKET_UMASK = 0o117

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a UNIX socket (Linux)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    return _UCRED.unpack(raw)[1]


Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]


class ControlServer(OneShotListener):
    def __init__(self, loop: EventLoop, path: Path, handle: Handler) -> None:
        super().__init__(loop, MAX_CLIENTS)
        self.path = path
        self.handle = handle

    def listen(self) -> None:
        try:
            self.path.unlink()  # left by a process that died; the state lock is ours
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(SOCKET_UMASK)  # created 0660, no window with wider permissions
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(MAX_CLIENTS)
        self.serve(sock)

    def client(self, sock: socket.socket) -> None:
        _Client(self, sock)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        super().close()


class _Client(OneShot):
    def __init__(self, server: ControlServer, sock: socket.socket) -> None:
        self.server = server
        # Unknown credentials count as unprivileged: the read-only commands still work.
        self.privileged = peer_uid(sock) in (0, os.geteuid())
        super().__init__(server.loop, sock, server.clients, MAX_REQUEST_BYTES, CLIENT_TIMEOUT_S)

    def overflowed(self) -> None:
        self.reply({"ok": False, "error": "request too long"})

    def received(self, data: bytes) -> None:
        if b"\n" not in data:
            return
        line = data.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError('expected {"cmd": ...}')
        except ValueError as exc:
            self.reply({"ok": False, "error": f"bad request: {exc}"})
            return
        if not self.privileged and request["cmd"] not in READ_ONLY_COMMANDS:
            log.warning("control request refused: read-only client",
                        extra={"fields": {"cmd": request["cmd"][:64]}})  # fmt: skip
            self.reply({"ok": False, "error": "not permitted: this user may only read (status)"})
            return
        try:
            self.server.handle(request, self.reply)
        except Exception as exc:  # a bug must not take the gateway down
            log.exception("control request failed", extra={"fields": {"cmd": request.get("cmd")}})
            self.reply({"ok": False, "error": f"internal error: {exc!r}"})

    def reply(self, response: dict[str, Any]) -> None:
        self.respond(json.dumps(response, default=str).encode() + b"\n")


def request(path: Path, command: dict[str, Any], timeout: float = CLI_TIMEOUT_S) -> dict[str, Any]:
    """The CLI side: send one request, return the reply (OSError if no gateway answers)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise OSError("the gateway closed the control connection without a reply")
    return json.loads(data)

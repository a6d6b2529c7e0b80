"""systemd notification (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

A thin implementation of the protocol instead of the `sdnotify` package,
because the appliance needs what that package leaves out: it honours
WATCHDOG_USEC and WATCHDOG_PID, encodes UTF-8, supports abstract socket
names, and reports a failed send (rate-limited in the log) instead of hiding
it. Without NOTIFY_SOCKET (a terminal, `make run`, the tests) every call is a
cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("gateway.ops")

# A STATUS= line longer than this is cut: systemctl shows one line.
MAX_STATUS_CHARS = 200


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address: str | None = None
        self.sock: socket.socket | None = None
        self.watchdog_interval_s: float | None = None
        self._failed = False
        path = env.get("NOTIFY_SOCKET", "")
        if path:
            if path.startswith("@"):
                path = "\0" + path[1:]  # an abstract socket name
            self.address = path
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        if usec.isdigit() and int(usec) > 0 and for_us and self.sock is not None:
            # Ping at half the deadline, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval_s = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of VAR=value lines; False (and one log line) if it fails."""
        if self.sock is None or self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self.sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning(
                    "cannot notify systemd",
                    extra={"fields": {"socket": self.address, "error": str(exc)}},
                )
            self._failed = True
            return False
        if self._failed:
            log.info("notifying systemd works again")
            self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def status(self, status: str) -> bool:
        return self.send(_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", _status("stopping"))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _status(text: str) -> str:
    line = " ".join(text.split())
    return "STATUS=" + line[:MAX_STATUS_CHARS]

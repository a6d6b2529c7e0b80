"""The reprint button: an input device read by the event loop.

On the appliance the device is an evdev node made by the overlay line
`dtoverlay=gpio-key,gpio=17,keycode=210,label=reprint` (docs: README,
"Installing on a Raspberry Pi"). In development and tests it is a FIFO fed
with the same records (board/fake.py). A missing device is logged once and
looked for again every 10 s: the gateway runs without a button.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from board.evdev import NATIVE_RECORD_BYTES, EvdevParser, KeyTracker, Press
from gateway.loop import READ, EventLoop

log = logging.getLogger("gateway.ops")

# Look for a missing or unplugged device again after 10 s.
RETRY_S = 10.0
# An input that reads as EOF (it should not happen: see start()) is reopened
# after 0.5 s rather than waking the loop continuously.
REOPEN_S = 0.5
# Read up to 64 records per wake-up.
READ_BYTES = 64 * NATIVE_RECORD_BYTES
_NAME_BYTES = 256


def eviocgname(length: int = _NAME_BYTES) -> int:
    """The EVIOCGNAME(len) ioctl request: _IOC(_IOC_READ, 'E', 0x06, len)."""
    return (2 << 30) | (length << 16) | (ord("E") << 8) | 0x06


def device_name(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        raw = fcntl.ioctl(fd, eviocgname(), b"\0" * _NAME_BYTES)
    finally:
        os.close(fd)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def find_device(name_or_path: str, input_dir: Path = Path("/dev/input")) -> Path | None:
    """A path (it has a slash) as is; a name by asking each /dev/input/event* its name."""
    if "/" in name_or_path:
        return Path(name_or_path)
    for path in sorted(input_dir.glob("event*")):
        try:
            if device_name(path) == name_or_path:
                return path
        except OSError:
            continue
    return None


class Button:
    def __init__(
        self,
        loop: EventLoop,
        device: str,
        keycode: int,
        on_press: Callable[[Press], None],
        record_bytes: int = NATIVE_RECORD_BYTES,
    ) -> None:
        self.loop = loop
        self.device = device
        self.keycode = keycode
        self.on_press = on_press
        self.record_bytes = record_bytes
        self.fd = -1
        self.path: Path | None = None
        self.parser = EvdevParser(record_bytes)
        self.tracker = KeyTracker(keycode)
        self._missing_logged = False
        self._timer = None
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def start(self) -> None:
        self._timer = None
        if self.closed:
            return
        path = find_device(self.device)
        try:
            if path is None:
                raise FileNotFoundError(errno.ENOENT, "no input device named", self.device)
            # A FIFO (the fake board) is opened read-write, so that it always has
            # a writer: writers never find it closed, and it never reads as EOF.
            mode = os.O_RDWR if stat.S_ISFIFO(os.stat(path).st_mode) else os.O_RDONLY
            self.fd = os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if not self._missing_logged:
                log.warning(
                    "button device not available; looking again every 10 s",
                    extra={"fields": {"device": self.device, "error": str(exc)}},
                )
                self._missing_logged = True
            self._timer = self.loop.call_later(RETRY_S, self.start)
            return
        self.path = path
        if self._missing_logged:
            log.info("button device found", extra={"fields": {"device": str(path)}})
        self._missing_logged = False
        self.parser = EvdevParser(self.record_bytes)
        self.tracker = KeyTracker(self.keycode)
        self.loop.add(self, READ)

    def on_ready(self, mask: int) -> None:
        try:
            data = os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:  # ENODEV: the device went away
            log.warning("button device lost", extra={"fields": {"error": str(exc)}})
            self._reopen(RETRY_S)
            return
        if not data:  # a FIFO whose writer closed
            self._reopen(REOPEN_S)
            return
        for event in self.parser.feed(data):
            press = self.tracker.feed(event)
            if press is not None:
                self.on_press(press)

    def _reopen(self, delay: float) -> None:
        self._close_fd()
        self._timer = self.loop.call_later(delay, self.start)

    def _close_fd(self) -> None:
        if self.fd >= 0:
            self.loop.remove(self)
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_fd()

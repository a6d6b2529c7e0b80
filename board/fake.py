"""A front panel for development machines and tests.

`make_fake_board(dir)` creates `dir/button` (a FIFO that takes evdev records,
as an input device would give them) and `dir/leds/gw-status/` (files shaped
like an LED class directory). `press(fifo, hold_s)` writes one press and
release into the FIFO, as `gateway press-button` does.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from board.evdev import EV_KEY, EV_SYN, KEY_PRESS, KEY_PRINT, KEY_RELEASE, InputEvent, encode


def make_fake_board(directory: Path) -> tuple[Path, Path]:
    """Create (if needed) the button FIFO and the LED directory; return their paths."""
    fifo = directory / "button"
    led = directory / "leds" / "gw-status"
    led.mkdir(parents=True, exist_ok=True)
    if fifo.exists() and not stat.S_ISFIFO(fifo.stat().st_mode):
        fifo.unlink()
    if not fifo.exists():
        os.mkfifo(fifo, 0o660)
    for name, value in (("brightness", "0"), ("max_brightness", "1"), ("trigger", "none"),
                        ("delay_on", "500"), ("delay_off", "500")):  # fmt: skip
        path = led / name
        if not path.exists():
            path.write_text(value + "\n")
    return fifo, led


def press_records(hold_s: float, keycode: int = KEY_PRINT, at: float | None = None) -> bytes:
    """One press and release of `keycode`, `hold_s` apart, each followed by SYN_REPORT."""
    t = time.time() if at is None else at
    events = [
        InputEvent(t, EV_KEY, keycode, KEY_PRESS),
        InputEvent(t, EV_SYN, 0, 0),
        InputEvent(t + hold_s, EV_KEY, keycode, KEY_RELEASE),
        InputEvent(t + hold_s, EV_SYN, 0, 0),
    ]
    return b"".join(encode(e) for e in events)


def press(fifo: Path, hold_s: float, keycode: int = KEY_PRINT) -> None:
    """Write one press into the FIFO (fails with ENXIO if nobody is reading it)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, press_records(hold_s, keycode))
    finally:
        os.close(fd)

"""Linux input events (struct input_event), sans-I/O.

    struct input_event { struct timeval time; __u16 type; __u16 code; __s32 value; };

The record is 24 bytes where `long` is 64-bit, 16 bytes where it is 32-bit
(a 32-bit Raspberry Pi OS). Both are parsed; the reader of a device uses the
running kernel's layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

EV_SYN = 0x00
EV_KEY = 0x01
SYN_REPORT = 0
SYN_DROPPED = 3  # the kernel's buffer overran: events were lost until the next SYN_REPORT
KEY_RELEASE, KEY_PRESS, KEY_REPEAT = 0, 1, 2
KEY_PRINT = 210  # the keycode the gpio-key overlay line in docs uses

LAYOUTS = {24: struct.Struct("qqHHi"), 16: struct.Struct("iiHHi")}
NATIVE_RECORD_BYTES = struct.calcsize("llHHi")


@dataclass(frozen=True, slots=True)
class InputEvent:
    time_s: float
    type: int
    code: int
    value: int


def encode(event: InputEvent, record_bytes: int = NATIVE_RECORD_BYTES) -> bytes:
    sec = int(event.time_s)
    usec = round((event.time_s - sec) * 1_000_000)
    return LAYOUTS[record_bytes].pack(sec, usec, event.type, event.code, event.value)


class EvdevParser:
    """Bytes in, whole events out; a partial record waits for the rest."""

    def __init__(self, record_bytes: int = NATIVE_RECORD_BYTES) -> None:
        if record_bytes not in LAYOUTS:
            raise ValueError(f"input_event records are 16 or 24 bytes, not {record_bytes}")
        self.layout = LAYOUTS[record_bytes]
        self.buf = b""

    def feed(self, data: bytes) -> Iterator[InputEvent]:
        self.buf += data
        size = self.layout.size
        whole = len(self.buf) - len(self.buf) % size
        for sec, usec, kind, code, value in self.layout.iter_unpack(self.buf[:whole]):
            yield InputEvent(sec + usec / 1e6, kind, code, value)
        self.buf = self.buf[whole:]


@dataclass(frozen=True, slots=True)
class Press:
    """One press of the watched key, from press to release."""

    held_s: float


class KeyTracker:
    """Turns events into presses of one key: autorepeat ignored, SYN_DROPPED handled.

    After SYN_DROPPED every event up to the next SYN_REPORT is discarded (the
    kernel lost some) and a press in progress is forgotten: a lost release
    must not leave the button "held" forever.
    """

    def __init__(self, keycode: int) -> None:
        self.keycode = keycode
        self.pressed_at: float | None = None
        self.dropping = False

    def feed(self, event: InputEvent) -> Press | None:
        if event.type == EV_SYN:
            if event.code == SYN_DROPPED:
                self.dropping = True
                self.pressed_at = None
            elif event.code == SYN_REPORT:
                self.dropping = False
            return None
        if self.dropping or event.type != EV_KEY or event.code != self.keycode:
            return None
        if event.value == KEY_PRESS:
            self.pressed_at = event.time_s
        elif event.value == KEY_RELEASE and self.pressed_at is not None:
            held = max(0.0, event.time_s - self.pressed_at)
            self.pressed_at = None
            return Press(held)
        return None  # KEY_REPEAT, or a release without its press

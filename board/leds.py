"""Status LEDs through the kernel's LED class (/sys/class/leds/NAME/).

One LED shows the gateway's health (docs: README, "Front panel"):

    ok        heartbeat trigger (the kernel blinks it)
    printer   fast blink: timer trigger, 100 ms on / 100 ms off
    ledger    steady on: no trigger, full brightness

Only changes are written. A missing LED (or one the service may not write)
is logged once and ignored: the gateway runs without LEDs.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("gateway.ops")

# Fast blink while a printer is in error: 100 ms on, 100 ms off (5 Hz) is
# unmistakable next to the heartbeat's slow double pulse.
BLINK_MS = 100

PATTERNS: dict[str, list[tuple[str, str]]] = {
    "ok": [("trigger", "heartbeat")],
    "printer": [("trigger", "timer"), ("delay_on", str(BLINK_MS)), ("delay_off", str(BLINK_MS))],
    "ledger": [("trigger", "none"), ("brightness", "max")],
}
# The timer trigger creates delay_on/delay_off itself (owned by root): if the
# service may not write them, the LED blinks at the kernel's default 500 ms.
OPTIONAL = {"delay_on", "delay_off"}


class StatusLed:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.state: str | None = None
        self.broken = False

    def show(self, state: str) -> None:
        if state == self.state or self.broken:
            return
        try:
            for name, value in PATTERNS[state]:
                if value == "max":
                    value = (self.directory / "max_brightness").read_text().strip() or "1"
                try:
                    (self.directory / name).write_text(value + "\n")
                except PermissionError:
                    if name not in OPTIONAL:
                        raise
        except OSError as exc:
            log.warning(
                "status LED not available; running without it",
                extra={"fields": {"led": str(self.directory), "error": str(exc)}},
            )
            self.broken = True
            return
        self.state = state

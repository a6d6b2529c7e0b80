"""Time for the whole gateway: one injected Clock (monotonic time, wall time, sync state).

Every component asks the Clock it was given, never `time` directly, so tests
can run timers, retries, idle timeouts, reports and retention on a FakeClock
without waiting. The loop asks the clock how long it may sleep
(`sleep_time`), the way trio's Clock.deadline_to_sleep_time does.

Whether the wall clock is synchronised is the kernel's NTP state: a Raspberry
Pi has no real-time clock, and until systemd-timesyncd (or another NTP client)
has set the clock, the time in `received_at` may be anything. adjtimex(2) with
no modes returns TIME_ERROR while the clock is unsynchronised (the STA_UNSYNC
status bit is set). Reading it changes nothing and needs no privilege.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("gateway.ops")

TIME_ERROR = 5  # adjtimex's "clock not synchronized"
# struct timex is 208 bytes on 64-bit Linux (less on 32-bit); a larger zeroed
# buffer leaves room, and modes = 0 (its first field) means "read only".
_TIMEX_BYTES = 512

_libc = None


def _adjtimex() -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    buf = ctypes.create_string_buffer(_TIMEX_BYTES)
    state = _libc.adjtimex(buf)
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return state


def clock_synced() -> bool:
    """True when the kernel says the clock is synchronised (or cannot tell us)."""
    try:
        return _adjtimex() != TIME_ERROR
    except (OSError, AttributeError) as exc:
        # Not Linux, or adjtimex is filtered: no way to know; do not flag.
        log.debug("cannot read the clock's sync state", extra={"fields": {"error": str(exc)}})
        return True


class Clock:
    """The real clock. `synced` is the last sync state seen by `check_sync()`.

    `check_sync` is asked once a second by the health tick (never per entry);
    with `probe_sync=False` (configuration `clock.check_sync: false`) the wall
    clock always counts as synchronised.
    """

    def __init__(self, probe_sync: bool = True, probe: Callable[[], bool] | None = None) -> None:
        self.probe_sync = probe_sync
        # What tells the kernel's sync state (a seam for tests): adjtimex by default.
        self._probe_fn = probe
        self.synced = True
        # Monotonic time the clock was last seen to lose its synchronisation.
        self.unsynced_since: float | None = None

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        return time.time()

    def wall_us(self) -> int:
        """Microseconds since the Unix epoch (UTC): every entry's `received_at`."""
        return time.time_ns() // 1000

    def sleep_time(self, deadline: float) -> float:
        """How long the loop may block to wake at `deadline` (monotonic seconds)."""
        return max(0.0, deadline - self.monotonic())

    def _probe(self) -> bool:
        return self._probe_fn() if self._probe_fn is not None else clock_synced()

    def check_sync(self) -> bool:
        """Read the kernel's sync state; True when it changed since the last call."""
        synced = self._probe() if self.probe_sync else True
        if synced == self.synced:
            return False
        self.synced = synced
        self.unsynced_since = None if synced else self.monotonic()
        return True


class FakeClock(Clock):
    """A clock for tests: time moves only when the test says so (`advance`).

    The loop never sleeps on it for real: `sleep_time` answers "forever" for a
    deadline in the future, so `run_once(max_wait=...)` bounds each turn, and
    the test moves time forward to fire timers. `kernel_synced` stands for the
    kernel's NTP state: the next `check_sync()` sees it.
    """

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_795_000_000.0) -> None:
        super().__init__()
        self.kernel_synced = True
        self.now = monotonic
        self._wall_offset = wall - monotonic

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self._wall_offset + self.now

    def wall_us(self) -> int:
        return round((self._wall_offset + self.now) * 1_000_000)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time does not run backwards"
        self.now += seconds

    def set_wall(self, wall: float) -> None:
        """Set the wall clock (as an NTP step would), monotonic time unchanged."""
        self._wall_offset = wall - self.now

    def sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self.now else math.inf

    def _probe(self) -> bool:
        return self.kernel_synced

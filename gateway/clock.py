"""Is the system clock synchronised? (The kernel's NTP state, read with adjtimex.)

A Raspberry Pi has no real-time clock: until systemd-timesyncd (or another NTP
client) has set the clock, the time in `received_at` may be anything. The
kernel knows: adjtimex(2) with no modes returns TIME_ERROR while the clock is
unsynchronised (the STA_UNSYNC status bit is set). Reading it changes nothing
and needs no privilege.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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

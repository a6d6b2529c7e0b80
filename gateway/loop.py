"""The event loop: one thread, one selector, every file descriptor.

Handlers are small objects with `fileno()` and `on_ready(mask)`. Other threads
never touch an fd: they `post()` a callable, which writes a byte to the wake-up
socketpair so the selector returns and the loop runs it. Signals arrive the same
way (signal.set_wakeup_fd). Time comes from the injected Clock (gateway/clock.py):
timers use its monotonic time and the loop asks it how long it may sleep, so a
FakeClock drives every timer in tests without waiting.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from typing import Protocol

from gateway.clock import Clock

log = logging.getLogger("gateway.ops")
perf_log = logging.getLogger("gateway.perf")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

# One loop iteration longer than this is reported on the performance stream:
# at the target rates an iteration handles a few thousand events in a few ms,
# so a quarter of a second means something blocked the loop.
SLOW_ITERATION_S = 0.25

# How long the loop may keep the GIL while another thread waits for it.
# CPython's default, 5 ms, is paid by the durability thread after each of its
# steps (wake-up, write, sync, reply): a busy loop stretched every commit to
# 10-30 ms and acknowledgements with it. Measured on the development machine
# with a busy Python thread and a thread doing pwrite + fdatasync: a commit
# cycle took 12 ms (p50) at 5 ms, 2.6 ms at 1 ms, 1.6 ms at 0.5 ms. The forced
# switches cost a few µs each and only happen while another thread waits.
GIL_SWITCH_INTERVAL_S = 0.0005


class Handler(Protocol):
    def fileno(self) -> int: ...

    def on_ready(self, mask: int) -> None: ...


class Timer:
    __slots__ = ("_callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self._callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = itertools.count()
        self._posted: collections.deque[Callable[[], None]] = collections.deque()
        self._urgent: collections.deque[Callable[[], None]] = collections.deque()
        self._idle_hooks: list[Callable[[], None]] = []
        self._again = False  # work is left for the next iteration: do not block
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, READ, _WakeReader(self._wake_r))
        self.running = False
        self.iterations = 0
        self.last_iteration_at = self.clock.monotonic()
        self._old_wakeup_fd: int | None = None
        self._old_signal_handlers: dict[int, object] = {}

    # ---- file descriptors

    def add(self, handler: Handler, events: int) -> None:
        self.selector.register(handler.fileno(), events, handler)

    def modify(self, handler: Handler, events: int) -> None:
        self.selector.modify(handler.fileno(), events, handler)

    def remove(self, handler: Handler) -> None:
        try:
            self.selector.unregister(handler.fileno())
        except (KeyError, ValueError):
            pass

    def set_interest(self, handler: Handler, fd: int, current: int, wanted: int) -> int:
        """Move `handler` from `current` to `wanted` events (0 meaning unregistered)."""
        if wanted == current:
            return current
        if not current:
            self.selector.register(fd, wanted, handler)
        elif not wanted:
            self.selector.unregister(fd)
        else:
            self.selector.modify(fd, wanted, handler)
        return wanted

    # ---- time

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.clock.monotonic() + delay, callback)

    def time(self) -> float:
        """The loop's monotonic time (the clock's), in seconds."""
        return self.clock.monotonic()

    # ---- other threads and signals

    def post(self, callback: Callable[[], None], *, urgent: bool = False) -> None:
        """Run `callback` on the loop thread soon. Safe from any thread.

        `urgent`: between two ready handlers rather than after all of them
        (a handler it removes is not called for the rest of the turn).
        """
        (self._urgent if urgent else self._posted).append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full, so the loop is going to wake anyway

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = signal.set_wakeup_fd(
                self._wake_w.fileno(), warn_on_full_buffer=False
            )
        old = signal.signal(signum, lambda _s, _f: self._posted.append(callback))
        self._old_signal_handlers.setdefault(signum, old)

    def add_idle_hook(self, hook: Callable[[], None]) -> None:
        """Run `hook` at the end of every iteration, after all ready handlers ran."""
        self._idle_hooks.append(hook)

    def again(self) -> None:
        """Ask for another iteration without waiting (work set aside for the next turn)."""
        self._again = True

    # ---- running

    def run_once(self, max_wait: float | None = None) -> None:
        timeout = max_wait
        if self._posted or self._urgent or self._again:
            timeout = 0
        elif self._timers:
            until = self.clock.sleep_time(self._timers[0][0])
            if until != math.inf:
                timeout = until if timeout is None else min(timeout, until)
        self._again = False
        events = self.selector.select(timeout)
        started = self.clock.monotonic()
        registered = self.selector.get_map()
        for key, mask in events:
            live = registered.get(key.fd)
            if live is None or live.data is not key.data:
                continue  # removed (or its fd reused) earlier in this turn: stale readiness
            try:
                key.data.on_ready(mask)
            except Exception:
                log.exception("handler failed", extra={"fields": {"handler": repr(key.data)}})
                closer = getattr(key.data, "close", None)
                if closer is not None:
                    closer()
                else:
                    self.remove(key.data)
            if self._urgent:
                # A finished commit is handled now, not after every other ready
                # handler: a busy turn would otherwise hold back acknowledgements
                # and the next commit (bench/RESULTS.md, ack latency).
                self._run_urgent()
        self._run_urgent()
        self._run_timers()
        while self._posted:
            self._posted.popleft()()
        for hook in self._idle_hooks:
            hook()
        self.iterations += 1
        now = self.clock.monotonic()
        if now - started > SLOW_ITERATION_S:
            perf_log.warning(
                "slow loop iteration", extra={"fields": {"seconds": round(now - started, 3)}}
            )
        self.last_iteration_at = now

    def _run_urgent(self) -> None:
        urgent = self._urgent
        while urgent:
            urgent.popleft()()

    def _run_timers(self) -> None:
        now = self.clock.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _deadline, _n, timer = heapq.heappop(timers)
            if not timer.cancelled:
                timer._callback()

    def run(self) -> None:
        self.running = True
        previous = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            while self.running:
                self.run_once()
        finally:
            sys.setswitchinterval(previous)

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        for signum, handler in self._old_signal_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._old_signal_handlers.clear()
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


class _WakeReader:
    """Drains the wake-up socketpair; the posted callables run after the handlers."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def on_ready(self, mask: int) -> None:
        try:
            while self._sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

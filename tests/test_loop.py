"""The event loop: timers on an injected clock, cross-thread posts, idle hooks, handler faults."""

from __future__ import annotations

import socket
import sys
import threading

from gateway.clock import FakeClock
from gateway.loop import GIL_SWITCH_INTERVAL_S, READ, EventLoop


def test_timers_fire_in_deadline_order_on_the_injected_clock():
    clock = FakeClock()
    loop = EventLoop(clock)
    fired = []
    loop.call_later(2.0, lambda: fired.append("b"))
    loop.call_later(1.0, lambda: fired.append("a"))
    cancelled = loop.call_later(1.5, lambda: fired.append("never"))
    cancelled.cancel()
    loop.run_once(max_wait=0)
    assert fired == []
    clock.now += 1.0
    loop.run_once(max_wait=0)
    assert fired == ["a"]
    clock.now += 5.0
    loop.run_once(max_wait=0)
    assert fired == ["a", "b"]
    loop.close()


def test_post_from_another_thread_wakes_a_blocked_select():
    loop = EventLoop()
    ran = threading.Event()
    thread = threading.Timer(0.05, lambda: loop.post(ran.set))
    thread.start()
    # Without the wake-up socketpair this would block for the full 30 s.
    for _ in range(100):
        loop.run_once(max_wait=30)
        if ran.is_set():
            break
    assert ran.is_set()
    thread.join()
    loop.close()


def test_idle_hooks_run_after_every_iteration():
    loop = EventLoop(FakeClock())
    calls = []
    loop.add_idle_hook(lambda: calls.append(loop.iterations))
    loop.run_once(max_wait=0)
    loop.run_once(max_wait=0)
    assert calls == [0, 1]
    loop.close()


class _Exploding:
    def __init__(self, sock: socket.socket, loop: EventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_ready(self, mask: int) -> None:
        raise RuntimeError("handler bug")

    def close(self) -> None:
        self.closed = True
        self.loop.remove(self)


def test_a_failing_handler_is_closed_and_the_loop_carries_on(caplog):
    loop = EventLoop(FakeClock())
    a, b = socket.socketpair()
    handler = _Exploding(a, loop)
    loop.add(handler, READ)
    b.send(b"x")
    loop.run_once(max_wait=1)
    assert handler.closed
    assert "handler failed" in caplog.text
    loop.run_once(max_wait=0)  # nothing registered any more; no exception
    a.close()
    b.close()
    loop.close()


def test_the_loop_lets_waiting_threads_have_the_gil_soon_and_restores_the_default():
    """A busy loop holding the GIL for CPython's default 5 ms per switch made every
    commit of the durability thread wait 10-30 ms (each of its steps needs the GIL)."""
    loop = EventLoop()
    before = sys.getswitchinterval()
    seen = []

    def check() -> None:
        seen.append(sys.getswitchinterval())
        loop.stop()

    loop.call_later(0, check)
    loop.run()
    loop.close()
    assert seen == [GIL_SWITCH_INTERVAL_S] and GIL_SWITCH_INTERVAL_S <= 0.001
    assert sys.getswitchinterval() == before


def test_an_urgent_post_runs_between_ready_handlers_an_ordinary_one_after_all():
    """A finished commit (urgent) is handled mid-turn; other posts wait for the turn's end."""
    loop = EventLoop()
    order: list[str] = []
    pairs = [socket.socketpair() for _ in range(2)]

    class Ready:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def fileno(self) -> int:
            return self.sock.fileno()

        def on_ready(self, mask: int) -> None:
            self.sock.recv(16)
            order.append("handler")
            if len(order) == 1:
                loop.post(lambda: order.append("ordinary"))
                loop.post(lambda: order.append("urgent"), urgent=True)

    for a, b in pairs:
        loop.add(Ready(a), READ)
        b.send(b"x")
    loop.run_once(max_wait=1)
    assert order == ["handler", "urgent", "handler", "ordinary"]
    loop.close()
    for a, b in pairs:
        a.close()
        b.close()


def test_a_handler_removed_earlier_in_the_turn_is_not_called_with_stale_readiness():
    loop = EventLoop()
    called: list[int] = []
    pairs = [socket.socketpair() for _ in range(2)]
    handlers: list = []

    class Ready:
        def __init__(self, n: int, sock: socket.socket) -> None:
            self.n, self.sock = n, sock

        def fileno(self) -> int:
            return self.sock.fileno()

        def on_ready(self, mask: int) -> None:
            called.append(self.n)
            other = handlers[1 - self.n]
            loop.post(lambda: loop.remove(other), urgent=True)  # as a commit closing it

    for n, (a, b) in enumerate(pairs):
        handlers.append(Ready(n, a))
        loop.add(handlers[n], READ)
        b.send(b"x")
    loop.run_once(max_wait=1)
    assert len(called) == 1  # both were ready; the first removed the second
    loop.close()
    for a, b in pairs:
        a.close()
        b.close()

"""SIGTERM and SIGINT before the event loop exists: noted, then honoured as a clean stop.

`gateway run` calls `catch()` first thing (`python -m gateway` even before it
imports the rest of the gateway), so that a stop requested at any moment of
start-up is never the default action (death by signal); the gateway's loop
installs its own handlers early in its start and asks `caught` once started.
"""

from __future__ import annotations

import signal

caught: list[int] = []


def catch() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda sig, _frame: caught.append(sig))

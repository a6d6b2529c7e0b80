"""The naive listener: the product as it was first described, kept as a baseline.

A TCP listener that serves one client at a time: accept, read lines until EOF,
then accept the next. Each line is parsed with json.loads (a line that does not
parse is dropped), then the output file is opened in append mode, the line is
written and the file is closed. There is no fsync and nothing is sent back: a
client cannot tell whether, or when, its line was stored.

`make bench-peers` measures how many lines per second this stores. Prints
`listening on HOST:PORT` once it accepts connections (with --port 0, the port the
kernel chose); runs in the foreground and exits with status 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

# Clients queued by the kernel while one is being served (the naive version kept the default).
BACKLOG = 128


def serve(listener: socket.socket, out: Path) -> None:
    """Serve clients one after the other, forever (until a signal ends the process)."""
    while True:
        conn, _addr = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                try:
                    json.loads(line)
                except ValueError:
                    continue
                if not line.endswith(b"\n"):
                    line += b"\n"  # the last line of a client that closed without one
                with open(out, "ab") as f:
                    f.write(line)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.baselines.naive_listener",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    p.add_argument("--out", type=Path, required=True, help="file the lines are appended to")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    with socket.create_server((args.host, args.port), backlog=BACKLOG) as listener:
        host, port = listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        serve(listener, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

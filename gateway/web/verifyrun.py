"""A whole-ledger verification started from the console, run on its own thread.

One run at a time. The thread reads segment files only (as `gateway verify
--jobs 1` does, gentlest on the running gateway); its result comes back to the
loop through `post`, so the state the pages read changes only on the loop.
The verification statement (gateway/audit/statement.py) is made from the
result, the same fields as `gateway verify --statement`.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audit import statement

# The highest percentage shown while a run is going: 100 % only with the result.
PERCENT_BEFORE_RESULT = 99


class BackgroundVerify:
    def __init__(
        self,
        state_dir: Path,
        post: Callable[[Callable[[], None]], None],
        zone: Callable[[], tuple[dt.tzinfo, str]],
        clock: Callable[[], float],
        name: str = "",
    ) -> None:
        self.state_dir = state_dir
        self.ledger_dir = state_dir / "ledger"
        self.post = post
        self.zone = zone
        self.clock = clock
        self.name = name or socket.gethostname()
        self.thread: threading.Thread | None = None
        self.started_at = 0.0
        self.total = 0
        # The run's measure: bytes of segments at its start, and bytes checked so
        # far (added to on the verifying thread, read on the loop: one int).
        self.total_bytes = 0
        self.done_bytes = 0
        self.last: dict[str, Any] = {}
        self._statement: statement.Statement | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None

    def state(self) -> dict[str, Any]:
        if self.running:
            percent = self.percent()
            return {
                "running": True,
                "total": self.total,
                "percent": percent,
                "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes,
                "elapsed": self.clock() - self.started_at,
                "summary": f"running: {percent} %",
            }
        return dict(self.last)

    def percent(self) -> int:
        """Bytes checked of the segments' bytes at the start, as a whole percentage.

        Held at 99 until the result is in: the live segment grows during the run
        and a damaged segment is read twice, so the count can reach the total
        before the run ends.
        """
        if self.total_bytes <= 0:
            return 0
        return min(PERCENT_BEFORE_RESULT, self.done_bytes * 100 // self.total_bytes)

    def _checked(self, n: int) -> None:
        self.done_bytes += n

    def statement(self, as_html: bool) -> str | None:
        if self._statement is None:
            return None
        return statement.as_html(self._statement) if as_html else statement.as_text(self._statement)

    def start(self, anchors_text: str, by: str) -> tuple[int, str]:
        """(anchors given, error); error '' when the run started."""
        from gateway.ledger.verify import parse_anchor_file

        if self.running:
            return 0, "a verification is already running"
        try:
            anchors = parse_anchor_file(anchors_text)
        except ValueError as exc:
            return 0, str(exc)
        try:
            sizes = [p.stat().st_size for p in self.ledger_dir.glob("*.seg")]
        except OSError:
            sizes = []  # a segment removed meanwhile: the run reports what it finds
        self.total, self.total_bytes, self.done_bytes = len(sizes), sum(sizes), 0
        self.started_at = self.clock()
        tz, zone_note = self.zone()
        self.thread = threading.Thread(
            target=self._run, args=(anchors, by, tz, zone_note), name="web-verify", daemon=True
        )
        self.thread.start()
        return len(anchors), ""

    def _run(self, anchors: list, by: str, tz: dt.tzinfo, zone_note: str) -> None:
        from gateway.ledger.verify import check_anchors, verify_ledger

        try:
            result = verify_ledger(self.ledger_dir, None, 1, self._checked)
            checks = check_anchors(self.ledger_dir, anchors) if result.ok else []
            outcome = self._outcome(result, checks, by, tz, zone_note)
        except Exception as exc:  # an unreadable file: said on the page, never a crash
            outcome = (
                {"ok": False, "percent": 100, "summary": f"could not verify: {exc}", "by": by},
                None,
            )
        try:
            self.post(lambda: self._done(*outcome))
        except OSError:
            pass  # the gateway stopped meanwhile: nobody is left to show the result

    def _done(self, last: dict[str, Any], stmt: statement.Statement | None) -> None:
        self.thread = None
        self.last = last
        if stmt is not None:
            self._statement = stmt

    def _outcome(self, result, checks, by: str, tz: dt.tzinfo, zone_note: str) -> tuple:
        missed = [c for c in checks if not c.ok]
        if result.ok:
            summary = (
                f"ok: {result.entries} entries in {result.segments} segments; head seq "
                f"{result.head_seq} hash {result.head_hash.hex()}"
            )
            if missed:
                summary = f"ANCHOR MISSED ({len(missed)} of {len(checks)}); " + summary
        else:
            summary = (
                f"DAMAGED: first bad seq {result.first_bad_seq} in {result.file} at offset "
                f"{result.offset}: {result.reason}"
            )
        anchor_lines = [
            f"{c.anchor}: " + ("on the chain" if c.ok else f"MISSED ({c.reason})") for c in checks
        ]
        now = dt.datetime.now(tz)
        start = result.start
        identity = (
            f"seq {start.seq + 1} onwards from genesis"
            if start.seq == 0
            else f"from the retained checkpoint at seq {start.seq} hash {start.hash.hex()}"
        )
        stmt = statement.Statement(
            gateway=self.name,
            version=__version__,
            state_dir=str(self.state_dir.resolve()),
            identity=identity,
            checked=f"seq {start.seq + 1} to {result.head_seq}: {result.entries} entries in "
            f"{result.segments} segments",
            head=f"seq {result.head_seq} hash {result.head_hash.hex()}",
            verdict="INTACT" if result.ok else summary,
            anchors=anchor_lines,
            at=f"{now.strftime('%Y-%m-%d %H:%M:%S %z')} {zone_note.split(' ', 1)[0]}",
            command=f"web console verification by {by}",
        )
        last = {
            "percent": 100,
            "ok": result.ok and not missed,
            "summary": summary,
            "by": by,
            "at": now.strftime("%Y-%m-%d %H:%M:%S"),
            "anchors": anchor_lines,
        }
        return last, stmt

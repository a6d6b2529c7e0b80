"""Structured logging: one JSON object per line on stdout, for journald.

Loggers by stream: gateway.ops (operations), gateway.security (refused input,
limits), gateway.perf (slow syncs, loop stalls). Extra fields go in
`extra={"fields": {...}}`. Never log event contents or secrets.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out["fields"] = fields
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class RateLimitedLog:
    """At most `burst` lines per `window_s`, then one summary of what was suppressed.

    Used where the input comes from the network, so that a hostile client cannot
    flood the journal (10 lines per 10 s per kind is plenty for a human).
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, window_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, message: str, fields: dict, now: float) -> None:
        self.log(logging.WARNING, message, fields, now)

    def error(self, message: str, fields: dict, now: float) -> None:
        self.log(logging.ERROR, message, fields, now)

    def log(self, level: int, message: str, fields: dict, now: float) -> None:
        if now - self._window_start >= self.window_s:
            if self._suppressed:
                self.logger.log(
                    level,
                    "suppressed similar messages",
                    extra={"fields": {"count": self._suppressed, "like": message}},
                )
            self._window_start = now
            self._count = 0
            self._suppressed = 0
        if self._count < self.burst:
            self._count += 1
            self.logger.log(level, message, extra={"fields": fields})
        else:
            self._suppressed += 1

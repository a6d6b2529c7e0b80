"""Prometheus text exposition on an optional, read-only HTTP listener.

`metrics.listen` (off by default). One request per connection: `GET /metrics`
answers the figures of `gateway status`; anything else gets 404 or 405. The
listener never changes anything. It runs on the event loop like every socket.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from gateway.ingest.server import bind_tcp
from gateway.loop import EventLoop
from gateway.oneshot import OneShot, OneShotListener

# A request head larger than 8 KiB, or not complete within 5 s, is dropped.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
# At most 32 scrapers at once (a Prometheus server needs one).
MAX_CLIENTS = 32


def exposition(status: dict[str, Any]) -> str:
    """The status as Prometheus text format 0.0.4."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP gateway_{name} {help_}")
        lines.append(f"# TYPE gateway_{name} {kind}")
        for labels, value in samples:
            lines.append(f"gateway_{name}{labels} {value}")

    ledger = status["ledger"]
    metric("up", "gauge", "1 when healthy (the watchdog's rules)",
           [("", 1 if status["health"] == "ok" else 0)])  # fmt: skip
    metric("ledger_head_seq", "gauge", "seq of the last durable entry", [("", ledger["head_seq"])])
    metric("ledger_damaged", "gauge", "1 while acknowledged entries are gone (gateway accept-loss)",
           [("", 1 if ledger.get("damage") else 0)])  # fmt: skip
    metric("events_total", "counter", "events stored since start", [("", status["events"])])
    clock = status["clock"]
    metric("clock_synced", "gauge", "1 while the system clock is synchronised (NTP)",
           [("", 1 if clock["synced"] else 0)])  # fmt: skip
    metric("clock_unsynced_seconds", "gauge", "how long the clock has been unsynchronised",
           [("", clock["unsynced_for_s"])])  # fmt: skip
    metric("rejected_total", "counter", "lines refused since start", [("", status["rejected"])])
    metric("connections", "gauge", "open ingest connections", [("", status["connections"])])
    metric("ingest_native", "gauge", "1 when plain events take the native path (gateway/native/)",
           [("", 1 if status.get("ingest_path") == "native" else 0)])  # fmt: skip
    metric("acks_pending", "gauge", "replies not yet sent", [("", status["acks_pending"])])
    metric("commit_seconds", "summary", "ledger commit duration",
           [(f'{{quantile="{q}"}}', status["sync_ms"][k] / 1000)
            for q, k in (("0.5", "p50"), ("0.99", "p99"))])  # fmt: skip
    metric("ack_wait_seconds", "summary",
           "per commit, from its first entry being read to its acknowledgements being queued",
           [(f'{{quantile="{q}"}}', status["ack_wait_ms"][k] / 1000)
            for q, k in (("0.5", "p50"), ("0.99", "p99"))])  # fmt: skip
    metric("commits_total", "counter", "ledger commit batches since start",
           [("", ledger["batches"])])  # fmt: skip
    metric("syncs_total", "counter", "fdatasync calls since start", [("", ledger["syncs"])])
    if status.get("free_bytes") is not None:
        metric("free_bytes", "gauge", "free space on the state filesystem",
               [("", status["free_bytes"])])  # fmt: skip
    metric(
        "index_lag", "gauge", "entries not yet in the query index", [("", status["index"]["lag"])]
    )
    dedup = status.get("dedup")
    if dedup and dedup["state"] != "off":
        metric("dedup_ready", "gauge", "1 when event_id deduplication answers (0: loading)",
               [("", 1 if dedup["state"] == "ready" else 0)])  # fmt: skip
        metric("dedup_ids", "gauge", "event_ids remembered", [("", dedup["ids"])])
        metric("dedup_duplicates_total", "counter", "resends answered with the original seq",
               [("", dedup["duplicates"])])  # fmt: skip
        metric("dedup_conflicts_total", "counter", "different events under a known event_id",
               [("", dedup["conflicts"])])  # fmt: skip
        metric("dedup_evicted_early_total", "counter",
               "event_ids forgotten before their window ended (the table was full)",
               [("", dedup["evicted_early"])])  # fmt: skip
    replication = status.get("replication", {})
    if replication.get("enabled"):
        for name, key, help_ in (
            ("replication_lag_segments", "lag_segments", "sealed segments not yet confirmed"),
            ("replication_lag_bytes", "lag_bytes", "bytes of those segments"),
            ("replication_lag_seconds", "lag_s", "how long the oldest of them has waited"),
        ):
            metric(name, "gauge", help_, [("", replication[key])])
        metric("replication_uploaded_bytes_total", "counter", "bytes put into the store",
               [("", replication["bytes_uploaded"])])  # fmt: skip
    printers = status.get("printers", [])
    if printers:
        metric("printer_ready", "gauge", "1 when the printer's last attempt worked",
               [(f'{{printer="{p["name"]}"}}', 1 if p["state"] == "ready" else 0)
                for p in printers])  # fmt: skip
        metric("printer_queued", "gauge", "jobs waiting for the printer",
               [(f'{{printer="{p["name"]}"}}', p["queued"]) for p in printers])  # fmt: skip
    return "\n".join(lines) + "\n"


class MetricsServer(OneShotListener):
    def __init__(self, loop: EventLoop, address: str, status: Callable[[], dict]) -> None:
        super().__init__(loop, MAX_CLIENTS)
        self.address = address
        self.status = status

    def listen(self) -> tuple[str, int]:
        sock = bind_tcp(self.address, MAX_CLIENTS)
        self.serve(sock)
        return sock.getsockname()[:2]

    def client(self, sock: socket.socket) -> None:
        _Scrape(self, sock)


class _Scrape(OneShot):
    def __init__(self, server: MetricsServer, sock: socket.socket) -> None:
        self.server = server
        super().__init__(server.loop, sock, server.clients, MAX_REQUEST_BYTES, REQUEST_TIMEOUT_S)

    def overflowed(self) -> None:
        self._answer(431, "text/plain", f"request head over {MAX_REQUEST_BYTES} bytes\n")

    def received(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data and b"\n\n" not in data:
            return
        method, _, rest = data.partition(b" ")
        path = rest.split(b" ", 1)[0]
        if method != b"GET":
            self._answer(405, "text/plain", "read-only: GET /metrics\n")
        elif path.split(b"?")[0] != b"/metrics":
            self._answer(404, "text/plain", "GET /metrics\n")
        else:
            body = exposition(self.server.status())
            self._answer(200, "text/plain; version=0.0.4; charset=utf-8", body)

    def _answer(self, code: int, kind: str, body: str) -> None:
        reason = {
            200: "OK",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large",
        }[code]
        data = body.encode()
        self.respond(
            (
                f"HTTP/1.0 {code} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + data
        )

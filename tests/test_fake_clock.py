"""Timers on the injected clock: a FakeClock moves the gateway's time, nothing sleeps.

An in-process gateway runs on a FakeClock; the test advances it past idle
timeouts, report times and retry delays and turns the loop: what fires is
exactly what the time says, whatever the machine's clock does meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

from inproc import ledger, pump

from gateway.clock import FakeClock
from gateway.config import (
    Config,
    DailyReportConfig,
    IngestConfig,
    PrinterConfig,
    ReportsConfig,
    RouteConfig,
    SpoolConfig,
)
from gateway.service import Gateway


def test_an_idle_connection_is_closed_when_the_clock_says_so(tmp_path):
    clock = FakeClock()
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",), idle_timeout_s=30),
    )
    gw = Gateway(config, clock=clock)
    address = gw.start()[0]
    client = socket.create_connection(address, timeout=10)
    try:
        client.sendall(b'{"hello":{"ack":true}}\n')
        client.setblocking(False)
        got = bytearray()
        pump(gw, lambda: b"\n" in got or bool(got.extend(_recv(client))))
        assert b'"hello"' in got
        clock.advance(20)  # within the timeout: nothing happens, however long we turn
        for _ in range(20):
            gw.loop.run_once(max_wait=0.01)
        assert len(gw.ingest.connections) == 1
        clock.advance(15)  # past 30 s, and past the sweep interval (3 s)
        pump(gw, lambda: not gw.ingest.connections)
        client.setblocking(True)
        reply = json.loads(client.recv(4096))
        assert reply == {"ok": False, "error": "idle_timeout", "detail": "no data for 30 s"}
    finally:
        # Closed before the stop: on a FakeClock the shutdown's linger never times out.
        client.close()
        gw.request_stop()
        gw._finish()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return b""


def test_the_daily_report_is_made_at_its_time_on_the_clock(tmp_path):
    # Wall time: 2026-12-01 01:59:00 local; the report of 30 Nov is due at 02:00.
    start = dt.datetime(2026, 12, 1, 1, 59).astimezone().timestamp()
    clock = FakeClock(wall=start)
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        printers={"p": PrinterConfig(uri=f"file:{tmp_path / 'printed'}")},
        routes=(RouteConfig(printer=("p",)),),
        reports=ReportsConfig(daily=DailyReportConfig(printer="p", at="02:00")),
        spool=SpoolConfig(),
    )
    gw = Gateway(config, clock=clock)
    gw.start()
    try:
        # The ledger began the day before (its first entry on 30 Nov).
        gw.spool._first_day = dt.date(2026, 11, 30)
        for _ in range(10):
            gw.loop.run_once(max_wait=0.01)
        assert not [e for e in ledger(gw) if e["kind"] == "report"]
        clock.advance(61)  # 02:00:01
        pump(gw, lambda: [e for e in ledger(gw) if e["kind"] == "report"])
        (report,) = [e for e in ledger(gw) if e["kind"] == "report"]
        assert report["date"] == "2026-11-30" and report["number"] == 1
        assert report["received_at"] == clock.wall_us()  # received on the fake wall clock
    finally:
        gw.request_stop()
        gw._finish()


def test_a_connection_with_unread_bytes_is_not_idle(tmp_path):
    """After a stall (here: reading paused) bytes wait in the socket: not idle."""
    clock = FakeClock()
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",), idle_timeout_s=30),
    )
    gw = Gateway(config, clock=clock)
    address = gw.start()[0]
    client = socket.create_connection(address, timeout=10)
    try:
        pump(gw, lambda: len(gw.ingest.connections) == 1)
        gw.ingest._pause()  # as while a slow disk holds a commit: nothing is read
        client.sendall(b'{"event_type":"waiting"}\n')
        (conn,) = gw.ingest.connections.values()
        pump(gw, conn.has_unread)
        clock.advance(60)  # far past the idle timeout, with the bytes still unread
        for _ in range(20):
            gw.loop.run_once(max_wait=0.01)
        assert len(gw.ingest.connections) == 1
        gw.ingest._resume()
        pump(gw, lambda: gw.intake.stats.events == 1)
    finally:
        client.close()
        gw.request_stop()
        gw._finish()

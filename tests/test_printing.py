"""The print spool in an in-process gateway: routing, file and socket printers,
retries, uncertain deliveries, restarts, reprints, reports and the control socket."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from inproc import pump

from gateway.config import (
    Config,
    DailyReportConfig,
    IngestConfig,
    PrinterConfig,
    ReportsConfig,
    RouteConfig,
    SpoolConfig,
    load_config,
)
from gateway.control import request
from gateway.errors import ConfigError
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.ledger.verify import verify_ledger
from gateway.printing.spool import Router
from gateway.printing.uri import parse_uri
from gateway.service import Gateway


def ledger(gw_or_config) -> list[dict]:
    config = getattr(gw_or_config, "config", gw_or_config)
    return [
        {"seq": seq, **entries.decode(payload)}
        for seq, payload, _hash in LedgerReader(config.ledger_dir).entries()
    ]


def outcomes(gw_or_config) -> list[dict]:
    return [e for e in ledger(gw_or_config) if e["kind"] == "print"]


def events_durable(gw: Gateway) -> int:
    return max(e["seq"] for e in ledger(gw) if e["kind"] == "event")


def event_line(n: int, **fields) -> bytes:
    event = {
        "event_type": "subscription_cancelled",
        "timestamp": "2026-11-30T10:00:00Z",
        "subscription_id": n,
        **fields,
    }
    return json.dumps(event).encode() + b"\n"


def send(address, lines: list[bytes]) -> None:
    with socket.create_connection(address) as c:
        c.sendall(b"".join(lines))


class Gateways:
    """Starts in-process gateways on one state directory; stops them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[Gateway] = []

    def config(self, printers: dict, routes=None, **kw) -> Config:
        return Config(
            state_dir=self.tmp_path / "state",
            name="test-gw",
            ingest=IngestConfig(listen=("127.0.0.1:0",)),
            printers={n: PrinterConfig(**p) for n, p in printers.items()},
            routes=tuple(
                RouteConfig(**r) for r in (routes if routes is not None else [{"printer": ("p",)}])
            ),
            spool=SpoolConfig(retry_start_s=0.05, retry_cap_s=0.2, stall_timeout_s=1.0),
            **kw,
        )

    def start(self, config: Config) -> tuple[Gateway, tuple[str, int]]:
        gw = Gateway(config)
        bound = gw.start()
        self.running.append(gw)
        return gw, bound[0]

    def stop(self, gw: Gateway) -> None:
        gw.request_stop()
        gw._finish()
        self.running.remove(gw)

    def crash(self, gw: Gateway) -> None:
        """As close to kill -9 as in-process gets: no stop entry, no checkpoint."""
        for printer in gw.spool.printers.values() if gw.spool else ():
            if printer.delivery is not None:
                printer.delivery.abort()
        gw.spool._worker.shutdown(wait=True)
        gw.ingest.stop_accepting()
        gw.ingest.close_all()
        gw.control.close()
        gw.ledger.durability.stop()
        gw.loop.close()
        os.close(gw._lock_fd)
        self.running.remove(gw)


@pytest.fixture
def gateways(tmp_path):
    g = Gateways(tmp_path)
    yield g
    for gw in list(g.running):
        g.stop(gw)


# ---- configuration and routing


def test_printer_uris_parse_and_refuse_nonsense():
    u = parse_uri("socket://10.0.0.5:9101?contimeout=5&waiteof=false")
    assert (u.scheme, u.host, u.port, u.contimeout_s, u.waiteof) == (
        "socket",
        "10.0.0.5",
        9101,
        5.0,
        False,
    )
    assert parse_uri("socket://printer.local").port == 9100
    s = parse_uri("serial:/dev/ttyUSB0?baud=19200&flow=rtscts&parity=even&bits=7&stop=2")
    assert (s.path, s.baud, s.flow, s.parity, s.bits, s.stop) == (
        "/dev/ttyUSB0",
        19200,
        "rtscts",
        "even",
        7,
        2,
    )
    assert parse_uri("file:./var/printed").path == "./var/printed"
    for bad in [
        "",
        "printer",
        "lpd://x",
        "socket://",
        "socket://h:99999",
        "socket://h?x=1",
        "socket://h?contimeout=abc",
        "serial:ttyUSB0",
        "serial:/dev/x?baud=123",
        "serial:/dev/x?flow=dtr",
        "file:",
    ]:
        with pytest.raises(ValueError):
            parse_uri(bad)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_printing_configuration_is_checked(tmp_path):
    good = load_config(
        write(
            tmp_path,
            """
printers:
  counter: {uri: "socket://192.168.1.50:9100", language: escpos, width: 42}
  office: {uri: "serial:/dev/ttyUSB0?baud=19200&flow=rtscts"}
routes:
  - match: {event_type: subscription_cancelled}
    printer: counter
  - printer: [counter, office]
reports:
  daily: {at: "02:00", printer: office}
""",
        )
    )
    assert good.routes[0].printer == ("counter",) and good.routes[1].printer == (
        "counter",
        "office",
    )
    assert good.routes[0].match == {"event_type": "subscription_cancelled"}
    bad = {
        "printers: {p: {language: text}}": "printers.p.uri",
        "printers: {p: {uri: 'lpd://x'}}": "printers.p.uri",
        "printers: {p: {uri: 'file:x', width: 3}}": "printers.p.width",
        "printers: {'bad name': {uri: 'file:x'}}": "printers.bad name",
        "printers: {p: {uri: 'file:x'}}\nroutes: [{printer: q}]": "routes[0].printer",
        "printers: {p: {uri: 'file:x'}}\nroutes: [{match: {a: [1]}, printer: p}]": (
            "routes[0].match.a"
        ),
        "printers: {p: {uri: 'file:x'}}\nroutes: [{}]": "routes[0].printer",
        "printers: {p: {uri: 'file:x'}}\nreports: {daily: {printer: q}}": "reports.daily.printer",
        "printers: {p: {uri: 'file:x'}}\nreports: {daily: {printer: p, at: '25:00'}}": (
            "reports.daily.at"
        ),
        "spool: {retry_start_s: 10, retry_cap_s: 1}": "spool.retry_cap_s",
    }
    for text, key in bad.items():
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text))
        assert info.value.key == key, (text, info.value)


def test_router_first_match_wins_and_fans_out(gateways):
    config = gateways.config(
        {"a": {"uri": "file:a"}, "b": {"uri": "file:b"}},
        routes=[
            {"match": {"event_type": "x", "n": 1}, "printer": ("a",)},
            {"match": {"event_type": "x"}, "printer": ("a", "b")},
        ],
    )
    route = Router(config)
    assert route({"event_type": "x", "n": 1}) == ("a",)
    assert route({"event_type": "x", "n": 2}) == ("a", "b")
    assert route({"event_type": "y"}) == ()
    assert route({"n": 1}) == ()


# ---- file printers, outcomes, restarts


def printed_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*") if not p.name.startswith("."))


def test_every_routed_event_is_printed_once_with_an_outcome_entry(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config(
        {"p": {"uri": f"file:{out}"}, "q": {"uri": f"file:{tmp_path / 'q'}"}},
        routes=[{"match": {"subscription_id": 2}, "printer": ("p", "q")}, {"printer": ("p",)}],
    )
    gw, address = gateways.start(config)
    send(address, [event_line(n) for n in range(1, 4)])
    pump(gw, lambda: len(outcomes(gw)) == 4 and gw.ledger.durable.seq >= 8)
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
    assert printed_files(out) == [f"{seq:012d}-receipt.txt" for seq in events]
    assert printed_files(tmp_path / "q") == [f"{events[1]:012d}-receipt.txt"]
    done = {(o["job"], o["outcome"], o["attempts"]) for o in outcomes(gw)}
    assert done == {(f"{s}/p", "printed", 1) for s in events} | {(f"{events[1]}/q", "printed", 1)}
    text = (out / f"{events[0]:012d}-receipt.txt").read_text()
    assert "subscription_id: 1" in text and f"seq {events[0]}  hash" in text
    # The hash on paper is the ledger's chain hash of that event.
    chain = {seq: h.hex() for seq, _p, h in LedgerReader(config.ledger_dir).entries()}
    assert f"hash {chain[events[0]][:16]}" in text

    # A restart finds nothing left to print.
    gateways.stop(gw)
    gw, _ = gateways.start(config)
    pump(gw, lambda: gw.ledger.durable.seq > events[-1] + 4)
    assert all(len(p.queue) == 0 for p in gw.spool.printers.values())
    assert len(outcomes(gw)) == 4
    assert verify_ledger(config.ledger_dir).ok


def test_print_log_lines_carry_the_event_seq_and_its_connection_id(gateways, tmp_path, caplog):
    """Correlation: an event can be followed from its connection to the paper."""
    caplog.set_level("INFO", logger="gateway")
    gw, address = gateways.start(gateways.config({"p": {"uri": f"file:{tmp_path / 'out'}"}}))
    send(address, [event_line(1)])
    pump(gw, lambda: len(outcomes(gw)) == 1)
    event = next(e for e in ledger(gw) if e["kind"] == "event")
    delivered = [r for r in caplog.records if r.getMessage() == "print job delivered"]
    assert [(r.fields["seqs"], r.fields["conn"]) for r in delivered] == [
        ([event["seq"]], event["source"]["conn"])
    ]


def test_a_configuration_without_printers_has_no_spool(gateways, tmp_path):
    config = dataclasses.replace(gateways.config({}, routes=[]))
    gw, address = gateways.start(config)
    assert gw.spool is None and not gw.ledger.wants_values
    send(address, [event_line(1)])
    pump(gw, lambda: gw.ingest.stats.events == 1 and gw.ledger.durable.seq >= 2)
    assert outcomes(gw) == []


def test_jobs_queued_at_a_crash_are_printed_after_restart_marked_uncertain(gateways, tmp_path):
    out = tmp_path / "printed"
    # An unwritable "directory" (a file in its place) makes every attempt fail.
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    config = gateways.config({"p": {"uri": f"file:{blocker}"}})
    gw, address = gateways.start(config)
    send(address, [event_line(n) for n in range(1, 4)])
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 3)
    pump(gw, lambda: gw.spool.printers["p"].state == "error")
    gateways.crash(gw)

    config = dataclasses.replace(config, printers={"p": PrinterConfig(uri=f"file:{out}")})
    gw, _ = gateways.start(config)
    pump(gw, lambda: len(outcomes(gw)) == 3)
    files = printed_files(out)
    assert len(files) == 3
    first = (out / files[0]).read_text()
    assert "REPRINT - delivery uncertain" in first  # it may have been in progress
    assert all("REPRINT" not in (out / f).read_text() for f in files[1:])
    states = [(e["printer"], e["state"]) for e in ledger(gw) if e["kind"] == "printer"]
    assert states == [("p", "error")]  # one entry per change, not per retry
    assert verify_ledger(config.ledger_dir).ok


def test_a_clean_stop_does_not_mark_untouched_jobs_uncertain(gateways, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    config = gateways.config({"p": {"uri": f"file:{blocker}"}})
    gw, address = gateways.start(config)
    send(address, [event_line(1), event_line(2)])
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 2)
    pump(gw, lambda: gw.spool.printers["p"].retry_timer is not None)  # between attempts
    gateways.stop(gw)
    out = tmp_path / "printed"
    config = dataclasses.replace(config, printers={"p": PrinterConfig(uri=f"file:{out}")})
    gw, _ = gateways.start(config)
    pump(gw, lambda: len(outcomes(gw)) == 2)
    assert all("REPRINT" not in (out / f).read_text() for f in printed_files(out))


def test_a_full_spool_refuses_new_jobs_on_the_record(gateways, tmp_path, caplog):
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    config = dataclasses.replace(
        gateways.config({"p": {"uri": f"file:{blocker}"}}),
        spool=SpoolConfig(retry_start_s=10, retry_cap_s=10, max_jobs=2),
    )
    gw, address = gateways.start(config)
    send(address, [event_line(n) for n in range(1, 5)])
    pump(gw, lambda: len(outcomes(gw)) == 2)
    refused = outcomes(gw)
    assert [o["outcome"] for o in refused] == ["refused", "refused"]
    assert len(gw.spool.printers["p"].queue) == 2
    assert gw.spool.refused == 2
    # A flood of refusals is rate-limited in the log (every one is in the ledger).
    send(address, [event_line(n) for n in range(5, 45)])
    pump(gw, lambda: gw.spool.refused == 42)
    logged = [r for r in caplog.records if "the spool is full" in r.getMessage()]
    assert len(logged) == 10


def test_the_checkpoint_is_only_a_hint(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config({"p": {"uri": f"file:{out}"}})
    gw, address = gateways.start(config)
    send(address, [event_line(1), event_line(2)])
    pump(gw, lambda: len(outcomes(gw)) == 2)
    gateways.stop(gw)
    checkpoint = config.state_dir / "spool.json"
    for damage in (None, "{not json", json.dumps({"floor": 1})):
        if damage is None:
            checkpoint.unlink()
        else:
            checkpoint.write_text(damage)
        restarted, _ = gateways.start(config)
        pump(restarted, lambda g=restarted: g.ledger.durable.seq > 0)
        assert all(len(p.queue) == 0 for p in restarted.spool.printers.values())
        gateways.stop(restarted)
    assert len(printed_files(out)) == 2 and len(outcomes(config)) == 2


# ---- control socket: status, reprint, status page, reports


def test_control_socket_status_reprint_and_status_page(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config({"p": {"uri": f"file:{out}"}})
    gw, address = gateways.start(config)
    mode = stat.S_IMODE(os.stat(config.control_path).st_mode)
    assert mode == 0o660

    def ask(command: dict) -> dict:
        replies = []
        import threading

        t = threading.Thread(target=lambda: replies.append(request(config.control_path, command)))
        t.start()
        pump(gw, lambda: bool(replies))
        t.join()
        return replies[0]

    assert ask({"cmd": "reprint"}) == {"ok": False, "error": "no receipt has been printed yet"}
    send(address, [event_line(1), event_line(2)])
    pump(gw, lambda: len(outcomes(gw)) == 2)
    status = ask({"cmd": "status"})["status"]
    assert status["health"] == "ok" and status["printers"][0]["state"] == "ready"
    assert events_durable(gw) <= status["ledger"]["head_seq"] <= gw.ledger.durable.seq
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]

    assert ask({"cmd": "reprint"})["copy"] == 1  # the last receipt
    assert ask({"cmd": "reprint", "seq": events[0]})["copy"] == 1
    pump(gw, lambda: len(outcomes(gw)) == 4)
    assert ask({"cmd": "reprint", "seq": events[0]})["copy"] == 2
    assert ask({"cmd": "print_status_page"})["ok"]
    pump(gw, lambda: len(outcomes(gw)) == 6)
    for bad in (
        {"cmd": "reprint", "seq": 10_000},
        {"cmd": "reprint", "seq": 1},
        {"cmd": "reprint", "seq": "x"},
        {"cmd": "reprint", "printer": "nope"},
        {"cmd": "reprint", "printer": ["p"]},
        {"cmd": "print_status_page", "printer": 7},
        {"cmd": "report", "date": "yesterday"},
        {"cmd": "nope"},
    ):
        assert ask(bad)["ok"] is False, bad

    files = printed_files(out)
    copies = [(out / f).read_text() for f in files if "reprint" in f]
    assert [c.count("*** COPY 1 ***") for c in copies] == [1, 1, 0]
    assert "*** COPY 2 ***" in copies[2]
    page = next((out / f).read_text() for f in files if "status" in f)
    assert "test-gw status" in page and "printer p: ready" in page
    reprints = [e for e in ledger(gw) if e["kind"] == "reprint"]
    assert [(r["event_seq"], r["copy"]) for r in reprints] == [
        (events[1], 1),
        (events[0], 1),
        (events[0], 2),
    ]


def test_reports_are_numbered_without_gaps_across_restarts(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config({"p": {"uri": f"file:{out}"}}, routes=[])
    gw, address = gateways.start(config)
    send(address, [event_line(1), event_line(2)])
    pump(gw, lambda: gw.ingest.stats.events == 2 and gw.ledger.durable.seq >= 3)
    today = dt.date.today().isoformat()
    answers = []
    gw.spool.request_report(dt.date.today(), "p", "test", answers.append)
    pump(gw, lambda: bool(answers))
    assert answers[0]["number"] == 1 and answers[0]["count"] == 2
    pump(gw, lambda: len(outcomes(gw)) == 1)
    gateways.stop(gw)
    (config.state_dir / "spool.json").unlink()  # the number comes from the ledger
    gw, _ = gateways.start(config)
    gw.spool.request_report(dt.date.today(), "p", "test", answers.append)
    pump(gw, lambda: len(answers) == 2)
    assert answers[1]["number"] == 2
    pump(gw, lambda: len(outcomes(gw)) == 2)
    reports = sorted(out.glob("*-report.txt"))
    assert len(reports) == 2
    text = reports[0].read_text()
    assert f"daily compliance report {today}" in text and "report no. 1" in text
    assert "entries 2:" in text


def test_missed_daily_reports_are_caught_up_once_each(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config(
        {"p": {"uri": f"file:{out}"}},
        routes=[],
        reports=ReportsConfig(daily=DailyReportConfig(printer="p", at="00:00")),
    )
    gw, address = gateways.start(config)
    send(address, [event_line(1)])
    pump(gw, lambda: gw.ledger.durable.seq >= 2)
    gateways.stop(gw)
    # Pretend the gateway has been down since the ledger began three days ago.
    spool = json.loads((config.state_dir / "spool.json").read_text())
    spool["floor"] = 1
    (config.state_dir / "spool.json").write_text(json.dumps(spool))
    import gateway.printing.spool as spool_module

    first = dt.date.today() - dt.timedelta(days=3)
    original = spool_module.Spool._first_ledger_day
    spool_module.Spool._first_ledger_day = lambda self: first
    try:
        gw, _ = gateways.start(config)
        pump(gw, lambda: len(outcomes(gw)) == 3)
        gateways.stop(gw)
        gw, _ = gateways.start(config)  # a second start makes none again
        pump(gw, lambda: gw.ledger.durable.seq > 0)
        pump(gw, lambda: gw.ledger.settled)
    finally:
        spool_module.Spool._first_ledger_day = original
    reports = [e for e in ledger(gw) if e["kind"] == "report"]
    assert [(r["number"], r["date"]) for r in reports] == [
        (i + 1, (first + dt.timedelta(days=i)).isoformat()) for i in range(3)
    ]


# ---- raw TCP printers against the emulator

from gateway.printing.emulator import Emulator, Fault  # noqa: E402


@pytest.fixture
def emulator(tmp_path):
    with Emulator(tmp_path / "emulator") as emu:
        yield emu


def socket_printer(emu: Emulator, language: str = "escpos") -> dict:
    return {"uri": f"socket://127.0.0.1:{emu.port}?contimeout=1", "language": language}


def printed(gw: Gateway, emu: Emulator, n: int, timeout: float = 10.0) -> list[bytes]:
    """Run the gateway until the emulator has `n` complete jobs."""
    pump(gw, lambda: len(emu.jobs()) >= n, timeout)
    return emu.jobs()


def receipt_seq(job: bytes) -> int:
    import re

    return int(re.search(rb"seq (\d+)  hash", job).group(1))


def test_socket_printer_prints_each_receipt_once_in_order(gateways, emulator):
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator)}))
    send(address, [event_line(n) for n in range(1, 6)])
    jobs = printed(gw, emulator, 5, 10.0)
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
    assert [receipt_seq(j) for j in jobs] == events
    assert all(j.startswith(b"\x1b@") and j.endswith(b"\x1dVB\x03") for j in jobs)
    pump(gw, lambda: len(outcomes(gw)) == 5)
    assert [o["bytes"] for o in outcomes(gw)] == [len(j) for j in jobs]


def test_printer_away_then_back_prints_everything_in_order(gateways, emulator):
    emulator.set_fault(Fault("refuse"))
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator)}))
    send(address, [event_line(n) for n in range(1, 4)])
    pump(gw, lambda: gw.spool.printers["p"].state == "error")
    pump(gw, lambda: gw.spool.printers["p"].queue[0].attempts >= 3)  # retried with backoff
    # Ingest carries on while the printer is away.
    send(address, [event_line(4)])
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 4)
    emulator.set_fault(Fault())
    jobs = printed(gw, emulator, 4, 10.0)
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
    assert [receipt_seq(j) for j in jobs] == events
    assert not any(b"REPRINT" in j for j in jobs)  # refused: nothing was sent
    pump(gw, lambda: len(outcomes(gw)) == 4 and gw.spool.printers["p"].state == "ready")
    states = [(e["state"], bool(e["error"])) for e in ledger(gw) if e["kind"] == "printer"]
    assert states == [("error", True), ("ready", False)]


def test_a_connection_reset_mid_job_is_printed_again_marked_uncertain(gateways, emulator):
    emulator.set_fault(Fault("reset-after", after_bytes=20, times=1))
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator, "text")}))
    send(address, [event_line(1)])
    jobs = printed(gw, emulator, 1, 10.0)
    assert len(jobs) == 1 and b"*** REPRINT - delivery uncertain ***" in jobs[0]
    pump(gw, lambda: len(outcomes(gw)) == 1)
    (outcome,) = outcomes(gw)
    assert outcome["uncertain"] is True and outcome["attempts"] == 2
    assert outcome["outcome"] == "printed"


def big_day(gw: Gateway, address) -> None:
    """4,000 events today: a day report of about 600 KiB, more than socket buffers hold."""
    send(address, [event_line(n, note="x" * 100) for n in range(1, 4001)])
    pump(gw, lambda: gw.ingest.stats.events == 4000 and gw.ledger.durable.seq >= 4001)


def test_a_printer_that_closes_before_reading_a_large_job_is_retried(gateways, emulator):
    # A printer that closes at once resets what it did not read; the sender sees
    # the reset while it still has data to send. (A job small enough to sit whole
    # in the printer's socket buffer is acknowledged by its kernel before the close:
    # no TCP sender can tell that from a printed job; docs/printing.md.)
    emulator.set_fault(Fault("close-before-read", times=2))
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator, "pcl")}, routes=[]))
    big_day(gw, address)
    gw.spool.request_report(dt.date.today(), "p", "test", lambda reply: None)
    jobs = printed(gw, emulator, 1, 15.0)
    assert len(jobs) == 1 and jobs[0].count(b"\x1b%-12345X") == 3
    pump(gw, lambda: len(outcomes(gw)) == 1)
    assert outcomes(gw)[0]["attempts"] == 3


def test_a_printer_that_closes_at_once_gets_the_receipt_again(gateways, emulator):
    # A receipt small enough to sit whole in the printer's socket buffer: the
    # printer closes at once, unread. The attempt is judged not delivered (the
    # printer closed before anything was sent), and the job is printed again.
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator, "text")}))
    for n in range(1, 6):  # the race between the printer's close and the send, 5 times
        emulator.set_fault(Fault("close-before-read", times=1))
        send(address, [event_line(n)])
        jobs = printed(gw, emulator, n, 10.0)
        pump(gw, lambda n=n: len(outcomes(gw)) == n)
        assert len(jobs) == n
        assert outcomes(gw)[-1]["attempts"] == 2, outcomes(gw)[-1]


def test_a_printer_that_stops_reading_fails_the_attempt_and_the_job_waits(
    gateways, emulator, tmp_path
):
    emulator.set_fault(Fault("stall"))
    config = gateways.config({"p": socket_printer(emulator, "pcl")}, routes=[])
    gw, address = gateways.start(config)
    big_day(gw, address)  # a report that fills the socket buffers of a stalled printer
    gw.spool.request_report(dt.date.today(), "p", "test", lambda reply: None)
    pump(gw, lambda: gw.spool.printers["p"].state == "error", timeout=15.0)
    assert "stopped reading" in gw.spool.printers["p"].error
    # Ingest is unaffected while the printer is stuck.
    send(address, [event_line(9999)])
    pump(gw, lambda: gw.ingest.stats.events == 4001)
    emulator.set_fault(Fault())
    jobs = printed(gw, emulator, 1, 15.0)
    assert len(jobs) == 1 and b"REPRINT - delivery uncertain" in jobs[0]
    assert jobs[0].count(b"\x1b%-12345X") == 3  # one whole PJL job
    pump(gw, lambda: len(outcomes(gw)) == 1)
    assert outcomes(gw)[0]["uncertain"] is True


def test_one_printer_down_does_not_hold_up_another(gateways, emulator, tmp_path):
    with Emulator(tmp_path / "down", fault=Fault("refuse")) as down:
        config = gateways.config(
            {"up": socket_printer(emulator), "down": socket_printer(down)},
            routes=[{"printer": ("down", "up")}],
        )
        gw, address = gateways.start(config)
        send(address, [event_line(n) for n in range(1, 4)])
        assert len(printed(gw, emulator, 3, 10.0)) == 3
        pump(gw, lambda: gw.spool.printers["down"].state == "error")
        assert len(gw.spool.printers["down"].queue) == 3


def test_alert_after_a_printer_stays_in_error(gateways, emulator, caplog):
    emulator.set_fault(Fault("refuse"))
    config = dataclasses.replace(
        gateways.config({"p": socket_printer(emulator)}),
        spool=SpoolConfig(retry_start_s=0.05, retry_cap_s=0.1, alert_after_s=1),
    )
    gw, address = gateways.start(config)
    send(address, [event_line(1)])
    pump(gw, lambda: gw.spool.printers["p"].alerted, timeout=5.0)
    assert gw.status()["health"] == "printer alert"
    assert any(
        r.levelname == "ERROR" and "in error for too long" in r.getMessage() for r in caplog.records
    )
    emulator.set_fault(Fault())
    pump(gw, lambda: gw.spool.printers["p"].state == "ready")
    assert gw.status()["health"] == "ok"


# ---- serial printers through a pseudo-terminal


class Pty:
    """A pseudo-terminal pair: the gateway writes to the slave, the test reads the master."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)  # the gateway opens it by name
        os.set_blocking(self.master, False)
        self.received = bytearray()

    def read(self) -> bytes:
        try:
            while chunk := os.read(self.master, 65536):
                self.received += chunk
        except (BlockingIOError, OSError):
            pass
        return bytes(self.received)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def test_a_serial_job_through_a_pseudo_terminal_with_rtscts(gateways):
    """The rtscts option is accepted and a job goes through with it; a pty has no
    RTS/CTS lines, so this cannot show that a printer dropping CTS pauses the job
    (docs/testing.md, "Serial flow control")."""
    pty = Pty()
    try:
        uri = f"serial:{pty.path}?baud=19200&flow=rtscts&bits=8&parity=none&stop=1"
        gw, address = gateways.start(gateways.config({"p": {"uri": uri, "language": "escpos"}}))
        send(address, [event_line(1), event_line(2)])
        pump(gw, lambda: pty.read().count(b"\x1dVB\x03") == 2 and len(outcomes(gw)) == 2)
        data = pty.read()
        events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
        for seq in events:
            assert f"seq {seq}  hash".encode() in data
        assert [o["outcome"] for o in outcomes(gw)] == ["printed", "printed"]
        assert sum(o["bytes"] for o in outcomes(gw)) == len(data)
    finally:
        pty.close()


def test_a_missing_serial_port_is_retried_and_the_job_waits(gateways, tmp_path):
    uri = f"serial:{tmp_path / 'ttyUSB9'}"
    gw, address = gateways.start(gateways.config({"p": {"uri": uri}}))
    send(address, [event_line(1)])
    pump(gw, lambda: gw.spool.printers["p"].state == "error")
    pump(gw, lambda: gw.spool.printers["p"].queue[0].attempts >= 3)
    assert "ttyUSB9" in gw.spool.printers["p"].error
    assert outcomes(gw) == []  # waiting, not failed


def test_an_unplugged_serial_adapter_fails_the_attempt(gateways):
    pty = Pty()
    uri = f"serial:{pty.path}"
    gw, address = gateways.start(gateways.config({"p": {"uri": uri}}))
    pty.close()  # the other end goes away: writes get EIO, like an unplugged adapter
    send(address, [event_line(1)])
    pump(gw, lambda: gw.spool.printers["p"].state == "error")
    assert outcomes(gw) == []


def test_a_ledger_that_gains_its_first_printer_does_not_print_its_history(gateways, tmp_path):
    out = tmp_path / "printed"
    config = gateways.config({}, routes=[])
    gw, address = gateways.start(config)
    send(address, [event_line(1), event_line(2)])
    pump(gw, lambda: gw.ingest.stats.events == 2 and gw.ledger.durable.seq >= 3)
    gateways.stop(gw)
    assert not (config.state_dir / "spool.json").exists()

    config = gateways.config({"p": {"uri": f"file:{out}"}})
    gw, address = gateways.start(config)
    send(address, [event_line(3)])
    pump(gw, lambda: len(outcomes(gw)) == 1)
    pump(gw, lambda: not any(p.queue for p in gw.spool.printers.values()))
    files = printed_files(out)
    assert len(files) == 1 and "subscription_id: 3" in (out / files[0]).read_text()
    # and a lost checkpoint later still does not bring the history back
    gateways.stop(gw)
    (config.state_dir / "spool.json").unlink()
    gw, _ = gateways.start(config)
    pump(gw, lambda: gw.ledger.durable.seq > 0)
    assert not any(p.queue for p in gw.spool.printers.values())


def test_a_slow_printer_gets_every_job_whole(gateways, emulator):
    emulator.set_fault(Fault("slow"))  # 64 bytes every 10 ms
    gw, address = gateways.start(gateways.config({"p": socket_printer(emulator)}))
    send(address, [event_line(n) for n in range(1, 4)])
    jobs = printed(gw, emulator, 3, 20.0)
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
    assert [receipt_seq(j) for j in jobs] == events
    assert not any(b"REPRINT" in j for j in jobs)


def test_retry_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success(gateways, emulator):
    """spool.retry_start_s and retry_cap_s (docs/printing.md): 1, 2, 4, 8, 8 s between
    attempts while the printer refuses; after a delivery the next failure waits 1 s again."""
    from gateway.clock import FakeClock
    from gateway.loop import EventLoop

    clock = FakeClock()
    config = gateways.config({"p": socket_printer(emulator)})
    spool = dataclasses.replace(config.spool, retry_start_s=1.0, retry_cap_s=8.0)
    config = dataclasses.replace(config, spool=spool)
    emulator.set_fault(Fault("refuse"))
    gw = Gateway(config, loop=EventLoop(clock=clock))
    address = gw.start()[0]
    gateways.running.append(gw)
    printer = gw.spool.printers["p"]
    step = 0.25  # the fake clock's resolution: intervals are measured to within it

    def attempt_times(n: int) -> list[float]:
        """Fake times of the next `n` attempts, each after the previous one failed."""
        times = []
        for _ in range(n):
            pump(gw, lambda: printer.retry_timer is not None)  # the last attempt failed
            before = printer.queue[0].attempts
            start = clock.now
            while printer.queue[0].attempts == before:
                clock.now += step
                for _turn in range(3):
                    gw.loop.run_once(max_wait=0.005)
                assert clock.now - start < 60, "no retry within a minute"
            times.append(clock.now)
        return times

    send(address, [event_line(1)])
    pump(gw, lambda: printer.queue and printer.queue[0].attempts == 1)
    first = clock.now
    times = [first, *attempt_times(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [1, 2, 4, 8, 8], strict=True):
        assert expected <= gap <= expected + step, gaps

    emulator.set_fault(Fault())
    pump(gw, lambda: printer.retry_timer is not None)
    clock.now += 8 + step
    # The delivery waits SETTLE_S of the fake clock after connecting: step it on.
    for _ in range(4000):
        if emulator.jobs():
            break
        clock.now += step / 5
        for _turn in range(3):
            gw.loop.run_once(max_wait=0.005)
    printed(gw, emulator, 1)
    pump(gw, lambda: len(outcomes(gw)) == 1 and printer.state == "ready")

    emulator.set_fault(Fault("refuse"))
    send(address, [event_line(2)])
    pump(gw, lambda: printer.queue and printer.queue[0].attempts == 1)
    first = clock.now
    (again,) = attempt_times(1)
    assert 1 <= again - first <= 1 + step, "the delay did not start over after a success"


def test_a_resolver_that_never_answers_does_not_hold_the_loop(gateways, monkeypatch):
    """Printer host names are resolved off the loop: while the resolver hangs,
    events are still acknowledged, and the attempt fails after the timeout."""
    import threading

    from gateway.printing import transports

    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host, *args, **kwargs):
        if host == "printer.invalid":
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    monkeypatch.setattr(transports, "RESOLVE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(transports, "RESOLVER", transports.Resolver())
    config = gateways.config({"p": {"uri": "socket://printer.invalid:9100"}})
    gw, address = gateways.start(config)
    try:
        client = socket.create_connection(address, timeout=10)
        client.sendall(b'{"hello":{"ack":true}}\n' + event_line(1))
        client.setblocking(False)
        got = bytearray()

        def acked() -> bool:
            try:
                got.extend(client.recv(4096))
            except BlockingIOError:
                pass
            return got.count(b"\n") >= 2

        pump(gw, acked)
        printer = gw.spool.printers["p"]
        pump(gw, lambda: printer.delivery is not None)  # the attempt is resolving its host
        client.setblocking(True)
        client.sendall(event_line(2))
        client.setblocking(False)
        pump(gw, lambda: acked() and got.count(b"\n") >= 3)
        assert not release.is_set()  # acknowledged while the resolver still hangs
        pump(gw, lambda: "no answer in 0.5 s" in printer.error)
        client.close()
    finally:
        release.set()


def test_receipts_print_the_latest_signed_checkpoint_the_same_after_a_restart(gateways, tmp_path):
    from gateway.printing.spool import prepare

    out = tmp_path / "printed"
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")  # every attempt fails: the jobs stay queued
    config = gateways.config({"p": {"uri": f"file:{blocker}", "width": 80}})
    gw, address = gateways.start(config)
    send(address, [event_line(1)])
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 1)
    checkpoints = gw.fleet.checkpoints
    checkpoints.sign("interval")
    pump(gw, lambda: checkpoints.latest is not None)
    short = checkpoints.statistics().latest_short.removeprefix("checkpoint ")
    fingerprint = gw.fleet.identity.public.fingerprint[:16]
    send(address, [event_line(2), event_line(3)])
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 3)
    queued = list(gw.spool.printers["p"].queue)
    live = [prepare(gw.spool.context, config.printers["p"], job, None) for job in queued]
    gateways.crash(gw)

    # After the crash the spool rebuilds the jobs from the ledger: same bytes
    # (the first is marked uncertain: it may have been on its way).
    printers = {"p": PrinterConfig(uri=f"file:{out}", width=80)}
    gw, _ = gateways.start(dataclasses.replace(config, printers=printers))
    pump(gw, lambda: len(outcomes(gw)) == 3)
    printed = [(out / f).read_bytes() for f in printed_files(out)]
    assert printed[1:] == live[1:]
    first, *later = [p.decode() for p in printed]
    assert "checkpoint:" not in first  # none was signed before the first event
    for text in later:
        assert f"checkpoint: {short}" in text
        assert f"box key: test-gw {fingerprint}" in text


def test_a_report_and_a_reprint_print_the_signed_checkpoint_before_their_entry(gateways, tmp_path):
    from gateway.printing.reports import collect_day
    from gateway.render.languages import render
    from gateway.render.templates import daily_report

    out = tmp_path / "printed"
    config = gateways.config({"p": {"uri": f"file:{out}", "width": 80}})
    gw, address = gateways.start(config)
    send(address, [event_line(1)])
    pump(gw, lambda: len(outcomes(gw)) == 1)
    checkpoints = gw.fleet.checkpoints
    signed_at = checkpoints.sign("interval")
    pump(gw, lambda: checkpoints.latest is not None)
    short = checkpoints.statistics().latest_short.removeprefix("checkpoint ")
    send(address, [event_line(2)])
    pump(gw, lambda: len(outcomes(gw)) == 2)
    events = [e["seq"] for e in ledger(gw) if e["kind"] == "event"]
    assert events[0] < signed_at < events[1]
    # A checkpoint signed after the day's last entry is not the one printed.
    checkpoints.sign("interval")
    pump(gw, lambda: checkpoints.latest[0] > signed_at)
    answers = []
    gw.spool.request_report(dt.date.today(), "p", "test", answers.append)
    gw.spool.request_reprint(events[1], "p", "test", answers.append)
    gw.spool.request_reprint(events[0], "p", "test", answers.append)
    pump(gw, lambda: len(answers) == 3 and len(outcomes(gw)) == 5)
    files = printed_files(out)
    report = next((out / f).read_text() for f in files if "report" in f)
    assert "latest signed checkpoint before it:" in report
    assert f"checkpoint: {short}" in report
    reprints = [(out / f).read_text() for f in files if "reprint" in f]
    assert f"checkpoint: {short}" in reprints[0]  # of the event after the checkpoint
    assert "checkpoint:" not in reprints[1]  # of the event before any
    (entry,) = [e for e in ledger(gw) if e["kind"] == "reprint" and e["event_seq"] == events[1]]
    assert entry["checkpoint"]["entry_seq"] == signed_at
    # The preview from the ledger prints the same checkpoint.
    rows, first, last, last_hash = collect_day(config.ledger_dir, dt.date.today())
    preview = render(
        daily_report("test-gw", "d", None, rows, first, last, last_hash), "text", 80
    ).decode()
    assert f"checkpoint: {short}" in preview

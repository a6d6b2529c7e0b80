"""The front panel: evdev parsing, the button through a FIFO, the status LED."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
from inproc import ledger, pump

from board.button import find_device
from board.evdev import (
    EV_KEY,
    EV_SYN,
    KEY_PRESS,
    KEY_RELEASE,
    KEY_REPEAT,
    SYN_DROPPED,
    SYN_REPORT,
    EvdevParser,
    InputEvent,
    KeyTracker,
    Press,
    encode,
)
from board.fake import press, press_records
from gateway.config import (
    BoardConfig,
    ButtonConfig,
    Config,
    IngestConfig,
    PrinterConfig,
    RouteConfig,
    SpoolConfig,
)
from gateway.service import Gateway


@pytest.mark.parametrize("size", [16, 24])
def test_parser_reads_both_record_layouts_fed_in_pieces(size):
    events = [InputEvent(100.25, EV_KEY, 210, KEY_PRESS), InputEvent(100.5, EV_SYN, 0, 0)]
    data = b"".join(encode(e, size) for e in events)
    parser = EvdevParser(size)
    out = []
    for i in range(len(data)):  # byte by byte
        out += parser.feed(data[i : i + 1])
    assert out == events


def test_parser_refuses_other_sizes():
    with pytest.raises(ValueError):
        EvdevParser(20)


def key(t: float, value: int, code: int = 210) -> InputEvent:
    return InputEvent(t, EV_KEY, code, value)


def test_tracker_measures_presses_and_ignores_repeats_and_other_keys():
    k = KeyTracker(210)
    assert k.feed(key(10.0, KEY_PRESS)) is None
    assert k.feed(key(10.5, KEY_REPEAT)) is None
    assert k.feed(key(10.6, KEY_PRESS, code=30)) is None
    assert k.feed(key(11.0, KEY_RELEASE, code=30)) is None
    assert k.feed(key(12.5, KEY_RELEASE)) == Press(2.5)
    assert k.feed(key(13.0, KEY_RELEASE)) is None  # a release without a press


def test_tracker_forgets_a_press_across_syn_dropped():
    k = KeyTracker(210)
    k.feed(key(1.0, KEY_PRESS))
    k.feed(InputEvent(1.1, EV_SYN, SYN_DROPPED, 0))
    assert k.feed(key(1.2, KEY_PRESS)) is None  # discarded until SYN_REPORT
    k.feed(InputEvent(1.3, EV_SYN, SYN_REPORT, 0))
    assert k.feed(key(5.0, KEY_RELEASE)) is None  # its press was lost: no 4 s "hold"
    k.feed(key(6.0, KEY_PRESS))
    assert k.feed(key(6.2, KEY_RELEASE)) == Press(pytest.approx(0.2))


def test_find_device_by_path_and_by_name(tmp_path):
    assert find_device("/dev/input/event3") == Path("/dev/input/event3")
    (tmp_path / "event0").write_bytes(b"")  # not an input device: EVIOCGNAME fails
    assert find_device("reprint", tmp_path) is None


@pytest.fixture
def front_panel(tmp_path):
    """A gateway with a file printer and the fake board; stopped at the end."""
    made = []

    def start(printer_uri: str | None = None) -> Gateway:
        uri = printer_uri or f"file:{tmp_path / 'printed'}"
        config = Config(
            state_dir=tmp_path / "state",
            ingest=IngestConfig(listen=("127.0.0.1:0",)),
            printers={"p": PrinterConfig(uri=uri)},
            routes=(RouteConfig(printer=("p",)),),
            spool=SpoolConfig(retry_start_s=0.05, retry_cap_s=0.1),
            board=BoardConfig(fake=True, button=ButtonConfig(long_press_s=2.0)),
        )
        gw = Gateway(config)
        gw.address = gw.start()[0]
        made.append(gw)
        return gw

    yield start
    for gw in made:
        gw.request_stop()
        gw._finish()


def led_state(gw: Gateway) -> dict:
    d = gw.config.fake_board_dir / "leds" / "gw-status"
    return {name: (d / name).read_text().strip() for name in ("trigger", "brightness")}


def test_short_press_reprints_long_press_prints_the_status_page(front_panel, tmp_path):
    gw = front_panel()
    with socket.create_connection(gw.address) as c:
        c.sendall(json.dumps({"event_type": "x", "timestamp": "2026-11-30T10:00:00Z"}).encode())
    pump(gw, lambda: any(e["kind"] == "print" for e in ledger(gw)))
    fifo = gw.config.fake_board_dir / "button"
    press(fifo, 0.4)
    press(fifo, 2.5)
    pump(gw, lambda: sum(e["kind"] == "print" for e in ledger(gw)) == 3)
    buttons = [e for e in ledger(gw) if e["kind"] == "button"]
    assert [(b["held_s"], b["action"]) for b in buttons] == [(0.4, "reprint"), (2.5, "status_page")]
    files = sorted(p.name for p in (tmp_path / "printed").iterdir())
    kinds = {f.split("-", 1)[1]: f for f in files}
    assert sorted(kinds) == ["receipt.txt", "reprint.txt", "status.txt"]
    assert "*** COPY 1 ***" in (tmp_path / "printed" / kinds["reprint.txt"]).read_text()
    reprint = next(e for e in ledger(gw) if e["kind"] == "reprint")
    assert reprint["requested_by"] == "button"


def test_the_button_survives_its_writer_going_away(front_panel):
    gw = front_panel()
    fifo = gw.config.fake_board_dir / "button"
    press(fifo, 2.5)  # each press opens and closes the FIFO
    pump(gw, lambda: sum(e["kind"] == "button" for e in ledger(gw)) == 1)

    def pressed_again() -> bool:
        try:
            press(fifo, 2.5)
        except OSError:  # ENXIO: not reopened yet
            return False
        return True

    pump(gw, pressed_again)
    pump(gw, lambda: sum(e["kind"] == "button" for e in ledger(gw)) == 2)


def test_partial_records_wait_for_the_rest(front_panel):
    gw = front_panel()
    fifo = gw.config.fake_board_dir / "button"
    import os

    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        data = press_records(2.5)
        os.write(fd, data[:7])
        pump(gw, lambda: gw.panel.button is not None and len(gw.panel.button.parser.buf) == 7)
        os.write(fd, data[7:])
        pump(gw, lambda: sum(e["kind"] == "button" for e in ledger(gw)) == 1)
    finally:
        os.close(fd)


def test_led_heartbeat_blinks_for_a_printer_error_and_recovers(front_panel, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    gw = front_panel(f"file:{blocker}")
    pump(gw, lambda: led_state(gw)["trigger"] == "heartbeat")
    with socket.create_connection(gw.address) as c:
        c.sendall(b'{"event_type":"x"}\n')
    pump(gw, lambda: led_state(gw)["trigger"] == "timer", timeout=5.0)
    d = gw.config.fake_board_dir / "leds" / "gw-status"
    assert (d / "delay_on").read_text().strip() == "100"
    blocker.unlink()
    blocker.mkdir()
    pump(gw, lambda: led_state(gw)["trigger"] == "heartbeat", timeout=5.0)


def test_led_steady_on_while_the_ledger_fails(front_panel, monkeypatch):
    from gateway.ledger import durability

    monkeypatch.setattr(durability, "RETRY_START_S", 0.01)
    monkeypatch.setattr(durability, "RETRY_CAP_S", 0.02)
    gw = front_panel()
    pump(gw, lambda: led_state(gw)["trigger"] == "heartbeat")
    real = gw.ledger.durability.writer
    failing = {"on": True}

    def writer(batch, fds, sync):
        if failing["on"]:
            raise OSError(5, "injected EIO")
        return real(batch, fds, sync)

    gw.ledger.durability.writer = writer
    with socket.create_connection(gw.address) as c:
        c.sendall(b'{"event_type":"x"}\n')
    pump(gw, lambda: led_state(gw) == {"trigger": "none", "brightness": "1"}, timeout=5.0)
    failing["on"] = False
    pump(gw, lambda: led_state(gw)["trigger"] == "heartbeat", timeout=5.0)


def test_a_missing_button_and_led_are_logged_and_the_gateway_runs(tmp_path, caplog):
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        board=dataclasses.replace(
            BoardConfig(),
            button=ButtonConfig(device=str(tmp_path / "no-such-device")),
        ),
    )
    config = dataclasses.replace(
        config,
        board=dataclasses.replace(
            config.board, leds=type(config.board.leds)(status=str(tmp_path / "no-led"))
        ),
    )
    gw = Gateway(config)
    gw.start()
    pump(gw, lambda: gw.panel.led is not None and gw.panel.led.broken, timeout=5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("button device not available" in m for m in messages)
    assert any("status LED not available" in m for m in messages)
    gw.request_stop()
    gw._finish()

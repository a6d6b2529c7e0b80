"""The front panel: the reprint button and the status LED (hardware behind board/)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from board.button import Button
from board.evdev import Press
from board.fake import make_fake_board
from board.leds import StatusLed
from gateway.ledger import entries

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("gateway.ops")

__all__ = ["Panel"]


class Panel:
    """Short press: reprint the last receipt; long press: the status page; the LED shows health."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.button: Button | None = None
        self.led: StatusLed | None = None

    def start(self) -> None:
        board = self.gw.config.board
        device, led = board.button.device, board.leds.status
        if board.fake:
            fifo, fake_led = make_fake_board(self.gw.config.fake_board_dir)
            device, led = device or str(fifo), led or str(fake_led)
        if led:
            self.led = StatusLed(led)
        if device:
            self.button = Button(self.gw.loop, device, board.button.keycode, self._on_press)
            self.button.start()

    def show(self, state: str) -> None:
        """ok | printer | ledger (the LED's patterns, board/leds.py)."""
        if self.led is not None:
            self.led.show(state)

    def _on_press(self, press: Press) -> None:
        gw = self.gw
        long = press.held_s >= gw.config.board.button.long_press_s
        action = "status_page" if long else "reprint"
        if gw.spool is None:
            action = "none (no printers)"
        gw.ledger.record(
            entries.BUTTON,
            {"button": "reprint", "held_s": round(press.held_s, 3), "action": action},
        )
        log.info("button pressed", extra={"fields": {"held_s": press.held_s, "action": action}})
        if gw.spool is None:
            return
        if long:
            gw.spool.request_status_page(None, "button")
        else:
            gw.spool.request_reprint(None, None, "button", self._log_button_reply)

    @staticmethod
    def _log_button_reply(reply: dict) -> None:
        if not reply.get("ok"):
            log.warning("button: nothing to reprint", extra={"fields": reply})

    def close(self) -> None:
        if self.button is not None:
            self.button.close()

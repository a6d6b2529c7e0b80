"""Control commands: what `gateway status`, `reprint`, `print-status-page` and `report` ask.

The control socket (gateway/control.py) decides who may ask; this module
answers on the loop, replying through the callback it is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.service import Gateway

__all__ = ["Commands"]

Reply = Callable[[dict[str, Any]], None]


class Commands:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def __call__(self, request: dict[str, Any], reply: Reply) -> None:
        cmd = request["cmd"]
        spool = self.gw.spool
        if cmd == "status":
            reply({"ok": True, "status": self.gw.health.status()})
        elif spool is None:
            reply({"ok": False, "error": "no printers are configured"})
        elif not isinstance(request.get("printer"), str | None):
            reply({"ok": False, "error": "printer must be a printer's name"})
        elif cmd == "reprint":
            seq = request.get("seq")
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
                reply({"ok": False, "error": "seq must be a number"})
                return
            spool.request_reprint(seq, request.get("printer"), "control", reply)
        elif cmd == "print_status_page":
            reply(spool.request_status_page(request.get("printer"), "control"))
        elif cmd == "report":
            try:
                date = dt.date.fromisoformat(str(request.get("date")))
            except ValueError:
                reply({"ok": False, "error": "date must be YYYY-MM-DD"})
                return
            spool.request_report(date, request.get("printer"), "control", reply)
        else:
            reply({"ok": False, "error": f"unknown command {cmd!r}"})

"""The console served by the real gateway process: limits, idle connections, exports, delays."""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import socket
import time
from urllib.parse import urlencode, urlsplit

import pytest

from tests.webtools import PASSWORD, query_all_csv, send_events, system_entries, web_gateway


@pytest.fixture
def console(tmp_path):
    gateway, base = web_gateway(tmp_path)
    try:
        yield gateway, base
    finally:
        for browser in Browser.opened:
            browser.conn.close()
        Browser.opened.clear()
        gateway.stop()


class Browser:
    """A minimal cookie-keeping client over http.client (one connection, kept alive)."""

    opened: list[Browser] = []

    def __init__(self, base: str) -> None:
        Browser.opened.append(self)
        self.base = base
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.cookie = ""

    def request(self, method: str, path: str, fields: dict | None = None, origin: bool = True):
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            if origin:
                headers["Origin"] = self.base
        self.conn.request(method, path, body, headers)
        response = self.conn.getresponse()
        data = response.read()
        cookie = response.getheader("set-cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response, data

    def login(self, name: str, password: str = PASSWORD):
        return self.request("POST", "/login", {"name": name, "password": password})

    def csrf(self) -> str:
        _, page = self.request("GET", "/")
        return re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()


def test_export_is_complete_and_matches_query_all(console):
    gateway, base = console
    # 1,234 events: the export streams them in chunks of 500 rows.
    send_events(
        gateway,
        [
            json.dumps(
                {
                    "event_type": "ticket.updated",
                    "action": "update",
                    "user_id": f"u{i % 7}",
                    "object_type": "ticket",
                    "object_id": str(i),
                    "old_value": {"state": "open"},
                    "new_value": {"state": "closed"},
                }
            )
            for i in range(1234)
        ],
    )
    b = Browser(base)
    response, _ = b.login("audrey")
    assert response.status == 303
    response, data = b.request("GET", "/export.csv?event_type=ticket.updated")
    assert response.status == 200
    assert "attachment" in response.getheader("content-disposition")
    rows = list(csv.reader(io.StringIO(data.decode())))
    expected = list(
        csv.reader(io.StringIO("\n".join(query_all_csv(gateway, "--event-type", "ticket.updated"))))
    )
    assert len(rows) == len(expected) == 1235  # a header and every event
    assert [r[0] for r in rows] == [r[0] for r in expected]
    assert all(r[-1] == expected[1][-1] for r in rows[1:])  # each row says it was checked
    response, data = b.request("GET", "/export.jsonl?user_id=u3")
    lines = data.decode().splitlines()
    assert len(lines) == len([i for i in range(1234) if i % 7 == 3])
    # The table's count and its pages.
    response, page = b.request("GET", "/audit?event_type=ticket.updated&paged=2")
    assert b"showing 51-100 of 1,234" in page
    # The export is on the record, with who asked.
    exports = system_entries(gateway, "web_export")
    assert [e["detail"] for e in exports] == [
        {
            "account": "audrey",
            "role": "auditor",
            "source": "127.0.0.1",
            "format": "csv",
            "filters": {"event_type": "ticket.updated"},
        },
        {
            "account": "audrey",
            "role": "auditor",
            "source": "127.0.0.1",
            "format": "jsonl",
            "filters": {"user_id": "u3"},
        },
    ]


def test_header_and_body_limits(console):
    _gateway, base = console
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    b = Browser(base)
    response, _ = b.request("POST", "/login", {"name": "x", "password": "y" * 70000})
    assert response.status == 413


def test_500_idle_connections_while_a_user_is_served(console):
    _gateway, base = console
    parts = urlsplit(base)
    idle = []
    try:
        for _ in range(500):
            idle.append(socket.create_connection((parts.hostname, parts.port), timeout=30))
        # Half of them have sent half a request head and stall there.
        for sock in idle[::2]:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        b = Browser(base)
        response, _ = b.login("otto")
        assert response.status == 303
        response, page = b.request("GET", "/")
        assert response.status == 200 and b"Dashboard" in page
        assert time.monotonic() - started < 10
    finally:
        for sock in idle:
            sock.close()


def test_failed_logins_are_slowed_and_summarised(console):
    gateway, base = console
    b = Browser(base)
    times = []
    for _ in range(3):
        started = time.monotonic()
        response, _ = b.login("otto", "not the password")
        times.append(time.monotonic() - started)
        assert response.status == 401
    # The answers are held 0.5, 1 and 2 s (the hash itself takes a fraction of that).
    assert times[0] >= 0.45 and times[1] >= 0.95 and times[2] >= 1.95, times
    # While an answer is held, another login from the same source is not checked: 429.
    # (The held request is sent first, so the loop reads it before it accepts the other.)
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        b.conn.request(
            "POST",
            "/login",
            urlencode({"name": "otto", "password": "x" * 12}),
            {"Origin": base, "Content-Type": "application/x-www-form-urlencoded"},
        )
        form = urlencode({"name": "otto", "password": PASSWORD}).encode()
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: "
            + base[7:].encode()
            + b"\r\nOrigin: "
            + base.encode()
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: "
            + str(len(form)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + form
        )
        second = _read_all(sock)
        assert second.startswith(b"HTTP/1.1 429 "), second[:80]
        assert b"retry-after: " in second
        held = b.conn.getresponse()
        held.read()
        assert held.status == 401
    # No lockout: once the delay is over, the right password works.
    deadline = time.monotonic() + 30
    while True:
        response, _ = b.login("otto")
        if response.status != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status == 303
    gateway.stop()
    # Stopping records the summary not yet due: one entry for all four failures.
    summaries = system_entries(gateway, "web_login_failed")
    assert len(summaries) == 1, summaries
    detail = summaries[0]["detail"]
    assert detail["source"] == "127.0.0.1" and detail["names"] == ["otto"]
    assert detail["failures"] == 4


def test_the_accounts_page_shows_each_last_login(console):
    _gateway, base = console
    for name in ("otto", "ada"):
        b = Browser(base)
        response, _ = b.login(name)
        assert response.status == 303
    deadline = time.monotonic() + 30
    while True:
        response, page = b.request("GET", "/accounts")  # ada's session
        assert response.status == 200
        rows = {
            m.group(1).decode(): m.group(2).decode()
            for m in re.finditer(rb'data-account="([^"]+)".*?<td class="login">(.*?)</td>', page)
        }
        if "from 127.0.0.1" in rows.get("otto", "") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(rows) == {"audrey", "otto", "ada"}
    assert rows["audrey"] == "never"
    for name in ("otto", "ada"):
        assert re.fullmatch(r'<a href="/entry/\d+">[-0-9 :]{19}</a> from 127\.0\.0\.1', rows[name])
    assert rows["otto"] != rows["ada"]  # each its own entry


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)

"""The console's sans-I/O core: sessions, login delays, CSRF, Origin, roles, escaping.

Driven without sockets or threads: a request in, a Response or Work out; Work
jobs are run here in place, and time is a counter the tests move.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from gateway.web import app as webapp
from gateway.web import pages
from gateway.web.accounts import AccountStore, new_account
from gateway.web.app import Later, Request, Response, WebApp, Work

PW = "correct horse battery"
HOST = "127.0.0.1:8080"
ORIGIN = f"http://{HOST}"


class Backend:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.records: list[tuple[str, dict]] = []
        self.printed: list[tuple[str | None, str]] = []
        self.replies: list = []

    def status(self) -> dict:
        return {
            "health": "ok",
            "clock": {"synced": True, "unsynced_for_s": 0},
            "free_bytes": 10 * 2**30,
            "ledger": {"head_seq": 7, "head_hash": "ab" * 32},
            "index": {"enabled": True, "lag": 0},
            "connections": 2,
            "events": 1204,
            "rejected": 3,
            "ingest_rates": {"1m": 1.5},
            "sync_ms": {"p50": 1.0, "p99": 2.0},
            "ack_wait_ms": {"p50": 3.0, "p99": 4.5, "samples": 12},
            "printers": [
                {
                    "name": "<b>p</b>",
                    "uri": "file:/x",
                    "state": "ready",
                    "queued": 0,
                    "printed": 4,
                    "error": "",
                }
            ],
        }

    def record(self, name: str, detail: dict) -> None:
        self.records.append((name, detail))

    def status_page(self, printer, by):
        self.printed.append((printer, by))
        return {"ok": True, "job": "9/p"}

    def reprint(self, seq, by, reply):
        # Answered later, as the spool does (after reading the entry on a worker).
        self.replies.append(
            lambda: (
                reply({"ok": True, "job": f"{seq}/p", "copy": 1})
                if seq == 2
                else reply({"ok": False, "error": f"seq {seq} is not an event"})
            )
        )

    def report(self, date, by, reply):
        self.replies.append(lambda: reply({"ok": True, "job": "9/p", "number": 3, "count": 5}))

    def zone(self):
        return dt.UTC, "UTC"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path):
    store = AccountStore(tmp_path)
    for name, role in (("aud", "auditor"), ("op", "operator"), ("adm", "admin")):
        store.add(new_account(name, role, PW))
    backend = Backend(tmp_path)
    clock = Clock()
    return WebApp(backend, clock), backend, clock


def run(answer, backend: Backend | None = None) -> Response:
    if isinstance(answer, Work):
        return answer.then(answer.job())
    if isinstance(answer, Later):
        got: list[Response] = []
        answer.start(got.append)
        assert not got and backend is not None  # nothing yet: the spool answers later
        while backend.replies:
            backend.replies.pop(0)()
        return got[0]
    return answer


def get(app: WebApp, path: str, cookie: str = "", source: str = "127.0.0.1") -> Response:
    headers = {"host": HOST}
    if cookie:
        headers["cookie"] = cookie
    return run(app.handle(Request("GET", path, headers, b"", source)))


def post(app, path, fields, cookie="", origin=ORIGIN, source="127.0.0.1", referer=None):
    from urllib.parse import urlencode

    headers = {"host": HOST, "content-type": "application/x-www-form-urlencoded"}
    if origin is not None:
        headers["origin"] = origin
    if referer is not None:
        headers["referer"] = referer
    if cookie:
        headers["cookie"] = cookie
    return run(app.handle(Request("POST", path, headers, urlencode(fields).encode(), source)))


def login(app, name="op", password=PW, source="127.0.0.1") -> tuple[Response, str]:
    r = post(app, "/login", {"name": name, "password": password}, source=source)
    cookie = ""
    for key, value in r.headers:
        if key == "set-cookie":
            cookie = value.split(";", 1)[0]
    return r, cookie


def csrf_of(app, cookie) -> str:
    page = get(app, "/", cookie).body.decode()
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_no_session_gets_the_login_form_and_security_headers_are_the_servers(env):
    app, _backend, _clock = env
    r = get(app, "/")
    assert r.status == 200 and b'action="/login"' in r.body
    assert get(app, "/audit").status == 303  # a bookmark without a session: to the login
    assert get(app, "/api/status").status == 401


def test_no_account_says_how_to_make_one(tmp_path):
    app = WebApp(Backend(tmp_path), Clock())
    body = get(app, "/").body.decode()
    assert "gateway user add NAME --role admin" in body and 'name="password"' not in body


def test_login_sets_a_strict_httponly_cookie_and_is_recorded(env):
    app, backend, _clock = env
    r, cookie = login(app)
    assert r.status == 303
    set_cookie = dict(r.headers)["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP; over HTTPS it is added
    secure = run(
        app.handle(
            Request(
                "POST",
                "/login",
                {"host": HOST, "origin": f"https://{HOST}"},
                f"name=op&password={PW}".encode(),
                secure=True,
            )
        )
    )
    assert "Secure" in dict(secure.headers)["set-cookie"]
    assert ("web_login", {"account": "op", "role": "operator", "source": "127.0.0.1"}) in (
        backend.records
    )
    page = get(app, "/", cookie)
    assert page.status == 200 and b"Dashboard" in page.body and b"1,204" in page.body


def test_wrong_passwords_get_growing_delays_and_no_lockout(env):
    app, backend, clock = env
    delays = []
    for _ in range(5):
        r, _ = login(app, password="wrong password!")
        assert r.status == 401
        delays.append(r.not_before - clock.now)
        # Before the delay is over the source gets 429 without a password check.
        early, _ = login(app)
        assert early.status == 429 and dict(early.headers)["retry-after"]
        clock.now = r.not_before
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    # Another source is not slowed down by this one.
    other, _ = login(app, password="wrong password!", source="10.0.0.9")
    assert other.not_before - clock.now == 0.5
    # The right password still works once the delay has passed: no lockout.
    ok, cookie = login(app)
    assert ok.status == 303 and cookie
    # Failures are summarised: nothing per attempt, one entry per source and interval.
    assert not [n for n, _ in backend.records if n == "web_login_failed"]
    clock.now += webapp.FAILURE_SUMMARY_S
    app.tick()
    summaries = [d for n, d in backend.records if n == "web_login_failed"]
    assert sorted(d["source"] for d in summaries) == ["10.0.0.9", "127.0.0.1"]
    assert {d["source"]: d["failures"] for d in summaries}["127.0.0.1"] == 5
    assert webapp.delay_for(20) == webapp.MAX_DELAY_S


def test_unknown_names_cost_a_hash_and_are_listed_in_the_summary(env):
    app, backend, _clock = env
    r, _ = login(app, name="nobody")
    assert r.status == 401
    app.flush()
    assert backend.records[-1][1]["names"] == ["nobody"]


def test_idle_and_absolute_timeouts(env):
    app, _backend, clock = env
    _, cookie = login(app)
    clock.now += webapp.IDLE_TIMEOUT_S - 1
    assert get(app, "/", cookie).body.count(b"Dashboard") >= 1
    clock.now += webapp.IDLE_TIMEOUT_S + 1
    assert b'action="/login"' in get(app, "/", cookie).body  # expired: the login form
    _, cookie = login(app)
    for _ in range(int(webapp.ABSOLUTE_TIMEOUT_S // 600)):
        clock.now += 600  # busy all day, never idle for long
        assert b"Dashboard" in get(app, "/", cookie).body
    clock.now += 600
    assert b'action="/login"' in get(app, "/", cookie).body


def test_password_change_or_removal_ends_sessions(env, tmp_path):
    app, _backend, _clock = env
    _, cookie = login(app)
    AccountStore(tmp_path).set_password("op", "a brand new password")
    assert b'action="/login"' in get(app, "/", cookie).body
    _, cookie = login(app, "aud")
    AccountStore(tmp_path).remove("aud")
    assert b'action="/login"' in get(app, "/", cookie).body


def test_post_without_csrf_token_is_refused(env):
    app, backend, _clock = env
    _, cookie = login(app)
    r = post(app, "/printers/test-page", {"printer": "p"}, cookie)
    assert r.status == 403 and not backend.printed
    r = post(app, "/printers/test-page", {"printer": "p", "csrf": "x" * 43}, cookie)
    assert r.status == 403 and not backend.printed
    r = post(app, "/printers/test-page", {"printer": "p", "csrf": csrf_of(app, cookie)}, cookie)
    assert r.status == 303 and backend.printed == [("p", "web:op")]


def test_cross_origin_post_is_refused(env):
    app, backend, _clock = env
    _, cookie = login(app)
    token = csrf_of(app, cookie)
    for origin, referer in (
        ("http://evil.example", None),
        ("null", None),
        (None, None),
        (None, "http://evil.example/page"),
        ("https://" + HOST, None),
    ):
        r = post(
            app,
            "/printers/test-page",
            {"printer": "p", "csrf": token},
            cookie,
            origin=origin,
            referer=referer,
        )
        assert r.status == 403, (origin, referer)
    assert not backend.printed
    r = post(app, "/login", {"name": "op", "password": PW}, origin="http://evil.example")
    assert r.status == 403
    # A same-origin Referer stands in for a missing Origin.
    r = post(
        app,
        "/printers/test-page",
        {"printer": "p", "csrf": token},
        cookie,
        origin=None,
        referer=f"{ORIGIN}/printers",
    )
    assert r.status == 303 and backend.printed


def test_auditor_is_refused_printer_actions(env):
    app, backend, _clock = env
    _, cookie = login(app, "aud")
    token = csrf_of(app, cookie)
    assert b"Print test page" not in get(app, "/printers", cookie).body
    r = post(app, "/printers/test-page", {"printer": "p", "csrf": token}, cookie)
    assert r.status == 403 and not backend.printed
    r = post(app, "/entry/2/reprint", {"csrf": token}, cookie)
    assert r.status == 403
    _, cookie = login(app, "op")
    assert b"Print test page" in get(app, "/printers", cookie).body


def test_static_files_have_fixed_names(env):
    app, _backend, _clock = env
    assert get(app, "/static/style.css").status == 200
    assert get(app, "/static/live.js").body.startswith(b"// Print Gateway")
    for path in (
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/accounts.py",
        "/static/__init__.py",
        "/static//etc/passwd",
        "/static/style.css/..",
    ):
        assert get(app, path).status == 404, path


def test_values_are_escaped():
    hostile = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]
    record = {
        "seq": 5,
        "kind": "event",
        "received_at": "2026-01-01T00:00:00Z",
        "hash": "00",
        "source": {"app": hostile[1], "addr": "127.0.0.1"},
        "flags": [hostile[0]],
        "event": {
            "event_type": hostile[0],
            "link": hostile[2],
            "old_value": {"x": hostile[1]},
            "new_value": {"x": hostile[0]},
        },
    }
    page = pages.entry_detail(record, "ok", dt.UTC, "UTC", True, hostile[0], "operator", "t")
    assert "<script>alert" not in page and "<img" not in page
    assert 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    row = {
        "seq": 5,
        "kind": "event",
        "received_at": 0,
        "event_type": hostile[0],
        "action": hostile[1],
        "user_id": None,
        "username": hostile[2],
        "object_type": None,
        "object_id": None,
        "app": hostile[1],
        "summary": hostile[0],
    }
    table = pages.audit_table(
        {"s": hostile[1]}, [row], {}, 1, False, 1, 50, "UTC", dt.UTC, "", "", "u", "auditor", "t"
    )
    assert "<script>alert" not in table and "<img" not in table and 'href="javascript' not in table


def test_audit_parameters_are_checked(env):
    app, _backend, _clock = env
    _, cookie = login(app, "aud")
    for query in ("orderby=username", "order=sideways", "paged=x", "since=yesterday"):
        r = get(app, f"/audit?{query}", cookie)
        assert r.status == 400 and b'class="bad"' in r.body, query


def test_logins_at_once_from_a_source_that_never_failed_are_not_held_back(env):
    app, _backend, _clock = env
    body = f"name=op&password={PW.replace(' ', '+')}".encode()
    headers = {"host": HOST, "origin": ORIGIN}
    answers = [app.handle(Request("POST", "/login", headers, body)) for _ in range(5)]
    assert all(isinstance(a, Work) for a in answers)  # five tabs: none refused
    assert all(run(a).status == 303 for a in answers)
    login(app, password="wrong password!")
    held = app.handle(Request("POST", "/login", headers, body))
    assert isinstance(held, Response) and held.status == 429  # after a failure: one at a time


def test_charts_of_the_last_hour(env):
    app, backend, clock = env
    _, cookie = login(app, "aud")
    empty = get(app, "/chart/ingest.svg", cookie)
    assert empty.content_type == "image/svg+xml" and b"no samples yet" in empty.body
    base = backend.status()
    for i in range(4):
        backend.status = lambda i=i: {**base, "events": 1000 + 300 * i}
        app.sample()
        clock.now += 30
    assert [round(v) for _, v in app.charts()["ingest"]] == [10, 10, 10]
    svg = get(app, "/chart/ingest.svg", cookie).body.decode()
    assert "<polyline" in svg and "10.0 events/s" in svg
    assert b"4.5 ms" in get(app, "/chart/ack.svg", cookie).body
    assert get(app, "/chart/commit.svg", cookie).status == 404
    assert get(app, "/chart/ingest.svg").status == 303  # no session, no chart
    page = get(app, "/", cookie).body
    assert b'src="/chart/ingest.svg"' in page and b'src="/chart/ack.svg"' in page
    assert b"p99 4.5 ms over 12 commits in the last minute" in page


def test_reprint_and_report_answer_once_the_spool_has(env):
    app, backend, _clock = env
    _, cookie = login(app, "op")
    token = csrf_of(app, cookie)

    def post_later(path, fields):
        from urllib.parse import urlencode

        headers = {"host": HOST, "origin": ORIGIN, "cookie": cookie}
        request = Request("POST", path, headers, urlencode(fields).encode())
        return run(app.handle(request), backend)

    r = post_later("/entry/2/reprint", {"csrf": token})
    assert r.status == 303 and "queued" in dict(r.headers)["location"]
    r = post_later("/entry/3/reprint", {"csrf": token})
    assert "Not+reprinted" in dict(r.headers)["location"]
    r = post_later("/reports/print", {"csrf": token, "date": "2026-01-31"})
    assert "Report+number+3" in dict(r.headers)["location"]
    prints = [d for n, d in backend.records if n == "web_print"]
    assert [(d["action"], d.get("seq"), d.get("number")) for d in prints] == [
        ("reprint", 2, None),
        ("report", None, 3),
    ]
    assert all(d["account"] == "op" and d["role"] == "operator" for d in prints)
    page = get(app, "/reports", cookie)
    assert page.status == 200 and b"No daily report has been made yet" in page.body


def test_verify_progress_is_measured_in_bytes_and_shown_as_a_progress_bar(env, tmp_path):
    import json

    from gateway.ledger.store import list_segments
    from gateway.web.verifyrun import BackgroundVerify
    from tests.test_ledger_verify import build

    app, _backend, clock = env
    build(tmp_path / "ledger", n=30)
    total = sum(p.stat().st_size for _f, p in list_segments(tmp_path / "ledger"))
    posted: list = []
    verifier = BackgroundVerify(tmp_path, posted.append, lambda: (dt.UTC, "UTC"), clock, "box")
    app.verifier = verifier
    _, cookie = login(app, "aud")
    assert post(app, "/verify", {"csrf": csrf_of(app, cookie)}, cookie).status == 303
    verifier.thread.join(30)
    assert not verifier.thread.is_alive() and len(posted) == 1
    # Every byte checked but the result not yet taken on the loop: held below 100.
    assert verifier.total_bytes == verifier.done_bytes == total
    state = verifier.state()
    assert state["running"] and state["percent"] == 99
    verifier.done_bytes = total // 2
    assert verifier.state()["percent"] == 50
    page = get(app, "/verify", cookie).body.decode()
    assert '<progress id="verify-progress" max="100" value="50">50 %</progress>' in page
    figures = json.loads(get(app, "/api/status", cookie).body)
    assert figures["verify_percent"] == "50 %" and figures["verify"] == "running: 50 %"
    posted.pop()()
    page = get(app, "/verify", cookie).body.decode()
    assert 'value="100">100 %</progress>' in page and "ok: 30 entries" in page
    assert json.loads(get(app, "/api/status", cookie).body)["verify_percent"] == "100 %"


def test_accounts_page_is_for_admins_only(env):
    app, _backend, _clock = env
    for name in ("aud", "op"):
        _, cookie = login(app, name)
        assert get(app, "/accounts", cookie).status == 403
        assert b'href="/accounts"' not in get(app, "/", cookie).body
        r = post(app, "/accounts/remove", {"name": "adm", "csrf": csrf_of(app, cookie)}, cookie)
        assert r.status == 403
    assert AccountStore(app.backend.state_dir).get("adm") is not None
    _, cookie = login(app, "adm")
    assert b'href="/accounts"' in get(app, "/", cookie).body
    page = get(app, "/accounts", cookie).body.decode()
    assert get(app, "/accounts", cookie).status == 200
    for name in ("aud", "op", "adm"):
        assert f'data-account="{name}"' in page
    assert 'action="/accounts/add"' in page


def test_account_changes_need_the_csrf_token_and_the_origin(env):
    app, _backend, _clock = env
    _, cookie = login(app, "adm")
    token = csrf_of(app, cookie)
    assert post(app, "/accounts/remove", {"name": "op"}, cookie).status == 403
    r = post(app, "/accounts/remove", {"name": "op", "csrf": token}, cookie, origin="http://evil")
    assert r.status == 403
    assert AccountStore(app.backend.state_dir).get("op") is not None


def test_admin_adds_changes_and_removes_an_account_recorded_and_sessions_ended(env):
    app, backend, _clock = env
    store = AccountStore(backend.state_dir)
    _, admin = login(app, "adm")
    token = csrf_of(app, admin)
    new = {"name": "nora", "role": "operator", "password": PW, "password2": PW, "csrf": token}
    r = post(app, "/accounts/add", {**new, "password2": PW + "x"}, admin)
    assert r.status == 400 and b"the two passwords differ" in r.body and store.get("nora") is None
    r = post(app, "/accounts/add", {**new, "password": "short", "password2": "short"}, admin)
    assert r.status == 400 and b"at least 10" in r.body
    r = post(app, "/accounts/add", new, admin)
    assert r.status == 303 and store.get("nora").role == "operator" and store.get("nora").created
    assert backend.records[-1] == (
        "web_account",
        {"account": "adm", "role": "admin", "source": "127.0.0.1", "action": "add",
         "name": "nora", "new_role": "operator"},
    )  # fmt: skip
    _, nora = login(app, "nora")
    assert get(app, "/", nora).status == 200 and b"(operator)" in get(app, "/", nora).body
    r = post(app, "/accounts/role", {"name": "nora", "role": "auditor", "csrf": token}, admin)
    assert r.status == 303 and store.get("nora").role == "auditor"
    assert "1 session" in dict(r.headers)["location"].replace("+", " ")
    assert b'action="/login"' in get(app, "/", nora).body  # ended
    assert backend.records[-1][1]["action"] == "role"
    assert backend.records[-1][1]["new_role"] == "auditor"
    _, nora = login(app, "nora")
    fields = {"name": "nora", "password": "another long one", "csrf": token}
    r = post(app, "/accounts/password", {**fields, "password2": "another long one"}, admin)
    assert r.status == 303 and b'action="/login"' in get(app, "/", nora).body
    assert login(app, "nora", "another long one")[0].status == 303
    assert "another long one" not in repr(backend.records)
    _, nora = login(app, "nora", "another long one")
    r = post(app, "/accounts/remove", {"name": "nora", "csrf": token}, admin)
    assert r.status == 303 and store.get("nora") is None
    assert b'action="/login"' in get(app, "/", nora).body
    assert backend.records[-1][1] == {
        "account": "adm", "role": "admin", "source": "127.0.0.1", "action": "remove",
        "name": "nora",
    }  # fmt: skip
    r = post(app, "/accounts/remove", {"name": "nora", "csrf": token}, admin)
    assert r.status == 400 and b"no account named" in r.body


def test_the_last_admin_is_neither_demoted_nor_removed(env):
    app, backend, _clock = env
    store = AccountStore(backend.state_dir)
    _, admin = login(app, "adm")
    token = csrf_of(app, admin)
    recorded = len(backend.records)
    r = post(app, "/accounts/role", {"name": "adm", "role": "operator", "csrf": token}, admin)
    assert r.status == 400 and b"last admin" in r.body
    r = post(app, "/accounts/remove", {"name": "adm", "csrf": token}, admin)
    assert r.status == 400 and b"last admin" in r.body
    assert store.get("adm").role == "admin" and len(backend.records) == recorded
    # With a second admin, the first may go; removing oneself ends one's own session.
    r = post(app, "/accounts/role", {"name": "op", "role": "admin", "csrf": token}, admin)
    assert r.status == 303
    r = post(app, "/accounts/remove", {"name": "adm", "csrf": token}, admin)
    assert r.status == 303 and dict(r.headers)["location"] == "/"
    assert store.get("adm") is None and b'action="/login"' in get(app, "/", admin).body
    # The command line may still (the box's own recovery path).
    store.remove("op")
    assert all(a.role != "admin" for a in store.load().values())

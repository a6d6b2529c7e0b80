"""The console's sans-I/O core: a request in, a response (or work to do first) out.

`WebApp.handle(request)` never touches a socket and never blocks: what needs
the disk or the CPU for long (a password hash, a query on the index, an
export, a verification) comes back as `Work`, a job for a worker thread and a
`then` that turns its result into the response on the loop. A response body
is bytes or a `stream` of byte chunks pulled one at a time on a worker thread.

Security, in the order a request meets it: static files (fixed names, no
path from the URL ever reaches the file system); the session cookie
(server-side sessions, idle and absolute timeouts); for every POST an Origin
(or Referer) check against the Host, and for every POST but the login the
session's CSRF token; the role's rights. Failed logins are slowed per source
with growing delays and recorded in the ledger as one summary per source and
interval (docs/web.md, "Security").
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hmac
import itertools
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from gateway import zone
from gateway.web import pages
from gateway.web.accounts import Account, AccountError, AccountStore, check_password
from gateway.web.related import entry_lookups, last_logins

COOKIE = "gw_session"
# Sessions end after 15 minutes without a request, and 8 hours after the
# login whatever happens (the figures: a work day, a coffee break).
IDLE_TIMEOUT_S = 15 * 60
ABSOLUTE_TIMEOUT_S = 8 * 3600
# At most 1,000 sessions at once (a branch office has a handful of users);
# past that the oldest is dropped, so that logins cannot grow memory.
MAX_SESSIONS = 1000
# Failed logins from one source: the n-th failure in a row is answered after
# min(0.5 * 2**(n-1), 30) s, and until then that source's logins get 429
# without a password check. A person mistyping waits 0.5, 1, 2 s; a guesser
# gets about two guesses a minute. No lockout: an account is never refused
# to its owner because someone else guessed (the rule).
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
# A source's failure count is forgotten 15 minutes after its last failure.
FAILURE_MEMORY_S = 15 * 60
# Sources remembered at once (an address costs about 200 bytes): past that the
# least recently failing is forgotten.
MAX_SOURCES = 4096
# Failed logins are recorded in the ledger as one entry per source per
# 10 minutes at most (a stranger must not be able to fill the ledger).
FAILURE_SUMMARY_S = 10 * 60
# Names tried that a summary lists, at most (each cut to 64 characters).
SUMMARY_NAMES = 5
# The recent security events the dashboard lists.
SECURITY_EVENTS = 20
# Rows per page of the audit table (WordPress's list tables default to 20;
# the CLI's screenful is 50): 50, at most 500 with per_page.
PER_PAGE = 50
MAX_PER_PAGE = 500
# Counts stop at 10,000 ("more than 10,000"): an exact count of a million
# matches costs a scan of the index; the page itself never needs one.
COUNT_CAP = 10_000

# The dashboard's charts: one sample of the ingest count and the acknowledgement
# wait's p99 (over the last minute's commits, gateway/ledger/commit.py) per tick
# (gateway/web/server.py, every 30 s), an hour's worth kept.
HISTORY_SAMPLES = 121

CSP = "default-src 'self'; frame-ancestors 'none'"
STATIC = {
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/live.js": ("live.js", "text/javascript; charset=utf-8"),
}
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    source: str = "127.0.0.1"
    secure: bool = False

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        parsed = parse_qs(urlsplit(self.target).query, keep_blank_values=False)
        return {k: v[-1] for k, v in parsed.items()}

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Chunks pulled one at a time on a worker thread (an export); body is then b"".
    stream: Iterator[bytes] | None = None
    # Not sent before this time of the clock (a failed login's delay); 0: at once.
    not_before: float = 0.0


@dataclass
class Work:
    """`job` runs on a worker thread (pool "pages" or "hash"); `then(result)` on the loop."""

    job: Callable[[], Any]
    then: Callable[[Any], Response]
    pool: str = "pages"


@dataclass
class Later:
    """An answer that comes from the loop later: `start(respond)` begins the action
    (a reprint, a report) and calls `respond(response)` once it is answered."""

    start: Callable[[Callable[[Response], None]], None]


class Backend(Protocol):
    """What the console needs from the gateway; every method runs on the loop."""

    state_dir: Path

    def status(self) -> dict[str, Any]: ...

    def record(self, name: str, detail: dict[str, Any]) -> None: ...

    def status_page(self, printer: str | None, by: str) -> dict[str, Any]: ...

    def reprint(self, seq: int, by: str, reply: Callable[[dict], None]) -> None: ...

    def report(self, date: dt.date, by: str, reply: Callable[[dict], None]) -> None: ...

    def zone(self) -> tuple[dt.tzinfo, str]: ...


@dataclass
class Session:
    sid: str
    account: str
    role: str
    key: bytes  # the account's hash at login: a new password ends the session
    csrf: str
    created: float
    seen: float


@dataclass
class _Source:
    failures: int = 0
    last_failure: float = 0.0
    not_before: float = 0.0
    pending: bool = False
    # The summary not yet recorded: failures since, and the names tried.
    summary_count: int = 0
    summary_since: float = 0.0
    summary_names: list[str] = field(default_factory=list)


@dataclass
class WebStats:
    requests: int = 0
    logins: int = 0
    failed_logins: int = 0
    refused_csrf: int = 0
    refused_origin: int = 0
    sessions: int = 0


def delay_for(failures: int) -> float:
    """How long the answer to the n-th failed login in a row waits."""
    return min(FIRST_DELAY_S * 2 ** (failures - 1), MAX_DELAY_S) if failures > 0 else 0.0


class WebApp:
    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float],
        verifier: Any = None,
        fingerprint: str = "",
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.accounts = AccountStore(backend.state_dir)
        self.sessions: dict[str, Session] = {}
        self.sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()
        self.security: collections.deque[dict[str, str]] = collections.deque(maxlen=SECURITY_EVENTS)
        self.stats = WebStats()
        self.verifier = verifier
        self.fingerprint = fingerprint
        # Entries by seq without segment scans; used on the pages thread only.
        from gateway.web.seqmap import SeqMap

        self.seqmap = SeqMap(backend.state_dir / "ledger")
        # (clock, events since start, ack wait p99 ms), one per tick: the charts.
        self.history: collections.deque[tuple[float, int, float]] = collections.deque(
            maxlen=HISTORY_SAMPLES
        )

    def statistics(self) -> WebStats:
        return dataclasses.replace(self.stats, sessions=len(self.sessions))

    # ---- sessions

    def _session(self, request: Request) -> Session | None:
        sid = request.cookie(COOKIE)
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > IDLE_TIMEOUT_S or now - session.created > ABSOLUTE_TIMEOUT_S:
            del self.sessions[sid]
            return None
        try:
            account = self.accounts.get(session.account)
        except AccountError:
            account = None
        if account is None or account.key != session.key or account.role != session.role:
            del self.sessions[sid]  # removed, or a new password or role since the login
            return None
        session.seen = now
        return session

    def _new_session(self, account: Account) -> Session:
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.seen)
            del self.sessions[oldest.sid]
        now = self.clock()
        session = Session(
            secrets.token_urlsafe(32),
            account.name,
            account.role,
            account.key,
            secrets.token_urlsafe(32),
            now,
            now,
        )
        self.sessions[session.sid] = session
        return session

    def _cookie(self, request: Request, value: str, max_age: int | None = None) -> str:
        cookie = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
        if max_age is not None:
            cookie += f"; Max-Age={max_age}"
        if request.secure:
            cookie += "; Secure"
        return cookie

    # ---- the ledger's record of web access

    def _who(self, session: Session, request: Request) -> dict[str, str]:
        return {"account": session.account, "role": session.role, "source": request.source}

    def _printed(
        self,
        session: Session,
        request: Request,
        answer: dict,
        back: str,
        failed: str,
        fields: dict[str, Any],
        done: str,
    ) -> Response:
        """A printer action's answer: recorded (who, what, the job) when the spool took
        it, then back to `back` with `done`, or `failed` and the spool's error."""
        if answer.get("ok"):
            self._record(
                "web_print", {**self._who(session, request), **fields, "job": answer.get("job")}
            )
            text = done
        else:
            text = f"{failed}: {answer.get('error')}"
        return _see_other(back + "?" + _qs(done=text))

    def _record(self, name: str, detail: dict[str, Any]) -> None:
        self.backend.record(name, detail)

    def _security(self, what: str, source: str) -> None:
        when = dt.datetime.now(self.backend.zone()[0]).strftime("%Y-%m-%d %H:%M:%S")
        self.security.appendleft({"when": when, "what": what, "source": source})

    def sample(self) -> None:
        """One point of the dashboard's charts (the server calls it every tick)."""
        status = self.backend.status()
        wait_p99 = float(status["ack_wait_ms"]["p99"])
        self.history.append((self.clock(), int(status["events"]), wait_p99))

    def charts(self) -> dict[str, list[tuple[float, float]]]:
        """(seconds ago, value) series: ingest events/s between samples, ack wait p99 ms."""
        now = self.clock()
        points = list(self.history)
        rate = [
            (now - t1, max(0.0, (n1 - n0) / (t1 - t0)))
            for (t0, n0, _), (t1, n1, _) in itertools.pairwise(points)
            if t1 > t0
        ]
        return {"ingest": rate, "ack": [(now - t, p99) for t, _, p99 in points]}

    def tick(self) -> None:
        """Record the failed-login summaries whose interval ended; forget old sources."""
        now = self.clock()
        for addr in list(self.sources):
            src = self.sources[addr]
            if src.summary_count and now - src.summary_since >= FAILURE_SUMMARY_S:
                self._flush_summary(addr, src, now)
            if (
                not src.summary_count
                and not src.pending
                and (not src.failures or now - src.last_failure > FAILURE_MEMORY_S)
            ):
                del self.sources[addr]

    def flush(self) -> None:
        """At shutdown: every summary not yet recorded is recorded now."""
        now = self.clock()
        for addr, src in self.sources.items():
            if src.summary_count:
                self._flush_summary(addr, src, now)

    def _flush_summary(self, addr: str, src: _Source, now: float) -> None:
        self._record(
            "web_login_failed",
            {
                "source": addr,
                "failures": src.summary_count,
                "names": list(src.summary_names),
                "seconds": round(now - src.summary_since, 1),
            },
        )
        src.summary_count = 0
        src.summary_names = []

    # ---- dispatch

    def handle(self, request: Request) -> Response | Work | Later:
        self.stats.requests += 1
        response = self._dispatch(request)
        return response

    def _dispatch(self, request: Request) -> Response | Work | Later:
        path = request.path
        method = request.method
        if path in STATIC:
            if method not in ("GET", "HEAD"):
                return self._plain(405, "use GET")
            name, kind = STATIC[path]
            data = resources.files("gateway.web.static").joinpath(name).read_bytes()
            return Response(200, data, kind, [("cache-control", "max-age=3600")])
        if path.startswith("/static/"):
            return self._plain(404, "no such file")
        if method == "POST":
            refusal = self._check_origin(request)
            if refusal is not None:
                return refusal
        if path == "/login":
            if method == "POST":
                return self._login(request)
            return self._login_form()
        session = self._session(request)
        if session is None:
            if method == "POST" or path != "/":
                if path.startswith("/api/"):
                    return self._plain(401, "log in first")
                return Response(303, b"", headers=[("location", "/")])
            return self._login_form()
        if method == "POST":
            token = request.form().get("csrf", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                self.stats.refused_csrf += 1
                self._security("POST without a valid CSRF token", request.source)
                return self._page(
                    403,
                    pages.message_page(
                        "Refused",
                        "The form's security token is missing or old: reload the page "
                        "and try again.",
                        session.account,
                        session.role,
                        session.csrf,
                    ),
                )
            return self._post(request, session)
        if method not in ("GET", "HEAD"):
            return self._plain(405, "use GET or POST")
        return self._get(request, session)

    def _check_origin(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        scheme = "https" if request.secure else "http"
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            referer = request.headers.get("referer")
            if referer:
                parts = urlsplit(referer)
                origin = f"{parts.scheme}://{parts.netloc}"
        if origin != f"{scheme}://{host}" or not host:
            self.stats.refused_origin += 1
            self._security(f"cross-origin POST refused (Origin {origin!r})", request.source)
            return self._plain(403, "refused: the request did not come from this console's pages")
        return None

    # ---- login

    def _login_form(self, message: str = "", status: int = 200) -> Response:
        try:
            accounts = self.accounts.load()
        except AccountError as exc:
            return self._page(500, pages.message_page("Accounts unreadable", str(exc)))
        hint = "" if accounts else f"--state {self.backend.state_dir}"
        return self._page(status, pages.login_page(message, hint))

    def _login(self, request: Request) -> Response | Work:
        form = request.form()
        name = form.get("name", "")[:64]
        password = form.get("password", "")
        now = self.clock()
        src = self.sources.get(request.source)
        # A source that has failed waits for its answer before it may try again;
        # one that has not (five tabs logging in at once) is never held back.
        if src is not None and src.failures and (src.pending or now < src.not_before):
            wait = max(1, round(src.not_before - now + 0.5))
            return self._page(
                429,
                pages.login_page(f"Too many failed logins: wait {wait} s and try again."),
                [("retry-after", str(wait))],
            )
        try:
            account = self.accounts.get(name)
        except AccountError as exc:
            return self._page(500, pages.message_page("Accounts unreadable", str(exc)))
        if src is None:
            while len(self.sources) >= MAX_SOURCES:
                self.sources.popitem(last=False)
            src = self.sources[request.source] = _Source()
        # One login at a time per source: the next waits for this one's answer.
        src.pending = True

        def job() -> bool:
            # A missing account costs a hash too, so timing does not tell names apart.
            if account is None:
                check_password(_DUMMY, password)
                return False
            return check_password(account, password)

        def then(ok: bool) -> Response:
            return self._login_done(request, name, account if ok else None)

        return Work(job, then, pool="hash")

    def _login_done(self, request: Request, name: str, account: Account | None) -> Response:
        now = self.clock()
        src = self.sources.get(request.source) or _Source()
        src.pending = False
        if account is not None:
            src.failures = 0
            src.not_before = 0.0
            session = self._new_session(account)
            self.stats.logins += 1
            self._record("web_login", self._who(session, request))
            return Response(
                303,
                b"",
                headers=[("location", "/"), ("set-cookie", self._cookie(request, session.sid))],
            )
        self.stats.failed_logins += 1
        if request.source in self.sources:
            self.sources.move_to_end(request.source)
        src.failures += 1
        src.last_failure = now
        delay = delay_for(src.failures)
        src.not_before = now + delay
        if not src.summary_count:
            src.summary_since = now
        src.summary_count += 1
        if name not in src.summary_names and len(src.summary_names) < SUMMARY_NAMES:
            src.summary_names.append(name)
        self._security(f"failed login ({src.failures} in a row)", request.source)
        response = self._page(
            401, pages.login_page("Wrong name or password."), [("x-login-delay", f"{delay:g}")]
        )
        response.not_before = now + delay
        return response

    # ---- pages

    def _page(self, status: int, text: str, headers: list | None = None) -> Response:
        return Response(status, text.encode(), HTML, list(headers or []))

    def _plain(self, status: int, text: str) -> Response:
        return Response(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _get(self, request: Request, session: Session) -> Response | Work:
        path = request.path
        user, role, csrf = session.account, session.role, session.csrf
        if path == "/":
            status = self.backend.status()
            verify = self.verifier.state() if self.verifier else {}
            security = list(self.security)
            return self._page(
                200, pages.dashboard(status, verify, security, self.fingerprint, user, role, csrf)
            )
        if path == "/api/status":
            verify = self.verifier.state() if self.verifier else {}
            figures = pages.live_figures(self.backend.status(), verify)
            return Response(200, json.dumps(figures).encode(), "application/json")
        if path in ("/chart/ingest.svg", "/chart/ack.svg"):
            name = path.split("/")[2].split(".")[0]
            title, unit = {
                "ingest": ("Ingest rate", "events/s"),
                "ack": ("Acknowledgement wait p99", "ms"),
            }[name]
            svg = pages.chart_svg(self.charts()[name], title, unit)
            return Response(200, svg.encode(), "image/svg+xml")
        if path == "/audit":
            return self._audit(request, session)
        if path.startswith("/entry/"):
            return self._entry(request, session)
        if path in ("/export.csv", "/export.jsonl"):
            return self._export(request, session, path.rsplit(".", 1)[1])
        if path == "/verify":
            state = self.verifier.state() if self.verifier else {}
            return self._page(200, pages.verify_page(state, user, role, csrf))
        if path in ("/verify/statement.html", "/verify/statement.txt"):
            text = self.verifier.statement(path.endswith(".html")) if self.verifier else None
            if text is None:
                return self._plain(404, "no verification has finished since the gateway started")
            kind = HTML if path.endswith(".html") else "text/plain; charset=utf-8"
            name = "verification-statement." + path.rsplit(".", 1)[1]
            return Response(
                200,
                text.encode(),
                kind,
                [("content-disposition", f'attachment; filename="{name}"')],
            )
        if path == "/reports":
            return self._reports(request, session)
        if path == "/accounts":
            refusal = self._refuse_accounts(request, session)
            if refusal is not None:
                return refusal
            message = request.query.get("done", "")[:200]
            state_dir = self.backend.state_dir
            try:
                names = list(self.accounts.load())  # on the loop: the store's cache is its own
            except AccountError:
                return self._accounts_page(session, message)  # the page says what is wrong

            def job() -> dict[str, dict[str, Any] | None]:
                return last_logins(state_dir, names)

            return Work(job, lambda logins: self._accounts_page(session, message, logins=logins))
        if path == "/printers":
            message = request.query.get("done", "")
            return self._page(
                200,
                pages.printers_page(
                    self.backend.status(), "print" in _rights(role), message[:200], user, role, csrf
                ),
            )
        return self._page(
            404, pages.message_page("Not found", f"No page at {path}.", user, role, csrf)
        )

    def _post(self, request: Request, session: Session) -> Response | Work | Later:
        path = request.path
        form = request.form()
        user, role, csrf = session.account, session.role, session.csrf
        if path == "/logout":
            self.sessions.pop(session.sid, None)
            return Response(
                303, b"", headers=[("location", "/"), ("set-cookie", self._cookie(request, "", 0))]
            )
        if path == "/verify":
            if self.verifier is None:
                return self._plain(503, "verification is not available")
            anchors = form.get("anchors", "")
            started, error = self.verifier.start(anchors, f"{user} ({role})")
            if not error:
                self._record("web_verify", {**self._who(session, request), "anchors": started})
            if error:
                return self._page(400, pages.message_page("Verify", error, user, role, csrf))
            return Response(303, b"", headers=[("location", "/verify")])
        if path.startswith("/accounts/"):
            return self._account_change(request, session, form)
        needs_print = path in ("/printers/test-page", "/reports/print") or (
            path.startswith("/entry/") and path.endswith("/reprint")
        )
        if needs_print and "print" not in _rights(role):
            self._security(f"printer action refused to {user} ({role})", request.source)
            return self._page(
                403,
                pages.message_page(
                    "Refused", "Printer actions need the operator or admin role.", user, role, csrf
                ),
            )
        by = f"web:{user}"
        if path == "/printers/test-page":
            printer = form.get("printer") or None
            reply = self.backend.status_page(printer, by)
            return self._printed(
                session, request, reply, "/printers", "Not printed",
                {"action": "status_page", "printer": printer},
                f"Test page queued as job {reply.get('job')}.",
            )  # fmt: skip
        if path == "/reports/print":
            try:
                day = dt.date.fromisoformat(form.get("date", ""))
            except ValueError:
                return self._plain(400, "date must be YYYY-MM-DD")

            def start_report(respond: Callable[[Response], None]) -> None:
                def reply(answer: dict) -> None:
                    respond(self._printed(
                        session, request, answer, "/reports", "Not printed",
                        {"action": "report", "date": day.isoformat(),
                         "number": answer.get("number")},
                        f"Report number {answer.get('number')} of {day} queued "
                        f"({answer.get('count')} entries).",
                    ))  # fmt: skip

                self.backend.report(day, by, reply)

            return Later(start_report)
        if needs_print:
            seq_text = path.split("/")[2]
            if not seq_text.isdigit() or len(seq_text) > 19:
                return self._plain(404, "no such entry")
            seq = int(seq_text)

            def start_reprint(respond: Callable[[Response], None]) -> None:
                def reply(answer: dict) -> None:
                    respond(self._printed(
                        session, request, answer, "/printers", "Not reprinted",
                        {"action": "reprint", "seq": seq},
                        f"Reprint of entry {seq} queued (copy {answer.get('copy')}).",
                    ))  # fmt: skip

                self.backend.reprint(seq, by, reply)

            return Later(start_reprint)
        return self._plain(404, "no such form")

    # ---- accounts (admin)

    def _refuse_accounts(self, request: Request, session: Session) -> Response | None:
        if "accounts" in _rights(session.role):
            return None
        self._security(
            f"accounts page refused to {session.account} ({session.role})", request.source
        )
        return self._page(
            403,
            pages.message_page(
                "Refused",
                "Accounts need the admin role.",
                session.account,
                session.role,
                session.csrf,
            ),
        )

    def _accounts_page(
        self,
        session: Session,
        message: str,
        error: str = "",
        logins: dict[str, dict[str, Any] | None] | None = None,
    ) -> Response:
        """`logins`: each account's last `web_login` entry (None: not looked up)."""
        try:
            accounts = sorted(self.accounts.load().values(), key=lambda a: a.name)
        except AccountError as exc:
            accounts, error = [], str(exc)
        tz, note = self.backend.zone()
        return self._page(
            400 if error else 200,
            pages.accounts_page(
                accounts,
                message,
                error,
                session.account,
                session.role,
                session.csrf,
                logins,
                tz,
                note,
            ),
        )

    def _account_change(self, request: Request, session: Session, form: dict[str, str]) -> Any:
        """Add, change the role of, set the password of or remove an account: on a
        worker thread (a hash, the file's fsync), then recorded and its sessions ended."""
        refusal = self._refuse_accounts(request, session)
        if refusal is not None:
            return refusal
        action = request.path.split("/", 2)[2]
        if action not in ACCOUNT_ACTIONS:
            return self._plain(404, "no such form")
        name = form.get("name", "")[:64]
        role = form.get("role", "")
        password = form.get("password", "")
        state_dir = self.backend.state_dir
        if action in ("add", "password") and password != form.get("password2", ""):
            return self._accounts_page(session, "", "the two passwords differ")

        def job() -> str:
            from gateway.web.accounts import new_account

            store = AccountStore(state_dir)  # its own: the loop's store is read meanwhile
            try:
                if action == "add":
                    store.add(new_account(name, role, password))
                elif action == "role":
                    store.set_role(name, role, keep_admin=True)
                elif action == "password":
                    store.set_password(name, password)
                else:
                    store.remove(name, keep_admin=True)
            except AccountError as exc:
                return str(exc)
            return ""

        def then(error: str) -> Response:
            if error:
                return self._accounts_page(session, "", error)
            detail: dict[str, Any] = {**self._who(session, request), "action": action}
            detail["name"] = name
            if action in ("add", "role"):
                detail["new_role"] = role
            self._record("web_account", detail)
            ended = self._end_sessions(name) if action != "add" else 0
            done = ACCOUNT_ACTIONS[action].format(name=name, role=role)
            if ended:
                done += f" {ended} session(s) of {name} ended."
            if session.sid not in self.sessions:
                return _see_other("/")  # the admin changed their own account: log in again
            return _see_other("/accounts?" + _qs(done=done))

        return Work(job, then, pool="hash" if action in ("add", "password") else "pages")

    def _end_sessions(self, name: str) -> int:
        gone = [sid for sid, s in self.sessions.items() if s.account == name]
        for sid in gone:
            del self.sessions[sid]
        return len(gone)

    # ---- the audit trail (worker thread)

    def _filters(self, request: Request) -> tuple[Any, dict[str, str], int, int]:
        from gateway.audit.query import Filters

        params = request.query
        tz = self.backend.zone()[0]

        def moment(name: str, end: bool = False) -> int | None:
            text = params.get(name, "").strip()
            return zone.parse_time(text, tz, end) if text else None

        try:
            page = max(1, int(params.get("paged", "1")))
            per_page = min(MAX_PER_PAGE, max(1, int(params.get("per_page", str(PER_PAGE)))))
        except ValueError:
            raise ValueError("paged and per_page are numbers") from None
        if params.get("orderby", "seq") != "seq":
            raise ValueError("the table is sorted by seq (received order) only: orderby=seq")
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ValueError("order is asc or desc")
        values = {name: (params.get(name) or "").strip() or None for name, _ in pages.FILTER_FIELDS}
        f = Filters(
            **values,
            since_us=moment("since"),
            until_us=moment("until", end=True),
            event_since_us=moment("event_since"),
            event_until_us=moment("event_until", end=True),
            flagged=bool(params.get("flagged")),
            text=(params.get("s") or "").strip() or None,
            limit=per_page,
            offset=(page - 1) * per_page,
            order=order,
        )
        return f, params, page, per_page

    def _audit(self, request: Request, session: Session) -> Response | Work:
        tz, note = self.backend.zone()
        user, role, csrf = session.account, session.role, session.csrf
        try:
            f, params, page, per_page = self._filters(request)
        except ValueError as exc:
            return self._page(
                400,
                pages.audit_table(
                    request.query,
                    [],
                    {},
                    0,
                    False,
                    1,
                    PER_PAGE,
                    note,
                    tz,
                    "",
                    str(exc),
                    user,
                    role,
                    csrf,
                ),
            )
        state_dir = self.backend.state_dir
        seqmap = self.seqmap

        def job() -> tuple:
            from gateway.audit import present
            from gateway.audit.query import QueryView

            with QueryView(state_dir) as view:
                rows = view.page(f)
                if len(rows) < f.limit and (rows or not f.offset):
                    total, capped = f.offset + len(rows), False
                else:
                    total = view.count_upto(f, f.offset + COUNT_CAP + 1)
                    capped = total > f.offset + COUNT_CAP
                provenance = present.provenance(view.result([]), True)
            problems = seqmap.check_rows(rows)
            return rows, problems, total, capped, provenance

        def then(result: tuple) -> Response:
            rows, problems, total, capped, provenance = result
            return self._page(
                200,
                pages.audit_table(
                    params,
                    rows,
                    problems,
                    total,
                    capped,
                    page,
                    per_page,
                    note,
                    tz,
                    provenance,
                    "",
                    user,
                    role,
                    csrf,
                ),
            )

        return Work(job, then)

    def _reports(self, request: Request, session: Session) -> Work:
        from gateway.audit.query import Filters

        user, role, csrf = session.account, session.role, session.csrf
        state_dir = self.backend.state_dir
        message = request.query.get("done", "")[:200]
        f = Filters(kind="report", limit=MAX_PER_PAGE, order="desc")

        def job() -> list[dict[str, Any]]:
            from gateway.audit.query import QueryView

            with QueryView(state_dir) as view:
                return [r["record"] for r in view.page(f)]

        def then(records: list[dict[str, Any]]) -> Response:
            return self._page(
                200,
                pages.reports_page(records, "print" in _rights(role), message, user, role, csrf),
            )

        return Work(job, then)

    def _entry(self, request: Request, session: Session) -> Response | Work:
        user, role, csrf = session.account, session.role, session.csrf
        seq_text = request.path.split("/")[2] if request.path.count("/") == 2 else ""
        if not seq_text.isdigit() or len(seq_text) > 19:
            return self._page(
                404, pages.message_page("Not found", "No such entry.", user, role, csrf)
            )
        seq = int(seq_text)
        tz, note = self.backend.zone()
        seqmap = self.seqmap
        state_dir = self.backend.state_dir

        def job() -> Any:
            item = seqmap.get(seq)
            if item is None or item.damage:
                return item, None, None
            return item, *entry_lookups(state_dir, seq)

        def then(result: Any) -> Response:
            item, outcomes, reports = result
            if item is None or (item.seq != seq and not item.damage):
                return self._page(
                    404,
                    pages.message_page(
                        "Not found", f"Entry {seq} is not in the live ledger.", user, role, csrf
                    ),
                )
            if item.damage:
                return self._page(
                    200,
                    pages.message_page(f"Entry {seq}", f"DAMAGED: {item.damage}", user, role, csrf),
                )
            check = "ok: its stored bytes and the previous entry's hash give its hash"
            return self._page(
                200,
                pages.entry_detail(
                    item.record,
                    check,
                    tz,
                    note,
                    "print" in _rights(role),
                    user,
                    role,
                    csrf,
                    outcomes.rows,
                    outcomes.covered_to if outcomes.cut else None,
                    reports.rows,
                    reports.covered_to if reports.cut else None,
                ),
            )

        return Work(job, then)

    def _export(self, request: Request, session: Session, form: str) -> Response | Work:
        try:
            f, params, _page, _per = self._filters(request)
        except ValueError as exc:
            return self._plain(400, str(exc))
        f = dataclasses.replace(f, offset=0, order=params.get("order", "asc"))
        tz, note = self.backend.zone()
        name = _export_name(params, note, form)
        self._record(
            "web_export",
            {
                **self._who(session, request),
                "format": form,
                "filters": {k: v for k, v in params.items() if k != "paged"},
            },
        )
        chunks = export_chunks(self.backend.state_dir, f, form, tz, note)
        kind = "text/csv; charset=utf-8" if form == "csv" else "application/x-ndjson"
        return Response(
            200, b"", kind, [("content-disposition", f'attachment; filename="{name}"')], chunks
        )


# The account forms (POST /accounts/ACTION) and what the page says once done.
ACCOUNT_ACTIONS = {
    "add": "Account {name} added ({role}).",
    "role": "{name} is now {role}.",
    "password": "Password of {name} set.",
    "remove": "Account {name} removed.",
}


def _see_other(location: str) -> Response:
    return Response(303, b"", headers=[("location", location)])


def _rights(role: str) -> frozenset[str]:
    from gateway.web.accounts import RIGHTS

    return RIGHTS.get(role, frozenset())


def _qs(**values: str) -> str:
    from urllib.parse import urlencode

    return urlencode(values)


def _export_name(params: dict[str, str], zone_note: str, form: str) -> str:
    since = params.get("since", "start") or "start"
    until = params.get("until", "now") or "now"
    zone_name = zone_note.split(" ", 1)[0]
    raw = f"audit_{since}_{until}_{zone_name}.{form}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)


def export_chunks(state_dir: Path, f: Any, form: str, tz: dt.tzinfo, note: str) -> Iterator[bytes]:
    """Every matching row, checked, as CSV or JSONL: the CLI's writer, 500 rows a chunk."""
    import io

    from gateway.audit import present
    from gateway.audit.check import Cursor
    from gateway.audit.query import FETCH_CHUNK, REMOVED, QueryView, check_rows, stream

    buf = io.StringIO()
    writer = present.Writer(form, buf, tz, note)
    cursor = Cursor(state_dir / "ledger")

    def emit(rows: list) -> bytes:
        problems = check_rows(cursor, rows)
        for r in rows:
            why = problems.get(r["seq"])
            if why == REMOVED:
                writer.row(r, None, True, unchecked=REMOVED)
            else:
                writer.row(r, why, True)
        data = buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
        return data

    with QueryView(state_dir) as view:
        chunk: list = []
        for r in stream(view, f):
            chunk.append(r)
            if len(chunk) == FETCH_CHUNK:
                yield emit(chunk)
                chunk = []
        yield emit(chunk)


# A hash to spend on a login to a name that has no account (so answers take
# as long as for a real one).
_DUMMY = Account("-", "auditor", b"\0" * 16, b"\0" * 32)

"""Intake: parsed items to ledger entries and owed replies, for every front-end.

A front-end (the TCP server, HTTP, syslog) owns its sockets and a parser per
client; it hands the parser, the client's Session and its ReplyQueue to
`Intake.feed`, which takes items one by one: an event is validated, redacted,
encoded and staged in the ledger; a refused line becomes a `rejected` entry; a
hello updates the session. Replies go into the queue, due when the ledger's
durable head covers them. Nothing here touches a socket, so every rule of what
is stored and what is answered is tested by feeding values.

The per-event path is the gateway's hottest code: the loop below is written
for speed (locals, exact type tests), measured in bench/micro.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway import __version__
from gateway.config import IngestConfig
from gateway.errors import RemoteInputError
from gateway.ingest import dedup as ids
from gateway.ingest import fast as fastpath
from gateway.ingest import replies as wire
from gateway.ingest.limits import Policy
from gateway.ingest.protocol import EOF, Hello, IngestProtocol, bad_line
from gateway.ingest.redact import Redactor
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ingest.validate import BAD_EVENT_ID, DUPLICATE_KEY, validate_event
from gateway.ledger import entries
from gateway.ledger.commit import Ledger
from gateway.logs import RateLimitedLog

security_log = logging.getLogger("gateway.security")

__all__ = ["DEFERRED", "FINISHED", "MORE", "IngestStats", "Intake"]

# What `feed` ended on: the parser needs more bytes; the budget ran out with
# items left (come back next turn); the client is done (EOF, or refused).
MORE = 0
DEFERRED = 1
FINISHED = 2


# The answer to a line with an event_id while the deduplication table loads
# at start (seconds, or a minute when it is rebuilt from the ledger).
RETRY_DETAIL = "the gateway is loading its event_id table; send this event again shortly"

# Refusals of lines that are, or may be, a hello: they keep no excerpt.
HELLO_REFUSALS = frozenset({"bad_hello", "unexpected_hello"})

# Refused lines beyond the source's rate limit, or while the ledger takes
# nothing (disk full, damaged), are counted instead of stored, and written as
# one `refused_summary` entry per source and reason at most once a minute: a
# flood costs a few entries a minute, and an auditor still sees how many lines
# were refused, with which codes, from where and when.
SUMMARY_INTERVAL_S = 60.0
# Sources counted apart in one interval; beyond that they share one count
# (source "*"): memory stays bounded whatever the number of addresses.
SUMMARY_MAX_SOURCES = 1024


@dataclass(slots=True)
class IngestStats:
    events: int = 0
    rejected: int = 0
    unstored: int = 0  # refused lines not written because the ledger took nothing (disk full)
    summarised: int = 0  # refused lines counted past the rate limit instead of written
    summaries: int = 0  # refused_summary entries written
    accepted_connections: int = 0
    refused_connections: int = 0
    idle_closed: int = 0


class Intake:
    def __init__(
        self,
        ledger: Ledger,
        config: IngestConfig,
        redactor: Redactor | None = None,
        dedup: ids.Deduplicator | None = None,
        native: bool | None = None,
    ):
        """`native`: True requires the native path, False forces the reference
        (Python) path, None takes the native one when it is built and not
        disabled (GATEWAY_PURE_PYTHON=1)."""
        self.ledger = ledger
        self.clock = ledger.clock
        self.config = config
        self.policy = Policy(config)
        self.redactor = redactor
        # Idempotent sends with event_id (None or disabled: ids are stored as data).
        self.dedup = dedup if dedup is not None and dedup.enabled else None
        self.stats = IngestStats()
        self._security = RateLimitedLog(security_log)
        # (source address, reason) -> counts of refused lines not stored one by one.
        self._counted: dict[tuple[str, str], dict] = {}
        self._counted_since = self.clock.monotonic()
        self._module = fastpath.native_module() if native is not False else None
        if native is True and self._module is None:
            raise RuntimeError(
                "the native ingest core is not built (or GATEWAY_PURE_PYTHON=1 forbids it)"
            )
        self.fast: fastpath.FastPath | None = None
        self._fast_setup()

    @property
    def path(self) -> str:
        """Which path takes plain events: "native" or "python" (the reference)."""
        return "native" if self.fast is not None else "python"

    def _fast_setup(self) -> None:
        self.fast = None
        if self._module is not None and (
            self.redactor is None or self.redactor.key_literals() is not None
        ):
            # A redaction pattern that can match any key leaves every event to
            # the reference path's walk.
            self.fast = fastpath.FastPath(self._module, self.config, self.redactor)

    def reconfigure(self, config: IngestConfig, redactor: Redactor | None) -> None:
        """New limits and redaction (a reload); per-source counts carry over."""
        counts = self.policy.per_source
        self.config = config
        self.policy = Policy(config)
        self.policy.per_source = counts
        self.redactor = redactor
        self._fast_setup()

    def feed(self, session: Session, proto, replies: ReplyQueue, budget: int | None) -> int:
        """Take items from `proto` until it needs more bytes, the client is done, or
        `budget` items were handled; returns MORE, FINISHED or DEFERRED."""
        next_event = proto.next_event
        ledger = self.ledger
        values = ledger.wants_values
        # The writer's own append when no subscriber reads entries: one call less
        # per event on the hottest path (Ledger.append adds only the entry list).
        append = ledger.append if values else ledger.writer.append
        ack_seq = replies.add_ack  # through the queue: a front-end may owe no replies (syslog)
        encode = entries.encode_event
        validate = validate_event
        clock = self.clock
        unsynced = not clock.synced
        buckets = self.policy.buckets
        redactor = self.redactor
        dedup = self.dedup
        blocked = ledger.refusal() is not None  # cannot change within one call
        received = self.clock.wall_us()
        source = session.source
        ack = session.ack
        events = 0
        left = budget if budget is not None else -1
        outcome = MORE
        # The native path takes runs of plain events in one call; a line it
        # leaves (a hello, an event_id, a refusal, ...) is taken below, then it
        # goes on. Only where the line-by-line rules below would store every
        # event as it comes: an authorised sender, no rate limit, a ledger
        # that takes entries.
        fast = (
            self.fast
            if (
                session.authorized
                and not blocked
                and buckets is None
                and isinstance(proto, IngestProtocol)
            )
            else None
        )
        while True:
            if left == 0:
                outcome = DEFERRED
                break
            if fast is not None and proto.scannable:
                taken, stop = fast.take(ledger, session, proto, replies, received, unsynced, left)
                events += taken
                left -= taken
                if stop == fastpath.FULL or stop == fastpath.BUDGET:
                    continue
                # MORE or SLOW: the next line (or the end) is the reference's.
            left -= 1
            try:
                item = next_event()
            except RemoteInputError as exc:
                if not session.authorized:
                    # A stranger's line, whatever it is: nothing stored, one refusal, closed.
                    self._refuse_sender(session, b"", replies, received)
                    outcome = FINISHED
                    break
                self.refuse(session, exc, replies, received)
                if exc.fatal:
                    session.close()
                    outcome = FINISHED
                    break
                continue
            if item is None:
                break
            if type(item) is dict:
                if (
                    not session.authorized
                    or blocked
                    or (buckets is not None and not buckets.take(session.addr, clock.monotonic()))
                ):
                    self._refuse_sender(session, proto.last_line, replies, received)
                    outcome = FINISHED
                    break
                flags = validate(item)
                duplicates = proto.duplicates
                if duplicates is not None:
                    flags.append(DUPLICATE_KEY)
                if redactor is not None and redactor.might_need(item, proto.last_line):
                    flags += redactor.event(item)
                if unsynced:
                    flags.append(entries.CLOCK_UNSYNCED)
                if duplicates is not None or (dedup is not None and "event_id" in item):
                    events += self._store_checked(session, item, flags, proto, replies, received)
                    continue
                payload = encode(received, source, item, flags)
                if values:
                    seq = append(
                        payload, entries.event_value(received, session.source_map, item, flags)
                    )
                else:
                    seq = append(payload)
                events += 1
                if ack:
                    if flags:
                        replies.add(seq, wire.ack(seq, flags))
                    else:
                        ack_seq(seq)
                continue
            if item is EOF:
                outcome = FINISHED
                break
            assert isinstance(item, Hello)
            if not self.hello(session, item, replies):
                outcome = FINISHED
                break
            source = session.source
            ack = session.ack
        self.stats.events += events
        return outcome

    def _store_checked(
        self,
        session: Session,
        item: dict,
        flags: list[str],
        proto: IngestProtocol,
        replies: ReplyQueue,
        received: int,
    ) -> int:
        """The events the hot path leaves: those carrying an event_id (stored once per
        app and id within the window: docs/protocol.md, "Exactly once with event_id")
        and those with repeated keys (every value kept, redacted like the event).
        1 if stored."""
        dedup = self.dedup
        line = proto.last_line
        duplicates = proto.duplicates
        if duplicates is not None and self.redactor is not None:
            for repeat in duplicates:  # a repeated "password" is still a password
                flags += [f for f in self.redactor.event(repeat) if f not in flags]
        event_id = item.get("event_id")
        body = entries.encode_value(item)
        remember = False
        # An event_id that is not valid was flagged: stored as any event.
        if dedup is not None and event_id is not None and BAD_EVENT_ID not in flags:
            verdict, original, key, fp = dedup.lookup(session.app, event_id, body, received)
            remember = True  # new, or unchecked while the table loads
            if verdict == ids.DUPLICATE:
                if session.ack:
                    replies.add(original, wire.ack(original, flags, duplicate=True))
                return 0
            if verdict == ids.CONFLICT:
                detail = f"seq {original} holds a different event under this event_id"
                self.refuse(session, bad_line("event_id_conflict", detail, line), replies, received)
                return 0
            if verdict == ids.RETRY:
                if session.ack:
                    # Not stored: the client holds the event and sends it again.
                    dedup.note_retry()
                    replies.add(0, wire.error("retry", RETRY_DETAIL))
                    return 0
                # Fire and forget: no one would send it again, so it is stored unchecked.
                dedup.note_unchecked()
        payload = entries.encode_event_body(received, session.source, body, flags, duplicates)
        if self.ledger.wants_values:
            value = entries.event_value(received, session.source_map, item, flags, duplicates)
            seq = self.ledger.append(payload, value)
        else:
            seq = self.ledger.append(payload)
        if remember:
            assert dedup is not None
            dedup.add(key, fp, seq, received)
        if session.ack:
            if flags:
                replies.add(seq, wire.ack(seq, flags))
            else:
                replies.add_ack(seq)
        return 1

    def hello(self, session: Session, hello: Hello, replies: ReplyQueue) -> bool:
        """Apply a hello and owe its answer; False (after one error line) when refused."""
        refusal = session.hello(hello, self.policy)
        if refusal:
            self.stats.rejected += 1
            self._security.warning(
                "hello refused: bad or missing token",
                {"peer": session.peer, "conn": session.conn_id, "app": hello.app},
                self.clock.monotonic(),
            )
            replies.add(0, wire.error(refusal, "the token is wrong, or missing for this app"))
            return False
        replies.add(
            0,
            wire.hello(
                {
                    "version": __version__,
                    "head_seq": self.ledger.durable.seq,
                    "conn": session.conn_id,
                    "ack": session.ack,
                    "max_line_bytes": self.config.max_line_bytes,
                }
            ),
        )
        return True

    def _evidence(self, exc: RemoteInputError) -> tuple[bytes, bytes, bool]:
        """(excerpt, digest, redacted) of a refused line, with no room for a secret.

        A line that is or could be a hello keeps no excerpt (its token would be
        in it), nor does one whose bytes hold a configured token; the length
        and digest still identify it.
        """
        excerpt = exc.excerpt or b""
        if exc.code in HELLO_REFUSALS or any(
            excerpt.find(secret) >= 0
            for secrets in self.policy.tokens.values()
            for secret in secrets
        ):
            excerpt = b""
        return excerpt, exc.digest or b"", False

    def authenticate(self, session: Session, token: str | None) -> str:
        """An HTTP request's bearer token: '' when accepted, else the refusal (logged)."""
        refusal = session.bearer(None, token, self.policy)
        if refusal:
            self.stats.rejected += 1
            self._security.warning(
                "request refused: bad or missing token",
                {"peer": session.peer, "conn": session.conn_id},
                self.clock.monotonic(),
            )
        return refusal

    def _within_rate(self, session: Session, exc: RemoteInputError) -> bool:
        """A refused line takes from its source's rate limit as an event does."""
        buckets = self.policy.buckets
        if buckets is None or exc.code == "rate_limited":  # that one is the limit's own record
            return True
        return buckets.take(session.addr, self.clock.monotonic())

    def _count(self, session: Session, exc: RemoteInputError, reason: str) -> None:
        key = (session.addr, reason)
        counts = self._counted.get(key)
        if counts is None:
            if len(self._counted) >= SUMMARY_MAX_SOURCES:
                key = ("*", reason)
                counts = self._counted.get(key)
            if counts is None:
                now = self.clock.wall_us()
                counts = self._counted[key] = {"lines": 0, "bytes": 0, "codes": {}, "first": now}
        counts["lines"] += 1
        counts["bytes"] += exc.length or 0
        counts["codes"][exc.code] = counts["codes"].get(exc.code, 0) + 1
        counts["last"] = self.clock.wall_us()

    def summarise(self, *, force: bool = False) -> int:
        """Write the counts of refused lines not stored one by one, once per
        SUMMARY_INTERVAL_S (every health tick asks), as soon as the ledger takes
        entries again after disk_full, and at stop (`force`). Returns entries written."""
        if not self._counted or self.ledger.refusal() is not None:
            return 0
        now = self.clock.monotonic()
        waited = any(reason != "rate_limited" for _addr, reason in self._counted)
        if not (force or waited or now - self._counted_since >= SUMMARY_INTERVAL_S):
            return 0
        counted, self._counted, self._counted_since = self._counted, {}, now
        for (addr, reason), counts in counted.items():
            self.ledger.system(
                "refused_summary",
                {
                    "source": addr,
                    "reason": reason,
                    "lines": counts["lines"],
                    "bytes": counts["bytes"],
                    "codes": counts["codes"],
                    "first_at": counts["first"],
                    "last_at": counts["last"],
                },
            )
        self.stats.summaries += len(counted)
        return len(counted)

    def _refuse_sender(
        self, session: Session, line: bytes, replies: ReplyQueue, received: int
    ) -> None:
        """A line from a sender that may not send it: one error line; the client is done.

        Without a required token, nothing is recorded (an unauthenticated
        stranger must not fill the ledger); when the ledger cannot take events
        (disk full), nothing can be stored, this line included; over the rate
        limit, the line is recorded as `rejected` (one per connection: it is
        closed right after) and the rest of its input is discarded.
        """
        refusal = self.ledger.refusal()
        if not session.authorized:
            exc = RemoteInputError(
                "token_required", "this gateway requires a hello with a token", fatal=True
            )
        elif refusal is not None:
            exc = RemoteInputError(*refusal, fatal=True)
        else:
            limit = self.policy.buckets
            assert limit is not None
            detail = f"more than {limit.rate:g} events/s from {session.addr}; closing"
            exc = bad_line("rate_limited", detail, line)
            exc.fatal = True
        self.refuse(session, exc, replies, received)
        session.close()

    def refuse(
        self,
        session: Session,
        exc: RemoteInputError,
        replies: ReplyQueue | None,
        received: int,
    ) -> int:
        """Record a refused line (when it carries the line's evidence) and owe its reply.

        `replies` None: no reply at all (a line cut by shutdown). Returns the
        `rejected` entry's seq, or 0 when nothing was stored.
        """
        self.stats.rejected += 1
        seq = 0
        refusal = self.ledger.refusal() if exc.length is not None else None
        if refusal is not None:
            # The ledger takes nothing now (disk full): refusals are counted, not written.
            self.stats.unstored += 1
            self._count(session, exc, refusal[0])
        elif exc.length is not None and not self._within_rate(session, exc):
            self.stats.summarised += 1
            self._count(session, exc, "rate_limited")
        elif exc.length is not None:
            excerpt, digest, redacted = self._evidence(exc)
            if self.redactor is not None:
                excerpt, redacted = self.redactor.excerpt(excerpt)
                if redacted:
                    digest = self.redactor.keyed(digest)
            seq = self.ledger.append(
                entries.encode_rejected(
                    received,
                    session.source,
                    exc.code,
                    exc.detail,
                    exc.length,
                    digest,
                    excerpt,
                    redacted,
                    not self.clock.synced,
                )
            )
        self._security.warning(
            "input refused",
            {"peer": session.peer, "conn": session.conn_id, "error": exc.code, "seq": seq},
            self.clock.monotonic(),
        )
        # Fire-and-forget clients get no reply; a fatal refusal (a bad hello) is
        # answered anyway, since the client is about to be disconnected.
        if replies is not None and (session.ack or exc.fatal):
            replies.add(seq, wire.error(exc.code, exc.detail))
        return seq

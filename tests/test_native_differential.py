"""The native ingest path against the Python reference: the same bytes in, the same bytes out.

Every case builds two identical set-ups (same FakeClock time, configuration,
session, redactor and ledger configuration), one Intake with native=True and
one with native=False, feeds both the same bytes in the same chunks (a feed
after each receive_data, with the same budget, until it stops deferring; then
EOF and a last feed) and requires, at every feed, the same return value, the
same reply bytes, the same `intake.stats` and `proto.lines`, and at the end the
same staged writes (bytes, segment file, offset, create, sync points) and the
same writer state (next seq, chain hash).

The inputs: generated events (Hypothesis), the corpora of the parser,
validation and redaction tests, and adversarial lines (every byte value,
truncations, nesting at the limit, repeated and escaped keys, surrogates,
invalid UTF-8, line ends, the line length limit at every chunk boundary), over
the configurations a connection can have.

Without the native extension these tests skip; with GATEWAY_REQUIRE_NATIVE=1
(CI) they fail instead. `make test-slow` runs the generated cases with many
more examples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_ingest_protocol as protocol_corpus
import test_redact as redact_corpus
import test_validate as validate_corpus
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.config import DedupConfig, IngestConfig, LedgerConfig, RedactConfig
from gateway.ingest import dedup as ids
from gateway.ingest.intake import DEFERRED, FINISHED, IngestStats, Intake
from gateway.ingest.protocol import MAX_DEPTH, IngestProtocol
from gateway.ingest.redact import Redactor
from gateway.ingest.replies import ReplyQueue
from gateway.ingest.session import Session
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.commit import Ledger
from gateway.ledger.store import SYNC_UNIT_BYTES
from gateway.loop import EventLoop

try:
    from gateway.ingest import fast
except ImportError:  # a checkout without the native path at all
    fast = None

MiB = 1024 * 1024
# Hundreds of ledgers are opened and removed here: in memory where the system has
# a tmpfs for it (opening one costs directory syncs that a loaded disk makes slow).
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# The redaction key both sides share (the gateway keeps one in its state directory).
KEY = b"k" * 32
SECRET = "hunter2-correct-horse"
CARD = "4111 1111 1111 1111"  # a test Visa number, Luhn-valid
# GATEWAY_DIFF_MAX_EXAMPLES=N caps every property test below at N examples:
# make image-check runs this file under qemu emulation (aarch64), where the
# full counts would take far too long (image/README.md). Unset or 0: the counts
# as written.
MAX_EXAMPLES = int(os.environ.get("GATEWAY_DIFF_MAX_EXAMPLES") or 0)


def examples(n: int) -> int:
    return min(n, MAX_EXAMPLES) if MAX_EXAMPLES > 0 else n


def native_built() -> bool:
    return fast is not None and fast.native_module() is not None


def require_native() -> None:
    """Skip without the extension; with GATEWAY_REQUIRE_NATIVE=1 (CI), fail instead."""
    if not native_built():
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            pytest.fail("GATEWAY_REQUIRE_NATIVE=1 but the native ingest extension is not built")
        pytest.skip("the native ingest extension is not built")


@pytest.fixture(scope="module")
def native():
    """Every differential test takes this: the extension must be there to compare with."""
    require_native()


# ---- the two set-ups


@dataclass(frozen=True)
class Setup:
    """One connection's configuration, built identically on both sides."""

    name: str = "plain"
    hello: bytes | None = None  # the first line sent (None: no hello, fire and forget)
    http: bool = False  # IngestProtocol(max, hellos=False), acknowledged like an HTTP request
    max_line_bytes: int = 65536
    redact: str = "off"  # off | keys | cards | both | digest | patterns
    unsynced: bool = False
    segment_bytes: int = 64 * MiB
    # "off" by default: staging is the same, and opening a ledger then costs no
    # fsync (hundreds are opened here); "batch" and "always" have set-ups of their own.
    fsync: str = "off"
    values: bool = False  # a subscriber reads entries: Ledger.append gets the decoded map
    dedup: bool = False  # event_id deduplication, the table loaded
    disk_full: bool = False
    cert_app: str | None = None
    ingest: tuple[tuple[str, Any], ...] = ()  # further IngestConfig fields
    flip_sync: bool = False  # the clock's sync state changes after every read
    # A reload after the first read: (redaction mode, max_line_bytes or None for
    # the same) for the intake, while the open connection keeps its parser (as
    # the server does).
    reload: tuple[str, int | None] | None = None


def make_redactor(mode: str) -> Redactor | None:
    """As gateway/service.py builds it from RedactConfig (None when off)."""
    if mode == "off":
        return None
    defaults = RedactConfig()
    config = {
        "keys": RedactConfig(cards=False),
        "cards": RedactConfig(keys=(), cards=True),
        "both": defaults,
        "digest": RedactConfig(digest=True),
        # tests/test_redact.py's extra patterns: non-ASCII, '?' and a bracket expression
        "patterns": RedactConfig(keys=(*defaults.keys, "pässwort", "ke?", "[xy]-auth*")),
    }[mode]
    return Redactor(config.keys, config.cards, KEY, config.digest)


STATS = [f.name for f in dataclasses.fields(IngestStats)]


class Side:
    """One Intake on a real, opened, never-committed Ledger, with its parser and replies."""

    def __init__(self, root: Path, setup: Setup, native: bool) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.clock = FakeClock()
        if setup.unsynced:
            self.clock.kernel_synced = False
            self.clock.check_sync()
        self.loop = EventLoop(self.clock)
        name = "native" if native else "python"
        ledger_config = LedgerConfig(segment_bytes=setup.segment_bytes, fsync=setup.fsync)
        self.ledger = Ledger(ledger_config, root / name, self.loop)
        self.ledger.open()
        if setup.values:
            self.ledger.want_entries()
        self.ledger.disk_full = setup.disk_full
        config = IngestConfig(max_line_bytes=setup.max_line_bytes, **dict(setup.ingest))
        dedup = None
        if setup.dedup:
            dedup = ids.Deduplicator(DedupConfig(max_ids=1000, window_s=3600), root, self.ledger)
            dedup._loaded(ids.IdTable(1000), dedup._marks, "ledger", 0.0)
        self.dedup = dedup
        self.intake = Intake(self.ledger, config, make_redactor(setup.redact), dedup, native=native)
        assert self.intake.path == name
        self.session = Session("10.0.0.7", 4000, 1, self.intake.policy, cert_app=setup.cert_app)
        if setup.http:
            assert self.session.bearer(None, None, self.intake.policy) == ""
        self.proto = IngestProtocol(setup.max_line_bytes, hellos=not setup.http)
        self.replies = ReplyQueue()
        # Events the native core took itself: a comparison where it took none
        # would only compare the reference with itself.
        self.taken = 0
        self._count_taken()

    def _count_taken(self) -> None:
        fast = self.intake.fast
        if fast is not None:
            take = fast.take

            def counted(*args):
                events, stop = take(*args)
                self.taken += events
                return events, stop

            fast.take = counted

    def between_reads(self, setup: Setup, reads: int) -> None:
        self.clock.advance(0.001)  # the next read is received a millisecond later
        if setup.flip_sync:
            self.clock.kernel_synced = not self.clock.synced
            self.clock.check_sync()
        if setup.reload is not None and reads == 1:
            redact, max_line_bytes = setup.reload
            config = IngestConfig(
                max_line_bytes=max_line_bytes or setup.max_line_bytes, **dict(setup.ingest)
            )
            self.intake.reconfigure(config, make_redactor(redact))
            self._count_taken()

    def feed(self, budget: int | None) -> tuple:
        outcome = self.intake.feed(self.session, self.proto, self.replies, budget)
        return (
            outcome,
            self.replies.take_due(10**18),
            self.proto.lines,
            tuple(getattr(self.intake.stats, name) for name in STATS),
            self.proto.buffered,
            self.session.state,
            self.session.ack,
        )

    def writes(self) -> list[tuple]:
        return [
            (w.path.name, w.offset, w.create, bytes(w.data), list(w.sync_points))
            for w in self.ledger.writer._writes
        ]

    def state(self) -> tuple:
        writer = self.ledger.writer
        # What a subscriber reading entries gets (the native path leaves the
        # value to be decoded from the payload: StagedEntry.decoded).
        staged = [(e.seq, e.hash, e.payload, e.decoded()) for e in self.ledger._staged]
        counts = None
        if self.dedup is not None:
            d = self.dedup
            counts = (d.duplicates, d.conflicts, d.retries, d.unchecked)
        return (
            writer.next_seq,
            writer.last_hash,
            writer.staged_bytes,
            writer.staged_entries,
            writer.segments_created,
            staged,
            counts,
        )

    def close(self) -> None:
        self.loop.close()


# A feed that defers (the budget ran out) is called again at once, as the
# server does on its next turn; this many calls per chunk at most (a line
# needs at least one byte, so a chunk of n bytes needs at most n + 2 turns).
TURNS_SLACK = 3


def drive(side: Side, setup: Setup, chunks: list[bytes], budget: int | None) -> list[tuple]:
    """Feed each chunk, then EOF; the trace of every feed call.

    An exception out of feed ends the trace with its type and message: both
    sides must fail alike (test_the_reference_refuses_a_lone_surrogate_... shows
    one such input of the reference itself)."""
    trace: list[tuple] = []
    for reads, chunk in enumerate([*chunks, b""], 1):
        side.proto.receive_data(chunk)
        for _turn in range(len(chunk) + TURNS_SLACK + (len(chunks) if not chunk else 0)):
            try:
                step = side.feed(budget)
            except Exception as exc:
                trace.append(("raised", type(exc).__name__, str(exc)))
                return trace
            trace.append(step)
            if step[0] != DEFERRED:
                break
        else:
            raise AssertionError(f"feed kept deferring on a chunk of {len(chunk)} bytes")
        if trace[-1][0] == FINISHED:
            break  # the client is done (refused, or EOF): the server reads no more
        side.between_reads(setup, reads)
    return trace


def describe_writes(writes: list[tuple]) -> list:
    """The staged entries, decoded, for a readable failure."""
    out = []
    for name, offset, create, data, _sync in writes:
        pos = fmt.SEGMENT_HEADER_BYTES if create else 0
        if create:
            out.append(("segment", name, offset))
        while pos + fmt.FRAME_HEADER_BYTES <= len(data):
            try:
                length, seq = fmt.parse_frame_header(data, pos)
                start = pos + fmt.FRAME_HEADER_BYTES
                entry = entries.decode(data[start : start + length])
            except Exception as exc:  # the native side may have staged garbage
                out.append(("undecodable", name, pos, repr(exc), data[pos : pos + 64]))
                break
            out.append((seq, entry))
            pos = start + length + fmt.HASH_BYTES
    return out


def first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"at {i}:\n  native: {x!r}\n  python: {y!r}"
    return f"lengths differ: native {len(a)}, python {len(b)}"


def compare(
    setup: Setup,
    chunks: list[bytes],
    budget: int | None,
    natives: tuple[bool, bool] = (True, False),
    other: list[bytes] | None = None,
) -> tuple[int, list[tuple]]:
    """Both sides fed the same chunks; any difference fails with both outputs.
    Returns the events the native core took itself and the staged writes.

    `natives` and `other` (the second side's chunks) exist for the test of this
    comparison itself."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        root = Path(tmp)
        sides = (Side(root / "a", setup, natives[0]), Side(root / "b", setup, natives[1]))
        try:
            native = drive(sides[0], setup, chunks, budget)
            python = drive(sides[1], setup, chunks if other is None else other, budget)
            where = f"setup {setup.name}, budget {budget}, input {b''.join(chunks)[:600]!r}"
            if native != python:
                raise AssertionError(
                    f"feed results differ ({where}) {first_difference(native, python)}"
                )
            nw, pw = sides[0].writes(), sides[1].writes()
            if nw != pw:
                raise AssertionError(
                    f"staged writes differ ({where}) "
                    + first_difference(describe_writes(nw), describe_writes(pw))
                    + "\n  raw "
                    + first_difference(nw, pw)
                )
            ns, ps = sides[0].state(), sides[1].state()
            if ns != ps:
                raise AssertionError(f"writer state differs ({where}) {first_difference(ns, ps)}")
            return sides[0].taken, pw
        finally:
            for side in sides:
                side.close()


def lines_to_bytes(lines: list[bytes], end: bytes = b"\n") -> bytes:
    return b"".join(line + end for line in lines)


def fixed_chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def random_chunks(data: bytes, seed: int, max_chunk: int = 50) -> list[bytes]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


# ---- configurations

ACK = b'{"hello":{"app":"shop","ack":true}}'
NO_ACK = b'{"hello":{"app":"shop","ack":false}}'
TOKEN = "0123456789abcdef-token"

SETUPS = [
    Setup("fire-and-forget"),
    Setup("ack", hello=ACK),
    Setup("hello-no-ack", hello=NO_ACK),
    Setup("http", http=True),
    Setup("unsynced", hello=ACK, unsynced=True),
    Setup("redact-keys", hello=ACK, redact="keys"),
    Setup("redact-cards", hello=ACK, redact="cards"),
    Setup("redact-both", hello=ACK, redact="both"),
    Setup("redact-digest", redact="digest"),
    Setup("redact-patterns", hello=ACK, redact="patterns"),
    Setup("small-segments", hello=ACK, segment_bytes=1024),
    Setup("tiny-segments", segment_bytes=200, redact="both"),
    Setup("fsync-batch", hello=ACK, fsync="batch"),
    Setup("fsync-always", hello=ACK, fsync="always"),
    Setup("values", hello=ACK, values=True, redact="both"),
    Setup("dedup", hello=ACK, dedup=True, redact="both"),
    Setup("http-unsynced-redact", http=True, unsynced=True, redact="both", segment_bytes=1024),
    Setup("short-lines", hello=ACK, max_line_bytes=64),
    Setup("sync-flips", hello=ACK, flip_sync=True, redact="keys"),
    Setup("reload-redaction", hello=ACK, reload=("both", None)),
    Setup("reload-no-redaction", hello=ACK, redact="both", reload=("off", None)),
]
# Configurations that refuse or stop a sender: the native path must leave them as
# the reference does.
EXTRA_SETUPS = [
    Setup("rate-limit", hello=ACK, ingest=(("rate_limit_eps", 5.0), ("rate_burst", 5))),
    Setup(
        "token",
        hello=json.dumps({"hello": {"app": "shop", "token": TOKEN, "ack": True}}).encode(),
        ingest=(("tokens", {"shop": (TOKEN,)}), ("require_token", True)),
    ),
    Setup("token-missing", ingest=(("tokens", {"shop": (TOKEN,)}), ("require_token", True))),
    Setup("certificate", cert_app="till", redact="both"),
    Setup("disk-full", hello=ACK, disk_full=True),
]
ALL_SETUPS = SETUPS + EXTRA_SETUPS
BUDGETS = [1, 7, None]
SETUP_IDS = [s.name for s in ALL_SETUPS]
NAMED = {s.name: s for s in ALL_SETUPS}


def with_hello(setup: Setup, data: bytes) -> bytes:
    return (setup.hello + b"\n" if setup.hello is not None else b"") + data


# ---- the comparison itself (these run without the extension)


def test_the_reference_against_itself_is_identical_and_one_byte_shows():
    for setup in (Setup("ff"), Setup("ack", hello=ACK), Setup("values", values=True)):
        data = with_hello(setup, b'{"event_type":"a","n":1}\n[1]\n{"b":2}\n')
        for budget in BUDGETS:
            compare(setup, [data], budget, natives=(False, False))
        changed = [data.replace(b'"n":1', b'"n":2')]
        with pytest.raises(AssertionError, match="differ"):
            compare(setup, [data], None, natives=(False, False), other=changed)
    # a difference in replies alone (the same entries, the same stats)
    setup = Setup("ack", hello=ACK)
    with pytest.raises(AssertionError, match="feed results differ"):
        compare(setup, [ACK + b"\n"], None, (False, False), [NO_ACK + b"\n"])


def test_a_missing_extension_skips_or_fails_as_the_environment_says(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "native_built", lambda: False)
    monkeypatch.delenv("GATEWAY_REQUIRE_NATIVE", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_native()
    monkeypatch.setenv("GATEWAY_REQUIRE_NATIVE", "1")
    with pytest.raises(pytest.fail.Exception):
        require_native()


def test_the_reference_refuses_a_lone_surrogate_in_a_repeated_key_s_earlier_value():
    """Found by the generated cases (both sides raised alike): a lone surrogate escape in
    the value a repeated key overrides is refused bad_unicode (docs/protocol.md) and the
    next line is taken; feed raised UnicodeEncodeError, and the server closed the
    connection with nothing recorded."""
    for line in (b'{"a":"\\ud800","a":"x"}', b'{"e":{"k":["\\udc00"],"k":1}}'):
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            side = Side(Path(tmp), Setup("ack", hello=ACK), False)
            try:
                side.proto.receive_data(ACK + b"\n" + line + b'\n{"b":1}\n')
                _outcome, replies, *_ = side.feed(None)
                answers = [json.loads(r) for r in replies.splitlines()]
                assert answers[1]["error"] == "bad_unicode" and answers[2]["ok"], answers
            finally:
                side.close()


# ---- generated events

# JSON white space inside a line (no LF: that would end it).
_WS = st.sampled_from(["", "", "", "", " ", "\t", "\r", "  ", " \t\r "])
# Characters at the edges of UTF-8 and JSON: controls, the 1/2/3/4-byte limits,
# the JSON separators, line separators, a BOM, letters whose case maps to ASCII.
_EDGE_CHARS = st.sampled_from(
    [
        "\x00", "\x01", "\x08", "\t", "\n", "\x0c", "\r", "\x1f", " ", '"', "\\", "/", "\x7f",
        "\x80", "\xa0", "\xff", "\u07ff", "\u0800", "\u2028", "\u2029", "\ufeff", "\ufffd",
        "\uffff", "\U00010000", "\U0001f600", "\U0010ffff", "\u212a", "\u0130", "\u017f", "ß",
        "é", "€", "0", "9", "-", "{", "}", "[", "]", ":", ",",
    ]
)  # fmt: skip
# All of Unicode but the surrogates, which UTF-8 cannot hold (JSON escapes spell
# them: _RAW_ESCAPES).
_CHARS = st.one_of(
    st.characters(codec="utf-8"), _EDGE_CHARS, st.characters(codec="utf-8", max_codepoint=0x7F)
)
_TEXT = st.one_of(
    st.text(_CHARS, max_size=12),
    st.sampled_from(
        ["", "x", CARD, "4111-1111-1111-1111", "4111111111111111", "4111111111111112",
         f"paid with {CARD}.", "378282246310005", "12345678901234567890", "1234567890123",
         SECRET, "[redacted value]", "2026-11-23T10:00:00Z"]
    ),
)  # fmt: skip
# Escapes written as they are, inside a JSON string: lone and paired surrogates
# (either order, either case), escaped NUL, an escaped backslash before "ud800".
_RAW_ESCAPES = st.sampled_from(
    ["\\ud800", "\\uDC00", "\\udbff", "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\ude00\\ud83d",
     "\\ud83dx", "\\ud83d\\u0041", "\\u0000", "\\\\ud800", "\\u00e9", "\\u20AC", "\\/",
     "\\u0034\\u0031\\u0031\\u0031 1111 1111 1111"]
)  # fmt: skip
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def escape_char(ch: str, rng: random.Random) -> str:
    """One character as JSON string text, escaped or not where JSON allows either."""
    code = ord(ch)
    must = ch in '"\\' or code < 0x20
    if not must and rng.random() < 0.8:
        return ch
    if ch in _SHORT_ESCAPES and rng.random() < 0.6:
        return _SHORT_ESCAPES[ch]
    if ch == "/" and rng.random() < 0.5:
        return "\\/"
    if code > 0xFFFF:
        code -= 0x10000
        units = [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]
    else:
        units = [code]
    out = ""
    for unit in units:
        hexa = f"{unit:04x}"
        out += "\\u" + (hexa.upper() if rng.random() < 0.3 else hexa)
    return out


@st.composite
def json_string(draw, text=_TEXT) -> str:
    """A JSON string literal: json.dumps (ASCII or not), mixed escapes, or raw escape text."""
    how = draw(st.sampled_from(["ascii", "utf8", "mixed", "mixed", "raw"]))
    value = draw(text)
    if how == "ascii":
        return json.dumps(value, ensure_ascii=True)
    if how == "utf8":
        return json.dumps(value, ensure_ascii=False)
    rng = random.Random(draw(st.integers(0, 2**32)))
    body = "".join(escape_char(ch, rng) for ch in value)
    if how == "raw":
        parts = draw(st.lists(st.one_of(_RAW_ESCAPES, st.just(body)), min_size=1, max_size=3))
        body = "".join(parts)
    return '"' + body + '"'


_DIGITS = st.text("0123456789", min_size=1, max_size=24)
NUMBER_TEXTS = [
    "0", "-0", "-0.0", "0.0", "1E5", "1e5", "1E+5", "1e-400", "-1e-400", "0.1e1", "1e308",
     "1.7976931348623157e308", "1.8e308", "-1.8e308", "4.9e-324", "5e-324", "2e-324",
     "2.2250738585072014e-308", "2.225073858507201e-308", "123456789012345678",
     "1234567890123456789", "999999999999999999", "9223372036854775807", "9223372036854775808",
     "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
     "18446744073709551616", "-18446744073709551616", "-18446744073709551617",
     "0.30000000000000004", "1e22", "1e23", "9007199254740993", "1.0", "100", "1e0", "1E-0",
     "0e0", "-0e-0", "1" + "0" * 63, "1" + "0" * 64, "0." + "0" * 70 + "1",
     # not JSON numbers: the line is refused whole
     "01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "0x10", "1_000", "Infinity", "NaN", "1.e5"
]  # fmt: skip
_NUMBER_SPECIALS = st.sampled_from(NUMBER_TEXTS)


@st.composite
def json_number(draw) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        value = draw(
            st.one_of(
                st.integers(-20, 20),
                st.integers(-(2**63) - 2, 2**63 + 2),
                st.integers(-(2**64) - 2, 2**64 + 2),
                st.integers(-(10**40), 10**40),
            )
        )
        return str(value)
    if kind == 1:
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == 2:
        text = draw(st.sampled_from(["", "-"]))
        lead = draw(_DIGITS)
        text += "0" if lead.startswith("0") else lead
        if draw(st.booleans()):
            text += "." + draw(_DIGITS)
        if draw(st.booleans()):
            text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"]))
            text += draw(st.text("0123456789", min_size=1, max_size=4))
        return text
    return draw(_NUMBER_SPECIALS)


_SCALAR = st.one_of(
    json_number(),
    json_string(),
    st.sampled_from(["true", "false", "null"]),
)
# Keys: the ones the gateway reads, sensitive ones (plain and escaped), and generated ones.
_KEY_TEXT = st.sampled_from(
    ['"event_type"', '"timestamp"', '"event_id"', '"hello"', '"password"', '"Password"',
     '"db_PASSWD"', '"api_key"', '"x_token"', '"tokens"', '"authorization"', '"card_number"',
     '"cvv"', '"cvc"', '"x-auth"', '"key"', '"kez"', '"p\u00e4sswort"', '"\u212aey"', '"\u0130d"',
     '"\\u0070assword"', '"p\\u0061ssword"', '"\\u0050ASSWORD"', '"tok\\u0065n"',
     '"\\u0065vent_type"', '"event\\u005ftype"', '"\\u0074imestamp"', '"\\u0065vent_id"',
     '"\\u0068ello"', '"a"', '"b"', '"note"', '"old_value"', '""', '"\\ud800"',
     '"\\ud83d\\ude00"']
)  # fmt: skip
_KEY = st.one_of(_KEY_TEXT, _KEY_TEXT, json_string())


@dataclass(frozen=True)
class Grammar:
    """What the generated JSON text is made of."""

    scalar: Any  # strategy of scalar JSON texts
    key: Any  # strategy of object key texts (with their quotes)
    repeats: bool  # whether an object may repeat a key


ANY = Grammar(_SCALAR, _KEY, True)


@st.composite
def json_value(draw, depth: int, grammar: Grammar = ANY) -> str:
    """A JSON value as text, nested at most MAX_DEPTH + 1 levels counting `depth` above it."""
    if depth >= MAX_DEPTH + 1 or draw(st.integers(0, 2 + depth)) > 1:
        return draw(grammar.scalar)
    if draw(st.booleans()):
        return json_object_text(draw, depth + 1, draw(st.integers(0, 4)), (), grammar)
    items = [draw(json_value(depth + 1, grammar)) for _ in range(draw(st.integers(0, 4)))]
    return "[" + draw(_WS) + ("," + draw(_WS)).join(items) + draw(_WS) + "]"


def json_object_text(draw, depth: int, width: int, members=(), grammar: Grammar = ANY) -> str:
    pairs = list(members)
    for _ in range(width):
        key = draw(grammar.key)
        if grammar.repeats or key not in {k for k, _v in pairs}:
            pairs.append((key, draw(json_value(depth, grammar))))
    if grammar.repeats and pairs and draw(st.integers(0, 9)) == 0:
        key, _value = draw(st.sampled_from(pairs))  # a repeated key, another value
        pairs.append((key, draw(json_value(depth, grammar))))
    if len(pairs) > 1:
        pairs = draw(st.permutations(pairs))
    inner = ("," + draw(_WS)).join(
        k + draw(_WS) + ":" + draw(_WS) + v + draw(_WS) for k, v in pairs
    )
    return "{" + draw(_WS) + inner + "}"


def deep(draw, depth: int, grammar: Grammar = ANY) -> str:
    """`depth` nested containers (objects, arrays or both) around a scalar."""
    text = draw(grammar.scalar)
    for _ in range(depth):
        text = "[" + text + "]" if draw(st.booleans()) else '{"d":' + text + "}"
    return text


# Plain events, the ones the native core takes itself (docs/native.md): ASCII
# keys without escapes, no repeats, integers of at most 18 digits, numbers of
# at most 64 characters, no lone surrogates; the strings in every spelling.
_PLAIN_NUMBER = st.one_of(
    st.integers(-(10**18) + 1, 10**18 - 1).map(str),
    st.integers(-20, 20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from([t for t in NUMBER_TEXTS if len(t) <= 64]),
    st.builds(
        lambda sign, lead, frac, exp: sign + lead + frac + exp,
        st.sampled_from(["", "-"]),
        st.sampled_from(["0", "1", "12", "9007199254740993", "123456789012345678"]),
        st.sampled_from(["", ".0", ".5", ".000001", ".30000000000000004", ".1" + "0" * 30]),
        st.sampled_from(["", "e0", "E5", "e+10", "e-10", "E-400", "e308", "e-324", "e400"]),
    ),
)
_PLAIN_SCALAR = st.one_of(
    _PLAIN_NUMBER,
    st.text(_CHARS, max_size=16).map(json.dumps),
    st.text(_CHARS, max_size=16).map(lambda t: json.dumps(t, ensure_ascii=False)),
    json_string(st.text(_CHARS, max_size=12)),
    st.sampled_from(["true", "false", "null", '""', '"x"', '"2026-11-23T10:00:00Z"']),
)
_PLAIN_KEY = st.one_of(
    st.sampled_from(['"user"', '"n"', '"old"', '"new"', '"id"', '"a"', '"b"', '"note"', '""',
                     '"object"', '"Event_Type"', '"event_types"', '"timestamps"', '"x-y"']),
    st.text("abcdefghijklmnopqrstuvwxyz_0123456789 -.:$@", max_size=10).map(json.dumps),
)  # fmt: skip
PLAIN = Grammar(_PLAIN_SCALAR, _PLAIN_KEY, False)


_TIMESTAMP_PARTS = (
    st.sampled_from(["2026", "2024", "2023", "2000", "1900", "0000", "9999", "1970", "202",
                     "20261"]),
    st.sampled_from(["01", "02", "04", "12", "00", "13", "1", "-1"]),
    st.sampled_from(["01", "28", "29", "30", "31", "00", "32", "1"]),
    st.sampled_from(["T", "t", " ", "X", "", "TT"]),
    st.sampled_from(["00", "10", "23", "24", "1", "99"]),
    st.sampled_from(["00", "59", "60", "5"]),
    st.sampled_from(["00", "59", "60", "61", "5"]),
    st.sampled_from(["", ".5", ".123456", ".123456789", ".1234567890", ".", ",5", ".\uff15"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "+24:00",
                     "+05:60", "+0530", "+05", "", "ZZ", "Z ", "Z\n"]),
)  # fmt: skip


@st.composite
def timestamp(draw) -> str:
    parts = [draw(p) for p in _TIMESTAMP_PARTS]
    y, mo, d, sep, h, mi, s, frac, off = parts
    return f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}"


_TIMESTAMP_VALUE = st.one_of(
    timestamp().map(json.dumps),
    timestamp().map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(validate_corpus.ACCEPTED + validate_corpus.REFUSED).map(json.dumps),
    st.sampled_from(['"2026-11-2\u0663T10:00:00Z"', '"\\u0032026-11-23T10:00:00Z"']),
    st.sampled_from(["null", "1700000000", "1.5", "true", "false", "[]", "{}", '["x"]', '""']),
)
_EVENT_TYPE_VALUE = st.one_of(
    st.sampled_from(['"audit"', '"subscription_created"', '""', "null", "5", "1.5", "true",
                     "false", "[]", '["x"]', "{}", '{"a":"b"}', '"\\u0061"', '"\\ud800"']),
    json_string(),
)  # fmt: skip
_EVENT_ID_VALUE = st.one_of(
    st.sampled_from(['"id-1"', '"id-2"', '"id-1"', '""', '"' + "x" * 128 + '"',
                     '"' + "x" * 129 + '"', '"caf\u00e9"', '"tab\\there"', '"a b"', "7", "null",
                     "[]", '"7f8c1f0e-1111-4111-8111-111111111111"', '"4111-1111-1111-1111"']),
    json_string(),
)  # fmt: skip


@st.composite
def event_line(draw) -> bytes:
    """One line holding a JSON object: the fields the gateway reads in every state, and others."""
    members = []
    for key, value in (
        ('"event_type"', _EVENT_TYPE_VALUE),
        ('"timestamp"', _TIMESTAMP_VALUE),
        ('"event_id"', _EVENT_ID_VALUE),
        ('"hello"', st.sampled_from(['"there"', '{"ack":true}', "null"])),
    ):
        present = draw(st.integers(0, 9))
        if present < (8 if key in ('"event_type"', '"timestamp"') else 2):
            members.append((key, draw(value)))
    if draw(st.integers(0, 7)) == 0:
        members.append(('"deep"', deep(draw, draw(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 1)))))
    text = json_object_text(draw, 1, draw(st.integers(0, 5)), members)
    text = draw(_WS) + text + draw(_WS)
    return text.encode("utf-8")


@st.composite
def plain_line(draw) -> bytes:
    """A plain event: event_type and timestamp (mostly valid), nesting up to the limit."""
    members = []
    if draw(st.integers(0, 9)) < 9:
        members.append(('"event_type"', draw(st.one_of(
            st.sampled_from(['"audit"', '"subscription_created"', '""', "null", "5", "[]"]),
            st.text(_CHARS, min_size=1, max_size=8).map(json.dumps),
        ))))  # fmt: skip
    if draw(st.integers(0, 9)) < 9:
        ts = draw(st.one_of(st.sampled_from(validate_corpus.ACCEPTED), timestamp()))
        members.append(('"timestamp"', json.dumps(ts, ensure_ascii=draw(st.booleans()))))
    if draw(st.integers(0, 5)) == 0:
        members.append(('"deep"', deep(draw, draw(st.integers(MAX_DEPTH - 3, MAX_DEPTH)), PLAIN)))
    text = json_object_text(draw, 1, draw(st.integers(0, 6)), members, PLAIN)
    return (draw(_WS) + text + draw(_WS)).encode("utf-8")


# Events as Python values, written by json.dumps with either ensure_ascii.
_PY_KEYS = st.one_of(redact_corpus._KEYS, st.text(_CHARS, max_size=8))
_PY_SCALARS = st.one_of(
    st.text(_CHARS, max_size=16),
    redact_corpus._TEXT,
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_PY_VALUES = st.recursive(
    _PY_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_PY_KEYS, inner, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def dumped_line(draw) -> bytes:
    event = draw(st.dictionaries(_PY_KEYS, _PY_VALUES, max_size=6))
    if draw(st.booleans()):
        event["event_type"] = draw(st.sampled_from(["audit", "", 5, None]))
    if draw(st.booleans()):
        event["timestamp"] = draw(st.one_of(timestamp(), st.sampled_from(validate_corpus.ACCEPTED)))
    separators = draw(st.sampled_from([None, (",", ":"), (", ", ": ")]))
    text = json.dumps(event, ensure_ascii=draw(st.booleans()), separators=separators)
    return text.encode("utf-8")


_OTHER_LINES = st.one_of(
    st.sampled_from(protocol_corpus.FRAGMENTS),
    st.sampled_from([line for line, _code in protocol_corpus.HOSTILE if len(line) < 1000]),
    st.sampled_from([b"", b" ", b"\t", b"\r", b" \t\r", b"\x0c", b"\xc2\xa0", ACK, NO_ACK]),
    st.binary(max_size=40),
)
_LINES = st.lists(
    st.one_of(plain_line(), plain_line(), event_line(), dumped_line(), _OTHER_LINES),
    min_size=1,
    max_size=10,
)
_ENDS = st.sampled_from([b"\n", b"\n", b"\r\n"])


@st.composite
def stream(draw) -> bytes:
    """Lines with LF or CRLF ends; the last one sometimes without its end (cut by EOF)."""
    lines = draw(_LINES)
    data = b"".join(line + draw(_ENDS) for line in lines)
    if draw(st.booleans()):
        data = data.rstrip(b"\n")
    return data


def check_generated(setup: Setup, data: bytes, cuts: list[int], budget: int | None) -> None:
    data = with_hello(setup, data)
    taken, _writes = compare(setup, split_at(data, cuts), budget)
    # --hypothesis-show-statistics: how often the core took events itself
    event("the native core took events" if taken else "the native core took none")


_GENERATED = {
    "setup": st.sampled_from(ALL_SETUPS),
    "data": stream(),
    "cuts": st.lists(st.integers(0, 5000), max_size=6),
    "budget": st.sampled_from(BUDGETS),
}


@settings(
    max_examples=examples(600),  # about 15 s on a loaded 2-core machine; make test-slow runs 5,000
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(**_GENERATED)
def test_generated_events_are_stored_and_answered_identically(native, setup, data, cuts, budget):
    check_generated(setup, data, cuts, budget)


@pytest.mark.slow
# make test-slow: 2.5 minutes measured (the per-test timeout is 300 s)
@settings(
    max_examples=examples(5000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(**_GENERATED)
def test_generated_events_at_length(native, setup, data, cuts, budget):
    check_generated(setup, data, cuts, budget)


# ---- the corpora of the parser, validation and redaction tests

# tests/test_ingest_protocol.py's hostile lines need a limit above their 200 KB.
HOSTILE_LIMIT = 1 << 21


def run_matrix(
    data: bytes, setups: list[Setup], seeds: tuple[int, ...] = (1,), max_chunk: int = 50
) -> int:
    """`data` (after each set-up's hello) whole and in random chunks, under every budget;
    the events the native core took in all."""
    taken = 0
    for setup in setups:
        full = with_hello(setup, data)
        chunkings = [[full]] + [random_chunks(full, seed, max_chunk) for seed in seeds]
        for budget in BUDGETS:
            for chunks in chunkings:
                taken += compare(setup, chunks, budget)[0]
    return taken


@pytest.mark.parametrize("setup", ALL_SETUPS, ids=SETUP_IDS)
def test_the_protocol_sample(native, setup):
    """test_ingest_protocol.SAMPLE (its own hello), whole, byte by byte and in random chunks."""
    setup = dataclasses.replace(setup, hello=None, max_line_bytes=500)
    sample = protocol_corpus.SAMPLE
    for budget in BUDGETS:
        compare(setup, [sample], budget)
        compare(setup, random_chunks(sample, 3), budget)
    compare(setup, fixed_chunks(sample, 1), None)


# A few set-ups for the big corpora: each plain connection kind, redaction, entry values.
CORE_SETUPS = [
    NAMED[n]
    for n in ("fire-and-forget", "ack", "http", "unsynced", "redact-both", "values", "dedup")
]
CORE_IDS = [s.name for s in CORE_SETUPS]


@pytest.mark.parametrize("setup", CORE_SETUPS, ids=CORE_IDS)
def test_the_hostile_lines(native, setup):
    """test_ingest_protocol.HOSTILE (1.3 MB with its 100,000-bracket lines), each after an event."""
    setup = dataclasses.replace(setup, max_line_bytes=HOSTILE_LIMIT)
    data = b"".join(line + b'\n{"ok":1}\n' for line, _code in protocol_corpus.HOSTILE)
    run_matrix(b'{"first":1}\n' + data, [setup], max_chunk=20_000)


def test_the_hostile_lines_one_by_one(native):
    for setup in (Setup("big", max_line_bytes=HOSTILE_LIMIT), Setup("short", max_line_bytes=300)):
        for line, _code in protocol_corpus.HOSTILE:
            compare(setup, [line + b"\n"], None)
            compare(setup, [b'{"first":1}\n' + line], 1)


def hello_lines() -> list[bytes]:
    """Every hello of the protocol tests: good, bad, with tokens in and out of bounds."""
    hellos = list(protocol_corpus.BAD_HELLOS)
    for hello in (
        {},
        {"app": None, "ack": False},
        {"ack": True},
        {"app": "é" * protocol_corpus.MAX_APP_NAME, "ack": True},
        {"app": "shop", "token": "t" * 16},
        {"app": "shop", "token": "t" * protocol_corpus.MAX_TOKEN},
        {"token": "t" * 16},
        {"app": None, "token": "t" * 16},
        {"app": "shop", "token": "t" * (protocol_corpus.MAX_TOKEN + 1)},
        {"app": "shop", "token": ""},
        {"app": "shop", "token": 12345678901234567},
        {"app": "shop", "token": TOKEN, "ack": True},
    ):
        hellos.append(json.dumps({"hello": hello}).encode())
    hellos += [b'{"hello":{"ack":true},"hello":{"ack":false}}', b'{"\\u0068ello":{"ack":true}}']
    return hellos


@pytest.mark.parametrize("setup", ALL_SETUPS, ids=SETUP_IDS)
def test_every_hello_first_and_later(native, setup):
    setup = dataclasses.replace(setup, hello=None)
    for hello in hello_lines():
        after = b'{"event_type":"a","timestamp":"2026-11-23T10:00:00Z"}\n'
        compare(setup, [hello + b"\n" + after + hello + b"\n" + after], None)
        compare(setup, [b"\n \r\n" + hello + b"\r\n", after], 1)
        compare(setup, [b"garbage\n" + hello + b"\n" + after], 7)


def validation_lines() -> list[bytes]:
    """tests/test_validate.py's values in events: timestamps, event types, both together."""
    lines = []
    for ts in validate_corpus.ACCEPTED + validate_corpus.REFUSED:
        for ascii_only in (True, False):
            lines.append(json.dumps({"event_type": "x", "timestamp": ts}, ensure_ascii=ascii_only))
    non_ascii_digits = [
        "\uff12\uff10\uff12\uff16-11-23T10:00:00Z",
        "2026-11-2\u0663T10:00:00Z",
        "2026-11-23T1\u0660:00:00Z",
        "2026-11-23T10:00:0\u0665Z",
        "2026-11-23T10:00:00.\uff15Z",
        "2026-11-23T10:00:00+0\u096b:30",
    ]
    others: list[Any] = ["", 5, 1.5, True, False, [], ["x"], {}, {"a": "b"}, None]
    others += [0, 20261123, -1, 1.0, ["2026-11-23T10:00:00Z"], {"t": 1}, "yesterday"]
    for ts in non_ascii_digits:
        for ascii_only in (True, False):
            lines.append(json.dumps({"event_type": "x", "timestamp": ts}, ensure_ascii=ascii_only))
    for value in others:
        good = validate_corpus.GOOD_TS
        lines.append(json.dumps({"event_type": value, "timestamp": good}))
        lines.append(json.dumps({"event_type": "x", "timestamp": value}))
        lines.append(json.dumps({"timestamp": value}))
    lines += [
        json.dumps({}),
        json.dumps({"event_type": 7, "timestamp": "now"}),
        json.dumps({"event_type": "", "event": 1}),
        json.dumps({"event_type": "x", "timestamp": validate_corpus.GOOD_TS, "extra": {"a": [1]}}),
        json.dumps({"event_type": 7, "timestamp": "now", "n": [1]}),
    ]
    for year in ("2024", "2023", "2000", "1900", "0000", "0004", "9996"):
        for day in ("28", "29", "30"):
            lines.append(json.dumps({"event_type": "x", "timestamp": f"{year}-02-{day}T00:00:00Z"}))
    for month in ("01", "03", "04", "06", "09", "11", "12"):
        lines.append(json.dumps({"event_type": "x", "timestamp": f"2026-{month}-31T00:00:00Z"}))
    return [line.encode() for line in lines]


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_the_validation_corpus(native, setup):
    assert run_matrix(lines_to_bytes(validation_lines()), [setup]) > 0


def redaction_lines() -> list[bytes]:
    """tests/test_redact.py's events and refused line, and the spellings a key can take."""
    event = {
        "event_type": "audit",
        "Password": SECRET,
        "db_password": {"nested": SECRET},
        "access_token": 12345,
        "old_value": {"settings": [{"api_key": SECRET}, {"note": f"card {CARD} used"}]},
        "plain": "keep me",
        "order": "4111111111111112",
    }
    lines = [json.dumps(event).encode(), json.dumps(event, separators=(",", ":")).encode()]
    lines += [
        json.dumps(
            {"event_type": "login", "user": "anna", "password": SECRET, "note": f"card {CARD}"}
        ).encode(),
        ('{"event_type": "x", "token": "' + SECRET + '", "card": "' + CARD + '", oops}').encode(),
        b'{"event_type":"x","password":"visible"}',
        b'{"secret":"x1"}',
        b'{"event_type":"x","timestamp":"2026-11-23T10:00:00Z","user_id":7}',
        b'{"note":"4111 1111 1111 1111"}',
        b'{"meta":{"db_password":"x"}}',
        b'{"meta":{"a":"b"}}',
        b'{"a": 1, "b"',
        b'{"password": "' + SECRET.encode() + b'", "card":"' + CARD.encode() + b'", "x": [',
        b'{"m":{"password":1}}',
        b'{"a":{"b":1}}',
    ]
    for key in ("password", "PassWord", "\\u0070assword", "p\\u0061ssword", "\\u0050ASSWORD",
                "tok\\u0065n", "x_token", "\\u212aey", "\u212aey", "KEY", "ke", "x-auth", "y-authz",
                "p\u00e4sswort", "P\u00c4SSWORT", "p\\u00e4sswort", "\u0130d", "cvv", "CVC",
                "authorization", "Authorization ", "card_number", "api_key", "my_api_key_2",
                "passwd", "secrets", "tokens", "token"):  # fmt: skip
        for value in (
            '"' + SECRET + '"',
            "12345",
            '{"inner":"x"}',
            '["a",1]',
            "null",
            '"' + CARD + '"',
        ):
            lines.append(('{"event_type":"x","' + key + '":' + value + "}").encode())
            lines.append(('{"event_type":"x","n":{"' + key + '":' + value + "}}").encode())
            lines.append(('{"event_type":"x","n":[{"' + key + '":' + value + "}]}").encode())
    for text in ("4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
                 "4111111111111112", "378282246310005", "+44 23 8000 1234", "12345678901234567890",
                 "1234567890123", "123456789012", "4111 1111 1111 1111 1111", "x4111111111111111x",
                 "\\u0034111111111111111", "41\\u00311111111111111", "4111\\u00201111 1111 1111",
                 "4111\\/1111", "\u0664111111111111111", "4111  1111 1111 1111",
                 "4111--1111-1111-1111", "1-2-3-4-5-6-7-8-9-0-1-2-3"):  # fmt: skip
        lines.append(('{"event_type":"x","note":"paid ' + text + ' ok"}').encode())
        lines.append(('{"event_type":"x","event_id":"' + text + '"}').encode())
        lines.append(('{"event_type":"x","n":{"event_id":"' + text + '"}}').encode())
        lines.append(('{"event_type":"x","' + text + '":1}').encode())
    lines.append(b'{"event_type":"x","n":4111111111111111}')
    lines.append(b'{"event_type":"x","n":[4111111111111111,"4111111111111111"]}')
    return lines


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_the_redaction_corpus(native, setup):
    assert run_matrix(lines_to_bytes(redaction_lines()), [setup]) > 0


@pytest.mark.parametrize("redact", ["both", "patterns"])
def test_redaction_corpus_line_by_line(native, redact):
    """Each line the first event after the hello (a fresh key cache)."""
    setup = Setup("redact-" + redact, hello=ACK, redact=redact)
    for line in redaction_lines():
        compare(setup, [with_hello(setup, line + b"\n")], None)


@settings(
    max_examples=examples(300),  # a few seconds
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    event=st.dictionaries(redact_corpus._KEYS, redact_corpus._VALUES, max_size=6),
    ascii_only=st.booleans(),
    redact=st.sampled_from(["keys", "cards", "both", "digest", "patterns"]),
)
def test_the_redaction_property_events(native, event, ascii_only, redact):
    """test_redact's generated events, as lines in both spellings, under every redaction."""
    setup = Setup("redact-" + redact, hello=ACK, redact=redact)
    line = json.dumps(event, ensure_ascii=ascii_only).encode()
    compare(setup, [with_hello(setup, line + b"\n" + line + b"\n")], None)


@settings(
    max_examples=examples(300),  # a few seconds
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    data=protocol_corpus.inputs,
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    max_line_bytes=st.sampled_from([16, 64, 300, 65536]),
    setup=st.sampled_from(ALL_SETUPS),
    budget=st.sampled_from(BUDGETS),
)
def test_the_protocol_fuzz_inputs(native, data, cuts, max_line_bytes, setup, budget):
    """test_ingest_protocol's property input (fragments and bytes), split anywhere."""
    setup = dataclasses.replace(setup, max_line_bytes=max_line_bytes)
    compare(setup, split_at(with_hello(setup, data), cuts), budget)


# ---- adversarial lines

# A valid event with a bit of everything the core decides itself: nesting,
# escapes, numbers of each kind, literals, non-ASCII text.
RICH = (
    '{"event_type":"audit","timestamp":"2026-11-23T10:00:00.123+01:00","user":"\u00e9l\u00e8ve",'
    '"n":-12345678901234567,"f":-0.0,"e":1E5,"g":0.1e1,"t":true,"u":false,"z":null,'
    '"esc":"a\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00","old":{"a":[1,2,{"b":[]}],"c":{}},'
    '"big":123456789012345678901234567890,"tiny":5e-324,"sp" : [ 1 , 2 ]}'
).encode()


def byte_lines() -> list[bytes]:
    """Every byte value alone and inside a string, a key, a number, and between tokens."""
    lines = []
    for b in range(256):
        byte = bytes([b])
        lines += [
            byte,
            b'{"s":"a' + byte + b'b"}',
            b'{"k' + byte + b'":1}',
            b'{"n":1' + byte + b"2}",
            b'{"n":' + byte + b"1}",
            b'{"a":1' + byte + b"}",
            b'{"a":[1,' + byte + b"2]}",
            b"{" + byte + b'"a":1}',
            b'{"event_type":"x' + byte + b'","timestamp":"2026-11-23T10:00:00' + byte + b'Z"}',
            b'{"s":"\\' + byte + b'"}',
            b'{"s":"\\u00' + byte + b'0"}',
            byte + b'{"a":1}' + byte,
        ]
    return lines


@pytest.mark.parametrize(
    "setup",
    [NAMED["fire-and-forget"], NAMED["ack"], NAMED["http"], NAMED["redact-both"], NAMED["dedup"]],
    ids=lambda s: s.name,
)
def test_every_byte_value_in_every_position(native, setup):
    data = lines_to_bytes(byte_lines())
    for budget in BUDGETS:
        compare(setup, [with_hello(setup, data)], budget)
    compare(setup, random_chunks(with_hello(setup, data), 11, 300), 7)


@pytest.mark.parametrize(
    "setup", [NAMED["ack"], NAMED["redact-both"], NAMED["values"]], ids=lambda s: s.name
)
def test_a_valid_event_cut_at_every_offset(native, setup):
    """Each truncation of RICH is its own line (cut inside a UTF-8 sequence too)."""
    lines = [RICH[:i] for i in range(len(RICH) + 1)]
    data = with_hello(setup, lines_to_bytes(lines))
    for budget in BUDGETS:
        compare(setup, [data], budget)
    # and the whole event last, cut by EOF with no newline
    compare(setup, [with_hello(setup, RICH)], None)


def nesting_lines() -> list[bytes]:
    lines = []
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2):
        lines.append(protocol_corpus.nested(depth))  # arrays in an object
        lines.append(protocol_corpus.nested_objects(depth))
        lines.append(b"[" * depth + b"]" * depth)  # not an object at all
        mixed = b"".join(b'{"a":' if i % 2 == 0 else b"[" for i in range(depth))
        closing = b"".join(b"}" if i % 2 == 0 else b"]" for i in reversed(range(depth)))
        lines.append(mixed + b"1" + closing)
        # the deepest branch beside shallow ones, and after a string full of brackets
        lines.append(
            b'{"s":"[[[[{{{{","x":[1,{"y":2}],"d":' + protocol_corpus.nested(depth - 1)[5:]
        )
        lines.append(b'{"e":[],"d":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")
        lines.append(b'{"e":{},"d":' + b'{"k":' * (depth - 1) + b"{}" + b"}" * (depth - 1) + b"}")
        lines.append(b'{"d":' + b'{"k":' * (depth - 2) + b"[]" + b"}" * (depth - 2) + b"}")
    wide = b'{"w":[' + b",".join([b"[[[[1]]]]"] * 40) + b"]}"  # many brackets, little depth
    lines.append(wide)
    return lines


@pytest.mark.parametrize(
    "setup", [NAMED["fire-and-forget"], NAMED["ack"], NAMED["redact-both"]], ids=lambda s: s.name
)
def test_nesting_at_the_limit_and_past_it(native, setup):
    assert run_matrix(lines_to_bytes(nesting_lines()), [setup], seeds=(2, 3)) > 0


REPEATS = [
    b'{"a":1,"a":2}',
    b'{"a":1,"b":2,"a":1}',
    b'{"event_type":"a","event_type":"b"}',
    b'{"event_type":"a","timestamp":"2026-11-23T10:00:00Z","timestamp":5}',
    b'{"timestamp":5,"timestamp":"2026-11-23T10:00:00Z","event_type":"a"}',
    b'{"x":{"a":1,"a":2}}',
    b'{"x":[{"a":1},{"a":1,"a":[{"b":1,"b":2}]}]}',
    b'{"x":{"a":1,"a":2},"x":{"a":3,"a":4}}',
    b'{"password":"x","password":"y"}',
    b'{"n":{"password":"x","password":"' + CARD.encode() + b'"}}',
    b'{"note":"a","note":"' + CARD.encode() + b'"}',
    b'{"event_id":"id-1","event_id":"id-2"}',
    b'{"event_id":"id-1","event_type":"a"}',
    b'{"event_id":"id-1","event_type":"a"}',
    b'{"event_id":"id-1","event_type":"b"}',
    b'{"hello":1,"hello":2}',
    b'{"a":1,"\\u0061":2}',
    b'{"\\u0061":1,"a":2}',
    b'{"\xc3\xa9":1,"\\u00e9":2}',
    b'{"\\ud83d\\ude00":1,"\xf0\x9f\x98\x80":2}',
    b'{"":1,"":2}',
    b'{"a":1,"A":2}',
    b'{"' + b'","'.join(b"k%d" % i for i in range(64)) + b'":1}',
]


def wide_objects() -> list[bytes]:
    """Objects around the core's key count limit (GW_MAX_KEYS 64), with and without a repeat."""
    lines = []
    for width in (63, 64, 65, 100):
        keys = [f'"k{i}":{i}' for i in range(width)]
        lines.append(("{" + ",".join(keys) + "}").encode())
        lines.append(('{"n":{' + ",".join(keys) + "}}").encode())
        lines.append(("{" + ",".join(keys) + ',"k0":0}').encode())
        lines.append(("{" + ",".join([*keys, f'"k{width - 1}":1']) + "}").encode())
    return lines


@pytest.mark.parametrize(
    "setup",
    [NAMED["ack"], NAMED["redact-both"], NAMED["values"], NAMED["dedup"]],
    ids=lambda s: s.name,
)
def test_repeated_keys_top_level_and_nested(native, setup):
    run_matrix(lines_to_bytes(REPEATS + wide_objects()), [setup])


ESCAPED_KEYS = [
    '"\\u0070assword"', '"p\\u0061ssword"', '"\\u0050ASSWORD"', '"pass\\u0077ord"',
    '"tok\\u0065n"', '"\\u0065vent_type"', '"event\\u005ftype"', '"\\u0074imestamp"',
    '"\\u0065vent_id"', '"\\u0068ello"', '"\\u0063vv"', '"\\u0043VV"', '"\\u00e9"',
    '"a\\nb"', '"a\\"b"', '"a\\\\b"', '"a\\/b"', '"\\u0000"', '"\\ud800"', '"\\udfff"',
    '"\\ud83d\\ude00"', '"\\uD83D\\uDE00"', '"\\ude00\\ud83d"', '"x\\ud83d"',
]  # fmt: skip


def escape_lines() -> list[bytes]:
    lines = []
    for key in ESCAPED_KEYS:
        lines.append(("{" + key + ':"v","event_type":"x"}').encode())
        lines.append(('{"event_type":"x","n":{' + key + ":[1]}}").encode())
        lines.append(("{" + key + ':"2026-11-23T10:00:00Z"}').encode())
    for value in ("\\ud800", "\\uDBFF", "\\udc00", "\\uDFFF", "\\ud83d\\ude00", "\\uD83D\\uDE00",
                  "\\ude00\\ud83d", "\\ud83d\\ud83d", "\\ud83d", "a\\ud83d", "\\ud83dz",
                  "\\ud83d\\u0041", "\\\\ud800", "\\\\\\ud800", "\\u0000", "\\u001f", "\\u007f",
                  "\\u00ff", "\\u0800", "\\uffff", "\\uFFFE", "\\u2028", "\\ufeff"):  # fmt: skip
        lines.append(('{"event_type":"x","s":"' + value + '"}').encode())
        lines.append(('{"event_type":"' + value + '"}').encode())
        lines.append(('{"event_type":"x","l":["' + value + '",{"k":"' + value + '"}]}').encode())
    return lines


@pytest.mark.parametrize(
    "setup",
    [NAMED["fire-and-forget"], NAMED["ack"], NAMED["redact-both"], NAMED["redact-patterns"]],
    ids=lambda s: s.name,
)
def test_escaped_keys_and_surrogates(native, setup):
    taken = run_matrix(lines_to_bytes(escape_lines()), [setup])
    # With card redaction every line with a \u escape is the reference's.
    assert taken > 0 or setup.redact not in ("off", "keys")


BAD_UTF8 = [
    b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf", b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80", b"\xfe", b"\xff", b"\x80", b"\xbf", b"\xc3", b"\xe2\x82",
    b"\xf0\x9f\x98", b"\xc3\xc3", b"\xe2\x28\xa1", b"\xf0\x28\x8c\x28", b"\xc3\xa9\xa9",
]  # fmt: skip


def utf8_lines() -> list[bytes]:
    lines = []
    for bad in BAD_UTF8:
        lines += [
            b'{"s":"' + bad + b'"}',
            b'{"' + bad + b'":1}',
            b'{"event_type":"x","s":"ok \xc3\xa9 ' + bad + b'"}',
            b'{"s":"x"}' + bad,
            bad,
            b'{"s":"' + bad,  # cut inside the sequence
        ]
    lines += [b'{"s":"\xef\xbb\xbf"}', b"\xef\xbb\xbf{}", b'{"s":"\xf4\x8f\xbf\xbf"}']
    return lines


@pytest.mark.parametrize(
    "setup",
    [NAMED["fire-and-forget"], NAMED["ack"], NAMED["redact-both"], NAMED["redact-patterns"]],
    ids=lambda s: s.name,
)
def test_invalid_utf8(native, setup):
    run_matrix(lines_to_bytes(utf8_lines()), [setup])


def line_end_stream() -> bytes:
    event = b'{"event_type":"a","timestamp":"2026-11-23T10:00:00Z"}'
    return b"".join(
        [
            b"\n\n\r\n   \n\t\n \t \r\n",
            event + b"\r\n",
            event + b"\r\r\n",
            event + b"\r" + event + b"\n",  # CR only: one line, extra data
            b"  \t" + event + b" \t\r\n",
            b"\r" + event + b"\n",
            b"\x0c" + event + b"\n",  # form feed is not JSON white space
            event + b"\x0b\n",
            b"\xc2\xa0" + event + b"\n",
            b'{"a":1}\r\n\r\n\r\n',
            b'{"c":"x\\r"}\r\n',
            b"\r\r\r\n",
            b" \r \r\n",
            event + b"\n" * 5,
            b'{"last":1}\r',
        ]
    )


@pytest.mark.parametrize("setup", ALL_SETUPS, ids=SETUP_IDS)
def test_line_ends_blank_lines_and_white_space(native, setup):
    data = with_hello(setup, line_end_stream())
    for budget in BUDGETS:
        compare(setup, [data], budget)
        compare(setup, fixed_chunks(data, 1), budget)
        compare(setup, random_chunks(data, 5, 20), budget)


def exact(limit: int, end: bytes = b"") -> bytes:
    """An event line of exactly `limit` bytes, `end` (a CR) included."""
    head, tail = b'{"event_type":"a","s":"', b'"}' + end
    return head + b"x" * (limit - len(head) - len(tail)) + tail


def length_stream(limit: int) -> bytes:
    return b"".join(
        [
            b'{"a":1}\n',
            exact(limit) + b"\n",
            exact(limit + 1) + b"\n",
            exact(limit, b"\r") + b"\n",
            exact(limit + 1, b"\r") + b"\n",
            b"y" * (limit * 3 + 5) + b"\n",
            b'{"b":2}\n',
            b"z" * limit + b"\n",
            b"\n" * 3,
            exact(limit - 1) + b"\n",
            b" " * (limit + 1) + b"\n",  # blank, but overlong
            exact(limit),  # cut by EOF, exactly at the limit
        ]
    )


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_lines_at_the_length_limit(native, setup):
    for limit in (64, 300):
        s = dataclasses.replace(setup, max_line_bytes=limit)
        data = with_hello(s, length_stream(limit))
        for budget in BUDGETS:
            compare(s, [data], budget)
        compare(s, random_chunks(data, 9, limit + 10), 7)
    s = dataclasses.replace(setup, max_line_bytes=300)
    compare(s, [with_hello(s, b'{"a":1}\n' + b"w" * 5000)], None)  # overlong at EOF


# Chunk sizes tried for the overlong lines: every size up to a bit past the limit.
CHUNK_SIZES = range(1, 80)


@pytest.mark.parametrize(
    "setup", [NAMED["fire-and-forget"], NAMED["ack"], NAMED["redact-both"]], ids=lambda s: s.name
)
def test_overlong_lines_cut_at_every_chunk_boundary(native, setup):
    limit = 64
    s = dataclasses.replace(setup, max_line_bytes=limit)
    data = with_hello(s, length_stream(limit))
    for size in CHUNK_SIZES:
        compare(s, fixed_chunks(data, size), None if size % 2 else 1)
    short = with_hello(s, b'{"a":1}\n' + exact(limit + 1) + b'\n{"b":2}\n' + exact(limit) + b"\n")
    for cut in range(len(short) + 1):
        compare(s, split_at(short, [cut]), 7)


def test_numbers_around_the_core_limits(native):
    """19 and more digits, GW_MAX_NUMBER_CHARS (64) and past it, every float text form."""
    texts = ["9" * n for n in (17, 18, 19, 20, 63, 64, 65, 400)] + [
        "-" + "9" * n for n in (17, 18, 19, 63, 64)
    ]
    texts += ["1." + "0" * 61, "1." + "0" * 62, "1." + "0" * 63, "0." + "1" * 70]
    texts += ["1e" + "0" * 62 + "1", "1" * 30 + "e-30", "-" + "1" * 30 + "E+2"]
    texts += NUMBER_TEXTS
    lines = []
    for text in texts:
        lines.append(('{"event_type":"x","n":' + text + "}").encode())
        lines.append(('{"event_type":"x","n":[' + text + "," + text + "]}").encode())
        lines.append(('{"event_type":' + text + ',"timestamp":' + text + "}").encode())
    data = lines_to_bytes(lines)
    for setup in (NAMED["ack"], NAMED["redact-both"], NAMED["values"]):
        for budget in BUDGETS:
            compare(setup, [with_hello(setup, data)], budget)


# ---- configurations: segments, sync units, budgets


def many_events(count: int, size: int) -> bytes:
    lines = []
    for i in range(count):
        pad = "p" * (size + (i * 37) % size)
        ts = f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}Z"
        lines.append(f'{{"event_type":"e{i % 5}","timestamp":"{ts}","i":{i},"pad":"{pad}"}}')
    return lines_to_bytes([line.encode() for line in lines])


@pytest.mark.parametrize("segment_bytes", [200, 512, 1024, 4096, 64 * 1024])
def test_segments_roll_inside_one_buffer(native, segment_bytes):
    data = many_events(120, 40)
    for setup in (
        Setup("seg", hello=ACK, segment_bytes=segment_bytes),
        Setup("seg-redact", segment_bytes=segment_bytes, redact="both", values=True),
        Setup("seg-always", hello=ACK, segment_bytes=segment_bytes, fsync="always"),
    ):
        for budget in BUDGETS:
            compare(setup, [with_hello(setup, data)], budget)
        compare(setup, random_chunks(with_hello(setup, data), 4, 700), None)


def test_a_sync_unit_fills_inside_one_buffer(native):
    """More than SYNC_UNIT_BYTES in one read: the sync points fall on the same frames."""
    data = many_events(SYNC_UNIT_BYTES // 500 + 50, 300)
    assert len(data) > SYNC_UNIT_BYTES
    count = data.count(b"\n")
    setup = Setup("sync", hello=ACK, segment_bytes=64 * MiB)
    taken, writes = compare(setup, [with_hello(setup, data)], None)
    assert taken == count and [len(w[4]) for w in writes] == [1]
    compare(setup, fixed_chunks(with_hello(setup, data), 65536), None)
    rolling = Setup("sync-roll", segment_bytes=3 * MiB // 2)
    taken, writes = compare(rolling, [data], None)
    assert taken == count - 1 and [w[2] for w in writes] == [False, True]  # the first is Python's


def test_the_native_core_takes_the_plain_events_itself(native):
    """Not a comparison of the reference with itself: all but the hello go native."""
    data = many_events(50, 20)
    for setup in (NAMED["ack"], NAMED["http"], NAMED["redact-both"], NAMED["values"]):
        taken, _writes = compare(setup, [with_hello(setup, data)], None)
        assert taken == (50 if setup.hello is not None or setup.http else 49), setup.name


def test_budgets_around_a_run_of_events(native):
    data = many_events(40, 10)
    for budget in (1, 2, 7, 39, 40, 41, None):
        for setup in (NAMED["fire-and-forget"], NAMED["ack"], NAMED["http"]):
            compare(setup, [with_hello(setup, data)], budget)
            mixed = with_hello(setup, data[:700] + b"[1]\n\n" + data[700:])
            compare(setup, [mixed], budget)


def test_the_clock_moves_between_reads(native):
    """received_at is per read: the same lines in more reads get later times."""
    data = many_events(30, 10)
    for setup in (NAMED["ack"], NAMED["unsynced"]):
        compare(setup, fixed_chunks(with_hello(setup, data), 97), 7)


def test_dedup_with_event_ids(native):
    lines = []
    for i in range(30):
        eid = f"id-{i % 7}"
        lines.append(json.dumps({"event_type": "x", "event_id": eid, "n": i % 3}).encode())
        lines.append(json.dumps({"event_type": "x", "event_id": eid, "n": i % 3}).encode())
        lines.append(b'{"event_type":"x","\\u0065vent_id":"' + eid.encode() + b'"}')
        lines.append(b'{"event_type":"x","n":{"event_id":"' + eid.encode() + b'"}}')
        lines.append(b'{"event_type":"x","event_id":""}')
    data = lines_to_bytes(lines)
    for setup in (
        NAMED["dedup"],
        Setup("dedup-ff", dedup=True),
        Setup("dedup-http", http=True, dedup=True),
    ):
        for budget in BUDGETS:
            compare(setup, [with_hello(setup, data)], budget)


def frame_bytes(line: bytes, setup: Setup) -> int:
    """The size of the frame the reference makes of one event line, on a fresh ledger."""
    _taken, writes = compare(setup, [line + b"\n"], None, natives=(False, False))
    return len(writes[0][3])


def same_size_events(count: int) -> list[bytes]:
    return [b'{"event_type":"e","i":%d,"pad":"%s"}' % (100000 + i, b"p" * 40) for i in range(count)]


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_frames_that_fill_a_segment_exactly(native, extra):
    """segment_bytes exactly k frames (and a byte less or more): the roll falls alike."""
    lines = same_size_events(40)
    setup = Setup("exact-segment", http=True)
    frame = frame_bytes(lines[0], setup)
    for k in (1, 2, 3, 7):
        s = dataclasses.replace(setup, segment_bytes=fmt.SEGMENT_HEADER_BYTES + k * frame + extra)
        for budget in BUDGETS:
            taken, writes = compare(s, [lines_to_bytes(lines)], budget)
            assert taken == 40 and len(writes) > 1


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_frames_that_fill_a_sync_unit_exactly(native, extra):
    """Frames of a size dividing SYNC_UNIT_BYTES (and a byte off): the sync points fall alike."""
    setup = Setup("exact-sync", http=True)
    probe = frame_bytes(same_size_events(1)[0], setup)
    # frames of 256 bytes (2 MiB is 8,192 of them), or 255, 257; the pad stays
    # below 256 characters, so its CBOR head keeps its size
    pad = 256 - probe + 40 + extra
    count = SYNC_UNIT_BYTES // 255 + 50
    lines = [
        b'{"event_type":"e","i":%d,"pad":"%s"}' % (100000 + i, b"p" * pad) for i in range(count)
    ]
    taken, writes = compare(setup, [lines_to_bytes(lines)], None)
    assert taken == count and len(writes[0][4]) == 1
    assert extra != 0 or writes[0][4] == [SYNC_UNIT_BYTES]


@pytest.mark.parametrize("new_max", [100, 1000])
def test_a_reload_that_changes_max_line_bytes_on_an_open_connection(native, new_max):
    """The server keeps an open connection's parser (its max_line_bytes) across a reload;
    the intake's limits change. Lines between the two limits are the test."""
    setup = Setup("reload-max", hello=ACK, max_line_bytes=300, reload=("off", new_max))
    lines = [exact(n) for n in (64, 99, 100, 101, 299, 300, 301, 999, 1000, 1001)]
    data = lines_to_bytes(lines)
    compare(setup, [ACK + b"\n", data], None)
    compare(setup, [ACK + b"\n", *fixed_chunks(data, 50)], 7)


_NUMBER_TEXT = st.builds(
    lambda sign, lead, frac, exp: sign + lead + frac + exp,
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,21}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,45}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,4}", fullmatch=True)),
)


@settings(
    max_examples=examples(300),  # a few seconds
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    numbers=st.lists(_NUMBER_TEXT, min_size=1, max_size=6),
    strings=st.lists(json_string(st.text(_CHARS, max_size=24)), max_size=4),
    setup=st.sampled_from([NAMED["ack"], NAMED["http"], NAMED["redact-keys"]]),
)
def test_generated_numbers_and_strings_in_plain_events(native, numbers, strings, setup):
    """Numbers of every text form and length around the core's limits, strings in
    every spelling: the CBOR of each as the reference makes it."""
    values = ",".join([*numbers, *strings])
    lines = [
        ('{"event_type":"x","v":[' + values + "]}").encode(),
        ('{"event_type":"x","n":' + numbers[0] + "}").encode(),
        ('{"event_type":"x","o":{"a":' + numbers[-1] + ',"b":[' + values + "]}}").encode(),
    ]
    compare(setup, [with_hello(setup, lines_to_bytes(lines))], None)


def _luhn_digit(digits: str) -> str:
    """The check digit that makes digits + it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


_DIGIT_RUNS = st.builds(
    lambda body, valid, seps, glue: (body, valid, seps, glue),
    st.text("0123456789", min_size=11, max_size=21),
    st.booleans(),
    st.lists(st.sampled_from(["", "", " ", "-", "  ", "--", " -"]), min_size=21, max_size=21),
    st.sampled_from(["", "x", "0", " ", "-"]),
)


def _card_text(run: tuple[str, bool, list[str], str]) -> str:
    body, valid, seps, glue = run
    digits = body + _luhn_digit(body) if valid else body
    text = "".join(d + seps[i] for i, d in enumerate(digits[:-1])) + digits[-1]
    return glue + text + glue


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(_DIGIT_RUNS, min_size=1, max_size=4),
    where=st.sampled_from(["value", "key", "number"]),
)
def test_digit_runs_near_the_card_pattern(native, runs, where):
    """The card screen decides on the Luhn sum itself: runs of 11 to 22 digits with
    single and double separators, Luhn-valid or not, glued to other characters."""
    texts = [_card_text(r) for r in runs]
    if where == "value":
        line = json.dumps({"event_type": "e", "note": " / ".join(texts)})
    elif where == "key":
        line = json.dumps({"event_type": "e", **{t: 1 for t in texts}})
    else:
        number = runs[0][0].lstrip("0") or "0"
        line = f'{{"event_type":"e","n":{number}}}'
    data = lines_to_bytes([line.encode()] * 2)
    for mode in ("cards", "both"):
        compare(
            dataclasses.replace(Setup("cards"), hello=ACK, redact=mode), [ACK + b"\n", data], None
        )


def test_a_line_of_many_floats_encodes_past_its_own_length(native):
    """A float's CBOR (9 bytes) outgrows its text (3): a line of them encodes to more
    than twice its size, which the core's output bound once missed (a heap
    overflow under AddressSanitizer; tests/fuzz/corpus holds the input)."""
    for count in (1, 100, 14_000):
        line = b'{"event_type":"e","a":[' + b",".join([b"1e5"] * count) + b"]}"
        taken, _writes = compare(Setup("floats", hello=ACK), [ACK + b"\n", line + b"\n"], None)
        assert taken == 1

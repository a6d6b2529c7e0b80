"""Syslog ingest: RFC 6587 framing, RFC 5424 fields, every refusal, memory bound, the listener."""

from __future__ import annotations

import random
import socket

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from inproc import ledger, pump, settle

from gateway.config import Config, IngestConfig, SyslogConfig, load_config
from gateway.errors import ConfigError, RemoteInputError
from gateway.ingest.protocol import EOF, EXCERPT_BYTES
from gateway.ingest.syslog import (
    MAX_APP_NAME,
    MAX_COUNT_DIGITS,
    MAX_HOSTNAME,
    MAX_MSGID,
    MAX_PROCID,
    MAX_SD_NAME,
    SyslogProtocol,
    parse_message,
)
from gateway.service import Gateway

MAX = 65536


def err(code: str, raw: bytes, fatal: bool = False) -> tuple:
    """The recorded form of a refused message, computed independently from its bytes."""
    return ("error", code, len(raw), blake3(raw).digest(), raw[:EXCERPT_BYTES], fatal)


def drain(proto: SyslogProtocol, out: list) -> bool:
    """Call next_event until it needs data (False) or returns EOF (True)."""
    while True:
        try:
            item = proto.next_event()
        except RemoteInputError as exc:
            assert isinstance(exc.code, str) and isinstance(exc.detail, str)
            out.append(("error", exc.code, exc.length, exc.digest, exc.excerpt, exc.fatal))
            continue
        if item is None:
            return False
        if item is EOF:
            out.append("EOF")
            return True
        assert type(item) is dict, item
        out.append(item)


def run(chunks, max_line_bytes: int = MAX, eof: bool = True) -> list:
    """Feed each chunk, draining after each (as the server does); then EOF.

    Checks the memory bound after every step: never more buffered than
    max_line_bytes plus the chunk just received, and at most max_line_bytes
    once everything complete has been taken out (for the tiny limits only the
    fuzz uses, the digits of an octet count may be more: at most 9).
    """
    proto = SyslogProtocol(max_line_bytes)
    bound = max(max_line_bytes, MAX_COUNT_DIGITS)
    out: list = []
    for chunk in chunks:
        chunk = bytes(chunk)
        if not chunk:
            continue
        proto.receive_data(chunk)
        assert proto.buffered <= bound + len(chunk)
        assert not drain(proto, out)
        assert proto.buffered <= bound
    if eof:
        proto.receive_data(b"")
        assert drain(proto, out)
        assert proto.next_event() is None  # EOF is returned once
    return out


def split_random(data: bytes, seed: int, max_chunk: int = 50) -> list[bytes]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def counted(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


def event(message: bytes) -> dict:
    """The event of one well-formed message (fails on a refusal)."""
    items = run([counted(message)])
    assert items[-1] == "EOF" and len(items) == 2, items
    return items[0]


def refusal(message: bytes) -> RemoteInputError:
    with pytest.raises(RemoteInputError) as info:
        parse_message(message)
    exc = info.value
    assert (exc.length, exc.digest, exc.excerpt) == (
        len(message),
        blake3(message).digest(),
        message[:EXCERPT_BYTES],
    )
    assert not exc.fatal
    return exc


def nil_event(**fields) -> dict:
    return {
        "event_type": "syslog",
        "facility": 1,
        "severity": 5,
        "hostname": None,
        "app_name": None,
        "procid": None,
        "msgid": None,
        "structured_data": {},
        "msg": None,
        **fields,
    }


# ---- RFC 5424 fields


def test_rfc5424_example_with_structured_data_and_bom_gives_every_field():
    # RFC 5424 section 6.5, example 3 and 4 together.
    message = (
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 4711 ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        b'[examplePriority@32473 class="high"] \xef\xbb\xbfAn application event log entry'
    )
    assert event(message) == {
        "event_type": "syslog",
        "timestamp": "2003-10-11T22:14:15.003Z",
        "facility": 20,
        "severity": 5,
        "hostname": "mymachine.example.com",
        "app_name": "evntslog",
        "procid": "4711",
        "msgid": "ID47",
        "structured_data": {
            "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
            "examplePriority@32473": {"class": "high"},
        },
        "msg": "An application event log entry",
    }


def test_rfc5424_example_without_structured_data():
    # RFC 5424 section 6.5, example 1 (the BOM before "'su root'").
    message = (
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"
    )
    got = event(message)
    assert (got["facility"], got["severity"], got["app_name"], got["procid"]) == (4, 2, "su", None)
    assert got["structured_data"] == {}
    assert got["msg"] == "'su root' failed for lonvick on /dev/pts/8"


def test_every_nilvalue_gives_none_and_no_timestamp_key():
    assert event(b"<13>1 - - - - - -") == nil_event()


def test_pri_gives_facility_and_severity_over_its_whole_range():
    for prival in range(192):
        got = event(b"<%d>1 - - - - - -" % prival)
        assert (got["facility"], got["severity"]) == divmod(prival, 8)
    assert event(b"<007>1 - - - - - -")["severity"] == 7  # 1*3DIGIT: leading zeros allowed


@pytest.mark.parametrize(
    "message",
    [b"<192>1 - - - - - -", b"<>1 - - - - - -", b"<1a>1 - - - - - -", b"<1000>1 - - - - - -"],
)
def test_pri_out_of_range_or_malformed_is_refused(message):
    exc = refusal(message)
    assert exc.code == "bad_syslog" and exc.detail.startswith("PRI:")


def test_a_message_not_starting_with_pri_is_refused():
    exc = refusal(b"1 - - - - - -")
    assert (exc.code, exc.detail) == ("bad_syslog", "PRI: a message starts with '<'")


def test_rfc3164_and_other_versions_are_refused_naming_version():
    bsd = refusal(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed")
    assert bsd.code == "bad_syslog" and "RFC 3164" in bsd.detail
    assert bsd.detail.startswith("VERSION:")
    for message in (b"<34>2 - - - - - -", b"<34>10 - - - - - -", b"<34>1x - - - - -"):
        exc = refusal(message)
        assert exc.code == "bad_syslog" and exc.detail.startswith("VERSION:"), message


@pytest.mark.parametrize(
    "timestamp",
    [
        b"1985-04-12T23:20:50.52Z",
        b"1985-04-12T19:20:50.52-04:00",
        b"2003-10-11T22:14:15.003000Z",
        b"2003-08-24T05:14:15.000003-07:00",
        b"2024-02-29T00:00:00+01:00",
    ],
)
def test_rfc3339_timestamps_are_kept_as_sent(timestamp):
    assert event(b"<13>1 %s - - - - -" % timestamp)["timestamp"] == timestamp.decode()


@pytest.mark.parametrize(
    "timestamp",
    [
        b"2003-08-24T05:14:15",  # no offset
        b"2003-13-24T05:14:15Z",
        b"2023-02-29T00:00:00Z",
        b"Oct-11T22:14:15Z",
        b"yesterday",
        b"--",
    ],
)
def test_other_timestamps_are_refused(timestamp):
    exc = refusal(b"<13>1 %s - - - - -" % timestamp)
    assert exc.code == "bad_syslog" and exc.detail.startswith("TIMESTAMP:"), exc.detail


@pytest.mark.parametrize(
    ("name", "position", "longest"),
    [
        ("HOSTNAME", 1, MAX_HOSTNAME),
        ("APP-NAME", 2, MAX_APP_NAME),
        ("PROCID", 3, MAX_PROCID),
        ("MSGID", 4, MAX_MSGID),
    ],
)
def test_header_field_lengths_are_bounded_as_rfc5424_says(name, position, longest):
    key = name.lower().replace("-", "_")
    fields = [b"-"] * 5

    def message(value: bytes) -> bytes:
        fields[position] = value
        return b"<13>1 " + b" ".join(fields) + b" -"

    assert (longest, event(message(b"x" * longest))[key]) == (longest, "x" * longest)
    exc = refusal(message(b"x" * (longest + 1)))
    assert (exc.code, exc.detail) == ("bad_syslog", f"{name}: longer than {longest} characters")


@pytest.mark.parametrize("byte", [b"\x00", b"\x7f", b"\xc3\xa9", b"\t"])
def test_header_fields_must_be_printable_us_ascii(byte):
    exc = refusal(b"<13>1 - host" + byte + b"name - - - -")
    assert exc.code == "bad_syslog"
    assert exc.detail == f"HOSTNAME: byte 0x{byte[0]:02x} is not printable US-ASCII"


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (b"<13>1", "TIMESTAMP: missing (the message ends before it)"),
        (b"<13>1 -", "HOSTNAME: missing (the message ends after TIMESTAMP)"),
        (b"<13>1 - h a", "PROCID: missing (the message ends after APP-NAME)"),
        (b"<13>1 - h a p m", "STRUCTURED-DATA: missing (the message ends after MSGID)"),
        (b"<13>1 - h a p m ", "STRUCTURED-DATA: expected '-' or '['"),
        (b"<13>1 -  a p m -", "HOSTNAME: empty (header fields are separated by one space)"),
        (b"<13>1 - h a p m x", "STRUCTURED-DATA: expected '-' or '['"),
        (b"<13>1 - h a p m -x", "STRUCTURED-DATA: expected a space, or the end, after it"),
        (b"<13>1 - h a p m [x@1]x", "STRUCTURED-DATA: expected a space, or the end, after it"),
        (b"<13>1 - h a p m []", "STRUCTURED-DATA: SD-ID is missing"),
        (b"<13>1 - h a p m [x@1", "STRUCTURED-DATA: in [x@1: expected a space or ']'"),
        (b"<13>1 - h a p m [x@1 ]", "STRUCTURED-DATA: a PARAM-NAME in [x@1 is missing"),
        (b"<13>1 - h a p m [x@1 k=v]", 'STRUCTURED-DATA: x@1.k: expected ="'),
        (b"<13>1 - h a p m [x@1 k]", 'STRUCTURED-DATA: x@1.k: expected ="'),
        (b'<13>1 - h a p m [x@1 k="v]', "STRUCTURED-DATA: x@1.k: PARAM-VALUE has no closing quote"),
        (b'<13>1 - h a p m [x@1 k="v"', "STRUCTURED-DATA: in [x@1: expected a space or ']'"),
        (b'<13>1 - h a p m [x@1 k="v"k="w"]', "STRUCTURED-DATA: in [x@1: expected a space or ']'"),
        (
            b'<13>1 - h a p m [x@1 k="\\"]',
            "STRUCTURED-DATA: x@1.k: PARAM-VALUE has no closing quote",
        ),
        (
            b"<13>1 - h a p m [x@1][x@1]",
            "STRUCTURED-DATA: SD-ID x@1 appears twice (RFC 5424 section 6.3.2)",
        ),
    ],
)
def test_malformed_header_and_structured_data_are_refused_naming_the_field(message, detail):
    exc = refusal(message)
    assert (exc.code, exc.detail) == ("bad_syslog", detail)


def test_structured_data_ends_at_its_first_space_and_msg_may_look_like_it():
    got = event(b'<13>1 - - - - - [x@1 k="v"] [y@1 k="w"]')
    assert (got["structured_data"], got["msg"]) == ({"x@1": {"k": "v"}}, '[y@1 k="w"]')


def test_sd_names_are_bounded_and_exclude_the_reserved_bytes():
    longest = b"i" * MAX_SD_NAME
    assert event(b'<13>1 - - - - - [%s %s="v"]' % (longest, longest))["structured_data"] == {
        longest.decode(): {longest.decode(): "v"}
    }
    exc = refusal(b"<13>1 - - - - - [%s]" % (longest + b"i"))
    assert exc.detail == f"STRUCTURED-DATA: SD-ID longer than {MAX_SD_NAME} characters"
    exc = refusal(b'<13>1 - - - - - [x@1 %s="v"]' % (longest + b"i"))
    assert (
        exc.detail == f"STRUCTURED-DATA: a PARAM-NAME in [x@1 longer than {MAX_SD_NAME} characters"
    )
    exc = refusal(b'<13>1 - - - - - [x"y]')
    assert exc.detail == "STRUCTURED-DATA: in [x: expected a space or ']'"


def test_param_value_escapes_are_undone_and_other_backslashes_kept():
    got = event(b'<13>1 - - - - - [x@1 q="a\\"b" b="c\\\\d" r="e\\]f" n="g\\nh" t="i\\\\"]')
    assert got["structured_data"] == {
        "x@1": {"q": 'a"b', "b": "c\\d", "r": "e]f", "n": "g\\nh", "t": "i\\"}
    }


def test_param_value_may_hold_an_unescaped_bracket_space_and_utf8():
    got = event('<13>1 - - - - - [x@1 v="a]b c=d é"] rest'.encode())
    assert got["structured_data"] == {"x@1": {"v": "a]b c=d é"}}
    assert got["msg"] == "rest"


def test_repeated_params_are_kept_in_order_as_lists():
    got = event(b'<13>1 - - - - - [x@1 ip="1" ip="2" one="x" ip="3"][y@1]')
    assert got["structured_data"] == {"x@1": {"ip": ["1", "2", "3"], "one": "x"}, "y@1": {}}


def test_msg_is_utf8_with_or_without_bom_and_may_be_empty():
    assert event("<13>1 - - - - - - ça va".encode())["msg"] == "ça va"
    assert event("<13>1 - - - - - - \ufeffça va".encode())["msg"] == "ça va"
    assert event(b"<13>1 - - - - - - ")["msg"] == ""
    assert event(b"<13>1 - - - - - - \xef\xbb\xbf")["msg"] == ""
    assert event(b"<13>1 - - - - - -  two spaces")["msg"] == " two spaces"
    assert event(b"<13>1 - - - - - - a\x00b")["msg"] == "a\x00b"


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (b"<13>1 - - - - - - caf\xe9", "MSG: invalid UTF-8 at byte 21"),
        (b"<13>1 - - - - - - \xef\xbb\xbfcaf\xe9", "MSG: invalid UTF-8 at byte 24"),
        (b"<13>1 - - - - - - \xed\xa0\x80", "MSG: invalid UTF-8 at byte 18"),  # a surrogate
        (b'<13>1 - - - - - [x@1 k="\xff"]', "STRUCTURED-DATA: x@1.k: invalid UTF-8"),
    ],
)
def test_text_that_is_not_utf8_is_refused_as_bad_utf8(message, detail):
    exc = refusal(message)
    assert (exc.code, exc.detail) == ("bad_utf8", detail)


def test_a_trailing_line_end_inside_an_octet_count_is_not_part_of_msg():
    # rsyslog's RSYSLOG_SyslogProtocol23Format ends each message with LF.
    assert event(b"<13>1 - - - - - - hello\n")["msg"] == "hello"
    assert event(b"<13>1 - - - - - - hello\r\n")["msg"] == "hello"
    assert event(b"<13>1 - - - - - -\n")["msg"] is None
    assert event(b"<13>1 - - - - - - two\nlines\n")["msg"] == "two\nlines"


# ---- framing


A = b"<13>1 2026-12-01T10:00:00Z host app 1 m - first"
B = b'<14>1 - host app - - [x@1 k="v"] second'
OVERSIZED = bytes(b if b != 10 else 11 for b in (i * 7 % 256 for i in range(600)))
SAMPLE = b"".join(
    [
        b"\n\r\n",
        counted(A),
        A + b"\n",
        B + b"\r\n",
        b"   \n",
        counted(b"<13>1 - - - - - - multi\nline"),
        counted(OVERSIZED),
        b"\n",
        b"<99>Oct 11 22:14:15 bsd: message\n",
        OVERSIZED + b"\n",
        counted(b"<13>1 - - - - - - caf\xe9"),
        b"<13>1 - - - - - - last without newline",
    ]
)
EVENT_A = {
    "event_type": "syslog",
    "timestamp": "2026-12-01T10:00:00Z",
    "facility": 1,
    "severity": 5,
    "hostname": "host",
    "app_name": "app",
    "procid": "1",
    "msgid": "m",
    "structured_data": {},
    "msg": "first",
}
EVENT_B = nil_event(
    severity=6, hostname="host", app_name="app", structured_data={"x@1": {"k": "v"}}, msg="second"
)
SAMPLE_ITEMS = [
    EVENT_A,
    EVENT_A,
    EVENT_B,
    nil_event(msg="multi\nline"),
    err("message_too_long", OVERSIZED),
    err("bad_syslog", b"<99>Oct 11 22:14:15 bsd: message"),
    err("message_too_long", OVERSIZED),
    err("bad_utf8", b"<13>1 - - - - - - caf\xe9"),
    nil_event(msg="last without newline"),
    "EOF",
]


def test_sample_fed_whole_gives_expected_items():
    assert run([SAMPLE], max_line_bytes=500) == SAMPLE_ITEMS


def test_sample_fed_byte_by_byte_gives_same_items():
    assert run(bytewise(SAMPLE), max_line_bytes=500) == SAMPLE_ITEMS


def test_sample_fed_in_random_chunks_gives_same_items():
    for seed in range(20):
        assert run(split_random(SAMPLE, seed), max_line_bytes=500) == SAMPLE_ITEMS, seed


def test_sample_with_trailing_bytes_gives_the_same_items_first():
    # Bytes of an unfinished message after the sample: nothing more before EOF.
    for tail in (b"\n5", b"\n52 <13>1 -", b"\n<13>1 - - -"):
        data = SAMPLE.replace(b"last without newline", b"last\n") + tail
        items = run([data], max_line_bytes=500, eof=False)
        assert items == [*SAMPLE_ITEMS[:-2], nil_event(msg="last")], tail
        assert run(bytewise(data), max_line_bytes=500, eof=False) == items


def test_several_receive_data_calls_before_next_event_lose_nothing():
    proto = SyslogProtocol(100)
    proto.receive_data(b"200 " + b"x" * 150)
    assert proto.next_event() is None  # oversized: being skipped, not buffered
    assert proto.buffered == 0
    proto.receive_data(b"y" * 50 + counted(A))
    proto.receive_data(A + b"\n")
    proto.receive_data(b"")
    out: list = []
    assert drain(proto, out)
    assert out == [err("message_too_long", b"x" * 150 + b"y" * 50), EVENT_A, EVENT_A, "EOF"]


def test_octet_counted_and_newline_framing_mix_in_any_order():
    data = A + b"\n" + counted(B) + counted(A) + B + b"\n" + counted(A)
    assert run([data]) == [EVENT_A, EVENT_B, EVENT_A, EVENT_B, EVENT_A, "EOF"]


def test_message_of_exactly_max_line_bytes_accepted_one_more_refused():
    base = b"<13>1 - - - - - - "
    exact = base + b"m" * (300 - len(base))
    assert run([counted(exact)], 300)[0]["msg"] == "m" * (300 - len(base))
    assert run([exact + b"\n"], 300)[0]["msg"] == "m" * (300 - len(base))
    over = exact + b"m"
    assert run([counted(over) + counted(A)], 300) == [
        err("message_too_long", over),
        EVENT_A,
        "EOF",
    ]
    assert run([over + b"\n" + A], 300) == [err("message_too_long", over), EVENT_A, "EOF"]


def test_endless_counted_message_and_endless_line_keep_the_buffer_bounded():
    chunk = b"A" * (64 * 1024)
    total = 4 * 1024 * 1024
    # The counted message's last byte comes with the message after it.
    for start, end, last in ((b"%d " % (total + 1), b"A", b"A"), (b"", b"\n", b"")):
        proto = SyslogProtocol(MAX)
        hasher = blake3()
        if start:
            proto.receive_data(start)
        sent = 0
        while sent < total:
            proto.receive_data(chunk)
            hasher.update(chunk)
            sent += len(chunk)
            assert proto.next_event() is None
            assert proto.buffered <= MAX + len(chunk)
        hasher.update(last)
        proto.receive_data(end + counted(A))
        with pytest.raises(RemoteInputError) as info:
            proto.next_event()
        exc = info.value
        assert (exc.code, exc.length) == ("message_too_long", total + len(last))
        assert exc.digest == hasher.digest()
        assert exc.excerpt == b"A" * EXCERPT_BYTES
        assert proto.next_event() == EVENT_A


@pytest.mark.parametrize(
    ("data", "raw", "detail"),
    [
        (b"012 <13>1 - - -", b"0", "octet count starts with 0"),
        (b"0 ", b"0", "octet count starts with 0"),
        (b"1" * 12 + b" <13>", b"1" * 10, f"octet count of more than {MAX_COUNT_DIGITS} digits"),
        (b"12x<13>1 - - - - - -", b"12x", "octet count followed by byte 0x78, not a space"),
        (b"12\n<13>1 - - - - - -\n", b"12\n", "octet count followed by byte 0x0a, not a space"),
    ],
)
def test_a_bad_octet_count_loses_framing_and_ends_the_stream(data, raw, detail):
    for chunks in ([counted(A) + data + b"\n" + counted(A)], bytewise(counted(A) + data)):
        items = run(chunks)
        assert items == [EVENT_A, err("bad_framing", raw, fatal=True), "EOF"]
    proto = SyslogProtocol(MAX)
    proto.receive_data(data)
    with pytest.raises(RemoteInputError) as info:
        proto.next_event()
    assert info.value.detail == detail and info.value.fatal
    proto.receive_data(counted(A))  # nothing after lost framing is read
    assert proto.next_event() is None and proto.buffered == 0


def test_nine_digit_count_is_an_oversized_message_not_a_framing_error():
    proto = SyslogProtocol(MAX)
    proto.receive_data(b"999999999 " + b"x" * 100)
    assert proto.next_event() is None and proto.buffered == 0
    proto.receive_data(b"")
    with pytest.raises(RemoteInputError) as info:
        proto.next_event()
    assert (info.value.code, info.value.length, info.value.fatal) == (
        "incomplete_message",
        100,
        False,
    )
    assert proto.next_event() is EOF


def test_eof_inside_an_octet_count_or_a_counted_message_is_incomplete():
    assert run([counted(A) + b"12"]) == [EVENT_A, err("incomplete_message", b"12"), "EOF"]
    cut = counted(A)[:-5]
    assert run([cut]) == [err("incomplete_message", A[:-5]), "EOF"]
    assert run([b"100 "]) == [err("incomplete_message", b""), "EOF"]


def test_last_line_without_newline_is_a_message_at_eof_and_not_before():
    proto = SyslogProtocol(MAX)
    proto.receive_data(A)
    assert proto.next_event() is None
    proto.receive_data(b"")
    assert proto.next_event() == EVENT_A
    assert proto.next_event() is EOF
    assert proto.next_event() is None


def test_blank_lines_are_nothing_but_a_blank_counted_message_is_refused():
    assert run([b"\n\r\n  \t\n" + A + b"\n\n \n"]) == [EVENT_A, "EOF"]
    assert run([b"3    "]) == [err("bad_syslog", b"   "), "EOF"]
    assert run([]) == ["EOF"]


def test_lines_and_last_line_follow_every_message():
    proto = SyslogProtocol(MAX)
    proto.receive_data(counted(A) + b"<1>x\n" + B + b"\n")
    assert proto.next_event() == EVENT_A
    assert (proto.lines, proto.last_line) == (1, A)
    with pytest.raises(RemoteInputError):
        proto.next_event()
    assert (proto.lines, proto.last_line) == (2, b"<1>x")
    assert proto.next_event() == EVENT_B
    assert (proto.lines, proto.last_line) == (3, B)


def test_data_after_eof_is_a_programming_error():
    proto = SyslogProtocol(MAX)
    proto.receive_data(b"")
    with pytest.raises(RuntimeError):
        proto.receive_data(b"x")


# ---- abandon (shutdown with the client still sending)


def test_abandon_describes_an_unfinished_line_or_counted_message():
    for data, raw in ((A[:20], A[:20]), (b"47 " + A[:20], A[:20]), (b"47", b"47")):
        proto = SyslogProtocol(MAX)
        proto.receive_data(counted(B) + data)
        assert proto.next_event() == EVENT_B
        assert proto.next_event() is None
        exc = proto.abandon()
        assert exc is not None and exc.code == "incomplete_message", data
        assert (exc.length, exc.digest, exc.excerpt) == (len(raw), blake3(raw).digest(), raw)
        assert proto.next_event() is None  # no EOF item and no event after abandoning


def test_abandon_with_only_blank_bytes_left_reports_nothing():
    proto = SyslogProtocol(MAX)
    proto.receive_data(counted(A) + b"\n \r\n\t")
    assert proto.next_event() == EVENT_A
    assert proto.next_event() is None
    assert proto.abandon() is None


def test_abandon_during_an_oversized_message_reports_its_whole_length():
    proto = SyslogProtocol(8)
    proto.receive_data(b"x" * 20)
    proto.receive_data(b"y" * 5)
    assert proto.next_event() is None
    exc = proto.abandon()
    assert exc is not None and (exc.code, exc.length) == ("incomplete_message", 25)
    assert exc.digest == blake3(b"x" * 20 + b"y" * 5).digest()


def test_abandon_after_lost_framing_reports_nothing_more():
    proto = SyslogProtocol(MAX)
    proto.receive_data(b"0 junk")
    with pytest.raises(RemoteInputError):
        proto.next_event()
    assert proto.abandon() is None


# ---- property: any input, any split


FRAGMENTS = [
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"0",
    b"1",
    b"9",
    b"12 ",
    b"5 ",
    b"999999 ",
    b"1234567890",
    b"<",
    b">",
    b"<13>1 ",
    b"<191>1 - - - - - ",
    b"<13>1 - - - - - -",
    b"<13>1 2026-12-01T10:00:00Z h a p m ",
    b"-",
    b"[",
    b"]",
    b'x@1 k="',
    b'"',
    b"\\",
    b"=",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\x00",
    counted(A),
    A,
    B,
    b"x" * 100,
]

inputs = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)),
    max_size=60,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    data=inputs,
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    max_line_bytes=st.sampled_from([1, 16, 64, 300]),
)
def test_any_input_split_anywhere_gives_items_or_refusals_and_the_same_ones(
    data, cuts, max_line_bytes
):
    # run() also checks the memory bound after every chunk.
    whole = run([data], max_line_bytes)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert run(chunks, max_line_bytes) == whole
    assert whole[-1] == "EOF" and whole.count("EOF") == 1
    for item in whole[:-1]:
        if isinstance(item, dict):
            assert item["event_type"] == "syslog"
            continue
        _, code, length, digest, excerpt, fatal = item
        assert code in {
            "bad_syslog",
            "bad_utf8",
            "bad_framing",
            "message_too_long",
            "incomplete_message",
        }
        assert length is not None and len(digest) == 32
        assert len(excerpt) == min(length, EXCERPT_BYTES)
        assert fatal == (code == "bad_framing")
    fatal_items = [i for i in whole if isinstance(i, tuple) and i[5]]
    assert fatal_items in ([], whole[-2:-1])  # lost framing ends the stream


# ---- property: any well-formed message round-trips


def escape_value(text: str) -> bytes:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]").encode()


def sd_element(sd_id: str, params: list[tuple[str, str]]) -> bytes:
    fields = b"".join(b' %s="%s"' % (k.encode(), escape_value(v)) for k, v in params)
    return b"[%s%s]" % (sd_id.encode(), fields)


header_value = st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126)))
sd_name = st.text(
    st.sampled_from([chr(b) for b in range(33, 127) if chr(b) not in '=]"']),
    min_size=1,
    max_size=MAX_SD_NAME,
)
any_text = st.text(st.characters(blacklist_categories=("Cs",)))


@settings(max_examples=300, deadline=None)
@given(
    prival=st.integers(0, 191),
    hostname=header_value.filter(lambda v: v is None or 0 < len(v) <= MAX_HOSTNAME),
    app_name=header_value.filter(lambda v: v is None or 0 < len(v) <= MAX_APP_NAME),
    procid=header_value.filter(lambda v: v is None or 0 < len(v) <= MAX_PROCID),
    msgid=header_value.filter(lambda v: v is None or 0 < len(v) <= MAX_MSGID),
    elements=st.dictionaries(
        sd_name, st.lists(st.tuples(sd_name, any_text), max_size=4), max_size=3
    ),
    msg=st.one_of(st.none(), any_text.filter(lambda t: not t.startswith("\ufeff"))),
    bom=st.booleans(),
)
def test_any_well_formed_message_gives_back_what_was_sent(
    prival, hostname, app_name, procid, msgid, elements, msg, bom
):
    def field(value: str | None) -> bytes:
        return b"-" if value is None or value == "-" else value.encode()

    sd = b"".join(sd_element(sd_id, params) for sd_id, params in elements.items())
    message = b"<%d>1 - %s %s %s %s %s" % (
        prival,
        field(hostname),
        field(app_name),
        field(procid),
        field(msgid),
        sd or b"-",
    )
    if msg is not None:
        message += b" " + (b"\xef\xbb\xbf" if bom else b"") + msg.encode()
    got = parse_message(message)
    expected_sd: dict = {}
    for sd_id, params in elements.items():
        values: dict = {}
        for k, v in params:
            values.setdefault(k, []).append(v)
        expected_sd[sd_id] = {k: v[0] if len(v) == 1 else v for k, v in values.items()}
    if msg is not None and message.endswith(b"\n"):
        msg = msg[:-2] if msg.endswith("\r\n") else msg[:-1]
    assert got == {
        "event_type": "syslog",
        "facility": prival // 8,
        "severity": prival % 8,
        "hostname": None if hostname in (None, "-") else hostname,
        "app_name": None if app_name in (None, "-") else app_name,
        "procid": None if procid in (None, "-") else procid,
        "msgid": None if msgid in (None, "-") else msgid,
        "structured_data": expected_sd,
        "msg": msg,
    }


# ---- configuration


def test_syslog_is_off_by_default_and_listens_where_configured(tmp_path):
    assert load_config(None, tmp_path).ingest.syslog.listen == ()
    path = tmp_path / "gateway.yaml"
    path.write_text("ingest:\n  syslog:\n    listen: ['127.0.0.1:5140', '[::1]:5140']\n")
    assert load_config(path).ingest.syslog.listen == ("127.0.0.1:5140", "[::1]:5140")


def test_bad_syslog_listen_addresses_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "gateway.yaml"
    for address in ("127.0.0.1", "host:514", "127.0.0.1:70000"):
        path.write_text(f"ingest:\n  syslog:\n    listen: ['127.0.0.1:1', '{address}']\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == "ingest.syslog.listen[1]", address
    path.write_text("ingest:\n  syslog:\n    port: 514\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "ingest.syslog.port"


def test_syslog_cannot_be_on_with_require_token(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("ingest:\n  require_token: true\n  syslog:\n    listen: ['127.0.0.1:5140']\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "ingest.syslog.listen"


# ---- the listener on the ingest server


@pytest.fixture
def syslog_gateway(tmp_path):
    made = []

    def make(**ingest) -> tuple[Gateway, tuple[str, int], tuple[str, int]]:
        config = Config(
            state_dir=tmp_path / "state",
            ingest=IngestConfig(
                listen=("127.0.0.1:0",), syslog=SyslogConfig(listen=("127.0.0.1:0",)), **ingest
            ),
        )
        gw = Gateway(config)
        ndjson, syslog = gw.start()
        made.append(gw)
        return gw, ndjson, syslog

    yield make
    for gw in made:
        gw.request_stop()
        gw._finish()


def send_and_read(gw: Gateway, address, data: bytes) -> bytes:
    """Send `data`, half-close, and read until the gateway closes: what it sent back."""
    sock = socket.create_connection(address)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    sock.setblocking(False)
    received = bytearray()
    closed = False

    def done() -> bool:
        nonlocal closed
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
            closed = True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed = True
        return closed

    pump(gw, done)
    sock.close()
    return bytes(received)


def entries_of(gw: Gateway, *kinds: str) -> list[dict]:
    settle(gw)
    return [e for e in ledger(gw) if e["kind"] in kinds]


def test_syslog_messages_become_events_with_the_connection_as_source(syslog_gateway):
    gw, _, address = syslog_gateway()
    assert send_and_read(gw, address, counted(A) + B + b"\n" + b"<13>1 - - - - - -\n") == b""
    stored = entries_of(gw, "event", "rejected")
    assert [e["event"] for e in stored] == [EVENT_A, EVENT_B, nil_event()]
    for entry in stored:
        assert entry["source"]["app"] is None  # APP-NAME stays in the event
        assert entry["source"]["addr"] == "127.0.0.1"
    flags = [[f for f in e["flags"] if f != "clock_unsynced"] for e in stored]
    assert flags == [[], ["missing_timestamp"], ["missing_timestamp"]]


def test_refused_messages_are_recorded_and_never_answered(syslog_gateway):
    gw, _, address = syslog_gateway(max_line_bytes=300)
    data = b"<99>Oct 11 bsd\n" + counted(OVERSIZED) + counted(A) + b"0 lost framing " + counted(B)
    assert send_and_read(gw, address, data) == b""
    stored = entries_of(gw, "event", "rejected")
    assert [(e["kind"], e.get("reason")) for e in stored] == [
        ("rejected", "bad_syslog"),
        ("rejected", "message_too_long"),
        ("event", None),
        ("rejected", "bad_framing"),
    ]
    assert stored[1]["length"] == len(OVERSIZED)
    assert stored[1]["digest"] == blake3(OVERSIZED).digest()
    assert stored[3]["excerpt"] == b"0"
    assert gw.ingest.stats.events == 1 and gw.ingest.stats.rejected == 3


def test_an_ndjson_hello_on_the_syslog_port_is_only_a_refused_message(syslog_gateway):
    gw, ndjson, address = syslog_gateway()
    hello = b'{"hello":{"app":"x","ack":true}}\n'
    assert send_and_read(gw, address, hello) == b""
    (rejected,) = entries_of(gw, "event", "rejected")
    assert (rejected["reason"], rejected["excerpt"]) == ("bad_syslog", hello[:-1])
    # The NDJSON listener beside it still answers as before.
    reply = send_and_read(gw, ndjson, hello + b'{"event_type":"x"}\n').splitlines()
    assert len(reply) == 2 and reply[0].startswith(b'{"hello":')
    assert reply[1].startswith(b'{"ok":true,"seq":')


def test_a_refused_syslog_connection_is_closed_without_a_reply(syslog_gateway):
    gw, _, address = syslog_gateway(max_connections_per_source=1)
    held = socket.create_connection(address)
    try:
        pump(gw, lambda: len(gw.ingest.connections) == 1)
        assert send_and_read(gw, address, counted(A)) == b""
        assert gw.ingest.stats.refused_connections == 1
    finally:
        held.close()
    assert entries_of(gw, "event") == []


def test_sensitive_structured_data_is_redacted_before_it_is_stored(syslog_gateway):
    gw, _, address = syslog_gateway()
    message = b'<13>1 - - app - - [login@1 user="ann" password="hunter2"] card 4111111111111111'
    assert send_and_read(gw, address, counted(message)) == b""
    (stored,) = entries_of(gw, "event")
    params = stored["event"]["structured_data"]["login@1"]
    assert params["user"] == "ann" and "hunter2" not in params["password"]
    assert "4111111111111111" not in stored["event"]["msg"]
    assert {"redacted_key", "redacted_card"} <= set(stored["flags"])


def test_over_the_rate_limit_a_syslog_sender_is_recorded_and_closed_without_a_reply(
    syslog_gateway,
):
    gw, _, address = syslog_gateway(rate_limit_eps=1, rate_burst=3)
    assert send_and_read(gw, address, counted(A) * 10) == b""
    stored = entries_of(gw, "event", "rejected")
    assert [(e["kind"], e.get("reason")) for e in stored] == [
        ("event", None),
        ("event", None),
        ("event", None),
        ("rejected", "rate_limited"),
    ]
    assert stored[3]["excerpt"] == A  # the message it refused


def test_with_the_disk_full_a_syslog_sender_is_closed_without_a_reply_or_an_entry(
    syslog_gateway,
):
    gw, _, address = syslog_gateway()
    gw.ledger.disk_full = True
    assert send_and_read(gw, address, counted(A) * 3) == b""
    gw.ledger.disk_full = False
    assert entries_of(gw, "event", "rejected") == []
    assert gw.ingest.stats.events == 0

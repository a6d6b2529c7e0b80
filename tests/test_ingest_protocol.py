"""The sans-I/O ingest protocol: framing, the hello, hostile lines, memory bound."""

from __future__ import annotations

import json
import random

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RemoteInputError
from gateway.ingest.protocol import (
    EOF,
    EXCERPT_BYTES,
    MAX_APP_NAME,
    MAX_DEPTH,
    MAX_TOKEN,
    Hello,
    IngestProtocol,
)

MAX = 65536


def err(code: str, line: bytes, fatal: bool = False) -> tuple:
    """The recorded form of a refused line, computed independently from the line."""
    return ("error", code, len(line), blake3(line).digest(), line[:EXCERPT_BYTES], fatal)


def drain(proto: IngestProtocol, out: list) -> bool:
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
        assert isinstance(item, dict | Hello), item
        out.append(item)


def run(chunks, max_line_bytes: int = MAX, eof: bool = True) -> list:
    """Feed each chunk, draining after each (as the server does); then EOF.

    Also checks the memory bound after every step: never more buffered than
    max_line_bytes plus the chunk just received, and at most max_line_bytes
    once everything complete has been taken out.
    """
    proto = IngestProtocol(max_line_bytes)
    out: list = []
    for chunk in chunks:
        chunk = bytes(chunk)
        if not chunk:
            continue
        proto.receive_data(chunk)
        assert proto.buffered <= max_line_bytes + len(chunk)
        assert not drain(proto, out)
        assert proto.buffered <= max_line_bytes
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


def one(line: bytes, max_line_bytes: int = MAX) -> list:
    """Items for a single line sent after a valid first event (so it is not the first line)."""
    items = run([b'{"first":1}\n' + line + b"\n"], max_line_bytes)
    assert items[0] == {"first": 1}
    assert items[-1] == "EOF"
    return items[1:-1]


# A line mixing every kind of item; the overlong line uses varied bytes so the
# excerpt check is meaningful.
OVERLONG = bytes(b if b != 10 else 11 for b in (i * 7 % 256 for i in range(1000)))
SAMPLE = b"".join(
    [
        b"\n  \n",
        b'{"hello":{"app":"shop","ack":true}}\r\n',
        b'{"event_type":"a","timestamp":"2026-11-23T10:00:00Z","n":1}\n',
        b"\t\r\n",
        b'{"event_type":"b"}\r\n',
        b"not json\n",
        OVERLONG + b"\n",
        b'{"x":"\xff"}\n',
        b"[1,2]\n",
        b'{"hello":{"ack":false}}\n',
        b'{"s":"\\ud800"}\n',
        b'{"deep":' + b"[" * 40 + b"]" * 40 + b"}\n",
        b'{"event_type":"last"}',
    ]
)
SAMPLE_ITEMS = [
    Hello("shop", True),
    {"event_type": "a", "timestamp": "2026-11-23T10:00:00Z", "n": 1},
    {"event_type": "b"},
    err("bad_json", b"not json"),
    err("line_too_long", OVERLONG),
    err("bad_utf8", b'{"x":"\xff"}'),
    err("not_object", b"[1,2]"),
    err("unexpected_hello", b'{"hello":{"ack":false}}'),
    err("bad_unicode", b'{"s":"\\ud800"}'),
    err("too_deep", b'{"deep":' + b"[" * 40 + b"]" * 40 + b"}"),
    {"event_type": "last"},
    "EOF",
]


# ---- framing


def test_sample_fed_whole_gives_expected_items():
    assert run([SAMPLE], max_line_bytes=500) == SAMPLE_ITEMS


def test_sample_fed_byte_by_byte_gives_same_items():
    assert run(bytewise(SAMPLE), max_line_bytes=500) == SAMPLE_ITEMS


def test_sample_fed_in_random_chunks_gives_same_items():
    for seed in range(20):
        assert run(split_random(SAMPLE, seed), max_line_bytes=500) == SAMPLE_ITEMS, seed


def test_several_receive_data_calls_before_next_event_lose_nothing():
    # The sans-I/O contract allows feeding several chunks before asking for items.
    line = b"x" * 400
    proto = IngestProtocol(300)
    out: list = []
    proto.receive_data(line)
    assert not drain(proto, out)  # the line is now known to be overlong
    proto.receive_data(b'\n{"a":1}\n')
    proto.receive_data(b'{"b":2}\n')
    proto.receive_data(b"")
    assert drain(proto, out)
    assert out == [err("line_too_long", line), {"a": 1}, {"b": 2}, "EOF"]


def test_trailing_bytes_without_newline_are_the_last_event_at_eof():
    assert run([b'{"a":1}\n{"b":2}']) == [{"a": 1}, {"b": 2}, "EOF"]
    assert run([b'{"a":1}\n{"b":2}\r']) == [{"a": 1}, {"b": 2}, "EOF"]


def test_incomplete_line_is_not_returned_before_eof():
    proto = IngestProtocol(MAX)
    proto.receive_data(b'{"a":1}\n{"b":')
    assert proto.next_event() == {"a": 1}
    assert proto.next_event() is None
    proto.receive_data(b"2}")
    assert proto.next_event() is None
    proto.receive_data(b"")
    assert proto.next_event() == {"b": 2}
    assert proto.next_event() is EOF
    assert proto.next_event() is None


def test_empty_input_gives_only_eof():
    assert run([]) == ["EOF"]


def test_crlf_and_lf_both_end_lines():
    data = b'{"a":1}\r\n{"b":2}\n{"c":"x\\r"}\r\n'
    assert run([data]) == [{"a": 1}, {"b": 2}, {"c": "x\r"}, "EOF"]


def test_blank_and_whitespace_only_lines_are_ignored():
    data = b'\n\r\n   \n\t\n \t \r\n{"a":1}\n\n  \r\n{"b":2}\n   '
    assert run([data]) == [{"a": 1}, {"b": 2}, "EOF"]
    assert run([b"\n \n\t\r\n"]) == ["EOF"]


# ---- hello


def test_hello_on_first_line_is_parsed():
    assert run([b'{"hello":{"app":"shop","ack":true}}\n{"a":1}\n']) == [
        Hello("shop", True),
        {"a": 1},
        "EOF",
    ]


def test_hello_defaults_and_explicit_null_app():
    assert run([b'{"hello":{}}\n']) == [Hello(None, False), "EOF"]
    assert run([b'{"hello":{"app":null,"ack":false}}\n']) == [Hello(None, False), "EOF"]
    assert run([b'{"hello":{"ack":true}}\n']) == [Hello(None, True), "EOF"]


def test_hello_after_blank_lines_is_still_the_first_line():
    assert run([b'\n  \r\n{"hello":{"app":"a","ack":true}}\n']) == [Hello("a", True), "EOF"]


def test_hello_app_name_of_max_length_accepted():
    app = "é" * MAX_APP_NAME  # characters, not bytes
    line = b'{"hello":{"app":"%s","ack":true}}\n' % app.encode()
    assert run([line]) == [Hello(app, True), "EOF"]


BAD_HELLOS = [
    b'{"hello":"shop"}',
    b'{"hello":[]}',
    b'{"hello":null}',
    b'{"hello":true}',
    b'{"hello":{"app":5}}',
    b'{"hello":{"app":["a"]}}',
    b'{"hello":{"app":""}}',
    b'{"hello":{"app":"%s"}}' % (b"a" * (MAX_APP_NAME + 1)),
    b'{"hello":{"ack":"yes"}}',
    b'{"hello":{"ack":1}}',
    b'{"hello":{"ack":null}}',
    b'{"hello":{"app":"a","ack":true},"event_type":"x"}',
    b'{"hello":{},"x":1}',
]


def test_bad_hello_is_fatal():
    for line in BAD_HELLOS:
        items = run([line + b'\n{"a":1}\n'])
        assert items[0] == err("bad_hello", line, fatal=True), line


def _token_hello(hello: dict) -> bytes:
    return json.dumps({"hello": hello}).encode()


def test_a_token_within_its_bound_is_taken_with_its_app():
    for token in ("t" * 16, "t" * MAX_TOKEN):
        line = _token_hello({"app": "shop", "token": token})
        assert run([line + b"\n"]) == [Hello("shop", False, token), "EOF"]


def test_a_token_without_an_app_or_out_of_bounds_is_refused_and_never_kept():
    """Refused as fatal (the server then closes) with no excerpt: the line holds a secret."""
    hellos = [
        {"token": "t" * 16},  # whose token would it be?
        {"app": None, "token": "t" * 16},
        {"app": "shop", "token": "t" * (MAX_TOKEN + 1)},
        {"app": "shop", "token": "t" * 10_000},
        {"app": "shop", "token": ""},
        {"app": "shop", "token": 12345678901234567},
    ]
    for hello in hellos:
        line = _token_hello(hello)
        items = run([line + b'\n{"a":1}\n'])
        code, length, digest, excerpt, fatal = items[0][1:]
        assert (code, length, digest, fatal) == (
            "bad_hello",
            len(line),
            blake3(line).digest(),
            True,
        ), hello
        assert excerpt == b"", hello


def test_bad_hello_is_fatal_also_after_blank_lines_and_with_crlf():
    line = b'{"hello":{"ack":"no"}}'
    proto = IngestProtocol(MAX)
    proto.receive_data(b"\n \n" + line + b"\r\n")
    try:
        proto.next_event()
    except RemoteInputError as exc:
        # The recorded line is everything before the LF, the CR included.
        assert (exc.code, exc.fatal, exc.length) == ("bad_hello", True, len(line) + 1)
        assert exc.digest == blake3(line + b"\r").digest()
    else:
        raise AssertionError("bad hello accepted")


def test_later_hello_line_is_unexpected_and_not_fatal():
    line = b'{"hello":{"app":"x","ack":true}}'
    items = run([b'{"a":1}\n' + line + b'\n{"b":2}\n'])
    assert items == [{"a": 1}, err("unexpected_hello", line), {"b": 2}, "EOF"]


def test_second_hello_is_unexpected():
    line = b'{"hello":{"ack":true}}'
    items = run([line + b"\n" + line + b'\n{"b":2}\n'])
    assert items == [Hello(None, True), err("unexpected_hello", line), {"b": 2}, "EOF"]


def test_hello_after_a_refused_first_line_is_unexpected():
    # The hello is only valid as the first non-blank line, even if that line was refused.
    line = b'{"hello":{"ack":true}}'
    items = run([b"garbage\n" + line + b'\n{"b":2}\n'])
    assert items == [err("bad_json", b"garbage"), err("unexpected_hello", line), {"b": 2}, "EOF"]


def test_later_object_with_hello_and_other_keys_is_an_ordinary_event():
    items = run([b'{"a":1}\n{"hello":"there","event_type":"greeting"}\n'])
    assert items == [{"a": 1}, {"hello": "there", "event_type": "greeting"}, "EOF"]


# ---- overlong lines


def test_overlong_line_is_refused_with_full_length_digest_and_excerpt():
    line = OVERLONG * 5  # 5000 bytes
    items = run([line + b'\n{"next":1}\n'], max_line_bytes=300)
    assert items == [err("line_too_long", line), {"next": 1}, "EOF"]
    assert items[0][2] == 5000 and len(items[0][4]) == EXCERPT_BYTES


def test_overlong_line_fed_byte_by_byte():
    line = OVERLONG * 5
    data = b'{"a":1}\n' + line + b'\n{"next":1}\n'
    expected = [{"a": 1}, err("line_too_long", line), {"next": 1}, "EOF"]
    assert run(bytewise(data), max_line_bytes=300) == expected
    for seed in range(5):
        assert run(split_random(data, seed, 700), max_line_bytes=300) == expected


def test_overlong_last_line_without_newline_before_eof():
    line = OVERLONG * 5
    data = b'{"a":1}\n' + line
    expected = [{"a": 1}, err("line_too_long", line), "EOF"]
    assert run([data], max_line_bytes=300) == expected
    assert run(bytewise(data), max_line_bytes=300) == expected
    assert run(split_random(data, 7, 400), max_line_bytes=300) == expected


def test_overlong_line_in_one_chunk_with_eof_before_next_event():
    line = b"z" * 1000
    proto = IngestProtocol(300)
    proto.receive_data(line)
    proto.receive_data(b"")
    out: list = []
    assert drain(proto, out)
    assert out == [err("line_too_long", line), "EOF"]


def test_line_of_exactly_max_line_bytes_accepted_one_more_refused():
    limit = 300
    ok = b'{"s":"' + b"a" * (limit - 8) + b'"}'
    assert len(ok) == limit
    assert run([ok + b"\n"], limit) == [{"s": "a" * (limit - 8)}, "EOF"]
    assert run(bytewise(ok + b"\n"), limit) == [{"s": "a" * (limit - 8)}, "EOF"]
    bad = b'{"s":"' + b"a" * (limit - 7) + b'"}'
    assert run([bad + b"\n"], limit) == [err("line_too_long", bad), "EOF"]
    assert run(bytewise(bad + b"\n"), limit) == [err("line_too_long", bad), "EOF"]


def test_short_overlong_line_excerpt_is_whole_line():
    line = b"q" * 200
    assert run([line + b"\n"], max_line_bytes=100) == [err("line_too_long", line), "EOF"]


# ---- hostile lines


def nested(depth: int) -> bytes:
    """An object whose nesting (counting the object itself) is exactly `depth`."""
    return b'{"a":' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


HOSTILE = [
    (b"\xff", "bad_utf8"),
    (b'{"s":"\xc3"}', "bad_utf8"),
    (b'{"s":"\xed\xa0\x80"}', "bad_utf8"),  # a surrogate encoded in UTF-8
    (b'{"s":"\xc0\xaf"}', "bad_utf8"),  # overlong encoding
    (b'{"s":"\xf4\x90\x80\x80"}', "bad_utf8"),  # beyond U+10FFFF
    (b"{", "bad_json"),
    (b'{"a":1,}', "bad_json"),
    (b"{'a':1}", "bad_json"),
    (b'{"a":1}{"b":2}', "bad_json"),
    (b'{"a":1e999}', "bad_json"),
    (b'{"a":-1e999}', "bad_json"),
    (b'{"a":' + b"9" * 5000 + b"}", "bad_json"),
    (b'{"a":NaN}', "bad_json"),
    (b'{"a":Infinity}', "bad_json"),
    (b'{"a":-Infinity}', "bad_json"),
    (b'{"s":"a\x00b"}', "bad_json"),
    (b'{"s":"a\tb"}', "bad_json"),
    (b"\xef\xbb\xbf{}", "bad_json"),  # byte order mark
    (b'{"s":"\\x41"}', "bad_json"),
    (b"[1,2]", "not_object"),
    (b"[]", "not_object"),
    (b'"text"', "not_object"),
    (b"42", "not_object"),
    (b"1.5", "not_object"),
    (b"null", "not_object"),
    (b"true", "not_object"),
    (b"false", "not_object"),
    (b'{"s":"\\ud800"}', "bad_unicode"),
    (b'{"s":"\\uDC00"}', "bad_unicode"),
    (b'{"\\ud83d":1}', "bad_unicode"),  # in a key
    (b'{"a":[{"b":["x\\ude00y"]}]}', "bad_unicode"),
    (b'{"s":"\\ude00\\ud83d"}', "bad_unicode"),  # pair in the wrong order
    (nested(MAX_DEPTH + 1), "too_deep"),
    (nested_objects(MAX_DEPTH + 1), "too_deep"),
    (nested(500), "too_deep"),
    (b'{"a":' + b"[" * 100_000, "too_deep"),
    (b"[" * 100_000, "too_deep"),
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too_deep"),
    (b'{"a":' + b'{"b":' * 100_000 + b"1" + b"}" * 100_001, "too_deep"),
]


def test_hostile_lines_give_exactly_the_documented_code():
    limit = 1 << 21
    for line, code in HOSTILE:
        items = one(line, limit)
        assert items == [err(code, line)], (line[:60], code, items[:1])


def test_hostile_lines_do_not_stop_parsing():
    limit = 1 << 21
    data = b"".join(line + b'\n{"ok":1}\n' for line, _ in HOSTILE)
    items = run([data], limit)
    expected = []
    for line, code in HOSTILE:
        expected += [err(code, line), {"ok": 1}]
    assert items == [*expected, "EOF"]


def test_exactly_max_depth_is_accepted():
    value: object = 1
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert one(nested(MAX_DEPTH)) == [{"a": value}]
    items = one(nested_objects(MAX_DEPTH))
    assert len(items) == 1 and isinstance(items[0], dict)


def test_many_brackets_inside_strings_are_not_nesting():
    line = b'{"s":"' + b"[{" * 500 + b'","t":["[[[["]}'
    assert one(line) == [{"s": "[{" * 500, "t": ["[[[["]}]


def test_large_but_bounded_numbers_are_accepted():
    assert one(b'{"a":' + b"9" * 4000 + b"}") == [{"a": int("9" * 4000)}]
    assert one(b'{"a":1e308,"b":1e-999,"c":-0.0}') == [{"a": 1e308, "b": 0.0, "c": -0.0}]


def test_escaped_nul_and_valid_surrogate_pair_are_accepted():
    assert one(b'{"s":"a\\u0000b"}') == [{"s": "a\x00b"}]
    assert one(b'{"s":"\\ud83d\\ude00","t":"\\uD83D\\uDE00"}') == [
        {"s": "\U0001f600", "t": "\U0001f600"}
    ]
    # an escaped backslash followed by "ud800" is plain text, not a surrogate
    assert one(b'{"s":"\\\\ud800"}') == [{"s": "\\ud800"}]


def test_valid_utf8_and_whitespace_around_the_object_accepted():
    assert one('  {"s":"Grüße €𝄞"}\t'.encode()) == [{"s": "Grüße €𝄞"}]


# ---- memory bound


def test_endless_line_keeps_buffer_bounded():
    chunk_size = 64 * 1024
    chunk = b"A" * chunk_size
    proto = IngestProtocol(MAX)
    hasher = blake3()
    total = 0
    while total < 10 * 1024 * 1024:
        proto.receive_data(chunk)
        hasher.update(chunk)
        total += chunk_size
        assert proto.buffered <= MAX + chunk_size
        assert proto.next_event() is None
        assert proto.buffered <= MAX + chunk_size
    proto.receive_data(b"\n")
    try:
        proto.next_event()
    except RemoteInputError as exc:
        assert (exc.code, exc.length) == ("line_too_long", total)
        assert exc.digest == hasher.digest()
        assert exc.excerpt == b"A" * EXCERPT_BYTES
    else:
        raise AssertionError("endless line accepted")
    assert proto.buffered == 0


# ---- property: any input, any split


FRAGMENTS = [
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"\\",
    b"\\ud800",
    b"\\u0000",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"1e999",
    b"NaN",
    b"null",
    b'{"a":1}',
    b'{"event_type":"x","timestamp":"2026-01-01T00:00:00Z"}',
    b'{"hello":{"app":"a","ack":true}}',
    b'{"hello":{"ack":1}}',
    b'{"hello":{}}',
    b"x" * 100,
    b"[" * 40,
]

inputs = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    data=inputs,
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    max_line_bytes=st.sampled_from([1, 16, 64, 300]),
)
def test_any_input_split_anywhere_gives_same_items(data, cuts, max_line_bytes):
    whole = run([data], max_line_bytes)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert run(chunks, max_line_bytes) == whole
    assert whole[-1] == "EOF" and whole.count("EOF") == 1
    for item in whole[:-1]:
        assert isinstance(item, dict | Hello) or item[0] == "error"
        if isinstance(item, tuple):
            _, _code, length, digest, excerpt, _fatal = item
            assert length is not None and len(digest) == 32
            assert len(excerpt) == min(length, EXCERPT_BYTES)


def test_abandon_describes_the_unfinished_line_and_ends_the_stream():
    p = IngestProtocol(1024)
    p.receive_data(b'{"a":1}\n{"cut')
    assert p.next_event() == {"a": 1}
    assert p.next_event() is None
    err = p.abandon()
    assert err is not None and err.code == "incomplete_line"
    assert (err.length, err.excerpt, err.digest) == (5, b'{"cut', blake3(b'{"cut').digest())
    assert p.next_event() is None  # no EOF item and no event after abandoning


def test_abandon_with_only_blank_bytes_left_reports_nothing():
    p = IngestProtocol(1024)
    p.receive_data(b'{"a":1}\n \r')
    assert p.next_event() == {"a": 1}
    assert p.next_event() is None
    assert p.abandon() is None


def test_abandon_during_an_overlong_line_reports_its_whole_length():
    p = IngestProtocol(8)
    p.receive_data(b"x" * 20)
    p.receive_data(b"y" * 5)
    assert p.next_event() is None
    err = p.abandon()
    assert err is not None and err.code == "incomplete_line"
    assert err.length == 25
    assert err.digest == blake3(b"x" * 20 + b"y" * 5).digest()

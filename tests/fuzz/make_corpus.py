"""Write the seed corpus of tests/fuzz/fuzz_gwcore.c into tests/fuzz/corpus/.

Each seed is CONFIG_BYTES (6) bytes that choose the harness's configuration,
then the received buffer. `python tests/fuzz/make_corpus.py` rewrites the
seeds below (files named seed-*); entries kept from fuzzing runs (crash-*,
other names) are left alone.
"""

from __future__ import annotations

import json
import pathlib
import sys

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

# Configuration byte 0: bit 0 clock unsynced, bits 1-2 redaction (0 off,
# 1 keys, 2 keys and cards, 3 keys, cards and a fourth literal), bit 3 a small
# max_line_bytes (byte 4 + 1), bit 4 every call made twice, bit 5 output
# buffers already holding (byte 3 & 15) + 1 bytes, bit 6 the allocation
# numbered (byte 4 & 31) failing once.
UNSYNCED, KEYS, CARDS, SMALL_LINES, TWICE, PREFILLED, FAIL_ALLOC = 1, 2, 4, 8, 16, 32, 64
# Byte 1: bits 0-2 max_events (1, 2, 3, 5, 16, 64, 1000, unlimited), bits 3-5
# room. Byte 2: bits 0-2 unit_left (sizes 1, 120, 200, 400, 700, 4096, 1 MiB,
# unlimited), bit 3 segment_empty, bits 4-5 the first seq (1, 255, 2**32 - 1,
# a 64-bit one). Byte 3: the previous hash's seed. Byte 5: the head's variant.
UNLIMITED = 7 | 7 << 3  # max_events and room unlimited
UNIT_UNLIMITED = 7


def config(
    c0: int = 0,
    c1: int = UNLIMITED,
    c2: int = UNIT_UNLIMITED,
    c3: int = 0,
    c4: int = 0,
    c5: int = 3,
) -> bytes:
    return bytes([c0, c1, c2, c3, c4, c5])


def line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def event(i: int = 0, **extra: object) -> dict:
    return {
        "event_type": "user.login",
        "timestamp": f"2026-01-02T03:04:{i % 60:02d}Z",
        "user": "alice",
        "seq": i,
        **extra,
    }


def audit_event(i: int = 0) -> dict:
    """A nested audit record of about 650 bytes, as the audit trail sends them."""
    return event(
        i,
        event_type="record.update",
        actor={"id": 4711, "name": "Jane Example", "roles": ["clerk", "reviewer"]},
        target={"table": "invoices", "id": 90210, "path": "/ledger/2026/01/invoice-90210"},
        changes=[
            {
                "field": "amount",
                "old": {"value": 120.5, "currency": "EUR"},
                "new": {"value": 125.0, "currency": "EUR"},
            },
            {"field": "status", "old": "draft", "new": "approved"},
            {"field": "approver", "old": None, "new": {"id": 17, "name": "Max Mustermann"}},
        ],
        ip="192.0.2.10",
        session={"id": "c0ffee00-1234-5678-9abc-def012345678", "mfa": True, "age_s": 3600},
        note="quarterly review, see ticket OPS-1234",
    )


def nested(depth: int, array: bool = False) -> bytes:
    inner = b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) if array else b""
    if array:
        return b'{"event_type":"deep","v":' + inner + b"}\n"
    return b'{"a":' * (depth - 1) + b'{"event_type":"deep"}' + b"}" * (depth - 1) + b"\n"


SEEDS: dict[str, bytes] = {
    "plain": config() + line(event()),
    "plain-many": config() + b"".join(line(event(i)) for i in range(20)),
    # 9 bytes of CBOR per 3-byte float: the encoding outgrows the line (its
    # bound once missed floats, and this overflowed the frame buffer).
    "floats-outgrow-the-line": config() + b'{"a":[' + b",".join([b"1e5"] * 14_000) + b"]}\n",
    "plain-unsynced-twice": config(UNSYNCED | TWICE) + b"".join(line(event(i)) for i in range(3)),
    "audit-650": config() + line(audit_event()),
    "audit-many-small-room": config(c1=7 | 2 << 3, c2=3 | 8)
    + b"".join(line(audit_event(i)) for i in range(8)),
    "unit-120-many": config(c2=1 | 8) + b"".join(line(event(i)) for i in range(6)),
    "room-1-empty": config(c1=7 | 0 << 3, c2=7 | 8) + b"".join(line(event(i)) for i in range(4)),
    "budget-1": config(c1=0 | 7 << 3) + b"".join(line(event(i)) for i in range(5)),
    "budget-3-seq-64bit": config(c1=2 | 7 << 3, c2=7 | 3 << 4)
    + b"".join(line(event(i)) for i in range(7)),
    "seq-u32-edge": config(c2=7 | 2 << 4, c5=0) + b"".join(line(event(i)) for i in range(3)),
    "missing-fields": config()
    + b'{}\n{"event_type":""}\n{"timestamp":null}\n{"event_type":null}\n',
    "bad-types": config()
    + b'{"event_type":5,"timestamp":12}\n{"event_type":["x"],"timestamp":{"t":1}}\n'
    + b'{"event_type":"x","timestamp":"2026-02-30T00:00:00Z"}\n'
    + b'{"event_type":"x","timestamp":"2024-02-29t23:59:60.123456789+14:00"}\n',
    "event-id": config()
    + b'{"event_type":"x","event_id":""}\n{"event_type":"x","event_id":7}\n'
    + b'{"event_type":"x","event_id":"'
    + b"i" * 129
    + b'"}\n'
    + b'{"event_type":"x","event_id":"tab\\there"}\n{"event_type":"x","event_id":"ok-1"}\n'
    + line(event(1)),
    "crlf": config() + line(event(1))[:-1] + b"\r\n" + line(event(2))[:-1] + b"\r\n",
    "blank-lines": config() + b"\n \n\t\r\n\r\n" + line(event()) + b"   \n\n",
    "whitespace-around": config() + b'  \t{ "event_type" : "x" ,\t"n" : 1 }  \r\n',
    "escapes": config()
    + b'{"event_type":"esc","s":"q\\" b\\\\ s\\/ \\b\\f\\n\\r\\t","u":"\\u00e9\\u20ac\\u0000"}\n',
    "surrogates": config()
    + b'{"event_type":"s","ok":"\\ud83d\\ude00"}\n{"event_type":"s","lone":"\\ud800"}\n'
    + b'{"event_type":"s","low":"\\udc00\\ud800"}\n{"event_type":"s","cut":"\\ud83d"}\n',
    "numbers-edges": config()
    + b'{"event_type":"n","a":0,"b":-0,"c":999999999999999999,"d":-999999999999999999}\n'
    + b'{"event_type":"n","e":1000000000000000000,"f":-9223372036854775808}\n'
    + b'{"event_type":"n","g":18446744073709551615,"h":18446744073709551616}\n'
    + b'{"event_type":"n","i":1.5,"j":0.1,"k":1E+2,"l":-1e-400,"m":1e308,"n":1e309}\n'
    + b'{"event_type":"n","o":01}\n{"event_type":"n","p":-}\n{"event_type":"n","q":1.}\n'
    + b'{"event_type":"n","r":.5}\n{"event_type":"n","s":NaN,"t":Infinity}\n',
    "deep-32": config() + nested(32) + nested(32, array=True),
    "deep-33": config() + nested(33) + nested(33, array=True),
    "invalid-utf8": config()
    + b'{"event_type":"\xc0\xaf"}\n{"event_type":"\xed\xa0\x80"}\n{"event_type":"\xff"}\n'
    + b'{"event_type":"\xe2\x82"}\n{"event_type":"caf\xc3\xa9"}\n{"\xf0\x9f\x98\x80":1}\n'
    + b'{"event_type":"\xe0\x9f\xbf"}\n{"event_type":"\xf0\x8f\xbf\xbf"}\n'
    + b'{"s":"\xf4\x90\x80\x80"}\n'
    + b'{"event_type":"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"}\n',
    "overlong-small-limit": config(SMALL_LINES, c4=49)
    + b'{"event_type":"short"}\n'
    + line(event(0, pad="x" * 80))
    + b'{"event_type":"after"}\n'
    + b" " * 70
    + b"\n",
    "overlong-unterminated": config(SMALL_LINES, c4=15) + b'{"event_type":"x"}\n' + b"{" * 40,
    "long-string-60000": config() + b'{"event_type":"big","s":"' + b"abc" * 20000 + b'"}\n',
    "duplicate-keys": config() + b'{"event_type":"x","a":1,"a":2}\n{"o":{"k":1,"k":1}}\n',
    "wide-64-65": config()
    + line({"event_type": "w", **{f"k{i}": i for i in range(63)}})
    + line({"event_type": "w", **{f"k{i}": i for i in range(64)}}),
    "redact-keys": config(KEYS)
    + b'{"event_type":"r","password":"x"}\n{"event_type":"r","Api_Token":"x"}\n'
    + b'{"event_type":"r","o":{"my_secret":1}}\n{"event_type":"r","p\xc3\xa4ss":1}\n'
    + b'{"event_type":"r","pass\\u0077ord":1}\n{"event_type":"r","user":"password"}\n',
    "redact-cards": config(CARDS)
    + b'{"event_type":"c","n":"4111 1111 1111 1111"}\n'
    + b'{"event_type":"c","n":"4111-1111-1111-1112"}\n'
    + b'{"event_type":"c","n":"\\u0034111"}\n{"event_type":"c","n":1234567890123}\n'
    + b'{"event_type":"c","n":"123456789012"}\n',
    "redact-card-edges": config(CARDS)
    + b"".join(
        b'{"event_type":"c","v":"%s"}\n' % v
        for v in (
            b"4222222222222",  # 13 digits, Luhn-valid
            b"1234567890123",  # 13 digits, not
            b"4000000000000000006",  # 19, valid
            b"40000000000000000060",  # 20: a valid 19 inside, not at a group's edges
            b"+49 30 1234 5678 9012",
            b"6011-0009-9013-9424",
            b"6011--0009-9013-9424",
            b"x 4111 1111 1111 1111 2",
            b"id 9 4111111111111111",
        )
    )
    + b'{"event_type":"c","n":4222222222222}\n',
    "redact-all-literals": config(KEYS | CARDS | UNSYNCED)
    + b'{"event_type":"c","card_no":"x"}\n{"event_type":"c","CARD":1}\n'
    + line(audit_event()),
    "not-objects": config()
    + b'[1,2]\n"text"\n5\ntrue\nnull\n{\n}\n{"a":1} x\n{"a":1}{"b":2}\n{"a" 1}\n{"a":[1,]}\n',
    "hello-lines": config()
    + b'{"hello":{"app":"pos"}}\n{"hello":1}\n{"hello":1,"event_type":"x"}\n',
    "control-chars": config() + b'{"event_type":"a\x01b"}\n{"event_type":"a\tb"}\n{"e":"\x7f"}\n',
    "literals": config()
    + b'{"event_type":"l","t":true,"f":false,"z":null,"e":[],"o":{},"x":[{},[],[[]]]}\n'
    + b'{"event_type":"l","bad":tru}\n{"event_type":"l","bad":nul}\n',
    "unterminated-last": config() + line(event(1)) + b'{"event_type":"no newline"',
    "alloc-fails-first": config(FAIL_ALLOC, c4=0) + b"".join(line(event(i)) for i in range(3)),
    "alloc-fails-later-prefilled": config(FAIL_ALLOC | PREFILLED, c3=5, c4=3)
    + b"".join(line(audit_event(i)) for i in range(12))
    + nested(32)
    + line({"event_type": "a", "v": list(range(400))}),
    "prefilled-twice": config(PREFILLED | TWICE, c3=15)
    + b"".join(line(event(i)) for i in range(4)),
    "arrays-many": config() + line({"event_type": "a", "v": list(range(300))}),
}


def main() -> int:
    CORPUS.mkdir(exist_ok=True)
    for name, data in SEEDS.items():
        (CORPUS / f"seed-{name}").write_bytes(data)
    print(f"{len(SEEDS)} seeds in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

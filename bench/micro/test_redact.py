"""Redaction at ingest with the default configuration (`redact:` keys and card scanning on).

The server calls `Redactor.might_need(event, line)` on every event and walks the event
(`Redactor.event`) only when that says yes; each benchmark runs both, as the server does,
so "small" shows the fast path and "card" the full one (walk, regex, Luhn check, marker).
The walk changes events in place, so every round gets freshly decoded copies (outside
the timing). `extra_info["walked"]` says how many events took the walk.

"large_padded" is the large preset exactly as the load generator sends it, with ~120
spaces of padding before the newline: it shows what that padding costs the pre-check.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bench.loadgen import build_events
from gateway.config import RedactConfig
from gateway.ingest.redact import REDACTED_CARD, REDACTED_KEY, Redactor

# Fixed rounds (each round needs fresh events): about a second per preset at most.
ROUNDS = {"small": 1000, "audit": 500, "large": 300, "large_padded": 300, "card": 300}

# The specification's card number (docs/protocol.md, "Redaction"), to check the results.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)", re.ASCII)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def holds_card(event: dict[str, Any]) -> bool:
    return any(
        _luhn(re.sub(r"[ -]", "", m.group()))
        for text in _strings(event)
        for m in _CARD.finditer(text)
    )


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    config = RedactConfig()
    return Redactor(config.keys, config.cards, os.urandom(32), config.digest)


@pytest.mark.parametrize("preset", list(ROUNDS))
def test_redact(benchmark, items_per_call, corpus, redactor, preset):
    """might_need on every event, then the in-place walk where it asks for one."""
    if preset == "large_padded":
        raw = build_events("large")[: len(corpus.lines["large"])]
    else:
        raw = corpus.lines[preset]
    lines = [line.rstrip(b"\n") for line in raw]
    might_need, redact = redactor.might_need, redactor.event

    def run(events: list[dict[str, Any]]) -> tuple[int, list[list[str]]]:
        walked, flags = 0, []
        for event, line in zip(events, lines, strict=True):
            if might_need(event, line):
                walked += 1
                flags.append(redact(event))
            else:
                flags.append([])
        return walked, flags

    def setup() -> tuple[tuple[list[dict[str, Any]]], dict]:
        return ([json.loads(line) for line in lines],), {}

    walked, flags = benchmark.pedantic(run, setup=setup, rounds=ROUNDS[preset])
    expected = [holds_card(json.loads(line)) for line in lines]
    assert [REDACTED_CARD in f for f in flags] == expected
    assert not any(REDACTED_KEY in f for f in flags)
    if preset == "card":
        assert all(expected)
    benchmark.extra_info["walked"] = walked
    items_per_call(len(lines))

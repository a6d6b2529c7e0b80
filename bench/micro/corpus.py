"""The micro-benchmarks' inputs: the load generator's events, decoded and encoded.

The events are `bench.loadgen.build_events`'s, so these figures and `make bench` measure
the same objects: "small" (a ~180 B subscription event), "audit" (a ~600 B record change
with nested old_value/new_value) and "large" (an 8 KiB daily summary of 60-odd line
items). The load generator pads every line of a preset to one length with spaces before
the newline (so that it can send slices of one buffer); real clients do not, and the
padding need not be neutral (spaces are card-number separators to redaction's
pre-check), so the lines here are the same JSON without it. "card" adds small payment
events whose free text holds a Luhn-valid card number, the input that makes redaction
do real work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.loadgen import SIZES, build_events
from gateway.ingest.validate import validate_event
from gateway.ledger import entries

# Events per preset in a benchmarked call: enough that the timer's overhead vanishes,
# few enough that a call takes a millisecond or two at most. On a shared machine a
# longer call is always interrupted by other processes, so even its best round is
# inflated; a short one finds undisturbed rounds, and the min column shows them.
BATCH = {"small": 128, "audit": 64, "large": 8, "card": 32}

# Test card numbers (Visa, Mastercard, Visa, Amex), written as people type them.
CARDS = ("4111 1111 1111 1111", "5500-0000-0000-0004", "4012888888881881", "3782 822463 10005")

# A fixed receive time and connection source: the values do not affect the cost.
RECEIVED_US = 1_795_435_200_000_000
SOURCE = entries.encode_source("10.20.0.7", 50123, "crm", 1)


def unpadded_events(size: str) -> list[bytes]:
    """The first BATCH lines of a load generator preset, without their padding."""
    return [line.rstrip(b" \n") + b"\n" for line in build_events(size)[: BATCH[size]]]


def card_events() -> list[bytes]:
    """Small events as payments, each with a card number in a free-text note."""
    lines = []
    for i, line in enumerate(build_events("small")[: BATCH["card"]]):
        event = json.loads(line)
        event["event_type"] = "payment_succeeded"
        event["note"] = f"paid by card {CARDS[i % len(CARDS)]} at the counter"
        lines.append(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    return lines


@dataclass(frozen=True)
class Corpus:
    """Per preset: the JSON lines (with newline), the decoded events and their entry payloads."""

    lines: dict[str, list[bytes]]
    events: dict[str, list[dict[str, Any]]]
    payloads: dict[str, list[bytes]]


def build_corpus() -> Corpus:
    lines = {size: unpadded_events(size) for size in SIZES}
    lines["card"] = card_events()
    events = {preset: [json.loads(line) for line in batch] for preset, batch in lines.items()}
    payloads = {
        preset: [entries.encode_event(RECEIVED_US, SOURCE, e, validate_event(e)) for e in batch]
        for preset, batch in events.items()
    }
    return Corpus(lines, events, payloads)

"""Redaction at ingest: secrets and card numbers never reach the ledger.

Runs on the event object before it is encoded, hashed and stored, and on the
excerpt of a refused line (docs/protocol.md, "Redaction"):

- a value whose key matches a sensitive pattern (password, token, ...) is
  replaced, whatever its type, by a marker;
- every string, free text included, is scanned for payment card numbers (13
  to 19 digits, spaces or dashes allowed, Luhn-valid): each keeps only its
  last 4 digits;
- with a digest key, markers carry a keyed BLAKE3 of the removed value, so
  equal values can still be matched without being stored.

The entry's flags say what happened (`redacted_key`, `redacted_card`).
A fast pre-check on the raw line skips the walk for the common event that
has neither a sensitive key nor a long run of digits.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

from blake3 import blake3

REDACTED_KEY = "redacted_key"
REDACTED_CARD = "redacted_card"
# 13 to 19 digits, single spaces or dashes between them allowed (card numbers
# as people type them), not glued to other digits.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


# Distinct keys remembered with their verdict (apps reuse a few dozen keys).
KEY_CACHE_SIZE = 4096
# Digits, spaces and dashes become b"0", everything else b".": a card number
# is then a run of 13 b"0" that bytes.find spots at C speed.
_DIGIT_RUN_TABLE = bytes(0x30 if chr(b) in "0123456789 -" else 0x2E for b in range(256))
_RUN = b"0" * 13


def has_digit_run(line: bytes) -> bool:
    return line.translate(_DIGIT_RUN_TABLE).find(_RUN) >= 0


def str_has_digit_run(text: str) -> bool:
    """has_digit_run for text (digits are ASCII: the UTF-8 bytes tell the same)."""
    return len(text) >= 13 and has_digit_run(text.encode("utf-8", "surrogatepass"))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Redactor:
    def __init__(
        self, keys: tuple[str, ...], cards: bool, key: bytes, digest_values: bool = False
    ) -> None:
        self.patterns = [k.lower() for k in keys]
        self.cards = cards
        self.line_key = key  # 32 bytes, kept in the state directory
        self.digest_key = key if digest_values else None
        self._key_cache: dict[str, bool] = {}
        # The literal part of each pattern, for a cheap first look at an excerpt.
        self._literals = {
            max(re.split(r"[*?\[\]]", p), key=len).encode() for p in self.patterns
        } - {b""}

    def sensitive_key(self, key: str) -> bool:
        known = self._key_cache.get(key)
        if known is None:
            low = key.lower()
            known = any(fnmatch.fnmatchcase(low, p) for p in self.patterns)
            if len(self._key_cache) < KEY_CACHE_SIZE:
                self._key_cache[key] = known
        return known

    def keyed(self, digest: bytes) -> bytes:
        """A refused line's digest, keyed: equal lines still match, a secret in
        the line cannot be guessed back from it."""
        return blake3(digest, key=self.line_key).digest()

    def marker(self, what: str, value: Any) -> str:
        if self.digest_key is None:
            return f"[redacted {what}]"
        raw = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        digest = blake3(raw.encode(), key=self.digest_key).hexdigest()[:32]
        return f"[redacted {what} blake3k:{digest}]"

    def might_need(self, event: dict[str, Any], line: bytes) -> bool:
        """False when the event cannot hold anything to redact: the common case, in ~1 µs.

        A flat event is checked key by key (keys are cached); a nested one by
        its raw line, which holds every nested key: without the literal part
        of any pattern and without a run of 13 digit-or-separator characters,
        there is nothing to walk for.
        """
        sensitive = self.sensitive_key
        nested = False
        for key, value in event.items():
            if sensitive(key):
                return True
            if type(value) is dict or type(value) is list:
                nested = True
        if self.cards and has_digit_run(line):
            return True
        if nested:
            low = line.lower()
            return any(lit in low for lit in self._literals)
        return False

    def event(self, event: dict[str, Any]) -> list[str]:
        """Redact `event` in place; return the flags to add."""
        found: set[str] = set()
        self._walk(event, found)
        return sorted(found)

    def _walk(self, node: Any, found: set[str]) -> Any:
        """Redact in place; only values that change are written back (it is the hot path)."""
        kind = type(node)
        if kind is dict:
            sensitive = self.sensitive_key
            for key, value in node.items():
                if sensitive(key):
                    node[key] = self.marker("value", value)
                    found.add(REDACTED_KEY)
                    continue
                vkind = type(value)
                if vkind is dict or vkind is list:
                    self._walk(value, found)
                elif vkind is str and self.cards and len(value) >= 13:
                    new = self.text(value, found)
                    if new is not value:
                        node[key] = new
            return node
        if kind is list:
            for i, value in enumerate(node):
                new = self._walk(value, found)
                if new is not value:
                    node[i] = new
            return node
        if kind is str and self.cards and len(node) >= 13:
            return self.text(node, found)
        return node

    def text(self, text: str, found: set[str]) -> str:
        """Card numbers in free text keep their last 4 digits."""

        def replace(m: re.Match) -> str:
            digits = re.sub(r"[ -]", "", m.group())
            if not luhn_ok(digits):
                return m.group()
            found.add(REDACTED_CARD)
            return self.marker(f"card ****{digits[-4:]}", digits)

        if not str_has_digit_run(text):
            return text  # the common case: no run of 13 digits, no regex
        return _CARD.sub(replace, text)

    def excerpt(self, excerpt: bytes) -> tuple[bytes, bool]:
        """A refused line's excerpt, as text: sensitive "key": value pairs and card numbers."""
        low = excerpt.lower()
        if not any(lit in low for lit in self._literals) and not (
            self.cards and has_digit_run(excerpt)
        ):
            return excerpt, False  # nothing that could need it (most garbage)
        text = excerpt.decode("utf-8", "replace")
        found: set[str] = set()
        for pattern in self.patterns:
            # the glob as a regex that stays inside one JSON string
            key_re = "".join(
                '[^"\\\\]*' if ch == "*" else '[^"\\\\]' if ch == "?" else re.escape(ch)
                for ch in pattern
            )
            text, n = re.subn(
                r'("' + key_re + r'"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]]*)',
                lambda m: m.group(1) + '"[redacted value]"',
                text,
                flags=re.IGNORECASE,
            )
            if n:
                found.add(REDACTED_KEY)
        if self.cards:
            text = self.text(text, found)
        return text.encode(), bool(found)

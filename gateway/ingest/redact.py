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

Most events hold nothing to redact, and the full walk (which rebuilds
strings and checks each for card numbers) costs tens of microseconds on a
nested event, so `might_need` decides first, in a few: keys exactly, on the
decoded object, against cached verdicts; card numbers on the raw line, which
holds every string verbatim unless a `\\u` escape spells one differently (then
the walk runs). A card number in a string is a Luhn-valid match of the card
pattern in the line's bytes. A false "maybe" costs a walk, never a miss.
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
_CARD_PATTERN = r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"
_CARD = re.compile(_CARD_PATTERN, re.ASCII)
_CARD_BYTES = re.compile(_CARD_PATTERN.encode(), re.ASCII)
_SEPARATORS = re.compile(r"[ -]")


# Distinct keys remembered with their verdict (apps reuse a few dozen keys).
KEY_CACHE_SIZE = 4096
# Digits, spaces and dashes become b"0", everything else b".": a card number
# is then a run of 13 b"0" that bytes.find spots at C speed.
_DIGIT_RUN_TABLE = bytes(0x30 if chr(b) in "0123456789 -" else 0x2E for b in range(256))
_RUN = b"0" * 13


# A JSON \u00NN escape of a character that may appear in a key name.
_KEY_ESCAPE = re.compile(rb"\\u00(?:[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|5[fF]|2[dD])")


def _unescape(m: re.Match) -> bytes:
    return bytes([int(m.group(0)[2:], 16)])


def has_digit_run(line: bytes) -> bool:
    return line.translate(_DIGIT_RUN_TABLE).find(_RUN) >= 0


def str_has_digit_run(text: str) -> bool:
    """has_digit_run for text (digits are ASCII: the UTF-8 bytes tell the same)."""
    return len(text) >= 13 and has_digit_run(text.encode("utf-8", "surrogatepass"))


def _literal(pattern: str) -> str:
    """The longest run of plain characters in a glob, bracket expressions removed."""
    plain = re.sub(r"\[!?\]?[^\]]*\]", "*", pattern)
    return max(re.split(r"[*?\[\]]", plain), key=len)


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
        self._safe_keys: set[str] = set()  # the cache's non-sensitive keys, for one set test
        # For refused lines' excerpts (text, not objects): the longest literal
        # part of each pattern. A key matching the pattern contains it, so text
        # without any of them holds no sensitive key. A pattern without one
        # (say "*") could match anything: _all_keys, always look.
        literals = [_literal(p) for p in self.patterns]
        self._all_keys = "" in literals
        self._literals = {lit.encode() for lit in literals if lit.isascii()}
        self._folded = {lit.casefold() for lit in literals}

    def key_literals(self) -> tuple[bytes, ...] | None:
        """The ASCII literals a sensitive key must contain (lower case), or None when
        a pattern has none (any key may match). A key that is not ASCII may match
        through lower-casing, so callers screening keys by these must leave such
        keys to `sensitive_key`."""
        if self._all_keys:
            return None
        return tuple(sorted(self._literals))

    def sensitive_key(self, key: str) -> bool:
        known = self._key_cache.get(key)
        if known is None:
            low = key.lower()
            known = any(fnmatch.fnmatchcase(low, p) for p in self.patterns)
            if len(self._key_cache) < KEY_CACHE_SIZE:
                self._key_cache[key] = known
                if not known:
                    self._safe_keys.add(key)
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
        """False when `event` (decoded from `line`) holds nothing to redact: a few µs.

        Keys are checked exactly, on the decoded object, against cached
        verdicts; card numbers on the raw line (conservative: a false "maybe"
        costs a walk). tests/test_redact.py checks it against the walk.
        """
        # bytes.find rather than `in`, which first tries the needle as an
        # integer: raising and clearing that TypeError costs more than the search.
        if self.cards and (line.find(b"\\u") >= 0 or self.card_in_line(line)):
            return True  # an escape could spell digits: only the walk can tell
        if line.find(b"{", 1) < 0 and line.find(b"[") < 0:
            return not self.keys_safe(event)  # flat: one set test, nearly always
        stack: list[Any] = [event]
        while stack:
            node = stack.pop()
            if type(node) is dict:
                if not self.keys_safe(node):
                    return True
                values = node.values()
            else:
                values = node
            for value in values:
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        return False

    def keys_safe(self, node: dict[str, Any]) -> bool:
        """No key of this object (not looking deeper) is sensitive."""
        if self._safe_keys.issuperset(node):
            return True  # every key already known to be harmless
        sensitive = self.sensitive_key
        return not any(sensitive(key) for key in node)

    def key_literal_in_line(self, line: bytes) -> bool:
        """Could the text hold a sensitive key? (For excerpts: text, not an object.)"""
        if self._all_keys:
            return True
        if line.isascii():
            low = line.lower()
            return any(lit in low for lit in self._literals)
        # str.lower maps some non-ASCII letters to ASCII ones (the Kelvin sign
        # to "k"): compare case-folded text, which folds them the same way.
        folded = line.decode("utf-8", "replace").casefold()
        return any(lit in folded for lit in self._folded)

    def card_in_line(self, line: bytes) -> bool:
        """A Luhn-valid card number somewhere in the raw line's bytes."""
        runs = line.translate(_DIGIT_RUN_TABLE)
        start = runs.find(_RUN)
        # Run by run with bytes.find (a regex over the whole line backtracks at
        # every digit: ~50 µs for an 8 KiB event). A run is bounded by other
        # characters, so the card pattern's look-arounds see the same there.
        while start >= 0:
            end = runs.find(b".", start)
            if end < 0:
                end = len(runs)
            run = line[start:end]
            if len(run) - run.count(b" ") - run.count(b"-") >= 13:
                for m in _CARD_BYTES.finditer(run):
                    if luhn_ok(_SEPARATORS.sub("", m.group().decode())):
                        return True
            start = runs.find(_RUN, end)
        return False

    def event(self, event: dict[str, Any]) -> list[str]:
        """Redact `event` in place; return the flags to add."""
        found: set[str] = set()
        self._walk(event, found, "event_id")
        return sorted(found)

    def _walk(self, node: Any, found: set[str], plain: str = "") -> Any:
        """Redact in place; only values that change are written back (it is the hot path).

        `plain` names a key of this object whose text is never searched for card
        numbers: the top-level event_id, an identifier the client chose (a UUID
        can hold a Luhn-valid run of digits and dashes, and rewriting it would
        defeat deduplication). A sensitive-key rule still applies to it.
        """
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
                elif vkind is str and self.cards and len(value) >= 13 and key != plain:
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
            digits = _SEPARATORS.sub("", m.group())
            if not luhn_ok(digits):
                return m.group()
            found.add(REDACTED_CARD)
            return self.marker(f"card ****{digits[-4:]}", digits)

        if not str_has_digit_run(text):
            return text  # the common case: no run of 13 digits, no regex
        return _CARD.sub(replace, text)

    def excerpt(self, excerpt: bytes) -> tuple[bytes, bool]:
        """A refused line's excerpt, as text: sensitive "key": value pairs and card numbers.

        Keys are matched as JSON reads them: `\\u00NN` escapes of letters, digits,
        `_` and `-` are undone first (`"tok\\u0065n"` is the key `token`).
        """
        if excerpt.find(b"\\u") >= 0:
            excerpt = _KEY_ESCAPE.sub(_unescape, excerpt)
        if not self.key_literal_in_line(excerpt) and not (self.cards and has_digit_run(excerpt)):
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

"""Validation of event objects: flag what is wrong, never drop the event.

The listener this product replaces dropped or mangled events with missing
fields. Here every JSON object is stored; the problems found go into the
entry's `flags`, so reports and queries can single such events out.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

# Flags, in the order they are checked (docs/protocol.md lists them).
MISSING_EVENT_TYPE = "missing_event_type"
BAD_EVENT_TYPE = "bad_event_type"  # present but not a non-empty string
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"  # present but not an RFC 3339 date-time
BAD_EVENT_ID = "bad_event_id"  # present but not 1-128 printable ASCII characters
# A key repeated within one object (the last value is the one stored; every
# value is kept in the entry's `duplicate_keys`). Set by the intake, which has
# the parser's account of the repeats.
DUPLICATE_KEY = "duplicate_key"

# The protocol's limit on an event_id (docs/protocol.md): a UUID is 36
# characters; 128 holds any id scheme and stays short enough to log and print.
MAX_EVENT_ID_CHARS = 128

# RFC 3339 section 5.6 date-time: full-date "T" full-time with a mandatory
# offset; lower-case t/z and a space separator are accepted as the RFC's note
# allows. The pattern checks every field's range itself (second 60 is a leap
# second), so only days 29-31 need the calendar.
_RFC3339 = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]"
    r"(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d{1,9})?"
    r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,  # \d must not match other scripts' digits
)


def is_rfc3339(value: str) -> bool:
    m = _RFC3339.fullmatch(value)
    if m is None:
        return False
    day = m.group(3)
    if day > "28":
        year, month = int(m.group(1)), int(m.group(2))
        if int(day) > calendar.monthrange(year, month)[1]:
            return False
    return True


def valid_event_id(value: object) -> bool:
    """1-128 printable ASCII characters (space included)."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_EVENT_ID_CHARS
        and value.isascii()
        and value.isprintable()
    )


def validate_event(event: dict[str, Any]) -> list[str]:
    """The flags for one event object; an empty list means it is well formed."""
    flags: list[str] = []
    event_type = event.get("event_type")
    if event_type is None:
        flags.append(MISSING_EVENT_TYPE)
    elif not isinstance(event_type, str) or not event_type:
        flags.append(BAD_EVENT_TYPE)
    timestamp = event.get("timestamp")
    if timestamp is None:
        flags.append(MISSING_TIMESTAMP)
    elif not isinstance(timestamp, str) or not is_rfc3339(timestamp):
        flags.append(BAD_TIMESTAMP)
    if "event_id" in event and not valid_event_id(event["event_id"]):
        flags.append(BAD_EVENT_ID)
    return flags

"""Validation of event objects: flag what is wrong, never drop the event.

The listener this product replaces dropped or mangled events with missing
fields. Here every JSON object is stored; the problems found go into the
entry's `flags`, so reports and queries can single such events out.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

# Flags, in the order they are checked (docs/protocol.md lists them).
MISSING_EVENT_TYPE = "missing_event_type"
BAD_EVENT_TYPE = "bad_event_type"  # present but not a non-empty string
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"  # present but not an RFC 3339 date-time

# RFC 3339 section 5.6 date-time: full-date "T" full-time, with a mandatory offset.
# Lower-case t/z and a space separator are accepted as the RFC's note allows.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def is_rfc3339(value: str) -> bool:
    m = _RFC3339.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if second == 60:  # a leap second is valid RFC 3339; datetime cannot hold it
        second = 59
    try:
        _dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    offset = m.group(8)
    if len(offset) == 6 and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return False
    return True


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
    return flags

"""Event validation: flags, never drops; the RFC 3339 date-time check."""

from __future__ import annotations

from gateway.ingest.validate import (
    BAD_EVENT_TYPE,
    BAD_TIMESTAMP,
    MISSING_EVENT_TYPE,
    MISSING_TIMESTAMP,
    is_rfc3339,
    validate_event,
)

GOOD_TS = "2026-11-23T10:00:00Z"


def test_flag_names_are_the_documented_ones():
    assert (MISSING_EVENT_TYPE, BAD_EVENT_TYPE, MISSING_TIMESTAMP, BAD_TIMESTAMP) == (
        "missing_event_type",
        "bad_event_type",
        "missing_timestamp",
        "bad_timestamp",
    )


def test_well_formed_event_has_no_flags():
    assert validate_event({"event_type": "subscription_created", "timestamp": GOOD_TS}) == []
    assert validate_event({"event_type": "x", "timestamp": GOOD_TS, "extra": {"a": [1]}}) == []


def test_empty_object_has_both_missing_flags_in_order():
    assert validate_event({}) == ["missing_event_type", "missing_timestamp"]


def test_missing_event_type():
    assert validate_event({"timestamp": GOOD_TS}) == ["missing_event_type"]
    assert validate_event({"event_type": None, "timestamp": GOOD_TS}) == ["missing_event_type"]


def test_bad_event_type():
    for value in ["", 5, 1.5, True, False, [], ["x"], {}, {"a": "b"}]:
        assert validate_event({"event_type": value, "timestamp": GOOD_TS}) == ["bad_event_type"], (
            value
        )


def test_missing_timestamp():
    assert validate_event({"event_type": "x"}) == ["missing_timestamp"]
    assert validate_event({"event_type": "x", "timestamp": None}) == ["missing_timestamp"]


def test_bad_timestamp():
    for value in ["", "yesterday", "2026-11-23", 1700000000, 1.5, True, [], {}]:
        assert validate_event({"event_type": "x", "timestamp": value}) == ["bad_timestamp"], value


def test_bad_event_type_and_bad_timestamp_together():
    assert validate_event({"event_type": 7, "timestamp": "now"}) == [
        "bad_event_type",
        "bad_timestamp",
    ]
    assert validate_event({"event_type": "", "event": 1}) == ["bad_event_type", "missing_timestamp"]


def test_validation_does_not_modify_the_event():
    event = {"event_type": 7, "timestamp": "now", "n": [1]}
    validate_event(event)
    assert event == {"event_type": 7, "timestamp": "now", "n": [1]}


ACCEPTED = [
    "2026-11-23T10:00:00Z",
    "2026-11-23T10:00:00z",
    "2026-11-23t10:00:00Z",
    "2026-11-23t10:00:00z",
    "2026-11-23 10:00:00Z",
    "2026-11-23T10:00:00+00:00",
    "2026-11-23T10:00:00-00:00",
    "2026-11-23T10:00:00+05:30",
    "2026-11-23T10:00:00-08:00",
    "2026-11-23T10:00:00+23:59",
    "2026-11-23T10:00:00.5Z",
    "2026-11-23T10:00:00.123456Z",
    "2026-11-23T10:00:00.123456789+01:00",
    "2016-12-31T23:59:60Z",  # leap second
    "2016-12-31T18:59:60-05:00",
    "2024-02-29T00:00:00Z",  # leap year
    "2000-02-29T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-01-31T00:00:00Z",
]

REFUSED = [
    "2026-11-23T10:00:00",  # no offset
    "2026-11-23T10:00:00.5",
    "2026-13-01T00:00:00Z",  # month 13
    "2026-00-01T00:00:00Z",
    "2026-02-30T00:00:00Z",  # Feb 30
    "2023-02-29T00:00:00Z",  # not a leap year
    "1900-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-01-00T00:00:00Z",
    "2026-11-23T24:00:00Z",
    "2026-11-23T10:60:00Z",
    "2026-11-23T10:00:61Z",
    "2026-11-23T10:00:00+24:00",
    "2026-11-23T10:00:00+05:60",
    "2026-11-23T10:00:00+0530",
    "2026-11-23T10:00:00+05",
    "2026-11-23",  # date only
    "10:00:00Z",  # time only
    "2026-11-23T10:00Z",  # no seconds
    "2026-11-23T10:00:00.Z",
    "2026-11-23T10:00:00,5Z",
    "2026-11-23T1:00:00Z",
    "26-11-23T10:00:00Z",
    "+2026-11-23T10:00:00Z",
    "2026/11/23T10:00:00Z",
    "2026-11-23T10:00:00ZZ",
    " 2026-11-23T10:00:00Z",
    "2026-11-23T10:00:00Z ",
    "2026-11-23T10:00:00Z\n",
    "2026-11-23X10:00:00Z",
    "",
]


def test_rfc3339_accepted():
    for value in ACCEPTED:
        assert is_rfc3339(value), value
        assert validate_event({"event_type": "x", "timestamp": value}) == [], value


def test_rfc3339_refused():
    for value in REFUSED:
        assert not is_rfc3339(value), value
        assert validate_event({"event_type": "x", "timestamp": value}) == ["bad_timestamp"], value


def test_rfc3339_refuses_non_ascii_digits():
    # RFC 3339 digits are ASCII DIGIT; other Unicode decimal digits are not dates.
    for value in [
        "\uff12\uff10\uff12\uff16-11-23T10:00:00Z",  # fullwidth year
        "2026-11-2\u0663T10:00:00Z",  # Arabic-Indic digit in the day
        "2026-11-23T1\u0660:00:00Z",  # ... in the hour
        "2026-11-23T10:00:0\u0665Z",  # ... in the seconds
        "2026-11-23T10:00:00.\uff15Z",  # fullwidth fraction
        "2026-11-23T10:00:00+0\u096b:30",  # Devanagari digit in the offset
    ]:
        assert not is_rfc3339(value), value
        assert validate_event({"event_type": "x", "timestamp": value}) == ["bad_timestamp"], value


def test_non_string_timestamps_are_bad_not_errors():
    for value in [0, 20261123, -1, 1.0, True, False, ["2026-11-23T10:00:00Z"], {"t": 1}]:
        flags = validate_event({"event_type": "x", "timestamp": value})
        assert flags == ["bad_timestamp"], value

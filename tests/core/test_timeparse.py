from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from convergence.timeparse import MS_THRESHOLD, parse_time, parse_when, to_number

T12 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
MAX_S = 253_402_300_800.0  # 10000-01-01T00:00:00Z, the first instant refused


# -- parse_time: accepted forms ------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-05-01T12:00:00.250Z", T12 + 0.25),
    ("2024-05-01 12:00:00", T12),  # space separator, naive = UTC
    ("2024-05-01T07:30:00-04:30", T12),
    ("\t2024-05-01T12:00:00Z\n", T12),
    ("1970-01-01T00:00:00Z", 0.0),
    ("9999-12-31T23:59:59Z", MAX_S - 1),
    (0, 0.0),
    ("0", 0.0),
    ("1.7145648e9", T12),
    (np.float64(T12), T12),  # a numpy float64 is a float
])
def test_parse_time_known_answers(raw: Any, expected: float) -> None:
    assert parse_time(raw) == expected


def test_seconds_and_milliseconds_are_told_apart_at_the_threshold() -> None:
    assert MS_THRESHOLD == 1e11
    assert parse_time(99_999_999_999) == 99_999_999_999.0  # just below: seconds (year 5138)
    assert parse_time(100_000_000_000) == 100_000_000.0  # at the threshold: milliseconds
    assert parse_time("100000000000") == 100_000_000.0
    assert parse_time(T12 * 1000 + 500) == T12 + 0.5


def test_text_that_is_a_number_is_read_as_unix_seconds_not_as_a_basic_iso_date() -> None:
    # "20240501" is also ISO-8601 basic format; numeric text is always unix seconds
    assert parse_time("20240501") == 20_240_501.0


def test_the_range_ends_just_before_year_10000() -> None:
    assert parse_time((MAX_S - 1) * 1000) == MAX_S - 1
    with pytest.raises(ValueError, match=r"is outside 1970-01-01\.\.9999-12-31; check that the column"):
        parse_time(MAX_S * 1000)


# -- parse_time: refusals and their messages -----------------------------------------------
@pytest.mark.parametrize(("raw", "message"), [
    (None, "None is not a timestamp; use unix seconds or ISO-8601 text"),
    (True, "True is not a timestamp; use unix seconds or ISO-8601 text"),
    ([1], "[1] is not a timestamp; use unix seconds or ISO-8601 text"),
    (b"1714564800", "b'1714564800' is not a timestamp; use unix seconds or ISO-8601 text"),
    ("yesterday", "'yesterday' is neither unix seconds nor ISO-8601 (e.g. 2024-05-01T12:00:00Z)"),
    ("", "'' is neither unix seconds nor ISO-8601 (e.g. 2024-05-01T12:00:00Z)"),
    ("2024-13-01", "'2024-13-01' is neither unix seconds nor ISO-8601"),
    ("nan", "'nan' is not a finite timestamp"),
    (float("-inf"), "-inf is not a finite timestamp"),
    ("1e400", "'1e400' is not a finite timestamp"),
    (10**400, "is far too large for a timestamp"),
    (-1, "-1 is outside 1970-01-01..9999-12-31; check that the column holds unix seconds or "
         "ISO-8601 times"),
    ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z' is outside 1970-01-01..9999-12-31"),
    ("0001-01-01T00:00:00+01:00", "'0001-01-01T00:00:00+01:00' is outside 1970-01-01..9999-12-31"),
])
def test_parse_time_refusals_say_what_was_wrong(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_time(raw)


def test_numpy_integers_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"np\.int64\(1714564800\) is not a timestamp"):
        parse_time(np.int64(1_714_564_800))


def test_overlong_text_is_refused_by_length_and_quoted_shortened() -> None:
    with pytest.raises(ValueError) as err:
        parse_time("9" * 100)
    msg = str(err.value)
    assert msg == "'" + "9" * 56 + "... is 100 characters long; not a timestamp"


def test_length_limit_counts_the_stripped_text() -> None:
    padded = " " * 70 + "1714564800"
    assert parse_time(padded) == T12
    assert parse_time("1" * 10 + "." + "0" * 53) == 1_111_111_111.0  # 64 characters: allowed
    with pytest.raises(ValueError, match="is 65 characters long; not a timestamp"):
        parse_time("1" * 10 + "." + "0" * 54)


# -- to_number -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("4.5", 4.5), (" -2e3 ", -2000.0), (3, 3.0), (0.25, 0.25), ("0", 0.0), (np.float64(7.5), 7.5),
    (10**20, 1e20),
])
def test_to_number_known_answers(raw: Any, expected: float) -> None:
    v = to_number(raw)
    assert v == expected and type(v) is float


@pytest.mark.parametrize(("raw", "message"), [
    ("x", "'x' is not a number"),
    ("", "'' is not a number"),
    (False, "False is not a number"),
    (None, "None is not a number"),
    ({"a": 1}, "{'a': 1} is not a number"),
    (np.int64(2), "np.int64(2) is not a number"),
    ("nan", "'nan' is not finite"),
    (float("inf"), "inf is not finite"),
    ("-1e999", "'-1e999' is not finite"),
    (10**400, "... is too large"),
    ("1" * 65, "... is 65 characters long; not a number"),
])
def test_to_number_refusals_say_what_was_wrong(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        to_number(raw)


# -- parse_when: times a person types on the command line ---------------------------------

NOW = 1_773_457_920.0  # 2026-03-14T03:12:00Z


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW), ("-1d", NOW - 86400), ("-2h", NOW - 7200), ("-30m", NOW - 1800), ("-45s", NOW - 45),
    ("-1w", NOW - 7 * 86400), ("-1.5h", NOW - 5400), (" -2h ", NOW - 7200),
    ("2026-03-14T00:00:00Z", NOW - 11520), ("2026-03-14", NOW - 11520), ("1773457920", NOW),
])
def test_parse_when_accepts_relative_and_absolute_times(text: str, expected: float) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["-3y", "-h", "-1d2h", "--1d", "-1e3d", "yesterday", ""])
def test_parse_when_refuses_what_it_cannot_read_and_says_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time|neither unix seconds nor ISO-8601|not a timestamp"):
        parse_when(text, NOW)


def test_parse_when_refuses_a_relative_time_before_1970() -> None:
    with pytest.raises(ValueError, match="outside 1970-01-01"):
        parse_when("-99999999d", NOW)

"""Parsing timestamps and numbers from untrusted text: one implementation for every reader.

File replay, HTTP JSON polling and the ``timestamp,value`` CSV reader all accept the same
forms — unix seconds (or milliseconds, told apart by size) as numbers or text, and
ISO-8601 text (a naive time means UTC) — and refuse the same things with the same
messages.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

MS_THRESHOLD = 1e11  # numbers this large are milliseconds (1e11 s is the year 5138)
_MAX_TIME_S = 253_402_300_800.0  # 9999-12-31
_MAX_NUMBER_CHARS = 64


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def parse_time(raw: Any) -> float:
    """Unix seconds from unix seconds/milliseconds (number or text) or ISO-8601 text.

    Raises ``ValueError`` saying what was wrong.

    >>> parse_time("2024-05-01T12:00:00Z"), parse_time(1714564800), parse_time("1714564800000")
    (1714564800.0, 1714564800.0, 1714564800.0)
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: 'yesterday' is neither unix seconds nor ISO-8601 (e.g. 2024-05-01T12:00:00Z)
    """
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"{_short(raw)} is not a timestamp; use unix seconds or ISO-8601 text")
    number: float | None
    if isinstance(raw, str):
        s = raw.strip()
        if len(s) > _MAX_NUMBER_CHARS:
            raise ValueError(f"{_short(raw)} is {len(s)} characters long; not a timestamp")
        try:
            number = float(s)
        except ValueError:
            number = None
        if number is None:
            try:
                dt = datetime.fromisoformat(s)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=UTC)
                t = dt.timestamp()
            except (ValueError, OverflowError):
                raise ValueError(f"{_short(raw)} is neither unix seconds nor ISO-8601 "
                                 "(e.g. 2024-05-01T12:00:00Z)") from None
            return _in_range(raw, t)
    else:
        try:
            number = float(raw)
        except OverflowError:
            raise ValueError(f"{_short(raw)} is far too large for a timestamp") from None
    if not math.isfinite(number):
        raise ValueError(f"{_short(raw)} is not a finite timestamp")
    return _in_range(raw, number / 1000.0 if abs(number) >= MS_THRESHOLD else number)


_RELATIVE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_RELATIVE_RE = re.compile(r"^-(\d{1,9}(?:\.\d{1,6})?)([smhdw])$")


def parse_when(raw: str, now_s: float) -> float:
    """Unix seconds of a time a person typed: ``now``, a relative ``-N`` + ``s|m|h|d|w``
    (before ``now_s``), or anything :func:`parse_time` takes (ISO-8601, unix seconds).

    >>> now = parse_time("2024-05-02T12:00:00Z")
    >>> parse_when("-1d", now) == parse_time("2024-05-01T12:00:00Z"), parse_when("-90m", now) == now - 5400
    (True, True)
    >>> parse_when("now", now) == now, parse_when("2024-05-01", now) == parse_time("2024-05-01")
    (True, True)
    >>> try:
    ...     parse_when("-3y", now)
    ... except ValueError as exc:
    ...     print(str(exc)[:60])
    '-3y' is not a time: use ISO 8601 (2024-05-01T12:00:00Z), un
    """
    text = raw.strip() if isinstance(raw, str) else raw
    if text == "now":
        return float(now_s)
    if isinstance(text, str) and text.startswith("-"):
        m = _RELATIVE_RE.match(text)
        if m is None:
            raise ValueError(f"{_short(raw)} is not a time: use ISO 8601 (2024-05-01T12:00:00Z), "
                             "unix seconds, now, or -N followed by s, m, h, d or w (e.g. -2h, -1d)")
        return _in_range(raw, now_s - float(m.group(1)) * _RELATIVE_UNITS[m.group(2)])
    return parse_time(text)


def _in_range(raw: Any, t: float) -> float:
    if not 0.0 <= t < _MAX_TIME_S:
        raise ValueError(f"{_short(raw)} is outside 1970-01-01..9999-12-31; check that the column "
                         "holds unix seconds or ISO-8601 times")
    return t


def to_number(raw: Any) -> float:
    """A finite float from a number or numeric text (booleans are refused).

    >>> to_number("4.5"), to_number(3)
    (4.5, 3.0)
    """
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"{_short(raw)} is not a number")
    if isinstance(raw, str):
        if len(raw) > _MAX_NUMBER_CHARS:
            raise ValueError(f"{_short(raw)} is {len(raw)} characters long; not a number")
        try:
            v = float(raw.strip())
        except ValueError:
            raise ValueError(f"{_short(raw)} is not a number") from None
    else:
        try:
            v = float(raw)
        except OverflowError:
            raise ValueError(f"{_short(raw)} is too large") from None
    if not math.isfinite(v):
        raise ValueError(f"{_short(raw)} is not finite")
    return v

"""The event that flows everywhere, its validation, and dead-letter records.

An :class:`Event` is what a ground station saw: which station, what kind of source,
when (event time, unix seconds), a category, a numeric value, optional bounded
text, optional geo and an optional upstream ``source`` (publisher, symbol, sensor
id). Its ``event_id`` is a content hash, so a re-sent event is recognisably the same
and counted once.

Validation happens at the edge (:func:`validate_event`): sizes, types, ranges and
timestamps. A rejected input is never dropped silently; the caller turns the
:class:`ValidationError` into a :class:`DeadLetter` (see :func:`dead_letter`).

Examples
--------
>>> e = make_event("news-001", "osint_news", 1_700_000_000.0, "conflict", 1.0, text="x")
>>> again = make_event("news-001", "osint_news", 1_700_000_000.0, "conflict", 1.0, text="x")
>>> e.event_id == again.event_id
True
>>> validate_event({"station_id": "s1", "source_kind": "weather", "event_time_s": 1.0,
...                 "category": "c", "value": 1}, now_s=1.0)
Traceback (most recent call last):
...
convergence.schema.ValidationError: source_kind: 'weather' is not a known source kind; use one of ...
"""

from __future__ import annotations

import hashlib
import math
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

SCHEMA_VERSION = 1


class SourceKind(StrEnum):
    """What kind of source a station watches."""

    OSINT_NEWS = "osint_news"
    OSINT_SOCIAL = "osint_social"
    MARKET_PRICE = "market_price"
    MARKET_VOLUME = "market_volume"
    SENSOR = "sensor"


SOURCE_KINDS: tuple[SourceKind, ...] = tuple(SourceKind)
KIND_INDEX: dict[str, int] = {k.value: i for i, k in enumerate(SOURCE_KINDS)}
OSINT_KINDS: frozenset[SourceKind] = frozenset({SourceKind.OSINT_NEWS, SourceKind.OSINT_SOCIAL})
MARKET_KINDS: frozenset[SourceKind] = frozenset({SourceKind.MARKET_PRICE, SourceKind.MARKET_VOLUME})

_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_MAX_CATEGORY = 64
_MAX_SOURCE = 128
#: the longest item address an event carries
MAX_URL = 1024
_WEB_ADDRESS = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


def is_web_address(url: str) -> bool:
    """An ``http(s)`` address with a host and no whitespace or control characters.

    >>> is_web_address("https://wire.example.net/a?b=1"), is_web_address("javascript:alert(1)")
    (True, False)
    """
    return len(url) <= MAX_URL and bool(_WEB_ADDRESS.match(url)) and url.isprintable()
_MAX_ABS_VALUE = 1e15


@dataclass(frozen=True)
class Limits:
    """Edge validation limits (taken from :class:`convergence.settings.Settings`)."""

    max_text_chars: int = 2048
    max_future_s: float = 300.0
    max_age_s: float = 7 * 86400.0
    max_event_bytes: int = 16384

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_text_chars=settings.max_text_chars,
            max_future_s=settings.max_future_s,
            max_age_s=settings.max_age_s,
            max_event_bytes=settings.max_event_bytes,
        )


class ValidationError(ValueError):
    """An input failed validation. ``field`` names the culprit, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    """One observation by one ground station (see module docstring)."""

    event_id: str
    station_id: str
    source_kind: SourceKind
    event_time_s: float
    category: str
    value: float
    text: str | None = None
    lat: float | None = None
    lon: float | None = None
    source: str | None = None
    #: the item's own address (an article, a post), when the source has one: http(s) only
    url: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The wire/JSON form (``None`` fields omitted)."""
        d: dict[str, Any] = {
            "event_id": self.event_id,
            "station_id": self.station_id,
            "source_kind": self.source_kind.value,
            "event_time_s": self.event_time_s,
            "category": self.category,
            "value": self.value,
            "schema_version": self.schema_version,
        }
        for name in ("text", "lat", "lon", "source", "url"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        return d


def content_id(
    station_id: str,
    source_kind: str,
    event_time_s: float,
    category: str,
    value: float,
    text: str | None,
    lat: float | None,
    lon: float | None,
    source: str | None,
    url: str | None = None,
) -> str:
    """Content hash of an event: 16 hex chars of BLAKE2b over its canonical fields (an
    event without a ``url`` hashes as it did before events could carry one)."""
    fields: list[Any] = [SCHEMA_VERSION, station_id, source_kind, round(event_time_s, 6), category,
                         float(value), text, lat, lon, source]
    if url is not None:
        fields.append(url)
    canon = orjson.dumps(fields)
    return hashlib.blake2b(canon, digest_size=8).hexdigest()


def make_event(
    station_id: str,
    source_kind: str | SourceKind,
    event_time_s: float,
    category: str,
    value: float,
    *,
    text: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    source: str | None = None,
    url: str | None = None,
) -> Event:
    """Build a trusted event (from our own code) with its content-hash id."""
    kind = SourceKind(source_kind)
    t = float(event_time_s)
    # floats, as validate_event reads them back: lat=35 and lat=35.0 hash the same
    la = None if lat is None else float(lat)
    lo = None if lon is None else float(lon)
    eid = content_id(station_id, kind.value, t, category, float(value), text, la, lo, source, url)
    return Event(eid, station_id, kind, t, category, float(value), text, la, lo, source, url)


def _num(raw: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    v = raw.get(name)
    if v is None:
        if required:
            raise ValidationError(name, "is missing; every event needs it")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValidationError(name, f"{_short(v)} is not a number")
    f = float(v)
    if not math.isfinite(f):
        raise ValidationError(name, f"{_short(v)} is not finite")
    return f


def _text(raw: Mapping[str, Any], name: str, max_len: int, *, required: bool) -> str | None:
    v = raw.get(name)
    if v is None:
        if required:
            raise ValidationError(name, "is missing; every event needs it")
        return None
    if not isinstance(v, str):
        raise ValidationError(name, f"{_short(v)} is not a string")
    if required and not v.strip():
        raise ValidationError(name, "is empty")
    if len(v) > max_len:
        raise ValidationError(name, f"is {len(v)} characters long; the limit is {max_len}")
    return v


def _short(v: Any, n: int = 60) -> str:
    r = safe_repr(v, 4 * n)
    return r if len(r) <= n else r[: n - 3] + "..."


def validate_event(raw: Any, *, now_s: float, limits: Limits | None = None) -> Event:
    """Validate an untrusted mapping and return the :class:`Event`.

    Raises :class:`ValidationError` naming the field and what was wrong. ``now_s``
    is the receiver's clock, used only to reject absurd timestamps.
    """
    lim = limits or Limits()
    if not isinstance(raw, Mapping):
        raise ValidationError("event", f"expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ValidationError(
            "schema_version", f"{_short(version)} is not supported; this build reads {SCHEMA_VERSION}"
        )
    station = _text(raw, "station_id", 64, required=True)
    assert station is not None
    if not _ID_RE.match(station):
        raise ValidationError("station_id", f"{_short(station)} must match [A-Za-z0-9_.:-]{{1,64}}")
    kind_raw = raw.get("source_kind")
    if not isinstance(kind_raw, str) or kind_raw not in KIND_INDEX:
        raise ValidationError(
            "source_kind",
            f"{_short(kind_raw)} is not a known source kind; use one of "
            + ", ".join(k.value for k in SOURCE_KINDS),
        )
    t = _num(raw, "event_time_s", required=True)
    assert t is not None
    if t > now_s + lim.max_future_s:
        raise ValidationError(
            "event_time_s",
            f"{t:.3f} is {t - now_s:.0f} s in the future (limit {lim.max_future_s:.0f} s); "
            "check the station's clock",
        )
    if t < now_s - lim.max_age_s:
        raise ValidationError(
            "event_time_s",
            f"{t:.3f} is {now_s - t:.0f} s in the past (limit {lim.max_age_s:.0f} s); "
            "replay old data with a fresh clock offset",
        )
    category = _text(raw, "category", _MAX_CATEGORY, required=True)
    assert category is not None
    value = _num(raw, "value", required=True)
    assert value is not None
    if abs(value) > _MAX_ABS_VALUE:
        raise ValidationError("value", f"{value!r} is out of range (|value| <= 1e15)")
    text = _text(raw, "text", lim.max_text_chars, required=False)
    source = _text(raw, "source", _MAX_SOURCE, required=False)
    url = _text(raw, "url", MAX_URL, required=False)
    if url is not None and not is_web_address(url):
        raise ValidationError("url", f"{_short(url)} is not an http(s) address; leave url out "
                                     "when the item has no web page")
    lat = _num(raw, "lat", required=False)
    lon = _num(raw, "lon", required=False)
    if (lat is None) != (lon is None):
        raise ValidationError("lat/lon", "give both lat and lon, or neither")
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise ValidationError("lat", f"{lat} is outside [-90, 90]")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise ValidationError("lon", f"{lon} is outside [-180, 180]")
    eid = content_id(station, str(kind_raw), t, category, value, text, lat, lon, source, url)
    given = raw.get("event_id")
    if given is not None and given != eid:
        raise ValidationError(
            "event_id",
            f"{_short(given)} does not match the content hash {eid}; "
            "omit event_id or compute it with convergence.schema.content_id",
        )
    return Event(eid, station, SourceKind(kind_raw), t, category, value, text, lat, lon, source,
                 url)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input, kept with its reason so nothing is lost.

    Every field is bounded: ``payload`` is an excerpt of at most 4 KiB of text with the
    original's size in ``payload_size`` (bytes of a raw message, characters of text,
    bytes of the JSON form of a record); ``station_id`` is set only when the input
    named a *valid* station id (an oversized or malformed one stays in the payload
    excerpt); ``reason`` is at most 1,000 characters.
    """

    dead_letter_id: str
    stage: str
    reason: str
    field: str
    payload: str
    received_at_s: float
    station_id: str | None = None
    payload_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.dead_letter_id,
            "stage": self.stage,
            "reason": self.reason,
            "field": self.field,
            "payload": self.payload,
            "payload_size": self.payload_size,
            "received_at_s": self.received_at_s,
            "station_id": self.station_id,
        }


_MAX_PAYLOAD_KEPT = 4096
_MAX_REASON = 1000
_SAFE_REPR = reprlib.Repr()
_SAFE_REPR.maxlevel = 4
_SAFE_REPR.maxstring = _MAX_PAYLOAD_KEPT
_SAFE_REPR.maxother = 200


def safe_repr(value: Any, limit: int = _MAX_PAYLOAD_KEPT) -> str:
    """``repr`` that cannot recurse without bound or grow without bound (deeply nested or
    huge inputs come from strangers): nesting is cut at 4 levels, text at ``limit``.

    >>> safe_repr([[[[[[1]]]]]])
    '[[[[[...]]]]]'
    >>> len(safe_repr("x" * 100_000, limit=50))
    50
    """
    try:
        text = _SAFE_REPR.repr(value)
    except Exception as exc:  # a hostile __repr__ must not take the caller down
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return text[:limit]


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was when cut.

    >>> bounded("abc", 10), bounded("x" * 30, 20)
    ('abc', 'xxxxxx... (30 chars)')
    """
    if len(text) <= limit:
        return text
    tail = f"... ({len(text)} chars)"
    return text[: max(limit - len(tail), 0)] + tail


def _excerpt(payload: Any) -> tuple[str, int]:
    """(at most 4 KiB of text, the original size) for any rejected input."""
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        return raw[:_MAX_PAYLOAD_KEPT].decode("utf-8", errors="replace"), len(raw)
    if isinstance(payload, str):
        return payload[:_MAX_PAYLOAD_KEPT], len(payload)
    try:
        encoded = orjson.dumps(payload, default=safe_repr)
        return encoded[:_MAX_PAYLOAD_KEPT].decode("utf-8", errors="ignore"), len(encoded)
    except (TypeError, ValueError):  # too deep, non-str keys, ...: show what it was
        return safe_repr(payload), _approx_json_size(payload)


def _approx_json_size(value: Any) -> int:
    """About how many characters ``value`` takes as JSON, without recursion (it may be
    nested far deeper than Python's stack allows)."""
    size, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Mapping):
            size += 1 + 2 * len(v) if v else 2  # braces, colons, commas
            for k, item in v.items():
                stack.append(k)
                stack.append(item)
        elif isinstance(v, list | tuple):
            size += 1 + len(v) if v else 2  # brackets, commas
            stack.extend(v)
        elif isinstance(v, str):
            size += len(v) + 2
        else:
            size += len(safe_repr(v, 40))
    return size


def valid_station_id(value: Any) -> str | None:
    """``value`` when it is a well-formed station id, else ``None``.

    >>> valid_station_id("news-eu-001"), valid_station_id("x" * 100), valid_station_id(7)
    ('news-eu-001', None, None)
    """
    return value if isinstance(value, str) and _ID_RE.match(value) else None


def dead_letter(
    stage: str, payload: Any, error: ValidationError | str, *, received_at_s: float
) -> DeadLetter:
    """Turn a rejected input into a :class:`DeadLetter` with a deterministic id.

    The payload is kept as a bounded excerpt (4 KiB) with its original size, so a person
    can see what came in without the dead letter itself becoming too large to store or
    publish. Never raises on odd input (deeply nested, oversized, unprintable).
    """
    text, size = _excerpt(payload)
    if isinstance(error, ValidationError):
        field, reason = error.field, error.reason
    else:
        field, reason = "", str(error)
    reason = bounded(reason, _MAX_REASON)
    station = valid_station_id(payload.get("station_id")) if isinstance(payload, Mapping) else None
    dl_id = hashlib.blake2b(f"{stage}|{field}|{reason}|{text}".encode(errors="replace"),
                            digest_size=8).hexdigest()
    return DeadLetter(dl_id, stage, reason, field, text, received_at_s, station, size)

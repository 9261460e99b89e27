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
        for name in ("text", "lat", "lon", "source"):
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
) -> str:
    """Content hash of an event: 16 hex chars of BLAKE2b over its canonical fields."""
    canon = orjson.dumps(
        [SCHEMA_VERSION, station_id, source_kind, round(event_time_s, 6), category,
         float(value), text, lat, lon, source]
    )
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
) -> Event:
    """Build a trusted event (from our own code) with its content-hash id."""
    kind = SourceKind(source_kind)
    t = float(event_time_s)
    # floats, as validate_event reads them back: lat=35 and lat=35.0 hash the same
    la = None if lat is None else float(lat)
    lo = None if lon is None else float(lon)
    eid = content_id(station_id, kind.value, t, category, float(value), text, la, lo, source)
    return Event(eid, station_id, kind, t, category, float(value), text, la, lo, source)


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
    r = repr(v)
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
    lat = _num(raw, "lat", required=False)
    lon = _num(raw, "lon", required=False)
    if (lat is None) != (lon is None):
        raise ValidationError("lat/lon", "give both lat and lon, or neither")
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise ValidationError("lat", f"{lat} is outside [-90, 90]")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise ValidationError("lon", f"{lon} is outside [-180, 180]")
    eid = content_id(station, str(kind_raw), t, category, value, text, lat, lon, source)
    given = raw.get("event_id")
    if given is not None and given != eid:
        raise ValidationError(
            "event_id",
            f"{_short(given)} does not match the content hash {eid}; "
            "omit event_id or compute it with convergence.schema.content_id",
        )
    return Event(eid, station, SourceKind(kind_raw), t, category, value, text, lat, lon, source)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input, kept with its reason so nothing is lost."""

    dead_letter_id: str
    stage: str
    reason: str
    field: str
    payload: str
    received_at_s: float
    station_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.dead_letter_id,
            "stage": self.stage,
            "reason": self.reason,
            "field": self.field,
            "payload": self.payload,
            "received_at_s": self.received_at_s,
            "station_id": self.station_id,
        }


_MAX_PAYLOAD_KEPT = 4096


def dead_letter(
    stage: str, payload: Any, error: ValidationError | str, *, received_at_s: float
) -> DeadLetter:
    """Turn a rejected input into a :class:`DeadLetter` with a deterministic id.

    The payload is kept as text (truncated to 4 KiB), so a person can see what came in.
    """
    if isinstance(payload, bytes | bytearray):
        text = bytes(payload[:_MAX_PAYLOAD_KEPT]).decode("utf-8", errors="replace")
    elif isinstance(payload, str):
        text = payload[:_MAX_PAYLOAD_KEPT]
    else:
        try:
            text = orjson.dumps(payload, default=repr).decode()[:_MAX_PAYLOAD_KEPT]
        except TypeError:
            text = repr(payload)[:_MAX_PAYLOAD_KEPT]
    if isinstance(error, ValidationError):
        field, reason = error.field, error.reason
    else:
        field, reason = "", error
    station = payload.get("station_id") if isinstance(payload, Mapping) else None
    dl_id = hashlib.blake2b(f"{stage}|{field}|{reason}|{text}".encode(), digest_size=8).hexdigest()
    return DeadLetter(
        dl_id, stage, reason, field, text, received_at_s,
        station if isinstance(station, str) else None,
    )

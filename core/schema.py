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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
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


# -- many events at once: columns ----------------------------------------------------
#
# A stream carries thousands of events a second; one Python object per event, checked
# field by field, is where a worker's time went. The functions below do the same checks
# and the same content hash over whole columns. They accept only what the per-event path
# (:func:`validate_event`) certainly accepts, with the same ids; every other row is left
# to that path (:func:`screen_columns` says which), so reasons and dead letters stay
# exactly the per-event ones.

#: an upper bound on the JSON size of an event with only the known fields, beyond its
#: strings' lengths: keys and punctuation (< 140 bytes), five numbers of at most 32
#: characters, "null" for absent strings; each string character takes at most 6 bytes
#: (``\u00XX``), so ``_SIZE_BASE + 6 * characters`` bounds ``len(orjson.dumps(item))``.
_SIZE_BASE = 512
_EXACT_INT = 2.0 ** 52
_ROUND_BY_HAND = 48  # fewer values than this: one by one, cheaper than numpy's set-up
#: below this, consecutive floats are less than a millionth apart (2**-20 at most)
_SIX_DECIMALS = 2.0 ** 33
_BLAKE_OPEN = hashlib.blake2b(b"[", digest_size=8)  # a content hash's state after "["
_OK_CACHE_MAX = 65_536
_station_ok_cache: dict[Any, bool] = {}
_category_ok_cache: dict[Any, bool] = {}


def round6(t: Any) -> list[float]:
    """``[round(x, 6) for x in t]``, bit for bit, faster.

    A value already at six decimals (``x == rint(x * 1e6) / 1e6``, below 2**33 where a
    float resolves a millionth) is its own rounding, as stations' clocks usually give.
    Otherwise ``rint(x * 1e6) / 1e6`` picks the integer Python's correctly rounded
    ``round`` picks unless the product's own rounding (at most half a unit in its last
    place) could have moved it across a half; those rare values, and values too large for
    the shortcut, go through ``round`` itself.

    >>> round6([1.5, 1_800_000_000.1234565, 2.0000005, -1e-9])
    [1.5, 1800000000.123456, 2.000001, -0.0]
    >>> import random
    >>> xs = [random.uniform(-2e9, 2e9) for _ in range(1000)]
    >>> round6(xs) == [round(x, 6) for x in xs], round6(xs[:5]) == [round(x, 6) for x in xs[:5]]
    (True, True)
    """
    if len(t) < _ROUND_BY_HAND:
        return [x if -_SIX_DECIMALS < x < _SIX_DECIMALS and round(x * 1e6) / 1e6 == x
                else round(x, 6) for x in map(float, t)]
    x = np.asarray(t, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        y = x * 1e6
        rounded = np.rint(y) / 1e6
        clean = (np.abs(x) < _SIX_DECIMALS) & (rounded == x)
        ay = np.abs(y)
        frac = y - np.floor(y)
        risky = ~clean & (~(ay < _EXACT_INT) | (np.abs(frac - 0.5) <= 0.5 * np.spacing(ay)))
        out: list[float] = rounded.tolist()
    for i in np.flatnonzero(risky).tolist():
        out[i] = round(float(x[i]), 6)
    return out


def content_digests(station_id: Sequence[str], source_kind: Sequence[str],
                    event_time_s: Any, category: Sequence[str], value: Any,
                    text: Sequence[str | None], lat: Sequence[float | None],
                    lon: Sequence[float | None], source: Sequence[str | None]) -> bytes:
    """:func:`content_id` of many events: their 8-byte BLAKE2b digests, concatenated.

    The canonical form is serialised once for all events and cut at the ``],[`` between
    them (a text that itself holds ``],[`` makes the count differ: then one at a time).
    Raises what :func:`orjson.dumps` raises for a value it cannot encode.

    >>> d = content_digests(["s1"], ["sensor"], [100.0], ["seismic"], [2.5], [None], [None],
    ...                     [None], [None])
    >>> d.hex() == content_id("s1", "sensor", 100.0, "seismic", 2.5, None, None, None, None)
    True
    """
    n = len(station_id)
    if n == 0:
        return b""
    t6 = round6(event_time_s)
    vals = list(map(float, value))
    # numbers as the per-event path reads them: floats (lat=35 and lat=35.0 hash the same)
    if list(lat).count(None) != n:
        lat = [None if x is None else float(x) for x in lat]
    if list(lon).count(None) != n:
        lon = [None if x is None else float(x) for x in lon]
    rows = list(zip([SCHEMA_VERSION] * n, station_id, source_kind, t6, category, vals, text,
                    lat, lon, source, strict=True))
    parts = orjson.dumps(rows)[2:-2].split(b"],[")
    out: list[bytes] = []
    append = out.append
    if len(parts) == n:
        # every row hashes as "[" + row + "]": start from the state after "[" (a copy costs
        # less than a new hash object with its parameters)
        fresh = _BLAKE_OPEN.copy
        for p in parts:
            h = fresh()
            h.update(p)
            h.update(b"]")
            append(h.digest())
    else:
        for row in rows:
            append(hashlib.blake2b(orjson.dumps(list(row)), digest_size=8).digest())
    return b"".join(out)


def digests_to_hashes(digests: bytes) -> npt.NDArray[np.uint64]:
    """Content digests as unsigned 64-bit integers (``int(event_id, 16)``).

    >>> digests_to_hashes(bytes.fromhex("00000000000000ff")).tolist()
    [255]
    """
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _ids(hashes: npt.NDArray[np.uint64]) -> list[str]:
    hx = hashes.astype(">u8").tobytes().hex()
    return [hx[i:i + 16] for i in range(0, len(hx), 16)]


def _opt_floats(a: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if x != x else x for x in a.tolist()]


@dataclass(frozen=True, eq=False)
class EventBatch:
    """Validated events as columns: what a worker hands from the wire to ingest.

    Strings stay Python lists (a batch holds few distinct ones); numbers are numpy arrays;
    ``lat``/``lon`` are NaN where an event has none; ``kind`` indexes
    :data:`SOURCE_KINDS`; ``event_hash`` is each event's content id as an integer.
    :meth:`events` gives the same :class:`Event` s the per-event path builds.

    Examples
    --------
    >>> a = make_event("s1", "sensor", 100.0, "seismic", 2.5)
    >>> b = make_event("s2", "osint_news", 101.0, "conflict", 1.0, text="x", lat=1, lon=2)
    >>> batch = EventBatch.from_events([a, b])
    >>> len(batch), batch.events() == [a, b], batch.event_ids() == [a.event_id, b.event_id]
    (2, True, True)
    >>> EventBatch.concat([batch.take([1]), batch.take([0])]).events() == [b, a]
    True
    """

    station_id: list[str]
    kind: npt.NDArray[np.int8]
    event_time_s: npt.NDArray[np.float64]
    category: list[str]
    value: npt.NDArray[np.float64]
    text: list[str | None]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    source: list[str | None]
    event_hash: npt.NDArray[np.uint64]
    #: each event's web address; ``None``: no event of the batch has one
    url: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.station_id)

    def urls(self) -> list[str | None]:
        """Each event's web address (``None`` where it has none)."""
        return self.url if self.url is not None else [None] * len(self.station_id)

    @classmethod
    def empty(cls) -> EventBatch:
        """A batch of no events."""
        f = np.zeros(0, np.float64)
        return cls([], np.zeros(0, np.int8), f, [], f, [], f, f, [], np.zeros(0, np.uint64))

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> EventBatch:
        """Columns of :class:`Event` objects (e.g. from the per-event path)."""
        n = len(events)
        return cls(
            [e.station_id for e in events],
            np.fromiter((KIND_INDEX[e.source_kind.value] for e in events), np.int8, n),
            np.fromiter((e.event_time_s for e in events), np.float64, n),
            [e.category for e in events],
            np.fromiter((e.value for e in events), np.float64, n),
            [e.text for e in events],
            np.fromiter((np.nan if e.lat is None else e.lat for e in events), np.float64, n),
            np.fromiter((np.nan if e.lon is None else e.lon for e in events), np.float64, n),
            [e.source for e in events],
            np.fromiter((int(e.event_id, 16) for e in events), np.uint64, n),
            [e.url for e in events] if any(e.url is not None for e in events) else None,
        )

    @classmethod
    def concat(cls, batches: Sequence[EventBatch]) -> EventBatch:
        """One batch of the events of ``batches``, in order."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls.empty()

        def lists(name: str) -> list[Any]:
            out: list[Any] = []
            for b in batches:
                out += getattr(b, name)
            return out

        def arrays(name: str) -> Any:
            return np.concatenate([getattr(b, name) for b in batches])

        urls = None
        if any(b.url is not None for b in batches):
            urls = [u for b in batches for u in b.urls()]
        return cls(lists("station_id"), arrays("kind"), arrays("event_time_s"),
                   lists("category"), arrays("value"), lists("text"), arrays("lat"),
                   arrays("lon"), lists("source"), arrays("event_hash"), urls)

    def take(self, idx: Sequence[int] | npt.NDArray[np.integer[Any]]) -> EventBatch:
        """The events at positions ``idx``, in that order."""
        ix = np.asarray(idx, dtype=np.int64)
        pos = ix.tolist()
        return EventBatch([self.station_id[i] for i in pos], self.kind[ix],
                          self.event_time_s[ix], [self.category[i] for i in pos],
                          self.value[ix], [self.text[i] for i in pos], self.lat[ix],
                          self.lon[ix], [self.source[i] for i in pos], self.event_hash[ix],
                          None if self.url is None else [self.url[i] for i in pos])

    def event_ids(self) -> list[str]:
        """Each event's ``event_id`` (16 hex characters)."""
        return _ids(self.event_hash)

    def events(self) -> list[Event]:
        """One :class:`Event` per row (for code that wants objects; costs what it saves)."""
        kinds = [SOURCE_KINDS[k] for k in self.kind.tolist()]
        return [Event(*row) for row in zip(
            self.event_ids(), self.station_id, kinds, self.event_time_s.tolist(), self.category,
            self.value.tolist(), self.text, _opt_floats(self.lat), _opt_floats(self.lon),
            self.source, self.urls(), strict=True)]


def _station_ok(v: Any) -> bool:
    """What :func:`validate_event` requires of a station id, cached by value."""
    ok = _station_ok_cache.get(v)
    if ok is None:
        ok = (isinstance(v, str) and bool(v.strip()) and len(v) <= 64
              and _ID_RE.match(v) is not None)
        if len(_station_ok_cache) >= _OK_CACHE_MAX:
            _station_ok_cache.clear()
        _station_ok_cache[v] = ok
    return ok


def _category_ok(v: Any) -> bool:
    ok = _category_ok_cache.get(v)
    if ok is None:
        ok = isinstance(v, str) and bool(v.strip()) and len(v) <= _MAX_CATEGORY
        if len(_category_ok_cache) >= _OK_CACHE_MAX:
            _category_ok_cache.clear()
        _category_ok_cache[v] = ok
    return ok


def _floats(col: Sequence[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
    """A numeric column as floats (``None`` as NaN), and which rows converted (``None``:
    all; an integer too large for a float does not)."""
    try:
        return np.array([np.nan if x is None else x for x in col], dtype=np.float64), None
    except (OverflowError, TypeError, ValueError):
        out = np.full(len(col), np.nan)
        good = np.ones(len(col), dtype=bool)
        for i, x in enumerate(col):
            try:
                out[i] = np.nan if x is None else float(x)
            except (OverflowError, TypeError, ValueError):
                good[i] = False
        return out, good


def _lengths(col: Sequence[str | None]) -> npt.NDArray[np.int64]:
    return np.fromiter((0 if s is None else len(s) for s in col), np.int64, len(col))


def _only(col: Sequence[Any], types: frozenset[type]) -> npt.NDArray[np.bool_] | None:
    """Rows whose value is of one of exactly ``types`` (``None`` when all are)."""
    if set(map(type, col)) <= types:
        return None
    return np.fromiter((type(v) in types for v in col), bool, len(col))


_STR: frozenset[type] = frozenset({str})
_OPT_STR: frozenset[type] = frozenset({str, type(None)})
_NUM: frozenset[type] = frozenset({float, int})
_OPT_NUM: frozenset[type] = frozenset({float, int, type(None)})
_INT: frozenset[type] = frozenset({int})


def _all_pass(station_id: Sequence[Any], source_kind: Sequence[Any],
              event_time_s: Sequence[Any], category: Sequence[Any], value: Sequence[Any],
              text: Sequence[Any], lat: Sequence[Any], lon: Sequence[Any],
              source: Sequence[Any], event_id: Sequence[Any], schema_version: Sequence[Any],
              now_s: float, lim: Limits) -> bool:
    """Whether every row certainly passes the checks before the content hash, judged on
    whole columns (a few C-level passes, no per-row mask); ``False`` means "look row by
    row", not "invalid". Columns hold exactly the wire's types (see :func:`screen_columns`)."""
    n = len(station_id)
    if list(schema_version).count(SCHEMA_VERSION) != n:
        return False
    if list(lat).count(None) != n or list(lon).count(None) != n:
        return False  # coordinates: row by row
    if not set(source_kind) <= _KIND_NAMES:
        return False
    try:  # finite sums: no NaN, no infinity, no integer too large for a float
        if not (math.isfinite(sum(event_time_s)) and math.isfinite(sum(value))):
            return False
    except OverflowError:
        return False
    if min(event_time_s) < now_s - lim.max_age_s or max(event_time_s) > now_s + lim.max_future_s:
        return False
    if min(value) < -_MAX_ABS_VALUE or max(value) > _MAX_ABS_VALUE:
        return False
    sids, cats = set(station_id), set(category)
    if not (all(map(_station_ok, sids)) and all(map(_category_ok, cats))):
        return False
    text_max = max(map(len, filter(None, text)), default=0)
    source_max = max(map(len, filter(None, source)), default=0)
    if text_max > lim.max_text_chars or source_max > _MAX_SOURCE:
        return False
    chars = (max(map(len, sids)) + max(map(len, cats)) + max(map(len, set(source_kind)))
             + text_max + source_max + max(map(len, filter(None, event_id)), default=0))
    return _SIZE_BASE + 6 * chars <= lim.max_event_bytes


_KIND_NAMES = frozenset(KIND_INDEX)


def _row_mask(station_id: Sequence[Any], source_kind: Sequence[Any], event_time_s: Sequence[Any],
              category: Sequence[Any], value: Sequence[Any], text: Sequence[Any],
              lat: Sequence[Any], lon: Sequence[Any], source: Sequence[Any],
              event_id: Sequence[Any], schema_version: Sequence[Any], now_s: float,
              lim: Limits) -> npt.NDArray[np.bool_]:
    """Row by row: which rows certainly pass the checks before the content hash."""
    n = len(station_id)
    ok = np.ones(n, dtype=bool)
    if list(schema_version).count(SCHEMA_VERSION) != n:
        ok &= np.fromiter((v == 1 and type(v) is int for v in schema_version), bool, n)
    bad_ids = {s for s in set(station_id) if not _station_ok(s)}
    if bad_ids:
        ok &= np.fromiter((s not in bad_ids for s in station_id), bool, n)
    ok &= np.fromiter((KIND_INDEX.get(k, -1) for k in source_kind), np.int8, n) >= 0
    t, t_ok = _floats(event_time_s)
    v, v_ok = _floats(value)
    for conv in (t_ok, v_ok):
        if conv is not None:
            ok &= conv
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(t) & (t <= now_s + lim.max_future_s) & (t >= now_s - lim.max_age_s)
        ok &= np.isfinite(v) & (np.abs(v) <= _MAX_ABS_VALUE)
    bad_cats = {c for c in set(category) if not _category_ok(c)}
    if bad_cats:
        ok &= np.fromiter((c not in bad_cats for c in category), bool, n)
    text_n = _lengths(text)
    source_n = _lengths(source)
    ok &= (text_n <= lim.max_text_chars) & (source_n <= _MAX_SOURCE)
    if list(lat).count(None) != n or list(lon).count(None) != n:
        no_la = np.fromiter((x is None for x in lat), bool, n)
        no_lo = np.fromiter((x is None for x in lon), bool, n)
        la, la_ok = _floats(lat)
        lo, lo_ok = _floats(lon)
        for conv in (la_ok, lo_ok):
            if conv is not None:
                ok &= conv
        with np.errstate(invalid="ignore"):  # a NaN coordinate fails the range: rejected
            ok &= (no_la == no_lo) & (no_la | ((la >= -90.0) & (la <= 90.0)))
            ok &= no_lo | ((lo >= -180.0) & (lo <= 180.0))
    # size: rows whose bound exceeds the limit are measured by the per-event path
    chars = (text_n + source_n + _lengths(station_id) + _lengths(category) + _lengths(event_id)
             + np.fromiter((len(k) if isinstance(k, str) else 0 for k in source_kind), np.int64, n))
    ok &= _SIZE_BASE + 6 * chars <= lim.max_event_bytes
    return ok


def _coords(col: Sequence[Any], none: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A coordinate column as floats: ``none`` (all NaN) when no event has one."""
    if list(col).count(None) == len(col):
        return none
    return _floats(col)[0]


def _typed(cols: Sequence[Sequence[Any]]) -> npt.NDArray[np.bool_] | None:
    """Rows whose every value is of exactly a wire type (``None``: all of them are)."""
    typed: npt.NDArray[np.bool_] | None = None
    for col, types in zip(cols, _TYPES, strict=True):
        good = _only(col, types)
        if good is not None:
            typed = good if typed is None else typed & good
    return None if typed is None or typed.all() else typed


def valid_rows(
    station_id: Sequence[Any], source_kind: Sequence[Any], event_time_s: Sequence[Any],
    category: Sequence[Any], value: Sequence[Any], text: Sequence[Any], lat: Sequence[Any],
    lon: Sequence[Any], source: Sequence[Any], event_id: Sequence[Any],
    schema_version: Sequence[Any], *, now_s: float, limits: Limits | None = None,
) -> npt.NDArray[np.bool_]:
    """Which rows (columns of any Python values) :func:`validate_event` certainly accepts,
    judged as :func:`screen_columns` judges them but without hashing: for a source that
    checks what it hands over (the edge hashes it). ``False`` leaves a row to the
    per-event check: a row given an ``event_id`` always (it must match the content), and
    one orjson cannot encode passes here (the caller encodes every row anyway).

    >>> valid_rows(["s1", "bad id!", "s1"], ["sensor"] * 3, [10.0, 10.0, "10"], ["air"] * 3,
    ...            [1.0] * 3, [None] * 3, [None] * 3, [None] * 3, [None] * 3, [None] * 3, [1] * 3,
    ...            now_s=10.0).tolist()
    [True, False, False]
    """
    lim = limits or Limits()
    cols = (station_id, source_kind, event_time_s, category, value, text, lat, lon, source,
            event_id, schema_version)
    n = len(station_id)
    typed = _typed(cols)
    if typed is not None:
        keep = np.flatnonzero(typed)
        pos = keep.tolist()
        out = np.zeros(n, dtype=bool)
        if pos:
            out[keep[valid_rows(*([c[i] for i in pos] for c in cols), now_s=now_s,
                                limits=lim)]] = True
        return out
    if n == 0 or list(event_id).count(None) != n:
        return np.zeros(n, dtype=bool)
    if _all_pass(*cols, now_s, lim):
        return np.ones(n, dtype=bool)
    return _row_mask(*cols, now_s, lim)


def screen_columns(
    station_id: Sequence[Any], source_kind: Sequence[Any], event_time_s: Sequence[Any],
    category: Sequence[Any], value: Sequence[Any], text: Sequence[Any], lat: Sequence[Any],
    lon: Sequence[Any], source: Sequence[Any], event_id: Sequence[Any],
    schema_version: Sequence[Any], *, now_s: float, limits: Limits | None = None,
    exact_types: bool = True,
) -> tuple[EventBatch, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Validate and hash events given as columns (the known fields of each, nothing else).

    Returns ``(accepted, rows, undecided)``: the rows the per-event path certainly accepts
    as a batch (with the same ids) and their positions, and the positions of every other
    row - whatever is wrong with them, and in which order the per-event path would say so,
    is left to it (:func:`validate_event`).

    The usual batch, every row fine, is judged on whole columns (minimum and maximum
    time, the set of station ids, ...); only a batch with some doubtful row is looked at
    row by row. ``exact_types=False`` (columns built from arbitrary Python objects rather
    than by a typed decoder) first leaves every value that is not exactly
    ``str``/``float``/``int``/``None`` where those are expected to the per-event path.

    Examples
    --------
    >>> acc, rows, undecided = screen_columns(
    ...     ["s1", "bad id!"], ["sensor", "sensor"], [10.0, 10.0], ["air", "air"], [1.0, 2.0],
    ...     [None, None], [None, None], [None, None], [None, None], [None, None], [1, 1],
    ...     now_s=10.0)
    >>> acc.station_id, rows.tolist(), undecided.tolist()
    (['s1'], [0], [1])
    >>> acc.event_ids() == [make_event("s1", "sensor", 10.0, "air", 1.0).event_id]
    True
    """
    lim = limits or Limits()
    cols = (station_id, source_kind, event_time_s, category, value, text, lat, lon, source,
            event_id, schema_version)
    n = len(station_id)
    if n == 0:
        return EventBatch.empty(), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not exact_types:
        typed = _typed(cols)
        if typed is not None:
            # screen the well-typed rows only, keeping the columns aligned
            keep = np.flatnonzero(typed)
            pos = keep.tolist()
            acc, rows, und = screen_columns(*([c[i] for i in pos] for c in cols), now_s=now_s,
                                            limits=lim)
            undecided = np.sort(np.concatenate([np.flatnonzero(~typed), keep[und]]))
            return acc, keep[rows], undecided
    if _all_pass(*cols, now_s, lim):
        rows = np.arange(n, dtype=np.int64)
        sid, kinds, tt, cats, vv, texts, lats, lons, srcs, given, _ = (list(c) for c in cols)
    else:
        rows = np.flatnonzero(_row_mask(*cols, now_s, lim))
        pos = rows.tolist()
        sid, kinds, tt, cats, vv, texts, lats, lons, srcs, given, _ = (
            [c[i] for i in pos] for c in cols)
    m = len(sid)
    try:
        digests = content_digests(sid, kinds, tt, cats, vv, texts, lats, lons, srcs)
    except (TypeError, ValueError):  # a value orjson cannot encode: the per-event path says so
        return EventBatch.empty(), np.zeros(0, np.int64), np.arange(n, dtype=np.int64)
    if given.count(None) != m:
        hx = digests.hex()
        match = [g is None or g == hx[16 * i:16 * i + 16] for i, g in enumerate(given)]
        if not all(match):
            keep_pos = [i for i, good in enumerate(match) if good]
            rows = rows[keep_pos]
            sid, kinds, tt, cats, vv, texts, lats, lons, srcs = (
                [c[i] for i in keep_pos] for c in (sid, kinds, tt, cats, vv, texts, lats, lons,
                                                   srcs))
            digests = b"".join(digests[8 * i:8 * i + 8] for i in keep_pos)
    kind_of = {k: KIND_INDEX[k] for k in set(kinds)}
    none = np.full(len(sid), np.nan)  # shared by both coordinates when events have none
    batch = EventBatch(
        sid, np.fromiter(map(kind_of.__getitem__, kinds), np.int8, len(kinds)),
        np.array(tt, dtype=np.float64), cats, np.array(vv, dtype=np.float64), texts,
        _coords(lats, none), _coords(lons, none), srcs, digests_to_hashes(digests))
    if rows.size == n:
        return batch, rows, np.zeros(0, np.int64)
    undecided = np.setdiff1d(np.arange(n, dtype=np.int64), rows, assume_unique=True)
    return batch, rows.astype(np.int64), undecided


_TYPES: tuple[frozenset[type], ...] = (_STR, _STR, _NUM, _STR, _NUM, _OPT_STR, _OPT_NUM,
                                       _OPT_NUM, _OPT_STR, _OPT_STR, _INT)

"""HTTP JSON source: a URL that answers JSON, each item of its list one event record.

This module owns :class:`HttpJsonSource` and its field mapping (:func:`parse_mapping`,
:func:`map_item`, :func:`get_path`). Fetching (``If-None-Match`` / ``If-Modified-Since``,
timeouts, size cap, HTTP errors as ``SourceError``), item dedup and the poll loop come
from :mod:`~convergence.ground_stations.polling`; :class:`ConditionalGet`,
:class:`Fetched`, :class:`SeenHashes`, :func:`content_hash`, :func:`host_of` and
``USER_AGENT`` are re-exported from there for callers that import them from here.

Bad input becomes dead letters as :mod:`~convergence.ground_stations.polling` describes:
an item the mapping cannot read names the item and the field; a body that is not JSON,
lacks ``items_path`` or holds no list there counts as unreadable, and
``max_unreadable`` of those in a row make ``poll()`` raise ``SourceError``.

Mapping
-------
Keys are event fields (``event_time_s``, ``category``, ``value``, ``text``, ``lat``,
``lon``, ``source``, ``url``: the item's own web page); values are dotted paths into
one item (``geo.lat``; a number indexes a list: ``geometry.coordinates.1``) or constants written ``=quake`` /
``=1.5``. Fields left out of the mapping default to: ``event_time_s`` = the poll's
clock, ``value`` = 1.0, ``source`` = the URL's host; ``category`` must be given. A
mapped ``event_time_s``, ``category`` or ``value`` missing from an item is a dead
letter; a mapped optional field missing from an item is simply left out. Without a
mapping the items must already be events: every field maps to its own name, so
``event_time_s``, ``category`` and ``value`` are required, as in the schema.

Examples
--------
>>> rules = parse_mapping({"category": "=quake", "value": "properties.mag",
...                        "event_time_s": "properties.time", "lat": "geometry.coordinates.1",
...                        "lon": "geometry.coordinates.0", "text": "properties.title"})
>>> item = {"properties": {"mag": 4.6, "time": 1714564800000, "title": "M 4.6 - Crete"},
...         "geometry": {"coordinates": [25.1, 35.2, 10.0]}}
>>> rec = map_item(item, rules, now_s=1714564900.0)
>>> rec["category"], rec["value"], rec["event_time_s"], rec["lat"], rec["lon"]
('quake', 4.6, 1714564800.0, 35.2, 25.1)
>>> get_path({"data": {"items": [1, 2]}}, "data.items")
[1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from convergence.ground_stations.polling import USER_AGENT as USER_AGENT  # re-exported, as before
from convergence.ground_stations.polling import (
    ConditionalGet,
    Fetched,
    PolledSource,
    SeenHashes,
    content_hash,
    host_of,
)
from convergence.schema import Limits, ValidationError
from convergence.stations import StationInfo
from convergence.timeparse import parse_time, to_number

EVENT_FIELDS = ("event_time_s", "category", "value", "text", "lat", "lon", "source", "url")
_NUMERIC = frozenset({"event_time_s", "value", "lat", "lon"})
_REQUIRED_WHEN_MAPPED = frozenset({"event_time_s", "category", "value"})
#: without a mapping, items already carry the event field names
IDENTITY_MAPPING: dict[str, str] = {f: f for f in EVENT_FIELDS}


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


# -- mapping ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FieldRule:
    """Where one event field comes from: a path into the item, or a constant."""

    field: str
    path: tuple[str, ...] | None = None
    constant: Any = None

    def describe(self) -> str:
        return ".".join(self.path) if self.path is not None else f"={self.constant}"


def parse_mapping(mapping: Mapping[str, str]) -> dict[str, FieldRule]:
    """Check a field mapping and compile it (``ValueError`` naming the bad entry)."""
    rules: dict[str, FieldRule] = {}
    for field, spec in mapping.items():
        if field not in EVENT_FIELDS:
            raise ValueError(f"mapping key {field!r} is not an event field; use "
                             + ", ".join(EVENT_FIELDS))
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"mapping for {field!r} must be a dotted path or '=constant', got {spec!r}")
        if spec.startswith("="):
            const: Any = spec[1:]
            if field in _NUMERIC:
                try:
                    const = to_number(const)
                except ValueError:
                    raise ValueError(f"mapping for {field!r}: constant {spec!r} is not a number") from None
            rules[field] = FieldRule(field, constant=const)
            continue
        parts = tuple(spec.split("."))
        if any(not p for p in parts):
            raise ValueError(f"mapping for {field!r}: path {spec!r} has an empty segment")
        rules[field] = FieldRule(field, path=parts)
    if "category" not in rules:
        raise ValueError("the mapping must say where 'category' comes from (a path, or a "
                         "constant such as '=quake')")
    return rules


def get_path(obj: Any, path: str | tuple[str, ...]) -> Any:
    """Follow a dotted path through objects and lists; ``KeyError`` names where it stopped."""
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    cur = obj
    for i, part in enumerate(parts):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdecimal() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(".".join(parts[: i + 1]))
    return cur


def map_item(item: Any, rules: Mapping[str, FieldRule], *, now_s: float,
             defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One item -> a record in the wire schema (``defaults`` supplies the station fields).

    Raises :class:`~convergence.schema.ValidationError` naming the event field and the
    item path for a missing required field or a value of the wrong type.
    """
    if not isinstance(item, Mapping):
        raise ValidationError("item", f"is a JSON {type(item).__name__}, not an object")
    rec: dict[str, Any] = {"event_time_s": now_s, "value": 1.0, **(defaults or {})}
    for field, rule in rules.items():
        if rule.path is None:
            raw = rule.constant
        else:
            try:
                raw = get_path(item, rule.path)
            except KeyError as exc:
                if field in _REQUIRED_WHEN_MAPPED:
                    raise ValidationError(field, f"path '{rule.describe()}' is missing from the item "
                                                 f"(stopped at '{exc.args[0]}'); fix the mapping or "
                                                 "the feed") from None
                continue
        if raw is None:
            if field in _REQUIRED_WHEN_MAPPED:
                raise ValidationError(field, f"path '{rule.describe()}' is null in the item")
            continue
        try:
            if field == "event_time_s":
                rec[field] = parse_time(raw)
            elif field in _NUMERIC:
                rec[field] = to_number(raw)
            elif isinstance(raw, str):
                rec[field] = raw
            elif isinstance(raw, int | float) and not isinstance(raw, bool):
                rec[field] = str(raw)  # numeric type codes and ids read as names
            else:
                raise ValueError(f"{_short(raw)} is a {type(raw).__name__}, not text")
        except ValueError as exc:
            raise ValidationError(field, f"at '{rule.describe()}': {exc}") from None
    return rec


# -- the source ------------------------------------------------------------------------
class HttpJsonSource(PolledSource):
    """Polls a URL answering JSON; each item of its list becomes one event record.

    Parameters
    ----------
    url
        The endpoint.
    station
        The station this source feeds (``station_id`` and ``source_kind`` of the records).
    mapping
        Event field -> dotted path or ``=constant`` (see the module docstring);
        ``None`` means items already use the event field names.
    items_path
        Dotted path to the list inside an object answer (e.g. ``data.items``,
        ``features``); ``None`` means the answer is the list itself.
    timeout_s, max_bytes, headers, dedup_size, max_unreadable, limits, max_rejects
        See :class:`~convergence.ground_stations.polling.PolledSource`.

    Examples
    --------
    >>> from convergence.stations import StationInfo
    >>> src = HttpJsonSource("https://quakes.example/api", StationInfo("q-1", "sensor"),
    ...                      {"category": "=quake", "value": "mag", "event_time_s": "ts"},
    ...                      items_path="data.items")
    >>> body = b'{"data": {"items": [{"mag": 4.2, "ts": 1714564800}, {"mag": "big", "ts": 1}]}}'
    >>> [(r["category"], r["value"], r["source"]) for r in src.records_from(body, 1714564900.0)]
    [('quake', 4.2, 'quakes.example')]
    >>> print(src.drain_rejects()[0].reason)
    https://quakes.example/api item 1: value at 'mag': 'big' is not a number
    """

    kind = "json"
    label = "JSON source"

    def __init__(self, url: str, station: StationInfo, mapping: Mapping[str, str] | None = None, *,
                 items_path: str | None = None, timeout_s: float = 10.0, max_bytes: int = 5_000_000,
                 headers: Mapping[str, str] | None = None, dedup_size: int = 10_000,
                 max_unreadable: int = 3, limits: Limits | None = None,
                 max_rejects: int = 10_000) -> None:
        self.mapping = dict(mapping) if mapping is not None else dict(IDENTITY_MAPPING)
        self.rules = parse_mapping(self.mapping)
        if items_path is not None and any(not p for p in items_path.split(".")):
            raise ValueError(f"items_path {items_path!r} has an empty segment; write e.g. 'data.items'")
        self.items_path = items_path
        super().__init__(url, station, accept="application/json", timeout_s=timeout_s,
                         max_bytes=max_bytes, headers=headers, dedup_size=dedup_size,
                         max_unreadable=max_unreadable, limits=limits, max_rejects=max_rejects)
        self._defaults = {"station_id": station.station_id, "source_kind": station.kind.value,
                          "source": host_of(url)}

    def _record(self, item: Any, now_s: float) -> dict[str, Any]:
        return map_item(item, self.rules, now_s=now_s, defaults=self._defaults)

    def _item_name(self, i: int, item: Any) -> str:
        return f"{self.url} item {i}"

    def records_from(self, body: bytes, now_s: float, *, truncated: bool = False,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Records from one JSON answer (bad items and bodies go to ``rejects``; never raises)."""
        if truncated:
            self._unreadable(body[:4096], f"answer is larger than max_bytes={self.http.max_bytes}; "
                             "raise max_bytes or ask the API for smaller pages", now_s)
            return []
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._unreadable(body, f"answer is not valid JSON ({exc}); is the URL an API endpoint?",
                             now_s)
            return []
        items: Any = doc
        if self.items_path is not None:
            try:
                items = get_path(doc, self.items_path)
            except KeyError as exc:
                self._unreadable(body, f"answer has no '{self.items_path}' (stopped at "
                                 f"'{exc.args[0]}'); check items_path", now_s, field="items_path")
                return []
        if not isinstance(items, list):
            where = f"'{self.items_path}'" if self.items_path else "the answer"
            hint = "" if self.items_path else "; set items_path to the list inside it (e.g. data.items)"
            self._unreadable(body, f"{where} is a JSON {type(items).__name__}, not a list{hint}",
                             now_s, field="items_path")
            return []
        self.unreadable_streak = 0
        # the item itself is its identity; a bug's dead letter keeps its repr
        return self.records_from_items(items, now_s, record=self._record, identity=_same_item,
                                       name=self._item_name, bug_payload=repr, limit=limit)

    async def records_from_fetched(self, fetched: Fetched, now_s: float) -> list[dict[str, Any]]:
        # orjson parses a few MB in milliseconds: no thread needed
        return self.records_from(fetched.body, now_s, truncated=fetched.truncated)

    def unreadable_message(self) -> str:
        last = self._rejects.items[-1].reason if self._rejects.items else "see dead letters"
        return (f"{self.url} answered unreadable JSON {self.unreadable_streak} polls in a row "
                f"(last: {last}); check the URL and items_path")


def _same_item(item: Any) -> Any:
    return item


__all__ = [
    "EVENT_FIELDS",
    "IDENTITY_MAPPING",
    "ConditionalGet",
    "Fetched",
    "FieldRule",
    "HttpJsonSource",
    "SeenHashes",
    "content_hash",
    "get_path",
    "host_of",
    "map_item",
    "parse_mapping",
]

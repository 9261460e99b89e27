"""HTTP JSON source, plus the HTTP polling pieces every network source shares.

This module owns :class:`HttpJsonSource` (a URL that answers JSON, mapped onto the event
schema by a small field mapping) and the parts :mod:`~convergence.ground_stations.rss`
reuses: :class:`ConditionalGet` (one URL fetched with ``If-None-Match`` /
``If-Modified-Since``, bounded body size and a hard timeout, HTTP failures turned into
:class:`~convergence.ground_stations.base.SourceError` naming the URL and status) and
:class:`SeenHashes` (bounded memory of item content hashes, so an item repeated across
polls is emitted once).

Bad input follows the dead-letter design described in
:mod:`~convergence.ground_stations.replay`: ``poll()`` never raises for bad items or a
malformed body — each becomes a dead letter in ``rejects``, drained by the caller with
``drain_rejects()``. Only when the URL cannot be read (timeout, connection refused,
HTTP 4xx/5xx) or has answered unreadable bodies ``max_unreadable`` polls in a row does
``poll()`` raise ``SourceError``, so the station agent's circuit breaker backs off.

Mapping
-------
Keys are event fields (``event_time_s``, ``category``, ``value``, ``text``, ``lat``,
``lon``, ``source``); values are dotted paths into one item (``geo.lat``; a number
indexes a list: ``geometry.coordinates.1``) or constants written ``=quake`` /
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

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp
import orjson

from convergence import __version__
from convergence.ground_stations.base import RejectBuffer, RejectingSource, SourceError, check_record
from convergence.schema import Limits, ValidationError
from convergence.stations import StationInfo
from convergence.timeparse import parse_time, to_number

log = logging.getLogger(__name__)

USER_AGENT = f"convergence-ground-station/{__version__}"
EVENT_FIELDS = ("event_time_s", "category", "value", "text", "lat", "lon", "source")
_NUMERIC = frozenset({"event_time_s", "value", "lat", "lon"})
_REQUIRED_WHEN_MAPPED = frozenset({"event_time_s", "category", "value"})
#: without a mapping, items already carry the event field names
IDENTITY_MAPPING: dict[str, str] = {f: f for f in EVENT_FIELDS}


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


# -- HTTP ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fetched:
    """A 2xx answer: the body (at most ``max_bytes``; ``truncated`` says if there was more)."""

    url: str
    status: int
    body: bytes
    content_type: str
    truncated: bool = False


class ConditionalGet:
    """One URL polled with conditional GET; remembers the validators of the last 200.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` URL.
    timeout_s
        Hard limit on the whole request, body included.
    max_bytes
        Bodies are read up to this size; a larger one comes back ``truncated``.
    headers
        Extra request headers (e.g. an API key).
    accept
        The ``Accept`` header.

    A new ``aiohttp`` session is opened per fetch: feeds are polled every few seconds
    at most, and a session bound to one event loop breaks when callers (tests, the
    probe command) run each poll in a fresh ``asyncio.run``.

    Examples
    --------
    >>> get = ConditionalGet("https://example.org/feed.xml", timeout_s=5.0)
    >>> get.etag, get.last_modified, get.request_headers()["User-Agent"].startswith("convergence")
    (None, None, True)
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_bytes: int = 5_000_000,
                 headers: Mapping[str, str] | None = None,
                 accept: str = "*/*") -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.url = url
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.headers = dict(headers or {})
        self.accept = accept
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.not_modified = 0

    def request_headers(self) -> dict[str, str]:
        h = {"User-Agent": USER_AGENT, "Accept": self.accept, **self.headers}
        if self.etag:
            h["If-None-Match"] = self.etag
        if self.last_modified:
            h["If-Modified-Since"] = self.last_modified
        return h

    async def fetch(self) -> Fetched | None:
        """The body, or ``None`` when nothing changed (304, or 204). Raises ``SourceError``."""
        url = self.url
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(url, headers=self.request_headers()) as resp:
                status = resp.status
                if status in (204, 304):
                    self.not_modified += 1
                    return None
                if status >= 400:
                    raise SourceError(self._status_message(status, resp.reason, resp.headers))
                chunks: list[bytes] = []
                size = 0
                truncated = False
                async for chunk in resp.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.max_bytes:
                        truncated = True
                        break
                body = b"".join(chunks)[: self.max_bytes]
                # Kept even for a truncated body: the same validators would fetch the same
                # oversized answer again, and it has been dead-lettered once already.
                self.etag = resp.headers.get("ETag")
                self.last_modified = resp.headers.get("Last-Modified")
                return Fetched(url, status, body, resp.headers.get("Content-Type", ""), truncated)
        except TimeoutError:
            raise SourceError(f"GET {url}: no complete answer within {self.timeout_s:g} s; the server is "
                              "slow or down. Check it, or raise the source's timeout_s") from None
        except aiohttp.ClientError as exc:
            raise SourceError(f"GET {url} failed: {type(exc).__name__}: {exc}; check the URL and "
                              "that the server is reachable from this host") from None

    def _status_message(self, status: int, reason: str | None, headers: Mapping[str, str]) -> str:
        head = f"GET {self.url} answered HTTP {status} {reason or ''}".rstrip()
        if status >= 500:
            return f"{head}: the server is failing; the station backs off and retries"
        if status == 429:
            after = headers.get("Retry-After")
            return f"{head}: rate limited" + (f" (Retry-After: {after})" if after else "") + \
                "; poll less often"
        if status in (401, 403):
            return f"{head}: not allowed; check the credentials/headers configured for this source"
        if status == 404:
            return f"{head}: no such resource; check the URL"
        return f"{head}; check the URL and the request headers"


class SeenHashes:
    """Content hashes of items already handled, forgetting the least recently seen past ``max_size``.

    An item still present in a feed is seen again on every poll, so it stays
    remembered; only items that left the feed age out.

    Examples
    --------
    >>> seen = SeenHashes(max_size=2)
    >>> [seen.add(h) for h in ("a", "b", "a", "c", "b")]   # "c" pushes out "b", not "a"
    [True, True, False, True, True]
    """

    def __init__(self, max_size: int = 10_000) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, h: object) -> bool:
        return h in self._seen

    def add(self, h: str) -> bool:
        """Remember ``h``; ``True`` if it was new."""
        if h in self._seen:
            self._seen.move_to_end(h)
            return False
        self._seen[h] = None
        if len(self._seen) > self.max_size:
            self._seen.popitem(last=False)
        return True


def content_hash(obj: Any) -> str:
    """16 hex chars of BLAKE2b over the canonical JSON of ``obj`` (keys sorted)."""
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=repr)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def host_of(url: str) -> str:
    """The URL's host name (the ``source`` of its events)."""
    return (urlparse(url).hostname or url)[:128]


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
class HttpJsonSource(RejectingSource):
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
    timeout_s, max_bytes, headers
        See :class:`ConditionalGet`.
    dedup_size
        How many item hashes to remember.
    max_unreadable
        After this many unreadable answers in a row, ``poll()`` raises ``SourceError``.
    limits, max_rejects
        Edge limits; undrained dead letters kept.

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

    def __init__(self, url: str, station: StationInfo, mapping: Mapping[str, str] | None = None, *,
                 items_path: str | None = None, timeout_s: float = 10.0, max_bytes: int = 5_000_000,
                 headers: Mapping[str, str] | None = None, dedup_size: int = 10_000,
                 max_unreadable: int = 3, limits: Limits | None = None,
                 max_rejects: int = 10_000) -> None:
        self.url = url
        self.station = station
        self.mapping = dict(mapping) if mapping is not None else dict(IDENTITY_MAPPING)
        self.rules = parse_mapping(self.mapping)
        if items_path is not None and any(not p for p in items_path.split(".")):
            raise ValueError(f"items_path {items_path!r} has an empty segment; write e.g. 'data.items'")
        self.items_path = items_path
        if max_unreadable < 1:
            raise ValueError(f"max_unreadable must be >= 1, got {max_unreadable}")
        self.max_unreadable = max_unreadable
        self.limits = limits or Limits()
        self.http = ConditionalGet(url, timeout_s=timeout_s, max_bytes=max_bytes, headers=headers,
                                   accept="application/json")
        self._seen = SeenHashes(dedup_size)
        self._rejects = RejectBuffer("source.json", station.station_id, max_rejects)
        self._defaults = {"station_id": station.station_id, "source_kind": station.kind.value,
                          "source": host_of(url)}
        self.unreadable_streak = 0
        self.duplicates = 0


    def _unreadable(self, payload: Any, field: str, reason: str, now_s: float) -> None:
        self.unreadable_streak += 1
        self._rejects.add(payload, field, f"{self.url}: {reason}", now_s=now_s)

    def records_from(self, body: bytes, now_s: float, *, truncated: bool = False,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Records from one JSON answer (bad items and bodies go to ``rejects``; never raises)."""
        if truncated:
            self._unreadable(body[:4096], "body", f"answer is larger than max_bytes="
                             f"{self.http.max_bytes}; raise max_bytes or ask the API for smaller pages",
                             now_s)
            return []
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._unreadable(body, "body", f"answer is not valid JSON ({exc}); is the URL an API "
                             "endpoint?", now_s)
            return []
        items: Any = doc
        if self.items_path is not None:
            try:
                items = get_path(doc, self.items_path)
            except KeyError as exc:
                self._unreadable(body, "items_path", f"answer has no '{self.items_path}' (stopped at "
                                 f"'{exc.args[0]}'); check items_path", now_s)
                return []
        if not isinstance(items, list):
            where = f"'{self.items_path}'" if self.items_path else "the answer"
            hint = "" if self.items_path else "; set items_path to the list inside it (e.g. data.items)"
            self._unreadable(body, "items_path", f"{where} is a JSON {type(items).__name__}, not a "
                             f"list{hint}", now_s)
            return []
        self.unreadable_streak = 0
        out: list[dict[str, Any]] = []
        for i, item in enumerate(items if limit is None else items[:limit]):
            h = content_hash(item)
            if not self._seen.add(h):
                self.duplicates += 1
                continue
            try:
                rec = map_item(item, self.rules, now_s=now_s, defaults=self._defaults)
                check_record(rec, now_s=now_s, limits=self.limits)
            except ValidationError as err:
                self._rejects.add(item, err.field, f"{self.url} item {i}: {err.field} {err.reason}",
                                  now_s=now_s)
                continue
            except Exception as exc:  # a bug must not stop the feed: keep the item, say so loudly
                log.exception("JSON source %s: unexpected error on item %d", self.url, i)
                self._rejects.add(repr(item), "item", f"{self.url} item {i}: unexpected "
                                  f"{type(exc).__name__} ({exc}); this is a bug in the JSON source, "
                                  "please report it with this item", now_s=now_s)
                continue
            out.append(rec)
        return out

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        fetched = await self.http.fetch()
        if fetched is None:
            return []
        # orjson parses a few MB in milliseconds: no thread needed
        out = self.records_from(fetched.body, now_s, truncated=fetched.truncated)
        if self.unreadable_streak >= self.max_unreadable:
            last = self._rejects.items[-1].reason if self._rejects.items else "see dead letters"
            raise SourceError(f"{self.url} answered unreadable JSON {self.unreadable_streak} polls in "
                              f"a row (last: {last}); check the URL and items_path")
        return out


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

"""The HTTP polling pieces every network source shares.

This module owns :class:`ConditionalGet` (one URL fetched with ``If-None-Match`` /
``If-Modified-Since``, bounded body size and a hard timeout, HTTP failures turned into
:class:`~convergence.ground_stations.base.SourceError` naming the URL and status) and the
:class:`Fetched` answer it returns, :class:`SeenHashes` (bounded memory of item content
hashes, so an item repeated across polls is emitted once) with :func:`content_hash`,
:func:`host_of` and :data:`USER_AGENT`, and :class:`PolledSource`, the base of the
sources that poll a URL (:class:`~convergence.ground_stations.rss.RssSource`,
:class:`~convergence.ground_stations.http_json.HttpJsonSource`).

:class:`PolledSource` holds what those sources do alike: the constructor options
(``timeout_s``, ``max_bytes``, ``headers``, ``dedup_size``, ``max_unreadable``,
``limits``, ``max_rejects``), the per-item loop (content-hash dedup, record built and
checked, a bad item a dead letter naming it, a bug in the source a dead letter saying
so) and the ``poll()`` template. A subclass says how a fetched body becomes records and
what to say when the URL keeps answering unreadable bodies.

Bad input follows the dead-letter design described in
:mod:`~convergence.ground_stations.replay`: ``poll()`` never raises for bad items or a
malformed body — each becomes a dead letter in ``rejects``, drained by the caller with
``drain_rejects()``. Only when the URL cannot be read (timeout, connection refused,
HTTP 4xx/5xx) or has answered unreadable bodies ``max_unreadable`` polls in a row does
``poll()`` raise ``SourceError``, so the station agent's circuit breaker backs off.

Examples
--------
>>> content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
True
>>> host_of("https://news.example:8443/rss?x=1")
'news.example'
"""

from __future__ import annotations

import hashlib
import logging
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import aiohttp
import orjson

from convergence import __version__
from convergence.ground_stations.base import RejectBuffer, RejectingSource, SourceError, check_record
from convergence.schema import Limits, ValidationError
from convergence.stations import StationInfo

log = logging.getLogger(__name__)

USER_AGENT = f"convergence-ground-station/{__version__}"

_Item = TypeVar("_Item")


def _same(x: Any) -> Any:
    return x


# -- HTTP ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fetched:
    """A 2xx answer: the body (at most ``max_bytes``; ``truncated`` says if there was more)
    and the validators it came with (``etag``, ``last_modified``; see :meth:`ConditionalGet.commit`).

    Examples
    --------
    >>> f = Fetched("https://example.org/a.json", 200, b"[]", "application/json")
    >>> f.status, f.body, f.truncated, f.etag
    (200, b'[]', False, None)
    """

    url: str
    status: int
    body: bytes
    content_type: str
    truncated: bool = False
    etag: str | None = None
    last_modified: str | None = None


class ConditionalGet:
    """One URL polled with conditional GET; remembers the validators of the answer last committed.

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

    :meth:`fetch` does not remember the validators of the answer it returns: the caller
    hands the answer to :meth:`commit` once it has been handled. Remembered too early, a body
    that was never handled (the poll was cancelled while parsing it, or it was
    unreadable) would be answered 304 on the next fetch, and lost.

    A new ``aiohttp`` session is opened per fetch: feeds are polled every few seconds
    at most, and a session bound to one event loop breaks when callers (tests, the
    probe command) run each poll in a fresh ``asyncio.run``.

    Examples
    --------
    >>> get = ConditionalGet("https://example.org/feed.xml", timeout_s=5.0)
    >>> get.etag, get.last_modified, get.request_headers()["User-Agent"].startswith("convergence")
    (None, None, True)
    >>> get.commit(Fetched(get.url, 200, b"<rss/>", "application/rss+xml", etag='"v1"'))
    >>> get.request_headers()["If-None-Match"]
    '"v1"'
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

    def commit(self, fetched: Fetched) -> None:
        """Remember ``fetched``'s validators: the next fetch asks for newer content only."""
        self.etag = fetched.etag
        self.last_modified = fetched.last_modified

    async def fetch(self) -> Fetched | None:
        """The body, or ``None`` when nothing changed (304, or 204). Raises ``SourceError``.

        The validators of the answer are in the :class:`Fetched`; :meth:`commit` it once
        handled.
        """
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
                return Fetched(url, status, body, resp.headers.get("Content-Type", ""), truncated,
                               resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
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


# -- the base of polled sources ----------------------------------------------------------
class PolledSource(RejectingSource):
    """A source that polls one URL; each item of a readable answer becomes one event record.

    Subclasses set ``kind`` (also the dead-letter stage, ``source.<kind>``) and
    ``label`` (how a dead letter for a bug names the source), turn a fetched body into
    records in :meth:`records_from_fetched` (usually by finding the items, then calling
    :meth:`records_from_items`), and word the ``SourceError`` raised after
    ``max_unreadable`` unreadable answers in :meth:`unreadable_message`.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` URL polled.
    station
        The station this source feeds.
    accept
        The ``Accept`` header.
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
    A source whose answer is one item per line, ``category value``:

    >>> from convergence.stations import StationInfo
    >>> class Lines(PolledSource):
    ...     kind, label = "lines", "line source"
    ...     async def records_from_fetched(self, fetched, now_s):
    ...         lines = fetched.body.decode().splitlines()
    ...         return self.records_from_items(lines, now_s, record=self.record,
    ...                                        identity=str.strip, name=self.name)
    ...     def record(self, line, now_s):
    ...         category, value = line.split()
    ...         return {"station_id": self.station.station_id, "source_kind": "sensor",
    ...                 "event_time_s": now_s, "category": category, "value": float(value)}
    ...     def name(self, i, line):
    ...         return f"{self.url} line {i + 1}"
    ...     def unreadable_message(self):
    ...         return f"{self.url} unreadable {self.unreadable_streak} times"
    >>> src = Lines("https://lines.example/now", StationInfo("l-1", "sensor"), accept="text/plain")
    >>> recs = src.records_from_items(["flood 2", "flood 2", "fire 1"], 100.0,
    ...                               record=src.record, identity=str.strip, name=src.name)
    >>> [(r["category"], r["value"]) for r in recs], src.duplicates
    ([('flood', 2.0), ('fire', 1.0)], 1)
    >>> src.records_from_items(["quake"], 100.0, record=src.record, identity=str.strip, name=src.name)
    []
    >>> print(src.drain_rejects()[0].reason)                # doctest: +ELLIPSIS
    https://lines.example/now line 1: unexpected ValueError (...); this is a bug in the line source, ...
    """

    kind = "polled"
    #: how a dead letter for a bug in the source names it ("... a bug in the <label>")
    label = "polled source"

    def __init__(self, url: str, station: StationInfo, *, accept: str, timeout_s: float = 10.0,
                 max_bytes: int = 5_000_000, headers: Mapping[str, str] | None = None,
                 dedup_size: int = 10_000, max_unreadable: int = 3, limits: Limits | None = None,
                 max_rejects: int = 10_000) -> None:
        if max_unreadable < 1:
            raise ValueError(f"max_unreadable must be >= 1, got {max_unreadable}")
        self.url = url
        self.station = station
        self.max_unreadable = max_unreadable
        self.limits = limits or Limits()
        self.http = ConditionalGet(url, timeout_s=timeout_s, max_bytes=max_bytes, headers=headers,
                                   accept=accept)
        self._seen = SeenHashes(dedup_size)
        self._rejects = RejectBuffer(f"source.{self.kind}", station.station_id, max_rejects)
        #: unreadable answers in a row (reset by a readable one)
        self.unreadable_streak = 0
        #: items skipped because they were already handled
        self.duplicates = 0

    @property
    def timeout_s(self) -> float:
        """The HTTP timeout of one fetch (the fleet gives a poll this plus a margin)."""
        return self.http.timeout_s

    @abstractmethod
    async def records_from_fetched(self, fetched: Fetched, now_s: float) -> list[dict[str, Any]]:
        """Records from one fetched answer (bad items and bodies go to ``rejects``; never raises).

        A readable answer resets ``unreadable_streak``; an unreadable one goes through
        :meth:`_unreadable`.
        """

    @abstractmethod
    def unreadable_message(self) -> str:
        """The ``SourceError`` message once ``max_unreadable`` answers in a row were unreadable."""

    def _unreadable(self, payload: Any, reason: str, now_s: float, *, field: str = "body") -> None:
        """Count an unreadable answer and keep it as a dead letter ``<url>: <reason>``."""
        self.unreadable_streak += 1
        self._rejects.add(payload, field, f"{self.url}: {reason}", now_s=now_s)

    def records_from_items(self, items: Sequence[_Item], now_s: float, *,
                           record: Callable[[_Item, float], dict[str, Any]],
                           identity: Callable[[_Item], Any],
                           name: Callable[[int, _Item], str],
                           bug_payload: Callable[[Any], Any] = _same,
                           limit: int | None = None) -> list[dict[str, Any]]:
        """Records of the items not seen before (the first ``limit`` items only, if given).

        ``identity(item)`` is what the dedup hash is taken over and what a dead letter
        keeps (``bug_payload`` of it for a bug); ``record(item, now_s)`` builds the record,
        which is then checked as the edge would; ``name(i, item)`` names the item in
        dead letters. A :class:`~convergence.schema.ValidationError` makes the item a
        dead letter ``<name>: <field> <reason>``; any other exception is a bug: it is
        logged with its traceback and the item becomes a dead letter saying so. Neither
        stops the loop.
        """
        out: list[dict[str, Any]] = []
        for i, item in enumerate(items if limit is None else items[:limit]):
            ident = identity(item)
            if not self._seen.add(content_hash(ident)):
                self.duplicates += 1
                continue
            try:
                rec = record(item, now_s)
                check_record(rec, now_s=now_s, limits=self.limits)
            except ValidationError as err:
                self._rejects.add(ident, err.field, f"{name(i, item)}: {err.field} {err.reason}",
                                  now_s=now_s)
                continue
            except Exception as exc:  # a bug must not stop the feed: keep the item, say so loudly
                log.exception("%s %s: unexpected error on item %d", self.label, self.url, i)
                self._rejects.add(bug_payload(ident), "item", f"{name(i, item)}: unexpected "
                                  f"{type(exc).__name__} ({exc}); this is a bug in the {self.label}, "
                                  "please report it with this item", now_s=now_s)
                continue
            out.append(rec)
        return out

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        fetched = await self.http.fetch()
        if fetched is None:  # 304: nothing changed since the validators we sent
            return []
        out = await self.records_from_fetched(fetched, now_s)
        # Only a body handled to the end, and readable, is committed: an unreadable one (or
        # one whose handling was cancelled) is fetched again, so it counts towards
        # max_unreadable (or its items are not lost) instead of being answered 304.
        if self.unreadable_streak == 0:
            self.http.commit(fetched)
        elif self.unreadable_streak >= self.max_unreadable:
            raise SourceError(self.unreadable_message())
        return out


__all__ = [
    "USER_AGENT",
    "ConditionalGet",
    "Fetched",
    "PolledSource",
    "SeenHashes",
    "content_hash",
    "host_of",
]

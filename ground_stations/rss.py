"""RSS/Atom source: a feed polled with conditional GET, each new item one news event.

This module owns :class:`RssSource`, :func:`parse_feed` and :func:`clean_html`. Fetching
(``If-None-Match`` / ``If-Modified-Since``, timeouts, size cap, HTTP errors as
``SourceError``), item dedup and the poll loop come from
:mod:`~convergence.ground_stations.polling`; parsing is feedparser's.

Each item becomes one record: ``category`` = the item's first tag (lower-cased), or
``default_category`` (``news``); ``text`` = the title, plus the summary with HTML
stripped, cut to fit ``max_text_chars`` (the summary is context, so it is the only
field ever shortened); ``event_time_s`` = the published (else updated) time, or the
poll's clock when the item has none; ``value`` = 1.0; ``source`` = the feed's host.
An item is emitted once: its content hash (id, link, title, summary, dates) is
remembered, so an item repeated across polls, or edited back and forth, is not
re-sent, while an edited item is.

Bad input follows the dead-letter design described in
:mod:`~convergence.ground_stations.replay` (``rejects`` / ``drain_rejects()``):
malformed XML that feedparser still read yields one dead letter per poll naming the
parser's complaint, plus the items it recovered; an item with a future date, a
30,000-character tag or neither title nor summary is a dead letter naming the item.
A body that yields no feed at all is a dead letter; ``max_unreadable`` of those in a
row raise ``SourceError`` so the agent's breaker trips.

Examples
--------
>>> clean_html("<p>Flood <b>warning</b> &amp; evacuation</p>")
'Flood warning & evacuation'
"""

from __future__ import annotations

import asyncio
import calendar
import html
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import feedparser

from convergence.ground_stations.polling import Fetched, PolledSource, host_of
from convergence.schema import Limits, ValidationError, is_web_address
from convergence.stations import StationInfo

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_MAX_CATEGORY = 64
_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1"
# feedparser raises its "bozo" flag for these too, but the feed was read correctly
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


def clean_html(s: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    return _SPACE_RE.sub(" ", html.unescape(_TAG_RE.sub(" ", s))).strip()


def _bozo_reason(exc: Any) -> str:
    line, col, msg = (getattr(exc, name, None) for name in ("getLineNumber", "getColumnNumber",
                                                            "getMessage"))
    if callable(line) and callable(col) and callable(msg):  # an XML parse error says where
        return f"{type(exc).__name__} at line {line()}, column {col()}: {msg()}"
    return f"{type(exc).__name__}: {exc}"


def _get(entry: Mapping[str, Any], key: str) -> Any:
    # dict.get: feedparser's own get() answers a missing "updated" with "published" and
    # a DeprecationWarning; we want to know which one the item really has.
    return dict.get(entry, key) if isinstance(entry, dict) else entry.get(key)


class RssSource(PolledSource):
    """Polls an RSS or Atom feed; every new item becomes one event record.

    Parameters
    ----------
    url
        The feed.
    station
        The station this source feeds (usually an ``osint_news`` one).
    default_category
        Category of items without tags.
    timeout_s, max_bytes, headers, dedup_size, max_unreadable, limits, max_rejects
        See :class:`~convergence.ground_stations.polling.PolledSource`.

    Examples
    --------
    >>> from convergence.stations import StationInfo
    >>> src = RssSource("https://news.example/rss", StationInfo("news-1", "osint_news"))
    >>> feed = (b'<rss version="2.0"><channel><title>t</title><item><title>Port closed</title>'
    ...         b'<link>https://news.example/port-closed</link><category>Shipping</category>'
    ...         b'<description>&lt;b&gt;Storm&lt;/b&gt; ahead</description>'
    ...         b'<pubDate>Wed, 01 May 2024 12:00:00 GMT</pubDate></item></channel></rss>')
    >>> recs = src.records_from(feed, 1714564900.0)
    >>> [(r["category"], r["text"], r["event_time_s"], r["source"]) for r in recs]
    [('shipping', 'Port closed — Storm ahead', 1714564800.0, 'news.example')]
    >>> recs[0]["url"]   # the item's own link, for the report
    'https://news.example/port-closed'
    >>> src.records_from(feed, 1714564960.0)      # the same item again: already sent
    []
    """

    kind = "rss"
    label = "RSS source"

    def __init__(self, url: str, station: StationInfo, *, default_category: str = "news",
                 timeout_s: float = 10.0, max_bytes: int = 5_000_000,
                 headers: Mapping[str, str] | None = None, dedup_size: int = 10_000,
                 max_unreadable: int = 3, limits: Limits | None = None,
                 max_rejects: int = 10_000) -> None:
        if not default_category or len(default_category) > _MAX_CATEGORY:
            raise ValueError(f"default_category must be 1..{_MAX_CATEGORY} characters, "
                             f"got {default_category!r}")
        super().__init__(url, station, accept=_ACCEPT, timeout_s=timeout_s, max_bytes=max_bytes,
                         headers=headers, dedup_size=dedup_size, max_unreadable=max_unreadable,
                         limits=limits, max_rejects=max_rejects)
        self._kind = station.kind.value  # an unknown source kind fails here, not in every poll
        self.default_category = default_category
        self.source = host_of(url)

    @classmethod
    def for_file(cls, path: Path, station: StationInfo, **kw: Any) -> RssSource:
        """A source that parses a feed saved to a file (``stations probe FILE.xml``) with
        :meth:`records_from`; it names the file in its dead letters and is never polled."""
        src = cls("http://localhost/", station, **kw)  # the HTTP side is never used
        src.url = str(path)
        src.source = path.name[:128]
        return src

    def _item_name(self, i: int, entry: Mapping[str, Any]) -> str:
        ident = entry.get("id") or entry.get("link") or entry.get("title") or ""
        ident = str(ident)
        ident = ident if len(ident) <= 80 else ident[:77] + "..."
        return f"{self.url} item {i}" + (f" ({ident})" if ident else "")

    def _text(self, entry: Mapping[str, Any]) -> str | None:
        title = clean_html(str(entry.get("title") or ""))
        summary = clean_html(str(entry.get("summary") or ""))
        if summary == title:
            summary = ""
        text = f"{title} — {summary}" if title and summary else title or summary
        limit = self.limits.max_text_chars
        if len(text) > limit:
            if len(title) > limit:
                raise ValidationError("text", f"title is {len(title)} characters long; the limit is "
                                              f"{limit} (max_text_chars)")
            text = text[: limit - 1] + "…"
        return text or None

    def _record(self, entry: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        category = self.default_category
        tags = entry.get("tags") or []
        if tags and isinstance(tags[0], Mapping):
            term = str(tags[0].get("term") or tags[0].get("label") or "").strip().lower()
            if len(term) > _MAX_CATEGORY:
                raise ValidationError("category", f"first tag is {len(term)} characters long; "
                                                  f"categories are at most {_MAX_CATEGORY}")
            category = term or category
        text = self._text(entry)
        if text is None:
            raise ValidationError("text", "is empty: the item has neither title nor summary")
        stamp = _get(entry, "published_parsed") or _get(entry, "updated_parsed")
        t = float(calendar.timegm(stamp)) if stamp else now_s  # feedparser's tuples are UTC
        rec = {"station_id": self.station.station_id, "source_kind": self._kind,
               "event_time_s": t, "category": category, "value": 1.0, "text": text,
               "source": self.source}
        link = _get(entry, "link")
        if isinstance(link, str) and is_web_address(link.strip()):
            rec["url"] = link.strip()  # a link that is not a web page is left out, not fatal
        return rec

    def records_from(self, body: bytes, now_s: float, *, content_type: str = "",
                     truncated: bool = False, limit: int | None = None,
                     parsed: Any = None) -> list[dict[str, Any]]:
        """Records from one feed document (bad items go to ``rejects``; never raises).

        ``parsed`` is feedparser's result for ``body`` when the caller already has it.
        """
        if truncated:
            self._unreadable(body[:4096], f"feed is larger than max_bytes={self.http.max_bytes}; "
                             "raise max_bytes if this feed is really that big", now_s)
            return []
        d = parsed if parsed is not None else parse_feed(body, content_type)
        entries = list(d.get("entries") or [])
        bozo = d.get("bozo") and not isinstance(d.get("bozo_exception"), _BENIGN)
        if not entries and (bozo or not d.get("version")):
            why = _bozo_reason(d.get("bozo_exception")) if d.get("bozo") else "no RSS or Atom root element"
            self._unreadable(body, f"is not a readable RSS/Atom feed ({why}); check that the URL "
                             "serves a feed, not an HTML page", now_s)
            return []
        self.unreadable_streak = 0
        if bozo:
            self._rejects.add(body, "body", f"{self.url}: feed is malformed "
                              f"({_bozo_reason(d.get('bozo_exception'))}); {len(entries)} item(s) "
                              "were recovered. Tell the publisher, or ignore if the items look right",
                              now_s=now_s)
        return self.records_from_items(entries, now_s, record=self._record, identity=_identity,
                                       name=self._item_name, limit=limit)

    async def records_from_fetched(self, fetched: Fetched, now_s: float) -> list[dict[str, Any]]:
        # feedparser is pure Python and can take a while on a big feed: keep it off the loop
        parsed = None if fetched.truncated else await asyncio.to_thread(
            parse_feed, fetched.body, fetched.content_type)
        return self.records_from(fetched.body, now_s, content_type=fetched.content_type,
                                 truncated=fetched.truncated, parsed=parsed)

    def unreadable_message(self) -> str:
        return (f"{self.url} answered something that is not an RSS/Atom feed "
                f"{self.unreadable_streak} polls in a row; check the URL (dead letters "
                "hold what it sent)")


def _identity(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What makes an item the same item again (its content hash is remembered)."""
    return {k: _get(entry, k) for k in ("id", "link", "title", "summary", "published", "updated")}


def parse_feed(body: bytes, content_type: str = "") -> Any:
    """feedparser's result for a document (never raises; problems set ``bozo``)."""
    headers = {"content-type": content_type} if content_type else {}
    # A stream, not bytes: given bytes that look like a path or URL, feedparser would
    # open that file or fetch that URL itself.
    return feedparser.parse(io.BytesIO(body), response_headers=headers)

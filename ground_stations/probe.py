"""Probe a source once: fetch a URL (RSS/Atom or JSON) or read a file (CSV or JSON Lines),
and show exactly what a station would send — validated events and dead letters.

This module owns :func:`probe` / :func:`aprobe` and kind detection
(:func:`detect_url_kind`, :func:`detect_file_kind`). It reuses the sources'
own parsing (:class:`~convergence.ground_stations.rss.RssSource`,
:class:`~convergence.ground_stations.http_json.HttpJsonSource`,
:class:`~convergence.ground_stations.replay.FileReplaySource`) and validates with
:func:`convergence.wire.validate_many`, the edge's own check. Files are read as fast as
possible (``speed=None``) and re-stamped onto the clock like a replay station does.

Bad items never raise: they come back as dead letters. :class:`ProbeError` is raised
when there is nothing to probe (unknown kind, URL not answering, file missing).

Examples
--------
>>> import tempfile, os
>>> fd, path = tempfile.mkstemp(suffix=".jsonl"); os.close(fd)
>>> with open(path, "w") as fh:
...     _ = fh.write('{"timestamp": 1714564800, "category": "flood", "text": "river up"}\\n'
...                  '{"timestamp": "soon", "category": "flood"}\\n')
>>> events, dead = probe(path, station_id="probe", source_kind="sensor", now_s=1714565000.0)
>>> [(e.category, e.text, e.event_time_s) for e in events]
[('flood', 'river up [orig 2024-05-01T12:00:00Z]', 1714565000.0)]
>>> print(dead[0].reason)                                 # doctest: +ELLIPSIS
file /...jsonl line 2: timestamp 'soon' is neither unix seconds nor ISO-8601 ...
>>> os.remove(path)
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlparse

from convergence.ground_stations.base import SourceError
from convergence.ground_stations.http_json import ConditionalGet, HttpJsonSource, parse_mapping
from convergence.ground_stations.replay import FILE_FORMATS, FileReplaySource
from convergence.ground_stations.rss import RssSource
from convergence.schema import SOURCE_KINDS, DeadLetter, Event, Limits, SourceKind, valid_station_id
from convergence.stations import StationInfo
from convergence.wire import validate_many

URL_KINDS = ("rss", "json")
FILE_KINDS = ("csv", "jsonl", "rss")
KINDS = ("rss", "json", "csv", "jsonl")
#: file extensions of saved RSS/Atom feeds
FEED_EXTENSIONS = frozenset({".xml", ".rss", ".atom"})
_MAX_FEED_BYTES = 5_000_000
_P = ParamSpec("_P")
_R = TypeVar("_R")


class ProbeError(RuntimeError):
    """Nothing could be probed (bad arguments, unreachable URL, missing file)."""


def is_url(target: str) -> bool:
    return urlparse(target).scheme in ("http", "https")


def detect_url_kind(content_type: str, body: bytes) -> str | None:
    """``rss`` or ``json`` from the content type, else from the first byte of the body.

    >>> detect_url_kind("application/atom+xml; charset=utf-8", b""), detect_url_kind("", b' [{"a": 1}]')
    ('rss', 'json')
    """
    ct = content_type.lower()
    if "json" in ct:
        return "json"
    if any(k in ct for k in ("rss", "atom", "xml")):
        return "rss"
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head in (b"{", b"["):
        return "json"
    if head == b"<":
        return "rss"
    return None


def detect_file_kind(path: Path) -> str | None:
    """``csv``, ``jsonl`` or ``rss`` (a saved RSS/Atom feed) from the extension, else from
    the first non-blank line."""
    by_ext = FILE_FORMATS.get(path.suffix.lower())
    if by_ext is not None:
        return by_ext
    if path.suffix.lower() in FEED_EXTENSIONS:
        return "rss"
    try:
        with path.open("rb") as fh:
            for _ in range(100):
                line = fh.readline(65536).lstrip(b"\xef\xbb\xbf \t\r\n")
                if line:
                    if line.startswith(b"<"):
                        return "rss"
                    return "jsonl" if line.startswith(b"{") else "csv" if b"," in line else None
    except OSError:
        return None  # the source names the problem when it opens the file
    return None


def _station(station_id: str, source_kind: str) -> StationInfo:
    if valid_station_id(station_id) is None:
        raise ProbeError(f"station id {station_id!r} is not valid: use 1-64 letters, digits, "
                         "'_', '.', ':' or '-' (e.g. probe or news-eu-001)")
    try:
        kind = SourceKind(source_kind)
    except ValueError:
        raise ProbeError(f"source kind {source_kind!r} is not known; use one of "
                         + ", ".join(k.value for k in SOURCE_KINDS)) from None
    return StationInfo(station_id, kind)


async def _from_url(target: str, kind: str | None, station: StationInfo, *,
                    mapping: Mapping[str, str] | None, items_path: str | None, limit: int | None,
                    timeout_s: float, headers: Mapping[str, str] | None, now_s: float,
                    limits: Limits) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    if kind is not None and kind not in URL_KINDS:
        raise ProbeError(f"kind {kind!r} reads files, and {target} is a URL; use rss or json")
    try:
        fetched = await ConditionalGet(target, timeout_s=timeout_s, headers=headers).fetch()
    except (ValueError, SourceError) as exc:
        raise ProbeError(str(exc)) from None
    if fetched is None:
        raise ProbeError(f"GET {target} answered 204/304 with no body; nothing to probe")
    kind = kind or detect_url_kind(fetched.content_type, fetched.body)
    if kind is None:
        raise ProbeError(f"cannot tell whether {target} serves RSS/Atom or JSON (Content-Type "
                         f"{fetched.content_type or 'missing'!r}, body starts "
                         f"{fetched.body[:20]!r}); pass the kind (rss or json)")
    if mapping is not None and kind != "json":
        raise ProbeError(f"a field mapping applies to JSON sources only, and {target} is {kind}")
    src: RssSource | HttpJsonSource
    try:
        if kind == "rss":
            src = RssSource(target, station, timeout_s=timeout_s, limits=limits)
            recs = src.records_from(fetched.body, now_s, content_type=fetched.content_type,
                                    truncated=fetched.truncated, limit=limit)
        else:
            src = HttpJsonSource(target, station, mapping, items_path=items_path,
                                 timeout_s=timeout_s, limits=limits)
            recs = src.records_from(fetched.body, now_s, truncated=fetched.truncated, limit=limit)
    except ValueError as exc:  # a bad mapping or items_path
        raise ProbeError(str(exc)) from None
    return recs, src.drain_rejects()


async def _read_file(target: str, kind: str | None, station: StationInfo, *, limit: int | None,
                     now_s: float, limits: Limits) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    if kind is not None and kind not in FILE_KINDS:
        raise ProbeError(f"kind {kind!r} fetches a URL, and {target!r} is not an http(s) URL; "
                         "use csv, jsonl or rss for files")
    path = Path(target)
    if not path.is_file():
        raise ProbeError(f"{target!r} is neither an http(s) URL nor a readable file; check the path")
    kind = kind or detect_file_kind(path)
    if kind is None:
        raise ProbeError(f"cannot tell whether {path} is CSV or JSON Lines (or a saved RSS/Atom "
                         "feed); pass the kind (csv, jsonl or rss)")
    if kind == "rss":
        looks = detect_file_kind(path)
        if looks not in ("rss", None):
            raise ProbeError(f"kind 'rss' fetches a URL or reads a saved feed, and {target!r} is "
                             f"not an http(s) URL and looks like {looks}; use --kind {looks}")
        return _read_feed_file(path, station, limit=limit, now_s=now_s, limits=limits)
    src = FileReplaySource(path, station, speed=None, fmt=kind, limits=limits,
                           batch_rows=limit if limit is not None else 10_000)
    out: list[dict[str, Any]] = []
    try:
        while not src.done:
            out += await src.poll(now_s)
            if limit is not None:  # one poll reads at most `limit` lines
                break
    except SourceError as exc:
        raise ProbeError(str(exc)) from None
    finally:
        await src.close()
    return out, src.drain_rejects()


def _read_feed_file(path: Path, station: StationInfo, *, limit: int | None, now_s: float,
                    limits: Limits) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    """Records of a feed saved to a file, parsed exactly as a fetched one."""
    try:
        with path.open("rb") as fh:
            body = fh.read(_MAX_FEED_BYTES + 1)
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    src = RssSource.for_file(path, station, limits=limits, max_bytes=_MAX_FEED_BYTES)
    recs = src.records_from(body, now_s, truncated=len(body) > _MAX_FEED_BYTES, limit=limit)
    return recs, src.drain_rejects()


async def aprobe(
    target: str,
    kind: str | None = None,
    *,
    station_id: str = "probe",
    source_kind: str = "osint_news",
    mapping: Mapping[str, str] | None = None,
    items_path: str | None = None,
    limit: int | None = None,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
    now_s: float | None = None,
    limits: Limits | None = None,
) -> tuple[list[Event], list[DeadLetter]]:
    """Fetch or read ``target`` once; return the validated events and every dead letter.

    ``kind`` is ``rss``/``json`` for a URL, ``csv``/``jsonl``/``rss`` for a file, or
    ``None`` to detect it. ``limit`` caps the items (URL) or lines (file) looked at. Raises
    :class:`ProbeError` when nothing could be read at all.
    """
    if kind is not None and kind not in KINDS:
        raise ProbeError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if limit is not None and limit < 1:
        raise ProbeError(f"limit must be >= 1, got {limit}")
    if mapping is not None:  # a typo in the mapping should fail before any network traffic
        try:
            parse_mapping(mapping)
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
    now = time.time() if now_s is None else now_s
    lim = limits or Limits()
    station = _station(station_id, source_kind)
    if is_url(target):
        recs, dead = await _from_url(target, kind, station, mapping=mapping, items_path=items_path,
                                     limit=limit, timeout_s=timeout_s, headers=headers, now_s=now,
                                     limits=lim)
    else:
        if mapping is not None or items_path is not None:
            raise ProbeError("a field mapping / items path applies to JSON URLs only")
        recs, dead = await _read_file(target, kind, station, limit=limit, now_s=now, limits=lim)
    good, bad = validate_many(recs, now_s=now, limits=lim, stage="probe")
    return good, dead + bad


def _run_sync(fn: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, _R]:
    """``fn`` run to completion in a fresh event loop, with ``fn``'s exact parameters."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return asyncio.run(fn(*args, **kwargs))

    run.__doc__ = (f"Synchronous :func:`{fn.__name__}` (for the command line and scripts, "
                   "not inside an event loop).")
    return run


#: Synchronous :func:`aprobe` (for the command line and scripts, not inside an event loop).
probe = _run_sync(aprobe)

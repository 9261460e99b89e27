"""RSS/Atom source against a real HTTP server on 127.0.0.1 (fixtures/feed_server.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.ground_stations.agent import BACKING_OFF, Fleet, StationAgent
from convergence.ground_stations.base import SourceError
from convergence.ground_stations.rss import RssSource
from convergence.stations import StationInfo
from convergence.wire import validate_many

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = 1_714_600_000.0  # 2024-05-01T21:46:40Z, hours after the fixture items
T10 = 1_714_557_600.0  # 2024-05-01T10:00:00Z
NEWS = StationInfo("news-wire", "osint_news")




import feed_server as fs  # noqa: E402 - on sys.path via tests/conftest.py

RSS_CT = "application/rss+xml; charset=utf-8"




def poll(src: RssSource, now_s: float = NOW) -> list[dict[str, Any]]:
    return asyncio.run(src.poll(now_s))


def rss(items: list[tuple[str, str]], extra: str = "") -> bytes:
    body = "".join(f"<item><guid>{g}</guid><title>{t}</title>"
                   "<pubDate>Wed, 01 May 2024 10:00:00 GMT</pubDate></item>" for g, t in items)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>{body}{extra}'
            "</channel></rss>").encode()


# -- good feeds ------------------------------------------------------------------------------
def test_good_rss_feed_maps_items_to_records(server: Any) -> None:
    url = server.answer("/good.rss", fs.Answer(200, fs.fixture_bytes("rss_good.xml"), RSS_CT))
    src = RssSource(url, NEWS, timeout_s=2.0)
    recs = poll(src)
    assert [(r["category"], r["event_time_s"]) for r in recs] == [
        ("conflict", T10), ("news", T10 + 3600), ("markets", T10 + 7200)]
    assert recs[0]["text"] == "Border crossing closed — Officials closed the crossing & diverted traffic."
    assert recs[1]["text"] == "Port reopens after storm"
    assert {(r["value"], r["source"], r["station_id"]) for r in recs} == {(1.0, "127.0.0.1", "news-wire")}
    good, bad = validate_many(recs, now_s=NOW)
    assert len(good) == 3 and bad == [] and src.drain_rejects() == []
    assert "rss" in server.seen("/good.rss")[0]["Accept"]
    # each item's own link travels with its event (a report quotes the headline with it)
    assert [e.url for e in good] == [f"https://wire.example/a/{i}" for i in (1, 2, 3)]


def test_an_item_link_that_is_not_a_web_page_is_left_out(server: Any) -> None:
    body = rss([("g1", "Port closed")]).replace(
        b"<title>Port closed</title>", b"<title>Port closed</title><link>javascript:alert(1)</link>")
    url = server.answer("/js.rss", fs.Answer(200, body, RSS_CT))
    recs = poll(RssSource(url, NEWS, timeout_s=2.0))
    assert len(recs) == 1 and "url" not in recs[0] and recs[0]["text"] == "Port closed"


def test_good_atom_feed_uses_published_else_updated(server: Any) -> None:
    url = server.answer("/good.atom", fs.Answer(200, fs.fixture_bytes("atom_good.xml"),
                                                "application/atom+xml"))
    recs = poll(RssSource(url, NEWS, timeout_s=2.0))
    assert [(r["category"], r["event_time_s"], r["text"]) for r in recs] == [
        ("seismic", T10 + 7500, "M 4.6 near the coast — Shallow event, felt widely."),
        ("news", T10 + 8400, "Aftershock sequence continues")]


def test_items_without_dates_are_stamped_with_the_poll_clock(server: Any) -> None:
    body = b'<rss version="2.0"><channel><item><title>undated</title></item></channel></rss>'
    url = server.answer("/undated.rss", fs.Answer(200, body, RSS_CT))
    assert [r["event_time_s"] for r in poll(RssSource(url, NEWS, timeout_s=2.0), NOW)] == [NOW]


# -- conditional GET and dedup -----------------------------------------------------------
def test_second_poll_sends_etag_and_last_modified_and_a_304_yields_nothing(server: Any) -> None:
    lm = "Wed, 01 May 2024 12:30:00 GMT"
    url = server.conditional("/etag.rss", fs.fixture_bytes("rss_good.xml"), RSS_CT,
                             etag='"v1"', last_modified=lm)
    src = RssSource(url, NEWS, timeout_s=2.0)
    assert len(poll(src)) == 3
    assert poll(src, NOW + 60) == []
    first, second = server.seen("/etag.rss")
    assert "If-None-Match" not in first and "If-Modified-Since" not in first
    assert second["If-None-Match"] == '"v1"' and second["If-Modified-Since"] == lm
    assert src.http.not_modified == 1 and src.drain_rejects() == []


def test_last_modified_alone_is_enough_for_a_304(server: Any) -> None:
    lm = "Wed, 01 May 2024 12:30:00 GMT"
    url = server.conditional("/lm.rss", fs.fixture_bytes("rss_good.xml"), RSS_CT, last_modified=lm)
    src = RssSource(url, NEWS, timeout_s=2.0)
    assert len(poll(src)) == 3 and poll(src) == []
    assert server.seen("/lm.rss")[1]["If-Modified-Since"] == lm
    assert "If-None-Match" not in server.seen("/lm.rss")[1]


def test_a_page_with_an_etag_that_is_not_a_feed_is_not_answered_304_next_time(server: Any) -> None:
    url = server.conditional("/html-etag.rss", b"<html><body>Sign in</body></html>", "text/html",
                             etag='"page-1"', last_modified="Wed, 01 May 2024 12:30:00 GMT")
    src = RssSource(url, NEWS, timeout_s=2.0, max_unreadable=2)
    assert poll(src) == []
    with pytest.raises(SourceError, match="not an RSS/Atom feed 2 polls in a row"):
        poll(src)
    assert src.http.not_modified == 0
    assert all("If-None-Match" not in h and "If-Modified-Since" not in h
               for h in server.seen("/html-etag.rss"))


def test_items_repeated_across_polls_are_emitted_once(server: Any) -> None:
    url = server.sequence("/repeat.rss", [
        fs.Answer(200, rss([("a", "Alpha"), ("b", "Bravo")]), RSS_CT),
        fs.Answer(200, rss([("b", "Bravo"), ("c", "Charlie")]), RSS_CT),
        fs.Answer(200, rss([("b", "Bravo"), ("c", "Charlie edited")]), RSS_CT),
    ])
    src = RssSource(url, NEWS, timeout_s=2.0)
    assert [r["text"] for r in poll(src)] == ["Alpha", "Bravo"]
    assert [r["text"] for r in poll(src)] == ["Charlie"]
    assert [r["text"] for r in poll(src)] == ["Charlie edited"]  # new content, new event
    assert src.duplicates == 2  # Bravo, twice


# -- bad input: dead letters -------------------------------------------------------------
def test_malformed_xml_is_a_dead_letter_and_recovered_items_still_flow(server: Any) -> None:
    url = server.answer("/broken.rss", fs.Answer(200, fs.fixture_bytes("rss_malformed.xml"), RSS_CT))
    src = RssSource(url, NEWS, timeout_s=2.0)
    recs = poll(src)
    assert recs and recs[0]["text"] == "Bridge damaged in flood"
    dl, item = src.drain_rejects()
    assert dl.stage == "source.rss" and dl.field == "body" and dl.station_id == "news-wire"
    assert url in dl.reason
    assert "malformed (SAXParseException at line 11, column 26: mismatched tag)" in dl.reason
    assert "item 1: text is empty: the item has neither title nor summary" in item.reason


def test_bad_items_are_dead_letters_naming_the_item(server: Any) -> None:
    url = server.answer("/mixed.rss", fs.Answer(200, fs.fixture_bytes("rss_bad_items.xml"), RSS_CT))
    src = RssSource(url, NEWS, timeout_s=2.0)
    assert [r["text"] for r in poll(src)] == ["Ordinary item"]
    dead = {d.field: d.reason for d in src.drain_rejects()}
    assert "(urn:mixed:future): event_time_s" in dead["event_time_s"]
    assert "s in the future" in dead["event_time_s"]
    assert "(urn:mixed:empty): text is empty" in dead["text"]
    assert "first tag is 108 characters long; categories are at most 64" in dead["category"]
    assert poll(src) == [] and src.drain_rejects() == []  # reported once, not on every poll


def test_huge_titles_summaries_and_bodies(server: Any) -> None:
    big_title = rss([("t", "T" * 5000)])
    big_summary = (b'<rss version="2.0"><channel><item><guid>s</guid><title>Short</title><description>'
                   + b"word " * 10_000 + b"</description></item></channel></rss>")
    url_t = server.answer("/bigtitle.rss", fs.Answer(200, big_title, RSS_CT))
    url_s = server.answer("/bigsummary.rss", fs.Answer(200, big_summary, RSS_CT))
    src = RssSource(url_t, NEWS, timeout_s=2.0)
    assert poll(src) == []
    assert "title is 5000 characters long; the limit is 2048" in src.drain_rejects()[0].reason
    (rec,) = poll(RssSource(url_s, NEWS, timeout_s=2.0))
    assert len(rec["text"]) == 2048 and rec["text"].startswith("Short — word word")
    assert rec["text"].endswith("…")
    small = RssSource(url_s, NEWS, timeout_s=2.0, max_bytes=1000)
    assert poll(small) == []
    assert "larger than max_bytes=1000" in small.drain_rejects()[0].reason


def test_a_page_that_is_not_a_feed_trips_source_error_after_max_unreadable(server: Any) -> None:
    url = server.answer("/maintenance", fs.Answer(200, fs.fixture_bytes("not_a_feed.html"), "text/html"))
    src = RssSource(url, NEWS, timeout_s=2.0, max_unreadable=2)
    assert poll(src) == []
    assert "is not a readable RSS/Atom feed" in src.rejects[0].reason
    with pytest.raises(SourceError, match=r"not an RSS/Atom feed 2 polls in a row; check the URL"):
        poll(src)
    assert len(src.drain_rejects()) == 2  # what it sent is kept for the person on call


# -- the URL cannot be read: SourceError naming URL and status ----------------------------
def test_http_500_is_a_source_error_naming_url_and_status(server: Any) -> None:
    url = server.answer("/down.rss", fs.Answer(500, b"oops", "text/plain"))
    with pytest.raises(SourceError) as err:
        poll(RssSource(url, NEWS, timeout_s=2.0))
    assert f"GET {url} answered HTTP 500" in str(err.value) and "backs off" in str(err.value)


def test_404_and_429_say_what_to_do(server: Any) -> None:
    url = server.answer("/nope.rss", fs.Answer(404, b"", "text/plain"))
    with pytest.raises(SourceError, match="HTTP 404 Not Found: no such resource; check the URL"):
        poll(RssSource(url, NEWS, timeout_s=2.0))
    url = server.answer("/busy.rss", fs.Answer(429, b"", "text/plain", {"Retry-After": "120"}))
    with pytest.raises(SourceError, match=r"rate limited \(Retry-After: 120\); poll less often"):
        poll(RssSource(url, NEWS, timeout_s=2.0))


def test_a_slow_feed_times_out_quickly(server: Any) -> None:
    url = server.answer("/slow.rss", fs.Answer(200, fs.fixture_bytes("rss_good.xml"), RSS_CT,
                                               delay_s=2.0))
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no complete answer within 0\.5 s"):
        poll(RssSource(url, NEWS, timeout_s=0.5))
    assert time.monotonic() - t0 < 1.5


def test_connection_refused_is_a_source_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match=rf"GET http://127.0.0.1:{port}/x failed: .*reachable"):
        poll(RssSource(f"http://127.0.0.1:{port}/x", NEWS, timeout_s=1.0))


def test_a_failing_feed_trips_the_station_breaker(server: Any) -> None:
    url = server.answer("/down-agent.rss", fs.Answer(503, b"", "text/plain"))
    changes: list[tuple[str, str]] = []

    async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
        raise AssertionError("nothing should be sent")

    agent = StationAgent(NEWS, RssSource(url, NEWS, timeout_s=1.0), sink, interval_s=0.01,
                         failure_threshold=2, backoff_base_s=5.0,
                         on_state=lambda sid, old, new, why: changes.append((new, why)))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Fleet([agent]).run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    asyncio.run(main())
    backing = [why for new, why in changes if new == BACKING_OFF]
    assert backing and "HTTP 503" in backing[0] and url in backing[0]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="not an http"):
        RssSource("ftp://x/feed", NEWS)
    with pytest.raises(ValueError, match="default_category"):
        RssSource("http://127.0.0.1/x", NEWS, default_category="")
    with pytest.raises(ValueError, match="timeout_s"):
        RssSource("http://127.0.0.1/x", NEWS, timeout_s=0)


# -- property tests (hypothesis): any body is records or dead letters, never an exception ---

_XMLISH = st.text(st.sampled_from(list("<>/?!=\"' abcdefghijklmnopqrstuvwxyz&;#\n")), max_size=200)
_TITLE = st.text(st.characters(codec="utf-8", exclude_characters="<&"), max_size=40)


@given(st.binary(max_size=400) | _XMLISH.map(str.encode))
def test_any_feed_body_is_records_or_dead_letters(body: bytes) -> None:
    src = RssSource("http://feeds.example/x", NEWS)
    recs = src.records_from(body, NOW)
    dead = src.drain_rejects()
    assert validate_many(recs, now_s=NOW)[1] == []
    assert all(d.reason and len(d.payload) <= 4096 for d in dead)


@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=2), _TITLE), max_size=6))
def test_every_item_of_a_feed_is_a_record_a_dead_letter_or_a_known_repeat(
        items: list[tuple[str, str]]) -> None:
    src = RssSource("http://feeds.example/x", NEWS)
    recs = src.records_from(rss(items), NOW)
    dead = [d for d in src.drain_rejects() if d.field != "body"]
    assert len(recs) + len(dead) + src.duplicates == len(items)
    assert validate_many(recs, now_s=NOW)[1] == []

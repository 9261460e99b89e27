"""The polled-source base, through a tiny line-per-item source, against a real HTTP server on
127.0.0.1 (fixtures/feed_server.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import feed_server as fs  # on sys.path via tests/conftest.py
import pytest

from convergence.ground_stations.base import SourceError
from convergence.ground_stations.polling import ConditionalGet, Fetched, PolledSource
from convergence.schema import ValidationError
from convergence.stations import StationInfo
from convergence.wire import validate_many

NOW = 1_714_600_000.0
STATION = StationInfo("lines-1", "sensor")
TEXT_CT = "text/plain; charset=utf-8"


class LineSource(PolledSource):
    """A body ``LINES`` then one ``category value`` per line; ``boom`` lines hit a "bug"."""

    kind = "lines"
    label = "line source"

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, STATION, accept="text/plain", timeout_s=2.0, **kw)
        self.hook_calls = 0

    async def records_from_fetched(self, fetched: Fetched, now_s: float) -> list[dict[str, Any]]:
        self.hook_calls += 1
        lines = fetched.body.decode("utf-8", errors="replace").splitlines()
        if not lines or lines[0] != "LINES":
            self._unreadable(fetched.body, "does not start with LINES", now_s)
            return []
        self.unreadable_streak = 0
        return self.records_from_items([ln for ln in lines[1:] if ln.strip()], now_s,
                                       record=self.record, identity=str.strip, name=self.name,
                                       bug_payload=repr)

    def record(self, line: str, now_s: float) -> dict[str, Any]:
        category, _, raw = line.strip().partition(" ")
        if category == "boom":
            raise RuntimeError("kaboom")
        try:
            value = float(raw)
        except ValueError:
            raise ValidationError("value", f"{raw!r} is not a number") from None
        return {"station_id": self.station.station_id, "source_kind": "sensor",
                "event_time_s": now_s, "category": category, "value": value, "source": "lines"}

    def name(self, i: int, line: str) -> str:
        return f"{self.url} line {i + 1}"

    def unreadable_message(self) -> str:
        return f"{self.url} sent no LINES header {self.unreadable_streak} polls in a row"


def poll(src: LineSource, now_s: float = NOW) -> list[dict[str, Any]]:
    return asyncio.run(src.poll(now_s))


def body(*lines: str) -> fs.Answer:
    return fs.Answer(200, "\n".join(("LINES", *lines)).encode(), TEXT_CT)


def cats(recs: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(r["category"], r["value"]) for r in recs]


# -- construction -----------------------------------------------------------------------------
def test_the_base_holds_the_shared_options(server: Any) -> None:
    url = server.answer("/opts", body())
    src = LineSource(url, max_bytes=1234, headers={"X-Key": "k"}, dedup_size=7, max_unreadable=2,
                     max_rejects=5)
    assert (src.url, src.station, src.max_unreadable) == (url, STATION, 2)
    assert (src.http.url, src.http.max_bytes, src.http.timeout_s, src.http.accept) == (
        url, 1234, 2.0, "text/plain")
    assert src.http.headers == {"X-Key": "k"} and src.limits.max_text_chars == 2048
    assert (src.unreadable_streak, src.duplicates, src.rejects) == (0, 0, [])
    assert (src._seen.max_size, src._rejects.stage, src._rejects.max_kept) == (7, "source.lines", 5)
    with pytest.raises(ValueError, match="max_unreadable must be >= 1, got 0"):
        LineSource(url, max_unreadable=0)
    with pytest.raises(ValueError, match="'ftp://x/y' is not an http"):
        LineSource("ftp://x/y")


# -- the per-item loop ------------------------------------------------------------------------
def test_items_seen_before_are_skipped_across_polls_and_counted(server: Any) -> None:
    url = server.sequence("/dedup", [body("rain 1", "wind 2", "rain 1"),
                                     body("rain 1", "wind 2", "hail 3")])
    src = LineSource(url)
    assert cats(poll(src)) == [("rain", 1.0), ("wind", 2.0)]
    assert src.duplicates == 1  # the same line twice in one answer
    assert cats(poll(src)) == [("hail", 3.0)]
    assert src.duplicates == 3
    assert cats(poll(src)) == [] and src.duplicates == 6  # the last answer repeats
    assert src.drain_rejects() == [] and src.hook_calls == 3


def test_dedup_identity_is_what_the_identity_function_says(server: Any) -> None:
    url = server.sequence("/ident", [body("rain 1"), body("  rain 1  ")])
    src = LineSource(url)
    assert cats(poll(src)) == [("rain", 1.0)]
    assert poll(src) == [] and src.duplicates == 1  # str.strip: the padded line is the same item


def test_a_validation_error_is_a_dead_letter_naming_the_item_and_the_rest_come_out(server: Any) -> None:
    url = server.answer("/bad", body("rain 1", "wind lots", "x" * 65 + " 2", "hail 3"))
    src = LineSource(url)
    recs = poll(src)
    assert cats(recs) == [("rain", 1.0), ("hail", 3.0)]
    good, bad = validate_many(recs, now_s=NOW)
    assert len(good) == 2 and bad == []
    built, checked = src.drain_rejects()
    assert (built.field, built.reason, built.payload) == (
        "value", f"{url} line 2: value 'lots' is not a number", "wind lots")
    assert (built.stage, built.station_id, built.received_at_s) == ("source.lines", "lines-1", NOW)
    # the built record is checked as the edge would: a 65-character category is refused
    assert checked.field == "category" and checked.reason.startswith(f"{url} line 3: category ")
    assert src.unreadable_streak == 0
    assert poll(src) == [] and src.drain_rejects() == []  # each bad item is reported once


def test_a_bug_in_the_record_builder_is_a_dead_letter_and_does_not_stop_the_loop(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = server.answer("/bug", body("rain 1", "boom 2", "hail 3"))
    src = LineSource(url)
    with caplog.at_level(logging.ERROR, logger="convergence.ground_stations.polling"):
        recs = poll(src)
    assert cats(recs) == [("rain", 1.0), ("hail", 3.0)]
    (dl,) = src.drain_rejects()
    assert dl.field == "item"
    assert dl.reason == (f"{url} line 2: unexpected RuntimeError (kaboom); this is a bug in the "
                         "line source, please report it with this item")
    assert dl.payload == "'boom 2'"  # bug_payload=repr of the identity
    (logged,) = caplog.records
    assert logged.getMessage() == f"line source {url}: unexpected error on item 1"
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError


def test_limit_takes_only_the_first_items() -> None:
    src = LineSource("http://127.0.0.1:9/unused")
    recs = src.records_from_items(["a 1", "b 2", "c 3"], NOW, record=src.record, identity=str.strip,
                                  name=src.name, limit=2)
    assert cats(recs) == [("a", 1.0), ("b", 2.0)]
    # the item left out was never seen: it comes out when it is within the limit
    recs = src.records_from_items(["c 3"], NOW, record=src.record, identity=str.strip, name=src.name)
    assert cats(recs) == [("c", 3.0)] and src.duplicates == 0


# -- the poll template ------------------------------------------------------------------------
def test_max_unreadable_answers_in_a_row_raise_source_error(server: Any) -> None:
    url = server.answer("/html", fs.Answer(200, b"<html>nope</html>", "text/html"))
    src = LineSource(url, max_unreadable=3)
    assert poll(src) == [] and poll(src) == []
    assert src.unreadable_streak == 2
    with pytest.raises(SourceError) as err:
        poll(src)
    assert str(err.value) == f"{url} sent no LINES header 3 polls in a row"
    dead = src.drain_rejects()
    assert [(d.field, d.reason, d.payload) for d in dead] == [
        ("body", f"{url}: does not start with LINES", "<html>nope</html>")] * 3


def test_a_readable_answer_resets_the_unreadable_streak(server: Any) -> None:
    junk = fs.Answer(200, b"junk", TEXT_CT)
    url = server.sequence("/flaky", [junk, junk, body("rain 1"), junk, junk, junk])
    src = LineSource(url, max_unreadable=3)
    streaks = []
    for _ in range(5):
        poll(src)
        streaks.append(src.unreadable_streak)
    assert streaks == [1, 2, 0, 1, 2]  # three bad answers, but never three in a row
    with pytest.raises(SourceError, match="no LINES header 3 polls in a row"):
        poll(src)
    assert len(src.drain_rejects()) == 5


def test_not_modified_yields_nothing_without_calling_the_hook(server: Any) -> None:
    url = server.conditional("/cond", b"LINES\nrain 1", TEXT_CT, etag='"v1"')
    src = LineSource(url, max_unreadable=1)
    assert cats(poll(src)) == [("rain", 1.0)]
    assert poll(src) == [] and poll(src) == []
    assert (src.hook_calls, src.http.not_modified, src.unreadable_streak) == (1, 2, 0)
    assert server.seen("/cond")[1]["If-None-Match"] == '"v1"'


def test_an_http_failure_raises_source_error_naming_the_url(server: Any) -> None:
    url = server.answer("/gone", fs.Answer(404, b"", TEXT_CT))
    src = LineSource(url)
    with pytest.raises(SourceError, match=rf"GET {url} answered HTTP 404 Not Found"):
        poll(src)
    assert src.hook_calls == 0 and src.unreadable_streak == 0


# -- validators are remembered only for a body that was handled ------------------------------
def test_fetch_returns_the_validators_and_only_commit_remembers_them(server: Any) -> None:
    lm = "Wed, 01 May 2024 12:30:00 GMT"
    url = server.conditional("/commit", b"LINES\nrain 1", TEXT_CT, etag='"c1"', last_modified=lm)
    get = ConditionalGet(url, timeout_s=2.0)
    first = asyncio.run(get.fetch())
    assert first is not None and (first.etag, first.last_modified) == ('"c1"', lm)
    assert (get.etag, get.last_modified) == (None, None)  # not handled yet: not remembered
    again = asyncio.run(get.fetch())
    assert again is not None and again.body == b"LINES\nrain 1"
    get.commit(again)
    assert (get.etag, get.last_modified) == ('"c1"', lm)
    assert asyncio.run(get.fetch()) is None and get.not_modified == 1
    assert [h.get("If-None-Match") for h in server.seen("/commit")] == [None, None, '"c1"']


def test_an_unreadable_answer_with_an_etag_is_fetched_again_and_trips_the_breaker(server: Any) -> None:
    url = server.conditional("/junk-etag", b"<html>nope</html>", "text/html", etag='"j1"')
    src = LineSource(url, max_unreadable=2)
    assert poll(src) == [] and src.unreadable_streak == 1
    with pytest.raises(SourceError, match="no LINES header 2 polls in a row"):
        poll(src)  # a 304 here would hide the unreadable URL for ever
    assert all("If-None-Match" not in h for h in server.seen("/junk-etag"))
    assert len(src.drain_rejects()) == 2 and src.http.not_modified == 0


class SlowLineSource(LineSource):
    """Handling a body takes ``delay_s`` (a big feed being parsed)."""

    delay_s = 0.0

    async def records_from_fetched(self, fetched: Fetched, now_s: float) -> list[dict[str, Any]]:
        await asyncio.sleep(self.delay_s)
        return await super().records_from_fetched(fetched, now_s)


def test_a_poll_cancelled_while_handling_the_body_loses_no_items(server: Any) -> None:
    url = server.conditional("/slow-parse", b"LINES\nrain 1\nwind 2", TEXT_CT, etag='"s1"')
    src = SlowLineSource(url)
    src.delay_s = 5.0

    async def timed_out() -> None:
        await asyncio.wait_for(src.poll(NOW), 0.3)  # the agent's poll timeout

    with pytest.raises(TimeoutError):
        asyncio.run(timed_out())
    src.delay_s = 0.0
    assert cats(poll(src)) == [("rain", 1.0), ("wind", 2.0)]  # fetched again, not 304
    assert poll(src) == [] and src.http.not_modified == 1  # handled: now remembered
    assert [h.get("If-None-Match") for h in server.seen("/slow-parse")] == [None, None, '"s1"']

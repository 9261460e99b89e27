"""probe(): one fetch or one file read, validated like the edge does, kinds detected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from convergence.ground_stations.probe import ProbeError, detect_file_kind, detect_url_kind, probe

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = 1_714_600_000.0  # 2024-05-01T21:46:40Z
QUAKE_MAP = {"event_time_s": "ts", "category": "type", "value": "magnitude", "text": "title",
             "lat": "geo.lat", "lon": "geo.lon"}




import feed_server as fs  # noqa: E402 - on sys.path via tests/conftest.py


# -- files --------------------------------------------------------------------------------
def test_a_tick_file_probes_to_validated_events() -> None:
    events, dead = probe(str(FIXTURES / "ticks.csv"), source_kind="market_price", station_id="px",
                         now_s=NOW)
    assert [(e.value, e.source, e.event_time_s) for e in events] == [
        (101.5, "ACME", NOW), (101.75, "ACME", NOW), (101.6, "ACME", NOW), (102.0, "ACME", NOW)]
    assert dead == [] and len({e.event_id for e in events}) == 4


def test_bad_rows_come_back_as_dead_letters_naming_the_line() -> None:
    events, dead = probe(str(FIXTURES / "events_bad.jsonl"), source_kind="sensor", now_s=NOW)
    assert len(events) == 2 and len(dead) == 8
    assert all("events_bad.jsonl line" in d.reason for d in dead)


def test_limit_caps_the_rows_read() -> None:
    events, dead = probe(str(FIXTURES / "ticks_bad.csv"), "csv", source_kind="market_price",
                         limit=3, now_s=NOW)
    assert len(events) == 1 and [d.reason.split(": ")[0].rsplit(" ", 1)[1] for d in dead] == ["3", "4"]


def test_file_kind_is_detected_from_extension_then_content(tmp_path: Path) -> None:
    assert detect_file_kind(FIXTURES / "ticks.csv") == "csv"
    assert detect_file_kind(FIXTURES / "events.jsonl") == "jsonl"
    j = tmp_path / "export.txt"
    j.write_text('\n{"timestamp": 1714564800, "category": "a"}\n')
    c = tmp_path / "export.dat"
    c.write_text("timestamp,category\n1714564800,a\n")
    u = tmp_path / "notes"
    u.write_text("hello\n")
    assert (detect_file_kind(j), detect_file_kind(c), detect_file_kind(u)) == ("jsonl", "csv", None)
    events, _ = probe(str(j), source_kind="sensor", now_s=NOW)
    assert [e.category for e in events] == ["a"]
    with pytest.raises(ProbeError, match=r"cannot tell whether .*notes is CSV or JSON Lines"):
        probe(str(u), now_s=NOW)


def test_file_problems_are_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="neither an http\\(s\\) URL nor a readable file"):
        probe(str(tmp_path / "missing.csv"))
    with pytest.raises(ProbeError, match="kind 'rss' fetches a URL"):
        probe(str(FIXTURES / "ticks.csv"), "rss")
    with pytest.raises(ProbeError, match="source kind 'weather' is not known; use one of osint_news"):
        probe(str(FIXTURES / "ticks.csv"), source_kind="weather")
    with pytest.raises(ProbeError, match="kind 'xml' is not one of rss, json, csv, jsonl"):
        probe(str(FIXTURES / "ticks.csv"), "xml")
    with pytest.raises(ProbeError, match="applies to JSON URLs only"):
        probe(str(FIXTURES / "ticks.csv"), mapping={"category": "=x"})


# -- URLs ---------------------------------------------------------------------------------
def test_feeds_are_detected_from_the_content_type(server: Any) -> None:
    rss = server.answer("/p/feed", fs.Answer(200, fs.fixture_bytes("rss_good.xml"), "application/rss+xml"))
    atom = server.answer("/p/atom", fs.Answer(200, fs.fixture_bytes("atom_good.xml"), "text/xml"))
    events, dead = probe(rss, now_s=NOW)
    assert [e.category for e in events] == ["conflict", "news", "markets"] and dead == []
    assert {e.source_kind.value for e in events} == {"osint_news"}
    events, _ = probe(atom, now_s=NOW, limit=1)
    assert [e.category for e in events] == ["seismic"]


def test_json_is_detected_and_mapped(server: Any) -> None:
    url = server.answer("/p/quakes", fs.Answer(200, fs.fixture_bytes("quakes.json"), "text/plain"))
    events, dead = probe(url, source_kind="sensor", mapping=QUAKE_MAP, items_path="data.items", now_s=NOW)
    assert [(e.category, e.value) for e in events] == [("quake", 4.6), ("quake", 3.1), ("blast", 2.0)]
    assert dead == []
    events, dead = probe(url, "json", source_kind="sensor", mapping={"category": "nope"},
                         items_path="data.items", now_s=NOW)
    assert events == [] and len(dead) == 3 and "path 'nope' is missing" in dead[0].reason


def test_future_and_malformed_items_are_dead_letters(server: Any) -> None:
    body = orjson.dumps([{"event_time_s": 4_102_444_800, "category": "x", "value": 1},
                         {"event_time_s": NOW, "category": "x", "value": 1}])
    url = server.answer("/p/future", fs.Answer(200, body, "application/json"))
    events, dead = probe(url, now_s=NOW)
    assert len(events) == 1 and "in the future" in dead[0].reason
    url = server.answer("/p/broken", fs.Answer(200, fs.fixture_bytes("rss_malformed.xml"), "text/xml"))
    events, dead = probe(url, now_s=NOW)
    assert len(events) == 1 and "malformed" in dead[0].reason


def test_url_problems_are_probe_errors(server: Any) -> None:
    down = server.answer("/p/down", fs.Answer(500, b"", "text/plain"))
    with pytest.raises(ProbeError, match=f"GET {down} answered HTTP 500"):
        probe(down)
    odd = server.answer("/p/odd", fs.Answer(200, b"plain words", "text/plain"))
    with pytest.raises(ProbeError, match=r"cannot tell whether .* serves RSS/Atom or JSON"):
        probe(odd)
    with pytest.raises(ProbeError, match="kind 'csv' reads files"):
        probe(odd, "csv")
    feed = server.answer("/p/feed2", fs.Answer(200, fs.fixture_bytes("rss_good.xml"), "application/rss+xml"))
    with pytest.raises(ProbeError, match="mapping applies to JSON sources only"):
        probe(feed, mapping={"category": "=x"})
    with pytest.raises(ProbeError, match=r"must say where 'category' comes from"):
        probe(odd, "json", mapping={"value": "v"})


def test_detect_url_kind() -> None:
    assert detect_url_kind("application/json", b"") == "json"
    assert detect_url_kind("application/rss+xml", b"") == "rss"
    assert detect_url_kind("", b"\xef\xbb\xbf  <?xml") == "rss"
    assert detect_url_kind("text/plain", b"{}") == "json"
    assert detect_url_kind("text/plain", b"hello") is None


def test_saved_feeds_are_detected_and_read_like_fetched_ones(tmp_path: Path) -> None:
    assert detect_file_kind(FIXTURES / "rss_good.xml") == "rss"
    assert detect_file_kind(FIXTURES / "atom_good.xml") == "rss"
    bare = tmp_path / "feed"
    bare.write_bytes((FIXTURES / "atom_good.xml").read_bytes())
    assert detect_file_kind(bare) == "rss"
    events, dead = probe(str(FIXTURES / "rss_bad_items.xml"), station_id="news-1", now_s=NOW)
    assert all(e.station_id == "news-1" for e in events)
    assert all("rss_bad_items.xml item" in d.reason for d in dead if d.field != "body")


def test_a_bad_station_id_is_refused_before_anything_is_read() -> None:
    for sid in ("", "has space", "x" * 65):
        with pytest.raises(ProbeError, match=r"station id .* is not valid"):
            probe(str(FIXTURES / "ticks.csv"), station_id=sid, source_kind="market_price")

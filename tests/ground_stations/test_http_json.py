"""HTTP JSON source against a real HTTP server on 127.0.0.1 (fixtures/feed_server.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.ground_stations.base import SourceError
from convergence.ground_stations.http_json import HttpJsonSource, get_path, map_item, parse_mapping
from convergence.stations import StationInfo
from convergence.wire import validate_many

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = 1_714_600_000.0  # 2024-05-01T21:46:40Z
T12 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
QUAKES = StationInfo("quake-feed", "sensor")
QUAKE_MAP = {"event_time_s": "ts", "category": "type", "value": "magnitude", "text": "title",
             "lat": "geo.lat", "lon": "geo.lon"}
JSON_CT = "application/json"




import feed_server as fs  # noqa: E402 - on sys.path via tests/conftest.py


def poll(src: HttpJsonSource, now_s: float = NOW) -> list[dict[str, Any]]:
    return asyncio.run(src.poll(now_s))


def serve_json(server: Any, path: str, doc: Any, **kw: Any) -> str:
    return str(server.answer(path, fs.Answer(200, orjson.dumps(doc), JSON_CT, **kw)))


# -- mapping ------------------------------------------------------------------------------
def test_items_are_mapped_through_dotted_paths(server: Any) -> None:
    url = server.answer("/quakes", fs.Answer(200, fs.fixture_bytes("quakes.json"), JSON_CT))
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, items_path="data.items", timeout_s=2.0)
    recs = poll(src)
    assert [(r["category"], r["value"], r["event_time_s"]) for r in recs] == [
        ("quake", 4.6, T12), ("quake", 3.1, T12 + 600), ("blast", 2.0, T12 + 1200)]  # ms in q3
    assert (recs[0]["lat"], recs[0]["lon"], recs[0]["text"]) == (35.2, 25.1, "M 4.6 - Crete")
    assert "lat" not in recs[2] and "lon" not in recs[2]  # optional and absent: left out
    assert {(r["source"], r["station_id"], r["source_kind"]) for r in recs} == {
        ("127.0.0.1", "quake-feed", "sensor")}
    good, bad = validate_many(recs, now_s=NOW)
    assert len(good) == 3 and bad == [] and src.drain_rejects() == []
    assert server.seen("/quakes")[0]["Accept"] == "application/json"


def test_a_bare_list_in_event_field_names_needs_no_mapping(server: Any) -> None:
    url = serve_json(server, "/bare", [
        {"event_time_s": T12, "category": "protest", "value": 12, "source": "desk-3"},
        {"event_time_s": T12 + 1, "category": "protest", "value": 2},
        {"event_time_s": T12 + 2, "category": "protest"}])
    src = HttpJsonSource(url, StationInfo("soc-1", "osint_social"), timeout_s=2.0)
    recs = poll(src)
    assert [(r["value"], r["source"]) for r in recs] == [(12.0, "desk-3"), (2.0, "127.0.0.1")]
    # without a mapping the items must be events: value is required like in the schema
    assert "item 2: value path 'value' is missing" in src.drain_rejects()[0].reason


def test_constants_and_defaults(server: Any) -> None:
    url = serve_json(server, "/const", {"features": [{"id": 7}]})
    src = HttpJsonSource(url, QUAKES, {"category": "=quake", "value": "=2.5", "source": "=usgs"},
                         items_path="features", timeout_s=2.0)
    assert poll(src) == [{"event_time_s": NOW, "value": 2.5, "station_id": "quake-feed",
                          "source_kind": "sensor", "source": "usgs", "category": "quake"}]


# -- conditional GET and dedup ------------------------------------------------------------
def test_etag_is_sent_back_and_304_yields_nothing(server: Any) -> None:
    url = server.conditional("/etag.json", fs.fixture_bytes("quakes.json"), JSON_CT, etag='W/"q-7"')
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, items_path="data.items", timeout_s=2.0)
    assert len(poll(src)) == 3
    assert poll(src) == []
    assert server.seen("/etag.json")[1]["If-None-Match"] == 'W/"q-7"'


def test_items_repeated_across_polls_are_emitted_once(server: Any) -> None:
    a = {"ts": T12, "type": "quake", "magnitude": 3.0}
    b = {"ts": T12 + 5, "type": "quake", "magnitude": 3.5}
    c = {"ts": T12 + 9, "type": "quake", "magnitude": 5.0}
    url = server.sequence("/repeat.json", [fs.Answer(200, orjson.dumps(x), JSON_CT)
                                           for x in ([a, b], [b, a, c], [c])])
    src = HttpJsonSource(url, QUAKES, {"event_time_s": "ts", "category": "type", "value": "magnitude"},
                         timeout_s=2.0)
    assert [r["value"] for r in poll(src)] == [3.0, 3.5]
    assert [r["value"] for r in poll(src)] == [5.0]
    assert poll(src) == [] and src.duplicates == 3


# -- bad input: dead letters ---------------------------------------------------------------
def test_wrong_types_missing_fields_future_and_huge_values_are_dead_letters(server: Any) -> None:
    items = [
        {"ts": T12, "type": "quake", "magnitude": 4.0, "title": "ok"},
        {"type": "quake", "magnitude": 4.0},                                   # 1 no time
        {"ts": T12, "type": "quake", "magnitude": "big"},                      # 2 not a number
        {"ts": T12, "type": {"code": 3}, "magnitude": 1.0},                    # 3 category object
        7,                                                                      # 4 not an object
        {"ts": T12, "type": "quake", "magnitude": 1.0, "geo": {"lat": 40.0}},  # 5 lat without lon
        {"ts": 4_102_444_800, "type": "quake", "magnitude": 1.0},              # 6 year 2100
        {"ts": T12, "type": "quake", "magnitude": 1.0, "title": "x" * 5000},   # 7 huge text
        {"ts": T12, "type": "quake", "magnitude": None},                       # 8 null
        {"ts": "last tuesday", "type": "quake", "magnitude": 1.0},             # 9 bad time
        {"ts": T12, "type": "q" * 65, "magnitude": 1.0},                       # 10 huge category
        {"ts": T12, "type": "quake", "magnitude": True},                       # 11 boolean
    ]
    url = serve_json(server, "/bad-items", {"data": {"items": items}})
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, items_path="data.items", timeout_s=2.0)
    assert [r["text"] for r in poll(src)] == ["ok"]
    dead = {int(d.reason.split(" item ")[1].split(":")[0]): d for d in src.drain_rejects()}
    assert sorted(dead) == list(range(1, 12))
    assert all(d.reason.startswith(f"{url} item ") and d.stage == "source.json" for d in dead.values())
    assert dead[1].field == "event_time_s" and "path 'ts' is missing from the item" in dead[1].reason
    assert dead[2].field == "value" and "at 'magnitude': 'big' is not a number" in dead[2].reason
    assert dead[3].field == "category" and "is a dict, not text" in dead[3].reason
    assert dead[4].field == "item" and "is a JSON int, not an object" in dead[4].reason
    assert dead[5].field == "lat/lon"
    assert dead[6].field == "event_time_s" and "in the future" in dead[6].reason
    assert dead[7].field == "text" and "5000 characters long" in dead[7].reason
    assert dead[8].field == "value" and "is null" in dead[8].reason
    assert dead[9].field == "event_time_s" and "neither unix seconds nor ISO-8601" in dead[9].reason
    assert dead[10].field == "category" and "65 characters long" in dead[10].reason
    assert dead[11].field == "value" and "True is not a number" in dead[11].reason
    assert orjson.loads(dead[2].payload) == items[2]
    assert poll(src) == [] and src.drain_rejects() == []  # each bad item is reported once


def test_malformed_json_is_a_dead_letter_then_a_source_error(server: Any) -> None:
    url = server.answer("/broken.json", fs.Answer(200, b'{"data": {"items": [1, 2', JSON_CT))
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, items_path="data.items", timeout_s=2.0,
                         max_unreadable=2)
    assert poll(src) == []
    assert "answer is not valid JSON" in src.rejects[0].reason and url in src.rejects[0].reason
    with pytest.raises(SourceError, match=r"unreadable JSON 2 polls in a row .* check the URL"):
        poll(src)


def test_a_wrong_items_path_is_a_dead_letter_with_a_hint(server: Any) -> None:
    url = serve_json(server, "/obj", {"data": {"items": []}})
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, items_path="data.results", timeout_s=2.0)
    assert poll(src) == []
    assert "has no 'data.results' (stopped at 'data.results'); check items_path" in \
        src.drain_rejects()[0].reason
    src = HttpJsonSource(url, QUAKES, QUAKE_MAP, timeout_s=2.0)
    assert poll(src) == []
    assert "the answer is a JSON dict, not a list; set items_path" in src.drain_rejects()[0].reason


def test_an_oversized_answer_is_a_dead_letter(server: Any) -> None:
    url = serve_json(server, "/big", [{"category": "x" * 50, "value": 1}] * 200)
    src = HttpJsonSource(url, QUAKES, timeout_s=2.0, max_bytes=2000)
    assert poll(src) == []
    (dl,) = src.drain_rejects()
    assert "larger than max_bytes=2000" in dl.reason and len(dl.payload) <= 2000


# -- the URL cannot be read --------------------------------------------------------------
def test_http_5xx_and_timeouts_are_source_errors_naming_the_url(server: Any) -> None:
    url = server.answer("/down.json", fs.Answer(502, b"bad gateway", "text/plain"))
    with pytest.raises(SourceError, match=rf"GET {url} answered HTTP 502 Bad Gateway"):
        poll(HttpJsonSource(url, QUAKES, QUAKE_MAP, timeout_s=2.0))
    url = serve_json(server, "/slow.json", [], delay_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=rf"GET {url}: no complete answer within 0\.5 s"):
        poll(HttpJsonSource(url, QUAKES, QUAKE_MAP, timeout_s=0.5))
    assert time.monotonic() - t0 < 1.5


def test_extra_headers_are_sent(server: Any) -> None:
    url = serve_json(server, "/auth.json", [])
    poll(HttpJsonSource(url, QUAKES, QUAKE_MAP, timeout_s=2.0, headers={"X-Api-Key": "k"}))
    assert server.seen("/auth.json")[0]["X-Api-Key"] == "k"


# -- helpers ------------------------------------------------------------------------------
def test_mapping_is_checked_when_the_source_is_built() -> None:
    with pytest.raises(ValueError, match="'magnitude' is not an event field"):
        parse_mapping({"magnitude": "mag", "category": "=x"})
    with pytest.raises(ValueError, match="must say where 'category' comes from"):
        parse_mapping({"value": "mag"})
    with pytest.raises(ValueError, match="constant '=lots' is not a number"):
        parse_mapping({"category": "=x", "value": "=lots"})
    with pytest.raises(ValueError, match="empty segment"):
        parse_mapping({"category": "a..b"})
    with pytest.raises(ValueError, match="items_path"):
        HttpJsonSource("http://127.0.0.1/x", QUAKES, {"category": "=x"}, items_path="data.")


def test_get_path_walks_objects_and_lists() -> None:
    doc = {"features": [{"geometry": {"coordinates": [25.1, 35.2]}}]}
    assert get_path(doc, "features.0.geometry.coordinates.1") == 35.2
    assert get_path(doc, "features.-1.geometry.coordinates.0") == 25.1
    with pytest.raises(KeyError, match=r"features\.3"):
        get_path(doc, "features.3.geometry")
    with pytest.raises(KeyError, match=r"features\.0\.geometry\.coordinates\.x"):
        get_path(doc, "features.0.geometry.coordinates.x")


def test_map_item_turns_numeric_codes_into_names() -> None:
    rec = map_item({"t": 3, "v": "2"}, parse_mapping({"category": "t", "value": "v"}), now_s=NOW)
    assert (rec["category"], rec["value"]) == ("3", 2.0)


# -- property tests (hypothesis): any answer is records or dead letters, never an exception --

_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=12), st.just(T12), st.just("2024-05-01T12:00:00Z"))
_ITEM = st.dictionaries(st.sampled_from(["ts", "type", "magnitude", "title", "geo", "x"]),
                        _LEAF | st.dictionaries(st.sampled_from(["lat", "lon"]), _LEAF), max_size=6)


@given(st.binary(max_size=400)
       | st.lists(_ITEM | _LEAF, max_size=8).map(lambda v: json.dumps(v).encode()))
def test_any_json_answer_is_records_or_one_dead_letter_per_item(body: bytes) -> None:
    src = HttpJsonSource("http://api.example/q", QUAKES, QUAKE_MAP)
    recs = src.records_from(body, NOW)
    dead = src.drain_rejects()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        assert recs == [] and len(dead) == 1  # an unreadable answer is one dead letter
        return
    if isinstance(doc, list):
        assert len(recs) + len(dead) + src.duplicates == len(doc)
    assert validate_many(recs, now_s=NOW)[1] == []

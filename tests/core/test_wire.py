from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from convergence.schema import make_event
from convergence.wire import MAX_EVENTS_PER_MESSAGE, decode_batch, encode_batch, encode_raw

NOW = 1_800_000_000.0


def test_round_trip_many_events() -> None:
    events = [make_event(f"s{i}", "market_price", NOW - i, "trade", 100.0 + i) for i in range(100)]
    good, bad = decode_batch(encode_batch(events), now_s=NOW)
    assert good == events and bad == []


def test_integer_coordinates_round_trip_with_a_matching_content_hash() -> None:
    e = make_event("s1", "sensor", NOW, "seismic", 4, lat=35, lon=25)
    assert (e.lat, e.lon) == (35.0, 25.0) and isinstance(e.lat, float) and isinstance(e.lon, float)
    assert e == make_event("s1", "sensor", NOW, "seismic", 4.0, lat=35.0, lon=25.0)
    good, bad = decode_batch(encode_batch([e]), now_s=NOW)
    assert good == [e] and bad == []


def test_bad_events_become_dead_letters_good_ones_flow() -> None:
    good_rec = make_event("s1", "sensor", NOW, "seismic", 1.0).to_dict()
    msg = encode_raw([good_rec, {"station_id": "s2", "source_kind": "sensor"}, good_rec | {"value": "x"}])
    good, bad = decode_batch(msg, now_s=NOW)
    assert len(good) == 1
    assert [d.field for d in bad] == ["event_time_s", "value"]


def test_not_json_is_one_dead_letter() -> None:
    good, bad = decode_batch(b"\x00not json", now_s=NOW)
    assert good == [] and len(bad) == 1 and "not valid JSON" in bad[0].reason


def test_wrong_shapes_and_versions() -> None:
    for payload in (b"[1,2]", b'{"v": 1, "events": 3}', b'"str"'):
        good, bad = decode_batch(payload, now_s=NOW)
        assert good == [] and len(bad) == 1 and bad[0].field == "message"
    good, bad = decode_batch(b'{"v": 2, "events": []}', now_s=NOW)
    assert bad[0].field == "v"


def test_single_bare_event_is_accepted() -> None:
    e = make_event("s1", "sensor", NOW, "air", 3.0)
    good, bad = decode_batch(orjson.dumps(e.to_dict()), now_s=NOW)
    assert good == [e] and bad == []


def test_too_many_events_rejected_whole() -> None:
    rec = make_event("s1", "sensor", NOW, "air", 3.0).to_dict()
    good, bad = decode_batch(encode_raw([rec] * (MAX_EVENTS_PER_MESSAGE + 1)), now_s=NOW)
    assert good == [] and "limit" in bad[0].reason


def test_oversized_event_rejected() -> None:
    rec = make_event("s1", "sensor", NOW, "air", 3.0).to_dict() | {"source": "y" * 100}
    rec["text"] = "x" * 2000
    rec.pop("event_id")  # the content changed, so the old content hash no longer applies
    good, bad = decode_batch(encode_raw([rec]), now_s=NOW)
    assert len(good) == 1 and bad == []  # within limits: 2000 chars < 16 KiB
    huge = rec | {"text": "z" * 2048, "category": "c"}
    assert "event_id" not in huge
    good, bad = decode_batch(encode_raw([huge]), now_s=NOW)
    assert len(good) == 1 and bad == []  # only the tighter limit below rejects it
    from convergence.schema import Limits

    good, bad = decode_batch(encode_raw([huge]), now_s=NOW, limits=Limits(max_event_bytes=1024))
    assert good == [] and len(bad) == 1
    assert bad[0].field == "event" and "bytes" in bad[0].reason


# -- issue 11: decode_batch never raises; one dead letter per rejected input ------------


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deep_nesting_at_any_depth_is_one_dead_letter() -> None:
    for depth in (200, 300, 990, 1000, 5000, 200_000):
        for template in ('{"v":1,"events":[%s]}', "%s",
                         '{"v":1,"events":[{"station_id":"s1","value":%s}]}',
                         '{"v":1,"events":[{"station_id":"s1","x":{"y":%s}}]}'):
            good, bad = decode_batch((template % _nest(depth)).encode(), now_s=NOW)
            assert good == [] and len(bad) == 1, (depth, template)
            assert len(bad[0].payload) <= 4096 and bad[0].reason


def test_a_megabyte_field_becomes_a_bounded_dead_letter() -> None:
    ok = make_event("s1", "sensor", NOW, "seismic", 1.0).to_dict()
    for field in ("station_id", "text", "category", "source"):
        msg = encode_raw([ok | {field: "x" * 1_000_000}, ok])
        good, bad = decode_batch(msg, now_s=NOW)
        assert len(good) == 1 and len(bad) == 1, field
        d = bad[0]
        assert len(d.payload) <= 4096 and d.payload_size >= 1_000_000
        assert d.station_id in (None, "s1") and len(orjson.dumps(d.to_dict())) < 20_000


# -- property tests (hypothesis): arbitrary input never raises, one dead letter each -------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
FIELDS = ("station_id", "source_kind", "event_time_s", "category", "value", "text", "lat",
          "lon", "source", "event_id", "schema_version")
GOOD = make_event("s1", "sensor", NOW - 5, "seismic", 1.0).to_dict()
# an event with some fields replaced by anything: near misses exercise every check
EVENTS = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6).map(lambda d: {**GOOD, **d})


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_are_one_dead_letter(data: bytes) -> None:
    good, bad = decode_batch(data, now_s=NOW)
    if not good and not bad:  # only a well-formed message with no events says nothing
        assert orjson.loads(data)["events"] == []
    if bad and not good and bad[0].field in ("message", "v", "events"):
        assert len(bad) == 1  # a message-level rejection is exactly one dead letter
    for d in bad:
        assert d.reason and len(d.payload) <= 4096 and d.payload_size >= 0


@given(st.lists(EVENTS | JSON, max_size=8))
def test_every_item_of_a_batch_is_an_event_or_exactly_one_dead_letter(items: list[Any]) -> None:
    try:
        msg = encode_raw(items)
    except orjson.JSONEncodeError:  # not JSON at all (e.g. NaN keys): the raw repr is the input
        msg = repr(items).encode()
    good, bad = decode_batch(msg, now_s=NOW)
    if len(bad) == 1 and not good and bad[0].field == "message":
        return  # the whole message was not JSON: one dead letter for it
    assert len(good) + len(bad) == len(items)
    for d in bad:
        assert d.field and d.reason and len(d.payload) <= 4096


@given(JSON)
def test_any_json_document_is_events_or_dead_letters(doc: Any) -> None:
    try:
        msg = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return
    good, bad = decode_batch(msg, now_s=NOW)
    assert good or bad


@given(st.integers(1, 3000), st.sampled_from(['{"v":1,"events":[%s]}', "%s",
                                              '{"v":1,"events":[{"station_id":"s1","value":%s}]}',
                                              '{"station_id":"s1","text":%s}']),
       st.sampled_from(["[%s]", '{"k":%s}']))
def test_nesting_at_any_depth_is_one_dead_letter(depth: int, template: str, level: str) -> None:
    inner = "1"
    for _ in range(depth):
        inner = level % inner
    good, bad = decode_batch((template % inner).encode(), now_s=NOW)
    assert good == [] and len(bad) == 1 and len(bad[0].payload) <= 4096

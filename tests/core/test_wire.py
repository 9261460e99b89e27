from __future__ import annotations

import orjson

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

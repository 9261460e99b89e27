"""The columnar path agrees with the per-event path: same events, ids and dead letters.

:func:`convergence.wire.decode_columns` / :func:`~convergence.wire.validate_columns` must
accept exactly what :func:`~convergence.wire.decode_each` / :func:`~convergence.wire.validate_each`
accept, with the same content ids, and reject the rest with the very same dead letters (id,
reason, excerpt), on random valid and invalid batches.
"""

from __future__ import annotations

import decimal
import math
import struct
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence import wire
from convergence.schema import (
    EventBatch,
    Limits,
    content_digests,
    content_id,
    make_event,
    round6,
    screen_columns,
)
from convergence.wire import (
    decode_batch,
    decode_columns,
    decode_each,
    encode_raw,
    validate_columns,
    validate_each,
    validate_many,
)

NOW = 1_800_000_000.0
LIM = Limits()


@pytest.fixture(autouse=True)
def _fast_path_never_breaks() -> Iterator[None]:
    """Bad input is the per-event path's business, never an exception in the fast path
    (which would be caught, logged and answered by the per-event path anyway)."""
    wire._fast_path_failed = False
    yield
    assert not wire._fast_path_failed


def _same(data: bytes | str, *, limits: Limits = LIM, now_s: float = NOW) -> EventBatch:
    """Both paths on one message; asserts they agree and returns the batch."""
    ref_good, ref_bad = decode_each(data, now_s=now_s, limits=limits)
    batch, bad = decode_columns(data, now_s=now_s, limits=limits)
    assert batch.events() == ref_good
    assert batch.event_ids() == [e.event_id for e in ref_good]
    assert bad == ref_bad
    assert len(batch) == len(batch.event_hash) == len(batch.kind) == len(batch.lat)
    return batch


def _same_records(items: list[Any], *, limits: Limits = LIM) -> EventBatch:
    ref_good, ref_bad = validate_each(items, now_s=NOW, limits=limits)
    batch, bad = validate_columns(items, now_s=NOW, limits=limits)
    assert batch.events() == ref_good
    assert bad == ref_bad
    return batch


# -- strategies: near-valid events, each field sometimes wrong -------------------------

STATIONS = st.sampled_from(["news-eu-001", "s1", "a", "x" * 64, "x" * 65, "abc\n", "x" * 64 + "\n",
                            "bad id!", "", " ", "s.1:2-3_4", "é"])
KINDS = st.sampled_from(["sensor", "osint_news", "osint_social", "market_price",
                         "market_volume", "weather", ""])
CATS = st.sampled_from(["seismic", "conflict", "", "  ", "c" * 64, "c" * 65, "],[", "\u2028",
                        "a\"b\\c"])
TEXTS = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
    ["],[", "a],[1,b", "x" * 2048, "x" * 2049, "\x00\x1f", "😀" * 10]))
SOURCES = st.one_of(st.none(), st.sampled_from(["wire-00", "", "s" * 128, "s" * 129, "],[1,"]))
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TIMES = st.one_of(
    st.floats(NOW - 7 * 86400.0 - 10, NOW + 310, allow_nan=False),
    st.sampled_from([NOW - 7 * 86400.0, NOW + 300.0, NOW + 300.0000001, int(NOW), True, "1",
                     (2 * 10**6 * int(NOW) + 1) / 2e6]),
    st.integers(int(NOW) - 10, int(NOW) + 10))
VALUES = st.one_of(FINITE, st.integers(-2 * 10**15, 2 * 10**15),
                   st.sampled_from([0, -0.0, 1e15, -1e15, 1e15 + 1, 10**15, 10**15 + 1, 2**53 + 1,
                                    10**30, True, "1", None, [1]]))
COORD = st.one_of(st.none(), FINITE, st.integers(-200, 200),
                  st.sampled_from([90, -90.0, 90.0000001, 180, -180.5, "1"]))
VERSIONS = st.sampled_from([1, 1, 1, 1.0, True, 2, None, "1"])


GOOD_STATIONS = st.sampled_from(["news-eu-001", "s1", "a", "x" * 64, "abc\n", "s.1:2-3_4"])
GOOD_KINDS = st.sampled_from(["sensor", "osint_news", "osint_social", "market_price",
                              "market_volume"])
GOOD_TIMES = st.one_of(st.floats(NOW - 7 * 86400.0, NOW + 300, allow_nan=False),
                       st.integers(int(NOW) - 10, int(NOW) + 10))
GOOD_CATS = st.sampled_from(["seismic", "conflict", "c" * 64, "],[", "\u2028", "a\"b\\c"])
GOOD_VALUES = st.one_of(st.floats(-1e15, 1e15), st.integers(-10**15, 10**15),
                        st.sampled_from([0, -0.0, 2**53 - 1]))
GOOD_COORDS = st.tuples(st.one_of(st.floats(-90, 90), st.integers(-90, 90)),
                        st.one_of(st.floats(-180, 180), st.integers(-180, 180)))


def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], any_: st.SearchStrategy[Any]) -> Any:
    """Usually a valid value, one time in eight anything from ``any_`` (near misses)."""
    return draw(any_) if draw(st.integers(0, 7)) == 0 else draw(good)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {"station_id": _mostly(draw, GOOD_STATIONS, STATIONS),
                           "source_kind": _mostly(draw, GOOD_KINDS, KINDS),
                           "event_time_s": _mostly(draw, GOOD_TIMES, TIMES),
                           "category": _mostly(draw, GOOD_CATS, CATS),
                           "value": _mostly(draw, GOOD_VALUES, VALUES)}
    if draw(st.booleans()):
        rec["text"] = _mostly(draw, st.text(max_size=40), TEXTS)
    if draw(st.booleans()):
        rec["source"] = _mostly(draw, st.sampled_from(["wire-00", "", "s" * 128]), SOURCES)
    if draw(st.booleans()):
        rec["lat"], rec["lon"] = draw(GOOD_COORDS)
        if draw(st.integers(0, 7)) == 0:
            rec[draw(st.sampled_from(["lat", "lon"]))] = draw(COORD)
    if draw(st.integers(0, 7)) == 0:
        rec["schema_version"] = draw(VERSIONS)
    which = draw(st.integers(0, 11))
    if which == 0:  # a field missing
        rec.pop(draw(st.sampled_from(sorted(rec))))
    elif which == 1:  # an unknown field
        rec[draw(st.sampled_from(["url", "extra", "v"]))] = draw(st.integers())
    elif which in (2, 3, 4):  # the right id, or a wrong one
        try:
            good = make_event(rec["station_id"], rec["source_kind"], rec["event_time_s"],
                              rec["category"], rec["value"], text=rec.get("text"),
                              lat=rec.get("lat"), lon=rec.get("lon"), source=rec.get("source"))
            rec["event_id"] = good.event_id if which != 4 else good.event_id[::-1]
        except Exception:
            rec["event_id"] = "0" * 16
    return rec


GOOD_ONLY = st.builds(
    lambda sid, kind, t, cat, v, text, src, ll: {
        "station_id": sid, "source_kind": kind, "event_time_s": t, "category": cat, "value": v,
        **({"text": text} if text is not None else {}),
        **({"source": src} if src is not None else {}),
        **({"lat": ll[0], "lon": ll[1]} if ll is not None else {})},
    st.sampled_from(["news-eu-001", "price-mena-003", "s1"]),
    st.sampled_from(["sensor", "osint_news", "market_price"]),
    st.floats(NOW - 1000, NOW, allow_nan=False), st.sampled_from(["seismic", "conflict"]),
    st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000)),
    st.one_of(st.none(), st.text(max_size=30)), st.one_of(st.none(), st.just("wire-01")),
    st.one_of(st.none(), st.tuples(st.floats(-90, 90), st.floats(-180, 180))))


@given(st.lists(events(), max_size=12))
def test_random_batches_get_the_same_verdicts_both_ways(items: list[dict[str, Any]]) -> None:
    try:
        msg = encode_raw(items)
    except orjson.JSONEncodeError:
        return
    _same(msg)
    _same_records(items)


@given(st.lists(GOOD_ONLY, min_size=1, max_size=30))
def test_valid_batches_are_accepted_whole_with_the_per_event_ids(items: list[dict[str, Any]]) -> None:
    batch = _same(encode_raw(items))
    assert len(batch) == len(items)


@given(st.lists(GOOD_ONLY, min_size=1, max_size=8), st.data())
def test_any_spelling_of_a_number_gives_the_same_id(items: list[dict[str, Any]],
                                                    data: st.DataObject) -> None:
    """JSON numbers as other producers write them (exponents, -0, trailing zeros, big
    integers): the typed decoder must read the same float orjson does."""
    text = encode_raw(items).decode()
    spellings = data.draw(st.lists(st.sampled_from(
        ["1E2", "-0", "-0.0", "0e0", "1.000000", "123456789012345678901234567890",
         "9007199254740993", "1e-320", "2.2250738585072011e-308", "1.5e+3", "-7.0e-1"]),
        min_size=1, max_size=3))
    for s in spellings:
        text = text.replace('"category":', f'"value":{s},"category":', 1)
    _same(text.encode())


def test_the_documented_examples_of_each_check() -> None:
    ok = make_event("s1", "sensor", NOW, "seismic", 1.0).to_dict()
    cases = [ok, ok | {"value": "x"}, ok | {"value": True}, ok | {"event_time_s": NOW + 301},
             ok | {"lat": 1.0}, ok | {"lat": 1, "lon": 2}, ok | {"lat": 91.0, "lon": 0},
             ok | {"schema_version": 2}, ok | {"schema_version": 1.0}, ok | {"schema_version": True},
             ok | {"event_id": "0" * 16}, ok | {"url": "http://x"}, {k: v for k, v in ok.items()
                                                                   if k != "category"},
             ok | {"text": "x" * 2049}, ok | {"station_id": "abc\n"}, ok | {"source": None},
             ok | {"text": "a],[1,b"}, ok | {"value": -0.0}, ok | {"value": 0}, 7, None, [ok]]
    for i in range(len(cases)):
        _same(encode_raw(cases[: i + 1]))
        _same(encode_raw(cases[i:]))


def test_oversized_events_are_measured_by_the_per_event_path() -> None:
    rec = {"station_id": "s1", "source_kind": "sensor", "event_time_s": NOW, "category": "c",
           "value": 1.0, "text": "\x01" * 2048, "source": "y" * 100}
    for limit in (1024, 4096, 12_500, 12_600, 13_000, 16_384):
        _same(encode_raw([rec, rec | {"text": "z"}]), limits=Limits(max_event_bytes=limit))


@pytest.mark.parametrize("payload", [
    b"", b"{not json", b"[1,2]", b'{"v": 2, "events": []}', b'{"v": 1.0, "events": []}',
    b'{"v": true, "events": []}', b'{"events": [], "extra": 1}', b'"x"', b"\xff",
    b'{"station_id": "s1", "source_kind": "sensor", "event_time_s": 1.8e9, "category": "c", "value": 1}',
    b'{"v": 1, "events": [{"station_id": "\\ud800", "source_kind": "sensor"}]}',
    b'{"v": 1, "events": [], "events": [{"station_id": "s1"}]}',
    b'{"v": 1, "events": [1e400]}',
])
def test_message_level_rejections_are_the_per_event_ones(payload: bytes) -> None:
    _same(payload)


def test_a_huge_message_and_a_deep_one() -> None:
    rec = make_event("s1", "sensor", NOW, "air", 3.0).to_dict()
    _same(encode_raw([rec] * 10_001))
    _same(encode_raw([rec] * 3), limits=Limits(max_event_bytes=0))
    _same(('{"v":1,"events":[' + "[" * 2000 + "]" * 2000 + "]}").encode())


class Kind(StrEnum):
    SENSOR = "sensor"


class OddStr(str):
    def __str__(self) -> str:
        return "market_price"


def test_python_objects_of_odd_types_get_the_per_event_verdict() -> None:
    ok = {"station_id": "s1", "source_kind": "sensor", "event_time_s": NOW, "category": "c",
          "value": 1.0}
    odd = [ok | {"value": np.float64(2.0)}, ok | {"value": decimal.Decimal("2.5")},
           ok | {"value": math.nan}, ok | {"value": math.inf}, ok | {"lat": math.nan, "lon": 1.0},
           ok | {"source_kind": Kind.SENSOR}, ok | {"source_kind": OddStr("sensor")},
           ok | {"value": 10**400}, ok | {"event_time_s": np.float32(NOW)}, ok | {1: 2},
           ok | {"text": "\ud800"}, ok | {"category": "\udcff"}, ok | {"value": True},
           ok | {"schema_version": np.int64(1)}, {**ok, "station_id": OddStr("s1")}, ok]
    _same_records(odd)
    for rec in odd:
        _same_records([ok, rec, ok])


def test_validate_many_and_decode_batch_keep_their_contract() -> None:
    e = make_event("s1", "sensor", NOW, "seismic", 1.0, text="t", lat=1, lon=2, source="w")
    good, bad = validate_many(iter([e.to_dict(), {"x": 1}]), now_s=NOW)
    assert good == [e] and [d.field for d in bad] == ["station_id"]
    good, bad = decode_batch(encode_raw([e.to_dict()]), now_s=NOW)
    assert good == [e] and bad == []


# -- the pieces ---------------------------------------------------------------------------


def _halfway(k: int) -> float:
    return (k + 0.5) / 1e6


@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-3e9, 3e9),
    st.integers(-3 * 10**15, 3 * 10**15).map(_halfway),
    st.integers(-3 * 10**15, 3 * 10**15).map(lambda k: math.nextafter(_halfway(k), math.inf)),
    st.integers(-3 * 10**15, 3 * 10**15).map(lambda k: math.nextafter(_halfway(k), -math.inf)),
    st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0])
    .filter(math.isfinite)), max_size=50))
def test_round6_is_round_bit_for_bit(xs: list[float]) -> None:
    got = round6(xs)
    want = [round(x, 6) for x in xs]
    assert [struct.pack("<d", g) for g in got] == [struct.pack("<d", w) for w in want]


@given(st.lists(st.tuples(STATIONS, KINDS, st.floats(-1e12, 1e12), CATS, FINITE, TEXTS,
                          st.one_of(st.none(), st.floats(-90, 90)), SOURCES), max_size=20))
def test_content_digests_are_content_ids(rows: list[tuple[Any, ...]]) -> None:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 8
    sid, kind, t, cat, v, text, lat, src = cols
    digests = content_digests(sid, kind, t, cat, v, text, lat, lat, src)
    want = [content_id(*r[:6], r[6], r[6], r[7]) for r in rows]
    assert [digests[8 * i:8 * i + 8].hex() for i in range(len(rows))] == want


def test_screen_columns_leaves_every_doubtful_row_to_the_per_event_path() -> None:
    n = 4
    acc, rows, undecided = screen_columns(
        ["s1", "s1", "s1", "s1"], ["sensor"] * n, [NOW, NOW, NOW + 1e6, NOW], ["c"] * n,
        [1.0, 2.0, 3.0, 4.0], [None] * n, [None] * n, [None] * n, [None] * n,
        [None, "0" * 16, None, None], [1, 1, 1, 2], now_s=NOW)
    assert rows.tolist() == [0] and undecided.tolist() == [1, 2, 3] and len(acc) == 1


def test_an_event_batch_round_trips_its_events() -> None:
    evs = [make_event(f"s{i}", "osint_news", NOW - i, "c", float(i), text=None if i % 2 else "t",
                      lat=i if i % 3 else None, lon=-i if i % 3 else None, source="w")
           for i in range(7)]
    b = EventBatch.from_events(evs)
    assert b.events() == evs and len(EventBatch.concat([b, EventBatch.empty(), b])) == 14
    assert b.take(np.array([6, 0])).events() == [evs[6], evs[0]]
    assert EventBatch.empty().events() == [] and EventBatch.concat([]).events() == []


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 4)), max_size=30))
def test_ensure_many_registers_as_ensure_one_by_one_does(rows: list[tuple[str, int]]) -> None:
    from convergence.schema import SOURCE_KINDS
    from convergence.stations import StationInfo, StationRegistry

    one = StationRegistry([StationInfo("b", "sensor")])
    many = StationRegistry([StationInfo("b", "sensor")])
    want = [one.ensure(sid, SOURCE_KINDS[k]) for sid, k in rows]
    got = many.ensure_many([r[0] for r in rows], [r[1] for r in rows]).tolist()
    assert got == want and one.ids() == many.ids()
    assert [i.kind for i in one.stations] == [i.kind for i in many.stations]


MESSAGES = st.lists(st.one_of(
    st.lists(events(), max_size=6).map(lambda items: _encoded(items)),
    st.lists(GOOD_ONLY, min_size=1, max_size=6).map(lambda items: _encoded(items)),
    st.sampled_from([b"", b"{nope", b'{"v": 2, "events": []}', b"[1]"]),
    st.binary(max_size=40)), max_size=8)


def _encoded(items: list[dict[str, Any]]) -> bytes:
    try:
        return encode_raw(items)
    except orjson.JSONEncodeError:
        return repr(items).encode()


@given(MESSAGES)
def test_decoding_many_messages_at_once_is_decoding_each(messages: list[bytes]) -> None:
    from convergence.wire import decode_many

    got = decode_many(messages, now_s=NOW)
    one = [decode_columns(m, now_s=NOW) for m in messages]
    assert got.counts == [len(b) for b, _ in one]
    assert got.dead == [d for _, d in one]
    assert got.events.events() == [e for b, _ in one for e in b.events()]
    assert got.message_of_row().tolist() == [i for i, (b, _) in enumerate(one) for _ in range(len(b))]

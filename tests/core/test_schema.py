from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.schema import (
    Event,
    Limits,
    SourceKind,
    ValidationError,
    content_id,
    dead_letter,
    make_event,
    validate_event,
)

NOW = 1_800_000_000.0


def raw(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"station_id": "news-eu-001", "source_kind": "osint_news",
                            "event_time_s": NOW - 1, "category": "conflict", "value": 0.5}
    base.update(over)
    return base


def test_valid_event_round_trips_and_gets_content_id() -> None:
    e = validate_event(raw(text="hello", lat=1.0, lon=2.0, source="wire-1"), now_s=NOW)
    assert isinstance(e, Event) and e.source_kind is SourceKind.OSINT_NEWS
    assert validate_event(e.to_dict(), now_s=NOW) == e
    assert e.event_id == content_id("news-eu-001", "osint_news", NOW - 1, "conflict", 0.5,
                                    "hello", 1.0, 2.0, "wire-1")
    assert len(e.event_id) == 16


def test_resent_event_has_same_id_and_changed_event_differs() -> None:
    a = make_event("s", "sensor", 10.0, "c", 1.0)
    assert a.event_id == make_event("s", "sensor", 10.0, "c", 1.0).event_id
    assert a.event_id != make_event("s", "sensor", 10.0, "c", 1.5).event_id


def test_an_item_address_is_carried_hashed_and_checked() -> None:
    e = validate_event(raw(text="Port closed", url="https://wire.example/a/1"), now_s=NOW)
    assert e.url == "https://wire.example/a/1" and validate_event(e.to_dict(), now_s=NOW) == e
    # the address is part of the content; an event without one hashes as before addresses existed
    assert e.event_id != validate_event(raw(text="Port closed"), now_s=NOW).event_id
    assert make_event("s", "sensor", 10.0, "c", 1.0).event_id == content_id(
        "s", "sensor", 10.0, "c", 1.0, None, None, None, None)
    for bad in ("javascript:alert(1)", "wire.example/a", "https://", "https://x/a b", "x" * 2000):
        with pytest.raises(ValidationError) as info:
            validate_event(raw(url=bad), now_s=NOW)
        assert info.value.field == "url"


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"station_id": None}, "station_id", "missing"),
        ({"station_id": "bad id!"}, "station_id", "must match"),
        ({"station_id": 12}, "station_id", "not a string"),
        ({"source_kind": "weather"}, "source_kind", "not a known source kind"),
        ({"event_time_s": "yesterday"}, "event_time_s", "not a number"),
        ({"event_time_s": NOW + 3600}, "event_time_s", "in the future"),
        ({"event_time_s": NOW - 30 * 86400}, "event_time_s", "in the past"),
        ({"value": math.nan}, "value", "not finite"),
        ({"value": True}, "value", "not a number"),
        ({"value": 1e20}, "value", "out of range"),
        ({"category": ""}, "category", "empty"),
        ({"category": "x" * 65}, "category", "limit is 64"),
        ({"text": "x" * 5000}, "text", "limit is 2048"),
        ({"lat": 91.0, "lon": 0.0}, "lat", "outside"),
        ({"lat": 1.0}, "lat/lon", "both"),
        ({"schema_version": 9}, "schema_version", "not supported"),
        ({"event_id": "0000000000000000"}, "event_id", "does not match"),
    ],
)
def test_bad_input_names_field_and_reason(over: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event(raw(**over), now_s=NOW)
    assert info.value.field == field
    assert words in info.value.reason


def test_not_a_mapping() -> None:
    with pytest.raises(ValidationError, match="expected a JSON object"):
        validate_event([1, 2], now_s=NOW)


def test_limits_are_configurable() -> None:
    with pytest.raises(ValidationError):
        validate_event(raw(text="abcdef"), now_s=NOW, limits=Limits(max_text_chars=5))


def test_dead_letter_keeps_payload_reason_and_stable_id() -> None:
    err = ValidationError("value", "is not finite")
    d1 = dead_letter("wire", raw(value="x"), err, received_at_s=NOW)
    d2 = dead_letter("wire", raw(value="x"), err, received_at_s=NOW + 5)
    assert d1.dead_letter_id == d2.dead_letter_id
    assert d1.station_id == "news-eu-001" and '"value":"x"' in d1.payload
    assert d1.to_dict()["reason"] == "is not finite"
    big = dead_letter("wire", b"\xff" * 10_000, "garbage", received_at_s=NOW)
    assert len(big.payload) <= 4096 and big.field == ""


# -- issue 11: dead letters stay bounded whatever came in ---------------------------------


def test_an_oversized_station_id_never_reaches_the_dead_letter_raw() -> None:
    huge = "s" * 1_000_000
    err = ValidationError("station_id", "must match [A-Za-z0-9_.:-]{1,64}")
    d = dead_letter("wire", raw(station_id=huge), err, received_at_s=NOW)
    assert d.station_id is None  # an invalid id is no station
    assert len(d.payload) <= 4096 and d.payload.startswith('{"station_id":"sss')
    assert d.payload_size > 1_000_000  # the original size, for whoever reads it
    assert len(str(d.to_dict())) < 10_000
    big_text = dead_letter("wire", "t" * 2_000_000, "too long", received_at_s=NOW)
    assert len(big_text.payload) == 4096 and big_text.payload_size == 2_000_000
    raw_bytes = dead_letter("wire", b"\x00" * 50_000, "garbage", received_at_s=NOW)
    assert len(raw_bytes.payload) == 4096 and raw_bytes.payload_size == 50_000
    long_reason = dead_letter("wire", {}, "r" * 50_000, received_at_s=NOW)
    assert len(long_reason.reason) <= 1000 and long_reason.reason.endswith("(50000 chars)")


def test_deeply_nested_input_makes_a_dead_letter_instead_of_raising() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    d = dead_letter("wire", {"station_id": "s1", "value": deep}, "too deep", received_at_s=NOW)
    assert d.station_id == "s1" and len(d.payload) <= 4096
    assert d.payload_size > 100_000  # about its JSON size, counted without recursion
    with pytest.raises(ValidationError, match="value"):
        validate_event(raw(value=deep), now_s=NOW)


def test_a_hostile_repr_does_not_escape() -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    d = dead_letter("wire", [Bad()], "odd", received_at_s=NOW)
    assert "unprintable" in d.payload or "Bad" in d.payload


# -- property tests (hypothesis): validation says yes or names what is wrong, nothing else ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=15)
_FIELDS = ("station_id", "source_kind", "event_time_s", "category", "value", "text", "lat", "lon",
           "source", "event_id", "schema_version", "extra")


@given(st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6) | _JSON)
def test_validation_returns_an_event_or_raises_a_named_validation_error(over: Any) -> None:
    candidate = {**raw(), **over} if isinstance(over, dict) else over
    try:
        e = validate_event(candidate, now_s=NOW)
    except ValidationError as err:
        assert err.field and err.reason and len(str(err)) < 2000
        d = dead_letter("wire", candidate, err, received_at_s=NOW)
        assert len(d.payload) <= 4096 and len(d.reason) <= 1000
        return
    assert validate_event(e.to_dict(), now_s=NOW) == e  # what passes is stable

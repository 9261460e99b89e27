"""The source interface: the bounded reject buffer, the default hooks, and what the edge checks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from convergence.ground_stations.base import (
    RejectBuffer,
    RejectingSource,
    Source,
    SourceError,
    check_record,
)
from convergence.schema import DeadLetter, Limits, ValidationError

NOW = 1_800_000_000.0


def _record(**over: Any) -> dict[str, Any]:
    return {"station_id": "s1", "source_kind": "sensor", "event_time_s": NOW - 1.0,
            "category": "seismic", "value": 1.5, **over}


# -- RejectBuffer --------------------------------------------------------------------


def test_reject_buffer_needs_room_for_one() -> None:
    with pytest.raises(ValueError):
        RejectBuffer("source.csv", "s", max_kept=0)


def test_reject_buffer_makes_dead_letters_of_its_station_and_drains_them_once() -> None:
    buf = RejectBuffer("source.json", "feed-1")
    # the payload names another station: the buffer's own station is what is recorded
    buf.add({"station_id": "other", "value": "x"}, "value", "item 3: 'x' is not a number", now_s=12.5)
    buf.add("raw line", "", "line 9: unreadable", now_s=13.0)
    assert buf.total == 2 and buf.dropped == 0 and len(buf.items) == 2
    first, second = buf.drain()
    assert (first.stage, first.station_id, first.field, first.reason, first.received_at_s) == (
        "source.json", "feed-1", "value", "item 3: 'x' is not a number", 12.5)
    assert orjson.loads(first.payload) == {"station_id": "other", "value": "x"}
    assert (second.payload, second.station_id, second.field) == ("raw line", "feed-1", "")
    assert buf.drain() == [] and buf.items == [] and buf.total == 2


def test_reject_buffer_counts_what_it_cannot_keep_and_warns_sparingly(
        caplog: pytest.LogCaptureFixture) -> None:
    buf = RejectBuffer("source.csv", "s1", max_kept=2)
    with caplog.at_level(logging.WARNING, logger="convergence.ground_stations.base"):
        for i in range(2003):
            buf.add(f"row {i}", "price", f"line {i}: bad", now_s=1.0)
    assert (buf.total, len(buf.items), buf.dropped) == (2003, 2, 2001)
    assert [d.payload for d in buf.items] == ["row 0", "row 1"]  # the first ones are kept
    # warned at the first drop, then every 1000th
    assert [r.args[2] for r in caplog.records] == [1, 1000, 2000]  # type: ignore[index]
    assert "s1: 1000 dead letter(s) dropped" in caplog.text
    assert "call drain_rejects() after each poll" in caplog.records[0].getMessage()
    buf.drain()
    buf.add("again", "price", "line x: bad", now_s=2.0)
    assert [d.payload for d in buf.items] == ["again"] and buf.dropped == 2001


# -- Source and RejectingSource ------------------------------------------------------


class Quiet(Source):
    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        return []


class Picky(RejectingSource):
    kind = "picky"

    def __init__(self, max_kept: int = 10) -> None:
        self._rejects = RejectBuffer("source.picky", "p1", max_kept=max_kept)

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        self._rejects.add({"n": now_s}, "n", f"refused at {now_s:g}", now_s=now_s)
        return []


def test_a_source_must_implement_poll() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Source()  # type: ignore[abstract]


def test_a_plain_source_has_no_rejects_and_nothing_to_close() -> None:
    src = Quiet()
    assert src.kind == "source"
    assert asyncio.run(src.poll(1.0)) == [] and src.drain_rejects() == []
    assert asyncio.run(src.close()) is None


def test_a_rejecting_source_shows_and_drains_its_buffer() -> None:
    src = Picky(max_kept=1)
    asyncio.run(src.poll(1.0))
    asyncio.run(src.poll(2.0))
    assert [d.reason for d in src.rejects] == ["refused at 1"] and src.rejects_dropped == 1
    drained = src.drain_rejects()
    assert all(isinstance(d, DeadLetter) for d in drained) and len(drained) == 1
    assert src.rejects == [] and src.drain_rejects() == []


def test_source_error_is_a_runtime_error() -> None:
    assert issubclass(SourceError, RuntimeError)


# -- check_record --------------------------------------------------------------------


def test_a_good_record_passes() -> None:
    assert check_record(_record(), now_s=NOW, limits=Limits()) is None


def test_the_size_limit_is_inclusive() -> None:
    rec = _record(text="x" * 200)
    size = len(orjson.dumps(rec))
    check_record(rec, now_s=NOW, limits=Limits(max_event_bytes=size))
    with pytest.raises(ValidationError, match=f"more than {size - 1} bytes; shorten its text") as e:
        check_record(rec, now_s=NOW, limits=Limits(max_event_bytes=size - 1))
    assert e.value.field == "event"


def test_size_is_checked_before_the_fields() -> None:
    rec = _record(value="not a number", text="y" * 500)
    with pytest.raises(ValidationError, match="encodes to more than 100 bytes") as e:
        check_record(rec, now_s=NOW, limits=Limits(max_event_bytes=100))
    assert e.value.field == "event"
    with pytest.raises(ValidationError, match="not a number") as e:
        check_record(rec, now_s=NOW, limits=Limits())
    assert e.value.field == "value"


def test_a_record_json_cannot_hold_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"cannot be encoded as JSON \(.*64-bit") as e:
        check_record(_record(value=2**70), now_s=NOW, limits=Limits())
    assert e.value.field == "event"


def test_field_checks_use_the_given_clock_and_limits() -> None:
    rec = _record(event_time_s=NOW + 100.0)
    check_record(rec, now_s=NOW, limits=Limits())  # 100 s ahead: within the default 300 s
    with pytest.raises(ValidationError, match=r"100 s in the future \(limit 60 s\)") as e:
        check_record(rec, now_s=NOW, limits=Limits(max_future_s=60.0))
    assert e.value.field == "event_time_s"


def test_an_unhashable_source_kind_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a known source kind"):
        check_record(_record(source_kind=["sensor"]), now_s=NOW, limits=Limits())

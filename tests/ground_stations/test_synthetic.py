from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from convergence.ground_stations.scenario import Scenario, SyntheticWorld, default_scenario
from convergence.ground_stations.synthetic import MAX_SPAN_S, SyntheticSource
from convergence.wire import validate_many


def _world(**over: float) -> SyntheticWorld:
    sc = default_scenario(30, seed=5, horizon_s=60)
    sc = Scenario(sc.fleet, sc.episodes, sc.seed, **over)  # type: ignore[arg-type]
    return SyntheticWorld(sc)


def test_same_seed_same_events() -> None:
    w = _world()
    a = SyntheticSource(w, 3, t0_s=1000.0, seed=9).draw(0.0, 30.0)
    b = SyntheticSource(w, 3, t0_s=1000.0, seed=9).draw(0.0, 30.0)
    c = SyntheticSource(w, 3, t0_s=1000.0, seed=10).draw(0.0, 30.0)
    assert a == b and a != c


def test_rate_matches_world_and_events_validate() -> None:
    w = _world(bad_rate=0.0, dup_rate=0.0)
    src = SyntheticSource(w, 0, t0_s=1000.0, seed=1)
    recs = src.draw(0.0, 2.9)  # before any episode touches anything
    good, bad = validate_many(recs, now_s=1003.0)
    assert bad == [] and len(good) == len(recs)
    n = len(SyntheticSource(w, 0, t0_s=0.0, seed=2).draw(20.0, 20.0 + 2000.0 / w.base_rate[0]))
    assert abs(n - 2000) < 4 * np.sqrt(2000)


def test_faults_are_injected_and_all_rejected_with_reasons() -> None:
    w = _world(bad_rate=0.2, dup_rate=0.1)
    recs = SyntheticSource(w, 0, t0_s=1000.0, seed=3).draw(0.0, 60.0)
    good, bad = validate_many(recs, now_s=1060.0)
    assert 0.1 < len(bad) / len(recs) < 0.3

    def corrupt_field(r: dict[str, Any]) -> str | None:
        v = r["value"]
        if not isinstance(v, float) or math.isnan(v):
            return "value"
        if r["event_time_s"] > 1060.0 + 3600.0:
            return "event_time_s"
        if "category" not in r:
            return "category"
        if len(str(r.get("text", ""))) > 16_384:
            return "event"  # the whole event is over the byte limit
        return None

    expected = [f for f in map(corrupt_field, recs) if f is not None]
    # every variant shows up, and exactly the corrupted records (re-sent ones included) are rejected
    assert set(expected) == {"value", "event_time_s", "category", "event"}
    assert len(bad) == len(expected) and len(good) == len(recs) - len(expected)
    assert sorted(d.field for d in bad) == sorted(expected)
    ids = [e.event_id for e in good]
    assert len(ids) > len(set(ids))  # re-sent duplicates keep their content id


def test_poll_covers_time_without_gaps() -> None:
    w = _world(bad_rate=0.0, dup_rate=0.0)
    src = SyntheticSource(w, 2, t0_s=0.0, seed=4)
    polled = []
    for now in np.arange(1.0, 30.0, 0.5):
        polled += asyncio.run(src.poll(float(now)))
    ref = SyntheticSource(w, 2, t0_s=0.0, seed=4)
    assert len(polled) > 20
    assert all(0.0 - 1 <= r["event_time_s"] <= 30.0 for r in polled)
    assert ref.skew_s == src.skew_s


def test_after_a_gap_in_polling_only_the_last_seconds_are_drawn() -> None:
    w = _world(bad_rate=0.0, dup_rate=0.0)
    src = SyntheticSource(w, 0, t0_s=1000.0, seed=6)
    asyncio.run(src.poll(1005.0))
    # quarantined (not polled) for 50 s: the first poll after it does not invent those 50 s
    recs = asyncio.run(src.poll(1055.0))
    assert recs, "the last seconds are still sampled"
    oldest = 1055.0 - MAX_SPAN_S + src.skew_s
    assert all(r["event_time_s"] >= oldest - 1e-6 for r in recs)
    assert len(recs) < 4 * w.base_rate[0] * MAX_SPAN_S + 10  # not ~50 s worth of events
    good, bad = validate_many(recs, now_s=1055.0)
    assert bad == [] and len(good) == len(recs)


def test_the_drawn_span_cap_is_a_setting() -> None:
    w = _world(bad_rate=0.0, dup_rate=0.0)
    src = SyntheticSource(w, 0, t0_s=0.0, seed=6, max_span_s=1.0)
    asyncio.run(src.poll(5.0))
    recs = asyncio.run(src.poll(50.0))
    assert all(r["event_time_s"] >= 49.0 + src.skew_s - 1e-6 for r in recs)
    with pytest.raises(ValueError, match="max_span_s must be > 0, got 0"):
        SyntheticSource(w, 0, t0_s=0.0, seed=6, max_span_s=0)

"""Ingest from columns equals ingest from event objects (issue 8's columnar path)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from convergence.detectors.ingest import EventColumns
from convergence.schema import EventBatch, make_event
from convergence.streams.pipeline import EvidenceRing

STATIONS = ["news-1", "social-2", "sensor-3"]
EVENTS = st.lists(st.builds(
    lambda s, t, c, v, x: make_event(STATIONS[s], "osint_news", 1000.0 + t, c, v, text=x,
                                     source=None if s == 2 else f"wire-{s}"),
    st.integers(0, 2), st.floats(0, 50), st.sampled_from(["a", "b", "conflict"]),
    st.floats(-10, 10), st.one_of(st.none(), st.just(""), st.text(max_size=300))), max_size=60)


@given(EVENTS, st.integers(1, 6))
def test_the_evidence_ring_keeps_the_same_samples_from_columns(events: list, per: int) -> None:
    by_objects, by_columns = EvidenceRing(per), EvidenceRing(per)
    for chunk in (events[:20], events[20:]):
        by_objects.add(chunk)
        station = np.array([STATIONS.index(e.station_id) for e in chunk], dtype=np.int64)
        if chunk:
            by_columns.add_columns(EventBatch.from_events(chunk), station)
    assert by_objects.of(STATIONS) == by_columns.of(STATIONS)


def test_the_evidence_ring_of_a_huge_batch_keeps_its_most_recent_events() -> None:
    events = [make_event(STATIONS[i % 3], "sensor", 1000.0 + i, "c", float(i)) for i in range(9000)]
    by_objects, by_columns = EvidenceRing(3), EvidenceRing(3)
    by_objects.add(events)
    by_columns.add_columns(EventBatch.from_events(events), np.arange(9000) % 3)
    assert by_objects.of(STATIONS) == by_columns.of(STATIONS)
    assert [s.value for s in by_columns.of(["news-1"])] == [8991.0, 8994.0, 8997.0]


@given(EVENTS)
def test_event_columns_from_a_batch_equal_those_from_objects(events: list) -> None:
    station = [STATIONS.index(e.station_id) for e in events]
    a = EventColumns.from_batch(EventBatch.from_events(events), station)
    b = EventColumns.from_events(events, lambda e: STATIONS.index(e.station_id))
    for name in ("station", "time_s", "value", "category_bin", "event_hash", "source_hash"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name

"""One synthetic feed shared by the worker-core tests and the Faust tier.

Test modules cannot import each other, so the feed is a session fixture: ``feed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from convergence.ground_stations.scenario import SyntheticWorld, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.settings import Settings


class Feed:
    """The default scenario's first 20 s as Kafka-sized messages, plus a probe station."""

    scenario_s = 20.0
    slice_s = 0.5
    probe = "probe-001"

    @classmethod
    def messages(cls, s: Settings, t0: float) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """(station, records) messages in time order.

        Time order matters: the worker's watermark is the largest event time seen, so a
        station replayed all at once would make everyone else's events late.
        """
        sc = default_scenario(s.stations, s.seed, cls.scenario_s + 40)
        world = SyntheticWorld(sc)
        sources = [SyntheticSource(world, i, t0, s.seed) for i in range(len(sc.fleet))]
        for k in range(int(cls.scenario_s / cls.slice_s)):
            for src in sources:
                recs = src.draw(k * cls.slice_s, (k + 1) * cls.slice_s)
                if recs:
                    yield src.info.station_id, recs

    @classmethod
    def genuine_region(cls, s: Settings) -> str:
        sc = default_scenario(s.stations, s.seed, cls.scenario_s + 40)
        (ep,) = [e for e in sc.genuine() if e.start_s < cls.scenario_s]
        assert ep.region is not None
        return ep.region

    @classmethod
    def probe_batch(cls, t: float) -> list[dict[str, Any]]:
        """Three good events and one bad one (a value that is not a number)."""
        good = [{"station_id": cls.probe, "source_kind": "sensor", "event_time_s": t + 0.1 * i,
                 "category": "seismic", "value": 10.0 + i} for i in range(3)]
        bad = {"station_id": cls.probe, "source_kind": "sensor", "event_time_s": t + 0.05,
               "category": "seismic", "value": "twelve"}
        return [*good[:2], bad, good[2]]


@pytest.fixture(scope="session")
def feed() -> type[Feed]:
    return Feed

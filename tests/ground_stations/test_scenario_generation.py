"""Seeded fleets and scenarios: the default fleet spans every kind and region, and the
default scenario opens with its decoys and a genuine convergence."""

from __future__ import annotations

from collections import Counter

import pytest

from convergence.ground_stations.scenario_generation import REGIONS, default_fleet, default_scenario
from convergence.schema import SOURCE_KINDS


def test_default_fleet_spans_kinds_and_regions_and_is_seeded() -> None:
    fleet = default_fleet(247, seed=7)
    assert len(fleet) == 247 and len({s.station_id for s in fleet}) == 247
    assert set(Counter(s.kind for s in fleet)) == set(SOURCE_KINDS)
    assert {s.region for s in fleet} == set(REGIONS)
    assert fleet == default_fleet(247, seed=7) and fleet != default_fleet(247, seed=8)
    with pytest.raises(ValueError, match="at least"):
        default_fleet(3, seed=1)


def test_first_minute_has_decoys_and_a_genuine_convergence() -> None:
    sc = default_scenario(247, seed=7, horizon_s=600)
    first = [e for e in sc.episodes if e.start_s < 20]
    assert sorted(e.kind for e in first) == ["convergence", "lone_surge", "market_move"]
    genuine = next(e for e in first if e.genuine)
    kinds = {sc.fleet[i].kind.value for i in genuine.stations}
    assert len(kinds) >= 3 and {sc.fleet[i].region for i in genuine.stations} == {genuine.region}
    market = next(e for e in first if e.kind == "market_move")
    assert all(sc.fleet[i].kind.value.startswith("market") for i in market.stations)
    assert len(sc.episodes) > 5  # later episodes drawn from the seed

"""The synthetic world: rates vectorised over time, and one station's state as one column of
the vectorised world (outages included)."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.ground_stations.scenario_generation import default_scenario
from convergence.ground_stations.scenario_model import Episode, Scenario
from convergence.ground_stations.scenario_world import SyntheticWorld


def test_world_rates_vectorised_over_time() -> None:
    sc = default_scenario(60, seed=2, horizon_s=100)
    w = SyntheticWorld(sc)
    t = np.array([0.5, 9.0, 16.0])
    r = w.rates(t)
    assert r.shape == (3, 60)
    assert np.allclose(r[0], w.base_rate)
    g = list(sc.episodes[1].stations)
    assert np.allclose(r[1, g], w.base_rate[g] * 6.0)
    _, p = w.category_probs(g[0], 9.0)
    assert p.sum() == pytest.approx(1.0) and p.max() > 0.7


def test_station_state_is_one_column_of_the_vectorised_world() -> None:
    sc = default_scenario(60, seed=2, horizon_s=100)
    g = sc.episodes[1]
    # an outage over half the genuine stations, overlapping it, silences them
    out = Episode("outage", g.start_s + 1.0, 2.0, g.stations[::2], 1.0, None, g.region)
    w = SyntheticWorld(Scenario(sc.fleet, [*sc.episodes, out], sc.seed))
    times = [0.5, 4.0, g.start_s + 0.5, g.start_s + 1.5, 9.0, 16.0, 50.0, 99.0]
    for t in times:
        rates = w.rates(t)
        for i in range(w.n):
            rate, topic = w.station_state(i, t)
            assert rate == rates[i], (i, t)
            cats, p = w.topic_probs(i, topic)
            ref_cats, ref_p = w.category_probs(i, t)
            assert cats == ref_cats and np.array_equal(p, ref_p)
            assert (topic is not None) == any(
                e.topic is not None and e.start_s <= t < e.end_s and i in e.stations
                for e in w.scenario.episodes)
    silenced = w.rates(g.start_s + 1.5)
    assert (silenced[list(out.stations)] == 0).all()
    assert (silenced[list(g.stations[1::2])] > 0).all()
    assert w.station_state(out.stations[0], g.start_s + 1.5) == (0.0, g.topic)

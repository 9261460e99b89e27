from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from convergence.ground_stations.scenario import (
    REGIONS,
    Episode,
    Scenario,
    SyntheticWorld,
    default_fleet,
    default_scenario,
    evaluate,
)
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


def test_evaluate_matches_alerts_to_ground_truth() -> None:
    sc = default_scenario(60, seed=2, horizon_s=30)
    g = sc.episodes[1]
    hit = {"time_s": 100 + g.start_s + 2, "regions": [g.region]}
    other = next(r for r in REGIONS if r != g.region)
    decoy = {"time_s": 100 + 15.0, "regions": [other]}
    res = evaluate(sc, [hit, decoy], t0=100.0, horizon_s=25.0, window_s=8.0)
    assert (res["genuine"], res["detected"], res["false_alarms"], res["decoy_alerts"]) == (1, 1, 1, 1)
    assert res["time_to_detect_s"] == [2.0]
    assert evaluate(sc, [], t0=100.0, horizon_s=25.0, window_s=8.0)["missed"] == 1


def test_judge_of_short_and_interrupted_runs() -> None:
    """A convergence the run reached but stopped too soon to judge counts when it was
    caught; one it never reached does not, nor does an episode too small to be one."""
    sc = default_scenario(60, seed=2, horizon_s=60)
    (tr,) = [t for t in sc.truths() if t.onset_s < 20]
    other = next(r for r in REGIONS if r != tr.region)
    caught = {"time_s": 100 + tr.onset_s + 1, "regions": [tr.region]}
    cut = tr.onset_s + 2  # before the 5 s grace after onset has passed
    res = evaluate(sc, [caught], t0=100.0, horizon_s=cut, window_s=8.0)
    assert (res["genuine"], res["detected"], res["false_alarms"]) == (1, 1, 0)
    assert evaluate(sc, [], t0=100.0, horizon_s=cut, window_s=8.0)["genuine"] == 0
    wrong = {"time_s": 100 + tr.onset_s + 1, "regions": [other]}
    res = evaluate(sc, [wrong], t0=100.0, horizon_s=cut, window_s=8.0)
    assert (res["genuine"], res["false_alarms"]) == (0, 1)
    before = evaluate(sc, [], t0=100.0, horizon_s=tr.onset_s - 1, window_s=8.0)
    assert before["genuine"] == 0 and before["missed"] == 0


def test_an_episode_too_small_to_converge_is_not_genuine() -> None:
    fleet = default_fleet(60, seed=3)
    region = fleet[0].region
    # one correlation group (one kind): however loud, not a convergence
    group = fleet[0].correlation_group
    same = tuple(i for i, s in enumerate(fleet) if s.correlation_group == group)
    sc = Scenario(fleet, [Episode("convergence", 5.0, 10.0, same, 8.0, None, region)], 3,
                  duration_s=40.0)
    assert sc.genuine() and not sc.truths()
    res = evaluate(sc, [{"time_s": 7.0, "regions": [region]}], t0=0.0, horizon_s=40.0,
                   window_s=8.0)
    assert (res["genuine"], res["detected"], res["false_alarms"]) == (0, 0, 1)

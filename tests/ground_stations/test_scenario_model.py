"""The scenario model's ground truth: a genuine episode is a convergence only once its
stations span enough groups, kinds and OSINT groups, from the moment they do."""

from __future__ import annotations

from convergence.ground_stations.scenario import evaluate
from convergence.ground_stations.scenario_generation import default_fleet
from convergence.ground_stations.scenario_model import Episode, Scenario, convergence_onset
from convergence.schema import SourceKind
from convergence.stations import StationInfo


def test_a_cascade_converges_when_enough_groups_kinds_and_osint_groups_have_joined() -> None:
    kinds = [SourceKind.MARKET_VOLUME, SourceKind.OSINT_NEWS, SourceKind.OSINT_NEWS,
             SourceKind.SENSOR, SourceKind.OSINT_SOCIAL]
    # the two news stations share a wire: one OSINT group between them
    groups = ["exchange", "wire-1", "wire-1", "sensor-1", "social-1"]
    fleet = [StationInfo(f"s{i}", k, "mena", g) for i, (k, g) in enumerate(zip(kinds, groups, strict=True))]
    ep = Episode("convergence", 100.0, 60.0, (0, 1, 2, 3, 4), region="mena",
                 onsets=(0.0, 5.0, 10.0, 20.0, 30.0), ramp_s=4.0)
    # 3 groups and 2 kinds at 120 s, but a second OSINT group only at 130 s; half the ramp on
    assert convergence_onset(ep, fleet) == 132.0
    (truth,) = Scenario(fleet, [ep]).truths()
    assert (truth.region, truth.onset_s, truth.end_s, truth.stations) == ("mena", 132.0, 160.0, ep.stations)
    # cut before the social station joins: never a convergence, so no ground truth
    short = Episode("convergence", 100.0, 25.0, ep.stations, region="mena", onsets=ep.onsets)
    assert convergence_onset(short, fleet) == 130.0 and Scenario(fleet, [short]).truths() == []


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

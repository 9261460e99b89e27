"""Judging alerts against a scenario's ground truth (runs cut short too), and the names of
the scenario's parts, importable from :mod:`convergence.ground_stations.scenario` as callers
import them."""

from __future__ import annotations

from convergence.ground_stations import scenario, scenario_generation, scenario_model, scenario_world
from convergence.ground_stations.scenario import REGIONS, default_scenario, evaluate


def test_the_parts_names_are_importable_from_scenario() -> None:
    for part in (scenario_model, scenario_generation, scenario_world):
        for name in part.__all__:
            assert getattr(scenario, name) is getattr(part, name), name


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

"""Monte Carlo campaigns (simulation/campaign.py): judging, intervals, determinism, and a
small regression campaign over the whole library that fails if quality regresses."""

from __future__ import annotations

import math

import pytest

from convergence.ground_stations.scenario_library import SCENARIOS, build, names
from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    GRACE_TICKS,
    DetectorParams,
    ParamSpace,
    judge_run,
    median_ci,
    plan,
    record_from_dict,
    record_to_dict,
    run_campaign,
    run_chunk,
    wilson,
)

#: the regression campaign's fixed seed: neither the tuning seed (11) nor the held-out
#: reference seed (2026)
REGRESSION_SEED = 5
REGRESSION_RUNS = 4


@pytest.fixture(scope="module")
def small() -> object:
    """The regression campaign: a few runs of every one of the 41 scenarios."""
    return run_campaign("all", runs=REGRESSION_RUNS, seed=REGRESSION_SEED, workers=1,
                        chunk=REGRESSION_RUNS)


def test_the_library_has_41_scenarios_on_both_sides() -> None:
    assert len(names("all")) == 41
    assert names("genuine") and names("decoy")
    assert sorted(names("genuine") + names("decoy")) == sorted(names("all"))


def test_small_campaign_over_the_whole_library_meets_the_quality_bar(small: object) -> None:
    """Fails if detection drops below 99 % or false alarms rise above 1 % (a regression)."""
    from convergence.simulation.campaign import CampaignResult

    assert isinstance(small, CampaignResult)
    o = small.overall()
    assert small.summary()["tests"] == REGRESSION_RUNS * 41
    det, fa = o["detection"], o["false_alarm"]
    # enough convergences and decoy runs that one miss / one false alarm breaks the bar
    assert det["n"] >= 90 and fa["n"] >= 70
    missed = {s: r["detection"] for s, r in small.per_scenario.items()
              if r["detection"] and r["detection"]["k"] < r["detection"]["n"]}
    noisy = {s: r["false_alarm"] for s, r in small.per_scenario.items()
             if r["false_alarm"]["k"]}
    assert det["rate"] >= 0.99, f"detection {det} below 99 %; missed in {missed}"
    assert fa["rate"] <= 0.01, f"false alarms {fa} above 1 %; in {noisy}"
    ttd = o["time_to_detect_ticks"]
    assert ttd["median"] is not None and ttd["median"] <= 2.0, ttd
    assert o["false_alarms_on_genuine_runs"] <= 1


def test_summary_has_the_documented_json_keys(small: object) -> None:
    from convergence.simulation.campaign import CampaignResult

    assert isinstance(small, CampaignResult)
    s = small.summary()
    for key in ("tests", "seconds", "tests_per_s", "detection_rate", "false_alarm_rate",
                "median_time_to_detect_ticks", "per_scenario", "best_params", "tradeoff",
                "campaign_id", "detection_ci95", "false_alarm_ci95"):
        assert key in s, key
    assert s["campaign_id"] == f"mc-{REGRESSION_SEED}-{REGRESSION_RUNS}x41"
    assert set(s["per_scenario"]) == set(names("all"))
    for name, row in s["per_scenario"].items():
        assert row["runs"] == REGRESSION_RUNS
        assert row["kind"] == ("genuine" if SCENARIOS[name].genuine else "decoy")
        if row["kind"] == "decoy":
            assert row["detection"] is None and row["station_hours"] > 0
        lo, hi = row["false_alarm"]["ci95"]
        assert 0.0 <= lo <= row["false_alarm_rate"] <= hi <= 1.0
    # the threshold trade-off replayed from peak scores is monotone: a higher warning
    # threshold never detects more nor false-alarms more
    curve = s["tradeoff"]
    dets = [p["detection_rate"] for p in curve]
    fas = [p["false_alarm_rate"] for p in curve]
    assert dets == sorted(dets, reverse=True) and fas == sorted(fas, reverse=True)
    assert s["best_params"]["basis"].startswith("not swept")


def test_calibration_rates_are_smoothed_shares_of_genuine_alerts(small: object) -> None:
    from convergence.simulation.campaign import CampaignResult

    assert isinstance(small, CampaignResult)
    cal = small.calibration()
    assert cal["n_runs"] == REGRESSION_RUNS * 41
    assert f"seed {REGRESSION_SEED}" in cal["campaign"]
    rows = [r for level in ("warning", "converged") for r in cal["table"][level]]
    assert rows, "a campaign with detections has alerts to calibrate on"
    alerts = [a for r in small.records for a in r.alerts]
    assert sum(n for *_, n in rows) == sum(1 for lvl, _, _ in alerts if lvl >= 2)
    for lo, hi, p, n in rows:
        assert lo < hi and 0.0 < p < 1.0 and n >= 1


def test_a_campaign_is_the_same_however_it_is_chunked() -> None:
    few = ["simultaneous", "lone-surge"]
    a = run_campaign(few, runs=6, seed=3, workers=1, chunk=6)
    b = run_campaign(few, runs=6, seed=3, workers=1, chunk=6)
    assert a.records == b.records
    # chunks are seeded by their first run: the same runs in other chunks draw other
    # noise but the same worlds, and every chunk is reproducible on its own
    c1 = run_chunk("simultaneous", 2, 2, seed=3, space=ParamSpace(), sweep=False)
    c2 = run_chunk("simultaneous", 2, 2, seed=3, space=ParamSpace(), sweep=False)
    assert c1.records == c2.records and [r.run for r in c1.records] == [2, 3]
    other = run_campaign(few, runs=6, seed=4, workers=1, chunk=6)
    assert other.records != a.records


def test_two_worker_processes_give_the_one_process_result() -> None:
    few = ["osint-led", "pure-noise"]
    one = run_campaign(few, runs=4, seed=9, workers=1, chunk=2)
    two = run_campaign(few, runs=4, seed=9, workers=2, chunk=2)
    assert one.records == two.records
    assert one.summary() | {"seconds": 0, "tests_per_s": 0} == two.summary() | {
        "seconds": 0, "tests_per_s": 0}


def test_progress_counts_every_run_and_bad_arguments_are_refused() -> None:
    seen: list[tuple[int, int]] = []
    run_campaign(["pure-noise"], runs=3, seed=1, workers=1, chunk=2,
                 progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]
    with pytest.raises(ValueError, match="runs must be >= 1"):
        run_campaign(["pure-noise"], runs=0)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        run_campaign(["pure-noise"], runs=2, chunk=0)
    with pytest.raises(KeyError, match=r"unknown scenario.*no-such-thing.*scenarios list"):
        run_campaign(["pure-noise", "no-such-thing"], runs=2)


def test_a_sweep_reports_the_best_setting_within_the_false_alarm_budget() -> None:
    space = ParamSpace(warning=(45.0, 95.0), window_ticks=(8,), pattern_weight=(0.5,))
    res = run_campaign(["simultaneous", "lone-surge", "pure-noise"], runs=12, seed=2, workers=1,
                       chunk=12, sweep=True, space=space)
    assert {r.detector.warning for r in res.records} == {45.0, 95.0}
    curve = res.tradeoff()
    assert {p["params"]["warning"] for p in curve} == {45.0, 95.0}
    assert all("pareto" in p for p in curve)
    best = res.best_params()
    # a warning threshold of 95 leaves the meter almost blind; the sweep must not pick it
    assert best["warning"] == 45.0 and best["false_alarm_rate"] <= 0.01, best
    assert res.campaign_id.endswith("-sweep")


def test_judge_run_attributes_alerts_by_region_and_time() -> None:
    sc = build("simultaneous", seed=4)
    (truth,) = sc.truths()
    regions = tuple(sorted({s.region for s in sc.fleet}))
    ri = regions.index(truth.region)
    other = 1 - ri
    tick_s = sc.tick_s
    n_ticks = int(sc.duration_s / tick_s)
    onset_tick = int(truth.onset_s / tick_s)
    kw = {"tick_s": tick_s, "n_ticks": n_ticks, "window_ticks": 8}
    hit = judge_run(sc, [(onset_tick + 1, ri)], regions, **kw)
    assert (hit.genuine, hit.detected, hit.false_alarms) == (1, 1, 0)
    assert hit.genuine_alert == (True,) and 0.0 <= hit.ttd_ticks[0] <= 3.0
    wrong_region = judge_run(sc, [(onset_tick + 1, other)], regions, **kw)
    assert (wrong_region.detected, wrong_region.false_alarms) == (0, 1)
    assert wrong_region.genuine_alert == (False,)
    too_early = judge_run(sc, [(onset_tick - GRACE_TICKS - 20, ri)], regions, **kw)
    assert (too_early.detected, too_early.false_alarms) == (0, 1)
    missed = judge_run(sc, [], regions, **kw)
    assert (missed.genuine, missed.detected, missed.false_alarms) == (1, 0, 0)


def test_wilson_and_median_intervals() -> None:
    lo, hi = wilson(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.08
    lo, hi = wilson(50, 50)
    assert hi == 1.0 and 0.92 < lo < 0.95
    assert all(math.isnan(x) for x in wilson(0, 0))
    xs = [float(i) for i in range(101)]
    lo, hi = median_ci(xs)
    assert lo < 50.0 < hi and hi - lo < 25
    assert all(math.isnan(x) for x in median_ci([]))


def test_plan_covers_every_run_once() -> None:
    jobs = plan(["a", "b"], runs=7, chunk=3)
    assert jobs == [("a", 0, 3), ("a", 3, 3), ("a", 6, 1), ("b", 0, 3), ("b", 3, 3), ("b", 6, 1)]


def test_detector_params_and_records_round_trip() -> None:
    d = DetectorParams(warning=60.0, window_ticks=6, pattern_weight=1.0)
    assert d.thresholds == (35.0, 60.0, 80.0)
    assert DetectorParams(warning=90.0).thresholds[2] == 100.0
    assert d.key() == "warning=60,window=6,pattern=1"
    assert DEFAULT_DETECTOR.thresholds == (30.0, 55.0, 75.0)
    res = run_chunk("two-regions", 0, 2, seed=1, space=ParamSpace(), sweep=False)
    for r in res.records:
        assert record_from_dict(record_to_dict(r)) == r
    assert res.station_hours > 0 and res.events > 0

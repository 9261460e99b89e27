from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convergence.models.meter_model import auc, calibration, choose_operating_point, to_score


def test_auc_known_answers() -> None:
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(auc(np.array([1, 1]), np.array([0.3, 0.4])))


def test_calibration_perfect_and_off() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = rng.random(20000) < p
    good = calibration(y, p)
    assert good["ece"] < 0.02 and len(good["reliability"]) == 10
    bad = calibration(y, np.clip(p + 0.3, 0, 1))
    assert bad["ece"] > 0.2 and bad["brier"] > good["brier"]


def test_score_mapping_puts_operating_point_on_warning() -> None:
    s = to_score(np.array([0.0, 0.4, 0.8, 1.0]), 0.8)
    assert s[0] == 0.0 and s[2] == pytest.approx(0.55) and s[3] == pytest.approx(1.0)
    assert s[1] == pytest.approx(0.275)


def test_operating_point_respects_false_alarm_budget() -> None:
    # 100 runs of 10 ticks; runs 0-49 have a convergence at ticks 5-9
    label = np.zeros((100, 10), bool)
    label[:50, 5:] = True
    p = np.full((100, 10), 0.1)
    p[:50, 6:] = 0.9          # real convergences: high P inside the window
    p[50:53, 3] = 0.7         # three null runs with a spurious bump to 0.7
    rule_fired = np.zeros((100, 10), bool)
    rule_fired[50, 3] = True  # the rule false-alarmed once (1 %)
    x = choose_operating_point(p, label, rule_fired)
    assert 0.7 < x <= 0.9  # above the spurious bumps, below the real signal


def test_offline_replay_matches_the_learned_meter_run_live() -> None:
    import lightgbm as lgb

    from convergence.detectors.chain import DetectorChain
    from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
    from convergence.ground_stations.scenario import default_fleet, random_scenario
    from convergence.models.meter_model import _params, booster_scorer, replay_learned_meter
    from convergence.simulation.simulator import simulate

    fleet = default_fleet(60, 2)
    scs = [random_scenario(fleet, seed=r, horizon_s=40, p_genuine=0.7) for r in range(16)]
    res = simulate(scs, n_ticks=40, seed=2)
    assert res.region_features is not None and res.region_osint is not None
    assert res.region_features.shape[:2] == (16, 40)
    X = res.features.reshape(-1, len(FEATURE_NAMES))
    booster = lgb.train(_params(2), lgb.Dataset(X, res.label.reshape(-1).astype(float)),
                        num_boost_round=10)
    p_region = np.asarray(booster.predict(res.region_features.reshape(-1, len(FEATURE_NAMES))))
    p_region = p_region.reshape(res.region_osint.shape)
    chain = DetectorChain(meter=ConvergenceMeter(scorer=booster_scorer(booster, 0.3)))
    live = simulate(scs, n_ticks=40, seed=2, chain=chain)
    assert chain.meter.emit_features is False  # simulate() leaves the caller's chain as given
    offline = replay_learned_meter(p_region, res.region_osint, 0.3)
    assert np.array_equal(offline, live.fired)


def test_a_model_worse_than_the_rule_is_kept_as_a_candidate_and_auto_skips_it(
        tmp_path: Path) -> None:
    from convergence.models.meter_model import (
        CANDIDATE,
        default_version,
        load_scorer,
        train_meter,
    )
    from convergence.models.registry import ModelNotFound, ModelRegistry

    reg = ModelRegistry(tmp_path)
    weak = train_meter(reg, runs=10, ticks=20, stations=5, seed=7, num_rounds=10)
    assert not weak.promoted and "below the rule" in weak.verdict
    assert weak.record.metadata["status"] == CANDIDATE
    with pytest.raises(ModelNotFound, match="candidate"):
        load_scorer(reg)  # auto: nothing to use, the stream keeps the rule
    assert load_scorer(reg, weak.record.version).ref == "meter@1"  # pinned: used
    reg.save_text("meter", weak.booster.model_to_string(), {"status": "default"})
    reg.save_text("meter", weak.booster.model_to_string(), {"status": CANDIDATE})
    assert default_version(reg) == 2 and load_scorer(reg).ref == "meter@2"


@pytest.mark.parametrize(("learned", "ok", "words"), [
    ({"detected": 5, "runs_with_false_alarm": 1}, False, "detected 5 convergences to the rule's 8"),
    ({"detected": 8, "runs_with_false_alarm": 3}, False, "false alarms in 3 runs to the rule's 1"),
    ({"detected": 9, "runs_with_false_alarm": 3}, True, "detected 9 vs 8"),
    ({"detected": 7, "runs_with_false_alarm": 0}, True, "false-alarm runs 0 vs 1"),
])
def test_judging_against_the_rule(learned: dict[str, int], ok: bool, words: str) -> None:
    from convergence.models.meter_model import judge_against_rule

    rule = {"detected": 8, "runs_with_false_alarm": 1}
    got = judge_against_rule({"auc": 0.9, "rule_auc": 0.85, "heldout_rule": rule,
                              "heldout_learned": learned})
    assert got[0] is ok and words in got[1]
    nan = judge_against_rule({"auc": float("nan"), "rule_auc": float("nan"),
                              "heldout_rule": rule, "heldout_learned": learned})
    assert nan[0] is False and "more --runs" in nan[1]

from __future__ import annotations

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


def test_analysts_labels_join_the_training_rows_weighted() -> None:
    import tempfile
    from pathlib import Path

    from convergence.detectors.meter import FEATURE_NAMES
    from convergence.models.meter_model import analyst_rows, result_features_example, train_meter
    from convergence.models.registry import ModelRegistry

    reg = ModelRegistry(Path(tempfile.mkdtemp()))
    strong = result_features_example()  # what the simulator calls a clear convergence
    plain = train_meter(reg, runs=40, ticks=40, stations=60, seed=1, num_rounds=30)
    # analysts said five alerts that looked exactly like this were false alarms
    row = dict(zip(FEATURE_NAMES, strong[0].tolist(), strict=True))
    X, y, skipped = analyst_rows([(row, False)] * 5 + [({"evidence": 1.0}, True)])
    assert X.shape == (5, len(FEATURE_NAMES)) and not y.any() and skipped == 1
    taught = train_meter(reg, runs=40, ticks=40, stations=60, seed=1, num_rounds=30,
                         labelled=(X, y), label_weight=200.0)
    assert float(plain.booster.predict(strong)[0]) > 0.5 > 0.1 > float(taught.booster.predict(strong)[0])
    assert taught.metrics["analyst_labels"]["rows"] == taught.metrics["analyst_labels"]["false_alarm"] == 5
    meta = taught.record.metadata
    assert meta["analyst_label_rows"] == 5 and meta["train_rows"] == plain.record.metadata["train_rows"] + 5
    # a light weight barely moves it
    light = train_meter(reg, runs=40, ticks=40, stations=60, seed=1, num_rounds=30,
                        labelled=(X, y), label_weight=0.01)
    assert abs(float(light.booster.predict(strong)[0]) - float(plain.booster.predict(strong)[0])) < 0.1
    with pytest.raises(ValueError, match="label weight"):
        train_meter(reg, runs=40, ticks=40, stations=60, labelled=(X, y), label_weight=0.0)

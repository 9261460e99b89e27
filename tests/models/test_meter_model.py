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


def test_operating_point_is_chosen_out_of_sample_and_within_budget() -> None:
    from convergence.models.meter_model import simulate_campaign

    camp = simulate_campaign(["simultaneous", "lone-surge", "market-move"], runs=4, seed=3)
    # P that is high wherever the rule saw a region score, low elsewhere: a perfect detector
    p = [np.clip(r.score / 100.0, 0.0, 1.0).astype(np.float64) for r in camp.results]
    x = choose_operating_point(camp, p, budget=0.0)
    assert 0.05 <= x <= 0.99
    from convergence.models.meter_model import campaign_stats, replay_learned_meter

    fired = [replay_learned_meter(pp, r.osint, x) for pp, r in zip(p, camp.results, strict=True)]
    stats = campaign_stats(camp, fired)
    # at most one decoy run (the budget's floor) may false-alarm at the chosen point
    assert stats["decoy_runs_with_false_alarm"] <= 1


def test_offline_replay_matches_the_learned_meter_run_live() -> None:
    """Replaying the learned meter from recorded features equals running it live, as long
    as no response feeds back (the replay cannot know what a different level would have
    quarantined or sensitised); campaigns use it to choose the operating point."""
    import lightgbm as lgb

    from convergence.detectors.chain import DetectorChain
    from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
    from convergence.detectors.processor import TickProcessor
    from convergence.detectors.responses import ResponsePolicy, ResponseStage
    from convergence.ground_stations.scenario_library import build
    from convergence.models.meter_model import (
        _params,
        _predict_regions,
        booster_scorer,
        replay_learned_meter,
    )
    from convergence.simulation.simulator import simulate

    def proc(meter: ConvergenceMeter) -> TickProcessor:
        inert = ResponsePolicy(quarantine_after_ticks=10**6, sensitivity=1.0)
        return TickProcessor(DetectorChain(meter=meter), ResponseStage(inert))

    scs = [build(n, seed=s) for n in ("simultaneous", "two-regions") for s in range(3)][:3]
    res = simulate(scs, seed=2, features=True, processor=proc(ConvergenceMeter(emit_features=True)))
    assert res.features is not None and res.osint is not None
    X = res.features.reshape(-1, len(FEATURE_NAMES)).astype(float)
    y = res.labels(4).reshape(-1).astype(float)
    booster = lgb.train(_params(2), lgb.Dataset(X, y), num_boost_round=10)
    offline = replay_learned_meter(_predict_regions(booster, res), res.osint, 0.3)
    live = simulate(scs, seed=2, processor=proc(ConvergenceMeter(scorer=booster_scorer(booster, 0.3))))
    assert offline.any() and np.array_equal(offline, live.fired)


def test_analysts_labels_join_the_training_rows_weighted() -> None:
    import tempfile

    from convergence.detectors.meter import FEATURE_NAMES
    from convergence.models.meter_model import analyst_rows, result_features_example, train_meter
    from convergence.models.registry import ModelRegistry

    reg = ModelRegistry(Path(tempfile.mkdtemp()))
    strong = result_features_example()  # what the simulator calls a clear convergence
    kw = {"runs": 6, "seed": 1, "num_rounds": 30, "folds": 2,
          "scenarios": "simultaneous,two-regions,lone-surge,market-move,pure-noise"}
    plain = train_meter(reg, **kw)  # type: ignore[arg-type]
    # analysts said five alerts that looked exactly like this were false alarms
    row = dict(zip(FEATURE_NAMES, strong[0].tolist(), strict=True))
    X, y, skipped = analyst_rows([(row, False)] * 5 + [({"evidence": 1.0}, True)])
    assert X.shape == (5, len(FEATURE_NAMES)) and not y.any() and skipped == 1
    taught = train_meter(reg, labelled=(X, y), label_weight=200.0, **kw)  # type: ignore[arg-type]
    assert float(plain.booster.predict(strong)[0]) > 0.5 > 0.1 > float(taught.booster.predict(strong)[0])
    assert taught.metrics["analyst_labels"]["rows"] == taught.metrics["analyst_labels"]["false_alarm"] == 5
    meta = taught.record.metadata
    assert meta["analyst_label_rows"] == 5 and meta["train_rows"] == plain.record.metadata["train_rows"] + 5
    # a light weight does not overrule the simulated runs (bagging reshuffles rows, so the
    # model is not identical, but it still calls this a convergence)
    light = train_meter(reg, labelled=(X, y), label_weight=0.001, **kw)  # type: ignore[arg-type]
    p_plain, p_light = float(plain.booster.predict(strong)[0]), float(light.booster.predict(strong)[0])
    assert abs(p_light - p_plain) < abs(float(taught.booster.predict(strong)[0]) - p_plain) / 2
    with pytest.raises(ValueError, match="label weight"):
        train_meter(reg, labelled=(X, y), label_weight=0.0, **kw)  # type: ignore[arg-type]

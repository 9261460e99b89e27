"""The learned convergence fusion: LightGBM over the meter's fused features.

Training data comes from the simulator: many random scenarios (genuine convergences of
varied strength and size, lone surges, market-wide moves) run through the very same
detector chain; every (run, tick) gives the meter's features for its strongest region
(:data:`~convergence.detectors.meter.FEATURE_NAMES`) and a label — is a genuine
convergence under way? Runs, not ticks, are split into train and held-out sets, so the
held-out figures are about scenarios the model never saw.

The raw probability is not used as the score directly: an *operating point* is chosen
on the training runs — the smallest P at which runs without a convergence in progress
raise a warning no more often than the rule-based meter does on the same runs (and at
most 2 %) — and P is mapped piecewise-linearly so that this P lands on the ``warning``
threshold (55). Learned fusion then means "more detections at the rule's false-alarm
budget", not "more alarms".

The report of a training run carries the held-out **AUC**, the **Brier score**, a
10-bin **reliability table** with the expected calibration error, and a head-to-head
on held-out runs of the rule-based meter and the learned meter: runs detected, runs
with a false alarm, median time to detect.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from convergence.models.registry import ModelRegistry
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> result = train_meter(reg, runs=40, ticks=40, stations=60, seed=1, num_rounds=20)
>>> 0.5 < result.metrics["auc"] <= 1.0, result.record.name
(True, 'meter')
>>> scorer = load_scorer(reg)
>>> float(scorer(result_features_example())[0]) >= 0.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
from convergence.ground_stations.scenario import default_fleet, random_scenario
from convergence.models.registry import ModelNotFound, ModelRecord, ModelRegistry
from convergence.simulation.simulator import SimResult, simulate

MODEL_NAME = "meter"
TRAIN_HINT = "convergence models train meter"
F64 = npt.NDArray[np.float64]
Progress = Callable[[str, float], None]


def auc(y: npt.NDArray[Any], p: F64) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction)."""
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    # average ranks over ties
    _, first, counts = np.unique(sp, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration(y: npt.NDArray[Any], p: F64, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and a reliability table."""
    y = np.asarray(y, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        conf, acc = float(p[m].mean()), float(y[m].mean())
        ece += m.mean() * abs(conf - acc)
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(m.sum()),
                      "predicted": round(conf, 4), "observed": round(acc, 4)})
    return {"brier": float(np.mean((p - y) ** 2)), "ece": float(ece), "reliability": table}


def detection_stats(fired: npt.NDArray[np.bool_], label: npt.NDArray[np.bool_],
                    has_genuine: npt.NDArray[np.bool_], tick_s: float) -> dict[str, Any]:
    """Runs detected / false alarms / time to detect, from ``(runs, ticks)`` alerts and labels."""
    fired = np.asarray(fired, bool)
    label = np.asarray(label, bool)
    hit = np.asarray(np.any(fired & label, axis=1))
    false = np.asarray(np.any(fired & ~label, axis=1))
    ttd = []
    for r in np.flatnonzero(has_genuine & hit):
        first_label = int(np.argmax(label[r]))
        first_hit = int(np.argmax(fired[r] & label[r]))
        ttd.append((first_hit - first_label) * tick_s)
    n_gen = int(has_genuine.sum())
    return {
        "genuine_runs": n_gen, "detected": int(hit[has_genuine].sum()),
        "detection_rate": round(float(hit[has_genuine].mean()) if n_gen else float("nan"), 4),
        "runs_with_false_alarm": int(false.sum()),
        "false_alarm_rate": round(float(false.mean()), 4),
        "median_time_to_detect_s": float(np.median(ttd)) if ttd else None,
    }


@dataclass
class TrainResult:
    """A trained meter: its registry record, held-out metrics, the booster, and whether it
    became the default (``promoted``) or was kept as a candidate, with the reason."""

    record: ModelRecord
    metrics: dict[str, Any]
    booster: lgb.Booster
    promoted: bool = True
    verdict: str = ""


#: ``status`` in a meter model's metadata: only ``default`` models are picked by ``auto``
DEFAULT, CANDIDATE = "default", "candidate"


def judge_against_rule(metrics: dict[str, Any]) -> tuple[bool, str]:
    """Does the learned meter beat the rule-based one on its held-out runs?

    It may become the default only if its AUC is at least the rule score's and it is not
    dominated on held-out runs: fewer convergences detected with no fewer false-alarm
    runs, or more false-alarm runs without more detections. Returns ``(ok, why)``.

    >>> rule = {"detected": 8, "runs_with_false_alarm": 1}
    >>> judge_against_rule({"auc": 0.9, "rule_auc": 0.8, "heldout_rule": rule,
    ...                     "heldout_learned": {"detected": 9, "runs_with_false_alarm": 2}})[0]
    True
    >>> judge_against_rule({"auc": 0.47, "rule_auc": 0.51, "heldout_rule": rule,
    ...                     "heldout_learned": rule})
    (False, 'its held-out AUC 0.470 is below the rule score alone (0.510)')
    """
    a, r = metrics["auc"], metrics["rule_auc"]
    learned, rule = metrics["heldout_learned"], metrics["heldout_rule"]
    det_l, det_r = learned["detected"], rule["detected"]
    fa_l, fa_r = learned["runs_with_false_alarm"], rule["runs_with_false_alarm"]
    if math.isnan(a):  # no held-out ticks with (or without) a convergence under way
        return False, "its held-out runs cannot judge it (no convergence, or nothing else, in " \
                      "them); train with more --runs"
    if not math.isnan(r) and a < r:
        return False, f"its held-out AUC {a:.3f} is below the rule score alone ({r:.3f})"
    if det_l < det_r and fa_l >= fa_r:
        return False, (f"on held-out runs it detected {det_l} convergences to the rule's {det_r} "
                       f"with {fa_l} false-alarm runs to the rule's {fa_r}")
    if fa_l > fa_r and det_l <= det_r:
        return False, (f"on held-out runs it raised false alarms in {fa_l} runs to the rule's "
                       f"{fa_r} without detecting more ({det_l} vs {det_r})")
    return True, (f"held-out AUC {a:.3f} vs the rule's {r:.3f}; detected {det_l} vs {det_r}, "
                  f"false-alarm runs {fa_l} vs {fa_r}")


def _dataset(runs: int, ticks: int, stations: int,
             seed: int) -> tuple[SimResult, npt.NDArray[np.bool_]]:
    fleet = default_fleet(stations, seed)
    scs = [random_scenario(fleet, seed=seed * 100_003 + r, horizon_s=ticks, p_genuine=0.5)
           for r in range(runs)]
    res = simulate(scs, n_ticks=ticks, seed=seed)
    return res, np.array([bool(sc.genuine()) for sc in scs])


def _params(seed: int) -> dict[str, Any]:
    return {"objective": "binary", "learning_rate": 0.08, "num_leaves": 15,
            "min_data_in_leaf": 40, "feature_fraction": 0.9, "bagging_fraction": 0.8,
            "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed, "deterministic": True,
            "force_row_wise": True, "num_threads": 1, "verbose": -1}


def train_meter(registry: ModelRegistry, *, runs: int = 600, ticks: int = 60, stations: int = 247,
                seed: int = 7, holdout: float = 0.3, num_rounds: int = 200,
                progress: Progress | None = None) -> TrainResult:
    """Simulate labelled runs, train LightGBM, evaluate on held-out runs, save."""
    if runs < 10 or ticks < 20:
        raise ValueError(f"need at least 10 runs of 20 ticks to train, got {runs} x {ticks}")
    if not 0.05 <= holdout <= 0.8:
        raise ValueError(f"holdout must be in [0.05, 0.8], got {holdout}")
    say = progress or (lambda _msg, _frac: None)
    say(f"simulating {runs} runs x {ticks} ticks x {stations} stations", 0.0)
    res, has_gen = _dataset(runs, ticks, stations, seed)
    rng = np.random.default_rng([seed, 9])
    test_runs = rng.random(runs) < holdout
    X = res.features.reshape(-1, len(FEATURE_NAMES))
    y = res.label.reshape(-1).astype(np.float64)
    is_test = np.repeat(test_runs, ticks)
    train = lgb.Dataset(X[~is_test], y[~is_test], feature_name=list(FEATURE_NAMES),
                        free_raw_data=False)
    say("training LightGBM", 0.4)

    def _cb(env: Any) -> None:
        if env.iteration % 20 == 0:
            say(f"boosting round {env.iteration + 1}/{num_rounds}", 0.4 + 0.4 * env.iteration / num_rounds)

    booster = lgb.train(_params(seed), train, num_boost_round=num_rounds, callbacks=[_cb])
    # the learned meter's score depends only on per-region features and OSINT flags, which
    # the simulation kept: predict every region once and replay the meter offline
    assert res.region_features is not None and res.region_osint is not None
    p_region = np.asarray(booster.predict(res.region_features.reshape(-1, len(FEATURE_NAMES))),
                          np.float64).reshape(res.region_osint.shape)
    # the OSINT rule keeps uncorroborated regions under warning whatever their P
    p_alarm = np.where(res.region_osint, p_region, 0.0).max(-1)
    p_warning = choose_operating_point(p_alarm[~test_runs], res.label[~test_runs],
                                       res.fired[~test_runs])
    p = booster.predict(X[is_test])
    yt = y[is_test]
    metrics: dict[str, Any] = {"auc": round(auc(yt, np.asarray(p)), 4)}
    metrics.update(calibration(yt, np.asarray(p)))
    metrics["rule_auc"] = round(auc(yt, X[is_test][:, FEATURE_NAMES.index("rule_score")] / 100), 4)
    say("comparing rule-based and learned meter on held-out runs", 0.85)
    metrics["heldout_rule"] = detection_stats(res.fired[test_runs], res.label[test_runs],
                                              has_gen[test_runs], res.tick_s)
    learned_fired = replay_learned_meter(p_region[test_runs], res.region_osint[test_runs],
                                         p_warning)
    metrics["heldout_learned"] = detection_stats(learned_fired, res.label[test_runs],
                                                 has_gen[test_runs], res.tick_s)
    importance = dict(zip(FEATURE_NAMES, booster.feature_importance("gain").round(1).tolist(),
                          strict=True))
    metrics["operating_point"] = {"p_warning": round(p_warning, 4)}
    promoted, verdict = judge_against_rule(metrics)
    meta = {"kind": "lightgbm-binary", "features": list(FEATURE_NAMES), "runs": runs,
            "status": DEFAULT if promoted else CANDIDATE, "status_reason": verdict,
            "p_warning": p_warning,
            "ticks": ticks, "stations": stations, "seed": seed, "holdout": holdout,
            "num_rounds": num_rounds, "train_rows": int((~is_test).sum()),
            "test_rows": int(is_test.sum()), "positive_share": round(float(y.mean()), 4),
            "metrics": metrics, "feature_importance_gain": importance,
            "lightgbm": lgb.__version__}
    rec = registry.save_text(MODEL_NAME, booster.model_to_string(), meta)
    say("saved", 1.0)
    return TrainResult(rec, metrics, booster, promoted, verdict)


def replay_learned_meter(p_region: F64, region_osint: npt.NDArray[np.bool_], p_warning: float,
                         meter: ConvergenceMeter | None = None) -> npt.NDArray[np.bool_]:
    """Alerts of the learned meter, replayed offline from per-region P(convergence).

    ``p_region`` and ``region_osint`` are ``(runs, ticks, regions)``; the meter maps P
    with :func:`to_score`, applies the OSINT rule, takes the best region and steps its
    level hysteresis exactly as :meth:`ConvergenceMeter.step` does with a scorer.
    Returns ``fired``, ``(runs, ticks)``.
    """
    m = meter or ConvergenceMeter()
    n_runs, n_ticks = p_region.shape[:2]
    score_r = m.cap_osint(100.0 * np.clip(to_score(p_region, p_warning), 0.0, 1.0), region_osint)
    score = score_r.max(-1)
    state = m.init_state((n_runs, 1))
    fired = np.zeros((n_runs, n_ticks), bool)
    for t in range(n_ticks):
        fired[:, t] = m.advance(state, score[:, t])[2]
    return fired


WARNING_SCORE = 0.55  # the meter's default warning threshold, as a fraction of 100
MAX_FALSE_ALARM_RATE = 0.02


def to_score(p: F64, p_warning: float) -> F64:
    """Map P(convergence) so that ``p_warning`` lands on the warning threshold (0.55)."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    lo = p * WARNING_SCORE / max(p_warning, 1e-9)
    hi = WARNING_SCORE + (p - p_warning) * (1 - WARNING_SCORE) / max(1 - p_warning, 1e-9)
    out: F64 = np.where(p <= p_warning, lo, hi)
    return out


def choose_operating_point(p: F64, label: npt.NDArray[np.bool_], rule_fired: npt.NDArray[np.bool_]) -> float:
    """Smallest P whose false-alarm rate over runs is within the rule's (and <= 2 %).

    ``p``, ``label`` and ``rule_fired`` are ``(runs, ticks)`` on training runs. The meter
    alarms when its score *rises* through the threshold, so a run has a false alarm at
    threshold ``x`` if P crosses ``x`` upwards at a tick with no genuine convergence under
    way (staying high after a real one is not a new alarm).
    """
    rule_rate = float(np.any(rule_fired & ~label, axis=1).mean())
    budget = min(max(rule_rate, 1.0 / p.shape[0]), MAX_FALSE_ALARM_RATE)
    prev = np.concatenate([np.zeros((p.shape[0], 1)), p[:, :-1]], axis=1)
    for x in np.linspace(0.05, 0.99, 95):
        rises = (p >= x) & (prev < x) & ~label
        if float(np.any(rises, axis=1).mean()) <= budget:
            return float(x)
    return 0.99


def booster_scorer(booster: lgb.Booster, p_warning: float = WARNING_SCORE) -> Callable[[F64], F64]:
    """Wrap a booster as the meter's ``scorer``: feature rows -> calibrated score / 100."""

    def score(features: F64) -> F64:
        return to_score(np.asarray(booster.predict(np.asarray(features, np.float64)), np.float64),
                        p_warning)

    return score


class MeterScorer:
    """A saved meter model as the meter's ``scorer``, knowing which model it is (``ref``)."""

    def __init__(self, ref: str, score: Callable[[F64], F64]) -> None:
        self.ref = ref
        self._score = score

    def __call__(self, features: F64) -> F64:
        return self._score(features)


def default_version(registry: ModelRegistry) -> int:
    """The meter version ``auto`` uses: the newest one that became the default (a model
    kept as a candidate, worse than the rule, is used only when pinned)."""
    records = registry.list(MODEL_NAME)
    usable = [r for r in records if r.metadata.get("status", DEFAULT) != CANDIDATE]
    if not usable:
        if not records:
            registry.latest(MODEL_NAME, train_hint=TRAIN_HINT)  # raises, saying how to train
        raise ModelNotFound(
            f"every meter model in {registry.root / MODEL_NAME} is a candidate that did worse "
            "than the rule on its held-out runs; pin one with "
            f"CONVERGENCE_METER_MODEL=meter@N or train again with more runs ({TRAIN_HINT})")
    return usable[-1].version


def load_scorer(registry: ModelRegistry, version: int | None = None) -> MeterScorer:
    """The saved meter model as a scorer (default: :func:`default_version`);
    :class:`ModelNotFound` if there is none to use."""
    if version is None:
        version = default_version(registry)
    rec, text = registry.load_text(MODEL_NAME, version, train_hint=TRAIN_HINT)
    return MeterScorer(rec.ref, booster_scorer(lgb.Booster(model_str=text),
                                               float(rec.metadata.get("p_warning", WARNING_SCORE))))


def result_features_example() -> F64:
    """One feature row of a strong multi-kind convergence (for examples and smoke tests)."""
    row = dict.fromkeys(FEATURE_NAMES, 0.0)
    row.update(evidence=6.0, n_kinds=4, n_osint_groups=4, n_nodes=12, n_groups=10,
               max_strength=1.0, mean_strength=0.8, active_share=0.3, market_share=0.2,
               rule_score=90.0, n_regions_watch=1)
    return np.array([[row[n] for n in FEATURE_NAMES]])


__all__ = ["CANDIDATE", "DEFAULT", "MODEL_NAME", "MeterScorer", "TrainResult", "auc",
           "booster_scorer", "calibration", "default_version", "detection_stats",
           "judge_against_rule", "load_scorer", "replay_learned_meter", "train_meter"]

"""The learned convergence fusion: LightGBM over the meter's fused features.

Training data comes from scenario campaigns (:mod:`convergence.simulation.campaign`):
the library's genuine convergences and decoys, with their worlds sampled as a Monte
Carlo campaign samples them, run through the very same tick processor as a live run;
every (run, tick, region) gives the meter's fused features for that region
(:data:`~convergence.detectors.meter.FEATURE_NAMES`) and a label — is a genuine
convergence under way there? The model is trained on the runs of one campaign seed and
reported on the runs of *another* seed, which it never saw.

The raw probability is not used as the score directly: an *operating point* is chosen
out of sample — on out-of-fold predictions of the training runs (each fold's model
predicts runs it was not trained on) — as the smallest P at which the learned meter,
replayed with its hysteresis per region, false-alarms on decoy runs no more often than
the rule-based meter does on the same runs (and at most 1 %). P is then mapped
piecewise-linearly so that this P lands on the ``warning`` threshold (55). Choosing it
on in-sample predictions let the budget double on held-out runs (an earlier version).

The report of a training run carries the held-out **AUC**, the **Brier score**, a
10-bin **reliability table** with the expected calibration error, and a head-to-head
on the held-out seed's runs of the rule-based meter and the learned meter: detection,
runs with a false alarm, median time to detect.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from convergence.models.registry import ModelRegistry
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> result = train_meter(reg, runs=6, seed=1, scenarios="simultaneous,lone-surge,pure-noise",
...                      num_rounds=20, folds=2)
>>> 0.5 < result.metrics["auc"] <= 1.0, result.record.name
(True, 'meter')
>>> scorer = load_scorer(reg, result.record.version)  # the default, or a candidate
>>> float(scorer(result_features_example())[0]) >= 0.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
from convergence.ground_stations.scenario import Scenario
from convergence.ground_stations.scenario_library import SCENARIOS, names
from convergence.models.registry import ModelNotFound, ModelRecord, ModelRegistry, RegistryError
from convergence.simulation.campaign import (
    ParamSpace,
    chunk_scenarios,
    judge_run,
)
from convergence.simulation.simulator import SimResult, simulate

MODEL_NAME = "meter"
TRAIN_HINT = "convergence models train meter"
F64 = npt.NDArray[np.float64]
Progress = Callable[[str, float], None]
#: label a tick "convergence under way" up to this many ticks after its end (the meter's
#: evidence of a convergence outlives it by its window)
LABEL_GRACE_TICKS = 4


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


@dataclass
class Campaign:
    """Simulated campaign runs with the meter's features, labels and the rule's alerts."""

    results: list[SimResult]
    scenarios: list[list[Scenario]]

    def rows(self) -> tuple[F64, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Feature rows, labels and the run each row belongs to (global run index)."""
        xs, ys, runs = [], [], []
        offset = 0
        for res in self.results:
            assert res.features is not None
            f = res.features.reshape(-1, len(FEATURE_NAMES)).astype(np.float64)
            y = res.labels(LABEL_GRACE_TICKS).reshape(-1)
            per_run = int(np.prod(res.features.shape[1:3]))
            xs.append(f)
            ys.append(y)
            runs.append(np.repeat(np.arange(offset, offset + res.n_runs), per_run))
            offset += res.n_runs
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(runs)


def simulate_campaign(scenarios: Sequence[str], *, runs: int, seed: int,
                      space: ParamSpace | None = None, progress: Progress | None = None,
                      lo: float = 0.0, hi: float = 1.0) -> Campaign:
    """Every scenario ``runs`` times (worlds sampled as a campaign does), with features."""
    space = space or ParamSpace()
    results, scs_all = [], []
    for i, name in enumerate(scenarios):
        if progress is not None:
            progress(f"simulating {name} ({runs} runs)", lo + (hi - lo) * i / len(scenarios))
        scs, _ = chunk_scenarios(name, 0, runs, seed=seed, space=space, sweep=False)
        results.append(simulate(scs, seed=seed * 7919 + i, features=True,
                                processor=_feature_processor(scs[0].tick_s)))
        scs_all.append(scs)
    return Campaign(results, scs_all)


def _feature_processor(tick_s: float) -> Any:
    from convergence.detectors.chain import DetectorChain
    from convergence.detectors.processor import TickProcessor

    return TickProcessor(DetectorChain(meter=ConvergenceMeter(emit_features=True), tick_s=tick_s))


def analyst_rows(rows: Sequence[tuple[Mapping[str, float], bool]]) -> tuple[F64, npt.NDArray[np.bool_], int]:
    """Feature matrix (``FEATURE_NAMES`` order) and labels of analysts' labelled reports.

    ``rows`` are ``(features, genuine)``; a row missing any feature (written by an older
    meter) or holding a non-finite value is skipped and counted (third value).

    >>> X, y, skipped = analyst_rows([(dict.fromkeys(FEATURE_NAMES, 1.0), True), ({"evidence": 2.0}, False)])
    >>> X.shape, y.tolist(), skipped
    ((1, 10), [True], 1)
    """
    keep = [(f, g) for f, g in rows
            if all(n in f and np.isfinite(float(f[n])) for n in FEATURE_NAMES)]
    X = np.array([[float(f[n]) for n in FEATURE_NAMES] for f, _ in keep], np.float64).reshape(
        -1, len(FEATURE_NAMES))
    return X, np.array([g for _, g in keep], bool), len(rows) - len(keep)


def _params(seed: int) -> dict[str, Any]:
    return {"objective": "binary", "learning_rate": 0.08, "num_leaves": 15,
            "min_data_in_leaf": 40, "feature_fraction": 0.9, "bagging_fraction": 0.8,
            "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed, "deterministic": True,
            "force_row_wise": True, "num_threads": 1, "verbose": -1}


def _predict_regions(booster: lgb.Booster, res: SimResult) -> F64:
    assert res.features is not None
    p = np.asarray(booster.predict(res.features.reshape(-1, len(FEATURE_NAMES)).astype(np.float64)),
                   np.float64)
    return p.reshape(res.features.shape[:3])


def campaign_stats(camp: Campaign, fired: Sequence[npt.NDArray[np.bool_]],
                   meter: ConvergenceMeter | None = None) -> dict[str, Any]:
    """Detection, false alarms and time to detect of ``fired`` (per result, ``(runs, ticks,
    regions)``) judged against the campaign's ground truth."""
    window = (meter or ConvergenceMeter()).window_ticks
    gen = det = fa_runs = decoy_runs = fa_decoy = 0
    ttd: list[float] = []
    for res, scs, f in zip(camp.results, camp.scenarios, fired, strict=True):
        for k, sc in enumerate(scs):
            t, r = np.nonzero(f[k])
            j = judge_run(sc, list(zip(t.tolist(), r.tolist(), strict=True)), res.regions,
                          tick_s=res.tick_s, n_ticks=res.n_ticks, window_ticks=window)
            gen += j.genuine
            det += j.detected
            ttd += list(j.ttd_ticks)
            fa_runs += j.false_alarms > 0
            if not SCENARIOS[sc.name].genuine:
                decoy_runs += 1
                fa_decoy += j.false_alarms > 0
    runs = sum(len(s) for s in camp.scenarios)
    return {
        "genuine": gen, "detected": det,
        "detection_rate": round(det / gen, 4) if gen else None,
        "decoy_runs": decoy_runs, "decoy_runs_with_false_alarm": fa_decoy,
        "false_alarm_rate": round(fa_decoy / decoy_runs, 4) if decoy_runs else None,
        "runs_with_false_alarm": fa_runs, "runs": runs,
        "median_time_to_detect_ticks": float(np.median(ttd)) if ttd else None,
    }


def train_meter(registry: ModelRegistry, *, runs: int = 40, seed: int = 7,
                heldout_seed: int | None = None, scenarios: str = "all", num_rounds: int = 200,
                folds: int = 3, progress: Progress | None = None,
                labelled: tuple[F64, npt.NDArray[np.bool_]] | None = None,
                label_weight: float = 20.0) -> TrainResult:
    """Train on one campaign seed, choose the operating point out of fold, report on another
    seed's runs, save (see the module docstring).

    ``labelled``: analysts' labelled reports as ``(features, genuine)`` (see
    :func:`analyst_rows`); they join the training rows, each weighing ``label_weight``
    simulated rows (a person's verdict on a real alert is rarer and worth more than one
    simulated tick). The operating point and the held-out evaluation stay on simulated runs.
    """
    if not (math.isfinite(label_weight) and 0 < label_weight <= 10_000):
        raise ValueError(f"label weight must be in (0, 10000], got {label_weight}")
    if runs < 2:
        raise ValueError(f"need at least 2 runs per scenario to train, got {runs}")
    if folds < 2 or folds > runs:
        raise ValueError(f"folds must be in [2, runs], got {folds}")
    heldout_seed = seed + 1 if heldout_seed is None else heldout_seed
    if heldout_seed == seed:
        raise ValueError("the held-out seed must differ from the training seed")
    chosen = names(scenarios)
    say = progress or (lambda _msg, _frac: None)
    train = simulate_campaign(chosen, runs=runs, seed=seed, progress=say, lo=0.0, hi=0.35)
    test = simulate_campaign(chosen, runs=max(2, runs // 2), seed=heldout_seed, progress=say,
                             lo=0.35, hi=0.55)
    X, y, run_of = train.rows()
    say("training LightGBM (out-of-fold models for the operating point)", 0.55)
    fold_of_run = np.arange(run_of.max() + 1) % folds
    oof = np.zeros(len(y))
    for f in range(folds):
        tr = fold_of_run[run_of] != f
        b = lgb.train(_params(seed + f), lgb.Dataset(X[tr], y[tr].astype(np.float64)),
                      num_boost_round=num_rounds)
        oof[~tr] = np.asarray(b.predict(X[~tr]), np.float64)
    say("training LightGBM on every training run", 0.75)
    X_all, y_all, weight = X, y.astype(np.float64), np.ones(len(y))
    if labelled is not None and len(labelled[1]):
        X_lab, y_lab = np.asarray(labelled[0], np.float64), np.asarray(labelled[1], bool)
        X_all = np.vstack([X_all, X_lab])
        y_all = np.concatenate([y_all, y_lab.astype(np.float64)])
        weight = np.concatenate([weight, np.full(len(y_lab), float(label_weight))])
    booster = lgb.train(_params(seed), lgb.Dataset(X_all, y_all, weight=weight,
                                                   feature_name=list(FEATURE_NAMES)),
                        num_boost_round=num_rounds)
    # out-of-fold P per (run, tick, region), in the campaign's own shapes
    oof_regions, pos = [], 0
    for res in train.results:
        assert res.features is not None
        n = int(np.prod(res.features.shape[:3]))
        oof_regions.append(oof[pos:pos + n].reshape(res.features.shape[:3]))
        pos += n
    rule_fa = campaign_stats(train, [r.fired for r in train.results])["false_alarm_rate"] or 0.0
    p_warning = choose_operating_point(train, oof_regions, rule_fa)
    # what the operating point promises: its false alarms on the training runs, out of fold
    oof_fa = campaign_stats(train, [replay_learned_meter(p, r.osint, p_warning)
                                    for p, r in zip(oof_regions, train.results, strict=True)
                                    if r.osint is not None])["false_alarm_rate"]
    say("comparing rule-based and learned meter on the held-out seed", 0.9)
    Xt, yt, _ = test.rows()
    pt = np.asarray(booster.predict(Xt), np.float64)
    metrics: dict[str, Any] = {"auc": round(auc(yt, pt), 4)}
    metrics.update(calibration(yt, pt))
    metrics["rule_auc"] = round(auc(yt, Xt[:, FEATURE_NAMES.index("rule_score")] / 100), 4)
    metrics["heldout_rule"] = campaign_stats(test, [r.fired for r in test.results])
    learned = [replay_learned_meter(_predict_regions(booster, r), r.osint, p_warning)
               for r in test.results if r.osint is not None]
    metrics["heldout_learned"] = campaign_stats(test, learned)
    if labelled is not None and len(labelled[1]):
        p_lab = np.asarray(booster.predict(np.asarray(labelled[0], np.float64)), np.float64)
        y_lab = np.asarray(labelled[1], bool)
        metrics["analyst_labels"] = {
            "rows": len(y_lab), "genuine": int(y_lab.sum()), "false_alarm": int((~y_lab).sum()),
            "weight": float(label_weight),
            # in-sample (the labels are in the training set): how far the model follows them
            "mean_p_genuine": round(float(p_lab[y_lab].mean()), 4) if y_lab.any() else None,
            "mean_p_false_alarm": round(float(p_lab[~y_lab].mean()), 4) if (~y_lab).any() else None,
        }
    metrics["operating_point"] = {"p_warning": round(p_warning, 4),
                                  "rule_false_alarm_rate_on_training_runs": rule_fa,
                                  "out_of_fold_false_alarm_rate": oof_fa,
                                  "false_alarm_budget": round(false_alarm_cap(train, rule_fa), 4)}
    importance = dict(zip(FEATURE_NAMES, booster.feature_importance("gain").round(1).tolist(),
                          strict=True))
    promoted, verdict = judge_against_rule(metrics)
    meta = {"kind": "lightgbm-binary", "features": list(FEATURE_NAMES), "runs": runs,
            "status": DEFAULT if promoted else CANDIDATE, "status_reason": verdict,
            "p_warning": p_warning, "scenarios": chosen, "seed": seed,
            "heldout_seed": heldout_seed, "folds": folds, "num_rounds": num_rounds,
            "train_rows": len(y_all), "test_rows": len(yt),
            "analyst_label_rows": len(labelled[1]) if labelled is not None else 0,
            "positive_share": round(float(y.mean()), 4), "metrics": metrics,
            "feature_importance_gain": importance, "lightgbm": lgb.__version__}
    rec = registry.save_text(MODEL_NAME, booster.model_to_string(), meta)
    say("saved", 1.0)
    return TrainResult(rec, metrics, booster, promoted, verdict)


def replay_learned_meter(p_region: F64, region_osint: npt.NDArray[np.bool_], p_warning: float,
                         meter: ConvergenceMeter | None = None) -> npt.NDArray[np.bool_]:
    """Alerts of the learned meter, replayed offline from per-region P(convergence).

    ``p_region`` and ``region_osint`` are ``(runs, ticks, regions)``; the meter maps P
    with :func:`to_score`, applies the OSINT rule and steps every region's level
    hysteresis exactly as :meth:`ConvergenceMeter.step` does with a scorer. Returns
    ``fired``, ``(runs, ticks, regions)``.
    """
    m = meter or ConvergenceMeter()
    n_runs, n_ticks, n_reg = p_region.shape
    score = m.cap_osint(100.0 * np.clip(to_score(p_region, p_warning), 0.0, 1.0), region_osint)
    state = m.init_state((n_runs, n_reg))
    fired = np.zeros(p_region.shape, bool)
    for t in range(n_ticks):
        fired[:, t] = m.advance(state, score[:, t])[2]
    return fired


WARNING_SCORE = 0.55  # the meter's default warning threshold, as a fraction of 100
MAX_FALSE_ALARM_RATE = 0.01


def to_score(p: F64, p_warning: float) -> F64:
    """Map P(convergence) so that ``p_warning`` lands on the warning threshold (0.55)."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    lo = p * WARNING_SCORE / max(p_warning, 1e-9)
    hi = WARNING_SCORE + (p - p_warning) * (1 - WARNING_SCORE) / max(1 - p_warning, 1e-9)
    out: F64 = np.where(p <= p_warning, lo, hi)
    return out


def false_alarm_cap(camp: Campaign, budget: float, max_rate: float = MAX_FALSE_ALARM_RATE) -> float:
    """The share of decoy runs the learned meter may false-alarm on: ``budget`` (the rule's
    own rate), but at least one run of the campaign and at most ``max_rate``."""
    decoy_runs = sum(1 for scs in camp.scenarios for sc in scs if not SCENARIOS[sc.name].genuine)
    return min(max(budget, 1.0 / max(decoy_runs, 1)), max_rate)


def choose_operating_point(camp: Campaign, p_regions: Sequence[F64], budget: float,
                           max_rate: float = MAX_FALSE_ALARM_RATE) -> float:
    """Smallest P whose replayed learned meter false-alarms on decoy runs within
    ``max(budget, one run)`` and at most ``max_rate`` (``p_regions``: out-of-fold P per
    result, ``(runs, ticks, regions)``)."""
    cap = false_alarm_cap(camp, budget, max_rate)
    for x in np.linspace(0.05, 0.99, 48):
        fired = [replay_learned_meter(p, r.osint, float(x))
                 for p, r in zip(p_regions, camp.results, strict=True) if r.osint is not None]
        fa = campaign_stats(camp, fired)["false_alarm_rate"] or 0.0
        if fa <= cap:
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
    if rec.metadata.get("features") != list(FEATURE_NAMES):
        raise RegistryError(f"{rec.ref} was trained on other meter features "
                            f"({', '.join(map(str, rec.metadata.get('features') or ['?']))}); "
                            f"this version fuses {', '.join(FEATURE_NAMES)}: retrain it with "
                            "`convergence models train meter`")
    return MeterScorer(rec.ref, booster_scorer(lgb.Booster(model_str=text),
                                               float(rec.metadata.get("p_warning", WARNING_SCORE))))


def result_features_example(seed: int = 0) -> F64:
    """One feature row of a clear multi-kind convergence (for examples and smoke tests):
    the region's row at the peak of the rule score in a simulated run of the library's
    ``simultaneous`` scenario.

    >>> row = result_features_example()
    >>> row.shape == (1, len(FEATURE_NAMES)) and bool(row[0, FEATURE_NAMES.index("n_kinds")] >= 3)
    True
    """
    from convergence.ground_stations.scenario_library import build
    from convergence.simulation.simulator import simulate

    res = simulate([build("simultaneous", seed=seed)], seed=seed, features=True)
    assert res.features is not None
    rows = np.asarray(res.features, np.float64).reshape(-1, len(FEATURE_NAMES))
    return rows[[int(np.argmax(rows[:, FEATURE_NAMES.index("rule_score")]))]]


__all__ = ["CANDIDATE", "DEFAULT", "MODEL_NAME", "Campaign", "MeterScorer", "TrainResult",
           "analyst_rows", "auc", "booster_scorer", "calibration", "campaign_stats",
           "default_version", "judge_against_rule", "load_scorer", "replay_learned_meter",
           "simulate_campaign", "train_meter"]

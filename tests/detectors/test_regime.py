"""The regime forward filter and the causal feature transform.

hmmlearn is the reference here (a test may import it; ``detectors/`` may not).
Agreement is checked two ways at every tick ``t``:

* public API: ``GaussianHMM.predict_proba(X[: t + 1])[-1]``. The smoothed posterior of
  the *last* frame of a sequence is the filtered one (the backward variable of the
  final frame is 1), so this is ``P(state_t | x_1..x_t)``;
* the whole forward lattice at once: ``hmmlearn._hmmc.forward_log`` on
  ``model._compute_log_likelihood(X)``, normalised per row (what ``score`` runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM

from convergence.detectors.base import ArrayState
from convergence.detectors.regime import (
    Q_FLOOR,
    RegimeFilter,
    alarm_states,
    feature_transform,
    regime_names,
    stationary_distribution,
)

N_STATES, N_FEATURES = 5, 2


def random_params(seed: int = 0, n: int = N_STATES, f: int = N_FEATURES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.ones(n) * 0.5, size=n) + np.eye(n) * 4  # sticky, like regimes
    return {
        "startprob": rng.dirichlet(np.ones(n)),
        "transmat": trans / trans.sum(axis=1, keepdims=True),
        "means": rng.normal(0, 1, (n, f)),
        "variances": rng.uniform(0.2, 3.0, (n, f)),
    }


def to_hmmlearn(p: dict[str, np.ndarray]) -> GaussianHMM:
    n, f = p["means"].shape
    hmm = GaussianHMM(n_components=n, covariance_type="diag", implementation="log")
    hmm.n_features = f
    hmm.startprob_, hmm.transmat_ = p["startprob"], p["transmat"]
    hmm.means_, hmm.covars_ = p["means"], p["variances"]
    return hmm


def run(flt: RegimeFilter, x: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Step a (T, ..., stations, F) feature array; stack the outputs over time."""
    state = flt.init_state(x.shape[1:-1])
    outs = [flt.step(state, {"features": x[t]} if mask is None else
                     {"features": x[t], "mask": mask[t]}) for t in range(x.shape[0])]
    return {k: np.stack([o[k] for o in outs]) for k in outs[0]}


def vol_switch_prices(seed: int = 5, switch_at: int = 300, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.where(np.arange(n) < switch_at, rng.normal(0, 0.005, n), rng.normal(0, 0.03, n))
    return np.asarray(100 * np.exp(np.cumsum(r)))


def price_regime_filter() -> RegimeFilter:
    """Five hand-set price regimes, volatilities 0.4% .. 3.5% per tick.

    Calm regimes last 50-200 ticks, alarm regimes 7-10: long-run alarm share 4.5%.
    """
    vols = np.array([0.004, 0.007, 0.012, 0.02, 0.035])
    stay = np.array([0.995, 0.99, 0.98, 0.9, 0.85])
    trans = np.diag(stay) + (1 - stay)[:, None] * (1 - np.eye(5)) / 4
    return RegimeFilter(
        startprob=stationary_distribution(trans), transmat=trans,
        means=np.stack([np.zeros(5), vols], axis=1),
        variances=np.stack([vols**2, (0.25 * vols) ** 2], axis=1),
    )


# -- agreement with hmmlearn ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_probs_match_hmmlearn_at_every_tick(seed: int) -> None:
    p = random_params(seed)
    hmm = to_hmmlearn(p)
    rng = np.random.default_rng(100 + seed)
    sampled, _ = hmm.sample(150, random_state=seed)  # confident posteriors (near 0/1)
    wild = rng.normal(0, 3, (50, N_FEATURES))  # ambiguous, and outliers for every state
    x = np.concatenate([sampled, wild])
    probs = run(RegimeFilter(**p), x[:, None, :])["probs"][:, 0]

    public = np.array([hmm.predict_proba(x[: t + 1])[-1] for t in range(len(x))])
    np.testing.assert_allclose(probs, public, atol=1e-6, rtol=0)
    _, log_fwd = _hmmc.forward_log(hmm.startprob_, hmm.transmat_, hmm._compute_log_likelihood(x))
    lattice = np.exp(log_fwd - np.logaddexp.reduce(log_fwd, axis=1, keepdims=True))
    np.testing.assert_allclose(probs, lattice, atol=1e-6, rtol=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def test_log_likelihood_matches_hmmlearn() -> None:
    p = random_params(3)
    x = np.random.default_rng(3).normal(0, 2, (40, N_FEATURES))
    ref = to_hmmlearn(p)._compute_log_likelihood(x)
    np.testing.assert_allclose(RegimeFilter(**p).log_likelihood(x), ref, rtol=1e-12)


def test_forbidden_start_state_matches_hmmlearn_and_stays_json_safe() -> None:
    p = random_params(4)
    p["startprob"] = np.array([0.0, 0.5, 0.5, 0.0, 0.0])
    x = np.random.default_rng(4).normal(0, 1, (30, N_FEATURES))
    flt = RegimeFilter(**p)
    state = flt.init_state((1,))
    json.dumps(state.to_dict(), allow_nan=False)  # log(0) is stored as a finite number
    probs = np.stack([flt.step(state, {"features": x[t][None]})["probs"][0] for t in range(30)])
    public = np.array([to_hmmlearn(p).predict_proba(x[: t + 1])[-1] for t in range(30)])
    np.testing.assert_allclose(probs, public, atol=1e-6, rtol=0)
    assert probs[0, 0] == 0.0


# -- missing observations ------------------------------------------------------------------


def test_masked_or_nan_tick_applies_only_the_transition() -> None:
    p = random_params(5)
    flt = RegimeFilter(**p)
    x = np.random.default_rng(5).normal(0, 1, (3, N_FEATURES))
    state = flt.init_state((3,))
    before = flt.step(state, {"features": x})["probs"]
    feats = x.copy()
    feats[1, 0] = np.nan
    out = flt.step(state, {"features": feats, "mask": np.array([True, False, False])})
    predicted = before @ p["transmat"]
    np.testing.assert_allclose(out["probs"][:2], predicted[:2], atol=1e-12)
    assert not np.allclose(out["probs"][2], predicted[2])  # observed: moved by its evidence


def test_first_tick_masked_gives_the_start_distribution() -> None:
    p = random_params(6)
    flt = RegimeFilter(**p)
    out = flt.step(flt.init_state((2,)), {"features": np.zeros((2, N_FEATURES)),
                                          "mask": np.array([True, True])})
    np.testing.assert_allclose(out["probs"], np.tile(p["startprob"], (2, 1)), atol=1e-12)


def test_absurd_observation_keeps_the_prior_instead_of_nan() -> None:
    flt = RegimeFilter(**random_params(7))
    state = flt.init_state((2,))
    flt.step(state, {"features": np.zeros((2, N_FEATURES))})
    out = flt.step(state, {"features": np.array([[1e200, 0.0], [np.inf, 1.0]])})
    assert np.isfinite(state["log_alpha"]).all()
    np.testing.assert_allclose(out["probs"].sum(axis=-1), 1.0)


# -- batching, state, causality ------------------------------------------------------------


def test_vectorised_runs_and_stations_equal_a_per_station_loop() -> None:
    runs, stations, ticks = 3, 4, 60
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, (ticks, runs, stations, N_FEATURES))
    x[rng.random(x.shape[:-1]) < 0.05] = np.nan
    mask = rng.random((ticks, runs, stations)) < 0.1
    flt = RegimeFilter(**random_params(8))
    batched = run(flt, x, mask)
    for r in range(runs):
        for s in range(stations):
            single = run(flt, x[:, r, s][:, None], mask[:, r, s][:, None])
            for k, v in single.items():
                np.testing.assert_allclose(v[:, 0], batched[k][:, r, s], atol=1e-12, err_msg=k)


def test_state_round_trips_through_to_dict_and_grows() -> None:
    rng = np.random.default_rng(9)
    flt = RegimeFilter(**random_params(9))
    state = flt.init_state((4,))
    assert state.nbytes_per_station() == (N_STATES + 1) * 8
    for _ in range(25):
        flt.step(state, {"features": rng.normal(0, 1, (4, N_FEATURES))})
    copy = ArrayState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False)))
    nxt = {"features": rng.normal(0, 1, (4, N_FEATURES))}
    a, b = flt.step(state, nxt), flt.step(copy, nxt)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    state.grow(6, flt.init_state((6,)))
    np.testing.assert_array_equal(state["log_alpha"][4:], flt.init_state((2,))["log_alpha"])
    assert state["ticks"].tolist() == [26, 26, 26, 26, 0, 0]


def test_no_look_ahead() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(0, 2, (80, 2, N_FEATURES))
    flt = RegimeFilter(**random_params(10))
    base = run(flt, x)
    changed = x.copy()
    changed[50:] = rng.normal(5, 4, changed[50:].shape)
    other = run(flt, changed)
    for k in base:
        np.testing.assert_array_equal(base[k][:50], other[k][:50])
    assert not np.allclose(base["probs"][50:], other["probs"][50:])


# -- regime evidence -----------------------------------------------------------------------


def test_volatility_switch_flips_to_an_alarm_regime_at_a_pinned_tick() -> None:
    prices = vol_switch_prices(switch_at=300)
    flt = price_regime_filter()
    out = run(flt, feature_transform(prices, "price", vol_window=10)[:, None])
    regime, z = out["regime"][:, 0], out["regime_z"][:, 0]
    names = regime_names(5)
    alarm = np.isin(regime, flt.alarm)
    assert {names[r] for r in regime[20:300]} <= {"calm", "normal"}
    assert not alarm[:300].any() and z[:300].max() < 1e-12
    first = int(np.flatnonzero(alarm)[0])
    assert first == 300  # the first 3% return is already 7 calm sigmas (regression pin)
    assert names[regime[first]] == "stressed"
    assert alarm[300:].all()  # and it never drops back to a calm regime
    # evidence for the node machine: >= 4 (its enter_at) from two ticks after the switch
    assert int(np.flatnonzero(z >= 4.0)[0]) == 302
    assert z[300:].min() > 3.0


def test_regime_z_formula() -> None:
    flt = price_regime_filter()
    q = float(np.clip(flt.stationary[list(flt.alarm)].sum(), Q_FLOOR, 1 - Q_FLOOR))
    state = flt.init_state((1,))
    state["ticks"][...] = 5
    state["log_alpha"][...] = np.log(np.array([0.05, 0.05, 0.1, 0.3, 0.5]))
    out = flt.step(state, {"features": np.zeros((1, 2)), "mask": np.array([True])})
    p = out["probs"][0, 3:].sum()
    assert out["regime_z"][0] == pytest.approx((p - q) / np.sqrt(q * (1 - q)), rel=1e-12)
    assert q == pytest.approx(1 / 22, rel=1e-9)  # uniform jumps: shares ~ 1 / (1 - stay)


def test_names_and_alarm_states() -> None:
    assert regime_names(5) == ("calm", "normal", "choppy", "stressed", "crisis")
    assert regime_names(7)[-1] == "state_6"
    assert alarm_states(regime_names(5)) == (3, 4)
    assert alarm_states(regime_names(2)) == (1,)
    assert alarm_states(regime_names(1)) == ()
    assert alarm_states(regime_names(7)) == (5, 6)
    one = RegimeFilter(np.ones(1), np.ones((1, 1)), np.zeros((1, 1)), np.ones((1, 1)))
    out = one.step(one.init_state((2,)), {"features": np.ones((2, 1))})
    assert out["regime_z"].tolist() == [0.0, 0.0]


def test_stationary_distribution() -> None:
    a = random_params(11)["transmat"]
    pi = stationary_distribution(a)
    np.testing.assert_allclose(pi @ a, pi, atol=1e-12)
    assert pi.sum() == pytest.approx(1.0)


# -- constructor and input validation ------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"startprob": np.array([0.5, 0.6, 0.0, 0.0, 0.0])}, "startprob must be probabilities"),
    ({"startprob": np.ones((5, 1)) / 5}, "startprob must be a 1-d"),
    ({"transmat": np.ones((5, 5))}, "transmat rows"),
    ({"transmat": np.eye(4)}, "transmat must have shape"),
    ({"means": np.zeros((4, 2))}, "means must have shape"),
    ({"variances": np.zeros((5, 2))}, "variances must be > 0"),
    ({"variances": np.ones((5, 3))}, "variances must be diagonal"),
    ({"means": np.full((5, 2), np.nan)}, "means must be finite"),
    ({"alarm": [5]}, "alarm must list"),
])
def test_constructor_rejects_bad_parameters(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegimeFilter(**{**random_params(), **change})  # type: ignore[arg-type]


def test_step_rejects_wrong_feature_shape() -> None:
    flt = RegimeFilter(**random_params())
    with pytest.raises(ValueError, match=r"features must have shape \(3, 2\)"):
        flt.step(flt.init_state((3,)), {"features": np.zeros((3, 4))})


def test_parameters_are_read_only() -> None:
    flt = RegimeFilter(**random_params())
    with pytest.raises(ValueError):
        flt.transmat[0, 0] = 1.0


# -- feature transform ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["price", "count"])
def test_feature_transform_is_causal(kind: str) -> None:
    rng = np.random.default_rng(12)
    values = rng.poisson(5, 200).astype(float) + (50 if kind == "price" else 0)
    base = feature_transform(values, kind, vol_window=7)
    for cut in (0, 1, 6, 7, 100, 198):
        changed = values.copy()
        changed[cut + 1:] = rng.uniform(1, 1000, changed[cut + 1:].shape)
        np.testing.assert_array_equal(feature_transform(changed, kind, vol_window=7)[: cut + 1],
                                      base[: cut + 1])


def test_feature_transform_values() -> None:
    prices = np.array([100.0, 110.0, 99.0, 99.0, 120.0])
    f = feature_transform(prices, "price", vol_window=3)
    r = np.diff(np.log(prices))
    np.testing.assert_allclose(f[1:, 0], r)
    assert np.isnan(f[:3, 1]).all()
    np.testing.assert_allclose(f[3:, 1], [np.std(r[0:3]), np.std(r[1:4])])
    c = feature_transform(np.array([0.0, 9.0, 3.0]), "count")
    np.testing.assert_allclose(c[:, 0], np.log1p([0, 9, 3]))
    np.testing.assert_allclose(c[1:, 1], np.diff(np.log1p([0, 9, 3])))


def test_feature_transform_marks_invalid_values_missing() -> None:
    f = feature_transform(np.array([100.0, -1.0, 100.0, 101.0]), "price", vol_window=2)
    assert np.isnan(f[1:3, 0]).all() and np.isfinite(f[3, 0])
    c = feature_transform(np.array([1.0, -2.0, np.inf, 4.0]), "count")
    assert np.isnan(c[1:3]).all() and np.isfinite(c[3, 0]) and np.isnan(c[3, 1])


def test_feature_transform_batched_equals_per_column() -> None:
    rng = np.random.default_rng(13)
    values = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (50, 3, 4)), axis=0))
    batched = feature_transform(values, "price", vol_window=5)
    assert batched.shape == (50, 3, 4, 2)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(batched[:, i, j],
                                       feature_transform(values[:, i, j], "price", vol_window=5))


def test_feature_transform_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        feature_transform(np.ones(5), "volume")
    with pytest.raises(ValueError, match="vol_window must be >= 2"):
        feature_transform(np.ones(5), "price", vol_window=1)
    short = feature_transform(np.ones(3), "price", vol_window=10)
    assert short.shape == (3, 2) and np.isnan(short[:, 1]).all()

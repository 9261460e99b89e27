"""Training, ordering, saving and loading the regime HMM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convergence.detectors.regime import feature_transform, stationary_distribution
from convergence.models.regime import (
    RegimeModel,
    first_invalid,
    infer_kind,
    load_regime,
    save_regime,
    train_regime,
)
from convergence.models.registry import ModelNotFound, ModelRegistry, RegistryError

VOLS = (0.003, 0.006, 0.012, 0.024, 0.045)


def regime_prices(seed: int = 3, seg: int = 150) -> np.ndarray:
    """Prices cycling through five volatility regimes (levels in ``VOLS``)."""
    rng = np.random.default_rng(seed)
    order = [0, 1, 2, 1, 0, 3, 4, 3, 1, 0, 2, 0]
    r = np.concatenate([rng.normal(0, VOLS[k], seg) for k in order])
    return np.asarray(100 * np.exp(np.cumsum(r)))


@pytest.fixture(scope="module")
def prices() -> np.ndarray:
    return regime_prices()


@pytest.fixture(scope="module")
def model(prices: np.ndarray) -> RegimeModel:
    return train_regime(prices, seed=7, n_init=3, source="synthetic")


def test_training_is_reproducible_from_the_seed(prices: np.ndarray, model: RegimeModel) -> None:
    again = train_regime(prices, seed=7, n_init=3, source="synthetic")
    for k in ("startprob", "transmat", "means", "variances", "share"):
        np.testing.assert_array_equal(getattr(again, k), getattr(model, k), err_msg=k)
    assert again.metadata == model.metadata


def test_states_are_ordered_by_volatility_and_named(model: RegimeModel) -> None:
    assert model.names == ("calm", "normal", "choppy", "stressed", "crisis")
    assert model.kind == "price"
    assert np.all(np.diff(model.variances[:, 0]) > 0)
    # the five generating volatilities are recovered to within a third
    vols = np.sqrt(model.variances[:, 0])
    np.testing.assert_allclose(vols, VOLS, rtol=0.35)


def test_parameters_are_a_valid_hmm(model: RegimeModel) -> None:
    np.testing.assert_allclose(model.transmat.sum(axis=1), 1.0)
    # a new station starts from the long-run regime shares
    np.testing.assert_allclose(model.startprob, stationary_distribution(model.transmat))
    assert model.share.sum() == pytest.approx(1.0)
    model.filter()  # the pure-numpy filter accepts the parameters


def test_summary_rows(model: RegimeModel) -> None:
    rows = model.summary()
    assert [r["state"] for r in rows] == list(model.names)
    for k, r in enumerate(rows):
        assert r["volatility"] == pytest.approx(np.sqrt(model.variances[k, 0]))
        assert r["duration_ticks"] == pytest.approx(1 / (1 - model.transmat[k, k]))
        assert r["share"] == pytest.approx(model.share[k])
    assert rows[0]["duration_ticks"] > 20  # calm regimes are persistent


def test_metadata_records_the_training(model: RegimeModel, prices: np.ndarray) -> None:
    m = model.metadata
    assert m["source"] == "synthetic" and m["seed"] == 7 and m["n_values"] == prices.size
    assert m["n_samples"] == prices.size - 10  # first vol_window rows have no volatility
    assert m["params"]["n_states"] == 5 and m["params"]["feature_kind"] == "price"
    assert m["metrics"]["converged"] and m["metrics"]["iterations"] >= 2
    assert np.isfinite(m["metrics"]["log_likelihood"])


def test_features_are_the_shared_transform(model: RegimeModel, prices: np.ndarray) -> None:
    np.testing.assert_array_equal(model.features(prices),
                                  feature_transform(prices, "price", model.vol_window))


def test_label_is_causal_and_finds_the_crisis(model: RegimeModel, prices: np.ndarray) -> None:
    out = model.label(prices)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0)
    changed = prices.copy()
    changed[900:] *= np.exp(np.random.default_rng(1).normal(0, 0.1, changed[900:].shape))
    again = model.label(changed)
    np.testing.assert_array_equal(again["probs"][:900], out["probs"][:900])
    crisis = out["regime"][6 * 150 + 20: 7 * 150]  # the 0.045 segment, after settling
    assert np.isin(crisis, [3, 4]).mean() > 0.9
    # a quarter of the training ticks are stressed/crisis, so certainty is worth
    # sqrt((1 - q) / q) ~ 1.7 standard deviations, not more
    q = model.filter().stationary[3:].sum()
    z = out["regime_z"][6 * 150 + 20: 7 * 150]
    assert 0.2 < q < 0.3
    assert z.mean() == pytest.approx(np.sqrt((1 - q) / q), rel=0.02)


def test_progress_is_reported_every_iteration(prices: np.ndarray) -> None:
    seen: list[tuple[int, int, float]] = []
    m = train_regime(prices, n_states=2, seed=1, n_iter=7, n_init=2,
                     progress=lambda i, n, ll: seen.append((i, n, ll)))
    done = [i for i, _, _ in seen]
    assert {n for _, n, _ in seen} == {14}
    assert done == sorted(done) and done[-1] == 14  # monotone, and ends full
    assert 7 in done  # the first restart's share ends at 7 even if it converged early
    best = m.metadata["metrics"]["best_restart"]
    lls = m.metadata["metrics"]["restart_log_likelihoods"]
    assert len(lls) == 2 and lls[best] == max(lls) == m.metadata["metrics"]["log_likelihood"]


def test_count_series_and_kind_inference() -> None:
    rng = np.random.default_rng(2)
    counts = rng.poisson(np.repeat([3.0, 3.0, 25.0, 3.0, 10.0, 3.0], 120))
    assert infer_kind(counts) == "count" and infer_kind(counts + 0.5) == "price"
    assert infer_kind([-1, 2]) == "price"
    m = train_regime(counts, n_states=3, seed=4, n_init=2)
    assert m.kind == "count" and m.names == ("calm", "normal", "stressed")
    assert np.all(np.diff(m.variances[:, 0]) >= 0)


def test_save_load_round_trip_and_versions(tmp_path: Path, model: RegimeModel) -> None:
    reg = ModelRegistry(tmp_path)
    rec1 = save_regime(reg, model)
    rec2 = save_regime(reg, model, name="regime")
    assert (rec1.ref, rec2.ref) == ("regime@1", "regime@2")
    loaded = load_regime(reg)
    assert loaded.ref == "regime@2" and loaded.names == model.names
    assert loaded.kind == model.kind and loaded.vol_window == model.vol_window
    for k in ("startprob", "transmat", "means", "variances", "share"):
        np.testing.assert_array_equal(getattr(loaded, k), getattr(model, k))
    assert loaded.metadata["source"] == "synthetic"
    assert load_regime(reg, version=1).ref == "regime@1"
    x = regime_prices(seed=9, seg=20)
    np.testing.assert_array_equal(loaded.label(x)["probs"], model.label(x)["probs"])


def test_missing_model_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"`convergence models train regime --input FILE\.csv`"):
        load_regime(ModelRegistry(tmp_path))
    with pytest.raises(ModelNotFound, match=r"--input FILE\.csv --name btc`"):
        load_regime(ModelRegistry(tmp_path), "btc")


def test_loading_a_non_regime_model_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.save_arrays("regime", {"w": np.zeros(3)}, {"model": "lightgbm"})
    with pytest.raises(RegistryError, match="is not a regime HMM"):
        load_regime(reg)


@pytest.mark.parametrize(("values", "kwargs", "message"), [
    (np.ones(300) * 5.0, {}, "constant"),
    (regime_prices()[:40], {}, "usable feature rows"),
    (np.r_[regime_prices()[:200], -1.0], {"kind": "price"}, r"position 200 .* > 0"),
    (regime_prices(), {"kind": "volume"}, "kind must be one of"),
    (regime_prices(), {"n_states": 0}, "n_states must be >= 1"),
])
def test_bad_training_input(values: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_regime(values, **kwargs)  # type: ignore[arg-type]


def test_first_invalid() -> None:
    assert first_invalid([1.0, 2.0, 0.0], "price") == 2
    assert first_invalid([1.0, 0.0], "count") is None
    assert first_invalid([1.0, np.nan], "count") == 1

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convergence.detectors.trend import TrendDetector


def _z(x: np.ndarray, **kw: float) -> np.ndarray:
    det = TrendDetector(**kw)  # type: ignore[arg-type]
    st = det.init_state((1,))
    return np.array([det.step(st, {"value": x[i:i + 1]})["trend_z"][0] for i in range(x.shape[0])])


def _flagged(x: np.ndarray, **kw: float) -> list[int]:
    det = TrendDetector(**kw)  # type: ignore[arg-type]
    st = det.init_state((1,))
    return [i for i in range(x.shape[0]) if det.step(st, {"value": x[i:i + 1]})["trend"][0]]


def test_pinned_ticks_of_a_ramp_on_seeded_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, 600)
    x[300:400] += 0.2 * np.arange(100)  # 20 sd over 100 ticks, then the level stays
    x[400:] += 20.0
    fired = _flagged(x)
    # raised 29 ticks into the ramp, on all along it, off 29 ticks after it (absorbed)
    assert fired == list(range(329, 429))


def test_quiet_noise_and_a_random_walk_rarely_flag() -> None:
    rng = np.random.default_rng(5)
    assert (np.abs(_z(rng.normal(0, 1, 5000))[200:]) >= 4.0).mean() < 0.002
    walk = np.cumsum(rng.normal(0, 1, 5000))
    # the spread is the series' own: a random walk's averages stray far apart ordinarily
    assert (np.abs(_z(walk)[200:]) >= 4.0).mean() < 0.02


def test_a_falling_trend_is_negative() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 500)
    x[300:] -= 0.3 * np.arange(200)
    z = _z(x)
    assert z[330:500].max() < -4.0


def test_scale_does_not_matter() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 500)
    x[300:400] += 0.2 * np.arange(100)
    assert np.allclose(_z(x), _z(1e6 + 1e3 * x), atol=1e-6)


def test_a_wild_value_and_non_finite_values_do_not_poison_it() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 800)
    x[[250, 260]] = [np.nan, np.inf]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = _z(x)
    assert np.all(np.isfinite(z)) and z[250] == z[260] == 0.0
    assert (np.abs(z[300:]) >= 4.0).mean() < 0.01


def test_constant_series_is_quiet() -> None:
    assert np.all(_z(np.full(400, 7.0)) == 0.0)


@pytest.mark.parametrize("kw", [{"fast_alpha": 0.0}, {"slow_alpha": 1.5}, {"slow_alpha": 0.3},
                                {"threshold": -1.0}, {"huber": 0.0}, {"warmup_ticks": 0}])
def test_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrendDetector(**kw)  # type: ignore[arg-type]

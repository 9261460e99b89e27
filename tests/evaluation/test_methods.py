"""The compared methods: causal, seeded, and each the thing it claims to be."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.evaluation.methods import METHODS, available, ours, ours_many, windowed_zscore


def test_windowed_zscore_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(0, 1, 400)  # a big level must not cost precision
    got = windowed_zscore(x, np.arange(400.0), window=50)
    for t in (3, 49, 50, 51, 399):
        past = x[max(t - 50, 0):t]
        assert got[t] == pytest.approx(abs(x[t] - past.mean()) / past.std(), rel=1e-6)
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    assert np.all(np.isfinite(windowed_zscore(np.ones(100), np.arange(100.0))))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_causal_and_finite(name: str) -> None:
    assert name in available()  # river is in the test extra
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 300)
    t = np.arange(300) * 900.0
    a = METHODS[name](x, t)
    y = x.copy()
    y[200:] += 30
    b = METHODS[name](y, t)
    assert a.shape == (300,) and np.all(np.isfinite(a))
    assert np.array_equal(a[:200], b[:200])  # the future does not change the past
    assert np.array_equal(a, METHODS[name](x, t))  # seeded: the same every run


def test_ours_many_is_ours_one_by_one() -> None:
    rng = np.random.default_rng(4)
    series = [(rng.normal(0, 1, 250), np.arange(250) * 900.0),
              (rng.normal(5, 2, 120), np.arange(120) * 3600.0)]
    for (x, t), got in zip(series, ours_many(series), strict=True):
        assert np.array_equal(got, ours(x, t))

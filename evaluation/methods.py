"""The detectors compared: ours and the baselines, each ``(values, timestamps) -> scores``.

* ``ours`` — :class:`~convergence.detectors.single.SingleSeriesDetector`, the product's
  own stages exactly as ``convergence detect`` runs them.
* ``zscore`` — a windowed Gaussian z-score: ``|x - mean| / sd`` of the previous
  ``window`` rows (96: a day of 15-minute rows), the baseline NAB calls
  *windowedGaussian*.
* ``river-hst`` — river's Half-Space Trees (Tan et al., IJCAI 2011) on a shingle of the
  last 8 values scaled online to [0, 1] (river's ``MinMaxScaler``), 25 trees of height
  8 over windows of 250 rows.
* ``river-pad`` — river's Predictive Anomaly Detection around a seasonal SNARIMAX
  forecaster (AR 3, seasonal AR 1 with a daily period of 96 rows): the squared
  one-step forecast error against its running mean and spread.

All are causal (row ``t`` sees rows ``0..t``) and seeded. The river detectors need the
optional ``eval`` extra (``pip install 'convergence[eval]'``); :func:`available`
says which methods can run here.

Examples
--------
>>> import numpy as np
>>> x = np.r_[np.zeros(200), 5.0, np.zeros(20)] + np.random.default_rng(0).normal(0, 1, 221)
>>> s = windowed_zscore(x, np.arange(221.0))
>>> int(np.argmax(s)), s[:2].tolist()
(200, [0.0, 0.0])
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from convergence.detectors.single import SingleSeriesDetector

__all__ = ["METHODS", "Method", "available", "windowed_zscore"]

Array = npt.NDArray[np.float64]
Method = Callable[[Array, Array], Array]

SEED = 7
ZSCORE_WINDOW = 96


def ours(values: Array, timestamps: Array) -> Array:
    """The product's single-series detector (the live stages)."""
    return SingleSeriesDetector().score_series(values, timestamps)


def ours_many(series: list[tuple[Array, Array]]) -> list[Array]:
    """:func:`ours` on many series in one vectorised pass (the same scores)."""
    return SingleSeriesDetector().score_many(series)


def windowed_zscore(values: Array, timestamps: Array, window: int = ZSCORE_WINDOW) -> Array:
    """``|x_t - mean| / sd`` over rows ``t - window .. t - 1`` (0 until 3 rows are known)."""
    x = np.asarray(values, np.float64)
    n = x.shape[0]
    # shift to the series' first value so big levels keep their precision in the sums
    y = x - (x[0] if n else 0.0)
    c1 = np.r_[0.0, np.cumsum(y)]
    c2 = np.r_[0.0, np.cumsum(y * y)]
    t = np.arange(n)
    lo = np.maximum(t - window, 0)
    k = (t - lo).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = (c1[t] - c1[lo]) / k
        var = (c2[t] - c2[lo]) / k - mean * mean
        z = np.abs(y - mean) / np.sqrt(np.maximum(var, 0.0))
    z = np.where(k >= 3, z, 0.0)
    out: Array = np.nan_to_num(z, nan=0.0, posinf=1e6)
    return out


def river_hst(values: Array, timestamps: Array, shingle: int = 8) -> Array:
    """Half-Space Trees on a scaled shingle of the last ``shingle`` values."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(),
                             anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=SEED))
    x = np.asarray(values, np.float64)
    out = np.zeros(x.shape[0])
    for i in range(x.shape[0]):
        feats = {f"lag{j}": float(x[max(i - j, 0)]) for j in range(shingle)}
        out[i] = model.score_one(feats)
        model.learn_one(feats)
    return out


def river_pad(values: Array, timestamps: Array, period: int = 96) -> Array:
    """Predictive Anomaly Detection around a seasonal SNARIMAX forecaster."""
    from river import anomaly, time_series

    model = anomaly.PredictiveAnomalyDetection(
        time_series.SNARIMAX(p=3, d=0, q=0, m=period, sp=1), horizon=1, n_std=3.0, warmup_period=period)
    x = np.asarray(values, np.float64)
    scale = float(np.std(x[: min(x.shape[0], period)])) or 1.0  # SGD needs values near unit scale
    y = (x - x[0]) / scale if x.shape[0] else x
    out = np.zeros(x.shape[0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i in range(y.shape[0]):
            try:
                s = model.score_one({}, float(y[i]))  # a forecaster needs no features
            except (OverflowError, ValueError, ZeroDivisionError):
                s = 1.0  # the forecaster diverged on this row: the largest score it gives
            out[i] = s if np.isfinite(s) else 1.0
            model.learn_one(None, float(y[i]))
    return out


METHODS: dict[str, Method] = {"ours": ours, "zscore": windowed_zscore, "river-hst": river_hst,
                              "river-pad": river_pad}
#: methods that can score many series at once (same result as one by one)
BATCHED: dict[str, Callable[[list[tuple[Array, Array]]], list[Array]]] = {"ours": ours_many}
#: methods that need the optional ``eval`` extra
NEEDS_RIVER = ("river-hst", "river-pad")


def available() -> list[str]:
    """Method names that can run in this environment (river's need the ``eval`` extra)."""
    has_river = importlib.util.find_spec("river") is not None
    return [m for m in METHODS if has_river or m not in NEEDS_RIVER]

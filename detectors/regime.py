"""Market/activity regime: the causal feature transform and an online HMM forward filter.

Training (``convergence.models.regime``, hmmlearn) and inference (this module, pure
numpy) share one feature transform, :func:`feature_transform`, so a model never sees
features computed one way offline and another way live. Each feature row uses only
the current and past values (causal); rows that are not yet defined (the first
return, an incomplete volatility window, a non-positive price) are ``NaN`` and the
filter treats them as "no observation this tick".

:class:`RegimeFilter` runs the forward algorithm of a Gaussian HMM with diagonal
covariances, one tick at a time, for every station (and any leading batch axes) at
once, in log space. Its output ``probs`` at tick ``t`` is
``P(state_t | x_1..x_t)``: no look-ahead, identical to hmmlearn's ``predict_proba``
on the prefix ``x_1..x_t`` (tested to 1e-6).

``regime_z`` turns the filtered probabilities into node evidence. With ``A`` the
alarm states (``stressed`` and ``crisis``), ``p = P(state_t in A | x_1..x_t)`` and ``q``
the stationary share of ``A`` under the transition matrix (clipped to
``[Q_FLOOR, 1 - Q_FLOOR]``)::

    regime_z = max(0, (p - q) / sqrt(q * (1 - q)))

i.e. how many standard deviations the alarm indicator stands above its long-run
mean. It is 0 while the filter believes in a calm/normal/choppy regime (``p <= q``)
and grows the rarer the alarm regime is: with ``q = 0.05`` a certain crisis gives
4.4, with ``q = 0.01`` it gives 9.9.

Examples
--------
>>> import numpy as np
>>> feature_transform(np.array([100.0, 101.0, 99.0, 99.0]), "price", vol_window=2).round(4)
array([[   nan,    nan],
       [ 0.01 ,    nan],
       [-0.02 ,  0.015],
       [ 0.   ,  0.01 ]])
>>> feature_transform(np.array([0, 3, 1]), "count").round(3)
array([[ 0.   ,    nan],
       [ 1.386,  1.386],
       [ 0.693, -0.693]])
>>> regime_names(3)
('calm', 'normal', 'stressed')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array, ArrayState, Outputs, Spec, Stage

__all__ = [
    "ALARM_NAMES",
    "FEATURE_KINDS",
    "FEATURE_NAMES",
    "Q_FLOOR",
    "RegimeFilter",
    "alarm_states",
    "feature_transform",
    "regime_names",
    "stationary_distribution",
]

#: the feature families the transform knows
FEATURE_KINDS = ("price", "count")
FEATURE_NAMES = {
    "price": ("log_return", "realised_vol"),
    "count": ("log1p_count", "diff_log1p_count"),
}
DEFAULT_VOL_WINDOW = 10

#: state names from least to most volatile, for 1..5 states (more -> ``state_k``)
_NAMES: dict[int, tuple[str, ...]] = {
    1: ("normal",),
    2: ("calm", "stressed"),
    3: ("calm", "normal", "stressed"),
    4: ("calm", "normal", "stressed", "crisis"),
    5: ("calm", "normal", "choppy", "stressed", "crisis"),
}
ALARM_NAMES = ("stressed", "crisis")
#: the stationary alarm share is clipped to [Q_FLOOR, 1 - Q_FLOOR] so a regime the
#: model (almost) never visits cannot turn one tick of belief into infinite evidence
Q_FLOOR = 1e-3
#: finite stand-in for log(0): exp() of it is exactly 0, yet the state stays
#: JSON-serialisable (Faust tables, checkpoints) where -inf would not be
_LOG_ZERO = -1e300


def regime_names(n_states: int) -> tuple[str, ...]:
    """Names of ``n_states`` states ordered calm -> crisis (``state_k`` beyond five)."""
    if n_states < 1:
        raise ValueError(f"n_states must be >= 1, got {n_states}")
    return _NAMES.get(n_states) or tuple(f"state_{k}" for k in range(n_states))


def alarm_states(names: Sequence[str]) -> tuple[int, ...]:
    """Indices of the alarm regimes: ``stressed``/``crisis``, else the two most volatile.

    ``names`` must be ordered by volatility (as :func:`regime_names` returns them).
    """
    hits = tuple(i for i, n in enumerate(names) if n in ALARM_NAMES)
    if hits or len(names) < 2:
        return hits
    return tuple(range(max(len(names) - 2, 1), len(names)))


def check_feature_kind(kind: str, vol_window: int) -> None:
    """Refuse an unknown feature kind or a volatility window under two returns."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}")
    if vol_window < 2:
        raise ValueError(f"vol_window must be >= 2 returns, got {vol_window}")


def log_level(v: npt.NDArray[np.float64], kind: str) -> npt.NDArray[np.float64]:
    """Log price (``price``) or log(1 + count) (``count``); invalid values become NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "price":
            level = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
        else:
            level = np.where(v >= 0, np.log1p(np.where(v >= 0, v, 0.0)), np.nan)
    return np.where(np.isfinite(level), level, np.nan)


def feature_transform(values: npt.ArrayLike, kind: str,
                      vol_window: int = DEFAULT_VOL_WINDOW) -> Array:
    """Causal regime features of a series; time is axis 0.

    Parameters
    ----------
    values
        Shape ``(T, ...)``: prices (``kind="price"``) or event counts
        (``kind="count"``) per tick, any trailing axes (e.g. stations).
    kind
        ``"price"``: log return and realised volatility (population standard
        deviation of the last ``vol_window`` log returns, current one included).
        ``"count"``: ``log(1 + count)`` and its first difference.
    vol_window
        Returns per volatility estimate (price only), >= 2.

    Returns
    -------
    Array
        Shape ``(T, ..., 2)``. Row ``t`` depends on ``values[: t + 1]`` only. Rows
        not defined yet are ``NaN`` (price: row 0 entirely and the volatility of
        rows ``< vol_window``; count: the difference of row 0), as are rows touched
        by an invalid value (a price <= 0, a negative count, a non-finite value).
    """
    check_feature_kind(kind, vol_window)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        raise ValueError("values must have a time axis (axis 0)")
    level = log_level(v, kind)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.full_like(level, np.nan)
        diff[1:] = level[1:] - level[:-1]
        if kind == "count":
            return np.stack([level, diff], axis=-1)
        vol = np.full_like(diff, np.nan)
        if v.shape[0] >= vol_window:
            # window i holds returns i .. i+w-1 and belongs to row i+w-1: past and present
            windows = np.lib.stride_tricks.sliding_window_view(diff, vol_window, axis=0)
            vol[vol_window - 1:] = windows.std(axis=-1)
    return np.stack([diff, vol], axis=-1)


def stationary_distribution(transmat: npt.ArrayLike) -> Array:
    """Long-run state shares ``pi`` with ``pi @ transmat == pi`` (least squares)."""
    a = np.asarray(transmat, dtype=np.float64)
    n = a.shape[0]
    system = np.vstack([a.T - np.eye(n), np.ones((1, n))])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    pi = np.clip(np.linalg.lstsq(system, rhs, rcond=None)[0], 0.0, None)
    return np.asarray(pi / pi.sum())


def _logsumexp(a: Array, axis: int = -1) -> Array:
    m = a.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.asarray(np.log(np.exp(a - m).sum(axis=axis)) + np.squeeze(m, axis=axis))


class RegimeFilter(Stage):
    """Online forward filter of a trained Gaussian HMM (diagonal covariances).

    Parameters
    ----------
    startprob
        Shape ``(n_states,)``: distribution of the first tick's state.
    transmat
        Shape ``(n_states, n_states)``: ``transmat[i, j] = P(next = j | now = i)``.
    means
        Shape ``(n_states, n_features)``: emission means.
    variances
        Shape ``(n_states, n_features)``: emission variances (diagonal), > 0.
    alarm
        Indices of the alarm states that drive ``regime_z``; default
        :func:`alarm_states` of :func:`regime_names` (``stressed``, ``crisis``),
        which assumes the states are ordered by volatility, calmest first.

    Inputs are ``features`` ``(..., stations, n_features)`` (see
    :func:`feature_transform`) and optionally ``mask`` ``(..., stations)``, true
    where a station has no observation this tick. A masked station, or one whose
    features are not all finite, only takes the transition step (its belief
    relaxes towards the long-run regime shares). Outputs: ``probs``
    ``(..., stations, n_states)``, ``regime`` (most probable state index) and
    ``regime_z`` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> f = RegimeFilter(startprob=np.array([0.8, 0.2]),
    ...                  transmat=np.array([[0.95, 0.05], [0.10, 0.90]]),
    ...                  means=np.zeros((2, 1)), variances=np.array([[1.0], [25.0]]))
    >>> state = f.init_state((1,))
    >>> xs = [0.3, -1.0, 0.5, 9.0, -8.0, 12.0, 0.2, 0.1, -0.3]
    >>> outs = [f.step(state, {"features": np.array([[x]])}) for x in xs]
    >>> [int(o["regime"][0]) for o in outs]
    [0, 0, 0, 1, 1, 1, 1, 0, 0]
    >>> [round(float(o["regime_z"][0]), 1) for o in outs[2:6]]
    [0.0, 1.4, 1.4, 1.4]
    """

    name = "regime"

    def __init__(self, startprob: npt.ArrayLike, transmat: npt.ArrayLike, means: npt.ArrayLike,
                 variances: npt.ArrayLike, alarm: Sequence[int] | None = None) -> None:
        start = np.array(startprob, dtype=np.float64)
        trans = np.array(transmat, dtype=np.float64)
        mu = np.array(means, dtype=np.float64)
        var = np.array(variances, dtype=np.float64)
        if start.ndim != 1 or start.size < 1:
            raise ValueError(f"startprob must be a 1-d array of state probabilities, "
                             f"got shape {start.shape}")
        n = start.size
        if trans.shape != (n, n):
            raise ValueError(f"transmat must have shape ({n}, {n}) to match startprob, "
                             f"got {trans.shape}")
        if mu.ndim != 2 or mu.shape[0] != n or mu.shape[1] < 1:
            raise ValueError(f"means must have shape ({n}, n_features), got {mu.shape}")
        if var.shape != mu.shape:
            raise ValueError(f"variances must be diagonal with the shape of means {mu.shape}, "
                             f"got {var.shape}")
        for nm, arr in (("startprob", start), ("transmat", trans), ("means", mu),
                        ("variances", var)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{nm} must be finite, got {arr.tolist()}")
        if (start < 0).any() or not np.isclose(start.sum(), 1.0):
            raise ValueError(f"startprob must be probabilities summing to 1, got {start.tolist()}")
        if (trans < 0).any() or not np.allclose(trans.sum(axis=1), 1.0):
            raise ValueError("transmat rows must be probabilities summing to 1, got row sums "
                             f"{trans.sum(axis=1).tolist()}")
        if (var <= 0).any():
            raise ValueError(f"variances must be > 0, got {var.tolist()}")
        alarm_idx = alarm_states(regime_names(n)) if alarm is None else tuple(int(a) for a in alarm)
        if any(not 0 <= a < n for a in alarm_idx) or len(set(alarm_idx)) != len(alarm_idx):
            raise ValueError(f"alarm must list distinct state indices in [0, {n}), got {alarm}")
        for arr in (start, trans, mu, var):
            arr.flags.writeable = False
        self.startprob = start
        self.transmat = trans
        self.means = mu
        self.variances = var
        self.alarm = alarm_idx
        self.n_states = n
        self.n_features = mu.shape[1]
        with np.errstate(divide="ignore"):  # a state that never starts: probability 0
            self._log_start = np.maximum(np.log(start / start.sum()), _LOG_ZERO)
        self._inv_var = 1.0 / var
        # log of the Gaussian normalising constant, per state
        self._log_norm = -0.5 * (self.n_features * np.log(2 * np.pi) + np.log(var).sum(axis=1))
        self.stationary = stationary_distribution(trans)
        q = float(np.clip(self.stationary[list(alarm_idx)].sum(), Q_FLOOR, 1 - Q_FLOOR))
        self._alarm_mask = np.zeros(n, dtype=bool)
        self._alarm_mask[list(alarm_idx)] = True
        self._alarm_q = q
        self._alarm_sd = float(np.sqrt(q * (1 - q)))

    def state_spec(self) -> Spec:
        # log_alpha: normalised log P(state_t | x_1..t); before the first tick it holds
        # the start distribution (only for display: tick 0 always uses startprob)
        return {"log_alpha": ((self.n_states,), self._log_start),
                "ticks": ((), 0, np.int64)}

    def log_likelihood(self, features: Array) -> Array:
        """Per-state emission log density, shape ``(..., n_states)``."""
        d = features[..., None, :] - self.means
        return np.asarray(self._log_norm - 0.5 * (d * d * self._inv_var).sum(axis=-1))

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        log_alpha, ticks = state["log_alpha"], state["ticks"]
        x = np.asarray(inputs["features"], dtype=np.float64)
        want = (*ticks.shape, self.n_features)
        if x.shape != want:
            raise ValueError(f"features must have shape {want} "
                             f"(leading dims + n_features), got {x.shape}")
        observed: Array = np.asarray(np.isfinite(x).all(axis=-1))
        mask: Any = inputs.get("mask")
        if mask is not None:
            observed &= ~np.asarray(mask, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            # predict: scaling by the row max keeps exp() in range; the matmul is the
            # transition sum over previous states, log(0) = -inf for forbidden states
            top = log_alpha.max(axis=-1, keepdims=True)
            pred = np.log(np.exp(log_alpha - top) @ self.transmat) + top
            prior = np.where((ticks == 0)[..., None], self._log_start, pred)
            prior = prior - _logsumexp(prior)[..., None]
            # update: unobserved rows get a dummy x so no NaN/inf enters the arithmetic
            ll = self.log_likelihood(np.where(observed[..., None], x, 0.0))
            joint = prior + ll
            norm = _logsumexp(joint)
            # an observation so extreme that every state gives it density 0 carries no
            # usable information: keep the prior rather than poison the state with NaN
            use = observed & np.isfinite(norm)
            log_alpha[...] = np.maximum(np.where(use[..., None], joint - norm[..., None], prior),
                                        _LOG_ZERO)
            probs = np.exp(log_alpha)
        ticks += 1
        p_alarm = probs[..., self._alarm_mask].sum(axis=-1)
        z = np.maximum((p_alarm - self._alarm_q) / self._alarm_sd, 0.0)
        return {"probs": probs, "regime": log_alpha.argmax(axis=-1), "regime_z": z}

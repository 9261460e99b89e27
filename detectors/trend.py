"""Trend detection: a value drifting steadily, flagged while the drift lasts.

A level chart (CUSUM, burst) sees a ramp as a level that keeps leaving its baseline:
it alarms, its baseline restarts (or catches up), and the ramp shows again a few ticks
later, so the evidence saw-tooths while the ramp goes on and stays up after it ends,
until the baseline has caught up with the new level. This stage charts the *slope*
instead, as the gap between a fast and a slow EWMA of the value (a moving-average
crossover, per station, vectorised over any leading axes)::

    fast += fast_alpha * (x - fast)
    slow += slow_alpha * (x - slow)
    trend_z = (fast - slow) / spread

A steady slope of ``s`` per tick holds the gap at ``s (1 / slow_alpha - 1 / fast_alpha)``
for as long as it lasts; when the slope stops, both averages settle on the new level
and the gap decays within about ``1 / slow_alpha`` ticks. So a trend is flagged while
it lasts and absorbed after it ends (a level shift shows as one pulse of that length).
``trend_z`` is signed (positive = rising); ``trend`` is true while ``|trend_z| >=
threshold``.

The ``spread`` is the gap's own typical size, learned (EWMA of the squared gap, weight
``spread_alpha``) rather than derived from the noise: how far the two averages stray
apart ordinarily depends on the series (white noise, a random walk, a model's
correlated residuals) far more than on its noise variance. While ``|trend_z|`` is at
or above the threshold the spread learns ten times slower, so a long trend is not
absorbed into the spread it is measured against; once warm, each update is winsorised
at ``huber`` spreads, so one wild value moves it a bounded step. Non-finite values are
skipped (no evidence, no learning); nothing is judged during the first
``warmup_ticks`` finite values.

Inputs: ``value`` ``(..., stations)``. Outputs: ``trend_z``, ``trend``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(0.0, 1.0, 700)
>>> x[400:500] += 0.3 * np.arange(100)  # a ramp of 30 sd over 100 ticks,
>>> x[500:] += 30.0                      # then the new level stays
>>> det = TrendDetector()
>>> state = det.init_state((1,))
>>> z = np.array([det.step(state, {"value": x[i:i + 1]})["trend_z"][0] for i in range(700)])
>>> bool(np.abs(z[200:400]).max() < 4.0), bool(z[420:500].min() > 4.0)  # quiet, then raised all along
(True, True)
>>> bool(np.abs(z[650:]).max() < 4.0)  # the new level is absorbed after the ramp
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_fraction,
    check_int_min,
    check_positive,
)


class TrendDetector(Stage):
    """Fast-versus-slow EWMA crossover with a learned spread (see module docstring).

    Parameters
    ----------
    fast_alpha
        Weight of the fast average (larger: quicker, noisier).
    slow_alpha
        Weight of the slow average; ``1 / slow_alpha`` ticks is about how long a trend
        is remembered after it ends. Must be below ``fast_alpha``.
    spread_alpha
        Weight of the learned spread of the gap.
    threshold
        ``|trend_z|`` at or above which ``trend`` is true and the spread learns ten
        times slower.
    huber
        Winsorising bound of a spread update, in spreads.
    warmup_ticks
        Finite values before a station is judged (the averages and the spread settle).
    """

    name = "trend"

    def __init__(self, fast_alpha: float = 0.2, slow_alpha: float = 0.02, spread_alpha: float = 0.005,
                 threshold: float = 4.0, huber: float = 4.0, warmup_ticks: int = 150) -> None:
        check_fraction("fast_alpha", fast_alpha)
        check_fraction("slow_alpha", slow_alpha)
        check_fraction("spread_alpha", spread_alpha)
        if slow_alpha >= fast_alpha:
            raise ValueError(f"slow_alpha must be below fast_alpha ({fast_alpha!r}), got {slow_alpha!r}")
        check_positive("threshold", threshold)
        check_positive("huber", huber)
        check_int_min("warmup_ticks", warmup_ticks, 1)
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.spread_alpha = spread_alpha
        self.threshold = threshold
        self.huber = huber
        self.warmup_ticks = warmup_ticks

    def state_spec(self) -> Spec:
        return {"n": ((), 0.0), "fast": ((), 0.0), "slow": ((), 0.0), "spread": ((), 0.0)}

    def gap_var_ratio(self) -> float:
        """Variance of the fast-slow gap over the noise variance, for white noise.

        >>> round(TrendDetector().gap_var_ratio(), 4)
        0.0842
        """
        f, s = self.fast_alpha, self.slow_alpha
        return f / (2.0 - f) + s / (2.0 - s) - 2.0 * f * s / (1.0 - (1.0 - f) * (1.0 - s))

    def seed_level(self, state: ArrayState, level: Array, noise_var: Array, known: Array) -> None:
        """Start stations where ``known`` warm: both averages at ``level``, the spread
        at what white noise of variance ``noise_var`` gives (it learns on from there).

        A fleet that declares its stations' background rates is judged from the first
        tick, as the burst and CUSUM baselines are (``DetectorChain.seed_baselines``).
        """
        known = np.asarray(known, bool)
        for key in ("fast", "slow"):
            state[key][...] = np.where(known, level, state[key])
        spread = np.maximum(np.asarray(noise_var, np.float64), 1e-12) * self.gap_var_ratio()
        state["spread"][...] = np.where(known, spread, state["spread"])
        # as if it had learnt for as long as the spread remembers: the spread then moves
        # at ``spread_alpha`` from the first tick, not at a start-up average's 1 / n
        learnt = max(self.warmup_ticks, 1.0 / self.spread_alpha)
        state["n"][...] = np.where(known, np.maximum(state["n"], learnt), state["n"])

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        with np.errstate(all="ignore"):
            return self._step(state, np.asarray(inputs["value"], dtype=np.float64))

    def _step(self, state: ArrayState, raw: Array) -> Outputs:
        n, fast, slow, spread = state["n"], state["fast"], state["slow"], state["spread"]
        ok = np.isfinite(raw)
        x = np.where(ok, raw, 0.0)
        n += ok
        first = ok & (n <= 1)
        fast[...] = np.where(first, x, np.where(ok, fast + self.fast_alpha * (x - fast), fast))
        slow[...] = np.where(first, x, np.where(ok, slow + self.slow_alpha * (x - slow), slow))
        gap = fast - slow
        warm = ok & (n > self.warmup_ticks) & (spread > 0)
        z = np.where(warm, gap / np.sqrt(np.where(spread > 0, spread, 1.0)), 0.0)
        z = np.nan_to_num(z, nan=0.0, posinf=1e6, neginf=-1e6)
        over = np.abs(z) >= self.threshold
        a = np.maximum(self.spread_alpha, 1.0 / np.maximum(n, 1.0)) * np.where(over, 0.1, 1.0)
        g2 = np.where(warm, np.minimum(gap * gap, self.huber * self.huber * spread), gap * gap)
        spread[...] = np.where(ok & (n > 1), spread + a * (g2 - spread), spread)
        return {"trend_z": z, "trend": over}

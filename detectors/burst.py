"""Burst detection: how far activity stands above its baseline, for how long.

An EWMA control chart per station, vectorised over all stations (and any leading
batch dimensions). A fast EWMA of the tick count is compared with a slow baseline
(EWMA mean and variance, Poisson floor); the standardised gap is ``burst_z``. A burst
is declared once ``burst_z >= threshold`` for ``min_ticks`` consecutive ticks; the
slow baseline learns ten times slower while a burst is on, and recovers after it.

Outliers do not poison the baseline: once warm, a tick below the burst threshold updates the mean and
variance with its value *winsorised* at ``huber`` baseline standard deviations (a Huber-type
EWMA: one wild tick moves them by a bounded step, while a genuinely noisier stream
still widens the variance by about ``alpha (huber² - 1)`` per tick), and the fast
average sees values clipped at ``clip`` standard deviations, so a single value of
1e200 is a burst for a few ticks, not ``inf`` or ``nan`` for hundreds. Non-finite
inputs count as the baseline mean (no evidence, no learning). A ``rebase`` input
(boolean per station) restarts the baseline from the current tick — a level change
flagged elsewhere (CUSUM) is then absorbed instead of charted as a burst for as long
as the slow baseline needs to catch up.

Examples
--------
>>> import numpy as np
>>> det = BurstDetector(threshold=4.0, min_ticks=2, warmup_ticks=5)
>>> state = det.init_state((1,))
>>> counts = [3, 2, 3, 4, 3, 2, 3, 3, 3, 25, 30, 28, 3, 3]
>>> fired = [t for t, c in enumerate(counts)
...          if det.step(state, {"count": np.array([float(c)])})["burst"][0]]
>>> fired  # the fast EWMA keeps the burst on for one tick after it
[10, 11, 12]
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
    check_positive,
    ewma_update,
    seed_count_baseline,
)


class BurstDetector(Stage):
    """EWMA control-chart burst detector with a minimum duration.

    Parameters
    ----------
    alpha
        Weight of the slow baseline EWMA (mean and variance).
    fast_alpha
        Weight of the fast EWMA of activity compared with the baseline.
    threshold
        ``burst_z`` at or above which a tick counts towards a burst.
    min_ticks
        Consecutive ticks at or above ``threshold`` before ``burst`` is true.
    warmup_ticks
        Ticks of history before a station can burst.
    poisson_floor
        Treat the input as event counts, whose noise is never below Poisson
        (``var >= mean``). Turn off for arbitrary values (prices, sensor readings); the
        variance is then floored at ``min_var`` only.
    min_var
        Smallest noise variance when ``poisson_floor`` is off.
    rel_var
        With ``poisson_floor`` off, the noise variance is also at least
        ``(rel_var * |mean|)²``: a constant stretch of a large value is not infinitely
        sensitive to its last digit.
    huber
        Winsorising bound of a baseline update, in baseline standard deviations.
    clip
        Bound on how far (in baseline standard deviations) one tick can move the fast
        average.
    learn_fast_var
        Also learn the fast average's own spread around the baseline and judge against
        the larger of it and the spread white noise would give. For inputs whose ticks
        are correlated (a model's residuals), where runs of same-signed ticks are
        ordinary; off for counts.
    """

    name = "burst"

    def __init__(self, alpha: float = 0.05, fast_alpha: float = 0.5, threshold: float = 4.0,
                 min_ticks: int = 2, warmup_ticks: int = 5, poisson_floor: bool = True,
                 min_var: float = 1e-12, rel_var: float = 1e-6, huber: float = 4.0,
                 clip: float = 1000.0, learn_fast_var: bool = False) -> None:
        check_fraction("alpha", alpha)
        check_fraction("fast_alpha", fast_alpha)
        check_positive("threshold", threshold)
        if min_ticks < 1 or warmup_ticks < 1:
            raise ValueError("min_ticks and warmup_ticks must be >= 1")
        self.alpha = alpha
        self.fast_alpha = fast_alpha
        self.threshold = threshold
        self.min_ticks = min_ticks
        self.warmup_ticks = warmup_ticks
        self.poisson_floor = poisson_floor
        check_positive("min_var", min_var)
        check_positive("rel_var", rel_var, allow_zero=True)
        check_positive("huber", huber)
        check_positive("clip", clip)
        self.min_var = min_var
        self.rel_var = rel_var
        self.huber = huber
        self.clip = clip
        self.learn_fast_var = learn_fast_var
        # variance of an EWMA of i.i.d. noise relative to the noise variance
        self._fast_var_ratio = fast_alpha / (2.0 - fast_alpha)

    def state_spec(self) -> Spec:
        spec: dict[str, tuple[tuple[int, ...], float]] = {
            "n": ((), 0.0), "mu": ((), 0.0), "var": ((), 1.0), "fast": ((), 0.0), "run": ((), 0.0)}
        if self.learn_fast_var:
            spec["fvar"] = ((), 0.0)  # the fast average's own spread around the baseline
        return spec

    def seed(self, state: ArrayState, expected_counts: Array, known: Array) -> None:
        seed_count_baseline(state, expected_counts, known, mu="mu", var="var",
                            warmup_ticks=self.warmup_ticks, also=("fast",))

    def _noise(self, mu: Array, var: Array) -> Array:
        if self.poisson_floor:
            out: Array = np.maximum(var, mu) + 0.5
            return out
        rel = self.rel_var * mu
        return np.maximum(var, self.min_var + rel * rel)

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        raw = np.asarray(inputs["count"], dtype=np.float64)
        n, mu, var, fast, run = state["n"], state["mu"], state["var"], state["fast"], state["run"]
        with np.errstate(all="ignore"):
            return self._step(raw, n, mu, var, fast, run, inputs.get("rebase"), state.get("fvar"))

    def _step(self, raw: Array, n: Array, mu: Array, var: Array, fast: Array, run: Array,
              rebase: Array | None, fvar: Array | None) -> Outputs:
        finite = np.isfinite(raw)
        count = np.where(finite, raw, mu)
        if rebase is not None:
            # a flagged level change: the baseline restarts here, as at start-up
            restart = np.asarray(rebase, bool) & (n > 0)
            n[...] = np.where(restart, 0.0, n)
            run[...] = np.where(restart, 0.0, run)
        n += finite
        first = n <= 1
        warm = n > self.warmup_ticks
        noise = self._noise(mu, var)
        sd = np.sqrt(noise)
        # one tick moves the fast average by at most `clip` sd, so 1e200 fades in a few ticks
        clipped = np.clip(count, mu - self.clip * sd, mu + self.clip * sd)
        fast[...] = np.where(first, count, np.where(finite, fast + self.fast_alpha * (
            np.where(warm, clipped, count) - fast), fast))
        spread = noise * self._fast_var_ratio
        if fvar is not None:
            spread = np.maximum(spread, fvar)
        z = (fast - mu) / np.sqrt(spread)
        z = np.where(warm & np.isfinite(z), z, 0.0)
        over = z >= self.threshold
        run[...] = np.where(over, run + 1.0, 0.0)
        burst = run >= self.min_ticks
        a = np.maximum(self.alpha, 1.0 / np.maximum(n, 1.0))
        a = np.where(over, a * 0.1, a)
        a = np.where(finite, a, 0.0)
        # Huber-type update once warm: a wild tick moves the baseline by a bounded step
        # (a tick in a burst already learns ten times slower; it is only kept finite)
        bound = np.where(over, self.clip, self.huber) * sd
        x_upd = np.where(warm, np.clip(count, mu - bound, mu + bound), count)
        if fvar is not None:
            gap = np.minimum((fast - mu) ** 2, self.huber * self.huber * spread)
            fvar[...] = np.where(first, 0.0, fvar + a * (gap - fvar))
        mu_new, var_new = ewma_update(mu, var, x_upd, a)
        mu[...] = np.where(first, count, mu_new)
        start = np.maximum(count, 1.0) if self.poisson_floor else np.zeros_like(count)
        var[...] = np.where(first, start, var_new)
        return {"burst_z": z, "burst": burst, "burst_run": run.copy()}

"""Burst detection: how far activity stands above its baseline, for how long.

An EWMA control chart per station, vectorised over all stations (and any leading
batch dimensions). A fast EWMA of the tick count is compared with a slow baseline
(EWMA mean and variance, Poisson floor); the standardised gap is ``burst_z``. A burst
is declared once ``burst_z >= threshold`` for ``min_ticks`` consecutive ticks; the
slow baseline learns ten times slower while a burst is on, and recovers after it.

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
    """

    name = "burst"

    def __init__(self, alpha: float = 0.05, fast_alpha: float = 0.5, threshold: float = 4.0,
                 min_ticks: int = 2, warmup_ticks: int = 5, poisson_floor: bool = True,
                 min_var: float = 1e-12) -> None:
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
        self.min_var = min_var
        # variance of an EWMA of i.i.d. noise relative to the noise variance
        self._fast_var_ratio = fast_alpha / (2.0 - fast_alpha)

    def state_spec(self) -> Spec:
        return {"n": ((), 0.0), "mu": ((), 0.0), "var": ((), 1.0), "fast": ((), 0.0),
                "run": ((), 0.0)}

    def seed(self, state: ArrayState, expected_counts: Array, known: Array) -> None:
        seed_count_baseline(state, expected_counts, known, mu="mu", var="var",
                            warmup_ticks=self.warmup_ticks, also=("fast",))

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        count = inputs["count"]
        n, mu, var, fast, run = state["n"], state["mu"], state["var"], state["fast"], state["run"]
        n += 1.0
        first = n <= 1
        fast[...] = np.where(first, count, fast + self.fast_alpha * (count - fast))
        noise = np.maximum(var, mu) + 0.5 if self.poisson_floor else np.maximum(var, self.min_var)
        z = (fast - mu) / np.sqrt(noise * self._fast_var_ratio)
        z = np.where(n > self.warmup_ticks, z, 0.0)
        over = z >= self.threshold
        run[...] = np.where(over, run + 1.0, 0.0)
        burst = run >= self.min_ticks
        a = np.maximum(self.alpha, 1.0 / n)
        a = np.where(over, a * 0.1, a)
        mu_new, var_new = ewma_update(mu, var, count, a)
        mu[...] = mu_new
        start = np.maximum(count, 1.0) if self.poisson_floor else np.zeros_like(count)
        var[...] = np.where(first, start, var_new)
        return {"burst_z": z, "burst": burst, "burst_run": run.copy()}

"""Scale detection: a series swinging more from one tick to the next than it used to.

A level chart (burst, CUSUM) sees a series move away from its baseline; it is blind to
a series that stays where it was but swings harder around it (a price turning volatile,
a feed turning bursty). This stage charts the spread of one-tick changes instead: a
:class:`~convergence.detectors.burst.BurstDetector` on ``log(|x[t] - x[t-1]| +
floor)``, per station, vectorised over any leading axes. The log makes it scale-free
(a price of 5 and one of 5,000 are judged alike) and tames heavy tails; ``floor``, far
below an ordinary change, keeps repeated values finite.

The chart's slow baseline learns ten times slower while it is up (``threshold`` sd),
so a noisier stretch stays flagged while it lasts; after ``hold_ticks`` raised ticks in
a row it restarts on the new spread (a spread that stays is the new normal, absorbed
rather than flagged for ever). One wild value moves the fast average ``clip`` sd at
most. A non-finite value (a tick with no price) is skipped: no evidence, no learning,
and the next change is taken from the last finite value.

``detectors/single.py`` (``convergence detect``) runs this chart's settings on a
deseasonalised value, but still inline on its own burst chart, with a floor relative to
each series' spread (``1e-3`` sd) instead of this stage's fixed ``floor``; folding it onto
this stage needs a per-station floor here and an unchanged evaluation table. The live
chain (:mod:`convergence.detectors.chain`) runs this stage on each station's log activity
and, for price stations, its log price.

Inputs: ``value`` ``(..., stations)``. Outputs: ``scale_z`` (sd above the usual spread),
``scale`` (raised).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> r = rng.normal(0.0, 0.001, 600); r[400:] *= 5.0       # returns five times as wide
>>> price = 100.0 * np.exp(np.cumsum(r))
>>> det = ScaleDetector(floor=1e-6)
>>> state = det.init_state((1,))
>>> z = np.array([det.step(state, {"value": np.log(price[i:i + 1])})["scale_z"][0]
...               for i in range(600)])
>>> bool(z[100:400].max() < 4.0), bool(np.median(z[420:580]) > 4.0)  # quiet, then raised
(True, True)
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
from convergence.detectors.burst import BurstDetector


class ScaleDetector(Stage):
    """A burst chart on the log of one-tick changes (see module docstring).

    Parameters
    ----------
    alpha
        Weight of the chart's slow baseline (the usual spread).
    fast_alpha
        Weight of the chart's fast average (the current spread).
    threshold
        ``scale_z`` at or above which the chart is raised (its baseline then learns ten
        times slower).
    warmup_ticks
        Changes seen before a station is judged.
    min_var
        Smallest variance of ``log |change|`` the chart assumes.
    clip
        How far (in sd) one change can move the fast average.
    hold_ticks
        Raised ticks in a row after which the chart restarts on the new spread.
    floor
        Added to ``|change|`` before the log, in the input's units: far below an
        ordinary change.
    """

    name = "scale"

    def __init__(self, alpha: float = 0.003, fast_alpha: float = 0.05, threshold: float = 2.0,
                 warmup_ticks: int = 20, min_var: float = 0.05, clip: float = 3.0,
                 hold_ticks: int = 192, floor: float = 1e-3) -> None:
        check_fraction("alpha", alpha)
        check_fraction("fast_alpha", fast_alpha)
        check_positive("threshold", threshold)
        check_int_min("warmup_ticks", warmup_ticks, 1)
        check_positive("min_var", min_var)
        check_positive("clip", clip)
        check_int_min("hold_ticks", hold_ticks, 1)
        check_positive("floor", floor)
        self.alpha = alpha
        self.fast_alpha = fast_alpha
        self.threshold = threshold
        self.warmup_ticks = warmup_ticks
        self.min_var = min_var
        self.clip = clip
        self.hold_ticks = hold_ticks
        self.floor = floor
        self.chart = BurstDetector(alpha=alpha, fast_alpha=fast_alpha, threshold=threshold,
                                   min_ticks=1, warmup_ticks=warmup_ticks, poisson_floor=False,
                                   min_var=min_var, rel_var=0.0, clip=clip)

    def state_spec(self) -> Spec:
        # the chart's own arrays, the last finite value, and the restart flag
        return {**self.chart.state_spec(), "prev": ((), np.nan),
                "restart": ((), False, np.bool_)}

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        x = np.asarray(inputs["value"], dtype=np.float64)
        prev, restart = state["prev"], state["restart"]
        with np.errstate(all="ignore"):
            ok = np.isfinite(x)
            dy = np.where(ok & np.isfinite(prev), x - prev, np.nan)
            prev[...] = np.where(ok, x, prev)
            out = self.chart.step(state, {"count": np.log(np.abs(dy) + self.floor),
                                          "rebase": restart.copy()})
        restart[...] = out["burst_run"] >= self.hold_ticks
        z = np.where(np.isfinite(dy), out["burst_z"], 0.0)
        return {"scale_z": z, "scale": out["burst"] & np.isfinite(dy)}

"""CUSUM change-point detection: a station's activity level or its spread changed.

Two cumulative-sum charts per station, vectorised over all stations (and any leading
batch dimensions), both judged against an adaptive baseline of the per-tick count
(EWMA mean and variance, with a Poisson floor: the noise variance is
``max(var, mu, var_floor)`` because a count stream is never quieter than Poisson).

* **Level.** ``z = (count - mu) / sd``, clipped to ``[-clip, clip]``, and the
  two-sided CUSUM::

      S_up   = max(0, S_up   + z - k)
      S_down = max(0, S_down - z - k)

  ``change_level`` is true when either reaches ``h``. Unlike a burst chart, the
  CUSUM accumulates small persistent shifts (a fraction of a standard deviation per
  tick) until they add up, and it sees drops as well as rises. The clip (a Huber-type
  CUSUM) means one wild tick adds at most ``clip - k``: with the defaults a single
  outlier is a burst, not a change point — it takes two in a row — and a variance
  increase, whose residuals swing both ways, trips the level chart less often.
* **Variance.** The squared *successive difference*, standardised and capped:
  ``w = min((count - previous count)**2 / (2 * noise), clip**2) - 1`` (about 0 when
  nothing changed), and ``V = max(0, V + w - k_var)``; ``change_variance`` is true
  when ``V >= h_var``. Successive differences rather than residuals from ``mu``: a
  level shift moves every residual but only one difference, so the variance chart
  does not fire on every level change. The cap keeps a lone spike (two big
  differences, up then down) below ``h_var`` with the defaults. Only increases are
  charted: under the Poisson floor a count stream cannot look under-dispersed, and a
  station going silent is a level drop.

* **Variance down** (optional, ``variance_down=True``; for arbitrary values, not
  counts): ``D = max(0, D - w - k_var)`` alarms at ``h_var`` too, so a stream that goes
  flat (a stuck sensor, a platform) is a change as well: a constant stretch adds
  ``1 - k_var`` per tick.

Outliers do not poison the baseline: once judged, a tick updates the mean and variance
with its value winsorised at ``huber`` standard deviations, and a non-finite value is
skipped (no evidence, no learning), so one value of 1e200 is a change point at most,
never ``nan`` for every tick after it.

A variance increase also swings the level residuals both ways, so it sometimes trips
the level chart first; either alarm restarts both charts (below), so read
``change_level | change_variance`` as "this station changed" and the flag as the
likelier kind of change.

After an alarm (either chart) both charts reset to 0 and the baseline restarts from
the alarm tick, as at start-up: nothing is judged until it holds ``warmup_ticks`` ticks
of history again. That is the "reset after an alarm": without it a permanent shift
would alarm every few ticks until the slow baseline caught up.

Evidence for the node-state machine (``cusum_z``, non-negative)::

    cusum_z = evidence_scale * max(S_up / h, S_down / h, V / h_var)

so it equals ``evidence_scale`` exactly at an alarm threshold and stays below it
until a chart alarms (the default 4.0 is the node machine's default ``enter_at``:
a building change can lift a node to *elevated*, only an alarm makes it
*anomalous*). While the baseline re-learns after an alarm, ``cusum_z`` holds the
alarm tick's value — the change is still the freshest fact about the station — and
returns to the live statistic once the station is judged again. Drops count as
evidence too; use ``cusum_level_up`` if only rises matter.

The outputs ``cusum_level_up``, ``cusum_level_down`` and ``cusum_variance`` are the
statistics *before* the reset, so on an alarm tick they say which chart fired.

Examples
--------
>>> import numpy as np
>>> det = CusumDetector(warmup_ticks=5)
>>> state = det.init_state((1,))
>>> counts = [4, 5, 3, 4, 5, 4, 3, 5, 4, 4, 9, 10, 9, 11, 10, 9]
>>> outs = [det.step(state, {"count": np.array([float(c)])}) for c in counts]
>>> [t for t, o in enumerate(outs) if o["change_level"][0]]  # shift at tick 10
[12]
>>> round(float(outs[12]["cusum_level_up"][0]), 2), round(float(outs[12]["cusum_z"][0]), 2)
(5.27, 4.21)
>>> [round(float(o["cusum_z"][0]), 2) for o in outs[13:]]  # held while re-learning
[4.21, 4.21, 4.21]
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


class CusumDetector(Stage):
    """Two-sided level CUSUM and one-sided variance CUSUM on the per-tick count.

    Parameters
    ----------
    alpha
        EWMA weight of the baseline mean and variance (``1/n`` while younger than
        ``1/alpha`` ticks, so a fresh baseline is a plain average).
    k
        Level drift allowance, in baseline standard deviations per tick: shifts
        smaller than about ``2 k`` are not worth detecting.
    h
        Level alarm threshold on ``S_up`` / ``S_down`` (standard deviations).
    k_var
        Drift allowance of the variance chart (on the capped standardised squared
        difference minus 1, about 0 with no change).
    h_var
        Variance alarm threshold on ``V``.
    warmup_ticks
        Ticks of baseline history before a station is judged, at start and after
        every alarm.
    var_floor
        Smallest noise variance (counts²), so a near-silent station is not infinitely
        sensitive.
    evidence_scale
        ``cusum_z`` at an alarm threshold (see the module docstring).
    clip
        Bound on ``|z|`` fed to the level chart (must exceed ``k``); its square caps
        the variance chart's standardised squared difference.
    variance_down
        Also chart variance *drops* (a stream going flat); off for counts.
    rel_var
        With ``poisson_floor`` off, the noise variance is at least
        ``(rel_var * |mean|)²`` as well as ``var_floor``.
    huber
        Winsorising bound of a baseline update, in baseline standard deviations.
    """

    name = "cusum"

    def __init__(self, alpha: float = 0.05, k: float = 0.5, h: float = 5.0,
                 k_var: float = 0.5, h_var: float = 16.0, warmup_ticks: int = 10,
                 var_floor: float = 1.0, evidence_scale: float = 4.0,
                 clip: float = 3.0, poisson_floor: bool = True, variance_down: bool = False,
                 rel_var: float = 0.0, huber: float = 4.0) -> None:
        check_fraction("alpha", alpha)
        check_positive("k", k, allow_zero=True)
        check_positive("h", h)
        check_positive("k_var", k_var, allow_zero=True)
        check_positive("h_var", h_var)
        check_positive("var_floor", var_floor)
        check_positive("evidence_scale", evidence_scale)
        check_positive("clip", clip)
        if clip <= k:
            raise ValueError(f"clip must be > k (else the level chart never moves), got {clip!r}")
        check_positive("rel_var", rel_var, allow_zero=True)
        check_positive("huber", huber)
        if warmup_ticks < 1:
            raise ValueError(f"warmup_ticks must be >= 1, got {warmup_ticks!r}")
        self.alpha = alpha
        self.k = k
        self.h = h
        self.k_var = k_var
        self.h_var = h_var
        self.warmup_ticks = warmup_ticks
        self.var_floor = var_floor
        self.evidence_scale = evidence_scale
        self.clip = clip
        # off for arbitrary values (prices, readings): then only var_floor bounds the noise
        self.poisson_floor = poisson_floor
        self.variance_down = variance_down
        self.rel_var = rel_var
        self.huber = huber
        # a spike makes two big differences (up, then down); capping each at clip**2
        # keeps one wild tick from tripping the variance chart on its own
        self._w_cap = clip * clip

    def state_spec(self) -> Spec:
        extra: dict[str, tuple[tuple[int, ...], float]] = {"v_down": ((), 0.0)} if self.variance_down else {}
        return {**extra,
            "n": ((), 0.0),  # ticks in the current baseline (restarts at 1 on an alarm)
            "mu": ((), 0.0),
            "var": ((), 0.0),
            "prev": ((), 0.0),  # previous count (first read at n >= 2, so 0 is never used)
            "s_up": ((), 0.0),
            "s_down": ((), 0.0),
            "v_up": ((), 0.0),
            "held": ((), 0.0),  # evidence of the last alarm, shown while re-learning
        }

    def seed(self, state: ArrayState, expected_counts: Array, known: Array) -> None:
        seed_count_baseline(state, expected_counts, known, mu="mu", var="var",
                            warmup_ticks=self.warmup_ticks, also=("prev",))

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        with np.errstate(all="ignore"):
            return self._step(state, np.asarray(inputs["count"], dtype=np.float64))

    def _step(self, state: ArrayState, raw: Array) -> Outputs:
        n, mu, var, prev = state["n"], state["mu"], state["var"], state["prev"]
        s_up, s_down, v_up, held = state["s_up"], state["s_down"], state["v_up"], state["held"]
        finite = np.isfinite(raw)
        count = np.where(finite, raw, np.where(n > 0, mu, 0.0))
        n += finite
        judged = (n > self.warmup_ticks) & finite
        floor: Array | float = self.var_floor
        if self.rel_var > 0:
            floor = floor + (self.rel_var * mu) ** 2
        noise = np.maximum(np.maximum(var, mu) if self.poisson_floor else var, floor)
        z = np.where(judged, (count - mu) / np.sqrt(noise), 0.0)
        zc = np.clip(z, -self.clip, self.clip)
        up = np.where(judged, np.maximum(0.0, s_up + zc - self.k), np.where(finite, 0.0, s_up))
        down = np.where(judged, np.maximum(0.0, s_down - zc - self.k), np.where(finite, 0.0, s_down))
        w = np.where(judged, np.minimum((count - prev) ** 2 / (2.0 * noise), self._w_cap) - 1.0,
                     0.0)
        w = np.nan_to_num(w, nan=0.0)
        v = np.where(judged, np.maximum(0.0, v_up + w - self.k_var), np.where(finite, 0.0, v_up))
        change_level = (up >= self.h) | (down >= self.h)
        change_variance = v >= self.h_var
        stat = np.maximum(up, down) / self.h
        vstat = v / self.h_var
        outs: Outputs = {}
        if self.variance_down:
            v_down = state["v_down"]
            d = np.where(judged, np.maximum(0.0, v_down - w - self.k_var), np.where(finite, 0.0, v_down))
            change_down = d >= self.h_var
            change_variance = change_variance | change_down
            vstat = np.maximum(vstat, d / self.h_var)
            outs["cusum_variance_down"] = d
            outs["change_variance_down"] = change_down
        alarm = change_level | change_variance
        live = self.evidence_scale * np.maximum(stat, vstat)
        held[...] = np.where(alarm, live, np.where(judged, 0.0, held))
        evidence = np.where(judged, live, held)

        s_up[...] = np.where(alarm, 0.0, up)
        s_down[...] = np.where(alarm, 0.0, down)
        v_up[...] = np.where(alarm, 0.0, v)
        if self.variance_down:
            state["v_down"][...] = np.where(alarm, 0.0, outs["cusum_variance_down"])
        # the alarm tick is the first tick of the new baseline: a CUSUM alarms some
        # ticks after the change, so this tick already belongs to the new regime
        n[...] = np.where(alarm, 1.0, n)
        a = np.where(finite, np.maximum(self.alpha, 1.0 / np.maximum(n, 1.0)), 0.0)
        # Huber-type update while judged: one wild tick moves the baseline a bounded step
        bound = self.huber * np.sqrt(noise)
        x_upd = np.where(judged & ~alarm, np.clip(count, mu - bound, mu + bound), count)
        mu_new, var_new = ewma_update(mu, var, x_upd, a)
        mu[...] = np.where(n <= 1, count, mu_new)
        var[...] = np.where(n <= 1, np.where(alarm, 0.0, var_new), var_new)
        prev[...] = np.where(finite, count, prev)
        return {
            "cusum_level_up": up,
            "cusum_level_down": down,
            "cusum_variance": v,
            "change_level": change_level,
            "change_variance": change_variance,
            "cusum_z": evidence,
            **outs,
        }

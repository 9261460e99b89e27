"""Vectorised ("SIMD") entropy: category entropy and deviation entropy of activity.

Two signals, for every station in one numpy pass per tick:

* **Category entropy** — Shannon entropy (bits) of each station's category
  distribution, smoothed over recent ticks (an EWMA of the histogram, so a tick with
  two events does not swing it). A real-world event concentrates reporting on one
  topic, so entropy *drops* below the station's own baseline; ``entropy_drop_z`` is
  that drop in baseline standard deviations.
* **Deviation entropy of activity** — the surprisal, in bits, of the tick's event
  count under the station's adaptive baseline (EWMA mean and variance with a Poisson
  floor): ``z**2 / (2 ln 2)`` for counts above baseline, 0 below. It is the "how
  unusual is this much activity" signal in information units.

Baselines are EWMAs that adapt to level shifts; while a station is anomalous they
learn ten times slower, so a burst is not absorbed into its own baseline. Where a daily
cycle exists the activity baseline is seasonal: given ``seasonal_mu`` / ``seasonal_var``
(the learned profile's mean and variance for this tick's slot of the day) and
``seasonal_judged`` (where the slot is trusted — the chain passes the periodicity
stage's; without the mask, NaN marks untrusted slots), the surprisal is measured against
them, so the busy hour is not news every day.

Examples
--------
>>> import numpy as np
>>> shannon_entropy(np.array([[1, 1, 1, 1], [5, 0, 0, 0]]))
array([2., 0.])
>>> det = EntropyDetector(alpha=0.2, warmup_ticks=3, n_bins=4)
>>> state = det.init_state((2,))
>>> hist = np.zeros((2, 4)); hist[:, :] = 2.0
>>> for _ in range(20):
...     out = det.step(state, {"count": hist.sum(-1), "hist": hist})
>>> round(float(out["entropy"][0]), 3), float(out["entropy_drop_z"][0])
(2.0, 0.0)
>>> spike = hist.copy(); spike[0] = [30, 0, 0, 0]
>>> out = det.step(state, {"count": spike.sum(-1), "hist": spike})
>>> bool(out["entropy_drop_z"][0] > 3), bool(out["activity_bits"][0] > 10)
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
    ewma_update,
    seed_count_baseline,
)
from convergence.detectors.ingest import N_CATEGORY_BINS

_LN2 = float(np.log(2.0))
#: EWMA weight of the slow category histogram (about 19 ticks of events)
_SLOW_ALPHA = 0.1
#: a station leaning on a category at least this much (concentration z) learns its usual
#: mix ten times slower
MIX_HOLD_Z = 1.0


def _concentration_z(hist: Array, mass: Array, p: Array, alpha: float) -> tuple[Array, Array]:
    """z of the busiest category's excess over its expected count in an EWMA-smoothed
    histogram (weight ``alpha``, so about ``mass * (2 - alpha) / alpha`` events), corrected
    for picking the busiest of the station's categories.

    Per category, the Wilson-Hilferty approximation of a Poisson upper tail,
    ``z = 3 sqrt(k) (1 - 1/(9k) - (lam/k)^(1/3))`` for ``k`` seen and ``lam`` expected
    (within a few hundredths of the exact tail from k = 5 on); the largest over ``m``
    categories is mapped to ``sqrt(z^2 - 2 ln m)`` (the Gaussian-tail form of a
    Bonferroni correction). Returns the z and the busiest category's bin.
    """
    k_eff = (2.0 - alpha) / alpha
    seen = hist * k_eff
    expect = (mass * k_eff)[..., None] * p
    # the busiest category by its excess over the usual share; the tail z for it alone
    b = (seen - expect).argmax(-1)[..., None]
    k = np.maximum(np.take_along_axis(seen, b, -1)[..., 0], 1e-9)
    lam = np.maximum(np.take_along_axis(expect, b, -1)[..., 0], 1e-9)
    z = np.where(k > lam, 3.0 * np.sqrt(k) * (1.0 - 1.0 / (9.0 * k) - np.cbrt(lam / k)), 0.0)
    m = np.maximum((p > 0.02).sum(-1), 1)
    out: Array = np.sqrt(np.maximum(z * z - 2.0 * np.log(m), 0.0)) * (z > 0)
    return out, b[..., 0]


def shannon_entropy(hist: Array, axis: int = -1, base: float = 2.0,
                    total: Array | None = None) -> Array:
    """Shannon entropy of (unnormalised) histograms along ``axis``; 0 for empty rows.

    Matches ``scipy.stats.entropy(hist, base=base, axis=axis)`` for non-empty rows.
    Computed as ``H = (ln T - sum(h ln h) / T) / ln base`` with both sums as matrix
    products over the (small) bin axis; ``total`` (``T``, the row sums) may be passed in
    when the caller already has it.
    """
    h = np.asarray(hist, dtype=np.float64)
    if axis not in (-1, h.ndim - 1):
        h = np.moveaxis(h, axis, -1)
    ones = np.ones(h.shape[-1])
    t = h @ ones if total is None else np.asarray(total, dtype=np.float64)
    hlogh = np.zeros_like(h)
    np.log(h, out=hlogh, where=h > 0)
    hlogh *= h
    s = hlogh @ ones
    pos = t > 0
    safe_t = np.where(pos, t, 1.0)
    ent = (np.log(safe_t) - s / safe_t) / np.log(base)
    # rounding can leave a pure histogram a hair below zero; empty rows are 0
    out: Array = np.where(pos, np.maximum(ent, 0.0), 0.0)
    return out


class EntropyDetector(Stage):
    """Category entropy drop and activity deviation entropy against adaptive baselines.

    Parameters
    ----------
    alpha
        EWMA weight of the slow baselines (entropy mean/variance, activity mean/variance).
    hist_alpha
        EWMA weight of the smoothed category histogram.
    warmup_ticks
        Ticks of history before a station's outputs are trusted (outputs are 0 before).
    mix_warmup_ticks
        Ticks with enough events before a station's usual category mix is trusted for the
        concentration test (a mix learnt from a handful of events makes chance look like
        a story).
    min_events
        Events in the smoothing window (about ``1 / hist_alpha`` ticks) needed before the
        category entropy is judged at all.
    n_bins
        Category histogram size.
    """

    name = "entropy"

    def __init__(self, alpha: float = 0.05, hist_alpha: float = 0.3, warmup_ticks: int = 5,
                 min_events: float = 8.0, n_bins: int = N_CATEGORY_BINS,
                 mix_warmup_ticks: int = 30) -> None:
        check_fraction("alpha", alpha)
        check_fraction("hist_alpha", hist_alpha)
        check_int_min("warmup_ticks", warmup_ticks, 1)
        check_int_min("mix_warmup_ticks", mix_warmup_ticks, 1)
        self.mix_warmup_ticks = mix_warmup_ticks
        self.alpha = alpha
        self.hist_alpha = hist_alpha
        self.warmup_ticks = warmup_ticks
        self.min_events = min_events
        self.n_bins = n_bins

    def state_spec(self) -> Spec:
        return {
            "n": ((), 0.0),
            "hist": ((self.n_bins,), 0.0, np.float32),
            "h_n": ((), 0.0),
            "h_mu": ((), 0.0),
            "h_var": ((), 0.05),
            "c_mu": ((), 0.0),
            "c_var": ((), 1.0),
            # the station's usual category mix (learned), for the concentration test
            "p_cat": ((self.n_bins,), 1.0 / self.n_bins, np.float32),
            # a slower smoothed histogram: power for a story that holds attention
            "hist_slow": ((self.n_bins,), 0.0, np.float32),
            # ticks the usual mix has learnt from
            "m_n": ((), 0.0),
        }

    def seed(self, state: ArrayState, expected_counts: Array, known: Array) -> None:
        seed_count_baseline(state, expected_counts, known, mu="c_mu", var="c_var",
                            warmup_ticks=self.warmup_ticks, also=())

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        count = inputs["count"]
        hist = inputs["hist"]
        anomalous = inputs.get("anomalous")
        n = state["n"]
        n += 1.0
        # warm-up: running mean (alpha = 1/n) until the EWMA weight takes over
        a = np.maximum(self.alpha, 1.0 / n)
        if anomalous is not None:
            a = np.where(anomalous, a * 0.1, a)
        warm = n > self.warmup_ticks

        # activity deviation entropy (surprisal of the count under the baseline)
        c_mu, c_var = state["c_mu"], state["c_var"]
        s_mu, s_var = inputs.get("seasonal_mu"), inputs.get("seasonal_var")
        if s_mu is not None and s_var is not None:
            s_judged = inputs.get("seasonal_judged")
            seasonal = (np.isfinite(s_mu) & np.isfinite(s_var) if s_judged is None
                        else np.asarray(s_judged, bool))
            ref_mu = np.where(seasonal, s_mu, c_mu)
            ref_var = np.where(seasonal, s_var, c_var)
        else:
            ref_mu, ref_var = c_mu, c_var
        var = np.maximum(ref_var, ref_mu) + 1.0
        z = (count - ref_mu) / np.sqrt(var)
        activity_bits = np.where(warm & (z > 0), z * z / (2 * _LN2), 0.0)
        c_mu[...], c_var[...] = ewma_update(c_mu, c_var, count, a)

        # category entropy of the smoothed histogram
        sh = state["hist"]
        sh += self.hist_alpha * (hist - sh)
        mass = sh @ np.ones(sh.shape[-1])
        ent = shannon_entropy(sh, total=mass)
        # The entropy baseline learns only from ticks with enough events, and counts
        # them itself: seeding the activity baseline (``n``) says nothing about entropy.
        # ``mass`` is the smoothed count *per tick*; the smoothed histogram holds about
        # ``mass / hist_alpha`` events (the EWMA's window), which is what the entropy of
        # a slow feed (1-2 events a tick) is estimated from.
        enough = mass * (2.0 - self.hist_alpha) / self.hist_alpha >= self.min_events
        h_n, h_mu, h_var = state["h_n"], state["h_mu"], state["h_var"]
        judged = enough & (h_n >= self.warmup_ticks)
        sd = np.sqrt(np.maximum(h_var, 0.01))
        drop_z = np.where(judged, np.maximum(h_mu - ent, 0.0) / sd, 0.0)
        h_n += enough
        ah = np.where(enough, np.maximum(self.alpha, 1.0 / np.maximum(h_n, 1.0)), 0.0)
        if anomalous is not None:
            ah = np.where(anomalous, ah * 0.1, ah)
        first = enough & (h_n == 1)
        dh = ent - h_mu
        h_mu += np.where(first, dh, ah * dh)
        h_var[...] = np.where(first, h_var, (1 - ah) * (h_var + ah * dh * dh))
        # concentration: the busiest category against the station's usual mix. The
        # smoothed histogram holds about n_eff events; under the usual mix each category's
        # count is close to Poisson, whose upper tail (Wilson-Hilferty) gives a z that is
        # honest for the handful of events a slow feed has; the largest of the station's
        # categories is then corrected for having been picked as the largest (Bonferroni).
        # Two windows: the fast histogram answers within a few ticks, the slow one (about
        # three times as many events) has the power for a slow feed; the larger of the two
        # z is corrected for having two looks.
        p_cat = state["p_cat"]
        slow = state["hist_slow"]
        slow += _SLOW_ALPHA * (hist - slow)
        slow_mass = slow @ np.ones(slow.shape[-1])
        k_slow = (2.0 - _SLOW_ALPHA) / _SLOW_ALPHA
        # each window is judged on its own events: a feed of one or two events a tick has
        # too few in the fast window, but enough in the slow one
        enough_slow = slow_mass * k_slow >= self.min_events
        m_n = state["m_n"]
        m_n += enough_slow
        mix_known = m_n >= self.mix_warmup_ticks
        z_fast, b_fast = _concentration_z(sh, mass, p_cat, self.hist_alpha)
        z_fast = np.where(enough & mix_known, z_fast, 0.0)
        z_slow, b_slow = _concentration_z(slow, slow_mass, p_cat, _SLOW_ALPHA)
        # the slow window remembers a story for about 19 ticks after it ends: it counts only
        # while the fast window still leans the same way (else the tail of a story that is
        # over keeps its stations anomalous, and a region re-alerts on nothing new)
        leaning = (b_slow == b_fast) & ((z_fast >= 1.0) | ~enough)
        z_slow = np.where(enough_slow & mix_known & leaning, z_slow, 0.0)
        z2 = np.maximum(z_fast, z_slow)
        conc_bin = np.where(z_slow > z_fast, b_slow, b_fast)
        conc_z = np.sqrt(np.maximum(z2 * z2 - 2.0 * _LN2, 0.0)) * (z2 > 0)
        frac = np.divide(slow, slow_mass[..., None], out=np.zeros_like(slow),
                         where=slow_mass[..., None] > 0)
        # the usual mix (from the slow window) learns at the running mean at first, then at
        # alpha, ten times slower while the station departs from it (leans at 1 sd or
        # more), so a story that holds the station's attention is not absorbed within a
        # few ticks. A slow feed (under one event a tick) needs 10-20 ticks of a story to
        # lean 3 sd; learning at full speed until 2 sd, its mix absorbed the story first
        # (Las Vegas `topic-only`, seed 7 run 35: a sensor reporting only the story's
        # category for 20 ticks never leaned at all, and the region missed its second
        # source kind)
        am = np.maximum(self.alpha, 1.0 / np.maximum(m_n, 1.0))
        if anomalous is not None:
            am = np.where(anomalous, am * 0.1, am)
        ap = np.where(conc_z >= MIX_HOLD_Z, 0.1 * am, am)
        p_cat += np.where(enough_slow[..., None], ap[..., None], 0.0) * (frac - p_cat)
        return {"entropy": ent, "entropy_drop_z": np.maximum(drop_z, conc_z),
                "concentration_z": conc_z, "concentration_bin": conc_bin,
                "activity_bits": activity_bits}

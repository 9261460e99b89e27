"""The standard single-series interface: one ``timestamp,value`` stream in, a score in [0, 1] out.

Anomaly-detection benchmarks (NAB-style) hand a detector one series and read one score
per row. :class:`SingleSeriesDetector` runs the product's own stages on it, causally —
row ``t`` sees rows ``0..t`` only — with the Poisson floor off, since values are not
counts:

* **season**: the periodicity stage's level-plus-profile model (daily profile of
  ``slots_per_day`` slots, day-of-week term, level), learned online from each row's own
  timestamp, so irregular sampling and gaps need nothing special. Its one-step residual,
  standardised (``z``), is the evidence of a single odd row;
* **residual bursts**: two burst charts (up and down) on that standardised residual —
  a run of rows off the seasonal expectation;
* **change**: CUSUM on the residual: level up or down, variance up, and variance
  *down* (a series going flat). A level alarm *rebases* the season's level, so a level
  shift is flagged and then absorbed instead of flagged for as long as a slow baseline
  takes to catch up (the residual charts keep their own baselines: a ramp that goes on
  after the rebase still shows as a run of odd rows);
* **scale**: a burst chart on ``log |one-row change|`` of the deseasonalised value
  (the value minus its daily and weekly terms): the spread of the noise, which a
  level model's residual hides when the level itself wanders (a random walk). The log
  makes it scale-free and tames heavy tails; its slow baseline learns ten times slower
  while the chart is 2 sd up, so a noisier stretch stays flagged while it lasts, and
  restarts on the new spread after ``SCALE_HOLD_ROWS`` raised rows. It learns from the
  first rows judged against the level alone (a spread hardly depends on the season),
  so a quiet stretch while the season is learned is not taken for the normal spread.
  Changes across a gap of more than ``MAX_GAP_SLOTS`` daily slots are skipped;
* **trend**: :class:`~convergence.detectors.trend.TrendDetector` (a fast-versus-slow
  EWMA crossover with a learned spread) on the deseasonalised value, one wild row
  capped at ``Z_CAP`` residual sd: raised while a ramp lasts, absorbed within about
  50 rows after it ends, where the CUSUM's rebase alone saw a ramp as a saw-tooth of
  level alarms;
* nothing is judged until the season is learned (``min_seen`` visits of a slot:
  ``min_seen`` rows for daily data, ``min_seen`` days for finer data);
* the **HMM regime** filter, when a trained regime model is given.

Every stage winsorises its baseline updates and skips non-finite values, so one value
of 1e200 is an anomaly for a row or two and never turns later scores into ``nan``;
numpy's floating-point warnings are silenced inside the stages.

The evidence (in standard deviations) is fused as the node-state machine fuses it —
the strongest part plus ``corroboration`` times the second — and mapped to a
**calibrated** score: ``anomaly_score = 1 - P`` where ``P`` is the chance that a normal
row of a Gaussian series, with everything else learned, scores at least this much
evidence (:func:`evidence_to_score`; the table is measured by
:func:`calibration_table` on seeded Gaussian noise, and ``tests/detectors/test_single.py``
checks it holds on heavy-tailed, seasonal and differently scaled series). So 0.99
means "1 normal row in 100 scores this high" on every series; alarms belong far up the
scale (0.999 and above).

Vectorised over trailing series: values of shape ``(series,)`` per step.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(50.0, 1.0, 600); x[400:404] += 12.0  # one row every 15 minutes
>>> scores = SingleSeriesDetector().score_series(x, np.arange(600) * 900.0)
>>> int(np.argmax(scores)) in range(400, 406), float(scores[400]) > 0.99999
(True, True)
>>> int((scores[:390] >= 0.999).sum())  # about 1 normal row in 1000 would be expected
0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import (
    Array,
    ArrayState,
    check_int_min,
    check_unit_interval,
    fuse_top2,
)
from convergence.detectors.burst import BurstDetector
from convergence.detectors.cusum import CusumDetector
from convergence.detectors.periodicity import SECONDS_PER_DAY, PeriodicityDetector, slot_of, week_slot_of
from convergence.detectors.regime import RegimeFilter
from convergence.detectors.regime_features import RegimeFeatures
from convergence.detectors.trend import TrendDetector

#: slot counts a day is divided into (every divisor of 1440 minutes up to 288)
DAY_DIVISORS = np.array([d for d in range(1, 289) if 1440 % d == 0], np.float64)
#: bound on the standardised residual fed to the residual charts: one wild row (1e200)
#: counts as a 6 sd row there, so it fades from them in a row or two
Z_CAP = 6.0
#: rows before a row may be judged against the level alone (at most; two days of rows
#: for coarser data): a seasonal series' first day would look odd against its mean
EARLY_ROWS = 120
#: weight of a row's evidence while it is judged against the level alone
EARLY_WEIGHT = 0.5
#: weight of the residual burst charts (a run of odd rows) beside a single odd row
SHIFT_WEIGHT = 0.5
#: bound on the single-row evidence itself
SPIKE_CAP = 1e6
#: weight of the scale chart (the spread of one-row changes) beside a single odd row
SCALE_WEIGHT = 0.75
#: weight of the trend chart (the slope of the deseasonalised value)
TREND_WEIGHT = 0.5
#: rows a raised scale chart is held before its baseline restarts on the new spread: a
#: change of spread that lasts longer (two days of quarter-hour rows) is the new normal
SCALE_HOLD_ROWS = 192
#: a one-row change across a longer gap (in daily slots) is not a sample of the spread
MAX_GAP_SLOTS = 1.5


def _null_tail(evidence: Array) -> Array:
    """Chance that a normal row scores at least ``evidence``, from :data:`CALIBRATION`."""
    e = np.asarray(evidence, np.float64)
    levels, log_tail = CALIBRATION
    # log-linear between the measured points; beyond the last, the Gaussian slope
    lt = np.interp(e, levels, log_tail)
    beyond = e > levels[-1]
    slope = -(levels[-1] ** 2 - (levels[-1] - 1.0) ** 2) / 2.0 / np.log(10.0)
    lt = np.where(beyond, log_tail[-1] + slope * (e - levels[-1]), lt)
    out: Array = 10.0 ** np.minimum(lt, 0.0)
    return out


#: rarity (``-log10`` of the null chance) up to which the score is exactly ``1 - chance``
EXACT_RARITY = 6.0


def evidence_to_score(evidence: Array) -> Array:
    """Calibrated score in [0, 1]: one minus the null chance of at least this evidence.

    Exact up to 0.999999 (one normal row in a million); beyond, the rarity is compressed
    twenty-fold so stronger evidence still scores higher in floating point instead of
    every strong row tying at 1.0.
    """
    with np.errstate(all="ignore"):
        rarity = -np.log10(_null_tail(np.nan_to_num(evidence, nan=0.0)))
        rarity = np.where(rarity > EXACT_RARITY, EXACT_RARITY + (rarity - EXACT_RARITY) / 20.0, rarity)
        out: Array = np.clip(1.0 - 10.0 ** -rarity, 0.0, 1.0)
    return out


def calibration_table(rows: int = 8000, series: int = 250, seed: int = 0,
                      levels: tuple[float, ...] = tuple(np.arange(0.0, 6.01, 0.5))) -> tuple[Array, Array]:
    """Measure ``(levels, log10 tail)``: how often normal rows reach each evidence level.

    Runs the detector on ``series`` seeded Gaussian
    series of ``rows`` rows with a daily cycle, skips each one's first quarter (learning),
    and counts rows at or above each level. This is how :data:`CALIBRATION` was made.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(rows) * 900.0
    x = (np.sin(2 * np.pi * t / SECONDS_PER_DAY)[None, :] * rng.uniform(0, 3, (series, 1))
         + rng.normal(0.0, 1.0, (series, rows)))
    det = SingleSeriesDetector(slots_per_day=96, week=True)
    st = det.init_state((series,))
    ev = np.zeros((rows, series))
    for i in range(rows):
        ev[i] = det.step(st, x[:, i], float(t[i]))["evidence"]
    tail = ev[rows // 4:].ravel()
    lv = np.asarray(levels, np.float64)
    frac = np.array([(tail >= e).mean() for e in lv])
    return lv, np.log10(np.maximum(frac, 0.5 / tail.size))


#: ``calibration_table(rows=8000, series=250)`` as measured: evidence levels (sd) and
#: log10 of the share of normal rows reaching them (1.5 million rows after learning);
#: the 6 sd level (two rows) is left out, beyond 5.5 sd the Gaussian tail's slope carries on
CALIBRATION: tuple[Array, Array] = (
    np.arange(0.0, 5.51, 0.5),
    np.array([0.0, -0.06, -0.25, -0.56, -0.94, -1.39, -1.92, -2.53, -3.19, -3.95, -4.68, -5.4]),
)


class SingleSeriesDetector:
    """The detector stack for arbitrary-valued series (see module docstring).

    Parameters
    ----------
    warmup_ticks
        Rows the burst and CUSUM baselines learn before they are judged.
    slots_per_day
        Daily-profile slots; ``None`` chooses them from the series' own sampling
        interval in :meth:`score_series` (one slot per typical interval, at most 288).
    utc_offset_s
        Shift of the day the slots divide (``score_series`` centres slots on the rows).
    week
        Learn a day-of-week term too.
    min_seen
        Visits of a slot (days, with one slot per sampling interval) before the season
        is trusted.
    corroboration
        Weight of the second-strongest evidence part.
    """

    def __init__(self, *, warmup_ticks: int = 20, slots_per_day: int | None = None,
                 utc_offset_s: float = 0.0, week: bool = True, min_seen: int = 3,
                 regime: RegimeFilter | None = None, regime_kind: str = "price",
                 regime_vol_window: int = 10, corroboration: float = 0.5) -> None:
        check_int_min("warmup_ticks", warmup_ticks, 2)
        check_int_min("min_seen", min_seen, 1)
        check_unit_interval("corroboration", corroboration)
        if slots_per_day is not None and not 1 <= slots_per_day <= 1440:
            raise ValueError(f"slots_per_day must be in [1, 1440], got {slots_per_day!r}")
        self.warmup_ticks = warmup_ticks
        self.slots_per_day = slots_per_day
        self.utc_offset_s = utc_offset_s
        self.week = week
        self.min_seen = min_seen
        self.corroboration = corroboration
        self.regime_kind = regime_kind
        self.regime_vol_window = regime_vol_window
        self.season = PeriodicityDetector(
            slots_per_day=slots_per_day or 1, alpha=0.1, min_seen=min_seen, var_floor=1e-12,
            poisson_floor=False, level_alpha=0.002, week=week, week_alpha=0.002, rel_var=1e-6,
            min_rows=max(warmup_ticks, min(2 * (slots_per_day or 1), EARLY_ROWS)))
        # charts on the standardised residual: unit noise at least, so a quiet stretch does
        # not make the next ordinary row look like a burst; and since a seasonal fit's
        # residuals come in runs, they learn how far their fast average ordinarily strays
        res: dict[str, Any] = {"alpha": 0.01, "fast_alpha": 0.3, "min_ticks": 1, "warmup_ticks": warmup_ticks,
                               "poisson_floor": False, "min_var": 1.0, "rel_var": 0.0,
                               "learn_fast_var": True}
        self.res_up = BurstDetector(**res)
        self.res_down = BurstDetector(**res)
        # level (both ways), variance up and variance down; its alarm rebases the level
        self.cusum = CusumDetector(alpha=0.01, warmup_ticks=warmup_ticks, k=0.5, h=8.0, var_floor=1.0,
                                   poisson_floor=False, variance_down=True, k_var=0.5, h_var=24.0,
                                   evidence_scale=4.0)
        # the spread of one-row changes: a chart on log |change| of the deseasonalised
        # value (scale-free, heavy tails tamed); a slow baseline that learns ten times
        # slower once 2 sd up, so a noisier stretch stays raised while it lasts
        # (and restarts on a spread that lasted SCALE_HOLD_ROWS); one wild row moves the
        # fast average by at most 3 sd
        self.scale = BurstDetector(alpha=0.003, fast_alpha=0.05, threshold=2.0, min_ticks=1,
                                   warmup_ticks=warmup_ticks, poisson_floor=False, min_var=0.05,
                                   rel_var=0.0, clip=3.0)
        # the slope of the deseasonalised value: raised while a trend lasts, absorbed after
        self.trend = TrendDetector(fast_alpha=0.2, slow_alpha=0.02, spread_alpha=0.005, threshold=4.0)
        self.regime = regime
        self.regime_features = RegimeFeatures(regime_kind, regime_vol_window) if regime else None

    @classmethod
    def for_timestamps(cls, timestamps_s: npt.ArrayLike, **kw: Any) -> SingleSeriesDetector:
        """A detector whose daily slots fit the series' sampling (from its first rows).

        One slot per typical interval (median of the first 200 gaps; at most 288 a day,
        one for daily or coarser data), centred on the rows; the weekly term only when
        there is at least one row a day.
        """
        t = np.asarray(timestamps_s, np.float64)[:201]
        gaps = np.diff(t)
        gaps = gaps[gaps > 0]
        dt = float(np.median(gaps)) if gaps.size else SECONDS_PER_DAY
        per_day = SECONDS_PER_DAY / dt
        # jitter and gaps blur the median interval: snap to the nearest divisor of a day
        slots = int(DAY_DIVISORS[np.argmin(np.abs(np.log(DAY_DIVISORS / per_day)))]) \
            if dt < SECONDS_PER_DAY else 1
        width = SECONDS_PER_DAY / slots
        phase = float(np.median(np.mod(t, width))) if t.size else 0.0
        kw.setdefault("week", dt <= SECONDS_PER_DAY)
        return cls(slots_per_day=slots, utc_offset_s=width / 2.0 - phase, **kw)

    def init_state(self, shape: tuple[int, ...] = (1,)) -> dict[str, ArrayState]:
        """Fresh state for ``shape`` series."""
        st = {"season": self.season.init_state(shape), "res_up": self.res_up.init_state(shape),
              "res_down": self.res_down.init_state(shape), "cusum": self.cusum.init_state(shape),
              "rebase": ArrayState.zeros(shape, {"flag": ((), False, np.bool_),
                                                 "scale": ((), False, np.bool_)}),
              "scale": self.scale.init_state(shape), "trend": self.trend.init_state(shape),
              # the previous finite deseasonalised value and its time, for one-row changes
              "prev": ArrayState.zeros(shape, {"value": ((), np.nan), "time_s": ((), -np.inf)})}
        if self.regime is not None and self.regime_features is not None:
            st["regime_features"] = self.regime_features.init_state(shape)
            st["regime"] = self.regime.init_state(shape)
        return st

    def step(self, state: dict[str, ArrayState], value: Array, time_s: float | Array) -> dict[str, Array]:
        """One row at unix time ``time_s``: ``anomaly_score``, ``evidence`` and the parts behind it."""
        v = np.asarray(value, np.float64)
        with np.errstate(all="ignore"):
            return self._step(state, v, time_s)

    def _step(self, state: dict[str, ArrayState], v: Array, time_s: float | Array) -> dict[str, Array]:
        rebase = state["rebase"]["flag"]
        t = np.asarray(time_s, np.float64)
        slot = slot_of(t, self.slots_per_day or 1, utc_offset_s=self.utc_offset_s)
        season_in: dict[str, Array] = {"count": v, "slot": slot, "rebase": rebase.copy()}
        if self.week:
            season_in["week_slot"] = week_slot_of(t, utc_offset_s=self.utc_offset_s)
        sea = self.season.step(state["season"], season_in)
        z = np.clip(sea["periodicity_z"], -SPIKE_CAP, SPIKE_CAP)
        # the residual charts skip rows the season cannot judge, and rows whose noise sits
        # at its floor (a constant series: nothing there can go flat)
        floor = self.season.var_floor + (self.season.rel_var * state["season"]["level"]) ** 2
        noisy = sea["periodicity_var"] > 4.0 * floor
        live = sea["periodicity_trusted"] & noisy
        zin = np.where(live, np.clip(z, -Z_CAP, Z_CAP), np.nan)
        res_up = self.res_up.step(state["res_up"], {"count": zin})["burst_z"]
        res_down = self.res_down.step(state["res_down"], {"count": -zin})["burst_z"]
        cus = self.cusum.step(state["cusum"], {"count": zin})
        # a flagged level change is absorbed from the next row on
        rebase[...] = cus["change_level"]
        scale_z, trend_z = self._scale_and_trend(state, v, t, sea, live, sea["periodicity_judged"] & noisy)
        parts = {
            # judged against the level alone (season not learned yet): a weaker witness
            "spike": np.abs(z) * np.where(sea["periodicity_trusted"], 1.0, EARLY_WEIGHT),
            "shift_up": SHIFT_WEIGHT * res_up,
            "shift_down": SHIFT_WEIGHT * res_down,
            "change": 0.5 * cus["cusum_z"],
            "scale": SCALE_WEIGHT * scale_z,
            "trend": TREND_WEIGHT * np.abs(trend_z),
        }
        if self.regime is not None and self.regime_features is not None:
            feats = self.regime_features.step(state["regime_features"], {"value": v})["features"]
            parts["regime"] = self.regime.step(state["regime"], {"features": feats})["regime_z"]
        clean = [np.nan_to_num(np.maximum(p, 0.0), nan=0.0, posinf=SPIKE_CAP) for p in parts.values()]
        evidence, _ = fuse_top2(clean, self.corroboration)
        return {"anomaly_score": evidence_to_score(evidence), "evidence": evidence, **parts}

    def _scale_and_trend(self, state: dict[str, ArrayState], v: Array, t: Array,
                         sea: dict[str, Array], live: Array, judged: Array) -> tuple[Array, Array]:
        """The scale chart's and the trend chart's ``z`` for this row.

        Both read the deseasonalised value ``y = value - daily and weekly terms``, which,
        unlike the residual, does not jump when a level alarm rebases the season. The
        trend chart waits for a learned season (``live``); the spread of one-row
        changes hardly depends on it, so the scale chart learns from the first rows
        judged against the level alone (``judged``): its baseline is the series'
        ordinary spread, not a quiet stretch that happens to come when the season is
        learned.
        """
        y = v - sea["periodicity_seasonal"]
        prev = state["prev"]
        slots = self.slots_per_day or 1
        max_gap_s = MAX_GAP_SLOTS * SECONDS_PER_DAY / slots if slots > 1 else np.inf
        near = (t - prev["time_s"]) <= max_gap_s
        dy = np.where(judged & near & np.isfinite(y) & np.isfinite(prev["value"]), y - prev["value"], np.nan)
        fin = np.isfinite(y)
        prev["value"][...] = np.where(fin, y, prev["value"])
        prev["time_s"][...] = np.where(fin, t, prev["time_s"])
        sd = np.sqrt(sea["periodicity_var"])
        # a floor far below the noise, so repeated values (dy = 0) stay finite
        rebase = state["rebase"]["scale"]
        scale = self.scale.step(state["scale"], {"count": np.log(np.abs(dy) + 1e-3 * sd),
                                                 "rebase": rebase.copy()})
        scale_z = scale["burst_z"]
        # raised for SCALE_HOLD_ROWS rows in a row: restart on the new spread next row
        rebase[...] = scale["burst_run"] >= SCALE_HOLD_ROWS
        # one wild row moves the slope by at most Z_CAP sd of its residual
        r = sea["periodicity_residual"]
        y_capped = np.where(live, y - r + np.clip(r, -Z_CAP * sd, Z_CAP * sd), np.nan)
        trend_z = self.trend.step(state["trend"], {"value": y_capped})["trend_z"]
        return scale_z, trend_z

    def score_many(self, series: list[tuple[Array, Array]]) -> list[Array]:
        """Scores for many ``(values, timestamps)`` series at once, vectorised across them.

        The same as :meth:`score_series` on each (series are padded with non-finite
        values, which every stage skips); series whose fitted slots differ run in
        separate batches.
        """
        groups: dict[tuple[int, bool], list[int]] = {}
        fitted = []
        for i, (v, t) in enumerate(series):
            self._check(v, t)
            det = self._fitted(np.asarray(t, np.float64))
            fitted.append(det)
            groups.setdefault((det.slots_per_day or 1, det.week), []).append(i)
        out: list[Array] = [np.zeros(0)] * len(series)
        for (slots, week), members in groups.items():
            det = self._like(slots_per_day=slots, week=week, utc_offset_s=0.0)
            n = max(len(series[i][0]) for i in members)
            vals = np.full((n, len(members)), np.nan)
            times = np.zeros((n, len(members)))
            for j, i in enumerate(members):
                v, t = np.asarray(series[i][0], np.float64), np.asarray(series[i][1], np.float64)
                vals[: v.shape[0], j] = v
                # each series' own slot phase, folded into its clock
                times[:, j] = np.r_[t, np.full(n - t.shape[0], t[-1] if t.size else 0.0)]
                times[:, j] += fitted[i].utc_offset_s
            state = det.init_state((len(members),))
            res = np.zeros((n, len(members)))
            for k in range(n):
                res[k] = det.step(state, vals[k], times[k])["anomaly_score"]
            for j, i in enumerate(members):
                out[i] = res[: len(series[i][0]), j].copy()
        return out

    def _like(self, **kw: Any) -> SingleSeriesDetector:
        args: dict[str, Any] = {"warmup_ticks": self.warmup_ticks, "week": self.week,
                                "min_seen": self.min_seen, "regime": self.regime,
                                "regime_kind": self.regime_kind,
                                "regime_vol_window": self.regime_vol_window,
                                "corroboration": self.corroboration,
                                "slots_per_day": self.slots_per_day, "utc_offset_s": self.utc_offset_s}
        args.update(kw)
        return SingleSeriesDetector(**args)

    def _fitted(self, t: Array) -> SingleSeriesDetector:
        if self.slots_per_day is not None:
            return self
        fit = SingleSeriesDetector.for_timestamps(t)
        return self._like(slots_per_day=fit.slots_per_day, utc_offset_s=fit.utc_offset_s,
                          week=self.week and fit.week)

    @staticmethod
    def _check(values: npt.ArrayLike, timestamps_s: npt.ArrayLike) -> None:
        v = np.asarray(values, np.float64)
        t = np.asarray(timestamps_s, np.float64)
        if v.shape != t.shape or v.ndim != 1:
            raise ValueError(f"values and timestamps must be 1-D and equally long, got {v.shape}, {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("timestamps must be finite unix seconds")

    def score_series(self, values: npt.ArrayLike, timestamps_s: npt.ArrayLike) -> Array:
        """Scores for a whole series, computed causally row by row.

        Without ``slots_per_day`` the slots are fitted to the series' sampling first
        (:meth:`for_timestamps`, from its first rows).
        """
        self._check(values, timestamps_s)
        v = np.asarray(values, np.float64)
        t = np.asarray(timestamps_s, np.float64)
        det = self._fitted(t)
        state = det.init_state((1,))
        out = np.zeros(v.shape[0])
        for i in range(v.shape[0]):
            out[i] = det.step(state, v[i:i + 1], float(t[i]))["anomaly_score"][0]
        return out

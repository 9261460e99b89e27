"""Daily periodicity: a station's activity measured against its own time-of-day profile.

Many sources have a strong daily rhythm (markets open and close, newsrooms and
social media follow the waking day). A burst or CUSUM chart against one adaptive
baseline sees every opening bell as an anomaly and misses a night-time surge that
would be ordinary at noon. This stage learns, per station, a profile of
``slots_per_day`` slots (e.g. 24 hours or 96 quarter hours): an EWMA mean and
variance of the per-tick count in each slot. Each tick is judged only against its
own slot::

    periodicity_z = (count - mu[slot]) / sqrt(max(var[slot], mu[slot], var_floor))

signed (positive = busier than usual at this time of day), and 0 until that slot has
been seen ``min_seen`` times. ``|periodicity_z| >= threshold`` is a *departure*;
``periodicity_break`` is true once departures have lasted ``min_ticks`` consecutive
ticks — both directions, since a newsroom falling silent at its busiest hour breaks
the rhythm as much as a surge at 3 a.m. does. While a tick departs, its slot learns ten
times slower, so a sustained departure is not absorbed into the profile it is
measured against.

**Level plus profile** (``level_alpha > 0``; what arbitrary-valued series use). A
slot's absolute mean must re-learn, one visit a day, after every level shift. With
``level_alpha`` set, the stage instead keeps a Holt-Winters-style additive model::

    expected = level + profile[slot] (+ week[day of week], with week=True)

the level learned every tick (a plain average from the start or the last ``rebase``,
then an EWMA of weight ``level_alpha``), the profile as each slot's deviation from it,
and the optional weekly term (input ``week_slot``, 0 = Monday; :func:`week_slot_of`)
as each weekday's deviation from both. The residual ``count - expected`` is judged
against ``max(slot variance, shared residual variance)``: the shared one learns from
every tick, so a profile of 96 slots is usable after ``min_seen`` days instead of
``min_seen`` visits plus weeks of per-slot variance. A ``rebase`` input (boolean per
station, e.g. a CUSUM alarm) restarts the level, so a flagged level shift is absorbed
in a few ticks while the daily shape is kept. Irregular sampling and gaps need nothing
special: the slot comes from each tick's own time.

Updates are robust in both modes: a value beyond ``huber`` standard deviations updates
the model winsorised (departing ticks learn ten times slower as well), and a
non-finite value is skipped, so one wild value never poisons the profile.

State is fixed-size: ``(..., stations, slots_per_day)`` float32 arrays for the count
seen, mean and variance of each slot (float32 halves the cost of a 96-slot profile;
counts need no more precision) plus the departure run length per station.

Inputs: ``count`` ``(..., stations)`` and ``slot`` — integer slot of this tick,
broadcastable to ``count`` (a scalar when all stations share one clock, which is the
usual case). :func:`slot_of` computes it from a unix time.

Examples
--------
>>> import numpy as np
>>> slot_of(np.array([0.0, 3599.0, 3600.0, 86_399.0, 86_400.0]), 24).tolist()
[0, 0, 1, 23, 0]
>>> det = PeriodicityDetector(slots_per_day=4, min_seen=2, min_ticks=2)
>>> state = det.init_state((1,))
>>> day = [2.0, 20.0, 20.0, 2.0]  # busy in slots 1 and 2, quiet in 0 and 3
>>> for _ in range(5):
...     for slot, c in enumerate(day):
...         out = det.step(state, {"count": np.array([c]), "slot": slot})
>>> odd = [20.0, 2.0, 2.0, 20.0]  # busy and quiet slots swap places
>>> outs = [det.step(state, {"count": np.array([c]), "slot": s}) for s, c in enumerate(odd)]
>>> [round(float(o["periodicity_z"][0]), 1) for o in outs]
[12.7, -4.0, -4.0, 12.7]
>>> [bool(o["periodicity_break"][0]) for o in outs]
[False, True, True, True]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_fraction,
    check_int_min,
    check_positive,
    ewma_update,
)

SECONDS_PER_DAY = 86_400.0


def slot_of(time_s: npt.ArrayLike, slots_per_day: int, *,
            utc_offset_s: float = 0.0) -> npt.NDArray[np.int64]:
    """Slot of the day (``0 .. slots_per_day - 1``) for unix time(s) ``time_s``.

    Slots are equal divisions of the day starting at midnight UTC, shifted by
    ``utc_offset_s`` to follow a local day (e.g. ``-5 * 3600`` for New York winter time).

    Examples
    --------
    >>> slot_of(12 * 3600.0, 96).tolist(), slot_of(0.0, 24, utc_offset_s=-3600.0).tolist()
    (48, 23)
    """
    if isinstance(slots_per_day, bool) or not isinstance(slots_per_day, int | np.integer) \
            or slots_per_day < 1:
        raise ValueError(f"slots_per_day must be an integer >= 1, got {slots_per_day!r}")
    t = np.asarray(time_s, dtype=np.float64) + utc_offset_s
    if not np.all(np.isfinite(t)):
        raise ValueError("time_s must be finite unix seconds")
    day_fraction = np.mod(t, SECONDS_PER_DAY) / SECONDS_PER_DAY
    # the min() guards the float edge where mod() rounds up to exactly one day
    return np.minimum((day_fraction * slots_per_day).astype(np.int64), slots_per_day - 1)


def week_slot_of(time_s: npt.ArrayLike, *, utc_offset_s: float = 0.0) -> npt.NDArray[np.int64]:
    """Day of the week (0 = Monday .. 6 = Sunday) of unix time(s) ``time_s``.

    >>> week_slot_of(np.array([0.0, 4 * 86_400.0])).tolist()  # 1970-01-01 was a Thursday
    [3, 0]
    """
    t = np.asarray(time_s, dtype=np.float64) + utc_offset_s
    if not np.all(np.isfinite(t)):
        raise ValueError("time_s must be finite unix seconds")
    out: npt.NDArray[np.int64] = ((np.floor(t / SECONDS_PER_DAY).astype(np.int64) + 3) % 7)
    return out


class PeriodicityDetector(Stage):
    """Departure of the per-tick count from a learned per-slot daily profile.

    Parameters
    ----------
    slots_per_day
        Number of slots the day is divided into (24 = hourly, 96 = quarter-hourly).
    alpha
        EWMA weight of a slot's mean and variance per visit (``1/seen`` while the
        slot is younger than ``1/alpha`` visits, so a fresh profile is a plain average).
    threshold
        ``|periodicity_z|`` at or above which a tick departs from the profile.
    min_ticks
        Consecutive departing ticks before ``periodicity_break`` is true.
    min_seen
        Visits of a slot before its ticks are judged (``periodicity_z`` is 0 before).
    var_floor
        Smallest noise variance (counts²), so a slot that is always empty does not make
        a single event look infinitely unusual.
    level_alpha
        0 (default): each slot keeps an absolute mean. Above 0: the level-plus-profile
        model (module docstring), the level's EWMA weight per tick.
    week
        Add a day-of-week term (needs ``level_alpha > 0`` and the ``week_slot`` input).
    week_alpha
        EWMA weight per tick of a weekday's term (a plain average while younger).
    rel_var
        The noise variance is also at least ``(rel_var * |level|)²``.
    huber
        Winsorising bound of an update, in standard deviations.
    min_rows
        Level-plus-profile model only: after this many ticks (0 = never), a tick whose
        slot is not yet trusted is judged against the level alone, with the variance of
        every residual so far, so a series shorter than ``min_seen`` days is still judged.
    """

    name = "periodicity"

    def __init__(self, slots_per_day: int = 24, alpha: float = 0.1, threshold: float = 4.0,
                 min_ticks: int = 2, min_seen: int = 3, var_floor: float = 1.0,
                 poisson_floor: bool = True, level_alpha: float = 0.0, week: bool = False,
                 week_alpha: float = 0.005, rel_var: float = 0.0, huber: float = 4.0,
                 min_rows: int = 0) -> None:
        if isinstance(slots_per_day, bool) or not isinstance(slots_per_day, int) \
                or not 1 <= slots_per_day <= 1440:
            raise ValueError(f"slots_per_day must be an integer in [1, 1440], got {slots_per_day!r}")
        check_fraction("alpha", alpha)
        check_positive("threshold", threshold)
        check_positive("var_floor", var_floor)
        check_int_min("min_ticks", min_ticks, 1)
        check_int_min("min_seen", min_seen, 1)
        self.slots_per_day = slots_per_day
        self.alpha = alpha
        self.threshold = threshold
        self.min_ticks = min_ticks
        self.min_seen = min_seen
        self.var_floor = var_floor
        # off for arbitrary values (not counts): then only var_floor bounds the noise
        self.poisson_floor = poisson_floor
        if not 0.0 <= level_alpha <= 1.0:
            raise ValueError(f"level_alpha must be in [0, 1], got {level_alpha!r}")
        if week and level_alpha <= 0:
            raise ValueError("week=True needs level_alpha > 0 (the weekly term is a deviation "
                             "from the level)")
        check_fraction("week_alpha", week_alpha)
        check_positive("rel_var", rel_var, allow_zero=True)
        check_positive("huber", huber)
        check_int_min("min_rows", min_rows, 0)
        self.min_rows = min_rows
        self.level_alpha = level_alpha
        self.week = week
        self.week_alpha = week_alpha
        self.rel_var = rel_var
        self.huber = huber

    def state_spec(self) -> Spec:
        s = (self.slots_per_day,)
        spec: dict[str, tuple[Any, ...]] = {
            "seen": (s, 0.0, np.float32),
            "mu": (s, 0.0, np.float32),
            "var": (s, 0.0, np.float32),
            "run": ((), 0.0),
        }
        if self.level_alpha > 0:
            # ticks since start or rebase, level, shared residual variance (float64: the
            # level of a large-valued series needs the precision)
            # and the variance of every residual, trusted slot or not (``min_rows``)
            spec.update({"n": ((), 0.0), "level": ((), 0.0), "res_var": ((), 0.0),
                         "rows": ((), 0.0), "all_var": ((), 0.0)})
        if self.week:
            spec.update({"wk_seen": ((7,), 0.0), "wk": ((7,), 0.0)})
        return spec

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        count = np.asarray(inputs["count"], dtype=np.float64)
        slot = self._check_slot(inputs["slot"], self.slots_per_day, "slot")
        with np.errstate(all="ignore"):
            if self.level_alpha > 0:
                week = None
                if self.week:
                    if "week_slot" not in inputs:
                        raise ValueError("week=True needs the week_slot input (0 = Monday .. 6)")
                    week = self._check_slot(inputs["week_slot"], 7, "week_slot")
                return self._step_level(state, count, slot, week, inputs.get("rebase"))
            return self._step_profile(state, count, slot)

    @staticmethod
    def _check_slot(raw: Array, n_slots: int, name: str) -> Array:
        slot = np.asarray(raw)
        if not np.issubdtype(slot.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array, got dtype {slot.dtype}")
        if slot.size:
            lo, hi = (int(slot), int(slot)) if slot.ndim == 0 else (int(slot.min()), int(slot.max()))
            if lo < 0 or hi >= n_slots:
                raise ValueError(f"{name} must be in [0, {n_slots}), got values in [{lo}, {hi}]")
        return slot

    @staticmethod
    def _gather(arr: Array, slot: Array, shape: tuple[int, ...]) -> tuple[Array, Array | None]:
        if slot.ndim == 0:
            return arr[..., int(slot)].astype(np.float64), None
        idx = np.broadcast_to(slot, shape)[..., None]
        return np.take_along_axis(arr, idx, -1)[..., 0].astype(np.float64), idx

    @staticmethod
    def _scatter(arr: Array, slot: Array, idx: Array | None, value: Array) -> None:
        if idx is None:
            arr[..., int(slot)] = value
        else:
            np.put_along_axis(arr, idx, value[..., None], -1)

    @staticmethod
    def _centre(terms: Array, delta: Array) -> Array:
        """Shift ``terms`` by ``-delta / len`` (in place); return what the level gains."""
        share: Array = delta / terms.shape[-1]
        terms -= share[..., None].astype(terms.dtype)
        return share

    def _step_level(self, state: ArrayState, raw: Array, slot: Array, week: Array | None,
                    rebase: Array | None) -> Outputs:
        shape = raw.shape
        n, level, res_var, run = state["n"], state["level"], state["res_var"], state["run"]
        seen, idx = self._gather(state["seen"], slot, shape)
        prof, _ = self._gather(state["mu"], slot, shape)
        svar, _ = self._gather(state["var"], slot, shape)
        wseen = wk = np.zeros(shape)
        widx = None
        if week is not None:
            wseen, widx = self._gather(state["wk_seen"], week, shape)
            wk, _ = self._gather(state["wk"], week, shape)
        if rebase is not None:
            n[...] = np.where(np.asarray(rebase, bool), 0.0, n)
        finite = np.isfinite(raw)
        fresh = n < 1
        seasonal = np.where(seen > 0, prof, 0.0) + np.where(wseen > 0, wk, 0.0)
        # a fresh or rebased level starts from this tick (minus what the season explains)
        expected = np.where(fresh & finite, raw - seasonal, level) + seasonal
        x = np.where(finite, raw, expected)
        r = x - expected
        rel = self.rel_var * level
        floor = self.var_floor + rel * rel
        trusted = seen >= self.min_seen
        noise = np.maximum(np.maximum(res_var, svar), floor)
        z = np.where(trusted & finite, r / np.sqrt(noise), 0.0)
        # before its slot is trusted, a tick can still be judged against the level alone
        all_var, rows = state["all_var"], state["rows"]
        r_level = x - level
        noise_level = np.maximum(all_var, floor)
        by_level = ~trusted & (rows >= self.min_rows) & (self.min_rows > 0) & finite
        z = np.where(by_level, r_level / np.sqrt(noise_level), z)
        noise = np.where(by_level, noise_level, noise)
        judged = (trusted & finite) | by_level
        departs = np.abs(z) >= self.threshold
        run[...] = np.where(departs, run + 1.0, 0.0)
        brk = run >= self.min_ticks

        # winsorised updates: one wild tick moves every term by a bounded step
        bound = self.huber * np.sqrt(noise)
        rc = np.where(judged, np.clip(r, -bound, bound), r)
        slow = np.where(departs, 0.1, 1.0) * finite
        n += finite
        a_level = np.maximum(self.level_alpha, 1.0 / np.maximum(n, 1.0)) * slow
        new_level = np.where(fresh, x - seasonal, level + a_level * rc)
        # the slot's deviation from the level, learned from what the level did not explain
        seen_new = seen + finite
        a_slot = np.maximum(self.alpha, 1.0 / np.maximum(seen_new, 1.0)) * slow
        dev = x - new_level - np.where(wseen > 0, wk, 0.0)
        dev = np.where(judged, np.clip(dev, prof - bound, prof + bound), dev)
        prof_new = np.where(seen > 0, prof + a_slot * (dev - prof), np.where(finite, dev, prof))
        # variances only from slots already seen: a first visit's residual is the
        # unlearned season, not noise
        known = (seen > 0) & finite
        a_var = np.maximum(self.alpha, 1.0 / np.maximum(seen, 1.0)) * slow
        svar_new = np.where(known, svar + a_var * (rc * rc - svar), svar)
        n_res = state["seen"].sum(-1)
        a_res = np.maximum(self.level_alpha, 1.0 / np.maximum(n_res, 1.0)) * slow
        res_var[...] = np.where(known, res_var + a_res * (rc * rc - res_var), res_var)
        rows += finite
        a_all = np.maximum(self.level_alpha, 1.0 / np.maximum(rows, 1.0)) * slow
        lb = self.huber * np.sqrt(noise_level)
        rl = np.where(rows > self.min_rows, np.clip(r_level, -lb, lb), r_level)
        all_var[...] = np.where(finite & (rows > 1), all_var + a_all * (rl * rl - all_var), all_var)
        self._scatter(state["seen"], slot, idx, seen_new)
        self._scatter(state["mu"], slot, idx, prof_new)
        self._scatter(state["var"], slot, idx, svar_new)
        # keep the profile (and the weekly term) centred on zero, moving their mean into
        # the level: every other slot's expectation is unchanged, and the terms cannot
        # drift against the level (a weekday's term, visited once a week, would go stale)
        new_level = new_level + self._centre(state["mu"], prof_new - prof)
        if week is not None:
            wseen_new = wseen + finite
            a_w = np.maximum(self.week_alpha, 1.0 / np.maximum(wseen_new, 1.0)) * slow
            wdev = x - new_level - prof_new
            wdev = np.where(judged, np.clip(wdev, wk - bound, wk + bound), wdev)
            wk_new = np.where(finite, wk + a_w * (wdev - wk), wk)
            self._scatter(state["wk_seen"], week, widx, wseen_new)
            self._scatter(state["wk"], week, widx, wk_new)
            new_level = new_level + self._centre(state["wk"], wk_new - wk)
        level[...] = new_level
        return {"periodicity_z": z, "periodicity_break": brk, "periodicity_run": run.copy(),
                "periodicity_expected": expected, "periodicity_var": noise,
                "periodicity_judged": judged, "periodicity_trusted": trusted & finite,
                "periodicity_residual": np.where(finite, r, 0.0), "periodicity_seasonal": seasonal}

    def _step_profile(self, state: ArrayState, raw: Array, slot: Array) -> Outputs:
        run = state["run"]
        # one slot for every station (the usual case: a tick has one time of day)
        seen, idx = self._gather(state["seen"], slot, raw.shape)
        mu, _ = self._gather(state["mu"], slot, raw.shape)
        var, _ = self._gather(state["var"], slot, raw.shape)
        finite = np.isfinite(raw)
        count = np.where(finite, raw, mu)
        judged = (seen >= self.min_seen) & finite
        noise = np.maximum(np.maximum(var, mu) if self.poisson_floor else var, self.var_floor)
        z = np.where(judged, (count - mu) / np.sqrt(noise), 0.0)
        departs = np.abs(z) >= self.threshold
        run[...] = np.where(departs, run + 1.0, 0.0)
        brk = run >= self.min_ticks

        seen_new = seen + finite
        a = np.maximum(self.alpha, 1.0 / np.maximum(seen_new, 1.0))
        a = np.where(departs, a * 0.1, a) * finite
        # a departing tick learns slowly; a wild one (beyond `huber` sd) is also winsorised
        bound = np.where(departs, 1000.0, self.huber) * np.sqrt(noise)
        x_upd = np.where(judged, np.clip(count, mu - bound, mu + bound), count)
        mu_new, var_new = ewma_update(mu, var, x_upd, a)
        self._scatter(state["seen"], slot, idx, seen_new)
        self._scatter(state["mu"], slot, idx, mu_new)
        self._scatter(state["var"], slot, idx, var_new)
        return {"periodicity_z": z, "periodicity_break": brk, "periodicity_run": run.copy(),
                "periodicity_expected": mu, "periodicity_var": var, "periodicity_judged": judged}

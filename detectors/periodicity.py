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
    """

    name = "periodicity"

    def __init__(self, slots_per_day: int = 24, alpha: float = 0.1, threshold: float = 4.0,
                 min_ticks: int = 2, min_seen: int = 3, var_floor: float = 1.0,
                 poisson_floor: bool = True) -> None:
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

    def state_spec(self) -> Spec:
        s = (self.slots_per_day,)
        return {
            "seen": (s, 0.0, np.float32),
            "mu": (s, 0.0, np.float32),
            "var": (s, 0.0, np.float32),
            "run": ((), 0.0),
        }

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        count = np.asarray(inputs["count"], dtype=np.float64)
        slot = np.asarray(inputs["slot"])
        if not np.issubdtype(slot.dtype, np.integer):
            raise ValueError(f"slot must be an integer array, got dtype {slot.dtype}")
        if slot.size:
            lo, hi = (int(slot), int(slot)) if slot.ndim == 0 else (int(slot.min()), int(slot.max()))
            if lo < 0 or hi >= self.slots_per_day:
                raise ValueError(f"slot must be in [0, {self.slots_per_day}), got values in "
                                 f"[{lo}, {hi}]")
        seen_all, mu_all, var_all, run = state["seen"], state["mu"], state["var"], state["run"]
        # one slot for every station (the usual case: a tick has one time of day)
        scalar = slot.ndim == 0
        k = int(slot) if scalar else 0
        idx = None if scalar else np.broadcast_to(slot, count.shape)[..., None]
        if idx is None:
            seen = seen_all[..., k].astype(np.float64)
            mu = mu_all[..., k].astype(np.float64)
            var = var_all[..., k].astype(np.float64)
        else:
            seen = np.take_along_axis(seen_all, idx, -1)[..., 0].astype(np.float64)
            mu = np.take_along_axis(mu_all, idx, -1)[..., 0].astype(np.float64)
            var = np.take_along_axis(var_all, idx, -1)[..., 0].astype(np.float64)

        judged = seen >= self.min_seen
        noise = np.maximum(np.maximum(var, mu) if self.poisson_floor else var, self.var_floor)
        z = np.where(judged, (count - mu) / np.sqrt(noise), 0.0)
        departs = np.abs(z) >= self.threshold
        run[...] = np.where(departs, run + 1.0, 0.0)
        brk = run >= self.min_ticks

        seen += 1.0
        a = np.maximum(self.alpha, 1.0 / seen)
        a = np.where(departs, a * 0.1, a)
        mu_new, var_new = ewma_update(mu, var, count, a)
        if idx is None:
            seen_all[..., k] = seen
            mu_all[..., k] = mu_new
            var_all[..., k] = var_new
        else:
            np.put_along_axis(seen_all, idx, seen[..., None], -1)
            np.put_along_axis(mu_all, idx, mu_new[..., None], -1)
            np.put_along_axis(var_all, idx, var_new[..., None], -1)
        return {"periodicity_z": z, "periodicity_break": brk, "periodicity_run": run.copy(),
                "periodicity_expected": mu, "periodicity_var": var, "periodicity_judged": judged}

"""The standard single-series interface: one ``timestamp,value`` stream in, a score in [0, 1] out.

Anomaly-detection benchmarks (NAB-style) hand a detector one series and read one score
per row. :class:`SingleSeriesDetector` runs the product's own stages on it, causally —
row ``t`` sees rows ``0..t`` only:

* two-sided **burst** charts (EWMA control charts on the value and on its negation),
* **CUSUM** change points in level and variance (half weight: a corroborator),
* **periodicity**: departure from the learned daily profile (slot of day from the
  timestamp),
* the **HMM regime** filter, when a trained regime model is given,

all with the Poisson floor off, since values are not counts. The evidence (in
baseline standard deviations) is fused as in the node-state machine — the strongest
signal plus half of the second strongest — and mapped to a score::

    anomaly_score = 1 - exp(-max(0, evidence - 2) / 3)

so 2 sd or less scores 0, 4 sd about 0.49, 8 sd about 0.86. The first
``warmup_ticks`` rows score 0 while the baselines learn.

Vectorised over trailing series: values of shape ``(series,)`` per step.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(50.0, 1.0, 300); x[200:204] += 12.0
>>> scores = SingleSeriesDetector().score_series(x, np.arange(300) * 60.0)
>>> int(np.argmax(scores)) in range(200, 206), float(scores[:190].max()) < 0.5
(True, True)
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
from convergence.detectors.periodicity import PeriodicityDetector, slot_of
from convergence.detectors.regime import RegimeFilter
from convergence.detectors.regime_features import RegimeFeatures


def evidence_to_score(evidence: Array) -> Array:
    """Map fused evidence (sd) to an anomaly score in [0, 1]."""
    out: Array = 1.0 - np.exp(-np.maximum(np.asarray(evidence, np.float64) - 2.0, 0.0) / 3.0)
    return out


class SingleSeriesDetector:
    """The detector stack for arbitrary-valued series (see module docstring)."""

    def __init__(self, *, warmup_ticks: int = 20, slots_per_day: int = 24,
                 regime: RegimeFilter | None = None, regime_kind: str = "price",
                 regime_vol_window: int = 10, corroboration: float = 0.5) -> None:
        check_int_min("warmup_ticks", warmup_ticks, 2)
        check_unit_interval("corroboration", corroboration)
        self.warmup_ticks = warmup_ticks
        self.slots_per_day = slots_per_day
        self.corroboration = corroboration
        kw: dict[str, Any] = {"poisson_floor": False}
        self.up = BurstDetector(alpha=0.02, min_ticks=1, warmup_ticks=warmup_ticks, **kw)
        self.down = BurstDetector(alpha=0.02, min_ticks=1, warmup_ticks=warmup_ticks, **kw)
        # a Gaussian series trips a k=0.5, h=5 CUSUM every few hundred rows; a wider chart
        # at half weight keeps it a corroborator of slow shifts, not a source of alarms
        self.cusum = CusumDetector(warmup_ticks=warmup_ticks, k=0.75, h=8.0, var_floor=1e-12, **kw)
        # a slot's profile needs a few dozen rows before its variance means anything
        self.periodicity = PeriodicityDetector(slots_per_day=slots_per_day, var_floor=1e-12,
                                               min_seen=30, **kw)
        self.regime = regime
        self.regime_features = RegimeFeatures(regime_kind, regime_vol_window) if regime else None

    def init_state(self, shape: tuple[int, ...] = (1,)) -> dict[str, ArrayState]:
        st = {"up": self.up.init_state(shape), "down": self.down.init_state(shape),
              "cusum": self.cusum.init_state(shape),
              "periodicity": self.periodicity.init_state(shape)}
        if self.regime is not None and self.regime_features is not None:
            st["regime_features"] = self.regime_features.init_state(shape)
            st["regime"] = self.regime.init_state(shape)
        return st

    def step(self, state: dict[str, ArrayState], value: Array, slot: int) -> dict[str, Array]:
        """One row: returns ``anomaly_score``, ``evidence`` and the parts behind it."""
        v = np.asarray(value, np.float64)
        parts = {
            "burst_up": self.up.step(state["up"], {"count": v})["burst_z"],
            "burst_down": self.down.step(state["down"], {"count": -v})["burst_z"],
            "change": 0.5 * self.cusum.step(state["cusum"], {"count": v})["cusum_z"],
            "periodicity": 0.8 * np.abs(self.periodicity.step(
                state["periodicity"], {"count": v, "slot": np.asarray(slot)})["periodicity_z"]),
        }
        if self.regime is not None and self.regime_features is not None:
            feats = self.regime_features.step(state["regime_features"], {"value": v})["features"]
            parts["regime"] = self.regime.step(state["regime"], {"features": feats})["regime_z"]
        evidence, _ = fuse_top2([np.maximum(p, 0.0) for p in parts.values()], self.corroboration)
        return {"anomaly_score": evidence_to_score(evidence), "evidence": evidence, **parts}

    def score_series(self, values: npt.ArrayLike, timestamps_s: npt.ArrayLike) -> Array:
        """Scores for a whole series, computed causally row by row."""
        v = np.asarray(values, np.float64)
        t = np.asarray(timestamps_s, np.float64)
        if v.shape != t.shape or v.ndim != 1:
            raise ValueError(f"values and timestamps must be 1-D and equally long, got {v.shape}, {t.shape}")
        state = self.init_state((1,))
        slots = slot_of(t, self.slots_per_day)
        out = np.zeros(v.shape[0])
        for i in range(v.shape[0]):
            out[i] = self.step(state, v[i:i + 1], int(slots[i]))["anomaly_score"][0]
        return out

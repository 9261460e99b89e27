"""Station evidence: what the first stage hands the second, per station and closed tick.

The tick processor runs in two stages (see :mod:`convergence.detectors.processor`):
the *station* stage (entropy, burst, CUSUM, periodicity, trend, scale, regime: each station's own
cells) and the *region* stage (topic agreement, temporal patterns, node states, the
meter, responses: a region's stations together). Between them crosses one small record
per station and tick, the fields below. In a cluster it crosses a Kafka topic; in one
process it is handed over in memory; either way it is first *settled*:

* values are rounded to float32 (what the wire carries, so both ways agree to the bit);
* a station whose every z is below :func:`evidence_floor` and which raised no pattern
  flag is *at baseline*: its evidence is zero. The floor is set so such a station's
  fused node evidence stays below the node machine's ``calm_at`` whatever the weights:
  it could not change its node state, so nothing needs to be sent for it (the cluster
  sends only active stations; most station-ticks are at baseline).

Pure numpy; no I/O.

Examples
--------
>>> import numpy as np
>>> ev = {"burst_z": np.array([0.4, 5.0]), "concentration_z": np.array([1.0, 0.0]),
...       "cusum_z": np.zeros(2), "periodicity_z": np.zeros(2), "regime_z": np.zeros(2),
...       "trend_z": np.zeros(2), "scale_z": np.zeros(2),
...       "concentration_bin": np.array([3, 3]), "burst": np.array([False, True]),
...       "change_level": np.zeros(2, bool), "change_variance": np.zeros(2, bool),
...       "periodicity_break": np.zeros(2, bool)}
>>> settled, active = settle(ev, floor=1.33)
>>> active.tolist(), settled["burst_z"].tolist(), settled["concentration_bin"].tolist()
([False, True], [0.0, 5.0], [0, 3])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array
from convergence.detectors.node_state import NodeStateMachine

__all__ = ["EVIDENCE_FLAGS", "EVIDENCE_Z", "evidence_floor", "evidence_scale", "keep_evidence",
           "settle"]

#: the evidence a station sends, in standard deviations above its own baseline (the
#: trend and scale charts' came later: a record is the first five, the category bin, the
#: flags and the regime, then these two, so a record from before them still reads)
EVIDENCE_Z = ("burst_z", "concentration_z", "cusum_z", "periodicity_z", "regime_z",
              "trend_z", "scale_z")
#: the events the temporal-pattern matcher listens to
EVIDENCE_FLAGS = ("burst", "change_level", "change_variance", "periodicity_break")


def evidence_floor(node: NodeStateMachine) -> float:
    """Below this in every input a station's fused evidence stays under ``calm_at``.

    Fused evidence is the strongest weighted input plus ``corroboration`` times the
    second, each at most ``max weight x input``: with every input under the floor it is
    under ``(1 + corroboration) x max weight x floor = calm_at``.

    >>> round(evidence_floor(NodeStateMachine()), 3)
    1.333
    """
    w = max(max(node.weights.values()), 1e-9)
    return float(node.calm_at / ((1.0 + node.corroboration) * w))


def evidence_scale(node: NodeStateMachine) -> dict[str, float]:
    """How much the trend and scale z count against :func:`evidence_floor`: their node
    weight over the largest. Below ``floor / scale`` they cannot lift the fused evidence
    to ``calm_at`` either (at weight 0.3 they would otherwise make about a third more
    station-ticks active, and send them, in the seed-11 world).

    >>> evidence_scale(NodeStateMachine(weights={"trend": 0.3, "scale": 0.5}))
    {'trend_z': 0.3, 'scale_z': 0.5}
    """
    w = max(max(node.weights.values()), 1e-9)
    return {"trend_z": node.weights["trend"] / w, "scale_z": node.weights["scale"] / w}


def settle(ev: Mapping[str, Array], floor: float, scale: Mapping[str, float] | None = None
           ) -> tuple[dict[str, Array], npt.NDArray[np.bool_]]:
    """Station evidence as it crosses to the region stage: float32 values, zero at baseline.

    Returns the settled evidence (the same keys) and the mask of active stations (those
    the cluster sends). ``scale`` weighs a z against the floor (default 1): an input the
    node machine weighs at a fraction of the largest weight (:func:`evidence_scale`)
    makes a station active only once it could matter. Vectorised over leading axes.
    """
    sc = scale or {}
    z = np.stack([np.asarray(ev[k], np.float64) * sc.get(k, 1.0) for k in EVIDENCE_Z])
    flags = np.zeros(z.shape[1:], bool)
    for k in EVIDENCE_FLAGS:
        flags |= np.asarray(ev[k], bool)
    active: npt.NDArray[np.bool_] = (z.max(0) >= floor) | flags
    out: dict[str, Array] = {}
    for k in EVIDENCE_Z:
        v = np.asarray(ev[k], np.float64).astype(np.float32).astype(np.float64)
        out[k] = np.where(active, np.where(np.isfinite(v), v, 0.0), 0.0)
    out["concentration_bin"] = np.where(active, np.asarray(ev["concentration_bin"], np.int64), 0)
    for k in EVIDENCE_FLAGS:
        out[k] = np.asarray(ev[k], bool) & active
    if "regime" in ev:
        out["regime"] = np.where(active, np.asarray(ev["regime"], np.int64), 0)
    return out, active


def keep_evidence(settled: Mapping[str, Array], keep: npt.NDArray[np.bool_]
                  ) -> tuple[dict[str, Array], npt.NDArray[np.bool_]]:
    """Settled evidence with the stations outside ``keep`` at baseline (zero), and the
    new active mask.

    >>> import numpy as np
    >>> ev = {k: np.array([2.0, 3.0]) for k in EVIDENCE_Z}
    >>> ev |= {k: np.array([True, True]) for k in EVIDENCE_FLAGS}
    >>> ev["concentration_bin"] = np.array([4, 5])
    >>> out, active = keep_evidence(ev, np.array([True, False]))
    >>> out["burst_z"].tolist(), out["burst"].tolist(), active.tolist()
    ([2.0, 0.0], [True, False], [True, False])
    """
    keep = np.asarray(keep, bool)
    out: dict[str, Array] = {}
    for k, v in settled.items():
        a = np.asarray(v)
        out[k] = np.where(keep, a, np.zeros((), a.dtype))
    return out, keep.copy()

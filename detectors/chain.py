"""The detector chain: closed tick cells in, node verdicts and a meter reading out.

One object wires the stages in their fixed order — entropy, burst, node state,
convergence meter — and owns nothing but their configuration. Its state is a dict
of each stage's :class:`~convergence.detectors.base.ArrayState`, so the embedded
runtime, a Faust worker and the Monte Carlo simulator (leading ``runs`` axis) all call
the very same :meth:`DetectorChain.step`.

Examples
--------
>>> import numpy as np
>>> chain = DetectorChain()
>>> meta = StationMeta(kind_idx=np.array([0, 1, 4]), group_idx=np.arange(3),
...                    region_idx=np.zeros(3, int))
>>> state = chain.init_state((3,))
>>> rng = np.random.default_rng(0)
>>> for t in range(30):
...     counts = rng.poisson(3.0, 3).astype(float)
...     if t >= 20:
...         counts *= 8
...     hist = np.zeros((3, 16)); hist[:, 0] = counts
...     out = chain.step(state, {"count": counts, "hist": hist}, meta)
>>> LEVELS[int(out["meter"]["level"])]  # three independent kinds at once
'warning'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array, ArrayState
from convergence.detectors.burst import BurstDetector
from convergence.detectors.entropy import EntropyDetector
from convergence.detectors.meter import LEVELS, ConvergenceMeter
from convergence.detectors.node_state import ANOMALOUS, NodeStateMachine

__all__ = ["LEVELS", "ChainState", "DetectorChain", "StationMeta"]

ChainState = dict[str, ArrayState]


@dataclass
class StationMeta:
    """Per-station facts the meter needs (positions match the state's station axis)."""

    kind_idx: npt.NDArray[np.int64]
    group_idx: npt.NDArray[np.int64]
    region_idx: npt.NDArray[np.int64]
    quarantined: npt.NDArray[np.bool_] | None = None
    threshold_scale: npt.NDArray[np.float64] | None = None

    @classmethod
    def from_registry(cls, registry: Any, quarantined: Array | None = None,
                      threshold_scale: Array | None = None) -> StationMeta:
        return cls(registry.kind_idx, registry.group_idx, registry.region_idx, quarantined,
                   threshold_scale)


class DetectorChain:
    """Entropy → burst → node state → meter, stepped one tick at a time."""

    def __init__(self, entropy: EntropyDetector | None = None, burst: BurstDetector | None = None,
                 node: NodeStateMachine | None = None, meter: ConvergenceMeter | None = None) -> None:
        self.entropy = entropy or EntropyDetector()
        self.burst = burst or BurstDetector()
        self.node = node or NodeStateMachine()
        self.meter = meter or ConvergenceMeter(enter_at=self.node.enter_at)

    @property
    def stages(self) -> tuple[Any, ...]:
        return (self.entropy, self.burst, self.node, self.meter)

    def init_state(self, shape: tuple[int, ...]) -> ChainState:
        """Fresh state for leading shape ``(..., stations)``."""
        return {s.name: s.init_state(shape) for s in self.stages}

    def grow(self, state: ChainState, n_stations: int) -> None:
        """Widen every per-station state to ``n_stations`` (a station appeared)."""
        for s in self.stages[:-1]:
            st = state[s.name]
            if st.shape[-1] < n_stations:
                st.grow(n_stations, s.init_state(st.shape[:-1] + (n_stations,)))

    def seed_baselines(self, state: ChainState, expected_counts: Array) -> None:
        """Start activity baselines at known per-tick rates (``<= 0`` = unknown, learn it).

        A fleet that declares its stations' background rates needs no warm-up for the
        burst and activity signals; the category-entropy baseline still learns.
        """
        known = np.asarray(expected_counts, dtype=np.float64) > 0
        exp = np.where(known, expected_counts, 0.0)
        b = state[self.burst.name]
        b["mu"][...] = np.where(known, exp, b["mu"])
        b["var"][...] = np.where(known, np.maximum(exp, 1.0), b["var"])
        b["fast"][...] = np.where(known, exp, b["fast"])
        b["n"][...] = np.where(known, np.maximum(b["n"], self.burst.warmup_ticks), b["n"])
        e = state[self.entropy.name]
        e["c_mu"][...] = np.where(known, exp, e["c_mu"])
        e["c_var"][...] = np.where(known, np.maximum(exp, 1.0), e["c_var"])
        e["n"][...] = np.where(known, np.maximum(e["n"], self.entropy.warmup_ticks), e["n"])

    def nbytes_per_station(self, state: ChainState) -> int:
        return sum(state[s.name].nbytes_per_station() for s in self.stages[:-1])

    def step(self, state: ChainState, cells: Mapping[str, Array], meta: StationMeta) -> dict[str, Any]:
        """Advance one tick for every station (and every leading index)."""
        anomalous = state[self.node.name]["state"] == ANOMALOUS
        ent = self.entropy.step(state[self.entropy.name],
                                {"count": cells["count"], "hist": cells["hist"],
                                 "anomalous": anomalous})
        bur = self.burst.step(state[self.burst.name], {"count": cells["count"]})
        node_in: dict[str, Array] = {"burst_z": bur["burst_z"],
                                     "entropy_drop_z": ent["entropy_drop_z"]}
        for extra in ("regime_z", "pattern_z"):
            if extra in cells:
                node_in[extra] = cells[extra]
        if meta.quarantined is not None:
            node_in["quarantined"] = meta.quarantined
        if meta.threshold_scale is not None:
            node_in["threshold_scale"] = meta.threshold_scale
        node = self.node.step(state[self.node.name], node_in)
        meter_in: dict[str, Array] = {"since": node["since"], "peak": node["peak"],
                                      "kind_idx": meta.kind_idx, "group_idx": meta.group_idx,
                                      "region_idx": meta.region_idx}
        if meta.quarantined is not None:
            meter_in["quarantined"] = meta.quarantined
        reading = self.meter.step(state[self.meter.name], meter_in)
        return {"entropy": ent, "burst": bur, "node": node, "meter": reading}

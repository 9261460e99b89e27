"""Adaptive responses as a stage: what the meter's readings make the system do.

The decisions (AXON, in the source documents) are a pure, vectorised stage with its
state in arrays, so a simulated run responds exactly as a live one does:

* a region's meter rises to **watch** → burst mode (sample fast) for the stations that
  count in it;
* rises to **warning** → burst mode for every station of the region and more sensitive
  node thresholds there (``sensitivity`` scales ``enter_at``/``strong_at``);
* rises to **converged** → escalate to the on-call analyst;
* a station that is the only anomalous one of its region for ``quarantine_after_ticks``
  ticks while the region's meter stays quiet → quarantine it (a noisy feed must not keep
  shouting); the node machine and the meter ignore it until the quarantine expires.
  Several stations anomalous together are never "lone": quarantining the first stage of
  a slow cascade (social media rising minutes before the news) hid 13 % of those
  convergences in the campaigns. A station whose source is *dark* (its agent's breaker
  open) is not shouting at all: it is anomalous only because it fell silent, so it is
  never a lone noisy feed. (Quarantining it kept a healthy station muted for ten
  minutes after a 30 s outage; in Las Vegas that silenced the only social station of a
  `shared-wire` convergence 80 s later and the convergence was missed.)

A person's ``quarantine`` or ``resume`` (from the command line or the dashboard) reaches
the same state through :meth:`ResponseStage.apply_manual`, so a manual resume lifts a
quarantine the stage imposed, and a manual quarantine holds the node machine and the
meter off that station like any other.

State per station (:meth:`state_spec`): ``q_until`` (quarantine expiry, event-time
seconds), ``lone_run`` (ticks anomalous alone), ``scale`` / ``scale_until`` (threshold
scale and its expiry), ``burst_until`` (burst mode expiry). :meth:`effects` reads what is
in force at a time; :meth:`step` decides this tick's responses and returns them as masks.
Turning masks into :class:`~convergence.control.ControlCommand` s is the live runtimes'
business (:mod:`convergence.responses.actions`); the simulator applies them to its sampling.

Examples
--------
>>> import numpy as np
>>> stage = ResponseStage(ResponsePolicy(quarantine_after_ticks=3))
>>> st = stage.init_state((2,))
>>> region = np.array([0, 0])
>>> def tick(t, node, level, prev):
...     return stage.step(st, {"node_state": np.array(node), "weights": np.array([1.0, 0.0]),
...                            "region_idx": region, "level": np.array([level]),
...                            "prev_level": np.array([prev]), "time_s": float(t)})
>>> [bool(tick(t, [2, 0], 0, 0)["quarantine"][0]) for t in range(3)]
[False, False, True]
>>> stage.effects(st, 3.0)[0].tolist()            # quarantined until 2 + 600 s
[True, False]
>>> out = tick(3, [2, 2], 2, 1)                   # the region rises to warning
>>> out["burst_regions"].tolist(), stage.effects(st, 4.0)[1].tolist()
([True], [0.8, 0.8])
>>> stage.apply_manual(st, resume=np.array([True, False]))   # a person resumed it
>>> stage.effects(st, 6.0)[0].tolist()
[False, False]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_int_min,
    check_positive,
)
from convergence.detectors.meter import CONVERGED, QUIET, WARNING, WATCH
from convergence.detectors.node_state import ANOMALOUS


@dataclass(frozen=True)
class ResponsePolicy:
    """Knobs of the adaptive responses (times in event-time seconds)."""

    burst_ttl_s: float = 120.0
    burst_interval_s: float = 0.25
    sensitivity: float = 0.8
    quarantine_after_ticks: int = 20
    quarantine_ttl_s: float = 600.0

    def __post_init__(self) -> None:
        check_positive("burst_ttl_s", self.burst_ttl_s)
        check_positive("burst_interval_s", self.burst_interval_s)
        check_positive("sensitivity", self.sensitivity)
        check_int_min("quarantine_after_ticks", self.quarantine_after_ticks, 1)
        check_positive("quarantine_ttl_s", self.quarantine_ttl_s)


class ResponseStage(Stage):
    """Decides adaptive responses from region levels and node states (module docstring)."""

    name = "responses"

    def __init__(self, policy: ResponsePolicy | None = None) -> None:
        self.policy = policy or ResponsePolicy()

    def state_spec(self) -> Spec:
        return {"q_until": ((), -np.inf), "lone_run": ((), 0, np.int32),
                "scale": ((), 1.0), "scale_until": ((), -np.inf),
                "burst_until": ((), -np.inf)}

    def effects(self, state: ArrayState, time_s: float | Array) -> tuple[Array, Array, Array]:
        """What is in force at ``time_s``: ``(quarantined, threshold_scale, bursting)`` per station."""
        t = np.asarray(time_s, np.float64)
        if t.ndim:
            t = t[..., None]
        quarantined = state["q_until"] > t
        scale = np.where(state["scale_until"] > t, state["scale"], 1.0)
        bursting = state["burst_until"] > t
        return quarantined, scale, bursting

    def apply_manual(self, state: ArrayState, *, quarantine_until: Array | None = None,
                     resume: Array | None = None) -> None:
        """A person's commands: quarantine stations until a time (NaN = no command), or
        resume them (lifts any quarantine and forgets their lone-run count)."""
        if quarantine_until is not None:
            mq = np.asarray(quarantine_until, np.float64)
            state["q_until"][...] = np.where(np.isnan(mq), state["q_until"], mq)
        if resume is not None:
            state["q_until"][...] = np.where(resume, -np.inf, state["q_until"])
            state["lone_run"][...] = np.where(resume, 0, state["lone_run"])

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        """This tick's responses.

        Inputs: ``node_state`` and ``weights`` ``(..., stations)``, ``region_idx``
        ``(stations,)``, ``level`` and ``prev_level`` ``(..., regions)``, ``time_s`` (the
        tick's end, scalar or ``(...)``), optional ``dark`` (bool per station: its source
        is dark, so it is never a lone noisy feed).

        Outputs: ``burst_stations`` (stations put in burst mode as their region rose to
        watch), ``burst_regions`` / ``escalate`` ``(..., regions)`` (rose to warning /
        converged), ``quarantine`` (stations quarantined as lone noisy feeds).
        """
        p = self.policy
        node, weights = inputs["node_state"], inputs["weights"]
        region = np.asarray(inputs["region_idx"], np.int64)
        level, prev = inputs["level"], inputs["prev_level"]
        t = np.asarray(inputs["time_s"], np.float64)
        t_st = t[..., None] if t.ndim else t
        rose_watch = (prev < WATCH) & (level >= WATCH)
        rose_warning = (prev < WARNING) & (level >= WARNING)
        escalate = (prev < CONVERGED) & (level >= CONVERGED)
        # per station: its region's rise (regions index the last axis)
        burst_stations = np.take(rose_watch, region, axis=-1) & (weights > 0)
        region_burst = np.take(rose_warning, region, axis=-1)
        until = t_st + p.burst_ttl_s
        state["burst_until"][...] = np.where(burst_stations | region_burst,
                                             np.maximum(state["burst_until"], until),
                                             state["burst_until"])
        state["scale"][...] = np.where(region_burst, p.sensitivity, state["scale"])
        state["scale_until"][...] = np.where(region_burst, until, state["scale_until"])
        # lone noisy stations: the only anomalous station of their region, while its meter
        # sees nothing worth a watch (several anomalous together - a viral storm, the first
        # stage of a cascade - are not noisy feeds, whatever the meter makes of them)
        anomalous = node == ANOMALOUS
        dark = inputs.get("dark")
        if dark is not None:
            anomalous = anomalous & ~np.asarray(dark, bool)
        n_reg = level.shape[-1]
        flat = anomalous.reshape(-1, anomalous.shape[-1])
        keys = (np.arange(flat.shape[0])[:, None] * n_reg + region[None, :]).ravel()
        per_region = np.bincount(keys, weights=flat.ravel().astype(np.float64),
                                 minlength=flat.shape[0] * n_reg).reshape(flat.shape[0], n_reg)
        alone = np.take_along_axis(per_region, np.broadcast_to(region, flat.shape), -1) == 1
        lone = (anomalous & alone.reshape(anomalous.shape)
                & (np.take(level, region, axis=-1) == QUIET))
        run = state["lone_run"]
        run[...] = np.where(lone, run + 1, 0)
        free = state["q_until"] <= t_st
        quarantine = (run >= p.quarantine_after_ticks) & free
        state["q_until"][...] = np.where(quarantine, t_st + p.quarantine_ttl_s, state["q_until"])
        run[...] = np.where(quarantine, 0, run)
        return {"burst_stations": burst_stations, "burst_regions": rose_warning,
                "escalate": escalate, "quarantine": quarantine}

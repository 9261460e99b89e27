"""AXON: adaptive responses to the convergence meter.

Given each tick's meter reading and node states, :class:`AdaptiveResponder` decides
what to do and returns :class:`Response` records (each may carry a
:class:`~convergence.control.ControlCommand` for stations):

* meter rises to **watch** → burst mode (sample fast) for the involved stations;
* rises to **warning** → burst mode for every station in the involved regions and
  more sensitive thresholds there;
* rises to **converged** → escalate to the on-call analyst (a response with no command);
* a station anomalous on its own for ``quarantine_after_ticks`` ticks while the meter
  stays quiet → quarantine it (a noisy feed must not keep shouting); the meter ignores
  quarantined stations until the command expires.

Examples
--------
>>> import numpy as np
>>> from convergence.stations import StationInfo, StationRegistry
>>> reg = StationRegistry([StationInfo("a", "osint_news", "eu"), StationInfo("b", "sensor", "eu")])
>>> axon = AdaptiveResponder(ResponsePolicy(quarantine_after_ticks=3))
>>> states = np.array([2, 0]); weights = np.array([1.0, 0.0])
>>> out = [axon.decide(tick=t, time_s=float(t), level=0, prev_level=0, node_state=states,
...                    weights=weights, registry=reg) for t in range(3)]
>>> [r.action for r in out[-1]]
['quarantine']
>>> axon.quarantined(3.0, 2).tolist()
[True, False]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.control import Action, ControlCommand, Target
from convergence.detectors.meter import CONVERGED, LEVELS, QUIET, WARNING, WATCH
from convergence.detectors.node_state import ANOMALOUS
from convergence.responses.prism import hash_id
from convergence.stations import StationRegistry


@dataclass(frozen=True)
class ResponsePolicy:
    """Knobs of the adaptive responses."""

    burst_ttl_s: float = 120.0
    burst_interval_s: float = 0.25
    sensitivity: float = 0.8
    quarantine_after_ticks: int = 20
    quarantine_ttl_s: float = 600.0


@dataclass(frozen=True)
class Response:
    """One adaptive action, with the command it sends (if any)."""

    response_id: str
    action: str
    reason: str
    level: str
    tick: int
    time_s: float
    command: ControlCommand | None = None
    stations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"response_id": self.response_id, "action": self.action, "reason": self.reason,
                "level": self.level, "tick": self.tick, "time_s": self.time_s,
                "stations": list(self.stations),
                "command": self.command.to_dict() if self.command else None}


@dataclass
class AdaptiveResponder:
    """Turns meter level changes and lone noisy nodes into responses."""

    policy: ResponsePolicy = field(default_factory=ResponsePolicy)
    _lone_run: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _q_until: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def _fit(self, n: int) -> None:
        if self._lone_run.shape[0] < n:
            pad = n - self._lone_run.shape[0]
            self._lone_run = np.concatenate([self._lone_run, np.zeros(pad, np.int64)])
            self._q_until = np.concatenate([self._q_until, np.full(pad, -np.inf)])

    def quarantined(self, time_s: float, n: int) -> npt.NDArray[np.bool_]:
        """Stations under an unexpired quarantine at ``time_s``."""
        self._fit(n)
        return self._q_until[:n] > time_s

    def release(self, station_idx: int) -> None:
        """Lift a quarantine early (a person sent ``resume``)."""
        self._fit(station_idx + 1)
        self._q_until[station_idx] = -np.inf

    def decide(self, *, tick: int, time_s: float, level: int, prev_level: int,
               node_state: npt.NDArray[Any], weights: npt.NDArray[Any],
               registry: StationRegistry) -> list[Response]:
        n = node_state.shape[0]
        self._fit(n)
        p = self.policy
        out: list[Response] = []
        involved = [registry.info(int(i)) for i in np.flatnonzero(weights > 0)]
        ids = tuple(st.station_id for st in involved)
        regions = sorted({st.region for st in involved})
        name = LEVELS[level]
        # each step fires once, when the level rises across it
        if prev_level < WATCH <= level:
            for sid in ids:
                cmd = ControlCommand.create(Action.BURST_MODE, Target("station", sid),
                                            issued_at_s=time_s, ttl_s=p.burst_ttl_s,
                                            params={"interval_s": p.burst_interval_s},
                                            reason=f"meter {name} at tick {tick}")
                out.append(Response(hash_id("rsp", tick, "burst", sid), "burst_mode",
                                    f"station {sid} is part of a {name}", name, tick, time_s,
                                    cmd, (sid,)))
        if prev_level < WARNING <= level:
            for region in regions:
                reason = f"meter {name} at tick {tick}: region {region} involved"
                for action, params in ((Action.BURST_MODE, {"interval_s": p.burst_interval_s}),
                                       (Action.SET_THRESHOLDS, {"scale": p.sensitivity})):
                    cmd = ControlCommand.create(action, Target("region", region),
                                                issued_at_s=time_s, ttl_s=p.burst_ttl_s,
                                                params=params, reason=reason)
                    out.append(Response(hash_id("rsp", tick, action.value, region), action.value,
                                        reason, name, tick, time_s, cmd))
        if prev_level < CONVERGED <= level:
            out.append(Response(hash_id("rsp", tick, "escalate"), "escalate",
                                f"converged across {len(ids)} stations in "
                                f"{', '.join(regions) or 'no region'}: page the on-call analyst",
                                name, tick, time_s, None, ids))
        # lone noisy stations: anomalous while the meter sees nothing worth a watch
        anomalous = node_state == ANOMALOUS
        lone = anomalous & (level == QUIET)
        self._lone_run[:n] = np.where(lone, self._lone_run[:n] + 1, 0)
        for i in np.flatnonzero(self._lone_run[:n] >= p.quarantine_after_ticks):
            if self._q_until[i] > time_s:
                continue
            sid = registry.info(int(i)).station_id
            cmd = ControlCommand.create(Action.QUARANTINE, Target("station", sid),
                                        issued_at_s=time_s, ttl_s=p.quarantine_ttl_s,
                                        reason=f"anomalous alone for {p.quarantine_after_ticks} ticks")
            self._q_until[i] = time_s + p.quarantine_ttl_s
            self._lone_run[i] = 0
            out.append(Response(hash_id("rsp", tick, "quarantine", sid), "quarantine",
                                f"station {sid} has been anomalous on its own for "
                                f"{p.quarantine_after_ticks} ticks; treating it as a noisy feed",
                                name, tick, time_s, cmd, (sid,)))
        return out

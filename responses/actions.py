"""Adaptive responses as records and control commands (AXON, in the source documents).

The *decisions* are a pure stage in :mod:`convergence.detectors.responses`, stepped by
the tick processor in every runtime, simulation included. This module turns one live
tick's decisions (masks per station and region) into :class:`Response` records, each
with the :class:`~convergence.control.ControlCommand` that carries it to the stations:

* burst mode for the stations that count in a region rising to watch;
* burst mode and more sensitive thresholds for every station of a region rising to
  warning;
* an escalation (no command: a person is paged) for a region rising to converged;
* a quarantine for a station anomalous on its own for too long.

Ids are deterministic (region, tick, action, target), so a replay or a restarted worker
issues the very same responses and commands.

Examples
--------
>>> import numpy as np
>>> from convergence.stations import StationInfo, StationRegistry
>>> reg = StationRegistry([StationInfo("n1", "osint_news", "eu"), StationInfo("x1", "sensor", "apac")])
>>> decided = {"burst_stations": np.array([True, False]), "burst_regions": np.array([True, False]),
...            "escalate": np.array([False, False]), "quarantine": np.array([False, True])}
>>> rs = responses_from(decided, reg, tick=7, time_s=8.0, levels=["warning", "quiet"])
>>> [(r.action, r.command.target.value if r.command else None) for r in rs]
[('burst_mode', 'n1'), ('burst_mode', 'eu'), ('set_thresholds', 'eu'), ('quarantine', 'x1')]
>>> rs[0].response_id == responses_from(decided, reg, tick=7, time_s=8.0,
...                                      levels=["warning", "quiet"])[0].response_id
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergence.control import Action, ControlCommand, Target
from convergence.detectors.base import Array
from convergence.detectors.responses import ResponsePolicy
from convergence.ids import hash_id
from convergence.records import ResponseTaken, iso_time
from convergence.stations import StationRegistry

__all__ = ["Response", "ResponsePolicy", "responses_from"]


@dataclass(frozen=True)
class Response:
    """One adaptive action, with the command it sends (if any)."""

    response_id: str
    action: str
    reason: str
    level: str
    tick: int
    time_s: float
    region: str = ""
    command: ControlCommand | None = None
    stations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"response_id": self.response_id, "action": self.action, "reason": self.reason,
                "level": self.level, "tick": self.tick, "time_s": self.time_s,
                "region": self.region, "stations": list(self.stations),
                "command": self.command.to_dict() if self.command else None}

    def document(self) -> dict[str, Any]:
        """The stored form: the :class:`~convergence.records.ResponseTaken` a report lists,
        plus what the response was about (region, level, stations, the command)."""
        return {**self.taken().to_dict(), "region": self.region, "level": self.level,
                "tick": self.tick, "stations": list(self.stations),
                "command": self.command.to_dict() if self.command else None}

    def taken(self) -> ResponseTaken:
        """The record a report lists (acks are added as they arrive)."""
        cmd = self.command
        target = f"{cmd.target.type}:{cmd.target.value}" if cmd else (
            f"on-call analyst ({self.region})" if self.action == "escalate" else "")
        return ResponseTaken(self.response_id, self.action, target,
                             dict(cmd.params) if cmd else {}, self.time_s,
                             cmd.expires_at_s if cmd else None, self.reason)


def responses_from(decided: Mapping[str, Array], registry: StationRegistry, *, tick: int,
                   time_s: float, levels: Sequence[str],
                   policy: ResponsePolicy | None = None) -> list[Response]:
    """Records and commands for one live tick's decisions (arrays without a runs axis).

    ``levels`` are the regions' levels after this tick, by region index.
    """
    p = policy or ResponsePolicy()
    regions = registry.region_names()
    ids = registry.ids()
    region_idx = registry.region_idx
    out: list[Response] = []

    def region_name(r: int) -> str:
        return regions[r] if 0 <= r < len(regions) else "unknown"

    for i in np.flatnonzero(decided["burst_stations"]):
        sid, r = ids[int(i)], int(region_idx[int(i)])
        name, lvl = region_name(r), levels[r]
        cmd = ControlCommand.create(Action.BURST_MODE, Target("station", sid), issued_at_s=time_s,
                                    ttl_s=p.burst_ttl_s, params={"interval_s": p.burst_interval_s},
                                    reason=f"{name} meter at {lvl} at {iso_time(time_s)}")
        out.append(Response(hash_id("rsp", name, tick, "burst", sid), "burst_mode",
                            f"station {sid} counts in {name}'s {lvl}: sample it fast", lvl, tick,
                            time_s, name, cmd, (sid,)))
    for r in np.flatnonzero(decided["burst_regions"]).tolist():
        name, lvl = region_name(r), levels[r]
        reason = f"{name} meter rose to {lvl} at {iso_time(time_s)}"
        for action, params in ((Action.BURST_MODE, {"interval_s": p.burst_interval_s}),
                               (Action.SET_THRESHOLDS, {"scale": p.sensitivity})):
            cmd = ControlCommand.create(action, Target("region", name), issued_at_s=time_s,
                                        ttl_s=p.burst_ttl_s, params=params, reason=reason)
            what = ("sample every station fast" if action == Action.BURST_MODE
                    else f"lower node thresholds to {p.sensitivity:g}x")
            out.append(Response(hash_id("rsp", name, tick, action.value), action.value,
                                f"{reason}: {what} in {name}", lvl, tick, time_s, name, cmd))
    for r in np.flatnonzero(decided["escalate"]).tolist():
        name = region_name(r)
        members = tuple(ids[int(i)] for i in np.flatnonzero(region_idx == int(r)))
        out.append(Response(hash_id("rsp", name, tick, "escalate"), "escalate",
                            f"{name} converged at {iso_time(time_s)}: page the on-call analyst",
                            levels[int(r)], tick, time_s, name, None, members))
    for i in np.flatnonzero(decided["quarantine"]):
        sid, r = ids[int(i)], int(region_idx[int(i)])
        cmd = ControlCommand.create(Action.QUARANTINE, Target("station", sid), issued_at_s=time_s,
                                    ttl_s=p.quarantine_ttl_s,
                                    reason=f"anomalous alone for {p.quarantine_after_ticks} ticks")
        out.append(Response(hash_id("rsp", region_name(r), tick, "quarantine", sid), "quarantine",
                            f"station {sid} has been anomalous on its own for "
                            f"{p.quarantine_after_ticks} ticks while {region_name(r)} stayed "
                            "quiet; treating it as a noisy feed", levels[r], tick, time_s,
                            region_name(r), cmd, (sid,)))
    return out

"""Control commands sent to ground stations, and their acknowledgements.

The adaptive responses (and people, via ``convergence stations command``) steer
stations with :class:`ControlCommand` s: change the sampling interval, change
thresholds, quarantine, resume, or burst mode (sample fast for a while). A command
targets a station, a region, a source kind or all stations; it expires; a station
that applies it answers with a :class:`CommandAck`.

Command ids are deterministic (a hash of what the command says and why), so a
replayed alert never issues the same command twice.

Examples
--------
>>> c = ControlCommand.create("burst_mode", Target("region", "eu-east"), issued_at_s=100.0,
...                           ttl_s=60.0, params={"interval_s": 0.25}, reason="warning")
>>> c.expires_at_s, c.applies_to("news-eu-east-001", "osint_news", "eu-east")
(160.0, True)
>>> c.applies_to("news-apac-001", "osint_news", "apac")
False
>>> ControlCommand.from_dict(c.to_dict()) == c
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class Action(StrEnum):
    SET_INTERVAL = "set_interval"
    SET_THRESHOLDS = "set_thresholds"
    QUARANTINE = "quarantine"
    RESUME = "resume"
    BURST_MODE = "burst_mode"


TARGET_TYPES = ("station", "region", "source_kind", "all")


@dataclass(frozen=True)
class Target:
    """Who a command is for: ``type`` in station/region/source_kind/all."""

    type: str
    value: str = "*"

    def __post_init__(self) -> None:
        if self.type not in TARGET_TYPES:
            raise ValueError(f"target type {self.type!r} is not one of {', '.join(TARGET_TYPES)}")


@dataclass(frozen=True)
class ControlCommand:
    """One steering command for stations (see module docstring)."""

    command_id: str
    action: Action
    target: Target
    issued_at_s: float
    expires_at_s: float
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    reason: str = ""

    @classmethod
    def create(cls, action: str | Action, target: Target, *, issued_at_s: float, ttl_s: float,
               params: dict[str, Any] | None = None, reason: str = "") -> ControlCommand:
        act = Action(action)
        p = dict(params or {})
        key = orjson.dumps([act.value, target.type, target.value, p, reason, round(issued_at_s, 3)],
                           option=orjson.OPT_SORT_KEYS)
        cid = "cmd-" + hashlib.blake2b(key, digest_size=8).hexdigest()
        return cls(cid, act, target, issued_at_s, issued_at_s + ttl_s, p, reason)

    def applies_to(self, station_id: str, source_kind: str, region: str) -> bool:
        t = self.target
        return (t.type == "all"
                or (t.type == "station" and t.value == station_id)
                or (t.type == "region" and t.value == region)
                or (t.type == "source_kind" and t.value == source_kind))

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_at_s

    def to_dict(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "action": self.action.value,
                "target": {"type": self.target.type, "value": self.target.value},
                "issued_at_s": self.issued_at_s, "expires_at_s": self.expires_at_s,
                "params": self.params, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControlCommand:
        try:
            return cls(str(d["command_id"]), Action(d["action"]),
                       Target(d["target"]["type"], d["target"].get("value", "*")),
                       float(d["issued_at_s"]), float(d["expires_at_s"]),
                       dict(d.get("params") or {}), str(d.get("reason", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid control command ({exc}): {d!r:.200}") from None


@dataclass(frozen=True)
class CommandAck:
    """A station's answer to a command it applied (or refused)."""

    command_id: str
    station_id: str
    applied: bool
    at_s: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "station_id": self.station_id,
                "applied": self.applied, "at_s": self.at_s, "detail": self.detail}

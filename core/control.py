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

Parameters are checked once, here, by :func:`validate_params` (for every way a command
is made: :meth:`ControlCommand.create`, :meth:`ControlCommand.from_dict`, a station
applying it, the command line):

>>> validate_params("burst_mode", {"interval_s": 0})
Traceback (most recent call last):
...
ValueError: interval_s must be a number of seconds > 0, got 0
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
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
class ParamSpec:
    """What one action takes: ``allowed`` names (``None``: any name), ``required`` names,
    ``positive`` names (must be > 0); every value is a finite number."""

    allowed: frozenset[str] | None
    required: frozenset[str] = frozenset()
    positive: frozenset[str] = frozenset()
    at_least_one: bool = False


_INTERVAL = frozenset({"interval_s"})

PARAMS: dict[Action, ParamSpec] = {
    Action.SET_INTERVAL: ParamSpec(_INTERVAL, required=_INTERVAL, positive=_INTERVAL),
    Action.BURST_MODE: ParamSpec(_INTERVAL, positive=_INTERVAL),  # default interval 0.25 s
    Action.SET_THRESHOLDS: ParamSpec(None, at_least_one=True),
    Action.QUARANTINE: ParamSpec(frozenset()),
    Action.RESUME: ParamSpec(frozenset()),
}


def validate_params(action: str | Action, params: Mapping[str, Any]) -> dict[str, float]:
    """``params`` checked against what ``action`` takes, as floats; ``ValueError`` says why.

    Values must be finite numbers (not strings, not booleans); ``interval_s`` must be > 0.

    >>> validate_params("set_thresholds", {"surge": 4})
    {'surge': 4.0}
    >>> validate_params("quarantine", {"interval_s": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: quarantine takes no parameters (got interval_s)
    """
    act = Action(action)
    spec = PARAMS[act]
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be an object of NAME: NUMBER, got {type(params).__name__}")
    out: dict[str, float] = {}
    for key, value in params.items():
        if spec.allowed is not None and key not in spec.allowed:
            takes = ", ".join(sorted(spec.allowed)) if spec.allowed else "no parameters"
            raise ValueError(f"{act.value} takes {takes} (got {key})")
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if key in spec.positive and not (ok and value > 0):
            raise ValueError(f"{key} must be a number of seconds > 0, got {value!r:.40}")
        if not ok:
            raise ValueError(f"{key} must be a finite number, got {value!r:.40}")
        out[key] = float(value)
    missing = sorted(spec.required - set(out))
    if missing:
        raise ValueError(f"{act.value} needs {missing[0]}=NUMBER")
    if spec.at_least_one and not out:
        raise ValueError(f"{act.value} needs at least one NAME=NUMBER")
    return out


@dataclass(frozen=True)
class Target:
    """Who a command is for: ``type`` in station/region/source_kind/all."""

    type: str
    value: str = "*"

    def __post_init__(self) -> None:
        if self.type not in TARGET_TYPES:
            raise ValueError(f"target type {self.type!r} is not one of {', '.join(TARGET_TYPES)}")

    @classmethod
    def parse(cls, text: str) -> Target:
        """``station:ID``, ``region:NAME``, ``source_kind:KIND`` or ``all``.

        >>> Target.parse("region:eu-west")
        Target(type='region', value='eu-west')
        >>> Target.parse("all")
        Target(type='all', value='*')
        >>> Target.parse("planet:x")
        Traceback (most recent call last):
        ...
        ValueError: 'planet:x' is not a target: use station:ID, region:NAME, source_kind:KIND or all
        """
        from convergence.schema import SourceKind

        usage = "use station:ID, region:NAME, source_kind:KIND or all"
        if text.strip() in ("all", "all:*"):
            return cls("all")
        typ, sep, value = text.partition(":")
        typ, value = typ.strip(), value.strip()
        if not sep or typ not in ("station", "region", "source_kind"):
            raise ValueError(f"{text!r} is not a target: {usage}")
        if not value:
            raise ValueError(f"{text!r} names no {typ}: {usage}")
        kinds = [k.value for k in SourceKind]
        if typ == "source_kind" and value not in kinds:
            raise ValueError(f"{text!r}: {value!r} is not a source kind ({', '.join(kinds)})")
        return cls(typ, value)


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
               params: Mapping[str, Any] | None = None, reason: str = "") -> ControlCommand:
        """A command with a deterministic id; ``ValueError`` when ``params`` do not fit
        ``action`` (see :func:`validate_params`)."""
        act = Action(action)
        p: dict[str, Any] = dict(validate_params(act, params or {}))
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
            act = Action(d["action"])
            params = validate_params(act, d.get("params") or {})
            return cls(str(d["command_id"]), act,
                       Target(d["target"]["type"], d["target"].get("value", "*")),
                       float(d["issued_at_s"]), float(d["expires_at_s"]),
                       dict(params), str(d.get("reason", "")))
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

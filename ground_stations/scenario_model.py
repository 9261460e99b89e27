"""The scenario model: episodes, the scenario that holds them, and its ground truth.

An :class:`Episode` is something that happens to a set of stations for a while: a
genuine convergence (several kinds in one region turning together, at once or as a
cascade) or one of the decoys that must *not* alert (:data:`DECOY_KINDS`). A
:class:`Scenario` is a fleet, its episodes, a daily rhythm and data-quality faults,
everything derived from its ``seed``; :meth:`Scenario.truths` are its genuine
convergences, each from the moment it is one (:func:`convergence_onset`: its active
stations span :data:`MIN_GROUPS` correlation groups, :data:`MIN_KINDS` source kinds and
:data:`MIN_OSINT_GROUPS` OSINT groups in its region).

What a scenario means at any time is :class:`~convergence.ground_stations.scenario_world.SyntheticWorld`;
seeded fleets and scenarios are drawn by :mod:`~convergence.ground_stations.scenario_generation`;
the whole is described in :mod:`convergence.ground_stations.scenario`.

Examples
--------
>>> from convergence.stations import StationInfo
>>> from convergence.schema import SourceKind as K
>>> fleet = [StationInfo(f"s{i}", k, "mena", f"g{i}") for i, k in
...          enumerate([K.OSINT_NEWS, K.OSINT_SOCIAL, K.SENSOR, K.MARKET_VOLUME])]
>>> ep = Episode("convergence", 10.0, 8.0, (0, 1, 2, 3), region="mena", onsets=(0.0, 1.0, 2.0, 3.0))
>>> [(t.region, t.onset_s) for t in Scenario(fleet, [ep]).truths()]  # a third group at 12 s
[('mena', 12.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convergence.schema import OSINT_KINDS, SourceKind
from convergence.stations import StationInfo

__all__ = ["DECOY_KINDS", "DEFAULT_INTERVAL_S", "MIN_GROUPS", "MIN_KINDS", "MIN_OSINT_GROUPS",
           "TOPIC_SHARE", "Episode", "EpisodeKind", "Scenario", "Truth", "convergence_onset"]

F64 = npt.NDArray[np.float64]
EpisodeKind = Literal[
    "convergence", "lone_surge", "market_move", "outage", "lull", "common_source", "viral",
    "repeat", "flap", "bad_flood", "old_replay", "drift", "level_shift", "topic_drift",
    "duplicate_flood",
]
#: episodes that must not alert (everything but a convergence)
DECOY_KINDS: frozenset[str] = frozenset({
    "lone_surge", "market_move", "outage", "lull", "common_source", "viral", "repeat", "flap",
    "bad_flood", "old_replay", "drift", "level_shift", "topic_drift", "duplicate_flood"})
#: default share of a station's reports on an episode's topic while the episode runs
TOPIC_SHARE = 0.7
#: what makes a genuine episode a convergence (see :meth:`Scenario.truths`)
MIN_GROUPS, MIN_KINDS, MIN_OSINT_GROUPS = 3, 2, 2
#: default sampling interval of synthetic stations (seconds between polls)
DEFAULT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Episode:
    """Something that happens to a set of stations for a while.

    ``rate_mult`` multiplies the stations' rates (``< 1`` lowers them; an ``outage``
    silences and fails them); ``topic`` / ``topic_share`` concentrate their reporting;
    ``ramp_s`` is the rise time of the effect; ``onsets`` (one offset per station, in
    ``stations`` order) stagger when each station joins (a cascade); ``period_s`` makes
    the effect flap on and off; ``bad_rate``, ``dup_rate`` and ``replay_lag_s`` add
    malformed records, re-sent duplicates and events stamped in the past.
    """

    kind: EpisodeKind
    start_s: float
    duration_s: float
    stations: tuple[int, ...]
    rate_mult: float = 6.0
    topic: str | None = None
    region: str = ""
    topic_share: float = TOPIC_SHARE
    ramp_s: float = 0.0
    onsets: tuple[float, ...] = ()
    period_s: float = 0.0
    bad_rate: float = 0.0
    dup_rate: float = 0.0
    replay_lag_s: float = 0.0

    def __post_init__(self) -> None:
        if self.onsets and len(self.onsets) != len(self.stations):
            raise ValueError(f"{self.kind} episode: {len(self.onsets)} onsets for "
                             f"{len(self.stations)} stations")
        if not 0.0 <= self.topic_share <= 1.0:
            raise ValueError(f"topic_share must be in [0, 1], got {self.topic_share}")

    @property
    def genuine(self) -> bool:
        """True for a real multi-source convergence (what should alert)."""
        return self.kind == "convergence"

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def onset_of(self, k: int) -> float:
        """When the ``k``-th station of the episode joins."""
        return self.start_s + (self.onsets[k] if self.onsets else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_s": self.start_s, "duration_s": self.duration_s,
                "stations": len(self.stations), "region": self.region, "genuine": self.genuine,
                "topic": self.topic}


@dataclass(frozen=True)
class Truth:
    """A genuine convergence: where, from when (``onset_s``) to when, and who."""

    region: str
    onset_s: float
    end_s: float
    stations: tuple[int, ...]


@dataclass
class Scenario:
    """Fleet + episodes + rhythm + faults; everything derives from ``seed``.

    ``intervals_s`` and ``skews_s`` give each station's sampling interval and clock skew
    (``None``: :data:`DEFAULT_INTERVAL_S`, and skews drawn within ``max_skew_s``);
    ``daily_amplitude`` scales a daily rhythm peaking at ``daily_peak_hour`` (UTC) of
    ``epoch_s + t``; ``noise`` is the amplitude of a slow wander of every station's
    log-rate; ``rate_scale`` makes stations' true rates differ from what the fleet
    declares (baselines are seeded from the declaration and must adapt). ``tick_s`` and
    ``duration_s`` say how the scenario is meant to be run.
    """

    fleet: list[StationInfo]
    episodes: list[Episode] = field(default_factory=list)
    seed: int = 0
    bad_rate: float = 0.002
    dup_rate: float = 0.01
    max_skew_s: float = 0.2
    name: str = "default"
    tick_s: float = 1.0
    duration_s: float = 3600.0
    epoch_s: float = 0.0
    daily_amplitude: float = 0.0
    daily_peak_hour: float = 14.0
    noise: float = 0.0
    intervals_s: tuple[float, ...] | None = None
    skews_s: tuple[float, ...] | None = None
    #: each station's true rate relative to the one its fleet declares (``None``: 1)
    rate_scale: tuple[float, ...] | None = None

    def genuine(self) -> list[Episode]:
        return [e for e in self.episodes if e.genuine]

    def decoys(self) -> list[Episode]:
        return [e for e in self.episodes if e.kind in DECOY_KINDS]

    def interval_of(self, i: int) -> float:
        return self.intervals_s[i] if self.intervals_s is not None else DEFAULT_INTERVAL_S

    def skew_of(self, i: int) -> float:
        """Station ``i``'s clock skew (its clock minus true time), seconds."""
        if self.skews_s is not None:
            return self.skews_s[i]
        return float(self._drawn_skews[i])

    @cached_property
    def _drawn_skews(self) -> F64:
        rng = np.random.default_rng([self.seed, 13])
        return rng.uniform(-self.max_skew_s, self.max_skew_s, len(self.fleet))

    def truths(self) -> list[Truth]:
        """Genuine convergences, each from the moment it is one (module docstring)."""
        out = []
        for e in self.genuine():
            onset = convergence_onset(e, self.fleet)
            if onset is not None and onset < e.end_s:
                out.append(Truth(e.region, onset, e.end_s, e.stations))
        return out


def convergence_onset(e: Episode, fleet: Sequence[StationInfo]) -> float | None:
    """When a genuine episode's active stations first make a convergence, or ``None``.

    A station whose effect ramps up counts from halfway through its ramp (when half of
    its rise, in log-rate, has happened).
    """
    order = sorted(range(len(e.stations)), key=e.onset_of)
    groups: set[str] = set()
    kinds: set[SourceKind] = set()
    osint: set[str] = set()
    for k in order:
        st = fleet[e.stations[k]]
        groups.add(st.correlation_group)
        kinds.add(st.kind)
        if st.kind in OSINT_KINDS:
            osint.add(st.correlation_group)
        if len(groups) >= MIN_GROUPS and len(kinds) >= MIN_KINDS and len(osint) >= MIN_OSINT_GROUPS:
            return e.onset_of(k) + 0.5 * e.ramp_s
    return None

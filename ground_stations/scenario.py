"""Synthetic scenarios: a fleet, a timeline of episodes, and the world they imply.

A :class:`Scenario` is the ground truth that synthetic stations sample and that the
Monte Carlo simulator scores against. It holds the fleet (one
:class:`~convergence.stations.StationInfo` per station) and a list of
:class:`Episode` s — genuine convergences (several kinds in one region turning
together) and decoys (one station surging alone; a market-wide move with no OSINT
corroboration) — plus data-quality faults (bad records, duplicates, clock skew).

:class:`SyntheticWorld` turns a scenario into per-station *intensities* at any time,
vectorised over stations: event rate, the category distribution and value
parameters. Station sources draw individual events from it; the simulator draws
per-tick counts straight from the same numbers, so the two never diverge.

The default scenario puts, within the first 20 seconds, a lone-station surge
(3–8 s), a genuine convergence in one region (6–13 s) and a market-wide move with no
OSINT behind it (14–19 s); later episodes are drawn from the seed.

Examples
--------
>>> sc = default_scenario(n_stations=50, seed=1, horizon_s=60)
>>> len(sc.fleet), [e.kind for e in sc.episodes][:3]
(50, ['lone_surge', 'convergence', 'market_move'])
>>> world = SyntheticWorld(sc)
>>> r_before, r_during = world.rates(1.0), world.rates(9.0)
>>> genuine = sc.episodes[1]
>>> bool((r_during[list(genuine.stations)] > 3 * r_before[list(genuine.stations)]).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convergence.schema import KIND_INDEX, MARKET_KINDS, OSINT_KINDS, SOURCE_KINDS, SourceKind
from convergence.stations import StationInfo

EpisodeKind = Literal["convergence", "lone_surge", "market_move", "outage"]
#: share of a station's reports on an episode's topic while the episode runs
TOPIC_SHARE = 0.7
REGIONS = ("na-east", "na-west", "eu-west", "eu-east", "mena", "apac")
CATEGORIES: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.OSINT_NEWS: ("politics", "conflict", "economy", "energy", "health", "disaster",
                            "tech", "crime"),
    SourceKind.OSINT_SOCIAL: ("politics", "conflict", "economy", "energy", "health", "disaster",
                              "rumour", "sports"),
    SourceKind.MARKET_PRICE: ("trade", "quote", "halt"),
    SourceKind.MARKET_VOLUME: ("block", "retail", "dark"),
    SourceKind.SENSOR: ("seismic", "radiation", "air", "ais", "adsb"),
}
# share of the default fleet per kind and background events per second per station
FLEET_MIX: dict[SourceKind, tuple[float, float]] = {
    SourceKind.OSINT_NEWS: (0.24, 1.5),
    SourceKind.OSINT_SOCIAL: (0.28, 3.0),
    SourceKind.MARKET_PRICE: (0.16, 2.0),
    SourceKind.MARKET_VOLUME: (0.16, 1.5),
    SourceKind.SENSOR: (0.16, 1.0),
}


@dataclass(frozen=True)
class Episode:
    """Something that happens to a set of stations for a while."""

    kind: EpisodeKind
    start_s: float
    duration_s: float
    stations: tuple[int, ...]
    rate_mult: float = 6.0
    topic: str | None = None
    region: str = ""

    @property
    def genuine(self) -> bool:
        """True for a real multi-source convergence (what should alert)."""
        return self.kind == "convergence"

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_s": self.start_s, "duration_s": self.duration_s,
                "stations": len(self.stations), "region": self.region, "genuine": self.genuine,
                "topic": self.topic}


@dataclass
class Scenario:
    """Fleet + episodes + data-quality faults; everything derives from ``seed``."""

    fleet: list[StationInfo]
    episodes: list[Episode] = field(default_factory=list)
    seed: int = 0
    bad_rate: float = 0.002
    dup_rate: float = 0.01
    max_skew_s: float = 0.2

    def genuine(self) -> list[Episode]:
        return [e for e in self.episodes if e.genuine]

    def decoys(self) -> list[Episode]:
        return [e for e in self.episodes if e.kind in ("lone_surge", "market_move")]


def default_fleet(n_stations: int, seed: int) -> list[StationInfo]:
    """The default synthetic fleet: every kind, six regions, realistic correlation groups.

    News stations share wire services three at a time; market stations in a region share
    their exchange; social and sensor stations are independent.
    """
    if n_stations < len(SOURCE_KINDS):
        raise ValueError(f"the default fleet needs at least {len(SOURCE_KINDS)} stations")
    rng = np.random.default_rng(seed)
    shares = np.array([FLEET_MIX[k][0] for k in SOURCE_KINDS])
    counts = np.maximum(1, np.floor(shares * n_stations).astype(int))
    counts[1] += n_stations - counts.sum()  # the remainder goes to social
    fleet: list[StationInfo] = []
    for kind, n in zip(SOURCE_KINDS, counts, strict=True):
        for i in range(int(n)):
            region = REGIONS[(i + int(rng.integers(0, 2))) % len(REGIONS)]
            short = kind.value.split("_")[-1]
            sid = f"{short}-{region}-{i:03d}"
            if kind == SourceKind.OSINT_NEWS:
                group = f"wire-{i // 3:02d}"
            elif kind in MARKET_KINDS:
                group = f"exchange-{region}"
            else:
                group = sid
            rate = FLEET_MIX[kind][1] * float(rng.uniform(0.7, 1.3))
            fleet.append(StationInfo(sid, kind, region, group, name=f"{kind.value} {region} #{i}",
                                     rate_per_s=round(rate, 3)))
    return fleet


def _pick(rng: np.random.Generator, fleet: Sequence[StationInfo], region: str,
          kinds: frozenset[SourceKind] | set[SourceKind], share: float) -> list[int]:
    pool = [i for i, s in enumerate(fleet) if s.region == region and s.kind in kinds]
    k = max(1, round(share * len(pool))) if pool else 0
    return sorted(int(i) for i in rng.choice(pool, size=k, replace=False)) if k else []


def convergence_episode(rng: np.random.Generator, fleet: Sequence[StationInfo], start_s: float,
                        duration_s: float = 7.0, region: str | None = None) -> Episode:
    """A genuine convergence: news, social, sensors and market volume in one region."""
    region = region or REGIONS[int(rng.integers(0, len(REGIONS)))]
    kinds = {SourceKind.OSINT_NEWS, SourceKind.OSINT_SOCIAL, SourceKind.SENSOR,
             SourceKind.MARKET_VOLUME}
    stations = _pick(rng, fleet, region, kinds, 0.6)
    topic = ("conflict", "disaster", "energy")[int(rng.integers(0, 3))]
    return Episode("convergence", start_s, duration_s, tuple(stations), 6.0, topic, region)


def lone_surge_episode(rng: np.random.Generator, fleet: Sequence[StationInfo], start_s: float,
                       duration_s: float = 5.0) -> Episode:
    """Decoy: one OSINT station surging on its own (a noisy feed)."""
    pool = [i for i, s in enumerate(fleet) if s.kind in OSINT_KINDS]
    i = int(rng.choice(pool))
    return Episode("lone_surge", start_s, duration_s, (i,), 8.0, "rumour", fleet[i].region)


def market_move_episode(rng: np.random.Generator, fleet: Sequence[StationInfo], start_s: float,
                        duration_s: float = 5.0) -> Episode:
    """Decoy: every market station moves together, no OSINT source corroborates."""
    stations = tuple(i for i, s in enumerate(fleet) if s.kind in MARKET_KINDS)
    return Episode("market_move", start_s, duration_s, stations, 5.0, None, "global")


def default_scenario(n_stations: int = 247, seed: int = 7, horizon_s: float = 3600.0,
                     fleet: Sequence[StationInfo] | None = None) -> Scenario:
    """Decoys and a genuine convergence within 20 s, then seeded random episodes.

    ``fleet`` replaces the default fleet (e.g. one loaded from a fleet file); a fleet
    without OSINT stations gets no lone-surge decoys.
    """
    stations = list(fleet) if fleet is not None else default_fleet(n_stations, seed)
    has_osint = any(s.kind in OSINT_KINDS for s in stations)
    rng = np.random.default_rng([seed, 1])
    episodes: list[Episode] = []
    if has_osint:
        episodes.append(lone_surge_episode(rng, stations, 3.0, 5.0))
    episodes += [convergence_episode(rng, stations, 6.0, 7.0),
                 market_move_episode(rng, stations, 14.0, 5.0)]
    t = 45.0
    makers = (convergence_episode, lone_surge_episode, market_move_episode)
    while t < horizon_s:
        which = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
        if which != 1 or has_osint:
            episodes.append(makers[which](rng, stations, t))
        t += float(rng.uniform(35.0, 70.0))
    return Scenario(stations, episodes, seed)


class SyntheticWorld:
    """Per-station intensities implied by a scenario, vectorised over stations."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        fleet = scenario.fleet
        self.n = len(fleet)
        self.base_rate = np.array([s.rate_per_s for s in fleet])
        self.kind_idx = np.array([KIND_INDEX[s.kind.value] for s in fleet])
        self.categories = [CATEGORIES[s.kind] for s in fleet]
        # membership matrix: which stations each episode touches
        self._members = np.zeros((len(scenario.episodes), self.n), bool)
        for j, ep in enumerate(scenario.episodes):
            self._members[j, list(ep.stations)] = True
        self._start = np.array([e.start_s for e in scenario.episodes])
        self._end = np.array([e.end_s for e in scenario.episodes])
        mult = np.array([e.rate_mult for e in scenario.episodes])
        outage = np.array([e.kind == "outage" for e in scenario.episodes], bool)
        # log-multipliers add, so overlapping episodes compound; outages silence instead
        self._logmult = self._members * np.where(outage, 0.0, np.log(mult))[:, None]  # (E, N)
        self._silencing = (self._members & outage[:, None]).astype(np.float64)  # (E, N)
        # the same, one contiguous row per station, for single-station lookups
        self._logmult_by_station = np.ascontiguousarray(self._logmult.T)
        self._silencing_by_station = np.ascontiguousarray(self._silencing.T) > 0
        self._topic_eps_by_station = [
            [(j, e.topic) for j, e in enumerate(scenario.episodes)
             if e.topic is not None and self._members[j, i]]
            for i in range(self.n)
        ]

    def active(self, t_s: float | npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which episodes are on at time(s) ``t_s``: shape ``(..., episodes)``."""
        t = np.asarray(t_s, dtype=np.float64)[..., None]
        return (t >= self._start) & (t < self._end)

    def rates(self, t_s: float | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Events per second per station at time(s) ``t_s``: shape ``(..., stations)``."""
        on = self.active(t_s).astype(np.float64)  # (..., E)
        if on.shape[-1] == 0:
            return np.broadcast_to(self.base_rate, on.shape[:-1] + (self.n,)).copy()
        boost = np.exp(on @ self._logmult)
        silenced = (on @ self._silencing) > 0
        return np.where(silenced, 0.0, self.base_rate * boost)

    def station_state(self, station: int, t_s: float) -> tuple[float, str | None]:
        """One station's rate (events/s) and topic at ``t_s``.

        The same numbers as ``rates(t_s)[station]`` and ``topic_of(station, t_s)``,
        without computing every station's rate or the active episodes more than once.
        """
        on = self.active(t_s)
        topic = next((tp for j, tp in self._topic_eps_by_station[station] if on[j]), None)
        if on.size == 0 or not on.any():
            return float(self.base_rate[station]), topic
        if self._silencing_by_station[station][on].any():
            return 0.0, topic
        boost = np.exp(on.astype(np.float64) @ self._logmult_by_station[station])
        return float(self.base_rate[station] * boost), topic

    def topic_of(self, station: int, t_s: float) -> str | None:
        """The topic an active episode concentrates this station's reporting on."""
        return self.station_state(station, t_s)[1]

    def category_probs(self, station: int, t_s: float) -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
        """Categories of a station and their probabilities at ``t_s``."""
        return self.topic_probs(station, self.topic_of(station, t_s))

    def topic_probs(self, station: int,
                    topic: str | None) -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
        """Categories of a station and their probabilities while reporting on ``topic``.

        Without a topic they are uniform; with one, :data:`TOPIC_SHARE` of the mass goes
        to it.
        """
        cats = self.categories[station]
        p = np.full(len(cats), 1.0 / len(cats))
        if topic is not None:
            if topic not in cats:
                cats = (*cats, topic)
                p = np.append(p, 0.0)
            p = (1.0 - TOPIC_SHARE) * p / p.sum()
            p[cats.index(topic)] += TOPIC_SHARE
        return cats, p


def evaluate(scenario: Scenario, alerts: Sequence[dict[str, Any]], *, t0: float,
             horizon_s: float, window_s: float, grace_s: float = 5.0) -> dict[str, Any]:
    """Score alerts against the scenario's ground truth.

    An alert *detects* a genuine episode when it fires between the episode's start and
    ``window_s + grace_s`` after its end, naming the episode's region. Every other
    alert is a false alarm; a false alarm during a decoy is also a *decoy alert*.
    Only episodes that start at least ``grace_s`` before the horizon are counted.
    """
    def counted(eps: list[Episode]) -> list[Episode]:
        return [e for e in eps if e.start_s + grace_s <= horizon_s]

    seen = counted(scenario.episodes)
    genuine, decoys = counted(scenario.genuine()), counted(scenario.decoys())
    at = [float(a["time_s"]) - t0 for a in alerts]  # alert times in scenario time

    def during(e: Episode, t: float) -> bool:
        return e.start_s <= t <= e.end_s + window_s + grace_s

    matched: set[int] = set()
    ttd: list[float] = []
    for e in genuine:
        hits = [i for i, a in enumerate(alerts)
                if during(e, at[i]) and e.region in a.get("regions", [])]
        if hits:
            ttd.append(round(min(at[i] for i in hits) - e.start_s, 3))
        matched.update(hits)
    false = [i for i in range(len(alerts)) if i not in matched]
    decoy_alerts = [i for i in false if any(during(d, at[i]) for d in decoys)]
    return {
        "genuine": len(genuine), "detected": len(ttd), "missed": len(genuine) - len(ttd),
        "decoys": len(decoys), "decoy_alerts": len(decoy_alerts), "false_alarms": len(false),
        "time_to_detect_s": ttd,
        "episodes": [e.to_dict() for e in seen],
    }


def random_scenario(fleet: list[StationInfo], seed: int, horizon_s: float,
                    p_genuine: float = 0.5) -> Scenario:
    """A training/evaluation scenario: random decoys, and a genuine convergence with
    probability ``p_genuine``, with varied strength, size and duration.

    Used by the simulator to make labelled runs; harder than the default demo scenario
    (weaker convergences, overlapping decoys) so a model trained on it has to work.
    """
    rng = np.random.default_rng([seed, 2])
    episodes: list[Episode] = []
    for _ in range(int(rng.integers(0, 3))):
        start = float(rng.uniform(5.0, max(horizon_s - 10.0, 6.0)))
        maker = lone_surge_episode if rng.random() < 0.5 else market_move_episode
        ep = maker(rng, fleet, start, float(rng.uniform(3.0, 8.0)))
        episodes.append(Episode(ep.kind, ep.start_s, ep.duration_s, ep.stations,
                                float(rng.uniform(3.0, 9.0)), ep.topic, ep.region))
    if rng.random() < p_genuine:
        start = float(rng.uniform(8.0, max(horizon_s - 15.0, 9.0)))
        ep = convergence_episode(rng, fleet, start, float(rng.uniform(4.0, 10.0)))
        share = float(rng.uniform(0.25, 1.0))
        keep = tuple(s for s in ep.stations if rng.random() < share) or ep.stations[:1]
        episodes.append(Episode("convergence", ep.start_s, ep.duration_s, keep,
                                float(rng.uniform(2.0, 7.0)), ep.topic, ep.region))
    return Scenario(fleet, sorted(episodes, key=lambda e: e.start_s), seed)

"""Synthetic scenarios: a fleet, a timeline of episodes, and the world they imply.

A :class:`Scenario` is the ground truth that synthetic stations sample and that the
Monte Carlo simulator scores against. It holds the fleet (one
:class:`~convergence.stations.StationInfo` per station, with its sampling interval and
clock skew), a daily rhythm, and a list of :class:`Episode` s — genuine convergences
(several kinds in one region turning together, at once or as a cascade) and everything
that must *not* alert: one station surging alone, a market-wide move with no OSINT,
stations on one upstream source bursting together, outages, lulls, flapping or
repeating feeds, floods of bad records, replays of old data — plus data-quality faults
(bad records, duplicates, clock skew).

:class:`SyntheticWorld` is the one implementation of what a scenario means at any time,
vectorised over stations (and times): each station's event rate, its category mix (an
episode's topic takes ``topic_share`` of the reporting), whether its source is failing
(an outage: the station agent's breaker opens and the station goes *dark*), and the
faults it injects. Live synthetic stations (:mod:`~convergence.ground_stations.synthetic`)
draw individual events from it; the simulator draws per-tick cells straight from the same
numbers, so the two never diverge.

Ground truth (:meth:`Scenario.truths`): a genuine episode is a convergence from the
moment its active stations span at least :data:`MIN_GROUPS` independent correlation
groups, :data:`MIN_KINDS` source kinds and :data:`MIN_OSINT_GROUPS` independent OSINT
groups in its region (for a cascade, when enough stages have joined). An episode that
never gets there is too small to be a convergence and is not counted as genuine.
:func:`judge` scores alerts against it: by region and time, for runs cut short too.

The default scenario puts, within the first 20 seconds, a lone-station surge
(3–8 s), a genuine convergence in one region (6–13 s) and a market-wide move with no
OSINT behind it (14–19 s); later episodes are drawn from the seed. The library of
named scenarios is :mod:`~convergence.ground_stations.scenario_library`.

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
>>> [(t.region, t.onset_s) for t in sc.truths()][:1] == [(genuine.region, 6.0)]
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convergence.schema import KIND_INDEX, MARKET_KINDS, OSINT_KINDS, SOURCE_KINDS, SourceKind
from convergence.stations import StationInfo

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
#: per kind: how strongly the daily rhythm moves the rate (1 + a * cos(...)), scaled by a
#: scenario's ``daily_amplitude``
DAILY_SHAPE: dict[SourceKind, float] = {
    SourceKind.OSINT_NEWS: 1.0, SourceKind.OSINT_SOCIAL: 1.0, SourceKind.MARKET_PRICE: 1.0,
    SourceKind.MARKET_VOLUME: 1.0, SourceKind.SENSOR: 0.3,
}


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


#: stations per kind in one region of a compact scenario fleet
COMPACT_REGION: dict[SourceKind, int] = {
    SourceKind.OSINT_NEWS: 4, SourceKind.OSINT_SOCIAL: 5, SourceKind.MARKET_PRICE: 2,
    SourceKind.MARKET_VOLUME: 2, SourceKind.SENSOR: 3,
}


def compact_fleet(regions: Sequence[str] = ("mena", "eu-west"), *, seed: int = 0,
                  per_region: dict[SourceKind, int] | None = None,
                  news_per_wire: int = 2) -> list[StationInfo]:
    """A small fleet for scenario campaigns: every kind in every region (16 per region
    by default), news stations sharing a wire ``news_per_wire`` at a time, market
    stations sharing their region's exchange, social and sensor stations independent."""
    rng = np.random.default_rng([seed, 17])
    mix = per_region or COMPACT_REGION
    fleet: list[StationInfo] = []
    for region in regions:
        for kind in SOURCE_KINDS:
            for i in range(mix.get(kind, 0)):
                short = kind.value.split("_")[-1]
                sid = f"{short}-{region}-{i:03d}"
                if kind == SourceKind.OSINT_NEWS:
                    group = f"wire-{region}-{i // max(news_per_wire, 1):02d}"
                elif kind in MARKET_KINDS:
                    group = f"exchange-{region}"
                else:
                    group = sid
                rate = FLEET_MIX[kind][1] * float(rng.uniform(0.7, 1.3))
                fleet.append(StationInfo(sid, kind, region, group,
                                         name=f"{kind.value} {region} #{i}",
                                         rate_per_s=round(rate, 3)))
    return fleet


def pick(rng: np.random.Generator, fleet: Sequence[StationInfo], region: str | None,
         kinds: frozenset[SourceKind] | set[SourceKind], share: float) -> list[int]:
    """A random ``share`` (at least one) of the stations of ``kinds`` in ``region``."""
    pool = [i for i, s in enumerate(fleet) if (region is None or s.region == region)
            and s.kind in kinds]
    k = max(1, round(share * len(pool))) if pool else 0
    return sorted(int(i) for i in rng.choice(pool, size=k, replace=False)) if k else []


_pick = pick


def convergence_episode(rng: np.random.Generator, fleet: Sequence[StationInfo], start_s: float,
                        duration_s: float = 7.0, region: str | None = None) -> Episode:
    """A genuine convergence: news, social, sensors and market volume in one region."""
    region = region or REGIONS[int(rng.integers(0, len(REGIONS)))]
    kinds = {SourceKind.OSINT_NEWS, SourceKind.OSINT_SOCIAL, SourceKind.SENSOR,
             SourceKind.MARKET_VOLUME}
    stations = pick(rng, fleet, region, kinds, 0.6)
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
    return Scenario(stations, episodes, seed, duration_s=horizon_s)


def random_scenario(fleet: list[StationInfo], seed: int, horizon_s: float,
                    p_genuine: float = 0.5) -> Scenario:
    """A training/evaluation scenario: random decoys, and a genuine convergence with
    probability ``p_genuine``, with varied strength, size and duration.

    Used to make labelled runs for the learned meter; harder than the default demo
    scenario (weaker convergences, overlapping decoys) so a model trained on it has to
    work. A convergence that keeps too few stations to be one is not genuine (see
    :meth:`Scenario.truths`).
    """
    rng = np.random.default_rng([seed, 2])
    episodes: list[Episode] = []
    for _ in range(int(rng.integers(0, 3))):
        start = float(rng.uniform(5.0, max(horizon_s - 10.0, 6.0)))
        maker = lone_surge_episode if rng.random() < 0.5 else market_move_episode
        ep = maker(rng, fleet, start, float(rng.uniform(3.0, 8.0)))
        episodes.append(replace(ep, rate_mult=float(rng.uniform(3.0, 9.0))))
    if rng.random() < p_genuine:
        start = float(rng.uniform(8.0, max(horizon_s - 15.0, 9.0)))
        ep = convergence_episode(rng, fleet, start, float(rng.uniform(4.0, 10.0)))
        share = float(rng.uniform(0.25, 1.0))
        keep = tuple(s for s in ep.stations if rng.random() < share) or ep.stations[:1]
        episodes.append(replace(ep, stations=keep, rate_mult=float(rng.uniform(2.0, 7.0))))
    return Scenario(fleet, sorted(episodes, key=lambda e: e.start_s), seed, duration_s=horizon_s)


class SyntheticWorld:
    """What a scenario means at any time, vectorised over stations (module docstring).

    ``SyntheticWorld(scenario)`` is one run: methods return ``(stations,)`` arrays (or
    ``(times, stations)`` for an array of times). :meth:`batch` holds many runs of
    scenarios that share one fleet layout (a Monte Carlo batch): methods return
    ``(runs, stations)``. Both are the same code, so a live synthetic station and a
    simulated run draw from identical numbers.
    """

    def __init__(self, scenario: Scenario | Sequence[Scenario], *, n_bins: int = 16) -> None:
        from convergence.detectors.ingest import category_bin

        scs = [scenario] if isinstance(scenario, Scenario) else list(scenario)
        if not scs:
            raise ValueError("a world needs at least one scenario")
        self.batched = not isinstance(scenario, Scenario)
        self.scenario = scs[0]
        self.scenarios = scs
        fleet = scs[0].fleet
        self.n = n = len(fleet)
        if any(len(sc.fleet) != n for sc in scs):
            raise ValueError("every scenario of a batch must share the same fleet layout")
        self.n_runs = r_n = len(scs)
        self.n_bins = n_bins
        self.kind_idx = np.array([KIND_INDEX[s.kind.value] for s in fleet], dtype=np.int64)
        self.categories = [CATEGORIES[s.kind] for s in fleet]
        self.declared_rate = np.array([s.rate_per_s for s in fleet], dtype=np.float64)
        scale = np.ones((r_n, n))
        for r, sc in enumerate(scs):
            if sc.rate_scale is not None:
                scale[r] = sc.rate_scale
        self.base_rates = self.declared_rate * scale  # (R, N)
        self.base_rate = self.base_rates[0]
        shape = np.array([DAILY_SHAPE[s.kind] for s in fleet])
        self._daily = np.array([sc.daily_amplitude for sc in scs])[:, None] * shape  # (R, N)
        self._epoch = np.array([sc.epoch_s for sc in scs])[:, None]
        self._peak = np.array([sc.daily_peak_hour for sc in scs])[:, None]
        self._noise = np.array([sc.noise for sc in scs])[:, None]
        n_ep = max(len(sc.episodes) for sc in scs)
        self._n_ep = n_ep
        self._members = np.zeros((r_n, n_ep, n), bool)
        self._start = np.full((r_n, n_ep, n), np.inf)
        self._end = np.full((r_n, n_ep, 1), -np.inf)
        self._logmult = np.zeros((r_n, n_ep, 1))
        self._ramp = np.zeros((r_n, n_ep, 1))
        self._period = np.zeros((r_n, n_ep, 1))
        self._outage = np.zeros((r_n, n_ep, 1), bool)
        self._topic = np.full((r_n, n_ep, 1), -1, np.int64)
        self._share = np.zeros((r_n, n_ep, 1))
        self._bad = np.zeros((r_n, n_ep, 1))
        self._dup = np.zeros((r_n, n_ep, 1))
        self._lag = np.zeros((r_n, n_ep, 1))
        self._topic_names: dict[int, str] = {}
        for r, sc in enumerate(scs):
            for j, ep in enumerate(sc.episodes):
                for k, i in enumerate(ep.stations):
                    self._members[r, j, i] = True
                    self._start[r, j, i] = ep.onset_of(k)
                self._end[r, j] = ep.end_s
                self._logmult[r, j] = math.log(ep.rate_mult) if ep.rate_mult > 0 else 0.0
                self._ramp[r, j] = ep.ramp_s
                self._period[r, j] = ep.period_s
                self._outage[r, j] = ep.kind == "outage"
                if ep.topic is not None:
                    b = category_bin(ep.topic, n_bins)
                    self._topic[r, j] = b
                    self._topic_names[b] = ep.topic
                    self._share[r, j] = ep.topic_share
                self._bad[r, j] = ep.bad_rate
                self._dup[r, j] = ep.dup_rate
                self._lag[r, j] = ep.replay_lag_s
        self._bad_base = np.array([sc.bad_rate for sc in scs])[:, None]
        self._dup_base = np.array([sc.dup_rate for sc in scs])[:, None]
        # category bins: each station's own categories (a topic may add one more)
        self._cat_bins = [tuple(category_bin(c, n_bins) for c in cats) for cats in self.categories]
        base = np.zeros((n, n_bins))
        for s_, bins in enumerate(self._cat_bins):
            for b in bins:
                base[s_, b] += 1.0 / len(bins)
        self.base_bins = base
        self._wander = []
        for sc in scs:
            rng = np.random.default_rng([sc.seed, 19])
            self._wander.append((rng.uniform(60.0, 400.0, (2, n)), rng.uniform(0, 2 * np.pi, (2, n))))
        self._wper = np.stack([w[0] for w in self._wander])  # (R, 2, N)
        self._wph = np.stack([w[1] for w in self._wander])

    @classmethod
    def batch(cls, scenarios: Sequence[Scenario], *, n_bins: int = 16) -> SyntheticWorld:
        """Many runs at once (see the class docstring)."""
        return cls(list(scenarios), n_bins=n_bins)

    # -- vectorised ---------------------------------------------------------------
    def _times(self, t_s: float | F64) -> F64:
        """Times as ``(R, 1, N or 1)`` for the episode arrays ``(R, E, N)``."""
        t = np.asarray(t_s, dtype=np.float64)
        if t.ndim == 0:
            return t.reshape(1, 1, 1)
        if t.shape[-1] != self.n:
            raise ValueError(f"times must be a scalar or end with the {self.n} stations")
        return t.reshape((-1, 1, self.n)) if t.ndim == 2 else t.reshape(1, 1, self.n)

    def _on(self, t: F64) -> npt.NDArray[np.bool_]:
        on = (t >= self._start) & (t < self._end) & self._members
        if np.any(self._period > 0):
            per = np.where(self._period > 0, self._period, 1.0)
            since = np.where(np.isfinite(self._start), t - self._start, 0.0)
            phase = np.mod(since, per)
            on &= (self._period <= 0) | (phase < 0.5 * per)
        return on  # (R, E, N)

    def _out(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return x if self.batched else x[0]

    def rates(self, t_s: float | F64) -> F64:
        """Events per second per station at time ``t_s`` (a scalar, or one time per
        station, e.g. each station's skewed clock, ``(stations,)`` or ``(runs, stations)``).
        Returns ``(stations,)`` for one run, ``(runs, stations)`` for a batch.

        A single run also takes an array of times ``(T,)`` and returns ``(T, stations)``.
        """
        t_arr = np.asarray(t_s, dtype=np.float64)
        if not self.batched and t_arr.ndim == 1 and t_arr.shape[0] != self.n:
            return np.stack([self.rates(float(x)) for x in t_arr])
        t = self._times(t_arr)
        on = self._on(t)
        f = np.where(self._ramp > 0, np.clip((t - self._start) / np.where(self._ramp > 0, self._ramp, 1.0),
                                             0.0, 1.0), 1.0)
        log_boost = (np.where(on & ~self._outage, f * self._logmult, 0.0)).sum(axis=1)  # (R, N)
        outage = (on & self._outage).any(axis=1)
        tt = t[:, 0, :]  # (R or 1, N or 1)
        mult = np.ones_like(log_boost)
        if np.any(self._daily):
            hour = np.mod((self._epoch + tt) / 3600.0, 24.0)
            mult = mult * (1.0 + self._daily * np.cos(2 * np.pi * (hour - self._peak) / 24.0))
        if np.any(self._noise):
            w = np.sin(2 * np.pi * tt[:, None, :] / self._wper + self._wph).sum(1)
            mult = mult * np.exp(self._noise * w / np.sqrt(2.0))
        r = self.base_rates * mult * np.exp(log_boost)
        return self._out(np.where(outage, 0.0, r))

    def usual_rates(self, t_s: float) -> F64:
        """What a station that has run for weeks expects at ``t_s``: its declared rate
        shaped by the daily rhythm (no episodes, no wander) — what baselines are seeded
        with. ``(stations,)`` or ``(runs, stations)``."""
        hour = np.mod((self._epoch + t_s) / 3600.0, 24.0)
        mult = 1.0 + self._daily * np.cos(2 * np.pi * (hour - self._peak) / 24.0)
        return self._out(self.declared_rate * mult)

    def daily_profile(self, slots_per_day: int) -> F64:
        """Usual rate (events/s) per slot of the day: ``(..., stations, slots)``."""
        centers = (np.arange(slots_per_day) + 0.5) * 86400.0 / slots_per_day
        hour = centers / 3600.0
        mult = 1.0 + self._daily[..., None] * np.cos(
            2 * np.pi * (hour - self._peak[..., None]) / 24.0)
        return self._out(self.declared_rate[:, None] * mult)

    def dark(self, t_s: float | F64, after_s: float | F64 = 0.0) -> npt.NDArray[np.bool_]:
        """Stations whose source has been failing (an outage) for at least ``after_s``."""
        t = self._times(t_s)
        now = (self._on(t) & self._outage).any(axis=1)
        if np.any(np.asarray(after_s) > 0):
            lag = np.asarray(after_s, np.float64)
            then = (self._on(t - (self._times(lag) if lag.ndim else lag)) & self._outage).any(axis=1)
            now = now & then
        return self._out(np.asarray(now))

    def active(self, t_s: float | F64) -> npt.NDArray[np.bool_]:
        """Which episodes are on (for some station) at ``t_s``: ``(episodes,)`` for one run."""
        t = self._times(t_s)
        return self._out(np.asarray(self._on(t).any(axis=2)))

    def topic_bins(self, t_s: float | F64) -> tuple[npt.NDArray[np.int64], F64]:
        """The topic bin each station reports on at ``t_s`` (-1: none) and its share.

        Where topic episodes overlap, the earliest-listed one wins.
        """
        t = self._times(t_s)
        on = self._on(t) & (self._topic >= 0)  # (R, E, N)
        if self._n_ep == 0:
            none = np.broadcast_to(np.full((1, self.n), -1, np.int64), (on.shape[0], self.n))
            return self._out(none.copy()), self._out(np.zeros(none.shape))
        first = np.argmax(on, axis=1)  # (R, N): earliest-listed active topic episode
        has = on.any(axis=1)
        topic = np.take_along_axis(np.broadcast_to(self._topic, on.shape), first[:, None, :], 1)[:, 0]
        share = np.take_along_axis(np.broadcast_to(self._share, on.shape), first[:, None, :], 1)[:, 0]
        return self._out(np.where(has, topic, -1)), self._out(np.where(has, share, 0.0))

    def bin_probs(self, t_s: float | F64) -> F64:
        """Category-bin probabilities per station at ``t_s``: ``(..., stations, bins)``."""
        tb, share = self.topic_bins(t_s)
        p = np.broadcast_to(self.base_bins, tb.shape + (self.n_bins,)) * (1.0 - share)[..., None]
        p = p.copy()
        idx = np.nonzero(tb >= 0)
        p[(*idx, tb[idx])] += share[idx]
        return p

    def faults(self, station: int, t_s: float, run: int = 0) -> tuple[float, float, float]:
        """``(bad_rate, dup_rate, replay_lag_s)`` of one station at ``t_s``."""
        bad, dup, lag = self.fault_rates(np.float64(t_s))
        if self.batched:
            return float(bad[run, station]), float(dup[run, station]), float(lag[run, station])
        return float(bad[station]), float(dup[station]), float(lag[station])

    def fault_rates(self, t_s: float | F64) -> tuple[F64, F64, F64]:
        """Per station: share of malformed records, share re-sent, and replay lag (s)."""
        t = self._times(t_s)
        on = self._on(t)
        bad = np.minimum(self._bad_base + np.where(on, self._bad, 0.0).sum(1), 1.0)
        dup = np.minimum(self._dup_base + np.where(on, self._dup, 0.0).sum(1), 1.0)
        lag = np.where(on, self._lag, 0.0).max(1, initial=0.0)
        return self._out(bad), self._out(dup), self._out(lag)

    # -- one station (live sources) -----------------------------------------------
    def station_state(self, station: int, t_s: float) -> tuple[float, str | None]:
        """One station's rate (events/s) and topic at ``t_s`` (one run)."""
        rate = float(self.rates(np.float64(t_s))[..., station].ravel()[0])
        return rate, self.topic_of(station, t_s)

    def topic_of(self, station: int, t_s: float) -> str | None:
        """The topic an active episode concentrates this station's reporting on."""
        tb, _ = self.topic_bins(np.float64(t_s))
        b = int(np.asarray(tb)[..., station].ravel()[0])
        return self._topic_names.get(b) if b >= 0 else None

    def topic_share_of(self, station: int, t_s: float) -> float:
        """The share of reporting on :meth:`topic_of`'s topic."""
        _, share = self.topic_bins(np.float64(t_s))
        v = float(np.asarray(share)[..., station].ravel()[0])
        return v if v > 0 else TOPIC_SHARE

    def category_probs(self, station: int, t_s: float) -> tuple[tuple[str, ...], F64]:
        """Categories of a station and their probabilities at ``t_s``."""
        return self.topic_probs(station, self.topic_of(station, t_s),
                                self.topic_share_of(station, t_s))

    def topic_probs(self, station: int, topic: str | None,
                    share: float = TOPIC_SHARE) -> tuple[tuple[str, ...], F64]:
        """Categories of a station and their probabilities while reporting on ``topic``.

        Without a topic they are uniform; with one, ``share`` of the mass goes to it.
        (The same split :meth:`bin_probs` makes over category bins.)
        """
        cats = self.categories[station]
        p = np.full(len(cats), 1.0 / len(cats))
        if topic is not None:
            if topic not in cats:
                cats = (*cats, topic)
                p = np.append(p, 0.0)
            p = (1.0 - share) * p / p.sum()
            p[cats.index(topic)] += share
        return cats, p

    def failing(self, station: int, t_s: float) -> bool:
        """Is this station's source failing (an outage) at ``t_s``?"""
        return bool(np.asarray(self.dark(np.float64(t_s)))[..., station].ravel()[0])


# -- judging alerts against ground truth --------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How a run's alerts compare with its ground truth."""

    genuine: int
    detected: int
    false_alarms: int
    decoy_alerts: int
    decoys: int
    time_to_detect_s: tuple[float, ...]

    @property
    def missed(self) -> int:
        return self.genuine - self.detected


def judge(truths: Sequence[Truth], decoys: Sequence[Episode],
          alerts: Sequence[tuple[float, str]], *, window_s: float, grace_s: float,
          horizon_s: float) -> Verdict:
    """Score ``alerts`` (scenario time, region) against ground truth.

    An alert *detects* a genuine convergence when it names the convergence's region and
    fires between the convergence's onset and ``window_s + grace_s`` after its end (an
    alert a little before the formal onset, within ``grace_s``, counts too: a cascade's
    first stages may already be enough). Every other alert is a false alarm; one during
    a decoy is also a *decoy alert*. A convergence counts if the run lasted at least
    ``grace_s`` past its onset, or if it was detected before the run ended (a run cut
    short cannot be blamed for missing it, but is credited for catching it); one whose
    onset the run never reached (too few of its stations had joined) is not counted, and
    alerts in its region from ``grace_s`` before that onset are not false either.
    """
    def hits_of(tr: Truth) -> list[int]:
        return [i for i, (at, region) in enumerate(alerts)
                if region == tr.region and tr.onset_s - grace_s <= at <= tr.end_s + window_s + grace_s]

    counted = [t for t in truths if t.onset_s + grace_s <= horizon_s
               or (t.onset_s <= horizon_s and hits_of(t))]
    matched: set[int] = set()
    ttd: list[float] = []
    for tr in counted:
        hits = hits_of(tr)
        if hits:
            ttd.append(round(max(0.0, min(alerts[i][0] for i in hits) - tr.onset_s), 3))
        matched.update(hits)
    # alerts for convergences the run did not last long enough to count are not false
    for tr in truths:
        if tr in counted:
            continue
        matched.update(i for i, (at, region) in enumerate(alerts)
                       if region == tr.region and tr.onset_s - grace_s <= at)
    false = [i for i in range(len(alerts)) if i not in matched]
    seen = [d for d in decoys if d.start_s < horizon_s]

    def during(d: Episode, at: float) -> bool:
        return d.start_s <= at <= d.end_s + window_s + grace_s

    decoy_alerts = [i for i in false if any(during(d, alerts[i][0]) for d in seen)]
    return Verdict(len(counted), len(ttd), len(false), len(decoy_alerts), len(seen), tuple(ttd))


def evaluate(scenario: Scenario, alerts: Sequence[Any], *, t0: float,
             horizon_s: float, window_s: float, grace_s: float = 5.0) -> dict[str, Any]:
    """Score a live run's alerts (:class:`~convergence.records.Alert` s or their dicts)
    against the scenario's ground truth; see :func:`judge`.

    Alert times are in the run's clock; ``t0`` is the scenario's time zero on it.
    """
    pairs = []
    for a in alerts:
        d = a if isinstance(a, dict) else a.to_dict()
        region = d.get("region") or (d.get("regions") or ["unknown"])[0]
        pairs.append((float(d["time_s"]) - t0, str(region)))
    v = judge(scenario.truths(), scenario.decoys(), pairs, window_s=window_s, grace_s=grace_s,
              horizon_s=horizon_s)
    return {
        "genuine": v.genuine, "detected": v.detected, "missed": v.missed,
        "decoys": v.decoys, "decoy_alerts": v.decoy_alerts, "false_alarms": v.false_alarms,
        "time_to_detect_s": list(v.time_to_detect_s),
        "episodes": [e.to_dict() for e in scenario.episodes if e.start_s < horizon_s],
    }

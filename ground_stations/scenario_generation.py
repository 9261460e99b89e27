"""Seeded synthetic fleets and scenarios: who the stations are and what happens to them.

:func:`default_fleet` is the default fleet (every kind in six regions, :data:`FLEET_MIX`
of kinds and background rates, realistic correlation groups); :func:`compact_fleet` a
small one for scenario campaigns. The episode makers draw one episode each
(:func:`convergence_episode`, :func:`lone_surge_episode`, :func:`market_move_episode`,
stations chosen with :func:`pick`); :func:`default_scenario` puts a decoy, a genuine
convergence and a market-wide move in the first 20 seconds, then seeded random
episodes; :func:`random_scenario` makes harder labelled runs for the learned meter.
Every draw comes from the ``seed``. The named scenarios are
:mod:`~convergence.ground_stations.scenario_library`.

Examples
--------
>>> sc = default_scenario(n_stations=50, seed=1, horizon_s=60)
>>> len(sc.fleet), [e.kind for e in sc.episodes][:3]
(50, ['lone_surge', 'convergence', 'market_move'])
>>> len(compact_fleet(("mena",))), default_fleet(50, seed=1) == sc.fleet
(16, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from convergence.ground_stations.scenario_model import Episode, Scenario
from convergence.schema import MARKET_KINDS, OSINT_KINDS, SOURCE_KINDS, SourceKind
from convergence.stations import StationInfo

__all__ = ["COMPACT_REGION", "FLEET_MIX", "REGIONS", "compact_fleet", "convergence_episode",
           "default_fleet", "default_scenario", "lone_surge_episode", "market_move_episode", "pick",
           "random_scenario"]

REGIONS = ("na-east", "na-west", "eu-west", "eu-east", "mena", "apac")
# share of the default fleet per kind and background events per second per station
FLEET_MIX: dict[SourceKind, tuple[float, float]] = {
    SourceKind.OSINT_NEWS: (0.24, 1.5),
    SourceKind.OSINT_SOCIAL: (0.28, 3.0),
    SourceKind.MARKET_PRICE: (0.16, 2.0),
    SourceKind.MARKET_VOLUME: (0.16, 1.5),
    SourceKind.SENSOR: (0.16, 1.0),
}


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

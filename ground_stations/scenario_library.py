"""The scenario library: named, documented scenarios with ground truth.

Every scenario is a registry entry (:class:`ScenarioSpec`): a name, whether it is a
*genuine* convergence (it must alert) or a *decoy* (it must not), a one-paragraph
description, and a builder that makes a :class:`~convergence.ground_stations.scenario.Scenario`
from a random generator and :class:`WorldParams` (effect size, onset jitter, base-rate
spread, background noise). With :data:`NOMINAL` parameters and a seed, a scenario is one
fixed story (what ``convergence run --scenario NAME`` plays); a Monte Carlo campaign
samples the parameters per run. Every scenario runs a fleet of at least 16 stations for
at least 256 ticks, and its ground truth (:meth:`~.scenario.Scenario.truths`) says whether,
where and when a convergence happens and which stations are involved.

The same builders drive the live synthetic stations and the simulator: one
implementation of each story.

Examples
--------
>>> len(SCENARIOS), sum(s.genuine for s in SCENARIOS.values())
(41, 22)
>>> sc = build("slow-cascade", seed=3)
>>> len(sc.fleet) >= 16, sc.duration_s / sc.tick_s >= 256
(True, True)
>>> [(t.region, round(t.onset_s)) for t in sc.truths()]
[('mena', 141)]
>>> build("lone-surge", seed=3).truths()
[]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from convergence.ground_stations.scenario import (
    Episode,
    Scenario,
    compact_fleet,
    convergence_onset,
    pick,
)
from convergence.schema import MARKET_KINDS, OSINT_KINDS, SourceKind
from convergence.stations import StationInfo

__all__ = ["NOMINAL", "SCENARIOS", "ScenarioSpec", "WorldParams", "build", "names"]

NEWS, SOCIAL, PRICE, VOLUME, SENSOR = (SourceKind.OSINT_NEWS, SourceKind.OSINT_SOCIAL,
                                       SourceKind.MARKET_PRICE, SourceKind.MARKET_VOLUME,
                                       SourceKind.SENSOR)
ALL_KINDS = frozenset({NEWS, SOCIAL, PRICE, VOLUME, SENSOR})
#: a Monday, 00:00 UTC: scenario time zero of the simulated clock
EPOCH_S = 1_767_571_200.0
TICKS = 256
ONSET_S = 120.0


@dataclass(frozen=True)
class WorldParams:
    """What a Monte Carlo run varies in the world (the detector settings are separate).

    ``effect``: exponent on every episode's rate multiplier (1 = as declared, 0.8 = a
    weaker effect); ``onset_jitter_s``: onsets move by up to this, either way;
    ``rate_spread``: each station's base rate is scaled by ``exp(N(0, rate_spread))``;
    ``noise``: amplitude of a slow wander of each station's log-rate; ``membership``:
    share of an episode's eligible stations that take part.
    """

    effect: float = 1.0
    onset_jitter_s: float = 0.0
    rate_spread: float = 0.0
    noise: float = 0.0
    membership: float = 1.0


NOMINAL = WorldParams()


Builder = Callable[[np.random.Generator, WorldParams], Scenario]


@dataclass(frozen=True)
class ScenarioSpec:
    """One library entry: ``build(rng, params) -> Scenario``."""

    name: str
    genuine: bool
    description: str
    builder: Builder

    def build(self, seed: int, params: WorldParams = NOMINAL) -> Scenario:
        rng = np.random.default_rng([seed, 23])
        sc = self.builder(rng, params)
        sc = replace(sc, name=self.name, seed=seed)
        _check(sc, self)
        return sc

    def to_dict(self) -> dict[str, Any]:
        sc = self.build(0)
        return {"name": self.name, "genuine": self.genuine, "description": self.description,
                "stations": len(sc.fleet), "ticks": round(sc.duration_s / sc.tick_s),
                "tick_s": sc.tick_s,
                "regions": sorted({s.region for s in sc.fleet}),
                "episodes": [e.to_dict() for e in sc.episodes],
                "truth": [{"region": t.region, "onset_s": round(t.onset_s, 1),
                           "end_s": round(t.end_s, 1), "stations": len(t.stations)}
                          for t in sc.truths()]}


def _check(sc: Scenario, spec: ScenarioSpec) -> None:
    ticks = sc.duration_s / sc.tick_s
    if len(sc.fleet) < 16 or ticks < TICKS:
        raise ValueError(f"scenario {spec.name}: {len(sc.fleet)} stations x {ticks:g} ticks; "
                         f"the library needs at least 16 x {TICKS}")
    if spec.genuine and not sc.truths():
        raise ValueError(f"scenario {spec.name} is declared genuine but has no convergence")
    if not spec.genuine and sc.truths():
        raise ValueError(f"scenario {spec.name} is a decoy but holds a convergence")


SCENARIOS: dict[str, ScenarioSpec] = {}


def scenario(name: str, *, genuine: bool) -> Callable[[Builder], Builder]:
    """Register a builder; its docstring is the scenario's description."""
    def deco(fn: Builder) -> Builder:
        doc = " ".join((fn.__doc__ or "").split())
        if not doc:
            raise ValueError(f"scenario {name} needs a docstring")
        SCENARIOS[name] = ScenarioSpec(name, genuine, doc, fn)
        return fn
    return deco


def names(which: str = "all") -> list[str]:
    """Scenario names: ``all``, ``genuine``, ``decoy``, or a comma-separated list."""
    if which == "all":
        return list(SCENARIOS)
    if which in ("genuine", "decoy"):
        return [n for n, s in SCENARIOS.items() if s.genuine == (which == "genuine")]
    out = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in out if n not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; "
                       "`convergence scenarios list` shows them all")
    return out


def build(name: str, seed: int = 0, params: WorldParams = NOMINAL) -> Scenario:
    """The scenario ``name`` for ``seed`` and ``params``."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; `convergence scenarios list` shows them all")
    return SCENARIOS[name].build(seed, params)


# -- helpers shared by the builders ------------------------------------------------------


def _base(rng: np.random.Generator, p: WorldParams, fleet: list[StationInfo],
          episodes: list[Episode], **kw: Any) -> Scenario:
    """Apply the run's parameters to a story: effect size, jitter, rates, noise."""
    if p.rate_spread:
        kw["rate_scale"] = tuple(float(x) for x in np.exp(rng.normal(0, p.rate_spread, len(fleet))))
    out = []
    for e in episodes:
        jitter = float(rng.uniform(-p.onset_jitter_s, p.onset_jitter_s)) if p.onset_jitter_s else 0.0
        mult = e.rate_mult ** p.effect if e.rate_mult > 0 else e.rate_mult
        out.append(replace(e, start_s=max(e.start_s + jitter, 1.0), rate_mult=mult))
    kw.setdefault("duration_s", TICKS * kw.get("tick_s", 1.0))
    kw.setdefault("epoch_s", EPOCH_S + 8 * 3600.0)
    return Scenario(fleet, out, noise=p.noise, **kw)


def _members(rng: np.random.Generator, p: WorldParams, fleet: Sequence[StationInfo],
             region: str | None, kinds: frozenset[SourceKind] | set[SourceKind],
             share: float = 1.0) -> list[int]:
    return pick(rng, fleet, region, kinds, min(1.0, share * p.membership))


def _convergence(rng: np.random.Generator, p: WorldParams, fleet: Sequence[StationInfo],
                 region: str, start_s: float, duration_s: float, *, mult: float = 6.0,
                 kinds: frozenset[SourceKind] | set[SourceKind] = frozenset({NEWS, SOCIAL, SENSOR, VOLUME}),
                 share: float = 0.75, topic: str = "conflict", topic_share: float = 0.7,
                 ramp_s: float = 0.0) -> Episode:
    stations = _members(rng, p, fleet, region, kinds, share)
    ep = Episode("convergence", start_s, duration_s, tuple(stations), mult, topic, region,
                 topic_share=topic_share, ramp_s=ramp_s)
    return _enough(rng, ep, fleet, _of(fleet, region, kinds))


def _enough(rng: np.random.Generator, ep: Episode, fleet: Sequence[StationInfo],
            pool: Sequence[int]) -> Episode:
    """A genuine episode whose sampled membership fell short of a convergence takes more
    of its eligible stations (at the first stage's onset) until it is one: a run's
    ``membership`` thins a convergence, it never turns it into a decoy."""
    rest = [int(i) for i in rng.permutation(list(pool)) if int(i) not in ep.stations]
    while convergence_onset(ep, fleet) is None and rest:
        i = rest.pop(0)
        onsets = (*ep.onsets, 0.0) if ep.onsets else ()
        ep = replace(ep, stations=(*ep.stations, i), onsets=onsets)
    return ep


def _fleet(regions: Sequence[str] = ("mena", "eu-west"), **kw: Any) -> list[StationInfo]:
    return compact_fleet(regions, **kw)


def _of(fleet: Sequence[StationInfo], region: str | None,
        kinds: set[SourceKind] | frozenset[SourceKind]) -> list[int]:
    return [i for i, s in enumerate(fleet) if (region is None or s.region == region) and s.kind in kinds]


# -- genuine convergences (must alert) -----------------------------------------------------


@scenario("simultaneous", genuine=True)
def _simultaneous(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """News, social media, sensors and market volume in one region turn together at once
    (rates six times their background, reporting concentrated on one topic), for 40 s.
    The textbook convergence."""
    fleet = _fleet()
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 40.0)])


@scenario("slow-cascade", genuine=True)
def _slow_cascade(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """An information cascade over minutes: social media in the region rises first,
    the news follows 18 s later, market volume 36 s after that, each staying elevated
    (at a modest four times its rate). It is a convergence once the news joins the
    social chatter; the temporal pattern social -> news -> market should pay off here."""
    fleet = _fleet()
    social = _members(rng, p, fleet, "mena", {SOCIAL}, 0.8)
    news = _members(rng, p, fleet, "mena", {NEWS}, 1.0)
    market = _members(rng, p, fleet, "mena", {VOLUME}, 1.0)
    stations = tuple(social + news + market)
    onsets = tuple([0.0] * len(social) + [18.0] * len(news) + [54.0] * len(market))
    ep = Episode("convergence", ONSET_S, 110.0, stations, 4.0, "energy", "mena",
                 onsets=onsets, ramp_s=6.0)
    return _base(rng, p, fleet, [_enough(rng, ep, fleet, _of(fleet, "mena", {SOCIAL, NEWS}))])


@scenario("market-led", genuine=True)
def _market_led(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A market shock that spreads to OSINT: market prices and volumes in the region
    jump first, news and social media pick it up 10-20 s later. It becomes a
    convergence when two independent OSINT sources have joined the market move."""
    fleet = _fleet()
    market = _members(rng, p, fleet, "mena", {PRICE, VOLUME})
    news = _members(rng, p, fleet, "mena", {NEWS}, 0.75)
    social = _members(rng, p, fleet, "mena", {SOCIAL}, 0.6)
    stations = tuple(market + news + social)
    onsets = tuple([0.0] * len(market) + [10.0] * len(news) + [20.0] * len(social))
    ep = Episode("convergence", ONSET_S, 60.0, stations, 6.0, "economy", "mena", onsets=onsets)
    return _base(rng, p, fleet, [_enough(rng, ep, fleet, _of(fleet, "mena", OSINT_KINDS))])


@scenario("osint-led", genuine=True)
def _osint_led(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """The reverse: news and social media break a story first, sensors and market volume
    in the region follow 15 s later."""
    fleet = _fleet()
    osint = _members(rng, p, fleet, "eu-west", OSINT_KINDS, 0.7)
    rest = _members(rng, p, fleet, "eu-west", {SENSOR, VOLUME}, 0.8)
    onsets = tuple([0.0] * len(osint) + [15.0] * len(rest))
    ep = Episode("convergence", ONSET_S, 60.0, tuple(osint + rest), 6.0, "disaster", "eu-west",
                 onsets=onsets)
    return _base(rng, p, fleet, [_enough(rng, ep, fleet, _of(fleet, "eu-west", OSINT_KINDS))])


@scenario("low-amplitude", genuine=True)
def _low_amplitude(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A weak convergence: most stations of the region move only 2.5 times their
    background rate, for 60 s, with a topic concentrating their reporting. No single
    station is alarming; many independent ones at once are."""
    fleet = _fleet()
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 60.0, mult=2.5,
                                              kinds={NEWS, SOCIAL, SENSOR, VOLUME, PRICE},
                                              share=0.9, topic_share=0.8)])


@scenario("topic-only", genuine=True)
def _topic_only(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Rates barely move (x1.3) but every OSINT and sensor station of the region starts
    reporting on one topic (90% of their reports): only the category entropy can carry
    this one."""
    fleet = _fleet()
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 60.0, mult=1.3,
                                              kinds={NEWS, SOCIAL, SENSOR}, share=1.0,
                                              topic="conflict", topic_share=0.9)])


@scenario("outage-hidden", genuine=True)
def _outage_hidden(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence partly hidden by an outage: half the region's sensors and one news
    wire fail just as it starts; the remaining news, social and volume stations carry it."""
    fleet = _fleet()
    ep = _convergence(rng, p, fleet, "mena", ONSET_S, 50.0)
    dark = [i for i in ep.stations if fleet[i].kind == SENSOR][::2] + \
        [i for i in ep.stations if fleet[i].kind == NEWS][:1]
    keep = tuple(i for i in ep.stations if i not in dark)
    out = Episode("outage", ONSET_S - 2.0, 60.0, tuple(dark), 0.0, None, "mena")
    return _base(rng, p, fleet, [replace(ep, stations=keep), out])


@scenario("duplicated-feeds", genuine=True)
def _duplicated_feeds(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence amid duplicated feeds: during it, the region's stations re-send
    30% of their events (a retrying upstream), and the background carries 5% duplicates.
    Deduplication by event id must keep the counts honest."""
    fleet = _fleet()
    ep = _convergence(rng, p, fleet, "mena", ONSET_S, 40.0)
    dup = Episode("duplicate_flood", ONSET_S, 40.0, tuple(_of(fleet, "mena", ALL_KINDS)), 1.0,
                  None, "mena", dup_rate=0.3)
    return _base(rng, p, fleet, [ep, dup], dup_rate=0.05)


@scenario("two-regions", genuine=True)
def _two_regions(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Two regions converge at once (different stories, overlapping in time): each must
    get its own alert and report."""
    fleet = _fleet()
    a = _convergence(rng, p, fleet, "mena", ONSET_S, 45.0, topic="conflict")
    b = _convergence(rng, p, fleet, "eu-west", ONSET_S + 8.0, 45.0, topic="energy")
    return _base(rng, p, fleet, [a, b])


@scenario("daily-peak", genuine=True)
def _daily_peak(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence during the daily peak: one-minute ticks across the busiest hours of
    a strong daily rhythm (rates swing 2.5x between night and afternoon), and at 14:00
    the region's stations jump four times above their usual afternoon level."""
    fleet = _fleet()
    ep = _convergence(rng, p, fleet, "mena", 150 * 60.0, 30 * 60.0, mult=4.0)
    return _base(rng, p, fleet, [ep], tick_s=60.0, daily_amplitude=0.45, daily_peak_hour=14.0,
                 epoch_s=EPOCH_S + 11.5 * 3600.0)


@scenario("shared-wire", genuine=True)
def _shared_wire(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Half the region's stations share one wire service: six news stations carry the
    same wire, so they count as one source; the convergence must stand on the wire plus
    independent social, sensor and volume stations."""
    fleet = _fleet(per_region={NEWS: 6, SOCIAL: 4, PRICE: 2, VOLUME: 2, SENSOR: 3}, news_per_wire=6)
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 40.0, share=0.8)])


@scenario("brief", genuine=True)
def _brief(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A brief convergence: the region's news, social, sensor and volume stations spike
    eight times their rate for just 6 s."""
    fleet = _fleet()
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 6.0, mult=8.0)])


@scenario("sustained", genuine=True)
def _sustained(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A long convergence: two minutes of elevated activity across the region. One alert
    per level, not a flapping meter."""
    fleet = _fleet()
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", 60.0, 120.0, mult=4.0,
                                              ramp_s=10.0)])


@scenario("sensor-led", genuine=True)
def _sensor_led(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """An earthquake: the region's seismic sensors fire first, social media reacts within
    5 s and the news within 20 s; markets follow."""
    fleet = _fleet()
    sensors = _members(rng, p, fleet, "mena", {SENSOR})
    social = _members(rng, p, fleet, "mena", {SOCIAL}, 0.8)
    news = _members(rng, p, fleet, "mena", {NEWS}, 0.75)
    vol = _members(rng, p, fleet, "mena", {VOLUME})
    stations = tuple(sensors + social + news + vol)
    onsets = tuple([0.0] * len(sensors) + [5.0] * len(social) + [20.0] * len(news)
                   + [30.0] * len(vol))
    ep = Episode("convergence", ONSET_S, 70.0, stations, 7.0, "disaster", "mena", onsets=onsets)
    return _base(rng, p, fleet, [_enough(rng, ep, fleet, _of(fleet, "mena", {SENSOR, SOCIAL}))])


@scenario("convergence-after-decoy", genuine=True)
def _after_decoy(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A lone noisy social station in the region surges for 30 s; 20 s after it calms,
    the real convergence comes. The decoy must not alert; the convergence must."""
    fleet = _fleet()
    loud = _of(fleet, "mena", {SOCIAL})[0]
    lone = Episode("lone_surge", 60.0, 30.0, (loud,), 8.0, "rumour", "mena")
    ep = _convergence(rng, p, fleet, "mena", 110.0, 40.0)
    return _base(rng, p, fleet, [lone, ep])


@scenario("after-market-move", genuine=True)
def _after_market_move(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A market-wide move with no OSINT behind it (must not alert), then, a minute later,
    a genuine convergence in one region."""
    fleet = _fleet()
    move = Episode("market_move", 50.0, 20.0, tuple(_of(fleet, None, MARKET_KINDS)), 5.0, None,
                   "global")
    ep = _convergence(rng, p, fleet, "eu-west", 130.0, 40.0)
    return _base(rng, p, fleet, [move, ep])


@scenario("amid-bad-records", genuine=True)
def _amid_bad_records(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence while a fifth of the region's records are malformed (a broken
    upstream parser): the bad records become dead letters, the good ones still converge."""
    fleet = _fleet()
    ep = _convergence(rng, p, fleet, "mena", ONSET_S, 40.0)
    bad = Episode("bad_flood", ONSET_S - 20.0, 80.0, tuple(_of(fleet, "mena", ALL_KINDS)), 1.0,
                  None, "mena", bad_rate=0.2)
    return _base(rng, p, fleet, [ep, bad])


@scenario("skewed-clocks", genuine=True)
def _skewed_clocks(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence whose stations' clocks disagree by up to a second either way (inside
    the allowed lateness): their ticks straddle, the meter must still see them together."""
    fleet = _fleet()
    skews = tuple(float(x) for x in rng.uniform(-1.0, 1.0, len(fleet)))
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "mena", ONSET_S, 40.0)],
                 skews_s=skews)


@scenario("noisy-background", genuine=True)
def _noisy_background(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence over a restless background: every station's rate wanders by about
    +-40% over minutes. Baselines must follow the wander and still see the convergence."""
    fleet = _fleet()
    return _base(rng, replace(p, noise=max(p.noise, 0.35)), fleet,
                 [_convergence(rng, p, fleet, "mena", ONSET_S, 40.0)])


@scenario("repeated", genuine=True)
def _repeated(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Two convergences in the same region, a minute apart: two episodes, two alerts, two
    reports."""
    fleet = _fleet()
    a = _convergence(rng, p, fleet, "mena", 70.0, 20.0, topic="conflict")
    b = _convergence(rng, p, fleet, "mena", 160.0, 25.0, topic="energy")
    return _base(rng, p, fleet, [a, b])


@scenario("small-region", genuine=True)
def _small_region(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A convergence in a region with few stations (two news outlets on separate wires,
    two social accounts, one sensor) next to a large one: few voices, all of them moving."""
    big = compact_fleet(("eu-west",), per_region={NEWS: 4, SOCIAL: 5, PRICE: 2, VOLUME: 2, SENSOR: 3})
    small = compact_fleet(("apac",), per_region={NEWS: 2, SOCIAL: 2, PRICE: 0, VOLUME: 0, SENSOR: 1},
                          news_per_wire=1)
    fleet = big + small
    return _base(rng, p, fleet, [_convergence(rng, p, fleet, "apac", ONSET_S, 40.0, share=1.0,
                                              kinds={NEWS, SOCIAL, SENSOR})])


@scenario("quarantined-station", genuine=True)
def _quarantined_station(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A noisy news station in the region shouts alone for 40 s and gets quarantined;
    later the region converges without it."""
    fleet = _fleet()
    loud = _of(fleet, "mena", {NEWS})[0]
    lone = Episode("lone_surge", 30.0, 45.0, (loud,), 9.0, "rumour", "mena")
    ep = _convergence(rng, p, fleet, "mena", 150.0, 40.0)
    ep = replace(ep, stations=tuple(i for i in ep.stations if i != loud))
    return _base(rng, p, fleet, [lone, ep])


# -- decoys (must not alert) ---------------------------------------------------------------


@scenario("lone-surge", genuine=False)
def _lone_surge(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """One social station surges alone, eight times its rate, on one topic, for 40 s:
    a noisy feed, not a convergence."""
    fleet = _fleet()
    i = int(rng.choice(_of(fleet, "mena", OSINT_KINDS)))
    return _base(rng, p, fleet, [Episode("lone_surge", ONSET_S, 40.0, (i,), 8.0, "rumour", "mena")])


@scenario("market-move", genuine=False)
def _market_move(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Every market price and volume station in every region moves together (five times
    its rate) for 40 s, and no OSINT source says anything: a market-wide move."""
    fleet = _fleet()
    return _base(rng, p, fleet, [Episode("market_move", ONSET_S, 40.0,
                                         tuple(_of(fleet, None, MARKET_KINDS)), 5.0, None, "global")])


@scenario("market-move-one-echo", genuine=False)
def _market_move_echo(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A market-wide move echoed by a single social account: one OSINT voice repeating
    the market is not independent corroboration."""
    fleet = _fleet()
    echo = _of(fleet, "mena", {SOCIAL})[1]
    move = Episode("market_move", ONSET_S, 40.0, tuple(_of(fleet, None, MARKET_KINDS)), 5.0,
                   None, "global")
    lone = Episode("lone_surge", ONSET_S + 3.0, 35.0, (echo,), 6.0, "economy", "mena")
    return _base(rng, p, fleet, [move, lone])


@scenario("daily-cycle", genuine=False)
def _daily_cycle(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """The morning ramp of a strong daily rhythm, in one-minute ticks from 05:00 to 09:48:
    every station's rate rises about threefold, together, as it does every day."""
    fleet = _fleet()
    return _base(rng, p, fleet, [], tick_s=60.0, daily_amplitude=0.5, daily_peak_hour=14.0,
                 epoch_s=EPOCH_S + 5 * 3600.0)


@scenario("holiday-lull", genuine=False)
def _holiday_lull(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A holiday: in the middle of the run every station of every region drops to 40% of
    its usual rate for two minutes. Silence everywhere is not a convergence."""
    fleet = _fleet()
    return _base(rng, p, fleet, [Episode("lull", ONSET_S, 120.0, tuple(range(len(fleet))), 0.4,
                                         None, "global", ramp_s=10.0)])


@scenario("repeating-feed", genuine=False)
def _repeating_feed(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A stuck feed: one news station re-sends the same story over and over (ten times its
    rate, every report on one category) for 50 s."""
    fleet = _fleet()
    i = _of(fleet, "eu-west", {NEWS})[2]
    return _base(rng, p, fleet, [Episode("repeat", ONSET_S, 50.0, (i,), 10.0, "politics",
                                         "eu-west", topic_share=1.0)])


@scenario("common-upstream", genuine=False)
def _common_upstream(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Six news stations carrying one wire service burst together: one upstream source,
    counted once; with nothing else moving it must not alert."""
    fleet = _fleet(per_region={NEWS: 6, SOCIAL: 4, PRICE: 2, VOLUME: 2, SENSOR: 3}, news_per_wire=6)
    news = tuple(_of(fleet, "mena", {NEWS}))
    return _base(rng, p, fleet, [Episode("common_source", ONSET_S, 40.0, news, 7.0, "politics",
                                         "mena")])


@scenario("clock-skew", genuine=False)
def _clock_skew(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Three stations with badly set clocks: one runs 4 s fast, two run 3-5 s slow (their
    events arrive after their ticks closed and are dead-lettered). Nothing happens in the
    world: late and early events must not look like a surge or a silence."""
    fleet = _fleet()
    skews = [0.0] * len(fleet)
    picks = rng.choice(_of(fleet, "mena", ALL_KINDS), size=3, replace=False)
    for j, s in zip(picks, (4.0, -3.0, -5.0), strict=True):
        skews[int(j)] = s
    return _base(rng, p, fleet, [], skews_s=tuple(skews))


@scenario("sensors-dark", genuine=False)
def _sensors_dark(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A sensor network going dark: every sensor in the region fails at once for a minute
    (their agents' breakers open). One kind of source failing is not a convergence."""
    fleet = _fleet()
    return _base(rng, p, fleet, [Episode("outage", ONSET_S, 60.0, tuple(_of(fleet, "mena", {SENSOR})),
                                         0.0, None, "mena")])


@scenario("flapping-station", genuine=False)
def _flapping(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A flapping station: one social account switches between silence-level and six
    times its rate every 8 s for two minutes."""
    fleet = _fleet()
    i = _of(fleet, "mena", {SOCIAL})[3]
    return _base(rng, p, fleet, [Episode("flap", 80.0, 120.0, (i,), 6.0, "rumour", "mena",
                                         period_s=16.0)])


@scenario("bad-record-flood", genuine=False)
def _bad_flood(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A flood of bad records: for a minute, 60% of everything the region's stations send
    is malformed. Dead letters, not a convergence."""
    fleet = _fleet()
    return _base(rng, p, fleet, [Episode("bad_flood", ONSET_S, 60.0, tuple(_of(fleet, "mena", ALL_KINDS)),
                                         1.0, None, "mena", bad_rate=0.6)])


@scenario("old-data-replay", genuine=False)
def _old_replay(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A replay of old data: for a minute, the region's news and social stations also
    re-publish yesterday's items (as many again as they send today, stamped a day ago).
    Old news is dead-lettered, not counted as today's surge."""
    fleet = _fleet()
    st = tuple(_of(fleet, "mena", OSINT_KINDS))
    return _base(rng, p, fleet, [Episode("old_replay", ONSET_S, 60.0, st, 1.0, None, "mena",
                                         replay_lag_s=86_400.0, dup_rate=0.0)])


@scenario("viral-storm", genuine=False)
def _viral(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A one-kind viral storm: every social account in both regions explodes on one topic
    (seven times its rate) for 50 s, and nothing else moves."""
    fleet = _fleet()
    return _base(rng, p, fleet, [Episode("viral", ONSET_S, 50.0, tuple(_of(fleet, None, {SOCIAL})),
                                         7.0, "sports", "global", topic_share=0.8)])


@scenario("pure-noise", genuine=False)
def _pure_noise(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Nothing happens: background activity only, with the usual sprinkling of duplicates,
    bad records and small clock skews."""
    fleet = _fleet(("mena", "eu-west", "apac"))
    return _base(rng, p, fleet, [])


@scenario("staggered-lone-surges", genuine=False)
def _staggered(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Three OSINT stations of one region surge one after another, each alone for 12 s,
    with a minute of calm between them: not together, so not a convergence."""
    fleet = _fleet()
    st = _of(fleet, "mena", {SOCIAL})[:3]
    eps = [Episode("lone_surge", 60.0 + 70.0 * k, 12.0, (i,), 8.0, "rumour", "mena")
           for k, i in enumerate(st)]
    return _base(rng, p, fleet, eps)


@scenario("slow-drift", genuine=False)
def _slow_drift(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """A slow trend: every station's activity climbs steadily to 1.8 times its rate over
    the whole run (a story building over hours, in one-minute ticks). Trends are absorbed,
    not alerted on."""
    fleet = _fleet()
    ep = Episode("drift", 60.0 * 20, 60.0 * 270, tuple(range(len(fleet))), 1.8, None, "global",
                 ramp_s=60.0 * 240)
    return _base(rng, p, fleet, [ep], tick_s=60.0)


@scenario("level-shift", genuine=False)
def _level_shift(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """One station's background rate doubles for good (a new feed configuration) and
    stays there. A single station's lasting change is not a convergence."""
    fleet = _fleet()
    i = _of(fleet, "mena", {SOCIAL})[0]
    return _base(rng, p, fleet, [Episode("level_shift", ONSET_S, 200.0, (i,), 2.0, None, "mena")])


@scenario("topic-drift", genuine=False)
def _topic_drift(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """One news station starts reporting almost only on one topic (a beat reporter's
    feed) at its usual rate: a lone entropy drop."""
    fleet = _fleet()
    i = _of(fleet, "eu-west", {NEWS})[0]
    return _base(rng, p, fleet, [Episode("topic_drift", ONSET_S, 100.0, (i,), 1.0, "tech",
                                         "eu-west", topic_share=0.95)])


@scenario("bursty-social", genuine=False)
def _bursty_social(rng: np.random.Generator, p: WorldParams) -> Scenario:
    """Heavy-tailed social chatter: the region's social accounts flap between their usual
    rate and three times it in short bursts, each on its own schedule, for the whole run."""
    fleet = _fleet()
    eps = [Episode("flap", float(rng.uniform(20, 60)), 200.0, (i,), 3.0, None, "mena",
                   period_s=float(rng.uniform(6, 14)))
           for i in _of(fleet, "mena", {SOCIAL})]
    return _base(rng, p, fleet, eps)

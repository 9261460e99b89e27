"""The cluster benchmark's synthetic fleet, as the Kafka messages its stations send.

:class:`BacklogPlan` says what the fleet sends: the default fleet's ids, kinds, regions
and correlation groups, each station at ``rate_scale`` times its declared rate, with the
default scenario's random episodes in the backlog and ``live_episodes`` genuine
convergences after it. :func:`backlog_messages` draws it poll interval by poll interval:
each station's events of one interval are one :class:`Message` keyed by its id, the
interval chosen so the mean message holds ``batch`` events (the event stream is the same
whatever the batch size; only its packaging differs). :func:`fleet_toml` is the fleet
file the workers learn those stations from.

Nothing here touches Kafka; :mod:`convergence.simulation.bench_cluster` sends these
messages to a real broker.

Examples
--------
>>> msgs = list(backlog_messages(BacklogPlan(stations=20, seed=3, batch=10, events=500,
...                                          t0_s=1_800_000_000.0)))
>>> sum(m.n_events for m in msgs) >= 500, msgs[0].key.decode().count("-") >= 2
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from convergence.detectors.ingest import category_bin
from convergence.ground_stations.scenario import (
    Episode,
    Scenario,
    SyntheticWorld,
    convergence_episode,
    default_fleet,
    default_scenario,
)
from convergence.schema import OSINT_KINDS, SourceKind
from convergence.wire import WIRE_VERSION

__all__ = ["DEFAULT_BATCH", "DEFAULT_RATE_SCALE", "BacklogPlan", "Message", "backlog_messages",
           "fleet_toml"]

#: how many events one message carries on average, when not told
DEFAULT_BATCH = 10
#: how much busier than declared the synthetic stations are (events per tick, per station)
DEFAULT_RATE_SCALE = 10.0

@dataclass(frozen=True)
class BacklogPlan:
    """What the synthetic fleet sends (see module docstring).

    ``events``: at least this many, in whole poll intervals; ``live_s``: seconds of
    real-time sending after them, with ``live_episodes`` genuine convergences;
    ``t0_s``: the event time of scenario second 0.
    """

    stations: int = 247
    seed: int = 7
    batch: int = DEFAULT_BATCH
    events: int = 200_000
    rate_scale: float = DEFAULT_RATE_SCALE
    t0_s: float = 0.0
    live_s: float = 0.0
    live_episodes: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1 event per message, got {self.batch}")
        if self.events < 1:
            raise ValueError(f"events must be >= 1, got {self.events}")
        if not self.rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale}")

    @property
    def fleet(self) -> list[Any]:
        return default_fleet(self.stations, self.seed)

    @property
    def events_per_s(self) -> float:
        """Events per second of event time from the whole fleet, outside episodes."""
        return float(sum(s.rate_per_s for s in self.fleet)) * self.rate_scale

    @property
    def poll_s(self) -> float:
        """Each station's poll interval: its mean message holds ``batch`` events."""
        return self.batch * self.stations / self.events_per_s

    @cached_property
    def backlog_s(self) -> float:
        """Event-time seconds of the backlog: whole poll intervals until the fleet's
        expected events (its episodes included) reach ``events``."""
        poll = self.poll_s
        world = SyntheticWorld(self._scenario(self._episodes(2.0 * self.events / self.events_per_s
                                                             + 100.0)))
        total, k = 0.0, 0
        while total < self.events:
            total += float(np.sum(world.rates((k + 0.5) * poll))) * poll
            k += 1
        return k * poll

    def _episodes(self, horizon_s: float) -> list[Episode]:
        return list(default_scenario(self.stations, self.seed, horizon_s).episodes)

    def _scenario(self, episodes: list[Episode]) -> Scenario:
        return Scenario(self.fleet, episodes, self.seed, bad_rate=0.0, dup_rate=0.0,
                        max_skew_s=0.0, name="bench-cluster",
                        duration_s=max((e.end_s for e in episodes), default=0.0) + 60.0,
                        rate_scale=(self.rate_scale,) * self.stations)

    def scenario(self) -> Scenario:
        """The scenario behind the backlog and the live phase."""
        fleet = self.fleet
        end = self.backlog_s
        horizon = end + self.live_s + 60.0
        # the default scenario's random episodes in the backlog, well clear of the live
        # phase, whose genuine convergences come one after the other in other regions
        eps: list[Episode] = [e for e in self._episodes(horizon) if e.end_s < end - 10.0]
        rng = np.random.default_rng([self.seed, 81])
        regions = sorted({s.region for s in fleet})
        for k in range(self.live_episodes):
            start = end + 2.0 + k * max(self.live_s - 4.0, 1.0) / max(self.live_episodes, 1)
            eps.append(convergence_episode(rng, fleet, start, 7.0,
                                           region=regions[(k * 2) % len(regions)]))
        return self._scenario(eps)


@dataclass(frozen=True)
class Message:
    """One Kafka message of the fleet: a station's events of one poll interval."""

    key: bytes
    value: bytes
    n_events: int
    region: str
    first_s: float  # event time of its first and last event
    last_s: float
    send_at_s: float  # event time at which the station sends it (its interval's end)


def backlog_messages(plan: BacklogPlan, *, live: bool = False) -> Iterator[Message]:
    """The fleet's messages in sending order: the backlog, or (``live``) what follows it.

    Vectorised over stations per poll interval: one rate and topic look-up per
    interval, numpy draws, one dict per event (what a station's source returns).
    """
    sc = plan.scenario()
    world = SyntheticWorld(sc)
    fleet = sc.fleet
    n = len(fleet)
    rng = np.random.default_rng([plan.seed, 82, int(live)])
    topic_names = {category_bin(e.topic): e.topic for e in sc.episodes if e.topic is not None}
    kinds = [s.kind for s in fleet]
    sids = [s.station_id for s in fleet]
    regions = [s.region for s in fleet]
    groups = [s.correlation_group for s in fleet]
    price = 100.0 * rng.uniform(0.5, 2.0, n)
    poll = plan.poll_s
    k0 = 0 if not live else round(plan.backlog_s / poll)
    k_end = round(plan.backlog_s / poll) if not live else k0 + max(math.ceil(plan.live_s / poll), 0)
    for k in range(k0, k_end):
        a, b = k * poll, (k + 1) * poll
        mid = 0.5 * (a + b)
        rates = np.asarray(world.rates(mid))
        topic_bin, share = (np.asarray(x) for x in world.topic_bins(mid))
        counts = rng.poisson(rates * poll)
        for i in np.flatnonzero(counts).tolist():
            m = int(counts[i])
            topic = topic_names.get(int(topic_bin[i])) if topic_bin[i] >= 0 else None
            cats, p = world.topic_probs(i, topic, float(share[i]))
            picks = rng.choice(len(cats), size=m, p=p)
            times = np.round(np.sort(rng.uniform(a, b, m)) + plan.t0_s, 6)
            values = _values(rng, kinds[i], topic is not None, m, price, i)
            kind = kinds[i].value
            recs: list[dict[str, Any]] = [
                {"station_id": sids[i], "source_kind": kind, "event_time_s": t,
                 "category": cats[c], "value": v, "source": groups[i]}
                for t, c, v in zip(times.tolist(), picks.tolist(), values, strict=True)]
            if kinds[i] in OSINT_KINDS:
                for r in recs:
                    r["text"] = f"{r['category']} reports from {regions[i]}"
            yield Message(sids[i].encode(), orjson.dumps({"v": WIRE_VERSION, "events": recs}),
                          m, regions[i], float(times[0]), float(times[-1]), plan.t0_s + b)


def _values(rng: np.random.Generator, kind: SourceKind, stressed: bool, m: int,
            price: np.ndarray[Any, Any], i: int) -> list[float]:
    """Values as the synthetic source draws them (``price`` walks per station)."""
    s = 1.0 if stressed else 0.0
    if kind == SourceKind.OSINT_NEWS:
        v = np.clip(rng.normal(-0.5 * s, 0.3, m), -1, 1)
    elif kind == SourceKind.OSINT_SOCIAL:
        v = np.round(rng.lognormal(3.0 + s, 1.0, m))
    elif kind == SourceKind.MARKET_PRICE:
        path = price[i] * np.exp(np.cumsum(rng.normal(0.0, 0.004 if stressed else 0.001, m)))
        price[i] = path[-1]
        v = np.round(path, 4)
    elif kind == SourceKind.MARKET_VOLUME:
        v = np.round(rng.lognormal(6.0 + s, 0.8, m))
    else:
        v = rng.normal(13.0 if stressed else 10.0, 1.0, m)
    out: list[float] = v.tolist()
    return out


def fleet_toml(plan: BacklogPlan) -> str:
    """The fleet file the workers learn the stations from (as ``cluster up`` writes one):
    the plan's fleet, each station declaring the rate it sends at."""
    from convergence.ground_stations.fleet import SourceSpec, default_specs, render_fleet

    specs = [replace(sp, source=SourceSpec("synthetic", {
        "rate_per_s": float(sp.source.options["rate_per_s"]) * plan.rate_scale}))
        for sp in default_specs(plan.stations, plan.seed)]
    return render_fleet(specs, seed=plan.seed,
                        comment=f"convergence bench cluster: the default fleet at {plan.rate_scale:g}x "
                                "its rates")

"""Synthetic source: one station's view of a :class:`~.scenario.SyntheticWorld`.

Each poll draws the events that happened since the previous poll from the world's
intensities: a Poisson number of events, uniform times, categories from the
station's (possibly episode-concentrated) distribution and values from a per-kind
model. Data-quality faults from the scenario are injected here, where real feeds
produce them: malformed records, re-sent duplicates, a replay of old items (as many
again, stamped in the past) (the world's :meth:`~.scenario.SyntheticWorld.faults` at that
time), and the station's clock skew. During an outage the source *fails*
(:class:`~.base.SourceError`), as a real feed
that cannot be reached does, so the agent's breaker opens and the station goes dark.
Randomness comes from ``(seed, station)`` only.

Scenario time 0 is ``t0_s`` on the station clock, so a live run starts its scenario
when it starts.

A poll draws at most the last ``max_span_s`` seconds (:data:`MAX_SPAN_S`, 5 s by
default): a longer gap since the previous poll means the station was not sampling
(quarantined, or its loop stalled), and a station that was not sampling does not invent
the past. Drawing the whole gap would send events far older than the pipeline's allowed
lateness, every one a dead letter blaming the station's clock. Sampling intervals longer
than ``max_span_s`` therefore sample only its last ``max_span_s`` seconds.

Examples
--------
>>> import asyncio
>>> from convergence.ground_stations.scenario import default_scenario, SyntheticWorld
>>> world = SyntheticWorld(default_scenario(n_stations=20, seed=3, horizon_s=30))
>>> src = SyntheticSource(world, station=0, t0_s=1000.0, seed=3)
>>> recs = asyncio.run(src.poll(1010.0)) + asyncio.run(src.poll(1014.0))
>>> len(recs) > 0, all(1000.0 + 9 - 1 <= r["event_time_s"] <= 1015 for r in recs if
...                        isinstance(r.get("event_time_s"), float))
(True, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convergence.ground_stations.base import Source, SourceError
from convergence.ground_stations.scenario import SyntheticWorld
from convergence.schema import SourceKind

_BAD_VARIANTS = ("nan_value", "future_time", "missing_category", "huge_text", "string_value")
#: longest span of scenario time one poll draws (see the module docstring)
MAX_SPAN_S = 5.0


class SyntheticSource(Source):
    """Draws one station's events from a synthetic world."""

    kind = "synthetic"

    def __init__(self, world: SyntheticWorld, station: int, t0_s: float, seed: int, *,
                 max_span_s: float = MAX_SPAN_S) -> None:
        if not 0 <= station < world.n:
            raise ValueError(f"station {station} is outside the scenario's {world.n} stations")
        if not max_span_s > 0:
            raise ValueError(f"max_span_s must be > 0, got {max_span_s}")
        self.max_span_s = max_span_s
        self.world = world
        self.station = station
        self.info = world.scenario.fleet[station]
        self._kind = self.info.kind  # StationInfo.kind builds an enum per call: once is enough
        self.t0_s = t0_s
        self._rng = np.random.default_rng([seed, 11, station])
        self.skew_s = world.scenario.skew_of(station)
        self._last_s: float | None = None
        self._price = 100.0 * float(self._rng.uniform(0.5, 2.0))
        self.rate_scale = 1.0  # a station's threshold/sampling commands never change the world

    def _value(self, kind: SourceKind, stressed: bool) -> float:
        r = self._rng
        if kind == SourceKind.OSINT_NEWS:
            return float(np.clip(r.normal(-0.5 if stressed else 0.0, 0.3), -1, 1))
        if kind == SourceKind.OSINT_SOCIAL:
            return float(round(r.lognormal(3.0 + stressed, 1.0)))
        if kind == SourceKind.MARKET_PRICE:
            self._price *= math.exp(r.normal(0.0, 0.004 if stressed else 0.001))
            return round(self._price, 4)
        if kind == SourceKind.MARKET_VOLUME:
            return float(round(r.lognormal(6.0 + stressed, 0.8)))
        return float(r.normal(13.0 if stressed else 10.0, 1.0))

    def draw(self, t_from: float, t_to: float) -> list[dict[str, Any]]:
        """Events in scenario time ``[t_from, t_to)`` (station clock = scenario + t0 + skew)."""
        if t_to <= t_from:
            return []
        r = self._rng
        mid = 0.5 * (t_from + t_to)
        world = self.world
        rate, topic = world.station_state(self.station, mid)
        n = int(r.poisson(rate * (t_to - t_from)))
        if n == 0:
            return []
        cats, p = world.topic_probs(self.station, topic, world.topic_share_of(self.station, mid))
        stressed = topic is not None
        bad_rate, dup_rate, lag_s = world.faults(self.station, mid)
        times = np.sort(r.uniform(t_from, t_to, n)) + self.t0_s + self.skew_s
        picks = r.choice(len(cats), size=n, p=p)
        info = self.info
        out: list[dict[str, Any]] = []
        for t, c in zip(times, picks, strict=True):
            cat = cats[int(c)]
            rec: dict[str, Any] = {
                "station_id": info.station_id, "source_kind": self._kind.value,
                "event_time_s": round(float(t), 6), "category": cat,
                "value": self._value(self._kind, stressed), "source": info.correlation_group,
            }
            if self._kind in (SourceKind.OSINT_NEWS, SourceKind.OSINT_SOCIAL):
                rec["text"] = f"{cat} reports from {info.region}"
            out.append(rec)
        for i in np.flatnonzero(r.random(len(out)) < bad_rate):
            out[int(i)] = self._corrupt(out[int(i)], _BAD_VARIANTS[int(r.integers(len(_BAD_VARIANTS)))])
        dups = [dict(out[int(i)]) for i in np.flatnonzero(r.random(len(out)) < dup_rate)]
        if lag_s > 0:
            # a replay of old data: as many old items again, stamped lag_s in the past
            for rec in out[:]:
                old = dict(rec)
                if isinstance(old.get("event_time_s"), float):
                    old["event_time_s"] = round(old["event_time_s"] - lag_s, 6)
                    old["value"] = self._value(self._kind, stressed)
                    out.append(old)
        return out + dups

    @staticmethod
    def _corrupt(rec: dict[str, Any], how: str) -> dict[str, Any]:
        bad = dict(rec)
        if how == "nan_value":
            bad["value"] = float("nan")
        elif how == "future_time":
            bad["event_time_s"] = rec["event_time_s"] + 86400.0
        elif how == "missing_category":
            del bad["category"]
        elif how == "huge_text":
            bad["text"] = "x" * 100_000
        else:
            bad["value"] = "twelve"
        return bad

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        t = now_s - self.t0_s
        if self.world.failing(self.station, t):
            raise SourceError(f"synthetic station {self.info.station_id}: upstream outage "
                              "(scenario)")
        if self._last_s is None:
            self._last_s = max(0.0, t - 1.0)
        # after a gap (quarantine, a stalled loop) only the last max_span_s seconds are drawn
        t_from, self._last_s = max(self._last_s, t - self.max_span_s), max(self._last_s, t)
        return self.draw(t_from, self._last_s)

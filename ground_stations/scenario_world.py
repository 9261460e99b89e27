"""What a scenario means at any time, vectorised over stations (and runs): the synthetic world.

:class:`SyntheticWorld` is the one implementation of a
:class:`~convergence.ground_stations.scenario_model.Scenario` in numbers: each
station's event rate (background, daily rhythm, slow wander, episodes' multipliers and
ramps), its topic mix (an episode's topic takes ``topic_share`` of the reporting, over
the station's own :data:`CATEGORIES`), whether its source is failing (an outage: the
station goes *dark*), and the faults it injects. Live synthetic stations
(:mod:`~convergence.ground_stations.synthetic`) draw individual events from it; the
simulator draws per-tick cells straight from the same numbers (a batch of runs at once:
:meth:`SyntheticWorld.batch`), so the two never diverge.

Examples
--------
>>> from convergence.ground_stations.scenario_generation import default_scenario
>>> sc = default_scenario(n_stations=50, seed=1, horizon_s=60)
>>> world = SyntheticWorld(sc)
>>> genuine = list(sc.episodes[1].stations)
>>> bool((world.rates(9.0)[genuine] > 3 * world.rates(1.0)[genuine]).all())
True
>>> world.topic_of(genuine[0], 9.0) == sc.episodes[1].topic, world.topic_of(genuine[0], 1.0)
(True, None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.ground_stations.scenario_model import TOPIC_SHARE, Scenario
from convergence.schema import KIND_INDEX, SourceKind

__all__ = ["CATEGORIES", "DAILY_SHAPE", "SyntheticWorld"]

F64 = npt.NDArray[np.float64]
CATEGORIES: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.OSINT_NEWS: ("politics", "conflict", "economy", "energy", "health", "disaster",
                            "tech", "crime"),
    SourceKind.OSINT_SOCIAL: ("politics", "conflict", "economy", "energy", "health", "disaster",
                              "rumour", "sports"),
    SourceKind.MARKET_PRICE: ("trade", "quote", "halt"),
    SourceKind.MARKET_VOLUME: ("block", "retail", "dark"),
    SourceKind.SENSOR: ("seismic", "radiation", "air", "ais", "adsb"),
}
#: per kind: how strongly the daily rhythm moves the rate (1 + a * cos(...)), scaled by a
#: scenario's ``daily_amplitude``
DAILY_SHAPE: dict[SourceKind, float] = {
    SourceKind.OSINT_NEWS: 1.0, SourceKind.OSINT_SOCIAL: 1.0, SourceKind.MARKET_PRICE: 1.0,
    SourceKind.MARKET_VOLUME: 1.0, SourceKind.SENSOR: 0.3,
}


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

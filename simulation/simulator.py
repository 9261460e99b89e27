"""Vectorised scenario runs through the tick processor, responses in the loop.

Many runs of scenarios that share a fleet layout go through the very same
:class:`~convergence.detectors.processor.TickProcessor` as a live run, one tick at a
time, on ``(runs, stations)`` arrays: detectors, temporal patterns, node states, the
per-region meter and the adaptive responses, whose decisions feed back exactly as they
do live — a quarantined station stops sampling and the meter ignores it, a region under
warning gets more sensitive thresholds, burst mode samples the targeted stations faster.

Cells come from the scenario's :class:`~convergence.ground_stations.scenario.SyntheticWorld`
(the same numbers the live synthetic stations draw from). Two ways to make them:

``cells`` (Monte Carlo, fast)
    A Poisson process split by category is independent Poisson counts per category, so
    each tick's category histogram is drawn as ``Poisson(rate * tick_s * p_category)``
    directly. What ingest would do to a station's events is applied to the *rates*:
    a station's clock skew shifts the time it reports and, beyond the allowed lateness,
    loses its events; a station samples every ``interval_s`` (every burst interval in
    burst mode), and the events a poll delivers after their tick closed are lost, so the
    expected share that arrives in time thins the rate; a quarantined station sends
    nothing; an outage makes the station's breaker open after three failed polls (it goes
    *dark*). Re-sent duplicates and malformed records never reach a cell (deduplication
    is exact, dead letters are not counted), so they cost nothing here.
``events`` (Las Vegas, faithful)
    Individual events (with times, categories, content hashes, re-sent duplicates,
    skewed clocks, old replays) are drawn per station and delivered at each station's
    poll times into the real :class:`~convergence.detectors.ingest.TickAccumulator`
    (runs × stations as one flat station axis), whose watermark advances with the
    simulated clock as the embedded runtime's does; late events are dropped as they are
    live.

Examples
--------
>>> from convergence.ground_stations.scenario_library import build, WorldParams
>>> scs = [build("simultaneous", seed=s) for s in range(3)]
>>> res = simulate(scs, seed=0)
>>> res.score.shape == (3, 256, 2), res.regions
(True, ('mena', 'eu-west'))
>>> [sorted({res.regions[r] for _, r in res.alerts(i)}) for i in range(3)]
[['mena'], ['mena'], ['mena']]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from convergence.detectors.chain import DetectorChain, RunParams, StationMeta
from convergence.detectors.ingest import EventColumns, TickAccumulator
from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import Scenario, SyntheticWorld
from convergence.stations import StationRegistry

F64 = npt.NDArray[np.float64]
Mode = Literal["cells", "events"]
#: consecutive failed polls that open a station agent's breaker (the agent's default)
BREAKER_FAILURES = 3


@dataclass
class SimResult:
    """Per-(run, tick, region) meter outputs of a simulation, and the scenarios behind them."""

    scenarios: Sequence[Scenario]
    regions: tuple[str, ...]
    score: npt.NDArray[np.float32]
    level: npt.NDArray[np.int8]
    fired: npt.NDArray[np.bool_]
    tick_s: float
    events: int
    #: fused features per region, ``(runs, ticks, regions, len(FEATURE_NAMES))``, when
    #: asked for (training data for the learned meter)
    features: npt.NDArray[np.float32] | None = None
    osint: npt.NDArray[np.bool_] | None = None
    feature_names: tuple[str, ...] = FEATURE_NAMES
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return int(self.score.shape[0])

    @property
    def n_ticks(self) -> int:
        return int(self.score.shape[1])

    def alerts(self, run: int) -> list[tuple[int, int]]:
        """``(tick, region index)`` of every alert of one run, in order."""
        t, r = np.nonzero(self.fired[run])
        return [(int(a), int(b)) for a, b in zip(t, r, strict=True)]

    def labels(self, grace_ticks: int = 0) -> npt.NDArray[np.bool_]:
        """``(runs, ticks, regions)``: is a genuine convergence under way there and then
        (from its onset to ``grace_ticks`` after its end)?"""
        out = np.zeros(self.fired.shape, bool)
        end_t = (np.arange(self.n_ticks) + 1.0) * self.tick_s
        idx = {r: i for i, r in enumerate(self.regions)}
        for k, sc in enumerate(self.scenarios):
            for tr in sc.truths():
                if tr.region in idx:
                    on = (end_t > tr.onset_s) & (end_t <= tr.end_s + grace_ticks * self.tick_s)
                    out[k, on, idx[tr.region]] = True
        return out


def seed_from_world(proc: TickProcessor, state: dict[str, Any], world: SyntheticWorld,
                    t_s: float) -> None:
    """Seed baselines as a pipeline that has watched the world's stations for weeks would
    hold them at scenario time ``t_s``: the usual count per tick now, and per slot of day.
    The embedded runtime seeds a synthetic scenario the same way."""
    tick_s = proc.tick_s
    usual = np.asarray(world.usual_rates(t_s)) * tick_s
    profile = np.asarray(world.daily_profile(proc.chain.periodicity.slots_per_day)) * tick_s
    shape = state[proc.chain.burst.name]["mu"].shape
    proc.seed_baselines(state, np.broadcast_to(usual, shape),
                        np.broadcast_to(profile, shape + (profile.shape[-1],)))


def _processor(tick_s: float, features: bool) -> TickProcessor:
    return TickProcessor(DetectorChain(meter=ConvergenceMeter(emit_features=features),
                                       tick_s=tick_s))


def simulate(scenarios: Sequence[Scenario], *, seed: int, n_ticks: int | None = None,
             processor: TickProcessor | None = None, params: RunParams | None = None,
             lateness_s: float = 1.5, mode: Mode = "cells", features: bool = False) -> SimResult:
    """Run every scenario (one fleet layout, one tick length) as a batch of runs.

    ``params`` sets meter thresholds, window and pattern weight per run (arrays over the
    runs); ``lateness_s`` is the pipeline's allowed lateness; ``features`` keeps the
    meter's fused features (for training).
    """
    if not scenarios:
        raise ValueError("need at least one scenario")
    sc0 = scenarios[0]
    tick_s = sc0.tick_s
    if any(sc.tick_s != tick_s or sc.epoch_s != sc0.epoch_s for sc in scenarios):
        raise ValueError("every scenario of one simulation must share its tick length and epoch")
    proc = processor or _processor(tick_s, features)
    if proc.tick_s != tick_s:
        raise ValueError(f"the processor's pattern windows assume {proc.tick_s:g} s ticks but the "
                         f"scenarios tick every {tick_s:g} s; build it with tick_s={tick_s:g}")
    if features and not proc.chain.meter.emit_features and proc.chain.meter.scorer is None:
        raise ValueError("features=True needs a meter built with emit_features=True")
    world = SyntheticWorld.batch(scenarios)
    n_ticks = n_ticks or round(sc0.duration_s / tick_s)
    runner = _Runner(world, proc, seed=seed, n_ticks=n_ticks, lateness_s=lateness_s,
                     params=params, features=features)
    return runner.run(mode)


class _Runner:
    def __init__(self, world: SyntheticWorld, proc: TickProcessor, *, seed: int, n_ticks: int,
                 lateness_s: float, params: RunParams | None, features: bool) -> None:
        self.world = world
        self.proc = proc
        self.params = params
        self.features = features
        self.n_ticks = n_ticks
        self.lateness_s = lateness_s
        scs = world.scenarios
        self.scs = scs
        self.tick_s = t_s = scs[0].tick_s
        self.rng = np.random.default_rng([seed, 5, len(scs)])
        self.reg = reg = StationRegistry(list(scs[0].fleet))
        self.meta = StationMeta.from_registry(reg)
        self.regions = tuple(reg.region_names())
        r_n, s_n = world.n_runs, world.n
        self.shape = (r_n, s_n)
        self.skew = np.array([[sc.skew_of(i) for i in range(s_n)] for sc in scs])
        self.interval = np.array([[sc.interval_of(i) for i in range(s_n)] for sc in scs])
        self.phase = self.rng.uniform(0.0, 1.0, self.shape) * self.interval
        self.tick0 = int(np.floor(scs[0].epoch_s / t_s))
        self.burst_interval = proc.responses.policy.burst_interval_s
        # the category pairs each station draws from: its own categories (fixed)
        base = world.base_bins
        self.pair_s, self.pair_b = np.nonzero(base > 0)
        self.pair_p = base[self.pair_s, self.pair_b]

    def _init_state(self) -> dict[str, Any]:
        # as a live pipeline that has watched these stations for weeks would start
        state = self.proc.init_state(self.shape, len(self.regions))
        seed_from_world(self.proc, state, self.world, 0.0)
        return state

    def _dark(self, t_true: F64) -> npt.NDArray[np.bool_]:
        # the agent's breaker opens after a few failed polls: dark that much later
        return np.asarray(self.world.dark(t_true, BREAKER_FAILURES * self.interval))

    def run(self, mode: Mode) -> SimResult:
        r_n, _s_n = self.shape
        n_reg, n_t = len(self.regions), self.n_ticks
        score = np.zeros((r_n, n_t, n_reg), np.float32)
        level = np.zeros((r_n, n_t, n_reg), np.int8)
        fired = np.zeros((r_n, n_t, n_reg), bool)
        feats = (np.zeros((r_n, n_t, n_reg, len(FEATURE_NAMES)), np.float32)
                 if self.features else None)
        osint = np.zeros((r_n, n_t, n_reg), bool)
        state = self._init_state()
        cells_of = self._cells if mode == "cells" else _EventFeed(self).cells
        events = 0
        for t in range(n_t):
            q, _, bursting = self.proc.responses.effects(state["responses"], t * self.tick_s)
            cells, n_ev = cells_of(t, q, bursting)
            events += n_ev
            t_mid = (t + 0.5) * self.tick_s
            out = self.proc.step(state, cells, self.meta, tick=self.tick0 + t,
                                 time_s=(self.tick0 + t + 1) * self.tick_s,
                                 dark=self._dark(np.full(self.shape, t_mid)), params=self.params)
            m = out.meter
            score[:, t], level[:, t], fired[:, t] = m["score"], m["level"], m["fired"]
            osint[:, t] = m["osint"]
            if feats is not None:
                feats[:, t] = m["features"]
        return SimResult(self.scs, self.regions, score, level, fired, self.tick_s, events,
                         feats, osint)

    # -- cells mode --------------------------------------------------------------------
    def _cells(self, t: int, quarantined: npt.NDArray[np.bool_],
               bursting: npt.NDArray[np.bool_]) -> tuple[dict[str, F64], int]:
        t_s, lat = self.tick_s, self.lateness_s
        t0 = t * t_s
        interval = np.where(bursting, np.minimum(self.interval, self.burst_interval), self.interval)
        # the last poll before the tick closes; what happened after it arrives too late
        last_poll = self.phase + np.floor((t0 + t_s + lat - self.phase) / interval) * interval
        frac = np.clip((last_poll - (t0 - self.skew)) / t_s, 0.0, 1.0)
        t_true = (t0 + 0.5 * t_s) - self.skew  # what the station's clock calls this tick
        rate = np.asarray(self.world.rates(t_true))
        lam = rate * t_s * frac * ~quarantined
        tb, share = self.world.topic_bins(t_true)
        tb, share = np.asarray(tb), np.asarray(share)
        hist = np.zeros(self.shape + (self.world.n_bins,))
        base_lam = (lam * (1.0 - share))[:, self.pair_s] * self.pair_p
        hist[:, self.pair_s, self.pair_b] = self.rng.poisson(base_lam)
        rr, ss = np.nonzero((tb >= 0) & (lam > 0))
        if rr.size:
            hist[rr, ss, tb[rr, ss]] += self.rng.poisson(lam[rr, ss] * share[rr, ss])
        count = hist.sum(-1)
        return {"count": count, "hist": hist}, int(count.sum())


class _EventFeed:
    """Events mode: per-station events through the real ingest (see the module docstring)."""

    def __init__(self, runner: _Runner) -> None:
        self.r = runner
        r_n, s_n = runner.shape
        self.acc = TickAccumulator(n_stations=r_n * s_n, tick_s=runner.tick_s,
                                   allowed_lateness_s=runner.lateness_s,
                                   n_bins=runner.world.n_bins)
        self.pending: list[tuple[F64, EventColumns]] = []  # (delivery time, events)
        self.ready: dict[int, dict[str, F64]] = {}
        self.next_poll = runner.phase.copy()
        self.last_poll = runner.phase - runner.interval
        self.hash_seq = np.uint64(1)
        self.epoch = runner.tick0 * runner.tick_s
        self.world_bins = runner.world.n_bins
        self.cum = np.cumsum(runner.world.base_bins, axis=-1)
        self.dead_letters = 0
        self.duplicates_sent = 0

    def _draw(self, t_from: F64, t_to: F64, quarantined: npt.NDArray[np.bool_]) -> EventColumns:
        """Events in true time ``[t_from, t_to)`` per (run, station) that polls now."""
        r = self.r
        rng = r.rng
        span = np.maximum(t_to - t_from, 0.0)
        mid = 0.5 * (t_from + t_to)
        rate = np.asarray(r.world.rates(mid))
        n = rng.poisson(rate * span * ~quarantined)
        tot = int(n.sum())
        flat = np.repeat(np.arange(n.size), n.ravel())
        _run_i, st_i = np.divmod(flat, r.shape[1])
        u = rng.random(tot)
        times = t_from.ravel()[flat] + u * span.ravel()[flat]
        tb, share = r.world.topic_bins(mid)
        tb, share = np.asarray(tb).ravel()[flat], np.asarray(share).ravel()[flat]
        on_topic = rng.random(tot) < share
        # category by inverse CDF of the station's own mix, or the episode's topic
        cum = self.cum[st_i]
        cat = (rng.random(tot)[:, None] > cum).sum(-1)
        cat = np.where(on_topic & (tb >= 0), tb, np.minimum(cat, self.world_bins - 1))
        bad, dup, lag = (np.asarray(x).ravel()[flat] for x in r.world.fault_rates(mid))
        keep = rng.random(tot) >= bad  # malformed records become dead letters, never cells
        self.dead_letters += int((~keep).sum())
        stamped = times + r.skew.ravel()[flat] + self.epoch
        hashes = self.hash_seq + np.arange(tot, dtype=np.uint64)
        self.hash_seq += np.uint64(tot)
        dup_mask = keep & (rng.random(tot) < dup)
        # a replay of old data sends as many old items again, stamped lag seconds ago
        old = np.flatnonzero(keep & (lag > 0))
        idx = np.concatenate([np.flatnonzero(keep), np.flatnonzero(dup_mask), old])
        t_all = np.concatenate([stamped[np.flatnonzero(keep)], stamped[dup_mask],
                                stamped[old] - lag[old]])
        h_all = np.concatenate([hashes[np.flatnonzero(keep)], hashes[dup_mask],
                                hashes[old] + np.uint64(1 << 62)])
        self.duplicates_sent += int(dup_mask.sum())
        return EventColumns(flat[idx].astype(np.int64), t_all, np.zeros(idx.size),
                            cat[idx].astype(np.int64), h_all, np.zeros(idx.size, np.uint64))

    def cells(self, t: int, quarantined: npt.NDArray[np.bool_],
              bursting: npt.NDArray[np.bool_]) -> tuple[dict[str, F64], int]:
        r = self.r
        t_s = r.tick_s
        clock = (t + 1) * t_s + r.lateness_s  # the pipeline's clock when tick t may close
        interval = np.where(bursting, np.minimum(r.interval, r.burst_interval), r.interval)
        # every poll up to the clock delivers what happened since the previous poll
        while True:
            due = self.next_poll <= clock
            if not due.any():
                break
            t_to = np.where(due, self.next_poll, self.last_poll)
            cols = self._draw(np.where(due, self.last_poll, t_to), t_to, quarantined & due)
            if len(cols):
                self.acc.add(cols)
            self.last_poll = np.where(due, self.next_poll, self.last_poll)
            self.next_poll = np.where(due, self.next_poll + interval, self.next_poll)
        for tick, closed in self.acc.close_until(self.epoch + clock):
            self.ready[tick] = closed
        want = r.tick0 + t
        cur = self.ready.pop(want, None)
        n_bins = self.world_bins
        if cur is None:
            count = np.zeros(r.shape)
            hist = np.zeros(r.shape + (n_bins,))
        else:
            count = cur["count"].reshape(r.shape)
            hist = cur["hist"].reshape(r.shape + (n_bins,))
        for k in [k for k in self.ready if k < want]:
            del self.ready[k]
        return {"count": count, "hist": hist}, int(count.sum())

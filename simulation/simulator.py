"""Vectorised scenario runs: draw tick cells for many runs and step the detector chain.

For each run, the scenario's :class:`~convergence.ground_stations.scenario.SyntheticWorld`
gives every station's event rate per tick; a Poisson process split by category is exactly
independent Poisson counts per category, so each tick's category histogram is drawn as
``Poisson(rate * tick_s * p_category)`` and the event count is its sum — no per-event work,
and statistically the same stream the live synthetic stations produce.

Cells of shape ``(runs, stations)`` go through the very same
:class:`~convergence.detectors.chain.DetectorChain` as the live runtimes, one tick at a
time, temporal patterns included. The result holds per-(run, tick) meter outputs,
fusion features and ground-truth labels (is a genuine convergence under way?), which
training and campaigns consume.

Examples
--------
>>> from convergence.ground_stations.scenario import default_fleet, random_scenario
>>> fleet = default_fleet(40, seed=1)
>>> scs = [random_scenario(fleet, seed=s, horizon_s=40.0, p_genuine=1.0) for s in range(3)]
>>> res = simulate(scs, n_ticks=40, seed=0)
>>> res.score.shape, res.features.shape[:2], res.label.shape
((3, 40), (3, 40), (3, 40))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.chain import DetectorChain, StationMeta
from convergence.detectors.ingest import N_CATEGORY_BINS, category_bin
from convergence.detectors.meter import FEATURE_NAMES, ConvergenceMeter
from convergence.detectors.periodicity import slot_of
from convergence.ground_stations.scenario import CATEGORIES, TOPIC_SHARE, Scenario, SyntheticWorld
from convergence.stations import StationRegistry

F64 = npt.NDArray[np.float64]


@dataclass
class SimResult:
    """Per-(run, tick) outcomes of a simulation."""

    score: F64
    level: npt.NDArray[np.int8]
    fired: npt.NDArray[np.bool_]
    features: F64
    label: npt.NDArray[np.bool_]
    region: npt.NDArray[np.int64]
    events: int
    tick_s: float

    feature_names: tuple[str, ...] = FEATURE_NAMES
    #: fused features of every region, ``(runs, ticks, regions, len(FEATURE_NAMES))``: a
    #: learned meter's score depends on these (and ``region_osint``) only, so it can be
    #: evaluated offline without simulating again
    region_features: F64 | None = None
    #: per-region OSINT corroboration, ``(runs, ticks, regions)``
    region_osint: npt.NDArray[np.bool_] | None = None


def _category_probs(world: SyntheticWorld, n_bins: int) -> tuple[F64, dict[str, int]]:
    base = np.zeros((world.n, n_bins))
    for s, cats in enumerate(world.categories):
        for c in cats:
            base[s, category_bin(c, n_bins)] += 1.0 / len(cats)
    topics = {c: category_bin(c, n_bins) for cats in CATEGORIES.values() for c in cats}
    return base, topics


def _label(sc: Scenario, times: F64, grace_s: float) -> npt.NDArray[np.bool_]:
    out = np.zeros(times.shape[0], bool)
    for e in sc.genuine():
        out |= (times >= e.start_s) & (times < e.end_s + grace_s)
    return out


def simulate(scenarios: Sequence[Scenario], *, n_ticks: int, seed: int, tick_s: float = 1.0,
             chain: DetectorChain | None = None, n_bins: int = N_CATEGORY_BINS,
             label_grace_s: float = 3.0) -> SimResult:
    """Run every scenario (same fleet) for ``n_ticks`` ticks, vectorised over runs."""
    if not scenarios:
        raise ValueError("need at least one scenario")
    fleet = scenarios[0].fleet
    if any(len(sc.fleet) != len(fleet) for sc in scenarios):
        raise ValueError("all scenarios of one simulation must share the same fleet")
    chain = chain or DetectorChain(meter=ConvergenceMeter(emit_features=True), tick_s=tick_s)
    if chain.patterns and chain.tick_s != tick_s:
        raise ValueError(f"the chain's pattern windows assume {chain.tick_s:g} s ticks but the "
                         f"simulation ticks every {tick_s:g} s; build the chain with "
                         f"tick_s={tick_s:g}")
    # features are needed for training data; the caller's chain is left as it was given
    emit_before = chain.meter.emit_features
    chain.meter.emit_features = True
    try:
        return _run(chain, scenarios, fleet, n_ticks=n_ticks, seed=seed, tick_s=tick_s,
                    n_bins=n_bins, label_grace_s=label_grace_s)
    finally:
        chain.meter.emit_features = emit_before


def _run(chain: DetectorChain, scenarios: Sequence[Scenario], fleet: Sequence[Any], *,
         n_ticks: int, seed: int, tick_s: float, n_bins: int, label_grace_s: float) -> SimResult:
    rng = np.random.default_rng([seed, 5])
    reg = StationRegistry(list(fleet))
    meta = StationMeta.from_registry(reg)
    n_runs, n_st = len(scenarios), len(fleet)
    worlds = [SyntheticWorld(sc) for sc in scenarios]
    mid: F64 = (np.arange(n_ticks, dtype=np.float64) + 0.5) * tick_s
    rates = np.stack([w.rates(mid) for w in worlds])  # (R, T, S)
    base_p, topic_bin = _category_probs(worlds[0], n_bins)
    # per-run topic concentration: (R, T, S) topic bin or -1
    topic = np.full((n_runs, n_ticks, n_st), -1, np.int64)
    for r, sc in enumerate(scenarios):
        # reversed: where topic episodes overlap the first one wins, as in SyntheticWorld
        for e in reversed(sc.episodes):
            if e.topic is None:
                continue
            on = (mid >= e.start_s) & (mid < e.end_s)
            members = np.asarray(e.stations, dtype=np.int64)
            topic[r][np.ix_(np.flatnonzero(on), members)] = topic_bin[e.topic]
    state = chain.init_state((n_runs, n_st))
    chain.seed_baselines(state, np.broadcast_to(reg.rates * tick_s, (n_runs, n_st)))
    score = np.zeros((n_runs, n_ticks))
    level = np.zeros((n_runs, n_ticks), np.int8)
    fired = np.zeros((n_runs, n_ticks), bool)
    region = np.zeros((n_runs, n_ticks), np.int64)
    feats = np.zeros((n_runs, n_ticks, len(FEATURE_NAMES)))
    region_feats: F64 | None = None
    region_osint: npt.NDArray[np.bool_] | None = None
    events = 0
    for t in range(n_ticks):
        lam = rates[:, t, :, None] * tick_s * base_p  # (R, S, bins)
        tb = topic[:, t, :]
        rr, ss = np.nonzero(tb >= 0)  # only stations reporting on a topic get the mix
        if rr.size:
            lam[rr, ss] *= 1.0 - TOPIC_SHARE
            lam[rr, ss, tb[rr, ss]] += rates[rr, t, ss] * tick_s * TOPIC_SHARE
        hist = rng.poisson(lam).astype(np.float64)
        count = hist.sum(-1)
        events += int(count.sum())
        cells = {"count": count, "hist": hist,
                 "slot": slot_of(t * tick_s, chain.periodicity.slots_per_day)}
        out = chain.step(state, cells, meta)
        m = out["meter"]
        score[:, t], level[:, t], fired[:, t] = m["score"], m["level"], m["fired"]
        region[:, t] = m["region"]
        feats[:, t] = m["features"]
        if region_feats is None or region_osint is None:
            n_reg = m["region_features"].shape[-2]
            region_feats = np.zeros((n_runs, n_ticks, n_reg, len(FEATURE_NAMES)))
            region_osint = np.zeros((n_runs, n_ticks, n_reg), bool)
        region_feats[:, t] = m["region_features"]
        region_osint[:, t] = m["region_osint"]
    ends: F64 = (np.arange(n_ticks, dtype=np.float64) + 1.0) * tick_s
    labels = np.stack([_label(sc, ends, label_grace_s)
                       for sc in scenarios])
    return SimResult(score, level, fired, feats, labels, region, events, tick_s,
                     region_features=region_feats, region_osint=region_osint)

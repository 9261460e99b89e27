"""Las Vegas validation: randomly perturbed runs whose verdict must always be right.

A Monte Carlo campaign measures *rates*; a Las Vegas run asks for certainty: each run
takes a library scenario and perturbs it at random — events dropped on the way, feeds
re-sending duplicates, a station's source failing for a while, clocks skewed within the
allowed lateness, a restless background, the effect and the onset moved a little — and
the verdict must still be right: every genuine convergence alerts (in its region, in
time) and nothing else does. Only the time to reach the verdict may vary.

Runs go through the *events* mode of the simulator: individual events, with their
content hashes, duplicates and skewed timestamps, through the real ingest (dedup,
lateness) and the tick processor, as a live run would process them.

The perturbations are bounded so that they never change the ground truth (no outage
long enough to silence a convergence; skews inside the allowed lateness); a scenario
passes only if every one of its runs is right, and a failing run names its seed and the
exact command that reproduces it.

Examples
--------
>>> res = run_lasvegas(["simultaneous", "lone-surge"], runs_per_scenario=4, seed=3, workers=1)
>>> [(s.scenario, s.passed, s.right, s.runs) for s in res]
[('simultaneous', True, 4, 4), ('lone-surge', True, 4, 4)]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from convergence.detectors.chain import DetectorChain
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import Episode, Scenario
from convergence.ground_stations.scenario_library import SCENARIOS, WorldParams, names
from convergence.simulation.campaign import judge_run
from convergence.simulation.simulator import simulate

__all__ = ["LasVegasResult", "Perturbation", "RunVerdict", "perturb", "run_lasvegas"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Perturbation:
    """What one Las Vegas run does to its scenario (all drawn from the run's seed)."""

    drop: float
    dup: float
    outage_station: int
    outage_start_s: float
    outage_s: float
    skews: tuple[tuple[int, float], ...]
    noise: float
    effect: float
    onset_jitter_s: float

    def describe(self) -> str:
        skew = ", ".join(f"#{i} {s:+.2f} s" for i, s in self.skews)
        return (f"{self.drop:.0%} of events dropped, {self.dup:.0%} re-sent, station "
                f"#{self.outage_station} dark for {self.outage_s:.0f} s from {self.outage_start_s:.0f} s, "
                f"clocks skewed ({skew or 'none'}), noise {self.noise:.2f}, effect x{self.effect:.2f}")


def _draw(rng: np.random.Generator, sc: Scenario) -> Perturbation:
    n = len(sc.fleet)
    k = int(rng.integers(0, 4))
    skews = tuple((int(i), float(rng.uniform(-1.0, 1.0)))
                  for i in rng.choice(n, size=k, replace=False))
    return Perturbation(drop=float(rng.uniform(0.0, 0.1)), dup=float(rng.uniform(0.0, 0.3)),
                        outage_station=int(rng.integers(0, n)),
                        outage_start_s=float(rng.uniform(0.0, sc.duration_s * 0.8)),
                        outage_s=float(rng.uniform(5.0, 30.0)) * sc.tick_s,
                        skews=skews, noise=float(rng.uniform(0.0, 0.15)),
                        effect=float(rng.uniform(0.9, 1.1)), onset_jitter_s=10.0 * sc.tick_s)


def perturb(name: str, seed: int, run: int) -> tuple[Scenario, Perturbation]:
    """The perturbed scenario of one Las Vegas run (deterministic in its arguments)."""
    spec = SCENARIOS[name]
    rng = np.random.default_rng([seed, 37, run] + list(name.encode()[:8]))
    base = spec.build(seed * 1_000_003 + run)
    p = _draw(rng, base)
    sc = spec.build(seed * 1_000_003 + run, WorldParams(effect=p.effect, onset_jitter_s=p.onset_jitter_s,
                                                       noise=p.noise))
    n = len(sc.fleet)
    skews = [sc.skew_of(i) for i in range(n)]
    for i, s in p.skews:
        skews[i] = s
    scale = tuple(float(x) * (1.0 - p.drop) for x in (sc.rate_scale or (1.0,) * n))
    outage = Episode("outage", p.outage_start_s, p.outage_s, (p.outage_station,), 0.0, None,
                     sc.fleet[p.outage_station].region)
    return replace(sc, episodes=[*sc.episodes, outage], dup_rate=sc.dup_rate + p.dup,
                   skews_s=tuple(skews), rate_scale=scale), p


@dataclass(frozen=True)
class RunVerdict:
    """One run: right or wrong, how fast, and how to reproduce it."""

    scenario: str
    run: int
    #: the Las Vegas seed the run was drawn from (with ``run``, all it takes to repeat it)
    seed: int
    right: bool
    detected: int
    genuine: int
    false_alarms: int
    ttd_ticks: tuple[float, ...]
    perturbation: str
    reproduce: str


@dataclass
class LasVegasResult:
    scenario: str
    genuine: bool
    runs: int
    right: int
    verdicts: list[RunVerdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.right == self.runs

    @property
    def failures(self) -> list[RunVerdict]:
        return [v for v in self.verdicts if not v.right]

    def to_dict(self) -> dict[str, Any]:
        ttd = [t for v in self.verdicts for t in v.ttd_ticks]
        return {"scenario": self.scenario, "kind": "genuine" if self.genuine else "decoy",
                "runs": self.runs, "right": self.right, "passed": self.passed,
                "median_time_to_detect_ticks": float(np.median(ttd)) if ttd else None,
                "max_time_to_detect_ticks": float(max(ttd)) if ttd else None,
                "failures": [v.__dict__ for v in self.failures[:20]],
                "seconds": round(self.seconds, 2)}


def _command(name: str, seed: int, runs: int, run: int) -> str:
    return (f"convergence lasvegas run --scenarios {name} --seed {seed} "
            f"--runs-per-scenario {runs} --show-run {run}")


def run_scenario(name: str, *, runs: int, seed: int) -> LasVegasResult:
    """Every run of one scenario, perturbed, simulated as one batch in events mode."""
    t0 = time.perf_counter()
    pairs = [perturb(name, seed, r) for r in range(runs)]
    scs = [sc for sc, _ in pairs]
    proc = TickProcessor(DetectorChain(tick_s=scs[0].tick_s))
    res = simulate(scs, seed=seed * 8191 + 1, processor=proc, mode="events")
    out = LasVegasResult(name, SCENARIOS[name].genuine, runs, 0)
    for k, (sc, p) in enumerate(pairs):
        j = judge_run(sc, res.alerts(k), res.regions, tick_s=res.tick_s, n_ticks=res.n_ticks,
                      window_ticks=proc.chain.meter.window_ticks)
        right = j.detected == j.genuine and j.false_alarms == 0
        out.right += right
        out.verdicts.append(RunVerdict(name, k, seed, right, j.detected, j.genuine, j.false_alarms,
                                       j.ttd_ticks, p.describe(), _command(name, seed, runs, k)))
    out.seconds = time.perf_counter() - t0
    return out


def _one(args: tuple[str, int, int]) -> LasVegasResult:
    name, runs, seed = args
    return run_scenario(name, runs=runs, seed=seed)


def run_lasvegas(scenarios: Sequence[str] | str = "all", *, runs_per_scenario: int = 100,
                 seed: int = 7, workers: int | None = None,
                 progress: Progress | None = None) -> list[LasVegasResult]:
    """Las Vegas runs of every selected scenario (``workers`` processes, default the cores)."""
    if runs_per_scenario < 1:
        raise ValueError(f"runs per scenario must be >= 1, got {runs_per_scenario}")
    chosen = names(scenarios if isinstance(scenarios, str) else ",".join(scenarios))
    if not chosen:
        raise ValueError("no scenario selected; `convergence scenarios list` shows them all")
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    jobs = [(n, runs_per_scenario, seed) for n in chosen]
    results: list[LasVegasResult] = []
    if workers == 1 or len(jobs) == 1:
        it: Any = map(_one, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        it = pool.map(_one, jobs)
    try:
        for r in it:
            results.append(r)
            if progress is not None:
                progress(len(results), len(jobs))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results

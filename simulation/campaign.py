"""Scenario campaigns: Monte Carlo runs over the library, judged against ground truth.

A campaign runs every selected scenario of the library
(:mod:`convergence.ground_stations.scenario_library`) many times through the tick
processor, vectorised (:mod:`convergence.simulation.simulator`) and across processes.
Every run samples its world from a declared :class:`ParamSpace` (effect size, onset
jitter, base-rate spread, background noise, episode membership) and, when sweeping, its
detector settings too (meter thresholds, window length, weight of temporal patterns),
then is judged (:func:`~convergence.ground_stations.scenario.judge`): which genuine
convergences were detected, how fast, and whether anything else alerted.

Per scenario and overall the result gives the detection rate, the false-alarm rate
(runs with any false alarm) and, on decoys, the mean time between false alarms per
station-hour, the time to detect (median and p90), each with a 95 % interval; when
sweeping, the detector settings that do best and the trade-off between detection and
false alarms. It also yields a *calibration*: of the alerts at each level and score
band, how many were genuine — the confidence a report quotes.

Everything derives from the campaign seed: a run's world and settings from
``(seed, scenario, run)``, its noise from ``(seed, scenario, chunk)``; so a campaign, and
any one chunk of it, can be repeated exactly (also by another process or another
machine: see :func:`run_chunk`).

Examples
--------
>>> res = run_campaign(["simultaneous", "lone-surge"], runs=8, seed=1, workers=1, chunk=8)
>>> res.per_scenario["simultaneous"]["detection_rate"], res.per_scenario["lone-surge"]["false_alarm_rate"]
(1.0, 0.0)
>>> res.summary()["tests"]
16
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from convergence.detectors.chain import DetectorChain, RunParams
from convergence.detectors.meter import LEVELS, ConvergenceMeter
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import Scenario, judge
from convergence.ground_stations.scenario_library import SCENARIOS, WorldParams, names
from convergence.simulation.simulator import Mode, simulate

__all__ = ["DEFAULT_DETECTOR", "CampaignResult", "ChunkResult", "DetectorParams", "ParamSpace",
           "RunRecord", "run_campaign", "run_chunk", "wilson"]

Progress = Callable[[int, int], None]
#: alerts may precede a convergence's formal onset (or outlast its end) by this many ticks
GRACE_TICKS = 3


@dataclass(frozen=True)
class DetectorParams:
    """The detector settings a sweep samples: the warning threshold (watch and converged
    move with it), the meter's window and the weight of temporal-pattern evidence."""

    warning: float = 55.0
    window_ticks: int = 8
    pattern_weight: float = 0.5

    @property
    def thresholds(self) -> tuple[float, float, float]:
        return (self.warning - 25.0, self.warning, min(self.warning + 20.0, 100.0))

    def key(self) -> str:
        return f"warning={self.warning:g},window={self.window_ticks},pattern={self.pattern_weight:g}"


DEFAULT_DETECTOR = DetectorParams()


@dataclass(frozen=True)
class ParamSpace:
    """The declared space a run samples from (see the module docstring).

    World: ``effect`` and ``rate_spread`` and ``noise`` and ``membership`` are uniform
    ranges, ``onset_jitter_s`` a bound. Detector (``sweep`` only): each run draws one value
    of each list.
    """

    effect: tuple[float, float] = (0.85, 1.15)
    onset_jitter_s: float = 15.0
    rate_spread: tuple[float, float] = (0.0, 0.25)
    noise: tuple[float, float] = (0.0, 0.2)
    membership: tuple[float, float] = (0.8, 1.0)
    warning: tuple[float, ...] = (45.0, 50.0, 55.0, 60.0, 65.0)
    window_ticks: tuple[int, ...] = (6, 8, 10)
    pattern_weight: tuple[float, ...] = (0.25, 0.5, 1.0)

    def world(self, rng: np.random.Generator) -> WorldParams:
        return WorldParams(effect=float(rng.uniform(*self.effect)),
                           onset_jitter_s=self.onset_jitter_s,
                           rate_spread=float(rng.uniform(*self.rate_spread)),
                           noise=float(rng.uniform(*self.noise)),
                           membership=float(rng.uniform(*self.membership)))

    def detector(self, rng: np.random.Generator) -> DetectorParams:
        return DetectorParams(float(rng.choice(self.warning)), int(rng.choice(self.window_ticks)),
                              float(rng.choice(self.pattern_weight)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunRecord:
    """One judged run."""

    scenario: str
    run: int
    genuine: int
    detected: int
    false_alarms: int
    ttd_ticks: tuple[float, ...]
    detector: DetectorParams
    #: (level, score, genuine?) of every alert: the calibration's raw material
    alerts: tuple[tuple[int, float, bool], ...] = ()
    #: peak score inside each convergence window and outside them (the threshold curve)
    peak_in: tuple[float, ...] = ()
    peak_out: float = 0.0


@dataclass
class ChunkResult:
    scenario: str
    records: list[RunRecord]
    station_hours: float
    events: int
    seconds: float


def _run_rng(seed: int, scenario: str, run: int) -> np.random.Generator:
    return np.random.default_rng([seed, 31, _stable(scenario), run])


def _stable(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)


def chunk_scenarios(scenario: str, first: int, count: int, *, seed: int, space: ParamSpace,
                    sweep: bool, detector: DetectorParams = DEFAULT_DETECTOR
                    ) -> tuple[list[Scenario], list[DetectorParams]]:
    """The scenarios (and detector settings) of runs ``first .. first + count - 1``."""
    spec = SCENARIOS[scenario]
    scs, dets = [], []
    for r in range(first, first + count):
        rng = _run_rng(seed, scenario, r)
        world = space.world(rng)
        dets.append(space.detector(rng) if sweep else detector)
        scs.append(spec.build(seed * 1_000_003 + r, world))
    return scs, dets


@dataclass(frozen=True)
class Judged:
    """One run's alerts against its ground truth."""

    genuine: int
    detected: int
    false_alarms: int
    ttd_ticks: tuple[float, ...]
    genuine_alert: tuple[bool, ...]


def judge_run(sc: Scenario, alerts: Sequence[tuple[int, int]], regions: Sequence[str], *,
              tick_s: float, n_ticks: int, window_ticks: int) -> Judged:
    """Judge one simulated run's alerts ``(tick, region index)`` against its truth."""
    pairs = [((t + 1) * tick_s, regions[r]) for t, r in alerts]
    truths = sc.truths()
    v = judge(truths, sc.decoys(), pairs, window_s=window_ticks * tick_s,
              grace_s=GRACE_TICKS * tick_s, horizon_s=n_ticks * tick_s)
    genuine_alert = tuple(
        any(tr.region == regions[r]
            and tr.onset_s - GRACE_TICKS * tick_s <= (t + 1) * tick_s
            <= tr.end_s + (window_ticks + GRACE_TICKS) * tick_s for tr in truths)
        for t, r in alerts)
    return Judged(v.genuine, v.detected, v.false_alarms,
                  tuple(x / tick_s for x in v.time_to_detect_s), genuine_alert)


def run_chunk(scenario: str, first: int, count: int, *, seed: int, space: ParamSpace,
              sweep: bool, mode: Mode = "cells", detector: DetectorParams = DEFAULT_DETECTOR,
              lateness_s: float = 1.5) -> ChunkResult:
    """Runs ``first .. first + count - 1`` of one scenario, simulated as one batch, judged.

    Deterministic in its arguments: a campaign split into chunks (across processes, or
    across the cluster's workers) gives the same records as one that is not.
    """
    t0 = time.perf_counter()
    scs, dets = chunk_scenarios(scenario, first, count, seed=seed, space=space, sweep=sweep,
                                detector=detector)
    tick_s = scs[0].tick_s
    params = RunParams(thresholds=np.array([d.thresholds for d in dets]),
                       window_ticks=np.array([float(d.window_ticks) for d in dets]),
                       pattern_weight=np.array([d.pattern_weight for d in dets]))
    proc = TickProcessor(DetectorChain(meter=ConvergenceMeter(), tick_s=tick_s))
    res = simulate(scs, seed=seed * 7919 + first, processor=proc, params=params,
                   lateness_s=lateness_s, mode=mode)
    records = []
    end_t = (np.arange(res.n_ticks) + 1.0) * tick_s
    for k, sc in enumerate(scs):
        d = dets[k]
        alerts = res.alerts(k)
        j = judge_run(sc, alerts, res.regions, tick_s=tick_s, n_ticks=res.n_ticks,
                      window_ticks=d.window_ticks)
        cal = tuple((int(res.level[k, t, r]), float(res.score[k, t, r]), g)
                    for (t, r), g in zip(alerts, j.genuine_alert, strict=True))
        # peak scores in and out of convergence windows, for the threshold trade-off; only
        # where the meter may alert at all (two independent OSINT sources corroborate)
        assert res.osint is not None
        scores = np.where(res.osint[k], res.score[k], 0.0)
        inside = np.zeros(res.score.shape[1:], bool)
        peaks_in = []
        for tr in sc.truths():
            if tr.region not in res.regions:
                continue
            ri = res.regions.index(tr.region)
            win = (end_t >= tr.onset_s - GRACE_TICKS * tick_s) & (
                end_t <= tr.end_s + (d.window_ticks + GRACE_TICKS) * tick_s)
            inside[win, ri] = True
            peaks_in.append(float(scores[win, ri].max()) if win.any() else 0.0)
        out_scores = np.where(inside, 0.0, scores)
        records.append(RunRecord(scenario, first + k, j.genuine, j.detected, j.false_alarms,
                                 j.ttd_ticks, d, cal, tuple(peaks_in), float(out_scores.max())))
    station_hours = count * len(scs[0].fleet) * res.n_ticks * tick_s / 3600.0
    return ChunkResult(scenario, records, station_hours, res.events, time.perf_counter() - t0)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``.

    >>> [round(x, 3) for x in wilson(99, 100)]
    [0.946, 0.998]
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def median_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95 % interval of a median (order statistics)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return (float("nan"), float("nan"))
    lo = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2))
    hi = min(n - 1, math.ceil(n / 2 + z * math.sqrt(n) / 2))
    return (xs[lo], xs[hi])


def _rate_block(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "k": k, "n": n,
            "ci95": [round(lo, 4), round(hi, 4)] if n else None}


def _ttd_block(ttd: Sequence[float]) -> dict[str, Any]:
    if not ttd:
        return {"median": None, "p90": None, "ci95": None, "n": 0}
    lo, hi = median_ci(ttd)
    return {"median": round(float(np.median(ttd)), 2), "p90": round(float(np.percentile(ttd, 90)), 2),
            "ci95": [round(lo, 2), round(hi, 2)], "n": len(ttd)}


@dataclass
class CampaignResult:
    """Everything a campaign measured (see the module docstring)."""

    seed: int
    runs: int
    scenarios: list[str]
    sweep: bool
    mode: str
    space: ParamSpace
    records: list[RunRecord]
    station_hours: dict[str, float]
    events: int
    seconds: float
    per_scenario: dict[str, dict[str, Any]] = field(default_factory=dict)
    campaign_id: str = ""

    def __post_init__(self) -> None:
        self.per_scenario = {s: self._scenario(s) for s in self.scenarios}
        if not self.campaign_id:
            self.campaign_id = (f"mc-{self.seed}-{self.runs}x{len(self.scenarios)}"
                                f"{'-sweep' if self.sweep else ''}")

    def _of(self, scenario: str | None = None, detector: DetectorParams | None = None) -> list[RunRecord]:
        return [r for r in self.records if (scenario is None or r.scenario == scenario)
                and (detector is None or r.detector == detector)]

    def _scenario(self, name: str) -> dict[str, Any]:
        rs = self._of(name)
        genuine = SCENARIOS[name].genuine
        gen = sum(r.genuine for r in rs)
        det = sum(r.detected for r in rs)
        fa_runs = sum(r.false_alarms > 0 for r in rs)
        fa_total = sum(r.false_alarms for r in rs)
        ttd = [t for r in rs for t in r.ttd_ticks]
        out: dict[str, Any] = {
            "kind": "genuine" if genuine else "decoy", "runs": len(rs),
            "detection": _rate_block(det, gen) if genuine else None,
            "detection_rate": round(det / gen, 4) if gen else None,
            "false_alarm": _rate_block(fa_runs, len(rs)),
            "false_alarm_rate": round(fa_runs / len(rs), 4) if rs else None,
            "false_alarms": fa_total,
            "time_to_detect_ticks": _ttd_block(ttd),
        }
        if not genuine:
            hours = self.station_hours.get(name, 0.0)
            out["station_hours"] = round(hours, 2)
            out["station_hours_between_false_alarms"] = (round(hours / fa_total, 1) if fa_total
                                                         else None)
        return out

    def overall(self, records: Iterable[RunRecord] | None = None) -> dict[str, Any]:
        rs = list(self.records if records is None else records)
        g = [r for r in rs if SCENARIOS[r.scenario].genuine]
        d = [r for r in rs if not SCENARIOS[r.scenario].genuine]
        gen, det = sum(r.genuine for r in g), sum(r.detected for r in g)
        fa = sum(r.false_alarms > 0 for r in d)
        ttd = [t for r in g for t in r.ttd_ticks]
        hours = sum(v for k, v in self.station_hours.items() if not SCENARIOS[k].genuine)
        fa_total = sum(r.false_alarms for r in d)
        return {"detection": _rate_block(det, gen), "false_alarm": _rate_block(fa, len(d)),
                "time_to_detect_ticks": _ttd_block(ttd),
                "station_hours_between_false_alarms": round(hours / fa_total, 1) if fa_total else None,
                "false_alarms_on_genuine_runs": sum(r.false_alarms > 0 for r in g)}

    def tradeoff(self) -> list[dict[str, Any]]:
        """Detection against false alarms: per detector setting when sweeping, else per
        warning threshold replayed from the recorded peak scores (of ticks where two
        independent OSINT sources corroborate, as the meter requires; the replay ignores
        the level's hysteresis, so it is a close, slightly pessimistic estimate)."""
        if self.sweep:
            points = []
            for det in sorted({r.detector for r in self.records}, key=lambda x: x.key()):
                o = self.overall(self._of(detector=det))
                points.append({"params": asdict(det), "detection_rate": o["detection"]["rate"],
                               "false_alarm_rate": o["false_alarm"]["rate"],
                               "runs": len(self._of(detector=det))})
            return _pareto(points)
        g = [r for r in self.records if SCENARIOS[r.scenario].genuine]
        d = [r for r in self.records if not SCENARIOS[r.scenario].genuine]
        peaks_in = np.array([p for r in g for p in r.peak_in]) if g else np.zeros(0)
        peaks_out = np.array([r.peak_out for r in d]) if d else np.zeros(0)
        out = []
        for x in range(30, 96, 5):
            out.append({"params": {"warning": float(x)},
                        "detection_rate": round(float((peaks_in >= x).mean()), 4) if peaks_in.size else None,
                        "false_alarm_rate": (round(float((peaks_out >= x).mean()), 4)
                                             if peaks_out.size else None)})
        return out

    def best_params(self, max_false_alarm_rate: float = 0.01) -> dict[str, Any]:
        """The swept setting with the best detection whose false-alarm rate stays within
        ``max_false_alarm_rate`` (then the fastest median time to detect); without a sweep,
        the settings in force."""
        if not self.sweep:
            return {**asdict(DEFAULT_DETECTOR), "basis": "not swept: the settings in force"}
        best, key = None, None
        for p in self.tradeoff():
            fa = p["false_alarm_rate"] if p["false_alarm_rate"] is not None else 1.0
            if fa > max_false_alarm_rate:
                continue
            det = DetectorParams(**p["params"])
            ttd = self.overall(self._of(detector=det))["time_to_detect_ticks"]["median"]
            k = (p["detection_rate"] or 0.0, -(ttd if ttd is not None else 1e9))
            if key is None or k > key:
                best, key = p, k
        if best is None:
            return {"basis": f"no setting kept false alarms within {max_false_alarm_rate:.0%}"}
        return {**best["params"], "detection_rate": best["detection_rate"],
                "false_alarm_rate": best["false_alarm_rate"],
                "basis": f"best detection with false alarms <= {max_false_alarm_rate:.0%}"}

    def calibration(self, bands: Sequence[float] = (55, 65, 75, 85, 101)) -> dict[str, Any]:
        """P(genuine) of an alert by level and score band (a report's confidence)."""
        rows: dict[str, list[tuple[float, float, float, int]]] = {}
        alerts = [(lvl, sc, g) for r in self.records for (lvl, sc, g) in r.alerts]
        for level in ("warning", "converged"):
            li = LEVELS.index(level)
            xs = [(sc, g) for lvl, sc, g in alerts if lvl == li]
            table = []
            lo = 0.0
            for hi in bands:
                band = [g for sc, g in xs if lo <= sc < hi]
                if band:
                    # a Laplace-smoothed rate: a band with few alerts is not 0 % or 100 %
                    p = (sum(band) + 1.0) / (len(band) + 2.0)
                    table.append((lo, min(hi, 100.0), round(p, 4), len(band)))
                lo = hi
            rows[level] = table
        return {"campaign": f"{self.campaign_id} (simulated, seed {self.seed}, "
                            f"{self.runs} runs x {len(self.scenarios)} scenarios)",
                "n_runs": len(self.records), "table": rows}

    def summary(self) -> dict[str, Any]:
        """The one JSON object ``montecarlo run --json`` prints last."""
        o = self.overall()
        tests = len(self.records)
        return {
            "campaign_id": self.campaign_id, "seed": self.seed, "mode": self.mode,
            "sweep": self.sweep, "runs_per_scenario": self.runs, "scenarios": len(self.scenarios),
            "tests": tests, "seconds": round(self.seconds, 2),
            "tests_per_s": round(tests / self.seconds, 1) if self.seconds > 0 else None,
            "events": self.events,
            "detection_rate": o["detection"]["rate"], "detection_ci95": o["detection"]["ci95"],
            "false_alarm_rate": o["false_alarm"]["rate"], "false_alarm_ci95": o["false_alarm"]["ci95"],
            "median_time_to_detect_ticks": o["time_to_detect_ticks"]["median"],
            "p90_time_to_detect_ticks": o["time_to_detect_ticks"]["p90"],
            "time_to_detect_ci95": o["time_to_detect_ticks"]["ci95"],
            "station_hours_between_false_alarms": o["station_hours_between_false_alarms"],
            "per_scenario": self.per_scenario, "best_params": self.best_params(),
            "tradeoff": self.tradeoff(), "space": self.space.to_dict(),
        }


def _pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each point whether no other point has both more detection and fewer false alarms."""
    for p in points:
        d, f = p["detection_rate"] or 0.0, p["false_alarm_rate"] or 0.0
        p["pareto"] = not any((q["detection_rate"] or 0.0) >= d and (q["false_alarm_rate"] or 0.0) <= f
                              and ((q["detection_rate"] or 0.0) > d or (q["false_alarm_rate"] or 0.0) < f)
                              for q in points)
    return sorted(points, key=lambda p: (p["false_alarm_rate"] or 0.0, -(p["detection_rate"] or 0.0)))


def plan(scenarios: Sequence[str], runs: int, chunk: int) -> list[tuple[str, int, int]]:
    """The chunks of a campaign: ``(scenario, first run, count)``."""
    out = []
    for s in scenarios:
        for first in range(0, runs, chunk):
            out.append((s, first, min(chunk, runs - first)))
    return out


def _chunk_star(args: tuple[Any, ...]) -> ChunkResult:
    s, first, count, kw = args
    return run_chunk(s, first, count, **kw)


def run_campaign(scenarios: Sequence[str] | str = "all", *, runs: int, seed: int = 7,
                 workers: int | None = None, chunk: int = 500, sweep: bool = False,
                 mode: Mode = "cells", space: ParamSpace | None = None,
                 detector: DetectorParams = DEFAULT_DETECTOR,
                 progress: Progress | None = None,
                 chunk_runner: Callable[[list[tuple[str, int, int]], dict[str, Any]],
                                        Iterable[ChunkResult]] | None = None) -> CampaignResult:
    """Run a campaign (see the module docstring); ``workers`` processes (default: the
    cores), ``chunk`` runs per vectorised batch. ``chunk_runner`` replaces the local
    process pool (the cluster runs chunks on its workers)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    chosen = names(scenarios) if isinstance(scenarios, str) else list(scenarios)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; "
                       "`convergence scenarios list` shows them all")
    space = space or ParamSpace()
    kw: dict[str, Any] = {"seed": seed, "space": space, "sweep": sweep, "mode": mode,
                          "detector": detector}
    jobs = plan(chosen, runs, chunk)
    t0 = time.perf_counter()
    done = 0
    results: list[ChunkResult] = []
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if chunk_runner is not None:
        iterator: Iterable[ChunkResult] = chunk_runner(jobs, kw)
    elif workers == 1 or len(jobs) == 1:
        iterator = (run_chunk(s, f, c, **kw) for s, f, c in jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        iterator = pool.map(_chunk_star, [(s, f, c, kw) for s, f, c in jobs])
    try:
        for res in iterator:
            results.append(res)
            done += len(res.records)
            if progress is not None:
                progress(done, runs * len(chosen))
    finally:
        if chunk_runner is None and workers > 1 and len(jobs) > 1:
            pool.shutdown(cancel_futures=True)
    # merge in plan order whatever order chunks finished in (a cluster answers in any order),
    # so float sums, and so the figures, equal a local run's to the last bit
    order = {(s, f): i for i, (s, f, _) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r.scenario, r.records[0].run)])
    hours: dict[str, float] = {}
    for r in results:
        hours[r.scenario] = hours.get(r.scenario, 0.0) + r.station_hours
    records = sorted((rec for r in results for rec in r.records),
                     key=lambda x: (chosen.index(x.scenario), x.run))
    return CampaignResult(seed, runs, chosen, sweep, mode, space, records, hours,
                          sum(r.events for r in results), time.perf_counter() - t0)


def record_to_dict(r: RunRecord) -> dict[str, Any]:
    d = asdict(r)
    return d


def record_from_dict(d: Mapping[str, Any]) -> RunRecord:
    return RunRecord(d["scenario"], int(d["run"]), int(d["genuine"]), int(d["detected"]),
                     int(d["false_alarms"]), tuple(d["ttd_ticks"]), DetectorParams(**d["detector"]),
                     tuple(tuple(a) for a in d["alerts"]),  # type: ignore[misc]
                     tuple(d["peak_in"]), float(d["peak_out"]))


_ = replace  # re-exported for callers building variants of a ParamSpace

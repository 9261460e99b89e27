"""Benchmarks: the detector chain against a raw numpy baseline measured in the same run.

``bench_detectors`` pushes synthetic event arrays for a fleet (default: 5 M events from
247 stations over 300 one-second ticks, about 67 events per station per second, 1 % re-sent
duplicates) through the full chain as
the live runtimes do — ingest bucketing with dedup and lateness (``TickAccumulator``),
then per closed tick the tick processor (entropy, burst, CUSUM, periodicity, patterns →
node states → per-region meter → responses) — and times it. In the same
process, on the same arrays, it times the floor any implementation must pay: one
``np.bincount`` over the events' ``tick * stations + station`` keys. Shared machines are
noisy, so each figure is the best of ``repeats`` and the *ratio* is what to compare
across machines.

Examples
--------
>>> r = bench_detectors(stations=20, events=20_000, ticks=20, repeats=1, seed=1)
>>> r["events"], r["stations"], r["chain_events_per_s"] > 0, 0 < r["ratio_to_baseline"]
(20000, 20, True, True)
"""

from __future__ import annotations

import itertools
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from convergence.detectors.chain import DetectorChain, StationMeta
from convergence.detectors.ingest import EventColumns, TickAccumulator
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import default_fleet
from convergence.stations import StationRegistry


def synthetic_columns(stations: int, events: int, ticks: int, seed: int,
                      tick_s: float = 1.0) -> EventColumns:
    """Time-ordered random events (1 % re-sent duplicates) for the benchmark."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, ticks * tick_s, events))
    hashes = rng.integers(1, 2**63, events, dtype=np.int64).astype(np.uint64)
    dup = rng.random(events) < 0.01
    # a re-send is the same event again (same time, same content hash), right after it
    hashes[1:][dup[1:]] = hashes[:-1][dup[1:]]
    t[1:][dup[1:]] = t[:-1][dup[1:]]
    return EventColumns(
        station=rng.integers(0, stations, events).astype(np.int64), time_s=t,
        value=rng.normal(100.0, 5.0, events), category_bin=rng.integers(0, 16, events),
        event_hash=hashes, source_hash=rng.integers(0, 2**20, events).astype(np.uint64))


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_detectors(*, stations: int = 247, events: int = 5_000_000, ticks: int = 300,
                    batch_events: int = 65_536, repeats: int = 3, seed: int = 7) -> dict[str, Any]:
    """Events/s of the whole chain vs the bincount baseline (see module docstring)."""
    if stations < 5 or events < 1 or ticks < 1:
        raise ValueError("need at least 5 stations, 1 event and 1 tick")
    cols = synthetic_columns(stations, events, ticks, seed)
    fleet = default_fleet(stations, seed)
    reg = StationRegistry(list(fleet))
    meta = StationMeta.from_registry(reg)
    # consumer-sized batches, as a Kafka poll or the embedded bus would hand them over
    edges = np.r_[np.arange(0, events, batch_events), events]
    timings: dict[str, float] = {}

    n_regions = len(reg.region_names())

    def chain_run() -> dict[str, Any]:
        proc = TickProcessor(DetectorChain())
        state = proc.init_state((stations,), n_regions)
        acc = TickAccumulator(n_stations=stations, tick_s=1.0, allowed_lateness_s=1.5)
        t_ingest = t_detect = 0.0
        alerts = 0
        for a, b in itertools.pairwise(edges):
            t0 = time.perf_counter()
            acc.add(EventColumns(cols.station[a:b], cols.time_s[a:b], cols.value[a:b],
                                 cols.category_bin[a:b], cols.event_hash[a:b],
                                 cols.source_hash[a:b]))
            closed = acc.close_until(float(cols.time_s[b - 1]) if b > a else 0.0)
            t1 = time.perf_counter()
            for tick, cells in closed:
                out = proc.step(state, cells, meta, tick=tick, time_s=tick + 1.0)
                alerts += int(out.meter["fired"].sum())
            t_ingest += t1 - t0
            t_detect += time.perf_counter() - t1
        t0 = time.perf_counter()
        for tick, cells in acc.flush():
            alerts += int(proc.step(state, cells, meta, tick=tick, time_s=tick + 1.0).meter["fired"].sum())
        t_detect += time.perf_counter() - t0
        timings["ingest_s"], timings["detect_s"] = t_ingest, t_detect
        return {"alerts": alerts, "duplicates": acc.duplicates,
                "bytes_per_station": proc.nbytes_per_station(state)}

    def baseline() -> int:
        key = np.floor(cols.time_s).astype(np.int64) * stations + cols.station
        return int(np.bincount(key, minlength=ticks * stations).sum())

    t_chain, info = _best(chain_run, repeats)
    t_base, counted = _best(baseline, repeats)
    assert counted == events
    return {
        "benchmark": "detectors",
        "stations": stations, "events": events, "ticks": ticks, "batch_events": batch_events,
        "repeats": repeats, "seed": seed,
        "chain_seconds": round(t_chain, 4),
        "chain_events_per_s": round(events / t_chain),
        "baseline": "np.bincount over tick*stations+station keys",
        "baseline_seconds": round(t_base, 4),
        "baseline_events_per_s": round(events / t_base),
        "ratio_to_baseline": round(t_base / t_chain, 4),
        "stage_seconds_last_run": {k: round(v, 4) for k, v in timings.items()},
        "duplicates_dropped": info["duplicates"],
        "alerts": info["alerts"],
        "bytes_per_station": info["bytes_per_station"],
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }


def bench_montecarlo(*, runs: int = 400, scenarios: str = "simultaneous,slow-cascade,lone-surge,pure-noise",
                     workers: int | None = None, serial_runs: int = 8, chunk: int = 500,
                     seed: int = 7) -> dict[str, Any]:
    """Campaign throughput (tests/s), vectorised and across processes, against the very same
    tests run one at a time (one run per batch, one process) in the same benchmark.

    The 410,000-test target (10,000 runs x 41 scenarios in 82 s) is extrapolated from the
    measured rate, and the stages' share of one chunk's time says what bounds it.
    """
    import cProfile
    import pstats

    from convergence.ground_stations.scenario_library import names
    from convergence.simulation.campaign import ParamSpace, run_campaign, run_chunk

    chosen = names(scenarios)
    t0 = time.perf_counter()
    res = run_campaign(chosen, runs=runs, seed=seed, workers=workers, chunk=chunk)
    t_batch = time.perf_counter() - t0
    batch_rate = len(res.records) / t_batch
    t0 = time.perf_counter()
    serial = run_campaign(chosen, runs=serial_runs, seed=seed, workers=1, chunk=1)
    t_serial = time.perf_counter() - t0
    serial_rate = len(serial.records) / t_serial
    # where one chunk's time goes (single process, profiled)
    prof = cProfile.Profile()
    prof.enable()
    run_chunk(chosen[0], 0, min(chunk, runs), seed=seed, space=ParamSpace(), sweep=False)
    prof.disable()
    stats = pstats.Stats(prof)
    total = max(sum(v[3] for k, v in stats.stats.items() if k[2] == "run_chunk"), 1e-9)  # type: ignore[attr-defined]
    groups = {"detectors (entropy)": ("entropy.py",), "detectors (other stages)":
              ("burst.py", "cusum.py", "periodicity.py", "node_state.py", "patterns.py",
               "chain.py"),
              "meter and responses": ("meter.py", "responses.py", "processor.py"),
              "drawing cells (world + Poisson)": ("simulator.py", "scenario.py"),
              "judging": ("campaign.py",)}
    share: dict[str, float] = {}
    for label, files in groups.items():
        tt = sum(v[2] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                 if any(k[0].endswith(f) for f in files))
        share[label] = round(tt / total, 3)
    target_tests = 410_000
    return {
        "benchmark": "montecarlo", "scenarios": chosen, "runs_per_scenario": runs,
        "workers": workers or os.cpu_count(), "chunk": chunk,
        "tests": len(res.records), "seconds": round(t_batch, 2),
        "tests_per_s": round(batch_rate, 1),
        "baseline": "the same tests one at a time (one run per batch, one process)",
        "baseline_tests": len(serial.records), "baseline_seconds": round(t_serial, 2),
        "baseline_tests_per_s": round(serial_rate, 2),
        "ratio_to_baseline": round(batch_rate / serial_rate, 1),
        "target": {"tests": target_tests, "seconds": 82.0,
                   "projected_seconds": round(target_tests / batch_rate, 1),
                   "x_short_of_target": round((target_tests / batch_rate) / 82.0, 1)},
        "time_share_of_one_chunk": share,
        "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
    }

"""The detector benchmark's inputs and report (small sizes; the figures themselves are not asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.ingest import EventColumns
from convergence.simulation.bench import bench_detectors, synthetic_columns


def _resent(cols: EventColumns) -> int:
    """Events that repeat the one right before them (same time, same content hash)."""
    t, h = cols.time_s, cols.event_hash
    return int(((t[1:] == t[:-1]) & (h[1:] == h[:-1])).sum())


def test_synthetic_columns_are_time_ordered_and_in_range() -> None:
    cols = synthetic_columns(stations=30, events=50_000, ticks=40, seed=3, tick_s=0.5)
    assert len(cols) == 50_000
    assert np.all(np.diff(cols.time_s) >= 0)
    assert cols.time_s.min() >= 0.0 and cols.time_s.max() < 40 * 0.5
    assert set(np.unique(cols.station).tolist()) == set(range(30))
    assert cols.category_bin.min() >= 0 and cols.category_bin.max() < 16
    assert cols.event_hash.dtype == np.uint64 and cols.source_hash.dtype == np.uint64
    assert abs(cols.value.mean() - 100.0) < 0.2


def test_about_one_percent_of_synthetic_events_are_resent() -> None:
    cols = synthetic_columns(stations=30, events=100_000, ticks=40, seed=3)
    assert 800 <= _resent(cols) <= 1200
    # apart from the re-sends, content hashes are unique
    assert len(np.unique(cols.event_hash)) == 100_000 - _resent(cols)


def test_synthetic_columns_depend_only_on_the_seed() -> None:
    a, b = (synthetic_columns(10, 5_000, 10, seed=5) for _ in range(2))
    c = synthetic_columns(10, 5_000, 10, seed=6)
    for name in ("station", "time_s", "value", "category_bin", "event_hash", "source_hash"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.time_s, c.time_s)


@pytest.mark.parametrize("batch_events", [100, 997, 65_536])
def test_the_chain_drops_exactly_the_resent_events_whatever_the_batching(batch_events: int) -> None:
    r = bench_detectors(stations=20, events=20_000, ticks=20, repeats=1, seed=1,
                        batch_events=batch_events)
    assert r["duplicates_dropped"] == _resent(synthetic_columns(20, 20_000, 20, seed=1)) > 0
    assert r["batch_events"] == batch_events


def test_the_report_describes_the_run() -> None:
    r = bench_detectors(stations=12, events=6_000, ticks=15, repeats=2, seed=4)
    assert {k: r[k] for k in ("benchmark", "stations", "events", "ticks", "repeats", "seed")} == {
        "benchmark": "detectors", "stations": 12, "events": 6_000, "ticks": 15, "repeats": 2, "seed": 4}
    # events/s and seconds describe the same best run (seconds are rounded to 0.1 ms)
    for part in ("chain", "baseline"):
        per_s, seconds = r[f"{part}_events_per_s"], r[f"{part}_seconds"]
        assert per_s > 0 and per_s * seconds == pytest.approx(6_000, abs=per_s * 5e-5 + 1)
    assert set(r["stage_seconds_last_run"]) == {"ingest_s", "detect_s"}
    assert r["alerts"] >= 0 and 0 < r["bytes_per_station"] < 4096
    assert r["numpy"] == np.__version__ and r["cpus"] >= 1


@pytest.mark.parametrize("kw", [{"stations": 4}, {"events": 0}, {"ticks": 0}])
def test_too_small_a_benchmark_is_refused(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="need at least 5 stations, 1 event and 1 tick"):
        bench_detectors(**{"events": 100, "ticks": 2, **kw})  # type: ignore[arg-type]

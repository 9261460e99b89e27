from __future__ import annotations

import numpy as np

from convergence.detectors.ingest import (
    EventColumns,
    TickAccumulator,
    bucket,
    category_bin,
    finish_cells,
    source_hash,
)


def _random_cols(rng: np.random.Generator, n: int, n_st: int, t_max: float) -> EventColumns:
    return EventColumns.from_arrays(
        station=rng.integers(0, n_st, n), time_s=np.sort(rng.uniform(0, t_max, n)),
        value=rng.normal(size=n), category_bin=rng.integers(0, 16, n),
        event_hash=rng.choice(np.arange(1, 10 * n, dtype=np.uint64), n, replace=False),
        source_hash=rng.integers(1, 2**63, n).astype(np.uint64))


def test_bucket_matches_per_event_loop() -> None:
    rng = np.random.default_rng(1)
    cols = _random_cols(rng, 2000, 7, 10.0)
    cells = bucket(cols, t0_tick=0, n_ticks=10, n_stations=7, tick_s=1.0)
    for t in range(10):
        for s in range(7):
            m = (np.floor(cols.time_s) == t) & (cols.station == s)
            v = cols.value[m]
            assert cells["count"][t, s] == m.sum()
            if m.any():
                assert np.isclose(cells["value_sum"][t, s], v.sum())
                assert np.isclose(cells["value_sumsq"][t, s], (v * v).sum())
                assert cells["value_min"][t, s] == v.min() and cells["value_max"][t, s] == v.max()
                assert cells["value_last"][t, s] == v[np.argmax(cols.time_s[m])]
                hist = np.bincount(cols.category_bin[m], minlength=16)
                assert (cells["hist"][t, s] == hist).all()
                distinct = len({int(h) % 64 for h in cols.source_hash[m]})
                assert finish_cells(cells)["distinct_sources"][t, s] == distinct


def test_bins_and_hashes_are_stable() -> None:
    assert category_bin("conflict") == category_bin("conflict")
    assert 0 <= category_bin("x", 4) < 4
    assert source_hash(None) == 0 and source_hash("a") == source_hash("a") != source_hash("b")


def test_accumulator_equals_one_shot_bucket_in_any_batching() -> None:
    rng = np.random.default_rng(2)
    cols = _random_cols(rng, 3000, 5, 20.0)
    ref = bucket(cols, t0_tick=0, n_ticks=20, n_stations=5, tick_s=1.0)
    acc = TickAccumulator(n_stations=5, tick_s=1.0, allowed_lateness_s=100.0)
    for chunk in np.array_split(np.arange(3000), 17):
        acc.add(cols.take(chunk))
    closed = acc.flush()
    assert [t for t, _ in closed] == list(range(20))
    for t, cells in closed:
        for k in ("count", "value_sum", "hist", "value_last"):
            assert np.allclose(cells[k], ref[k][t]), k


def test_duplicates_counted_once_even_across_batches() -> None:
    acc = TickAccumulator(n_stations=1, tick_s=1.0, allowed_lateness_s=5.0)
    cols = EventColumns.from_arrays(station=[0, 0, 0], time_s=[0.1, 0.2, 0.1], value=[1, 2, 1],
                                    category_bin=[0, 0, 0], event_hash=[7, 8, 7])
    r1 = acc.add(cols)
    r2 = acc.add(cols.take(np.array([0, 1])))
    assert (r1.accepted, r1.duplicates, r2.accepted, r2.duplicates) == (2, 1, 0, 2)
    (_, cells), = acc.flush()
    assert cells["count"][0] == 2


def test_duplicates_across_many_ticks_and_batches_match_a_set_of_seen_events() -> None:
    # a batch spans many ticks and each tick holds several chunks of seen events (the
    # search is bounded to each chunk's time span): every event seen before, in an
    # earlier batch or earlier in its own, is a duplicate, and no other
    rng = np.random.default_rng(5)
    acc = TickAccumulator(n_stations=3, tick_s=1.0, allowed_lateness_s=1e9)
    seen: set[tuple[float, int]] = set()
    for _ in range(60):
        n = int(rng.integers(1, 40))
        time_s = np.round(rng.uniform(0, 12, n), 1)
        event_hash = (time_s * 10).astype(np.uint64) * 4 + rng.integers(0, 4, n).astype(np.uint64)
        cols = EventColumns.from_arrays(station=rng.integers(0, 3, n), time_s=time_s,
                                        value=np.ones(n), category_bin=np.zeros(n, np.int64),
                                        event_hash=event_hash)
        expected = 0
        for t, h in zip(time_s.tolist(), event_hash.tolist(), strict=True):
            expected += (t, h) in seen
            seen.add((t, h))
        assert acc.add(cols).duplicates == expected


def test_lateness_window_and_contiguous_empty_ticks() -> None:
    acc = TickAccumulator(n_stations=2, tick_s=1.0, allowed_lateness_s=2.0)
    acc.add(EventColumns.from_arrays(station=[0], time_s=[0.5], value=[1], category_bin=[0],
                                     event_hash=[1]))
    assert acc.close_until(2.9) == []  # tick 0 ends at 1.0, needs watermark >= 3.0
    acc.add(EventColumns.from_arrays(station=[1], time_s=[0.9], value=[1], category_bin=[0],
                                     event_hash=[2]))  # late but within lateness
    closed = acc.close_until(6.0)
    assert [t for t, _ in closed] == [0, 1, 2, 3]
    assert closed[0][1]["count"].tolist() == [1.0, 1.0] and closed[2][1]["count"].sum() == 0
    late = acc.add(EventColumns.from_arrays(station=[1], time_s=[2.5], value=[1], category_bin=[0],
                                            event_hash=[3]))
    assert late.late_idx.tolist() == [0] and acc.late == 1


def test_new_station_grows_open_ticks() -> None:
    acc = TickAccumulator(n_stations=1, tick_s=1.0, allowed_lateness_s=0.0)
    acc.add(EventColumns.from_arrays(station=[0], time_s=[0.1], value=[1], category_bin=[0]))
    acc.add(EventColumns.from_arrays(station=[3], time_s=[0.2], value=[1], category_bin=[0],
                                     event_hash=[9]))
    (_, cells), = acc.close_until(1.0)
    assert cells["count"].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_an_old_event_first_then_current_ones_closes_a_bounded_number_of_ticks() -> None:
    # Issue 11, item 4: a valid event from 3 days ago arrived first after a restart and
    # ingest closed every tick since then (229,642 empty ticks in one call). Closing
    # costs the data plus at most ``max_gap_ticks`` per gap, never the gap's length.
    day_ticks = 86_400 * 4  # tick_s = 0.25
    now_tick = 1_000 * day_ticks
    old_tick = now_tick - 3 * day_ticks
    acc = TickAccumulator(n_stations=3, tick_s=0.25, allowed_lateness_s=1.0, max_gap_ticks=64)
    acc.add(EventColumns.from_arrays(station=[0], time_s=[old_tick * 0.25 + 0.1], value=[1],
                                     category_bin=[0], event_hash=[1]))
    t_now = np.arange(now_tick, now_tick + 40) * 0.25 + 0.05
    current = acc.add(EventColumns.from_arrays(
        station=np.arange(40) % 3, time_s=t_now, value=np.ones(40),
        category_bin=np.zeros(40, np.int64), event_hash=np.arange(2, 42)))
    assert current.accepted == 40 and current.late_idx.size == 0
    closed = acc.close_until(t_now[-1] + 0.25 + 1.0)
    ticks = [t for t, _ in closed]
    # the old tick, 64 empty ones after it, then (the 3-day gap skipped) the 40 current ones
    assert len(closed) == 1 + 64 + 40
    assert ticks[0] == old_tick and ticks[-40:] == list(range(now_tick, now_tick + 40))
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert acc.skipped_ticks == 3 * day_ticks - 1 - 64
    assert sum(int(c["count"].sum()) for _, c in closed) == 41  # every event in its tick


def test_each_gap_costs_at_most_max_gap_ticks_empty_ticks() -> None:
    acc = TickAccumulator(n_stations=1, tick_s=1.0, allowed_lateness_s=0.0, max_gap_ticks=8)
    times = [0.5, 100.5, 1_000.5, 1_004.5, 50_000.5]  # gaps of 99, 899, 3 and 48,995 ticks
    acc.add(EventColumns.from_arrays(station=[0] * 5, time_s=times, value=[1] * 5,
                                     category_bin=[0] * 5, event_hash=[1, 2, 3, 4, 5]))
    closed = acc.close_until(50_001.0)
    empty = [t for t, c in closed if c["count"].sum() == 0]
    assert len(closed) == 5 + len(empty) and len(empty) == 8 + 8 + 3 + 8
    assert acc.skipped_ticks == (99 - 8) + (899 - 8) + (48_995 - 8)

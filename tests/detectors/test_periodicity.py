from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from convergence.detectors.base import ArrayState
from convergence.detectors.burst import BurstDetector
from convergence.detectors.periodicity import PeriodicityDetector, slot_of

HOUR = 3600.0
DAY = 86_400.0


def _daily_stream(seed: int, days: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Hourly ticks: Poisson(30) from 08:00 to 20:00, Poisson(3) at night, with two breaks."""
    rng = np.random.default_rng(seed)
    hours = slot_of(np.arange(days * 24) * HOUR, 24)
    lam = np.where((hours >= 8) & (hours < 20), 30.0, 3.0)
    counts = rng.poisson(lam).astype(float)
    counts[12 * 24 + 2: 12 * 24 + 6] = rng.poisson(30.0, 4)  # day 12, 02:00-05:59: night surge
    counts[13 * 24 + 10: 13 * 24 + 13] = 0.0  # day 13, 10:00-12:59: silent at the busiest hours
    return counts, hours


def _run(det: PeriodicityDetector, counts: np.ndarray, slots: np.ndarray) -> list[dict[str, Any]]:
    st = det.init_state(counts.shape[1:])
    return [det.step(st, {"count": c, "slot": s}) for c, s in zip(counts, slots, strict=True)]


def test_pinned_ticks_on_a_daily_profile() -> None:
    counts, hours = _daily_stream(0)
    outs = _run(PeriodicityDetector(), counts[:, None], hours)
    departs = [t for t, o in enumerate(outs) if abs(o["periodicity_z"][0]) >= 4.0]
    breaks = [t for t, o in enumerate(outs) if o["periodicity_break"][0]]
    assert departs == [290, 291, 292, 293, 322, 323, 324]
    assert breaks == [291, 292, 293, 323, 324]  # min_ticks=2: from the second departing tick
    assert all(outs[t]["periodicity_z"][0] > 8 for t in (290, 291, 292, 293))  # surge: above
    assert all(outs[t]["periodicity_z"][0] < -4 for t in (322, 323, 324))  # silence: below


def test_daily_peaks_are_normal_here_but_burst_fires_on_them() -> None:
    # the contrast this stage exists for: one baseline sees every morning as a burst
    counts, hours = _daily_stream(0)
    burst = BurstDetector()
    bst = burst.init_state((1,))
    bursts = [t for t, c in enumerate(counts) if burst.step(bst, {"count": np.array([c])})["burst"][0]]
    assert bursts and min(bursts) < 24 * 2  # the first mornings look like bursts
    outs = _run(PeriodicityDetector(), counts[:, None], hours)
    assert not any(o["periodicity_break"][0] for o in outs[: 12 * 24])


def test_nothing_is_judged_before_min_seen_visits() -> None:
    counts, hours = _daily_stream(0)
    outs = _run(PeriodicityDetector(min_seen=3), counts[:, None], hours)
    assert all(float(o["periodicity_z"][0]) == 0.0 for o in outs[: 3 * 24])
    assert any(float(o["periodicity_z"][0]) != 0.0 for o in outs[3 * 24: 4 * 24])
    # a young slot's expectation is the plain average of its visits (weights 1/seen)
    expected = float(outs[3 * 24 + 9]["periodicity_expected"][0])
    assert expected == pytest.approx(counts[[9, 33, 57]].mean(), rel=1e-6)


def test_batch_equals_per_station_loop() -> None:
    rng = np.random.default_rng(2)
    runs, stations, days = 3, 4, 6
    slots = slot_of(np.arange(days * 24) * HOUR, 24)
    base = rng.uniform(1.0, 10.0, (runs, stations))
    peak = np.where((slots >= 9) & (slots < 17), 4.0, 1.0)
    counts = rng.poisson(base * peak[:, None, None]).astype(float)
    counts[5 * 24 + 3, 1, 2] += 40.0
    det = PeriodicityDetector(min_seen=2)
    # the same clock for every station (scalar slot) and a per-station slot array
    batched = _run(det, counts, slots)
    per_station = _run(det, counts, np.broadcast_to(slots[:, None, None], counts.shape).copy())
    for r in range(runs):
        for s in range(stations):
            single = _run(det, counts[:, r, s][:, None], slots)
            for t in range(len(slots)):
                for k, v in single[t].items():
                    assert np.array_equal(v[0], batched[t][k][r, s]), (k, t, r, s)
                    assert np.array_equal(v[0], per_station[t][k][r, s]), (k, t, r, s)
    assert any(o["periodicity_break"].any() or (np.abs(o["periodicity_z"]) >= 4).any()
               for o in batched)


def test_state_round_trips_and_is_fixed_size() -> None:
    counts, hours = _daily_stream(0)
    det = PeriodicityDetector(slots_per_day=24)
    st = det.init_state((2,))
    size = st.nbytes_per_station()
    pair = np.stack([counts, counts[::-1]], axis=1)
    for c, h in zip(pair[:285], hours[:285], strict=True):
        det.step(st, {"count": c, "slot": h})
    copy = ArrayState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert st.nbytes_per_station() == size == 3 * 24 * 4 + 8  # float32 profile + run
    for c, h in zip(pair[285:], hours[285:], strict=True):
        a = det.step(st, {"count": c, "slot": h})
        b = det.step(copy, {"count": c, "slot": h})
        for k in a:
            assert np.array_equal(a[k], b[k]), k


def test_slot_of() -> None:
    t = np.array([0.0, HOUR - 0.001, HOUR, 23.5 * HOUR, DAY, 3 * DAY + 13 * HOUR, -1.0])
    assert slot_of(t, 24).tolist() == [0, 0, 1, 23, 0, 13, 23]
    assert slot_of(t, 96).tolist() == [0, 3, 4, 94, 0, 52, 95]
    assert slot_of(t, 1).tolist() == [0] * len(t)
    assert slot_of(0.0, 24, utc_offset_s=-5 * HOUR).tolist() == 19  # New York, winter
    assert slot_of(np.nextafter(DAY, 0.0), 24).tolist() == 23  # no slot 24 at the day's edge
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="slots_per_day"):
            slot_of(0.0, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        slot_of(np.array([0.0, np.nan]), 24)


def test_rejects_bad_slot_input() -> None:
    det = PeriodicityDetector(slots_per_day=4)
    st = det.init_state((2,))
    with pytest.raises(ValueError, match=r"slot must be in \[0, 4\)"):
        det.step(st, {"count": np.zeros(2), "slot": np.array([0, 4])})
    with pytest.raises(ValueError, match="integer"):
        det.step(st, {"count": np.zeros(2), "slot": np.array([0.5, 1.0])})


@pytest.mark.parametrize("kw", [
    {"slots_per_day": 0}, {"slots_per_day": 2000}, {"slots_per_day": 24.0}, {"alpha": 0.0},
    {"threshold": 0.0}, {"min_ticks": 0}, {"min_seen": 0}, {"var_floor": -1.0},
])
def test_rejects_bad_settings(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PeriodicityDetector(**kw)


def test_settings_are_stored_under_their_own_names() -> None:
    det = PeriodicityDetector(slots_per_day=96, alpha=0.2, threshold=3.0, min_ticks=3,
                              min_seen=5, var_floor=2.0)
    assert (det.slots_per_day, det.alpha, det.threshold, det.min_ticks, det.min_seen,
            det.var_floor) == (96, 0.2, 3.0, 3, 5, 2.0)


def test_scalar_slot_matches_per_station_slots() -> None:
    rng = np.random.default_rng(5)
    det = PeriodicityDetector(slots_per_day=6)
    a, b = det.init_state((3, 8)), det.init_state((3, 8))
    for t in range(40):
        c = rng.poisson(5.0, (3, 8)).astype(float)
        oa = det.step(a, {"count": c, "slot": np.asarray(t % 6)})
        ob = det.step(b, {"count": c, "slot": np.full((3, 8), t % 6)})
        for k in oa:
            assert np.array_equal(oa[k], ob[k]), k
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="slot must be in"):
        det.step(a, {"count": c, "slot": np.asarray(6)})


# -- level + daily profile + weekday model ---------------------------------------------------
from convergence.detectors.periodicity import week_slot_of  # noqa: E402

QUARTER = 900.0


def _level_model(**kw: Any) -> PeriodicityDetector:
    args: dict[str, Any] = {"slots_per_day": 96, "min_seen": 3, "var_floor": 1e-12,
                            "poisson_floor": False, "level_alpha": 0.002, "week": True,
                            "week_alpha": 0.002}
    args.update(kw)
    return PeriodicityDetector(**args)


def _seasonal(days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(days * 96) * QUARTER + 3 * DAY  # starts on a Sunday
    weekend = week_slot_of(t) >= 5
    return t, 50 + 4 * np.sin(2 * np.pi * t / DAY) - 3.0 * weekend + rng.normal(0, 0.5, t.shape[0])


def _run_level(det: PeriodicityDetector, t: np.ndarray, x: np.ndarray,
               rebase: np.ndarray | None = None) -> list[dict[str, Any]]:
    st = det.init_state((1,))
    outs = []
    for i in range(t.shape[0]):
        inp: dict[str, Any] = {"count": x[i:i + 1], "slot": slot_of(t[i], 96),
                               "week_slot": week_slot_of(t[i])}
        if rebase is not None:
            inp["rebase"] = rebase[i:i + 1]
        outs.append(det.step(st, inp))
    return outs


def test_level_model_learns_the_daily_cycle_and_the_weekend() -> None:
    t, x = _seasonal(28)
    outs = _run_level(_level_model(), t, x)
    z = np.array([o["periodicity_z"][0] for o in outs])
    resid = np.array([x[i] - o["periodicity_expected"][0] for i, o in enumerate(outs)])
    late = slice(96 * 14, None)  # two weeks in: every weekday seen twice
    assert np.abs(resid[late]).std() < 0.7  # the noise (0.5), not the 4 + 3 of the seasons
    assert np.abs(z[late]).max() < 5.0 and np.abs(z[late]).std() < 1.3
    # one absolute mean per slot mixes weekdays and weekends: its expectation is off by
    # far more than the noise, so it needs a wide band and misses what is inside it
    flat = _run_level(PeriodicityDetector(slots_per_day=96, min_seen=3, var_floor=1e-12,
                                          poisson_floor=False), t, x)
    resid_flat = np.array([x[i] - o["periodicity_expected"][0] for i, o in enumerate(flat)])
    assert np.abs(resid_flat[late]).std() > 2 * np.abs(resid[late]).std()


def test_rebase_absorbs_a_level_shift_while_the_profile_is_kept() -> None:
    t, x = _seasonal(21)
    x[96 * 14:] += 20.0
    rebase = np.zeros(t.shape[0], bool)
    rebase[96 * 14 + 3] = True  # as a CUSUM alarm would, a few rows after the shift
    outs = _run_level(_level_model(), t, x, rebase)
    z = np.array([o["periodicity_z"][0] for o in outs])
    assert np.abs(z[96 * 14: 96 * 14 + 3]).min() > 10  # the shift is seen
    assert np.abs(z[96 * 14 + 10:]).max() < 5.0  # then absorbed: the daily shape still fits
    no_rebase = _run_level(_level_model(), t, x)
    assert np.abs([o["periodicity_z"][0] for o in no_rebase[96 * 14 + 10:96 * 15]]).max() > 5.0


def test_level_model_profile_stays_centred_and_survives_wild_values() -> None:
    t, x = _seasonal(10)
    x[500] = 1e200
    x[600] = np.nan
    det = _level_model()
    st = det.init_state((1,))
    for i in range(t.shape[0]):
        out = det.step(st, {"count": x[i:i + 1], "slot": slot_of(t[i], 96), "week_slot": week_slot_of(t[i])})
        assert np.isfinite(out["periodicity_z"]).all()
    assert all(np.isfinite(v).all() for v in st.values())
    assert abs(float(st["mu"][0].mean())) < 1e-3 and abs(float(st["wk"][0].mean())) < 1e-3
    assert float(st["level"][0]) == pytest.approx(50 - 3 * 2 / 7, abs=1.0)


def test_level_model_judges_against_the_level_before_slots_are_trusted() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 200)
    x[150] = 12.0
    det = _level_model(week=False, min_rows=40)
    st = det.init_state((1,))
    outs = [det.step(st, {"count": x[i:i + 1], "slot": np.int64(i % 96)}) for i in range(200)]
    z = np.array([o["periodicity_z"][0] for o in outs])
    assert z[:40].max() == 0.0 and z[150] > 8 and not outs[150]["periodicity_trusted"][0]


def test_level_model_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="level_alpha > 0"):
        PeriodicityDetector(week=True)
    with pytest.raises(ValueError, match="week_slot"):
        _level_model().step(_level_model().init_state((1,)), {"count": np.ones(1), "slot": np.int64(0)})
    with pytest.raises(ValueError, match="min_rows"):
        _level_model(min_rows=-1)

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convergence.detectors.regime import RegimeFilter
from convergence.detectors.single import (
    CALIBRATION,
    SCALE_HOLD_ROWS,
    SingleSeriesDetector,
    calibration_table,
    evidence_to_score,
)

MINUTE = 60.0
QUARTER = 900.0
DAY = 86_400.0


def _score(x: np.ndarray, step_s: float = QUARTER, **kw: object) -> np.ndarray:
    return SingleSeriesDetector(**kw).score_series(x, np.arange(x.shape[0]) * step_s)  # type: ignore[arg-type]


# -- the calibrated score ----------------------------------------------------------------------
def test_score_is_one_minus_the_measured_null_chance() -> None:
    levels, log_tail = CALIBRATION
    s = evidence_to_score(levels)
    assert s[0] == 0.0
    assert np.allclose(s, 1.0 - 10.0 ** log_tail)
    assert evidence_to_score(np.array([4.0]))[0] == pytest.approx(1 - 10 ** -3.19)


def test_score_keeps_ranking_strong_evidence_below_one() -> None:
    e = np.array([6.0, 8.0, 12.0, 30.0, 100.0])
    s = evidence_to_score(e)
    assert np.all(np.diff(s) > 0) and s[-1] <= 1.0 and s[-2] < 1.0
    assert evidence_to_score(np.array([np.nan, -3.0])).tolist() == [0.0, 0.0]


def test_calibration_table_is_reproducible_from_its_seed() -> None:
    a = calibration_table(rows=600, series=4, levels=(0.0, 2.0, 4.0))
    b = calibration_table(rows=600, series=4, levels=(0.0, 2.0, 4.0))
    assert np.array_equal(a[1], b[1]) and a[1][0] == 0.0 and a[1][1] < 0.0


@pytest.mark.parametrize("noise", ["gaussian", "seasonal", "scaled"])
def test_score_means_the_same_rarity_on_different_series(noise: str) -> None:
    rng = np.random.default_rng(5)
    n, m = 2500, 12
    t = np.arange(n) * QUARTER + 3 * DAY
    x = rng.normal(0.0, 1.0, (m, n))
    if noise == "seasonal":  # a daily cycle and a weekend dip, both learned online
        x = x + 2.0 * np.sin(2 * np.pi * t / DAY) - 1.5 * ((((t // DAY) + 3) % 7) >= 5)
    elif noise == "scaled":
        x = 1e6 + 1e3 * x
    scores = SingleSeriesDetector().score_many([(x[i], t) for i in range(m)])
    tail = np.concatenate([s[n // 3:] for s in scores])
    # 0.99 means about 1 normal row in 100 (measured 0.8 %), 0.9 about 1 in 10
    assert 0.004 < (tail >= 0.99).mean() < 0.016
    assert 0.06 < (tail >= 0.9).mean() < 0.13


# -- detection -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_spike_is_the_top_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 1.0, 1200)
    x[1000:1003] += 10.0
    s = _score(x)
    assert 1000 <= int(np.argmax(s)) <= 1003 and s[1000] > 0.99999
    assert (s[:990] >= 0.999).mean() < 0.01
    assert s[:20].max() == 0.0  # nothing is judged while the baselines learn


def test_a_short_high_frequency_series_is_judged_before_its_day_is_learned() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 1.0, 1200)  # 20 hours of one-minute rows
    x[1000] += 12.0
    s = _score(x, MINUTE)
    assert int(np.argmax(s)) == 1000 and s[1000] > 0.9999 and (s[:990] >= 0.999).mean() < 0.01


def test_drop_is_detected_too_and_scale_does_not_matter() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.001, 0.0001, 600)
    x[500:503] -= 0.0012
    s = _score(x)
    assert 500 <= int(np.argmax(s)) <= 503 and s.max() > 0.99999


def test_daily_cycle_is_learned_so_its_peaks_are_normal_but_a_night_surge_is_not() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(96 * 12) * QUARTER
    x = 10 + 5 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.3, t.shape[0])
    night = 96 * 10 + 80  # 20:00 on day 10: a value that is ordinary at 06:00
    x[night:night + 4] = 15.0
    s = SingleSeriesDetector().score_series(x, t)
    assert night <= int(np.argmax(s)) < night + 4
    assert (s[96 * 4: 96 * 10] >= 0.999).sum() <= 4  # the daily peaks, once learned (of 576)


def test_a_level_shift_is_flagged_then_absorbed() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 1500)
    x[800:] += 6.0  # permanent
    s = _score(x)
    assert s[800:806].max() > 0.9999
    assert (s[900:] >= 0.999).mean() < 0.01  # not flagged for as long as a slow baseline lags


def test_a_noisier_stretch_is_flagged_while_it_lasts() -> None:
    # a random walk's level wanders far more than its one-row changes: only the scale
    # chart (the spread of one-row changes) sees its noise grow fivefold
    rng = np.random.default_rng(11)
    walk = np.cumsum(rng.normal(0.0, 0.3, 2000))
    noise = rng.normal(0.0, 1.0, 2000)
    noise[1200:1350] *= 5.0
    s = _score(walk + noise)
    assert np.median(s[1220:1350]) > 0.999  # raised all along, not just at its start
    assert (s[600:1190] >= 0.999).mean() < 0.01 and (s[1500:] >= 0.999).mean() < 0.01


def test_a_spread_that_stays_is_absorbed() -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(0.0, 1.0, 2500)
    x[1000:] *= 4.0  # permanent
    s = _score(x)
    assert np.median(s[1030:1000 + SCALE_HOLD_ROWS]) > 0.9999
    # held for SCALE_HOLD_ROWS rows, then the new spread is the normal one (about 1 row
    # in 100 still reaches 0.999 while the season's slow variance catches up)
    assert (s[1000 + SCALE_HOLD_ROWS + 30:] >= 0.999).mean() < 0.02


def test_a_trend_is_flagged_while_it_lasts_then_absorbed() -> None:
    rng = np.random.default_rng(13)
    t = np.arange(2400) * QUARTER
    x = 3.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0.0, 1.0, t.shape[0])
    ramp = np.clip(np.arange(2400) - 1200.0, 0.0, 200.0) * 0.1  # 20 sd over 200 rows, then stays
    s = SingleSeriesDetector().score_series(x + ramp, t)
    assert np.median(s[1250:1400]) > 0.999  # the ramp's rows, not only its start
    assert (s[600:1190] >= 0.999).mean() < 0.01
    assert (s[1550:] >= 0.999).mean() < 0.01  # the new level is absorbed after the ramp


def test_a_flat_stretch_is_a_change() -> None:
    # on plain noise only the CUSUM variance-down chart sees it: a corroborator's weight
    rng = np.random.default_rng(6)
    x = rng.normal(5.0, 1.0, 1200)
    x[700:900] = 5.0
    s = _score(x)
    assert s[700:800].max() > 0.9 and (s[300:690] >= 0.9).mean() < 0.12


def test_causal_future_rows_do_not_change_the_past() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(10.0, 1.0, 300)
    t = np.arange(300) * 3600.0
    a = SingleSeriesDetector().score_series(x, t)
    y = x.copy()
    y[200:] += 50.0
    b = SingleSeriesDetector().score_series(y, t)
    assert np.array_equal(a[:200], b[:200])


def test_score_many_equals_one_by_one() -> None:
    rng = np.random.default_rng(8)
    series = [(rng.normal(0, 1, n), np.arange(n) * step + off)
              for n, step, off in ((300, QUARTER, 0.0), (180, QUARTER, 400.0), (50, DAY, 0.0))]
    many = SingleSeriesDetector().score_many(series)
    for (x, t), got in zip(series, many, strict=True):
        assert np.array_equal(got, SingleSeriesDetector().score_series(x, t))


def test_slots_fit_the_sampling() -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.normal(QUARTER, 40.0, 300))  # jittered 15-minute rows
    det = SingleSeriesDetector.for_timestamps(t)
    assert det.slots_per_day == 96 and det.week
    yearly = SingleSeriesDetector.for_timestamps(np.arange(50) * 365 * DAY)
    assert yearly.slots_per_day == 1 and not yearly.week


# -- robustness: what real series throw at it --------------------------------------------------
def test_one_huge_value_does_not_poison_later_scores() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 1.0, 800)
    x[400] = 1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would fail the test
        s = _score(x)
    assert np.all(np.isfinite(s)) and s[400] > 0.99999
    assert (s[410:] >= 0.999).mean() < 0.01  # back to normal within a few rows
    assert (s[420:] >= 0.9).mean() < 0.12


def test_non_finite_values_are_skipped() -> None:
    x = np.random.default_rng(2).normal(0, 1, 300)
    x[[100, 150]] = [np.nan, np.inf]
    s = _score(x)
    assert np.all(np.isfinite(s)) and s[100] == s[150] == 0.0


def test_constant_and_near_constant_series() -> None:
    flat = _score(np.full(500, 42.0))
    assert np.all(flat == 0.0)
    tiny = _score(42.0 + 1e-9 * np.random.default_rng(3).normal(0, 1, 500))
    assert np.all(np.isfinite(tiny)) and (tiny >= 0.999).mean() < 0.02
    # a constant stretch, then noise again: finite throughout, and calm again later
    x = np.r_[np.random.default_rng(4).normal(0, 1, 300), np.zeros(200),
              np.random.default_rng(5).normal(0, 1, 500)]
    s = _score(x)
    assert np.all(np.isfinite(s)) and (s[700:] >= 0.999).mean() < 0.01


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_very_short_series(n: int) -> None:
    s = _score(np.arange(n, dtype=float))
    assert s.shape == (n,) and np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))


def test_gaps_are_not_anomalies() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(2000) * QUARTER
    keep = (t < 8 * DAY) | (t >= 11 * DAY)  # three days missing
    x = 3 + np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.2, t.shape[0])
    s = SingleSeriesDetector().score_series(x[keep], t[keep])
    after = np.flatnonzero(t[keep] >= 11 * DAY)[:96]
    assert (s[after] >= 0.999).sum() <= 3 and s[after].max() < 0.99999


def test_regime_model_adds_evidence_on_volatility_switch() -> None:
    rng = np.random.default_rng(2)
    r = np.r_[rng.normal(0, 0.001, 400), rng.normal(0, 0.02, 100)]
    prices = 100 * np.exp(np.cumsum(r))
    f = RegimeFilter([0.9, 0.1], [[0.99, 0.01], [0.05, 0.95]], [[0.0, 0.001], [0.0, 0.02]],
                     [[1e-6, 1e-7], [4e-4, 1e-5]])
    det = SingleSeriesDetector(regime=f, regime_kind="price", regime_vol_window=10, slots_per_day=1)
    st = det.init_state((1,))
    z = [float(det.step(st, prices[i:i + 1], i * DAY)["regime"][0]) for i in range(500)]
    # alarm share of the long run q = 0.01 / 0.06, so certainty scores sqrt((1 - q) / q)
    assert max(z[:395]) < 1.0 and max(z[405:420]) == pytest.approx(np.sqrt(5.0), rel=1e-3)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        SingleSeriesDetector(warmup_ticks=1)
    with pytest.raises(ValueError, match="slots_per_day"):
        SingleSeriesDetector(slots_per_day=0)
    with pytest.raises(ValueError, match="equally long"):
        SingleSeriesDetector().score_series([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        SingleSeriesDetector().score_series([1.0, 2.0], [1.0, np.nan])


def test_fuse_top2_matches_sorting() -> None:
    from convergence.detectors.base import fuse_top2

    rng = np.random.default_rng(2)
    parts = [np.maximum(rng.normal(0, 3, (5, 9)), 0.0) for _ in range(5)]
    srt = np.sort(np.stack(parts, -1), -1)
    fused, top = fuse_top2(parts, 0.5)
    assert np.array_equal(fused, srt[..., -1] + 0.5 * srt[..., -2])
    assert np.array_equal(top, srt[..., -1])
    assert np.array_equal(fuse_top2(parts, 0.0)[0], srt[..., -1])

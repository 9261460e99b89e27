from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.regime import RegimeFilter
from convergence.detectors.single import SingleSeriesDetector, evidence_to_score


def test_score_mapping_known_points() -> None:
    s = evidence_to_score(np.array([0.0, 2.0, 5.0, 100.0]))
    assert s[0] == s[1] == 0.0 and s[2] == pytest.approx(1 - np.exp(-1)) and s[3] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_spike_is_the_top_score_and_noise_stays_low(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 1.0, 1200)
    x[1000:1003] += 10.0
    s = SingleSeriesDetector().score_series(x, np.arange(1200) * 60.0)
    assert 1000 <= int(np.argmax(s)) <= 1003
    assert s[:990].max() < 0.7 and (s[:990] >= 0.5).mean() < 0.01
    assert s[:20].max() == 0.0  # warm-up


def test_drop_is_detected_too_and_scale_does_not_matter() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.001, 0.0001, 600)
    x[500:503] -= 0.0012
    s = SingleSeriesDetector().score_series(x, np.arange(600) * 60.0)
    assert 500 <= int(np.argmax(s)) <= 503 and s.max() > 0.8


def test_causal_future_rows_do_not_change_the_past() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(10.0, 1.0, 300)
    t = np.arange(300) * 3600.0
    a = SingleSeriesDetector().score_series(x, t)
    y = x.copy()
    y[200:] += 50.0
    b = SingleSeriesDetector().score_series(y, t)
    assert np.array_equal(a[:200], b[:200])


def test_regime_model_adds_evidence_on_volatility_switch() -> None:
    rng = np.random.default_rng(2)
    r = np.r_[rng.normal(0, 0.001, 400), rng.normal(0, 0.02, 100)]
    prices = 100 * np.exp(np.cumsum(r))
    f = RegimeFilter([0.9, 0.1], [[0.99, 0.01], [0.05, 0.95]], [[0.0, 0.001], [0.0, 0.02]],
                     [[1e-6, 1e-7], [4e-4, 1e-5]])
    det = SingleSeriesDetector(regime=f, regime_kind="price", regime_vol_window=10)
    st = det.init_state((1,))
    z = [float(det.step(st, prices[i:i + 1], 0).get("regime", np.zeros(1))[0]) for i in range(500)]
    # alarm share of the long run q = 0.01 / 0.06, so certainty scores sqrt((1 - q) / q)
    assert max(z[:395]) < 1.0 and max(z[405:420]) == pytest.approx(np.sqrt(5.0), rel=1e-3)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        SingleSeriesDetector(warmup_ticks=1)
    with pytest.raises(ValueError, match="equally long"):
        SingleSeriesDetector().score_series([1.0, 2.0], [1.0])


def test_fuse_top2_matches_sorting() -> None:
    from convergence.detectors.base import fuse_top2

    rng = np.random.default_rng(2)
    parts = [np.maximum(rng.normal(0, 3, (5, 9)), 0.0) for _ in range(5)]
    srt = np.sort(np.stack(parts, -1), -1)
    fused, top = fuse_top2(parts, 0.5)
    assert np.array_equal(fused, srt[..., -1] + 0.5 * srt[..., -2])
    assert np.array_equal(top, srt[..., -1])
    assert np.array_equal(fuse_top2(parts, 0.0)[0], srt[..., -1])

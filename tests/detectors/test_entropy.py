from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from convergence.detectors.entropy import EntropyDetector, shannon_entropy


def test_agrees_with_scipy_on_random_histograms() -> None:
    rng = np.random.default_rng(0)
    h = rng.integers(0, 20, size=(50, 30, 16)).astype(float)
    h[h.sum(-1) == 0, 0] = 1
    ours = shannon_entropy(h)
    ref = scipy_entropy(h, base=2, axis=-1)
    assert np.allclose(ours, ref, atol=1e-12)
    assert np.allclose(shannon_entropy(h, base=np.e), scipy_entropy(h, axis=-1))


def test_known_answers() -> None:
    assert shannon_entropy(np.ones(16)) == pytest.approx(4.0)
    assert shannon_entropy(np.eye(8)[3] * 5) == 0.0
    assert shannon_entropy(np.zeros(4)) == 0.0  # empty histogram: no information, no NaN


def _run(det: EntropyDetector, counts: np.ndarray, hists: np.ndarray) -> list[dict[str, np.ndarray]]:
    st = det.init_state((counts.shape[1],))
    return [det.step(st, {"count": counts[t], "hist": hists[t]}) for t in range(counts.shape[0])]


def test_baseline_adapts_and_recovers_after_a_shift() -> None:
    rng = np.random.default_rng(4)
    T = 300
    counts = rng.poisson(np.where(np.arange(T) < 150, 5.0, 20.0)).astype(float)[:, None]
    hists = np.zeros((T, 1, 16))
    hists[:, 0, :8] = counts / 8
    out = _run(EntropyDetector(alpha=0.05), counts, hists)
    bits = np.array([o["activity_bits"][0] for o in out])
    assert bits[150] > 10  # the level shift is surprising when it happens...
    assert bits[280:].mean() < 1.5  # ...and ordinary once the baseline has adapted


def test_topic_concentration_drops_entropy() -> None:
    T = 60
    counts = np.full((T, 1), 16.0)
    hists = np.ones((T, 1, 16))
    hists[40:, 0] = 0
    hists[40:, 0, 3] = 16
    out = _run(EntropyDetector(), counts, hists)
    z = np.array([o["entropy_drop_z"][0] for o in out])
    assert z[:40].max() == 0.0 and z[41] > 4


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="alpha"):
        EntropyDetector(alpha=0.0)
    with pytest.raises(ValueError, match="warmup_ticks"):
        EntropyDetector(warmup_ticks=0)


def _busy_hour_bits(seasonal: bool) -> list[float]:
    from convergence.detectors.chain import DetectorChain, StationMeta

    # hourly ticks: quiet nights (2/h), busy afternoons 13-16 h (40/h), for 12 days
    rng = np.random.default_rng(8)
    chain = DetectorChain(patterns=None)
    meta = StationMeta(np.array([0]), np.array([0]), np.array([0]))
    state = chain.init_state((1,))
    bits = []
    for t in range(24 * 12):
        hour = t % 24
        c = float(rng.poisson(40.0 if 13 <= hour <= 16 else 2.0))
        hist = np.zeros((1, 16))
        hist[0, :8] = c / 8
        cells = {"count": np.array([c]), "hist": hist}
        if seasonal:
            cells["slot"] = np.int64(hour)
        out = chain.step(state, cells, meta)
        if hour == 13 and t >= 24 * 9:  # the first busy hour, once the profile is learned
            bits.append(float(out["entropy"]["activity_bits"][0]))
    return bits


def test_activity_baseline_is_seasonal_where_a_daily_cycle_exists() -> None:
    plain, seasonal = _busy_hour_bits(False), _busy_hour_bits(True)
    # the flat baseline is surprised by every afternoon; the learned daily profile is not
    assert sum(plain) / len(plain) > 5.0
    assert max(seasonal) < 0.1


def test_total_argument_and_other_axis_agree_with_scipy() -> None:
    rng = np.random.default_rng(1)
    h = rng.random((7, 16)) * 5
    h[2] = 0.0
    h[3] = 0.0
    h[3, 4] = 2.5  # a pure histogram: exactly 0, never a hair below
    ours = shannon_entropy(h, total=h.sum(-1))
    assert np.allclose(ours[[0, 1, 4, 5, 6]], scipy_entropy(h[[0, 1, 4, 5, 6]], base=2, axis=-1))
    assert ours[2] == 0.0 and ours[3] == 0.0
    assert np.allclose(shannon_entropy(h.T, axis=0), ours)


def test_seeding_the_activity_baseline_leaves_the_entropy_baseline_alone() -> None:
    # seeding says "this station sees 5 events per tick", nothing about its categories:
    # the category-entropy baseline must learn exactly as it does unseeded
    det = EntropyDetector()
    rng = np.random.default_rng(4)
    seeded, plain = det.init_state((50,)), det.init_state((50,))
    det.seed(seeded, np.full(50, 5.0), np.ones(50, bool))
    for _ in range(20):
        hist = rng.poisson(1.0, (50, 16)).astype(float)
        count = hist.sum(-1)
        a = det.step(seeded, {"count": count, "hist": hist})
        b = det.step(plain, {"count": count, "hist": hist})
        np.testing.assert_array_equal(a["entropy_drop_z"], b["entropy_drop_z"])
    np.testing.assert_array_equal(seeded["h_mu"], plain["h_mu"])
    assert 3.0 < float(seeded["h_mu"].mean()) < 4.0  # about log2(16) less sampling noise

"""VUS-PR pinned to the TSB-AD package's own output, and the event score's rules."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.evaluation.metrics import (
    EventCounts,
    event_counts,
    label_ranges,
    sliding_window,
    vus_pr,
)


def _case(i: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Case ``i`` of the cross-check: the same generator fed TSB-AD 1.5 (see docs/evaluation.md)."""
    rng = np.random.default_rng(42)
    for k in range(i + 1):
        n = int(rng.integers(300, 1500))
        lab = np.zeros(n, int)
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(10, n - 60))
            lab[s:s + int(rng.integers(1, 50))] = 1
        t = np.arange(n)
        x = np.sin(2 * np.pi * t / rng.integers(20, 120)) + rng.normal(0, 0.3, n)
        sc = rng.random(n) * 0.5 + lab * rng.random(n) * (k % 4) * 0.4
        if k % 3 == 0:
            sc = np.round(sc, 1)  # ties
    return lab, sc, [0, 5, 37, 100][i % 4], x


# printed by TSB_AD.evaluation.basic_metrics.generate_curve(labels, score, window, "opt", 250)
# and TSB_AD.utils.slidingWindows.find_length_rank(x, rank=1), tsb-ad 1.5 with numpy 1.26
TSB_AD = [(0.26986616067760166, 39), (0.5886192008387992, 55), (0.7779176403271686, 109),
          (0.835569112734143, 108), (0.0656776724605871, 43), (0.5784626238115987, 81)]


@pytest.mark.parametrize("i", range(len(TSB_AD)))
def test_vus_pr_and_window_match_tsb_ad(i: int) -> None:
    lab, sc, w, x = _case(i)
    assert vus_pr(lab, sc, w) == pytest.approx(TSB_AD[i][0], abs=1e-12)
    assert sliding_window(x) == TSB_AD[i][1]


def test_vus_pr_bounds_and_monotone_invariance() -> None:
    lab = np.zeros(500, int)
    lab[200:230] = 1
    perfect = lab.astype(float)
    noise = np.random.default_rng(0).random(500)
    assert vus_pr(lab, perfect, 20) > 0.9 > vus_pr(lab, noise, 20)
    # only the ranking counts, as TSB-AD's min-max scaling assumes
    assert vus_pr(lab, noise, 20) == pytest.approx(vus_pr(lab, 3 * noise + 7, 20))
    assert np.isnan(vus_pr(np.zeros(50, int), noise[:50], 5))
    with pytest.raises(ValueError, match="equally long"):
        vus_pr(lab, noise[:10], 5)


def test_sliding_window_falls_back_like_tsb_ad() -> None:
    assert sliding_window(np.ones(500)) == 125  # no autocorrelation structure
    assert sliding_window(np.arange(4.0)) == 125  # too short
    assert sliding_window(np.sin(2 * np.pi * np.arange(3000) / 96)) == 96


def test_label_ranges() -> None:
    assert label_ranges([1, 1, 0, 0, 1]) == [(0, 1), (4, 4)] and label_ranges([0, 0]) == []


def test_event_score_rewards_early_detection() -> None:
    lab = np.zeros(100, int)
    lab[40:50] = 1  # window 40..59 (the range plus its length again)
    early = np.zeros(100, bool)
    early[40] = True
    late = np.zeros(100, bool)
    late[58] = True
    assert event_counts(lab, early).score() == pytest.approx(1.0)
    assert event_counts(lab, late).score() == pytest.approx(1 - 0.5 * 18 / 20)
    miss = np.zeros(100, bool)
    miss[60] = True  # just after the window: a false positive, and the window is missed
    c = event_counts(lab, miss)
    assert (c.detected, c.false_positives) == (0, 1) and c.score() == pytest.approx(-0.11)


def test_event_score_charges_every_false_alarm_and_long_ones_page_again() -> None:
    lab = np.zeros(200, int)
    lab[100] = 1  # an extremum: window 100..104 (at least 4 rows of tolerance)
    al = np.zeros(200, bool)
    al[[10, 30]] = True
    al[150:200] = True  # 50 rows on: pages at 150, 174, 198
    c = event_counts(lab, al)
    assert c.windows == 1 and c.detected == 0 and c.false_positives == 5
    always = event_counts(lab, np.ones(200, bool))
    assert always.detected == 1 and always.false_positives == 9  # 100 rows before, 95 after
    lab_long = np.zeros(2000, int)
    lab_long[1000] = 1
    assert event_counts(lab_long, np.ones(2000, bool)).score() < -5  # always on does not pay


def test_event_counts_add_across_series() -> None:
    a = EventCounts(windows=2, detected=1, reward=0.8, false_positives=1, delays=[3])
    b = EventCounts(windows=1, detected=1, reward=1.0, false_positives=0, delays=[0])
    s = a + b
    assert (s.windows, s.detected, s.false_positives, s.delays) == (3, 2, 1, [3, 0])
    assert s.score() == pytest.approx((1.8 - 0.11) / 3)
    assert np.isnan(EventCounts().score())

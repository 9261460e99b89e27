from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.burst import BurstDetector


def _fire_ticks(counts: np.ndarray, **kw: float) -> list[int]:
    det = BurstDetector(**kw)  # type: ignore[arg-type]
    st = det.init_state((1,))
    return [t for t, c in enumerate(counts) if det.step(st, {"count": np.array([c])})["burst"][0]]


def test_pinned_ticks_on_seeded_stream() -> None:
    rng = np.random.default_rng(42)
    counts = rng.poisson(3.0, 120).astype(float)
    counts[60:66] += rng.poisson(20.0, 6)
    assert _fire_ticks(counts) == [61, 62, 63, 64, 65]


def test_quiet_stream_never_fires() -> None:
    rng = np.random.default_rng(7)
    assert _fire_ticks(rng.poisson(5.0, 2000).astype(float)) == []


def test_minimum_duration() -> None:
    counts = np.full(40, 3.0)
    counts[30] = 40.0  # one-tick spike
    assert _fire_ticks(counts, min_ticks=3) == []
    assert _fire_ticks(counts, min_ticks=1) == [30, 31]


def test_baseline_recovers_after_permanent_shift() -> None:
    rng = np.random.default_rng(3)
    counts = np.r_[rng.poisson(3.0, 50), rng.poisson(12.0, 400)].astype(float)
    fired = _fire_ticks(counts)
    assert fired and fired[0] == 51 and max(fired) < 300


@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"threshold": -1.0}, {"min_ticks": 0}])
def test_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BurstDetector(**kw)  # type: ignore[arg-type]

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


def test_one_huge_value_fades_instead_of_poisoning_the_baseline() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(100.0, 5.0, 400)
    x[200] = 1e200
    det = BurstDetector(poisson_floor=False, min_ticks=1)
    st = det.init_state((1,))
    z = np.array([det.step(st, {"count": np.array([v])})["burst_z"][0] for v in x])
    assert np.all(np.isfinite(z)) and z[200] > 100 and np.isfinite(st["var"]).all()
    assert np.abs(z[215:]).max() < 6.0  # gone within a few ticks
    assert 50 < float(st["mu"][0]) < 150 and float(st["var"][0]) < 200


def test_non_finite_ticks_are_skipped() -> None:
    det = BurstDetector(poisson_floor=False)
    st = det.init_state((1,))
    for v in [1.0, 2.0, 1.5, 2.5, 1.0, 2.0, 1.5, 2.0]:
        det.step(st, {"count": np.array([v])})
    before = {k: v.copy() for k, v in st.items()}
    out = det.step(st, {"count": np.array([np.nan])})
    assert out["burst_z"][0] == 0.0 or np.isfinite(out["burst_z"][0])
    for k in ("n", "mu", "var", "fast"):
        assert np.array_equal(st[k], before[k]), k


def test_rebase_restarts_the_baseline_at_a_flagged_level_change() -> None:
    det = BurstDetector(poisson_floor=False, min_ticks=1, warmup_ticks=3)
    st = det.init_state((2,))
    rng = np.random.default_rng(0)
    for _ in range(60):
        det.step(st, {"count": rng.normal(0.0, 1.0, 2)})
    zs = []
    for t in range(30):
        out = det.step(st, {"count": rng.normal(20.0, 1.0, 2), "rebase": np.array([t == 1, False])})
        zs.append(out["burst_z"])
    z = np.array(zs)
    assert z[5:, 0].max() < 4.0 <= z[5:, 1].min()  # rebased station 0 no longer bursts


def test_learned_fast_spread_keeps_correlated_input_from_bursting() -> None:
    rng = np.random.default_rng(5)
    e = rng.normal(0.0, 1.0, 3000)
    x = np.zeros(3000)
    for t in range(1, 3000):  # AR(1) of unit variance: runs of same-signed values are ordinary
        x[t] = 0.9 * x[t - 1] + 0.436 * e[t]
    fired = {}
    for learn in (False, True):
        det = BurstDetector(alpha=0.01, poisson_floor=False, min_var=1.0, min_ticks=1, fast_alpha=0.3,
                            learn_fast_var=learn)
        st = det.init_state((1,))
        fired[learn] = sum(bool(det.step(st, {"count": np.array([v])})["burst"][0]) for v in x)
    assert fired[False] > 50 and fired[True] * 5 < fired[False]
    assert "fvar" in BurstDetector(learn_fast_var=True).state_spec()
    assert "fvar" not in BurstDetector().state_spec()  # counts: state unchanged

"""The scale chart: a series swinging harder from tick to tick, flagged while it lasts."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.base import ArrayState
from convergence.detectors.scale import ScaleDetector


def _run(det: ScaleDetector, x: np.ndarray) -> np.ndarray:
    state = det.init_state((1,))
    return np.array([det.step(state, {"value": x[i:i + 1]})["scale_z"][0] for i in range(x.size)])


def test_wider_swings_are_flagged_while_they_last_then_absorbed() -> None:
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 1.0, 1400)
    r[400:] *= 4.0
    z = _run(ScaleDetector(hold_ticks=192), np.cumsum(r))
    assert z[50:400].max() < 4.0
    assert np.median(z[410:590]) > 4.0
    assert np.median(z[1000:]) < 2.0  # held 192 raised ticks, then the new spread is normal


def test_one_wild_value_is_bounded_and_never_poisons_later_ticks() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, 600)
    x[300] = 1e200
    z = _run(ScaleDetector(), x)
    assert np.isfinite(z).all()
    assert z[320:].max() < 4.0


def test_missing_values_are_no_evidence_and_teach_nothing() -> None:
    det = ScaleDetector(warmup_ticks=3)
    state = det.init_state((2,))
    for t in range(20):
        v = np.array([float(t % 3), np.nan if 5 <= t < 15 else float(t % 3)])
        out = det.step(state, {"value": v})
        if 5 <= t < 15:
            assert out["scale_z"][1] == 0.0 and not out["scale"][1]
    # ten ticks without a value taught nothing; the change after the gap is from the last value
    assert state["n"][1] == state["n"][0] - 10 and state["prev"][1] == state["prev"][0]


def test_state_round_trips() -> None:
    det = ScaleDetector()
    state = det.init_state((3,))
    det.step(state, {"value": np.array([1.0, 2.0, np.nan])})
    det.step(state, {"value": np.array([1.5, 2.0, 3.0])})
    again = ArrayState.from_dict(state.to_dict())
    a = det.step(state, {"value": np.array([2.0, 2.5, 3.5])})
    b = det.step(again, {"value": np.array([2.0, 2.5, 3.5])})
    np.testing.assert_array_equal(a["scale_z"], b["scale_z"])


@pytest.mark.parametrize(("kw", "msg"), [({"alpha": 0.0}, "alpha"), ({"floor": 0.0}, "floor"),
                                         ({"hold_ticks": 0}, "hold_ticks"),
                                         ({"threshold": -1.0}, "threshold")])
def test_bad_settings_are_refused_by_name(kw: dict[str, float], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        ScaleDetector(**kw)  # type: ignore[arg-type]

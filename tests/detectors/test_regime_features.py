from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.base import ArrayState
from convergence.detectors.regime import feature_transform
from convergence.detectors.regime_features import RegimeFeatures


@pytest.mark.parametrize("kind", ["price", "count"])
def test_online_equals_offline_transform(kind: str) -> None:
    rng = np.random.default_rng(3)
    T, S = 80, 4
    values = (100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, S)), 0)) if kind == "price"
              else rng.poisson(5.0, (T, S)).astype(float))
    stage = RegimeFeatures(kind, vol_window=6)
    st = stage.init_state((S,))
    online = np.stack([stage.step(st, {"value": values[t]})["features"] for t in range(T)])
    assert np.allclose(online, feature_transform(values, kind, 6), equal_nan=True)


def test_missing_ticks_keep_state_and_state_round_trips() -> None:
    stage = RegimeFeatures("price", vol_window=3)
    st = stage.init_state((1,))
    prices = [100.0, 101.0, 0.0, 102.0]
    missing = [False, False, True, False]
    out = [stage.step(st, {"value": np.array([p]), "missing": np.array([m])})["features"][0]
           for p, m in zip(prices, missing, strict=True)]
    assert np.isnan(out[2]).all()
    assert out[3][0] == pytest.approx(np.log(102.0 / 101.0))  # the return spans the gap
    copy = ArrayState.from_dict(st.to_dict())
    a = stage.step(st, {"value": np.array([103.0])})["features"]
    b = stage.step(copy, {"value": np.array([103.0])})["features"]
    assert np.array_equal(a, b, equal_nan=True)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RegimeFeatures("volume")
    with pytest.raises(ValueError):
        RegimeFeatures("price", vol_window=1)

"""Online regime features: the causal transform of :func:`feature_transform`, one tick at a time.

The HMM regime filter reads two features per station per tick. Offline,
:func:`~convergence.detectors.regime.feature_transform` computes them over a whole
history; live, this stage computes exactly the same numbers from the current tick's
value and a small fixed state: the previous log level and, for prices, a ring of the
last ``vol_window`` log returns. Undefined rows are NaN, as offline (the filter then only
applies its transition step). A tick flagged ``missing`` (no trade, no events) yields NaN
features but leaves the state alone, so the next real observation's return spans the
gap instead of being lost.

Examples
--------
>>> import numpy as np
>>> from convergence.detectors.regime import feature_transform
>>> prices = np.array([100.0, 101.0, 99.5, 100.2, 102.0, 101.1])
>>> st = RegimeFeatures("price", vol_window=3)
>>> state = st.init_state((1,))
>>> online = np.stack([st.step(state, {"value": np.array([p])})["features"][0] for p in prices])
>>> bool(np.allclose(online, feature_transform(prices, "price", 3), equal_nan=True))
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convergence.detectors.base import Array, ArrayState, Outputs, Spec, Stage
from convergence.detectors.regime import DEFAULT_VOL_WINDOW, check_feature_kind, log_level


class RegimeFeatures(Stage):
    """Per-tick regime features for ``kind`` ``"price"`` or ``"count"``."""

    name = "regime_features"

    def __init__(self, kind: str, vol_window: int = DEFAULT_VOL_WINDOW) -> None:
        check_feature_kind(kind, vol_window)
        self.kind = kind
        self.vol_window = vol_window

    def state_spec(self) -> Spec:
        return {"prev": ((), np.nan), "ring": ((self.vol_window,), np.nan), "pos": ((), 0, np.int64)}

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        v = np.asarray(inputs["value"], dtype=np.float64)
        missing = inputs.get("missing")
        level = log_level(v, self.kind)
        diff = level - state["prev"]  # NaN where either is missing
        if missing is not None:
            level = np.where(missing, np.nan, level)
            diff = np.where(missing, np.nan, diff)
            state["prev"][...] = np.where(missing, state["prev"], level)
        else:
            state["prev"][...] = level
        if self.kind == "count":
            return {"features": np.stack([level, diff], axis=-1)}
        ring, pos = state["ring"], state["pos"]
        old = np.take_along_axis(ring, (pos % self.vol_window)[..., None], axis=-1)[..., 0]
        new = diff if missing is None else np.where(missing, old, diff)
        np.put_along_axis(ring, (pos % self.vol_window)[..., None], new[..., None], axis=-1)
        if missing is None:
            pos += 1
        else:
            pos += (~np.asarray(missing, bool)).astype(np.int64)
        vol = ring.std(axis=-1)  # NaN while any return in the window is undefined
        if missing is not None:
            vol = np.where(missing, np.nan, vol)
        return {"features": np.stack([diff, vol], axis=-1)}

"""Adaptive responses as a stage (detectors/responses.py): the lone-noisy-feed quarantine."""

from __future__ import annotations

import numpy as np

from convergence.detectors.meter import QUIET
from convergence.detectors.node_state import ANOMALOUS, NORMAL
from convergence.detectors.processor import StationMeta, TickProcessor
from convergence.detectors.responses import ResponsePolicy, ResponseStage


def _lone(stage: ResponseStage, ticks: int, dark: np.ndarray | None) -> tuple[bool, np.ndarray]:
    """Station 0 anomalous alone for ``ticks`` ticks; any quarantine decided, and the
    stations quarantined afterwards."""
    st = stage.init_state((2,))
    decided = False
    for t in range(ticks):
        inputs = {"node_state": np.array([ANOMALOUS, NORMAL]), "weights": np.zeros(2),
                  "region_idx": np.zeros(2, int), "level": np.array([QUIET]),
                  "prev_level": np.array([QUIET]), "time_s": float(t + 1)}
        if dark is not None:
            inputs["dark"] = dark
        decided |= bool(stage.step(st, inputs)["quarantine"].any())
    return decided, stage.effects(st, float(ticks + 1))[0]


def test_a_lone_noisy_feed_is_quarantined_but_a_dark_one_never_is() -> None:
    stage = ResponseStage(ResponsePolicy(quarantine_after_ticks=3))
    decided, q = _lone(stage, 10, None)
    assert decided and q.tolist() == [True, False]
    decided, q = _lone(stage, 10, np.array([False, False]))
    assert decided and q.tolist() == [True, False]
    # anomalous only because its source fell silent: not a feed that keeps shouting
    decided, q = _lone(stage, 10, np.array([True, False]))
    assert not decided and not q.any()


def test_a_station_back_from_an_outage_is_not_muted_by_the_processor() -> None:
    # a station dark for 30 ticks (the Las Vegas outage bound) is anomalous alone the whole
    # time (dark evidence); when its source is back it must sample and count again, not sit
    # out a ten-minute quarantine (it silenced a shared-wire convergence 80 s later)
    proc = TickProcessor()
    meta = StationMeta(kind_idx=np.array([0, 1, 4, 3]), group_idx=np.arange(4),
                       region_idx=np.zeros(4, int))
    state = proc.init_state((4,), n_regions=1)
    proc.seed_baselines(state, np.full(4, 3.0))
    rng = np.random.default_rng(5)
    states = []
    for t in range(60):
        dark = np.array([10 <= t < 40, False, False, False])
        counts = rng.poisson(3.0, 4).astype(float) * ~dark
        hist = np.zeros((4, 16))
        hist[:, 0] = counts
        out = proc.step(state, {"count": counts, "hist": hist}, meta, tick=t, time_s=t + 1.0,
                        dark=dark)
        states.append(int(out.node["state"][0]))
        assert not out.quarantined.any() and not out.responses["quarantine"].any(), t
    assert states.count(ANOMALOUS) >= proc.responses.policy.quarantine_after_ticks

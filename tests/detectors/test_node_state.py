from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.node_state import ANOMALOUS, NODE_STATES, NodeStateMachine


def _states(ev: list[float], **kw: float) -> list[str]:
    m = NodeStateMachine(**kw)  # type: ignore[arg-type]
    st = m.init_state((1,))
    return [NODE_STATES[int(m.step(st, {"burst_z": np.array([e]),
                                        "entropy_drop_z": np.zeros(1)})["state"][0])] for e in ev]


def test_hysteresis_holds_between_thresholds() -> None:
    s = _states([5, 5, 3, 3, 3, 1.9, 3, 1, 1, 1, 1])
    assert s == ["elevated", "anomalous", "anomalous", "anomalous", "anomalous", "cooling",
                 "cooling", "cooling", "cooling", "normal", "normal"]


def test_strong_evidence_enters_at_once_and_cooling_can_reenter() -> None:
    assert _states([10])[0] == "anomalous"
    assert _states([10, 1, 5, 5])[-1] == "anomalous"


def test_quarantine_holds_normal_and_scale_lowers_bar() -> None:
    m = NodeStateMachine()
    st = m.init_state((2,))
    for _ in range(3):
        out = m.step(st, {"burst_z": np.array([12.0, 3.5]), "entropy_drop_z": np.zeros(2),
                          "quarantined": np.array([True, False]),
                          "threshold_scale": np.array([1.0, 0.8])})
    assert out["state"].tolist() == [0, ANOMALOUS]


def test_peak_evidence_split_by_type_and_since() -> None:
    m = NodeStateMachine()
    st = m.init_state((1,))
    for b, e in [(5, 1), (6, 7), (1, 0), (0, 0)]:
        out = m.step(st, {"burst_z": np.array([float(b)]), "entropy_drop_z": np.array([float(e)])})
    assert out["peak"][0, 0] == 6 and out["peak"][0, 1] == pytest.approx(1.0 * 7)
    assert out["since"][0] == 2


def test_rejects_inconsistent_thresholds() -> None:
    with pytest.raises(ValueError, match="calm_at <= elevate_at"):
        NodeStateMachine(enter_at=2.0, calm_at=3.0)


def test_fused_top_two_and_peak_top_match_sort_and_max() -> None:
    from convergence.detectors.node_state import EVIDENCE_INPUTS

    rng = np.random.default_rng(3)
    m = NodeStateMachine()
    st = m.init_state((4, 30))
    names = [n for n, _ in EVIDENCE_INPUTS]
    for t in range(40):
        inputs = {n: rng.normal(0.0, 4.0, (4, 30)) for n in names[: 3 + t % 5]}
        inputs["quarantined"] = rng.random((4, 30)) < 0.1
        ev, parts = m.fuse(inputs)
        top2 = np.sort(parts, -1)[..., -2:]
        assert np.array_equal(ev, top2[..., 1] + m.corroboration * top2[..., 0])
        out = m.step(st, inputs)
        assert np.array_equal(out["peak_top"], out["peak"].max(-1))


def test_old_checkpoint_without_peak_top_rebuilds_it() -> None:
    from convergence.detectors.base import ArrayState

    m = NodeStateMachine()
    st = m.init_state((3,))
    for _ in range(3):
        m.step(st, {"burst_z": np.array([12.0, 0.0, 5.0]), "entropy_drop_z": np.zeros(3)})
    d = st.to_dict()
    d["arrays"].pop("peak_top")
    old = ArrayState.from_dict(d)
    out = m.step(old, {"burst_z": np.array([1.0, 0.0, 5.0]), "entropy_drop_z": np.zeros(3)})
    assert np.array_equal(out["peak_top"], out["peak"].max(-1))


def test_a_pattern_match_corroborates_but_does_not_convict() -> None:
    m = NodeStateMachine()

    def state_after(burst: float, pattern: float) -> int:
        st = m.init_state((1,))
        out: dict[str, np.ndarray] = {}
        for _ in range(3):  # a match holds pattern_z for two ticks; give it three
            out = m.step(st, {"burst_z": np.array([burst]), "entropy_drop_z": np.zeros(1),
                              "pattern_z": np.array([pattern])})
        return int(out["state"][0])

    assert state_after(0.0, 6.0) != ANOMALOUS  # the match alone: the bursts are over
    assert state_after(2.6, 0.0) != ANOMALOUS  # a modest burst alone
    assert state_after(2.6, 6.0) == ANOMALOUS  # the same burst, lifted by the match

from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.node_state import (
    ANOMALOUS,
    EVIDENCE_TYPES,
    NODE_STATES,
    NodeStateMachine,
    pad_peak,
)


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


def test_fused_top_two_families_and_peak_top_match_sort_and_max() -> None:
    from convergence.detectors.node_state import EVIDENCE_FAMILIES, EVIDENCE_INPUTS

    rng = np.random.default_rng(3)
    m = NodeStateMachine()
    st = m.init_state((4, 30))
    names = [n for n, _ in EVIDENCE_INPUTS]
    families = sorted(set(EVIDENCE_FAMILIES))
    for t in range(40):
        inputs = {n: rng.normal(0.0, 4.0, (4, 30)) for n in names[: 3 + t % 5]}
        inputs["quarantined"] = rng.random((4, 30)) < 0.1
        ev, parts = m.fuse(inputs)
        per_family = np.stack([parts[..., [j for j, f in enumerate(EVIDENCE_FAMILIES) if f == fam]].max(-1)
                               for fam in families], -1)
        top2 = np.sort(per_family, -1)[..., -2:]
        assert np.array_equal(ev, top2[..., 1] + m.corroboration * top2[..., 0])
        out = m.step(st, inputs)
        assert np.array_equal(out["peak_top"], out["peak"].max(-1))


def test_a_count_spike_does_not_corroborate_itself() -> None:
    """The burst chart and the daily-profile check read the same count: one family.

    The Las Vegas false alarm of ``market-move-one-echo`` (seed 7, run 14): a social
    station drew 7 events where 1.3 were expected, a burst of 3.18 sd and 2.63 sd over
    its daily profile (x 0.8), with 1.05 of CUSUM change. Fused as two types it read
    3.18 + 0.5 x 2.10 = 4.2 > 4 and the node went anomalous; as one family it reads
    3.18 + 0.5 x 1.05.
    """
    m = NodeStateMachine()
    inputs = {"burst_z": np.array([3.18]), "entropy_drop_z": np.zeros(1),
              "periodicity_z": np.array([2.63]), "cusum_z": np.array([3.5])}
    ev, parts = m.fuse(inputs)
    assert ev[0] == pytest.approx(3.18 + 0.5 * 1.05) and ev[0] < m.enter_at
    assert parts[0, EVIDENCE_TYPES.index("periodicity")] == pytest.approx(0.8 * 2.63)  # still reported
    # a second family does corroborate: the same burst with a category shift counts more
    ev2, _ = m.fuse({**inputs, "entropy_drop_z": np.array([2.63])})
    assert ev2[0] == pytest.approx(3.18 + 0.5 * 2.63)


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


def test_trend_and_scale_evidence_are_kept_in_the_episode_peak() -> None:
    m = NodeStateMachine(weights={"trend": 0.5, "scale": 0.5})
    st = m.init_state((1,))
    one = np.ones(1)
    for _ in range(3):
        out = m.step(st, {"burst_z": 6.0 * one, "entropy_drop_z": 0 * one, "trend_z": 8.0 * one,
                          "scale_z": 2.0 * one})
    assert NODE_STATES[int(out["state"][0])] == "anomalous"
    peak = dict(zip(EVIDENCE_TYPES, out["peak"][0].tolist(), strict=True))
    assert (peak["burst"], peak["trend"], peak["scale"]) == (6.0, 4.0, 1.0)


def test_an_older_peak_is_padded_for_the_evidence_types_added_since() -> None:
    old = np.arange(14.0).reshape(2, 7)
    new = pad_peak(old)
    assert new.shape == (2, len(EVIDENCE_TYPES)) and (new[:, :7] == old).all() and (new[:, 7:] == 0).all()
    with pytest.raises(ValueError, match="evidence types"):
        pad_peak(np.zeros((1, len(EVIDENCE_TYPES) + 1)))

from __future__ import annotations

import numpy as np

from convergence.detectors.meter import CONVERGED, QUIET, WARNING, WATCH
from convergence.responses.axon import AdaptiveResponder, ResponsePolicy
from convergence.stations import StationInfo, StationRegistry

REG = StationRegistry([StationInfo("n1", "osint_news", "eu"), StationInfo("s1", "osint_social", "eu"),
                       StationInfo("x1", "sensor", "apac")])


def _decide(axon: AdaptiveResponder, level: int, prev: int, tick: int = 1,
            weights: tuple[float, ...] = (1.0, 1.0, 0.0)) -> list[str]:
    return [r.action for r in axon.decide(tick=tick, time_s=float(tick), level=level, prev_level=prev,
                                          node_state=np.zeros(3), weights=np.array(weights),
                                          registry=REG)]


def test_escalation_ladder() -> None:
    axon = AdaptiveResponder()
    assert _decide(axon, WATCH, QUIET) == ["burst_mode", "burst_mode"]
    assert _decide(axon, WARNING, WATCH) == ["burst_mode", "set_thresholds"]
    assert _decide(axon, CONVERGED, WARNING) == ["escalate"]
    assert _decide(axon, CONVERGED, QUIET).count("escalate") == 1
    assert _decide(axon, WATCH, CONVERGED) == []  # falling levels do nothing


def test_region_commands_target_only_involved_regions_and_ids_are_stable() -> None:
    axon = AdaptiveResponder()
    rs = axon.decide(tick=5, time_s=5.0, level=WARNING, prev_level=WATCH, node_state=np.zeros(3),
                     weights=np.array([1.0, 0.0, 0.0]), registry=REG)
    assert {r.command.target.value for r in rs if r.command} == {"eu"}
    again = AdaptiveResponder().decide(tick=5, time_s=5.0, level=WARNING, prev_level=WATCH,
                                       node_state=np.zeros(3), weights=np.array([1.0, 0, 0]),
                                       registry=REG)
    assert [r.response_id for r in rs] == [r.response_id for r in again]


def test_lone_noisy_station_is_quarantined_once_and_expires() -> None:
    axon = AdaptiveResponder(ResponsePolicy(quarantine_after_ticks=3, quarantine_ttl_s=10.0))
    states = np.array([0, 2, 0])
    acts = [[r.action for r in axon.decide(tick=t, time_s=float(t), level=QUIET, prev_level=QUIET,
                                           node_state=states, weights=np.zeros(3), registry=REG)]
            for t in range(6)]
    assert acts == [[], [], ["quarantine"], [], [], []]
    assert axon.quarantined(5.0, 3).tolist() == [False, True, False]
    assert not axon.quarantined(12.1, 3).any()
    axon.decide(tick=7, time_s=7.0, level=QUIET, prev_level=QUIET, node_state=states,
                weights=np.zeros(3), registry=REG)
    axon.release(1)
    assert not axon.quarantined(7.5, 3).any()


def test_not_quarantined_while_part_of_a_convergence() -> None:
    axon = AdaptiveResponder(ResponsePolicy(quarantine_after_ticks=2))
    for t in range(5):
        rs = axon.decide(tick=t, time_s=float(t), level=WARNING, prev_level=WARNING,
                         node_state=np.array([2, 2, 0]), weights=np.ones(3), registry=REG)
        assert "quarantine" not in [r.action for r in rs]

"""The stations benchmark without a broker: argument checks and the fast-forward source.

A short real run is in ``tests/cli/test_bench_stations.py`` (``-m kafka``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import pytest
from kafka import KafkaProducer

from convergence.ground_stations.scenario import Scenario, SyntheticWorld, default_fleet
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.simulation.bench_stations import SAME_SETTINGS, STEP_S, FastForwardSource, bench_stations


def _world(rate_per_s: float = 1000.0) -> SyntheticWorld:
    fleet = [replace(i, rate_per_s=rate_per_s) for i in default_fleet(5, 1)]
    return SyntheticWorld(Scenario(fleet, [], 1, bad_rate=0.0, dup_rate=0.0))


def test_bad_arguments_are_rejected_before_any_broker_is_touched() -> None:
    with pytest.raises(ValueError, match="stations must be >= 5"):
        bench_stations("127.0.0.1:1", stations=2)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        bench_stations("127.0.0.1:1", seconds=0)


def test_more_bad_arguments_are_rejected_before_any_broker_is_touched() -> None:
    with pytest.raises(ValueError, match="seconds must be > 0, got nan"):
        bench_stations("127.0.0.1:1", seconds=float("nan"))
    with pytest.raises(ValueError, match="events_per_poll must be > 0, got 0"):
        bench_stations("127.0.0.1:1", events_per_poll=0)
    with pytest.raises(ValueError, match=r"events_per_poll must be > 0, got -1\.5"):
        bench_stations("127.0.0.1:1", events_per_poll=-1.5)


def test_the_baseline_copies_only_settings_a_kafka_producer_has() -> None:
    assert set(SAME_SETTINGS) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert {"acks", "enable_idempotence", "linger_ms", "batch_size", "compression_type"} <= set(SAME_SETTINGS)


def test_fast_forward_needs_a_positive_step() -> None:
    world = _world()
    for bad in (0.0, -0.01):
        with pytest.raises(ValueError, match=re.escape(f"step_s must be > 0, got {bad}")):
            FastForwardSource(SyntheticSource(world, 0, t0_s=0.0, seed=1), step_s=bad)


def test_fast_forward_draws_the_next_slice_of_scenario_time_whatever_the_clock() -> None:
    world = _world()
    src = FastForwardSource(SyntheticSource(world, 2, t0_s=0.0, seed=1), step_s=0.05)
    reference = SyntheticSource(world, 2, t0_s=0.0, seed=1)
    assert src.kind == "synthetic" and src.step_s == 0.05
    t = 0.0
    total = 0
    for now_s in (5.0, 5.0, 1e9, 0.0, -3.0, 5.0, 5.0, 5.0):  # the station clock is ignored
        got = asyncio.run(src.poll(now_s))
        t_from, t = t, t + 0.05
        assert got == reference.draw(t_from, t)
        total += len(got)
    assert 8 * 0.05 * 1000 * 0.6 < total < 8 * 0.05 * 1000 * 1.4  # ~1000 events/s of scenario time


def test_fast_forward_defaults_to_the_benchmark_step() -> None:
    src = FastForwardSource(SyntheticSource(_world(), 0, t0_s=0.0, seed=1))
    assert src.step_s == STEP_S == 0.01

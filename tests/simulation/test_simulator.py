from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.chain import DetectorChain
from convergence.ground_stations.scenario import default_fleet, random_scenario
from convergence.simulation.simulator import simulate

FLEET = default_fleet(40, seed=1)


def _scenarios(n: int = 4) -> list:
    return [random_scenario(FLEET, seed=s, horizon_s=30.0, p_genuine=1.0) for s in range(n)]


def test_same_seed_same_runs_other_seed_other_noise() -> None:
    a = simulate(_scenarios(), n_ticks=30, seed=3)
    b = simulate(_scenarios(), n_ticks=30, seed=3)
    c = simulate(_scenarios(), n_ticks=30, seed=4)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.events == b.events != c.events
    assert a.label.any() and np.array_equal(a.label, c.label)  # labels come from scenarios


def test_pattern_windows_must_match_the_simulated_tick() -> None:
    with pytest.raises(ValueError, match=r"pattern windows assume 60 s ticks .* every 1 s"):
        simulate(_scenarios(1), n_ticks=20, seed=0, chain=DetectorChain(tick_s=60.0))
    # without patterns the chain's tick length does not matter
    simulate(_scenarios(1), n_ticks=20, seed=0, chain=DetectorChain(tick_s=60.0, patterns=None))


def test_rejects_mixed_fleets_and_empty_campaigns() -> None:
    with pytest.raises(ValueError, match="at least one scenario"):
        simulate([], n_ticks=20, seed=0)
    other = random_scenario(default_fleet(41, seed=1), seed=0, horizon_s=30.0)
    with pytest.raises(ValueError, match="share the same fleet"):
        simulate([*_scenarios(1), other], n_ticks=20, seed=0)

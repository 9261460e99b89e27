"""One shared battery every registered per-station stage must pass (river-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from convergence.detectors.base import ArrayState, Stage
from convergence.detectors.burst import BurstDetector
from convergence.detectors.cusum import CusumDetector
from convergence.detectors.entropy import EntropyDetector
from convergence.detectors.node_state import NodeStateMachine
from convergence.detectors.periodicity import PeriodicityDetector
from convergence.detectors.regime_features import RegimeFeatures
from convergence.detectors.scale import ScaleDetector
from convergence.detectors.trend import TrendDetector

RNG_SEED = 11


def _inputs_count(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    lam = 4.0 * (1 + 5 * (t > 30))
    counts = rng.poisson(lam, shape).astype(float)
    hist = rng.multinomial(16, np.ones(16) / 16, size=shape).astype(float)
    return {"count": counts, "hist": hist}


def _inputs_node(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    return {"burst_z": rng.normal(2.0 + 4 * (t > 30), 1.5, shape),
            "entropy_drop_z": rng.exponential(1.0, shape)}


def _inputs_slot(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    return {"count": rng.poisson(4.0 * (1 + 5 * (t > 30)), shape).astype(float),
            "slot": np.int64(t % 4)}


def _inputs_week(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    return {"count": rng.normal(5.0 + 3.0 * (t > 30), 1.0, shape), "slot": np.int64(t % 4),
            "week_slot": np.int64((t // 4) % 7), "rebase": rng.random(shape) < 0.05}


def _inputs_price(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    return {"value": 100.0 * np.exp(rng.normal(0, 0.01 * (1 + (t > 30)), shape))}


def _inputs_value(rng: np.random.Generator, shape: tuple[int, ...], t: int) -> dict[str, Any]:
    v = rng.normal(0.0, 1.0, shape) + 0.5 * max(t - 30, 0)
    return {"value": np.where(rng.random(shape) < 0.05, np.nan, v)}


STAGES: list[tuple[Callable[[], Stage], Callable[..., dict[str, Any]]]] = [
    (EntropyDetector, _inputs_count),
    (BurstDetector, _inputs_count),
    (lambda: BurstDetector(poisson_floor=False, learn_fast_var=True), _inputs_count),
    (CusumDetector, _inputs_count),
    (lambda: PeriodicityDetector(slots_per_day=4, min_seen=2), _inputs_slot),
    (lambda: PeriodicityDetector(slots_per_day=4, min_seen=2, level_alpha=0.05, week=True,
                                 poisson_floor=False, min_rows=5), _inputs_week),
    (lambda: CusumDetector(poisson_floor=False, variance_down=True, var_floor=1e-9), _inputs_count),
    (lambda: RegimeFeatures("price", vol_window=5), _inputs_price),
    (NodeStateMachine, _inputs_node),
    (lambda: TrendDetector(warmup_ticks=10), _inputs_value),
    (lambda: ScaleDetector(warmup_ticks=5, hold_ticks=10), _inputs_value),
]


@pytest.mark.parametrize(("make", "gen"), STAGES, ids=lambda x: getattr(x, "__qualname__", ""))
def test_batched_equals_per_run_loop(make: Callable[[], Stage], gen: Callable[..., Any]) -> None:
    runs, stations, ticks = 3, 5, 50
    rng = np.random.default_rng(RNG_SEED)
    inputs = [gen(rng, (runs, stations), t) for t in range(ticks)]
    stage = make()
    batched = stage.init_state((runs, stations))
    outs_b = [stage.step(batched, i) for i in inputs]
    for r in range(runs):
        single = stage.init_state((stations,))
        for t, i in enumerate(inputs):
            o = stage.step(single, {k: v[r] if np.ndim(v) else v for k, v in i.items()})
            for k, v in o.items():
                assert np.allclose(v, outs_b[t][k][r], equal_nan=True), (k, t, r)


@pytest.mark.parametrize(("make", "gen"), STAGES, ids=lambda x: getattr(x, "__qualname__", ""))
def test_state_round_trips_and_is_fixed_size(make: Callable[[], Stage], gen: Callable[..., Any]) -> None:
    rng = np.random.default_rng(RNG_SEED)
    stage = make()
    st = stage.init_state((4,))
    size0 = st.nbytes_per_station()
    for t in range(40):
        stage.step(st, gen(rng, (4,), t))
    assert st.nbytes_per_station() == size0 <= 512
    copy = ArrayState.from_dict(st.to_dict())
    nxt = gen(rng, (4,), 41)
    a = stage.step(st, nxt)
    b = stage.step(copy, nxt)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True)


@pytest.mark.parametrize(("make", "gen"), STAGES, ids=lambda x: getattr(x, "__qualname__", ""))
def test_per_station_state_restores(make: Callable[[], Stage], gen: Callable[..., Any]) -> None:
    rng = np.random.default_rng(RNG_SEED)
    stage = make()
    st = stage.init_state((3,))
    for t in range(20):
        stage.step(st, gen(rng, (3,), t))
    fresh = stage.init_state((3,))
    for i in range(3):
        fresh.set_station(i, st.station(i))
    for k in st:
        assert np.array_equal(st[k], fresh[k], equal_nan=True)


def test_grow_adds_fresh_stations() -> None:
    stage = BurstDetector()
    st = stage.init_state((2,))
    st["mu"][:] = 5.0
    st.grow(4, stage.init_state((4,)))
    assert st["mu"].tolist() == [5.0, 5.0, 0.0, 0.0]


def test_seed_baselines_seeds_count_stages_through_their_hook() -> None:
    from convergence.detectors.chain import DetectorChain

    chain = DetectorChain()
    state = chain.init_state((3,))
    before = {s.name: state[s.name].copy() for s in chain.stages}
    chain.seed_baselines(state, np.array([4.0, 0.0, 0.5]))
    for stage, mu, var, extra in ((chain.burst, "mu", "var", ("fast",)),
                                  (chain.entropy, "c_mu", "c_var", ()),
                                  (chain.cusum, "mu", "var", ("prev",))):
        st = state[stage.name]
        for k in (mu, *extra):
            assert st[k].tolist() == [4.0, before[stage.name][k][1], 0.5]
        assert st[var].tolist() == [4.0, before[stage.name][var][1], 1.0]
        assert st["n"].tolist() == [stage.warmup_ticks, 0.0, stage.warmup_ticks]
    for s in (chain.periodicity, chain.node):  # no count baseline: untouched
        for k in state[s.name]:
            assert np.array_equal(state[s.name][k], before[s.name][k])

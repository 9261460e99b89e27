from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.chain import (
    AGREE_BIAS,
    AGREE_MIN,
    DetectorChain,
    StationMeta,
    log_count_var,
    topic_agreement,
)
from convergence.detectors.evidence import settle
from convergence.detectors.node_state import EVIDENCE_TYPES
from convergence.schema import KIND_INDEX

# three regions, each with two stations of every kind
KINDS = ("osint_social", "osint_news", "market_volume", "market_price", "sensor") * 6
N = len(KINDS)
META = StationMeta(kind_idx=np.array([KIND_INDEX[k] for k in KINDS]),
                   group_idx=np.arange(N), region_idx=np.arange(N) // 10)
RATE = 4.0


def _cells(rng: np.random.Generator, lead: tuple[int, ...], cascade_runs: list[int],
           t: int) -> dict[str, np.ndarray]:
    """Poisson background; in ``cascade_runs`` region 0 cascades social -> news -> volume."""
    lam = np.full((*lead, N), RATE)
    surge = {0: "osint_social", 4: "osint_news", 8: "market_volume"}
    for start, kind in surge.items():
        if start <= t < start + 3:
            cols = [s for s in range(10) if KINDS[s] == kind]
            for r in cascade_runs:
                lam[(r, cols) if lead else cols] *= 10
    count = rng.poisson(lam).astype(float)
    hist = np.zeros((*lead, N, 16))
    hist[..., 0] = count
    return {"count": count, "hist": hist}


def test_a_batch_of_runs_steps_exactly_like_each_run_alone() -> None:
    n_runs, ticks = 4, 30
    rng = np.random.default_rng(11)
    cells = [_cells(rng, (n_runs,), [1, 3], t) for t in range(ticks)]
    chain = DetectorChain(tick_s=60.0)
    state = chain.init_state((n_runs, N), n_regions=3)
    chain.seed_baselines(state, np.full((n_runs, N), RATE))
    alone = [DetectorChain(tick_s=60.0) for _ in range(n_runs)]
    states = [c.init_state((N,), n_regions=3) for c in alone]
    for c, st in zip(alone, states, strict=True):
        c.seed_baselines(st, np.full(N, RATE))
    batch_matches, single_matches = [], []
    for t in range(ticks):
        out = chain.step(state, cells[t], META)
        batch_matches += [(m.run, m.ticks, m.stations) for m in out["matches"]]
        for r, (c, st) in enumerate(zip(alone, states, strict=True)):
            one = c.step(st, {k: v[r] for k, v in cells[t].items()}, META)
            single_matches += [(r, m.ticks, m.stations) for m in one["matches"]]
            for stage in ("node", "meter"):
                for name, v in one[stage].items():
                    if isinstance(v, np.ndarray):
                        np.testing.assert_allclose(out[stage][name][r], v, err_msg=f"{stage}.{name}")
    assert sorted(batch_matches) == sorted(single_matches)
    # the cascade completed in both runs that had one, and only there
    assert {m[0] for m in batch_matches} == {1, 3}


def test_patterns_can_be_switched_off() -> None:
    chain = DetectorChain(patterns=None)
    state = chain.init_state((2, N), n_regions=3)
    assert "patterns" not in state
    out = chain.step(state, _cells(np.random.default_rng(0), (2,), [], 0), META)
    assert out["matches"] == []


def test_the_pattern_matcher_follows_a_new_fleet_of_the_same_size() -> None:
    chain = DetectorChain(tick_s=60.0)
    sensors = StationMeta(kind_idx=np.full(N, KIND_INDEX["sensor"]), group_idx=np.arange(N),
                          region_idx=META.region_idx)
    chain.step(chain.init_state((N,), n_regions=3), _cells(np.random.default_rng(0), (), [], 0), sensors)
    state = chain.init_state((N,), n_regions=3)
    chain.seed_baselines(state, np.full(N, RATE))
    rng = np.random.default_rng(11)
    matches = [m for t in range(20)
               for m in chain.step(state, _cells(rng, (), [0], t), META)["matches"]]
    assert matches and all(m.key == (0,) for m in matches)


def test_a_station_that_barely_leans_cannot_borrow_the_regions_agreement() -> None:
    # four social stations deep in a story on bin 3, one news station whose usual mix
    # happened to put a few events there: the news station gets the pool *at its own
    # strength*, not the social stations' (the plain pool gave it 34.5 sd and made a
    # second source kind of chance: Las Vegas slow-cascade, seed 7, run 2 of 50)
    z = np.array([20.0, 20.0, 20.0, 20.0, 1.6, 0.0])
    out = topic_agreement(z, np.full(6, 3), np.zeros(6, int), np.arange(6), 16)
    assert out[4] < DetectorChain().node.enter_at and out[5] == 0.0
    assert np.allclose(out[:4], (80.0 + 1.6) / np.sqrt(5) - AGREE_BIAS)
    # stations leaning alike get the plain Stouffer pool; fewer than AGREE_MIN groups, none
    alike = topic_agreement(np.full(5, 2.5), np.full(5, 7), np.zeros(5, int), np.arange(5), 16)
    assert np.allclose(alike, 2.5 * np.sqrt(5) - AGREE_BIAS)
    few = topic_agreement(np.array([9.0, 9.0, 0.0]), np.full(3, 7), np.zeros(3, int),
                          np.arange(3), 16)
    assert AGREE_MIN == 3 and not few.any()


def test_topic_agreement_keeps_runs_and_regions_apart() -> None:
    z = np.array([[20.0, 20.0, 20.0, 3.0, 20.0, 20.0], [3.0, 3.0, 3.0, 3.0, 0.0, 0.0]])
    region = np.array([0, 0, 0, 0, 1, 1])
    out = topic_agreement(z, np.full((2, 6), 5), region, np.arange(6), 16)
    one = [topic_agreement(z[i], np.full(6, 5), region, np.arange(6), 16) for i in range(2)]
    assert np.allclose(out, np.stack(one))
    assert np.allclose(out[0, 3], 4 * 3.0 / 2.0 - AGREE_BIAS) and not out[0, 4:].any()


# -- the trend and scale charts, live --------------------------------------------------

PRICE = KIND_INDEX["market_price"]


def _run_live(counts: np.ndarray, values: np.ndarray | None, kinds: np.ndarray
              ) -> tuple[DetectorChain, dict[str, object], list[dict[str, np.ndarray]],
                         list[dict[str, np.ndarray]]]:
    """Step one region of ``counts.shape[1]`` stations through both stages, tick by tick;
    the settled evidence and the node outputs of every tick."""
    n = counts.shape[1]
    meta = StationMeta(kind_idx=kinds, group_idx=np.arange(n), region_idx=np.zeros(n, int))
    chain = DetectorChain(tick_s=60.0)
    state = chain.init_state((n,), n_regions=1)
    chain.seed_baselines(state, np.full(n, RATE))
    evs, nodes = [], []
    for t in range(counts.shape[0]):
        hist = np.zeros((n, 16))
        hist[:, 0] = counts[t]
        cells: dict[str, np.ndarray] = {"count": counts[t], "hist": hist, "kind_idx": kinds}
        if values is not None:
            cells["value_last"] = values[t]
        out = chain.step(state, cells, meta, tick=t)
        evs.append(out["evidence"])
        nodes.append(out["node"])
    return chain, state, evs, nodes


def test_a_station_whose_activity_ramps_gets_trend_evidence_live() -> None:
    rng = np.random.default_rng(11)
    ticks, n = 260, 6
    lam = np.full((ticks, n), RATE)
    lam[100:160, 0] = RATE * (1.0 + 3.0 * np.arange(60) / 60)  # four times busier in an hour
    lam[160:, 0] = RATE * 4.0
    counts = rng.poisson(lam).astype(float)
    kinds = np.full(n, KIND_INDEX["osint_social"])
    chain, _state, evs, _nodes = _run_live(counts, None, kinds)
    trend = np.array([e["trend_z"] for e in evs])
    burst = np.array([e["burst_z"] for e in evs])
    # the burst chart's baseline follows the ramp; the trend chart stays up while it lasts
    assert np.median(trend[130:165, 0]) >= 4.0 and np.median(burst[130:165, 0]) < 2.0
    assert trend[:100].max() < 4.0 and trend[:, 1:].max() < 4.0  # before it, and the others
    assert trend[240:, 0].max() < 4.0                              # the new level is absorbed
    # the node machine weighs it as trend evidence
    _, parts = chain.node.fuse({"burst_z": burst[150], "trend_z": trend[150]})
    j = EVIDENCE_TYPES.index("trend")
    assert parts[0, j] == pytest.approx(chain.node.weights["trend"] * trend[150, 0])


def test_a_price_whose_volatility_jumps_gets_scale_evidence_live_and_gaps_teach_nothing() -> None:
    rng = np.random.default_rng(12)
    ticks, n = 500, 4
    ret = rng.normal(0.0, 0.001, (ticks, n))
    ret[300:, 0] *= 6.0  # the first price station turns volatile
    values = 100.0 * np.exp(np.cumsum(ret, axis=0))
    counts = rng.poisson(RATE, (ticks, n)).astype(float) + 1.0
    counts[200:230, 1] = 0.0  # the second one is silent for half an hour: no price then
    kinds = np.array([PRICE, PRICE, PRICE, KIND_INDEX["osint_news"]])
    _chain, state, evs, _nodes = _run_live(counts, values, kinds)
    scale = np.array([e["scale_z"] for e in evs])
    assert np.median(scale[310:400, 0]) >= 4.0   # raised while the wider swings last
    assert scale[50:300, 0].max() < 4.0 and scale[50:, 1:3].max() < 4.0
    # a news station's value is no price: its price charts never learn
    assert float(state["price_scale"]["n"][3]) == 0.0 and float(state["price_trend"]["n"][3]) == 0.0
    # the silent station learnt nothing while silent: one change fewer than ticks with events
    assert float(state["price_trend"]["n"][1]) == ticks - 30


def test_without_prices_the_price_charts_stay_untouched() -> None:
    chain = DetectorChain()
    state = chain.init_state((3,))
    hist = np.zeros((3, 16))
    for _ in range(5):
        ev, _ = chain.step_stations(state, {"count": np.full(3, 4.0), "hist": hist})
    assert ev["trend_z"].shape == (3,) and ev["scale_z"].shape == (3,)
    assert float(state["price_trend"]["n"].sum()) == 0.0 and float(state["trend"]["n"].min()) == 5.0


def test_log_count_var_matches_the_poisson_distribution() -> None:
    rng = np.random.default_rng(3)
    rates = np.array([0.3, 3.0, 40.0])
    got = log_count_var(rates)
    want = np.array([np.log1p(rng.poisson(r, 400_000)).var() for r in rates])
    np.testing.assert_allclose(got, want, rtol=0.02)


def test_trend_or_scale_alone_makes_a_station_active_only_once_it_could_matter() -> None:
    chain = DetectorChain()
    ev, _ = chain.step_stations(chain.init_state((3,)), {"count": np.zeros(3), "hist": np.zeros((3, 16))})
    ev = {k: np.zeros(3) if k.endswith("_z") else v for k, v in ev.items()}
    ev["trend_z"] = np.array([3.0, 5.0, 0.0])  # weight 0.3: 0.9 and 1.5 against the floor 1.33
    ev["burst_z"] = np.array([0.0, 0.0, 1.5])
    _, active = settle(ev, chain.floor, chain.floor_scale)
    assert active.tolist() == [False, True, True]
    # below the scaled floor the fused evidence stays under calm_at, as for the others
    fused, _ = chain.node.fuse({"burst_z": np.zeros(1), "trend_z": np.array([chain.floor / 0.3 - 1e-6]),
                                "scale_z": np.array([chain.floor / 0.3 - 1e-6])})
    assert float(fused[0]) < chain.node.calm_at

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from convergence.detectors.meter import (
    CONVERGED,
    FEATURE_NAMES,
    LEVELS,
    QUIET,
    WATCH,
    ConvergenceMeter,
    explain,
)
from convergence.detectors.node_state import EVIDENCE_TYPES

# stations: 0 news(wire A) 1 news(wire A) 2 social 3 social 4 sensor 5 vol 6 price ; all region 0
KINDS = np.array([0, 0, 1, 1, 4, 3, 2])
GROUPS = np.array([0, 0, 1, 2, 3, 4, 4])
REGIONS = np.zeros(7, dtype=np.int64)


def _inputs(mask: list[int], peak: float = 12.0, since: float = 0.0,
            regions: np.ndarray = REGIONS) -> dict[str, Any]:
    m = np.zeros(7, bool)
    m[mask] = True
    p = np.zeros((7, len(EVIDENCE_TYPES)))
    p[:, 0] = peak
    return {"since": np.where(m, since, 1e9), "peak": p, "kind_idx": KINDS, "group_idx": GROUPS,
            "region_idx": regions}


def _read(mask: list[int], **kw: Any) -> dict[str, Any]:
    """One tick's reading of region 0 (scalars), plus the per-region arrays."""
    meter = ConvergenceMeter()
    regions = kw.get("regions", REGIONS)
    out = meter.step(meter.init_state((int(regions.max()) + 1,)), _inputs(mask, **kw))
    return {**{k: (v[0] if k != "weights" and np.ndim(v) >= 1 else v) for k, v in out.items()},
            "region_score": out["score"]}


def test_independence_beats_correlation() -> None:
    two_same_wire = _read([0, 1])["score"]
    two_independent = _read([0, 2])["score"]
    assert two_independent > two_same_wire


def test_more_kinds_score_higher_and_single_station_is_quiet() -> None:
    assert int(_read([2])["level"]) == QUIET
    assert _read([0, 2, 4, 5])["score"] > _read([0, 2, 3])["score"]
    assert int(_read([0, 2, 3, 4, 5])["level"]) == CONVERGED


def test_market_only_or_one_osint_feed_is_capped_below_warning() -> None:
    r = _read([5, 6, 4])
    assert not r["osint"] and int(r["level"]) <= WATCH
    r = _read([2, 4, 5, 6])  # a single social account echoing the move
    assert not r["osint"] and int(r["level"]) <= WATCH
    assert ConvergenceMeter(min_osint_groups=0).step(
        ConvergenceMeter(min_osint_groups=0).init_state((1,)), _inputs([2, 4, 5, 6]))["score"][0] > r["score"]


def test_convergence_is_per_region() -> None:
    split = np.array([0, 1, 0, 1, 0, 1, 0])
    together = _read([0, 2, 3, 4, 5])
    apart = _read([0, 2, 3, 4, 5], regions=split)
    assert apart["region_score"].max() < together["score"]


def test_two_regions_converging_at_once_fire_twice_and_keep_their_own_levels() -> None:
    meter = ConvergenceMeter()
    regions = np.array([0] * 7 + [1] * 7)
    kinds, groups = np.r_[KINDS, KINDS], np.r_[GROUPS, GROUPS + 10]
    st = meter.init_state((2,))

    def tick(mask: list[int], t: int) -> dict[str, Any]:
        m = np.zeros(14, bool)
        m[mask] = True
        p = np.zeros((14, len(EVIDENCE_TYPES)))
        p[:, 0] = 12.0
        return meter.step(st, {"since": np.where(m, 0.0, 1e9), "peak": p, "kind_idx": kinds,
                               "group_idx": groups, "region_idx": regions, "tick": t})

    both = tick([0, 2, 3, 4, 5, 7, 9, 10, 11, 12], 5)
    assert both["fired"].tolist() == [True, True]
    assert both["episode_start"].tolist() == [5, 5]
    # region 1 calms down; region 0 keeps converging: each level is its own
    for t in range(6, 30):
        out = tick([0, 2, 3, 4, 5], t)
    assert [LEVELS[int(x)] for x in out["level"]] == ["converged", "quiet"]
    assert out["episode_start"].tolist()[0] == 5


def test_per_run_thresholds_and_window() -> None:
    meter = ConvergenceMeter()
    inputs = _inputs([0, 2, 3, 4, 5], since=3.0)
    batch = {**inputs, "since": np.stack([inputs["since"]] * 2), "peak": np.stack([inputs["peak"]] * 2),
             "thresholds": np.array([[30.0, 55.0, 75.0], [30.0, 95.0, 99.0]]),
             "window_ticks": np.array([8.0, 2.0])}
    out = meter.step(meter.init_state((2, 1)), batch)
    # run 1: the window of 2 ticks has passed these 3-tick-old nodes
    assert int(out["level"][0, 0]) >= WATCH and int(out["level"][1, 0]) == QUIET


def test_levels_rise_at_once_and_fall_with_hysteresis() -> None:
    meter = ConvergenceMeter(down_ticks=2)
    st = meter.init_state((1,))
    seq = []
    for since in [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]:
        seq.append(LEVELS[int(meter.step(st, _inputs([0, 2, 3, 4, 5], since=float(since)))["level"][0])])
    assert seq[0] == "converged" and seq[-1] == "quiet"
    assert seq.count("converged") >= 5  # fading evidence does not flap the level
    changes = sum(a != b for a, b in itertools.pairwise(seq))
    assert changes <= 3


def test_fired_only_on_rise_to_warning_or_above() -> None:
    meter = ConvergenceMeter()
    st = meter.init_state((1,))
    fired = [bool(meter.step(st, _inputs([0, 2, 3, 4, 5]))["fired"][0]) for _ in range(5)]
    assert fired == [True, False, False, False, False]


def test_batched_runs_match_single_runs() -> None:
    meter = ConvergenceMeter()
    masks = [[2], [0, 2, 3, 4, 5], [5, 6]]
    batch = {k: np.stack([_inputs(m)[k] for m in masks]) if k in ("since", "peak") else v
             for k, v in _inputs([]).items()}
    out = meter.step(meter.init_state((3, 1)), batch)
    for i, m in enumerate(masks):
        single = _read(m)
        assert out["score"][i, 0] == pytest.approx(float(single["score"]))
        assert out["level"][i, 0] == single["level"]


def test_explanation_sums_to_one_and_marks_correlated() -> None:
    meter = ConvergenceMeter()
    inputs = _inputs([0, 1, 2, 4])
    reading = meter.step(meter.init_state((1,)), inputs)
    e = explain(meter, reading, {"peak": inputs["peak"]}, [f"s{i}" for i in range(7)], KINDS, GROUPS,
                ["eu"], REGIONS, 0)
    assert sum(n["share"] for n in e["nodes"]) == pytest.approx(1.0, abs=1e-3)
    assert sum(1 for n in e["nodes"] if n["correlated"]) == 1
    correlated = next(n for n in e["nodes"] if n["correlated"])
    assert correlated["station_id"] in ("s0", "s1") and correlated["correlated_with"] in ("s0", "s1")
    assert correlated["correlated_with"] != correlated["station_id"]
    assert set(e["by_kind"]) == {"osint_news", "osint_social", "sensor"}
    assert e["by_evidence"] == {"burst": pytest.approx(1.0, abs=1e-3)}


@pytest.mark.parametrize("kw", [{"thresholds": (50, 40, 90)}, {"window_ticks": 0},
                                {"correlated_weight": 2.0}, {"min_osint_groups": -1}])
def test_rejects_bad_settings(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ConvergenceMeter(**kw)


def test_cached_layout_follows_registry_changes_and_peak_top() -> None:
    meter = ConvergenceMeter()
    split = np.array([0, 1, 0, 1, 0, 1, 0])
    # one meter object, registry changing between ticks: each reading matches a fresh meter
    for regions in (REGIONS, split, REGIONS, split):
        n_reg = int(regions.max()) + 1
        got = meter.step(meter.init_state((n_reg,)), _inputs([0, 2, 3, 4, 5], regions=regions))
        ref = _read([0, 2, 3, 4, 5], regions=regions)
        assert np.array_equal(got["score"], ref["region_score"])
    inputs = _inputs([0, 2, 3, 4, 5])
    with_top = meter.step(meter.init_state((1,)), {**inputs, "peak_top": inputs["peak"].max(-1)})
    assert float(with_top["score"][0]) == float(_read([0, 2, 3, 4, 5])["score"])


def test_features_are_per_region_only_when_asked() -> None:
    meter = ConvergenceMeter(emit_features=True)
    out = meter.step(meter.init_state((2,)), _inputs([0, 2, 3, 4, 5],
                                                     regions=np.array([0, 1, 0, 1, 0, 1, 0])))
    assert out["features"].shape == (2, len(FEATURE_NAMES))
    assert "features" not in ConvergenceMeter().step(ConvergenceMeter().init_state((1,)), _inputs([0]))


def test_a_station_of_an_unknown_region_index_is_a_clear_error_and_grow_fixes_it() -> None:
    meter = ConvergenceMeter()
    st = meter.init_state((1,))
    split = np.array([0, 1, 0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="grow it first"):
        meter.step(st, _inputs([0], regions=split))
    meter.grow(st, 2)
    assert meter.step(st, _inputs([0], regions=split))["score"].shape == (2,)


def test_one_kind_cannot_reach_warning_however_many_stations() -> None:
    meter = ConvergenceMeter()
    n = 30
    p = np.zeros((n, len(EVIDENCE_TYPES)))
    p[:, 0] = 12.0
    out = meter.step(meter.init_state((1,)), {
        "since": np.zeros(n), "peak": p, "kind_idx": np.ones(n, np.int64),
        "group_idx": np.arange(n), "region_idx": np.zeros(n, np.int64)})
    assert float(out["score"][0]) < meter.thresholds[1] and bool(out["osint"][0])

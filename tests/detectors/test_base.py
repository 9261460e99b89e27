from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_fraction,
    check_int_min,
    check_positive,
    check_unit_interval,
    ewma_update,
    fuse_top2,
    seed_count_baseline,
)

SPEC: Spec = {
    "mu": ((), 1.0),
    "hist": ((4,), 0.0),
    "n": ((), 0, np.int32),
    "prof": ((2,), 0.5, np.float32),
    "on": ((), False, np.bool_),
}


class Counting(Stage):
    """The smallest real stage: counts ticks and sums its input."""

    name = "counting"

    def state_spec(self) -> Spec:
        return {"n": ((), 0, np.int64), "total": ((), 0.0)}

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        state["n"] += 1
        state["total"] += inputs["x"]
        return {"total": state["total"].copy()}


# -- ArrayState: construction -------------------------------------------------------------------
def test_zeros_builds_named_arrays_with_fill_and_dtype() -> None:
    s = ArrayState.zeros((2, 3), SPEC)
    assert list(s) == ["mu", "hist", "n", "prof", "on"] and len(s) == 5
    assert s.lead_ndim == 2 and s.shape == (2, 3)
    assert {k: (v.shape, v.dtype) for k, v in s.items()} == {
        "mu": ((2, 3), np.float64), "hist": ((2, 3, 4), np.float64), "n": ((2, 3), np.int32),
        "prof": ((2, 3, 2), np.float32), "on": ((2, 3), np.bool_)}
    assert np.all(s["mu"] == 1.0) and np.all(s["hist"] == 0.0) and np.all(s["prof"] == 0.5)
    assert not s["on"].any()


def test_nbytes_per_station_sums_every_array() -> None:
    # 8 (mu) + 4 * 8 (hist) + 4 (n) + 2 * 4 (prof) + 1 (on)
    assert ArrayState.zeros((2, 3), SPEC).nbytes_per_station() == 53
    assert ArrayState.zeros((7,), SPEC).nbytes_per_station() == 53
    assert ArrayState.zeros((0,), SPEC).nbytes_per_station() == 0


def test_setitem_replaces_an_array() -> None:
    s = ArrayState.zeros((2,), {"mu": ((), 0.0)})
    s["mu"] = np.array([4.0, 5.0])
    assert s["mu"].tolist() == [4.0, 5.0]
    with pytest.raises(KeyError):
        s["missing"]


# -- ArrayState: grow ---------------------------------------------------------------------------
def test_grow_keeps_old_stations_and_starts_new_ones_from_the_template() -> None:
    s = ArrayState.zeros((2,), SPEC)
    s["mu"][:] = 7.0
    s["hist"][:] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    s["n"][:] = 3
    s["on"][:] = True
    s.grow(4, ArrayState.zeros((4,), SPEC))
    assert s.shape == (4,)
    assert s["mu"].tolist() == [7.0, 7.0, 1.0, 1.0]
    assert s["hist"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert s["n"].tolist() == [3, 3, 0, 0] and s["n"].dtype == np.int32
    assert s["on"].tolist() == [True, True, False, False] and s["on"].dtype == np.bool_
    assert s["prof"].shape == (4, 2) and s["prof"].dtype == np.float32


def test_grow_extends_the_last_leading_axis_of_a_batched_state() -> None:
    s = ArrayState.zeros((2, 1), SPEC)
    s["mu"][:] = [[3.0], [4.0]]
    s.grow(3, ArrayState.zeros((2, 3), SPEC))
    assert s.shape == (2, 3) and s["hist"].shape == (2, 3, 4)
    assert s["mu"].tolist() == [[3.0, 1.0, 1.0], [4.0, 1.0, 1.0]]


def test_grow_never_shrinks_and_grows_from_zero() -> None:
    s = ArrayState.zeros((3,), {"mu": ((), 2.0)})
    s.grow(1, ArrayState.zeros((1,), {"mu": ((), 9.0)}))
    assert s["mu"].tolist() == [2.0, 2.0, 2.0]
    empty = ArrayState.zeros((0,), {"mu": ((), 2.0)})
    empty.grow(2, ArrayState.zeros((2,), {"mu": ((), 5.0)}))
    assert empty["mu"].tolist() == [5.0, 5.0]


def test_grow_with_a_smaller_constant_template_repeats_its_value() -> None:
    s = ArrayState.zeros((1,), {"mu": ((), 2.0)})
    s.grow(4, ArrayState.zeros((1,), {"mu": ((), 9.0)}))
    assert s["mu"].tolist() == [2.0, 9.0, 9.0, 9.0]


def test_grow_with_a_smaller_template_keeps_its_trailing_values() -> None:
    template = ArrayState.zeros((1,), {"h": ((3,), 0.0)})
    template["h"][0] = [1.0, 2.0, 3.0]
    s = ArrayState.zeros((1,), {"h": ((3,), 0.0)})
    s.grow(3, template)
    assert s["h"].tolist() == [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]


# -- ArrayState: per-station and whole-state serialisation --------------------------------------
def test_station_is_plain_json_and_set_station_restores_it() -> None:
    s = ArrayState.zeros((3,), SPEC)
    s["mu"][1] = 2.5
    s["hist"][1] = [1, 2, 3, 4]
    s["n"][1] = 9
    s["on"][1] = True
    one = json.loads(json.dumps(s.station(1)))
    assert one == {"mu": 2.5, "hist": [1.0, 2.0, 3.0, 4.0], "n": 9, "prof": [0.5, 0.5], "on": True}
    fresh = ArrayState.zeros((3,), SPEC)
    fresh.set_station(2, {**one, "unknown": 1})  # keys the state lacks are ignored
    assert fresh.station(2) == one and fresh.station(0) == s.station(0)
    assert "unknown" not in fresh and fresh["n"].dtype == np.int32


def test_station_needs_a_live_one_dimensional_state() -> None:
    with pytest.raises(ValueError, match=re.escape("station() needs a live state of shape (stations,)")):
        ArrayState.zeros((2, 3), SPEC).station(0)


def test_to_dict_spells_out_dtype_shape_and_flat_data() -> None:
    s = ArrayState.zeros((2,), {"n": ((), 0, np.int32), "h": ((2,), 0.0)})
    s["n"][:] = [1, 2]
    s["h"][:] = [[1.0, 2.0], [3.0, math.nan]]
    d = s.to_dict()
    assert d["lead_ndim"] == 1
    assert d["arrays"]["n"] == {"dtype": "int32", "shape": [2], "data": [1, 2]}
    assert d["arrays"]["h"]["shape"] == [2, 2] and d["arrays"]["h"]["data"][:3] == [1.0, 2.0, 3.0]


def test_from_dict_round_trips_through_json_with_dtypes() -> None:
    s = ArrayState.zeros((2, 3), SPEC)
    s["hist"][...] = np.arange(24.0).reshape(2, 3, 4)
    s["n"][0, 1] = -4
    s["on"][1, 2] = True
    s["mu"][0, 0] = math.nan
    back = ArrayState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.lead_ndim == 2 and back.shape == (2, 3) and list(back) == list(s)
    for k in s:
        assert back[k].dtype == s[k].dtype, k
        assert np.array_equal(back[k], s[k], equal_nan=True), k


def test_copy_is_deep() -> None:
    s = ArrayState.zeros((2,), SPEC)
    c = s.copy()
    c["mu"][0] = 99.0
    c["hist"][1, 0] = 5.0
    assert s["mu"].tolist() == [1.0, 1.0] and s["hist"][1, 0] == 0.0
    assert c.lead_ndim == s.lead_ndim and c["mu"][0] == 99.0


# -- Stage --------------------------------------------------------------------------------------
def test_stage_init_state_and_step() -> None:
    stage = Counting()
    st = stage.init_state((2, 3))
    assert st.shape == (2, 3) and st["n"].dtype == np.int64
    stage.step(st, {"x": np.ones((2, 3))})
    out = stage.step(st, {"x": np.full((2, 3), 2.0)})
    assert out["total"].tolist() == [[3.0] * 3] * 2 and int(st["n"].sum()) == 12
    assert stage.init_state((0,)).shape == (0,)


@pytest.mark.parametrize("shape", [(), (-1,), (2, -3)])
def test_stage_refuses_a_shape_without_a_station_count(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"shape must end with the station count, got {shape}")):
        Counting().init_state(shape)


def test_stage_default_seed_changes_nothing() -> None:
    stage = Counting()
    st = stage.init_state((2,))
    stage.seed(st, np.array([5.0, 6.0]), np.array([True, True]))
    assert st["n"].tolist() == [0, 0] and st["total"].tolist() == [0.0, 0.0]


def test_stage_is_abstract() -> None:
    with pytest.raises(TypeError):
        Stage()  # type: ignore[abstract]


# -- seed_count_baseline --------------------------------------------------------------------------
def test_seed_count_baseline_only_touches_known_stations() -> None:
    st = ArrayState.zeros((4,), {"mu": ((), 0.0), "var": ((), 1.0), "fast": ((), 0.0),
                                 "n": ((), 0.0)})
    st["n"][:] = [0.0, 50.0, 3.0, 0.0]
    st["mu"][3] = 8.0
    seed_count_baseline(st, np.array([4.0, 0.25, 2.0, 7.0]), np.array([True, True, True, False]),
                        mu="mu", var="var", warmup_ticks=20, also=("fast",))
    assert st["mu"].tolist() == [4.0, 0.25, 2.0, 8.0]
    assert st["fast"].tolist() == [4.0, 0.25, 2.0, 0.0]
    assert st["var"].tolist() == [4.0, 1.0, 2.0, 1.0]  # max(rate, 1)
    assert st["n"].tolist() == [20.0, 50.0, 20.0, 0.0]  # warm-up done, never set back


# -- fuse_top2 ------------------------------------------------------------------------------------
def test_fuse_top2_known_answer() -> None:
    parts = [np.array([1.0, 5.0, 0.0]), np.array([3.0, 2.0, 0.0]), np.array([2.0, 4.0, 6.0])]
    fused, top = fuse_top2(parts, 0.5)
    assert top.tolist() == [3.0, 5.0, 6.0]
    assert fused.tolist() == [4.0, 7.0, 6.0]  # 3 + 0.5*2, 5 + 0.5*4, 6 + 0.5*0
    assert parts[0].tolist() == [1.0, 5.0, 0.0]  # inputs untouched


def test_fuse_top2_single_part_and_generator() -> None:
    part = np.array([1, 2])
    fused, top = fuse_top2(iter([part]), 0.5)
    assert fused.tolist() == [1.0, 2.0] and top.dtype == np.float64
    top[0] = 100.0
    assert part.tolist() == [1, 2]  # the first part is copied, not aliased


def test_fuse_top2_without_corroboration_is_the_maximum_in_a_separate_array() -> None:
    fused, top = fuse_top2([np.array([1.0, 4.0]), np.array([3.0, 2.0])], 0.0)
    assert fused.tolist() == top.tolist() == [3.0, 4.0]
    assert fused is not top and not np.shares_memory(fused, top)


def test_fuse_top2_needs_a_part() -> None:
    with pytest.raises(ValueError, match="fuse_top2 needs at least one part"):
        fuse_top2([], 0.5)


# -- ewma_update ----------------------------------------------------------------------------------
def test_ewma_update_known_answers() -> None:
    mu, var = np.array([1.0, 10.0]), np.array([0.0, 4.0])
    new_mu, new_var = ewma_update(mu, var, np.array([3.0, 6.0]), 0.25)
    assert new_mu.tolist() == [1.5, 9.0]  # mu + a d, d = [2, -4]
    assert new_var.tolist() == [0.75, 6.0]  # 0.75 * (var + 0.25 d²)
    assert mu.tolist() == [1.0, 10.0] and var.tolist() == [0.0, 4.0]  # new arrays returned


def test_ewma_update_per_station_rates_and_extremes() -> None:
    mu, var, x = np.array([2.0, 2.0]), np.array([1.0, 1.0]), np.array([5.0, 5.0])
    new_mu, new_var = ewma_update(mu, var, x, np.array([0.0, 1.0]))
    assert new_mu.tolist() == [2.0, 5.0]  # a=0 keeps the mean, a=1 jumps to x
    assert new_var.tolist() == [1.0, 0.0]


# -- argument checks ------------------------------------------------------------------------------
def test_check_int_min() -> None:
    check_int_min("window", 3, 3)
    with pytest.raises(ValueError, match=re.escape("window must be >= 3, got 2")):
        check_int_min("window", 2, 3)


@pytest.mark.parametrize("ok", [0.0, 0.5, 1.0])
def test_check_unit_interval_accepts_the_closed_interval(ok: float) -> None:
    check_unit_interval("p", ok)


@pytest.mark.parametrize(("bad", "shown"), [(-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan")])
def test_check_unit_interval_refuses(bad: float, shown: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"p must be in [0, 1], got {shown}")):
        check_unit_interval("p", bad)


def test_check_positive() -> None:
    check_positive("rate", 1e-9)
    check_positive("rate", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match=re.escape("rate must be > 0, got 0.0")):
        check_positive("rate", 0.0)
    with pytest.raises(ValueError, match=re.escape("rate must be >= 0, got -1")):
        check_positive("rate", -1, allow_zero=True)


@pytest.mark.parametrize("bad", [math.inf, math.nan, -math.inf])
def test_check_positive_refuses_non_finite(bad: float) -> None:
    for allow_zero in (False, True):
        with pytest.raises(ValueError, match=r"^rate must be"):
            check_positive("rate", bad, allow_zero=allow_zero)


@pytest.mark.parametrize("ok", [1e-12, 0.5, 1.0])
def test_check_fraction_accepts_the_half_open_interval(ok: float) -> None:
    check_fraction("alpha", ok)


@pytest.mark.parametrize(("bad", "shown"), [(0.0, "0.0"), (1.01, "1.01"), (math.nan, "nan"),
                                            (math.inf, "inf")])
def test_check_fraction_refuses(bad: float, shown: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"alpha must be in (0, 1], got {shown}")):
        check_fraction("alpha", bad)


def test_checks_accept_numpy_scalars() -> None:
    values: list[Any] = [np.float32(0.5), np.float64(1.0)]
    for v in values:
        check_fraction("alpha", v)
        check_unit_interval("p", v)
        check_positive("rate", v)
    check_int_min("n", np.int64(4), 1)  # type: ignore[arg-type]


def test_grow_refuses_a_template_of_the_wrong_size() -> None:
    s = ArrayState.zeros((1,), {"h": ((3,), 0.0)})
    with pytest.raises(ValueError, match=r"template for 'h' has 2 stations; give all 4, the 3 new"):
        s.grow(4, ArrayState.zeros((2,), {"h": ((3,), 0.0)}))

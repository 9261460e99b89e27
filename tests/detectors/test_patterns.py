from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from convergence.detectors.patterns import (
    DEFAULT_PATTERNS,
    Match,
    MatcherState,
    PatternMatcher,
    SkipStrategy,
    compile_patterns,
)
from convergence.schema import KIND_INDEX

# station layout shared by the tests: two regions with one station of each kind
KINDS = ("osint_social", "osint_news", "market_volume",   # region 0
         "osint_social", "osint_news", "market_volume",   # region 1
         "sensor", "osint_social")                          # region 0
REGIONS = (0, 0, 0, 1, 1, 1, 0, 0)
S0, N0, M0, S1, N1, M1, X0, S0B = range(8)


def _matcher(text: str = DEFAULT_PATTERNS, tick_s: float = 60.0, **kw: object) -> PatternMatcher:
    kinds = np.array([KIND_INDEX[k] for k in KINDS])
    return PatternMatcher(compile_patterns(text), kinds, np.array(REGIONS), tick_s,
                          **kw)  # type: ignore[arg-type]


def _with_skip(skip: str) -> str:
    return DEFAULT_PATTERNS.replace('skip = "skip_till_next_match"', f'skip = "{skip}"')


def _run(m: PatternMatcher, events: Mapping[int, Sequence[int]], ticks: int,
         state: MatcherState | None = None) -> tuple[list[Match], MatcherState, list[list[float]]]:
    """Pulse ``burst`` (one tick) at the listed stations on the listed ticks."""
    st = state if state is not None else m.init_state()
    matches: list[Match] = []
    zs: list[list[float]] = []
    for _ in range(ticks):
        burst = np.zeros(m.n_stations, bool)
        burst[list(events.get(st.tick, ()))] = True
        out = m.step(st, {"burst": burst})
        matches += out.matches
        zs.append(out.pattern_z.tolist())
    return matches, st, zs


# ---------------------------------------------------------------- matcher settings


def test_matcher_rejects_bad_settings() -> None:
    kinds, regions = np.zeros(3, int), np.zeros(3, int)
    pats = compile_patterns(DEFAULT_PATTERNS)
    with pytest.raises(ValueError, match="shorter than one tick"):
        PatternMatcher(pats, kinds, regions, tick_s=3600.0)  # 600 s < one tick
    with pytest.raises(ValueError, match="needs same='group'; pass group_idx"):
        PatternMatcher(compile_patterns(DEFAULT_PATTERNS.replace('["region"]', '["group"]')),
                       kinds, regions, tick_s=60.0)
    with pytest.raises(ValueError, match="equal length"):
        PatternMatcher(pats, kinds, np.zeros(4, int), tick_s=60.0)
    for kw in ({"tick_s": 0.0}, {"tick_s": 60.0, "max_partial": 0},
               {"tick_s": 60.0, "match_z": 0.0}, {"tick_s": 60.0, "hold_ticks": 0}):
        with pytest.raises(ValueError):
            PatternMatcher(pats, kinds, regions, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        PatternMatcher(pats * 2, kinds, regions, tick_s=60.0)


def test_step_rejects_missing_or_misshapen_signals() -> None:
    m = _matcher()
    st = m.init_state()
    with pytest.raises(ValueError, match="signal 'burst' is missing"):
        m.step(st, {"change_level": np.zeros(m.n_stations, bool)})
    with pytest.raises(ValueError, match=r"state leading shape \(\), so it takes \(8,\)"):
        m.step(st, {"burst": np.zeros((2, m.n_stations), bool)})
    with pytest.raises(ValueError, match=r"so it takes \(3, 8\)"):
        m.step(m.init_state((3,)), {"burst": np.zeros((2, m.n_stations), bool)})
    with pytest.raises(ValueError, match="8 stations"):
        m.step(st, {"burst": np.zeros(5, bool)})
    other = _matcher(DEFAULT_PATTERNS.replace("social-news-market", "renamed"))
    with pytest.raises(ValueError, match="state was made for patterns"):
        other.step(st, {"burst": np.zeros(m.n_stations, bool)})


# ------------------------------------------------------------------------- matching


def test_fires_on_the_right_sequence() -> None:
    matches, st, zs = _run(_matcher(), {2: [S0], 5: [N0], 20: [M0]}, 25)
    assert matches == [Match("social-news-market", (0,), ((S0,), (N0,), (M0,)), (2, 5, 20))]
    assert (matches[0].start_tick, matches[0].end_tick) == (2, 20)
    on = [t for t, z in enumerate(zs) if any(z)]
    assert on == [20, 21]  # held for hold_ticks=2
    assert zs[20] == [6.0, 6.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert st.counters["social-news-market"] == {"started": 1, "matched": 1, "expired": 0,
                                                 "killed": 0, "evicted": 0}
    assert st.n_partial() == 0


def test_not_in_the_wrong_order() -> None:
    matches, _, zs = _run(_matcher(), {2: [N0], 5: [S0], 10: [M0], 12: [S0]}, 20)
    assert matches == [] and not any(any(z) for z in zs)


def test_steps_must_be_strictly_later() -> None:
    # social and news in the same tick have no order, so they do not make a sequence
    matches, _, _ = _run(_matcher(), {3: [S0, N0], 9: [M0]}, 12)
    assert matches == []


def test_window_is_inclusive_and_partial_matches_time_out() -> None:
    # 600 s / 60 s = 10 ticks for news, 1800 s = 30 ticks for market
    assert len(_run(_matcher(), {0: [S0], 10: [N0], 40: [M0]}, 45)[0]) == 1
    late_news, st, _ = _run(_matcher(), {0: [S0], 11: [N0], 20: [M0]}, 45)
    assert late_news == []
    assert st.counters["social-news-market"]["expired"] == 1 and st.n_partial() == 0
    late_market, st, _ = _run(_matcher(), {0: [S0], 10: [N0], 41: [M0]}, 45)
    assert late_market == [] and st.counters["social-news-market"]["expired"] == 1


def test_same_region_is_respected() -> None:
    assert _run(_matcher(), {0: [S0], 3: [N1], 6: [M0]}, 10)[0] == []
    assert _run(_matcher(), {0: [S0], 3: [N0], 6: [M1]}, 10)[0] == []
    [m] = _run(_matcher(), {0: [S1], 3: [N1], 6: [M1]}, 10)[0]
    assert m.key == (1,) and m.stations == ((S1,), (N1,), (M1,))
    # without `same`, stations from any region combine
    anywhere = DEFAULT_PATTERNS.replace('same = ["region"]\n', "")
    [m] = _run(_matcher(anywhere), {0: [S0], 3: [N1], 6: [M0]}, 10)[0]
    assert m.key == () and m.stations == ((S0,), (N1,), (M0,))


def test_stations_firing_together_are_one_event() -> None:
    [m] = _run(_matcher(), {1: [S0, S0B, S1], 4: [N0], 8: [M0]}, 10)[0]
    assert m.stations == ((S0, S0B), (N0,), (M0,))


def test_rising_edges_only_by_default() -> None:
    def steady(m: PatternMatcher) -> MatcherState:
        st = m.init_state()
        for _ in range(5):  # the social burst stays on for five ticks
            burst = np.zeros(m.n_stations, bool)
            burst[S0] = True
            m.step(st, {"burst": burst})
        return st

    assert steady(_matcher()).counters["social-news-market"]["started"] == 1
    assert steady(_matcher(onsets=False)).counters["social-news-market"]["started"] == 5


# skip strategies on the same event stream (all in region 0)
SKIP_CASES = {
    # two starts, then news, then market
    "two starts": {0: [S0], 2: [S0B], 4: [N0], 6: [M0]},
    # one start, news twice, then market
    "news twice": {0: [S0], 2: [N0], 4: [N0], 6: [M0]},
    # an unrelated kind (sensor) and another region in between
    "noise between": {0: [S0], 2: [X0, S1], 4: [N0], 5: [N1], 6: [M0]},
}
SKIP_EXPECTED = {
    ("skip_till_next_match", "two starts"): [(0, 4, 6), (2, 4, 6)],
    ("strict_contiguity", "two starts"): [(2, 4, 6)],   # the second social killed the first
    ("skip_till_any_match", "two starts"): [(0, 4, 6), (2, 4, 6)],
    ("skip_till_next_match", "news twice"): [(0, 2, 6)],
    ("strict_contiguity", "news twice"): [],             # news again where market was due
    ("skip_till_any_match", "news twice"): [(0, 2, 6), (0, 4, 6)],
    ("skip_till_next_match", "noise between"): [(0, 4, 6)],
    ("strict_contiguity", "noise between"): [(0, 4, 6)],  # not relevant to this key/pattern
    ("skip_till_any_match", "noise between"): [(0, 4, 6)],
}


@pytest.mark.parametrize(("skip", "case"), sorted(SKIP_EXPECTED))
def test_skip_strategies(skip: str, case: str) -> None:
    matches, st, _ = _run(_matcher(_with_skip(skip)), SKIP_CASES[case], 10)
    assert [m.ticks for m in matches] == SKIP_EXPECTED[(skip, case)]
    killed = st.counters["social-news-market"]["killed"]
    assert killed == {("strict_contiguity", "two starts"): 1,
                      ("strict_contiguity", "news twice"): 1}.get((skip, case), 0)


@pytest.mark.parametrize("skip", [s.value for s in SkipStrategy])
def test_memory_bound_under_a_flood_of_first_steps(skip: str) -> None:
    # tick_s = 1: the news window is 600 ticks, so nothing expires during the flood
    m = _matcher(_with_skip(skip), tick_s=1.0, max_partial=8)
    flood = {t: [S0] for t in range(0, 400, 2)}  # 200 rising edges, 2 ticks apart
    _, st, _ = _run(m, flood, 400)
    c = st.counters["social-news-market"]
    assert c["started"] == 200
    if skip == "strict_contiguity":  # each new start is relevant, so it kills the one before
        assert (st.n_partial(), c["killed"], c["evicted"]) == (1, 199, 0)
    else:
        assert (st.n_partial(), c["killed"], c["evicted"]) == (8, 0, 192)
    assert len(json.dumps(st.to_dict())) < 2000
    matches, st, _ = _run(m, {400: [N0], 401: [M0]}, 3, st)
    starts = sorted(mm.start_tick for mm in matches)
    assert starts == {
        "strict_contiguity": [398],
        "skip_till_next_match": list(range(384, 400, 2)),  # the 8 newest starts
        # each of the 8 branches on the news, and the cap then evicts the 4 oldest starts
        # (original and branch alike)
        "skip_till_any_match": list(range(392, 400, 2)),
    }[skip]
    assert st.n_partial() <= 8


def test_state_round_trips_mid_match() -> None:
    m = _matcher(_with_skip("skip_till_any_match"))
    _, st, _ = _run(m, {0: [S0], 1: [S1], 3: [N0], 5: [N0], 6: [S0B]}, 8)
    assert st.n_partial() > 0
    restored = MatcherState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert restored.to_dict() == st.to_dict()
    rest = {9: [M0], 10: [N1], 12: [M1]}
    a = _run(m, rest, 10, st)
    b = _run(m, rest, 10, restored)
    assert a[0] == b[0] and a[2] == b[2] and len(a[0]) == 3
    assert a[1].to_dict() == b[1].to_dict()


def test_state_carries_over_when_the_fleet_grows() -> None:
    small = PatternMatcher(compile_patterns(DEFAULT_PATTERNS),
                           np.array([KIND_INDEX[k] for k in KINDS[:2]]), np.zeros(2, int), 60.0)
    st = small.init_state()
    _run(small, {0: [S0], 2: [N0]}, 3, st)
    big = _matcher()
    [m] = _run(big, {5: [M0]}, 3, st)[0]
    assert m.ticks == (0, 2, 5) and st.hold.shape == (big.n_stations,)


# ------------------------------------------------------------------ batched runs


def _random_pulses(rng: np.random.Generator, n_runs: int, ticks: int,
                   p: float) -> np.ndarray:
    """(ticks, runs, stations) one-tick pulses at random, so onsets are frequent."""
    return rng.random((ticks, n_runs, len(KINDS))) < p


@pytest.mark.parametrize("skip", [s.value for s in SkipStrategy])
def test_a_batch_of_runs_matches_exactly_as_each_run_alone(skip: str) -> None:
    # a small cap and short windows, so expiry, kills and evictions all happen
    m = _matcher(_with_skip(skip), tick_s=120.0, max_partial=3)
    n_runs, ticks = 5, 80
    pulses = _random_pulses(np.random.default_rng(7), n_runs, ticks, 0.15)
    batch = m.init_state((n_runs,))
    singles = [m.init_state() for _ in range(n_runs)]
    got: list[Match] = []
    want: list[Match] = []
    for t in range(ticks):
        out = m.step(batch, {"burst": pulses[t]})
        got += out.matches
        for r, st in enumerate(singles):
            one = m.step(st, {"burst": pulses[t, r]})
            want += [Match(x.pattern, x.key, x.stations, x.ticks, run=r) for x in one.matches]
            np.testing.assert_array_equal(out.pattern_z[r], one.pattern_z)
    key = lambda x: (x.run, x.ticks, x.stations)  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert len(got) > 5  # the comparison is not vacuous
    c = batch.counters["social-news-market"]
    for name in c:
        assert c[name] == sum(st.counters["social-news-market"][name] for st in singles)
    assert c["expired"] > 0 and c["evicted"] + c["killed"] > 0
    assert batch.n_partial() == sum(st.n_partial() for st in singles)


def test_batched_matches_name_their_run() -> None:
    m = _matcher()
    st = m.init_state((3,))
    script = {0: [(2, S1)], 2: [(2, N1)], 4: [(2, M1), (0, M0)]}
    matches: list[Match] = []
    for t in range(6):
        burst = np.zeros((3, m.n_stations), bool)
        for r, s in script.get(t, []):
            burst[r, s] = True
        out = m.step(st, {"burst": burst})
        matches += out.matches
        if t == 4:
            assert out.pattern_z[2].tolist() == [0, 0, 0, 6, 6, 6, 0, 0]
            assert not out.pattern_z[[0, 1]].any()
    assert matches == [Match("social-news-market", (1,), ((S1,), (N1,), (M1,)), (0, 2, 4), run=2)]
    assert "run=2" in repr(matches[0]) and "run=" not in repr(Match("p", (), (), ()))


def test_batched_state_round_trips_and_grows() -> None:
    m = _matcher(_with_skip("skip_till_any_match"), tick_s=120.0)
    pulses = _random_pulses(np.random.default_rng(3), 4, 30, 0.1)
    st = m.init_state((4,))
    for t in range(20):
        m.step(st, {"burst": pulses[t]})
    assert st.n_partial() > 0
    restored = MatcherState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert restored.lead == (4,) and restored.due is None
    for t in range(20, 30):
        a, b = m.step(st, {"burst": pulses[t]}), m.step(restored, {"burst": pulses[t]})
        assert a.matches == b.matches
        np.testing.assert_array_equal(a.pattern_z, b.pattern_z)
    assert restored.to_dict() == st.to_dict()
    wider = PatternMatcher(m.patterns, np.r_[m.kind_idx, KIND_INDEX["sensor"]],
                           np.r_[m.region_idx, 1], 120.0)
    out = wider.step(st, {"burst": np.zeros((4, wider.n_stations), bool)})
    assert out.pattern_z.shape == st.hold.shape == (4, wider.n_stations)

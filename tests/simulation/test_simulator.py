from __future__ import annotations

import numpy as np
import pytest

from convergence.detectors.chain import DetectorChain
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import Episode, Scenario, compact_fleet
from convergence.ground_stations.scenario_library import WorldParams, build
from convergence.simulation.simulator import simulate


def _runs(name: str = "simultaneous", n: int = 4) -> list[Scenario]:
    return [build(name, seed=s, params=WorldParams(onset_jitter_s=10.0)) for s in range(n)]


def test_same_seed_same_runs_other_seed_other_noise() -> None:
    a = simulate(_runs(), seed=3, features=True,
                 processor=TickProcessor(DetectorChain(meter=__import__(
                     "convergence.detectors.meter", fromlist=["ConvergenceMeter"]
                 ).ConvergenceMeter(emit_features=True))))
    b = simulate(_runs(), seed=3)
    c = simulate(_runs(), seed=4)
    np.testing.assert_array_equal(a.score, b.score)
    assert a.features is not None and a.features.shape[:3] == a.score.shape
    assert a.events == b.events != c.events
    labels = a.labels()
    assert labels.any() and np.array_equal(labels, c.labels())  # labels come from scenarios
    # every run alerted in its convergence's region, during it
    for k in range(4):
        alerts = a.alerts(k)
        assert alerts and {a.regions[r] for _, r in alerts} == {"mena"}
        assert all(labels[k, t, r] for t, r in alerts[:1])


def test_pattern_windows_must_match_the_simulated_tick() -> None:
    with pytest.raises(ValueError, match=r"pattern windows assume 60 s ticks .* every 1 s"):
        simulate(_runs(n=1), seed=0, processor=TickProcessor(DetectorChain(tick_s=60.0)))


def test_rejects_mixed_fleets_mixed_ticks_and_empty_campaigns() -> None:
    with pytest.raises(ValueError, match="at least one scenario"):
        simulate([], seed=0)
    with pytest.raises(ValueError, match="share the same fleet"):
        simulate([*_runs(n=1), build("small-region", seed=0)], seed=0)
    with pytest.raises(ValueError, match="tick length"):
        simulate([*_runs(n=1), build("daily-cycle", seed=0)], seed=0)


def _story(**kw: object) -> Scenario:
    fleet = compact_fleet(("mena", "eu-west"))
    return Scenario(fleet, [], duration_s=256.0, **kw)  # type: ignore[arg-type]


def test_a_slow_sampling_station_loses_what_arrives_after_its_tick_closed() -> None:
    # polling every 4 s with 1.5 s of allowed lateness: most of each poll's events are late
    n = len(_story().fleet)
    slow = _story(intervals_s=(4.0,) * n)
    fast = _story()
    a = simulate([slow] * 4, seed=1)
    b = simulate([fast] * 4, seed=1)
    assert a.events < 0.7 * b.events


def test_burst_mode_speeds_up_the_sampling_of_the_stations_it_targets() -> None:
    # every station polls every 3 s; a convergence puts its region in burst mode (0.25 s):
    # the region then delivers (nearly) everything, the other region keeps losing events
    fleet = compact_fleet(("mena", "eu-west"))
    n = len(fleet)
    mena = [i for i, s in enumerate(fleet) if s.region == "mena" and s.kind.value != "market_price"]
    ep = Episode("convergence", 60.0, 150.0, tuple(mena), 6.0, "conflict", "mena")
    sc = Scenario(fleet, [ep], duration_s=256.0, intervals_s=(3.0,) * n)
    proc = TickProcessor(DetectorChain())
    seen: list[np.ndarray] = []
    orig = proc.step

    def step(*a: object, **k: object):  # type: ignore[no-untyped-def]
        out = orig(*a, **k)  # type: ignore[arg-type]
        seen.append(out.bursting[0].copy())
        return out

    proc.step = step  # type: ignore[method-assign]
    res = simulate([sc], seed=2, processor=proc)
    assert res.alerts(0)
    assert any(s[mena].all() for s in seen)  # the responses reached the sampling
    eu = [i for i, s in enumerate(fleet) if s.region == "eu-west"]
    assert not any(s[eu].any() for s in seen)


def test_an_outage_makes_its_stations_dark_after_the_breaker_opens() -> None:
    fleet = compact_fleet(("mena", "eu-west"))
    sensors = tuple(i for i, s in enumerate(fleet) if s.kind.value == "sensor" and s.region == "mena")
    sc = Scenario(fleet, [Episode("outage", 100.0, 60.0, sensors, 0.0, None, "mena")],
                  duration_s=256.0)
    proc = TickProcessor(DetectorChain())
    dark_z: list[np.ndarray] = []
    orig = proc.chain.step_regions

    def step_regions(state, ev, meta, **kw):  # type: ignore[no-untyped-def]
        dz = kw.get("dark_z")
        dark_z.append(np.zeros(len(fleet)) if dz is None else np.asarray(dz)[0].copy())
        return orig(state, ev, meta, **kw)

    proc.chain.step_regions = step_regions  # type: ignore[method-assign]
    res = simulate([sc], seed=2, processor=proc)
    assert not dark_z[99][list(sensors)].any() and dark_z[103][list(sensors)].all()
    assert not dark_z[170][list(sensors)].any()
    assert not res.alerts(0)  # one kind going dark is not a convergence


def test_cells_and_events_modes_agree_on_what_alerts() -> None:
    scs = _runs("simultaneous", 3) + _runs("lone-surge", 3)
    for name in ("simultaneous", "lone-surge"):
        runs = [s for s in scs if s.name == name]
        cells = simulate(runs, seed=5, mode="cells")
        events = simulate(runs, seed=5, mode="events")
        assert [bool(cells.alerts(k)) for k in range(3)] == [bool(events.alerts(k)) for k in range(3)]
        assert 0.85 < events.events / cells.events < 1.15

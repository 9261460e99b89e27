"""The runtime-agnostic pipeline on the default scenario, replayed deterministically."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from convergence.detectors.node_state import NODE_STATES
from convergence.ground_stations.scenario import SyntheticWorld, default_scenario, evaluate
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.records import NodeState
from convergence.settings import load_settings
from convergence.stations import StationRegistry
from convergence.streams.pipeline import Pipeline, TickOutcome

T0 = 1_800_000_000.0


def _replay(seed: int = 7, seconds: float = 30.0,
            step: float = 0.5) -> tuple[Pipeline, list[TickOutcome], Any]:
    s = load_settings(env={}, config_path=None)
    sc = default_scenario(247, seed=seed, horizon_s=seconds)
    world = SyntheticWorld(sc)
    sources = [SyntheticSource(world, i, T0, seed) for i in range(world.n)]
    pipe = Pipeline(s, StationRegistry(list(sc.fleet)))
    outcomes: list[TickOutcome] = []
    for t in np.arange(step, seconds + step, step):
        recs = [r for src in sources for r in src.draw(t - step, t)]
        pipe.ingest_raw(recs, now_s=T0 + t)
        outcomes += pipe.advance(T0 + t)
    outcomes += pipe.flush()
    return pipe, outcomes, sc


Replay = tuple[Pipeline, list[TickOutcome], Any]


@pytest.fixture(scope="module")
def replay() -> Replay:
    """One default replay shared by the read-only tests below (it takes seconds)."""
    return _replay()


def test_default_scenario_alerts_on_genuine_only(replay: Replay) -> None:
    pipe, outcomes, sc = replay
    alerts = [a for o in outcomes for a in o.alerts]
    res = evaluate(sc, alerts, t0=T0, horizon_s=30.0, window_s=8.0)
    assert res["genuine"] == 1 and res["detected"] == 1, res
    assert res["false_alarms"] == 0 and res["decoy_alerts"] == 0
    assert res["time_to_detect_s"][0] < 5.0
    genuine = sc.genuine()[0]
    assert alerts[0].region == genuine.region
    assert len({a.report_id for a in alerts}) == 1  # escalation revises one report
    reports = [r for o in outcomes for r in o.reports]
    assert len({r.revision_id for r in reports}) == len(reports) >= len(alerts)
    assert [r.revision for r in reports] == list(range(1, len(reports) + 1))
    c = pipe.counters
    assert c.alerts == len(alerts) and c.reports == len(reports)
    assert c.dead_letters > 0 and c.duplicates > 0
    assert c.ticks == len(outcomes) >= 30


def test_market_move_is_watched_not_alerted(replay: Replay) -> None:
    _, outcomes, sc = replay
    market = next(e for e in sc.episodes if e.kind == "market_move")
    during = [o for o in outcomes if market.start_s + 2 <= o.time_s - T0 <= market.end_s]
    assert during and not any(o.alerts for o in during)


def test_replay_gives_identical_ids(replay: Replay) -> None:
    _, a, _ = replay
    _, b, _ = _replay()
    ids = lambda oc: [x.alert_id for o in oc for x in o.alerts]  # noqa: E731
    assert ids(a) == ids(b) and ids(a)
    rids = lambda oc: [r.response_id for o in oc for r in o.responses]  # noqa: E731
    assert rids(a) == rids(b)


def test_node_states_name_every_station_and_match_the_processor(replay: Replay) -> None:
    pipe, _, _ = replay
    states = pipe.node_states()
    assert list(states) == list(pipe.registry.ids())
    assert pipe.last_output is not None
    codes = pipe.last_output.node["state"].tolist()
    assert [NODE_STATES.index(v.value) for v in states.values()] == codes
    stations_only = Pipeline(load_settings(env={}, config_path=None), pipe.registry,
                             stations_only=True)
    assert stations_only.node_states() == {}  # the verdicts are the second stage's


def test_node_states_show_the_alerting_stations_anomalous() -> None:
    s = load_settings(env={}, config_path=None)
    sc = default_scenario(247, seed=7, horizon_s=30.0)
    world = SyntheticWorld(sc)
    sources = [SyntheticSource(world, i, T0, 7) for i in range(world.n)]
    pipe = Pipeline(s, StationRegistry(list(sc.fleet)))
    assert set(pipe.node_states().values()) == {NodeState.NORMAL}  # nothing seen yet
    for t in np.arange(0.5, 30.5, 0.5):
        pipe.ingest_raw([r for src in sources for r in src.draw(t - 0.5, t)], now_s=T0 + t)
        alerts = [a for o in pipe.advance(T0 + t) for a in o.alerts]
        if alerts:
            break
    assert alerts, "the default scenario's convergence did not alert"
    states = pipe.node_states()
    assert all(states[sid] == NodeState.ANOMALOUS for sid in alerts[0].stations)


def test_late_events_become_dead_letters_with_reason() -> None:
    s = load_settings(env={}, config_path=None)
    sc = default_scenario(10, seed=1, horizon_s=10)
    pipe = Pipeline(s, StationRegistry(list(sc.fleet)))
    rec = {"station_id": sc.fleet[0].station_id, "source_kind": sc.fleet[0].kind.value,
           "event_time_s": T0 + 1.2, "category": "x", "value": 1.0}
    assert pipe.ingest_raw([rec], now_s=T0 + 2) == []
    pipe.advance(T0 + 10)
    dls = pipe.ingest_raw([rec | {"value": 2.0}], now_s=T0 + 10)
    assert len(dls) == 1 and "after its tick closed" in dls[0].reason
    assert pipe.counters.late == 1 and pipe.counters.dead_letters == 1


def test_unknown_station_is_registered_not_rejected() -> None:
    s = load_settings(env={}, config_path=None)
    sc = default_scenario(10, seed=1, horizon_s=10)
    pipe = Pipeline(s, StationRegistry(list(sc.fleet)))
    rec = {"station_id": "brand-new", "source_kind": "sensor", "event_time_s": T0 + 0.5,
           "category": "x", "value": 1.0}
    assert pipe.ingest_raw([rec], now_s=T0 + 1) == []
    outs = pipe.advance(T0 + 5)
    assert len(pipe.registry) == 11 and outs and pipe.counters.events == 1


def test_stations_going_dark_count_as_evidence_but_never_as_a_voice() -> None:
    """A source that went dark adds evidence to its region, but says nothing about what is
    happening: a region where only outages line up (one station of every kind dark, a
    shared power or provider failure) does not alert; the same outages beside real
    activity make that activity's score higher."""
    s = load_settings(env={}, config_path=None)
    sc = default_scenario(60, seed=4, horizon_s=30)
    reg = StationRegistry(list(sc.fleet))
    pipe = Pipeline(s.replace(meter_model="rules"), reg)
    region = sc.fleet[0].region
    in_region = [st for st in sc.fleet if st.region == region]
    kinds_seen: set[str] = set()
    dark = []
    for st in in_region:  # one station of each kind, two OSINT feeds, goes dark
        if st.kind.value not in kinds_seen or (st.kind.value.startswith("osint") and
                                               sum(d.kind.value.startswith("osint") for d in dark) < 2):
            kinds_seen.add(st.kind.value)
            dark.append(st)
    for st in dark:
        pipe.note_station_state(st.station_id, "backing_off")
    outs = []
    for t in range(1, 8):
        outs += pipe.advance(T0 + t)
    pipe.ingest_raw([{"station_id": sc.fleet[1].station_id, "source_kind": sc.fleet[1].kind.value,
                      "event_time_s": T0 + 0.5, "category": "x", "value": 1.0}], now_s=T0 + 0.6)
    outs += pipe.advance(T0 + 12)
    assert not [a for o in outs for a in o.alerts]
    counted = [r for o in outs for r in o.readings if r.region == region and r.n_stations]
    assert counted and max(r.n_stations for r in counted) == len(dark)
    assert max(r.n_kinds for r in counted) == 0  # no source kind spoke
    for st in dark:
        pipe.note_station_state(st.station_id, "running")
    assert pipe.region is not None and pipe.region.dark == set()


def test_market_move_shows_as_uncorroborated_watch_notes(replay: Replay) -> None:
    _, outcomes, sc = replay
    market = next(e for e in sc.episodes if e.kind == "market_move")
    notes = [(o.time_s - T0, n) for o in outcomes for n in o.uncorroborated]
    assert notes, "the market-wide decoy should be visible as watch notes"
    assert all(market.start_s <= t <= market.end_s + 8 for t, _ in notes)
    assert len({n.region for _, n in notes}) >= 3  # a market-wide move: many regions
    assert all(30.0 <= n.score < 55.0 for _, n in notes)


def test_two_regions_converging_at_once_give_two_alerts_and_two_reports() -> None:
    from convergence.ground_stations.scenario_library import build

    s = load_settings(env={}, config_path=None)
    sc = build("two-regions", seed=1)
    world = SyntheticWorld(sc)
    sources = [SyntheticSource(world, i, T0, 1) for i in range(world.n)]
    pipe = Pipeline(s, StationRegistry(list(sc.fleet)))
    outcomes: list[TickOutcome] = []
    for t in np.arange(0.5, 240.5, 0.5):
        pipe.ingest_raw([r for src in sources for r in src.draw(t - 0.5, t)], now_s=T0 + t)
        outcomes += pipe.advance(T0 + t)
    alerts = [a for o in outcomes for a in o.alerts]
    assert {a.region for a in alerts} == {"mena", "eu-west"}
    assert len({a.report_id for a in alerts}) == 2
    # every level line names the region whose level changed
    for o in outcomes:
        for r in o.changed:
            assert r.region in ("mena", "eu-west") and r.level != r.prev_level
    falls = [r for o in outcomes for r in o.changed if r.level < r.prev_level]
    assert {r.region for r in falls} == {"mena", "eu-west"}
    closed = [r for o in outcomes for r in o.reports if r.status == "closed"]
    assert {r.region for r in closed} == {"mena", "eu-west"}
    for r in closed:
        assert r.outcome is not None and r.outcome.peak_score >= 55.0
        assert [t.what for t in r.timeline][-1] == "ended"

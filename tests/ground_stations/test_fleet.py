"""Fleet files: loading, validation, rendering round trips, splitting and the source factory."""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.ground_stations import fleet as fleet_mod
from convergence.ground_stations.agent import StationAgent
from convergence.ground_stations.fleet import (
    FleetError,
    SourceSpec,
    StationSpec,
    build_fleet,
    build_source,
    default_fleet_toml,
    default_specs,
    fleet_scenario,
    fleet_world,
    load_fleet,
    loads_fleet,
    part_of,
    render_fleet,
    split_fleet,
)
from convergence.ground_stations.scenario import default_fleet, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.schema import SourceKind

ONE = """
[[station]]
id = "s1"
source_kind = "sensor"
{extra}
[station.source]
type = "synthetic"
"""


def _station(**fields: Any) -> str:
    """One [[station]] table; ``source`` is the inner text of its source table."""
    source = fields.pop("source", 'type = "synthetic"')
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    return f"[[station]]\n{body}\n[station.source]\n{source}\n"


async def _noop_sink(station_id: str, records: list[dict[str, Any]]) -> None:
    return None


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "seed"), [(247, 7), (5, 0), (40, 123)])
def test_the_default_fleet_round_trips_through_toml(n: int, seed: int) -> None:
    text = default_fleet_toml(n, seed)
    spec = loads_fleet(text, origin="f.toml")
    assert [s.info for s in spec.stations] == default_fleet(n, seed)
    assert spec.seed == seed and len(spec.stations) == n
    assert all(s.interval_s == 0.5 and s.source.type == "synthetic" for s in spec.stations)
    again = render_fleet(spec.stations, seed=seed)
    assert loads_fleet(again).stations == spec.stations


@pytest.mark.parametrize(("n", "seed"), [(247, 7), (60, 3)])
def test_a_loaded_default_fleet_plays_the_default_scenario(n: int, seed: int) -> None:
    spec = loads_fleet(default_fleet_toml(n, seed))
    ours = fleet_scenario(spec.stations, seed, 600.0)
    theirs = default_scenario(n, seed, 600.0)
    assert ours is not None
    assert ours.fleet == theirs.fleet and ours.episodes == theirs.episodes


def test_rendering_keeps_awkward_strings_thresholds_and_source_options() -> None:
    spec = StationSpec(
        "odd.id:1", SourceKind.OSINT_NEWS,
        SourceSpec("json", {"url": "https://example.org/q?a=1&b=\"2\"",
                            "mapping": {"category": "=quake", "value": "properties.mag",
                                        "weird key": "a\\b"},
                            "timeout_s": 2.5, "headers": {"X-Key": "ünïcode \u0007 bell"}}),
        region="eu", group="g \"quoted\"", name="line\nbreak\tand tab", interval_s=3.0,
        thresholds={"surge": 4.0, "min-rate": 0.25}, index=1)
    text = render_fleet([spec], seed=None)
    (back,) = loads_fleet(text).stations
    assert back == spec


def test_network_feeds_default_to_polling_once_a_minute() -> None:
    text = (_station(id='"n"', source_kind='"osint_news"', source='type = "rss"\nurl = "https://x/feed"')
            + _station(id='"q"', source_kind='"sensor"', source='type = "json"\nurl = "https://x/q"')
            + _station(id='"f"', source_kind='"osint_news"', interval_s="5",
                       source='type = "rss"\nurl = "https://x/feed"')
            + _station(id='"s"', source_kind='"sensor"'))
    assert [s.interval_s for s in loads_fleet(text).stations] == [60.0, 60.0, 5.0, 0.5]


def test_a_fleet_file_on_disk_resolves_replay_paths_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    f = tmp_path / "fleet.toml"
    f.write_text(_station(id='"px"', source_kind='"market_price"',
                          source='type = "replay"\npath = "data/ticks.csv"\nspeed = "max"'))
    (st,) = load_fleet(f).stations
    assert st.source.options["path"] == str(tmp_path / "data" / "ticks.csv")
    assert st.source.options["speed"] == "max"


# -- validation -----------------------------------------------------------------------------


BAD_CASES = [
    (_station(id='"a"', source_kind='"radio"'), "station #1 (id 'a'): source_kind: 'radio' is not one of"),
    (_station(id='"a"', source_kind='"sensor"', interval_s="0"),
     "interval_s: must be a number of seconds > 0"),
    (_station(id='"a"', source_kind='"sensor"', interval_s='"fast"'), "got 'fast'"),
    (_station(id='"a"', source_kind='"sensor"', interval_s="-1.5"), "got -1.5"),
    (_station(id='"a"', source_kind='"sensor"', interval_s="nan"), "interval_s"),
    (_station(id='"a"', source_kind='"sensor"', intervl_s="1"), "intervl_s: is not a station field"),
    (_station(id='"a b"', source_kind='"sensor"'), "id: 'a b' must match"),
    (_station(source_kind='"sensor"'), "station #1: id: is required"),
    (_station(id='"a"'), "source_kind: is required"),
    (_station(id='"a"', source_kind='"sensor"', thresholds='{ surge = "high" }'),
     "thresholds.surge: must be a number, got 'high'"),
    (_station(id='"a"', source_kind='"sensor"', source='type = "pigeon"'),
     "source.type: 'pigeon' is not one of"),
    (_station(id='"a"', source_kind='"sensor"', source='rate_per_s = 1'), "source.type: is required"),
    (_station(id='"a"', source_kind='"sensor"', source='type = "synthetic"\nrate_per_s = -2'),
     "source.rate_per_s: must be a number >= 0"),
    (_station(id='"a"', source_kind='"sensor"', source='type = "synthetic"\nurl = "http://x"'),
     "source.url: is not an option of synthetic sources"),
    (_station(id='"a"', source_kind='"market_price"', source='type = "replay"'), "source.path: is required"),
    (_station(id='"a"', source_kind='"market_price"', source='type = "replay"\npath = "t.csv"\nspeed = 0'),
     "source.speed: must be data seconds per wall second"),
    (_station(id='"a"', source_kind='"osint_news"', source='type = "rss"\nurl = "ftp://x/feed"'),
     "source.url: 'ftp://x/feed' is not an http:// or https:// URL"),
    (_station(id='"a"', source_kind='"sensor"', source='type = "json"\nurl = "https://x"\nmapping = 3'),
     "source.mapping: must be a table"),
    ('[[station]]\nid = "a"\nsource_kind = "sensor"\n',
     "station #1 (id 'a'): source: a [station.source] table"),
    ("", "declares no stations"),
    ("seed = 1\n", "declares no stations"),
    ('stations = 3\n' + _station(id='"a"', source_kind='"sensor"'), "'stations' is not a fleet setting"),
    ('seed = "seven"\n' + _station(id='"a"', source_kind='"sensor"'), "seed must be an integer"),
    ("[[station]\nid = 1", "is not valid TOML"),
    ('[station]\nid = "a"\n', "found a single [station] table"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CASES)
def test_bad_fleets_name_the_file_the_station_and_the_field(text: str, expected: str) -> None:
    with pytest.raises(FleetError) as info:
        loads_fleet(text, origin="fleets/prod.toml")
    msg = str(info.value)
    assert msg.startswith("fleets/prod.toml: ") and expected in msg, msg


def test_duplicate_ids_name_both_stations() -> None:
    text = "".join(_station(id=f'"{sid}"', source_kind='"sensor"') for sid in ("a", "b", "a"))
    with pytest.raises(FleetError, match=r"station #3 \(id 'a'\): id: 'a' is already used by station #1"):
        loads_fleet(text)


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = (_station(id='"a"', source_kind='"sensor"', interval_s="0")
            + _station(id='"b"', source_kind='"nope"')
            + _station(id='"c"', source_kind='"sensor"', interval_s='"x"', source='type = "?"'))
    with pytest.raises(FleetError) as info:
        loads_fleet(text)
    err = info.value
    assert len(err.problems) == 4
    assert [p.split(":")[0] for p in err.problems] == [
        "station #1 (id 'a')", "station #2 (id 'b')", "station #3 (id 'c')", "station #3 (id 'c')"]


def test_a_huge_list_of_problems_is_cut_short() -> None:
    text = "".join(_station(id=f'"s{i}"', source_kind='"x"') for i in range(40))
    with pytest.raises(FleetError) as info:
        loads_fleet(text)
    msg = str(info.value)
    assert "40 problems" in msg and "... and 15 more" in msg


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"no such file .*stations init --out"):
        load_fleet(tmp_path / "absent.toml")


# -- splitting -------------------------------------------------------------------------


def test_split_is_a_partition_and_stable_when_the_fleet_changes() -> None:
    specs = default_specs(247, 7)
    parts = [split_fleet(specs, i, 4) for i in range(1, 5)]
    ids = [s.station_id for p in parts for s in p]
    assert sorted(ids) == sorted(s.station_id for s in specs) and len(set(ids)) == 247
    assert all(len(p) > 30 for p in parts)  # a hash spreads them, roughly evenly
    # adding stations never moves an existing one to another process
    bigger = default_specs(300, 7)
    old = {s.station_id: i for i, p in enumerate(parts, 1) for s in p}
    for i in range(1, 5):
        for s in split_fleet(bigger, i, 4):
            assert old.get(s.station_id, i) == i
    assert split_fleet(specs, 1, 1) == specs
    assert part_of("news-eu-west-000", 3) == part_of("news-eu-west-000", 3)


@pytest.mark.parametrize(("part", "parts"), [(0, 3), (4, 3), (1, 0), (-1, 2)])
def test_split_rejects_parts_out_of_range(part: int, parts: int) -> None:
    with pytest.raises(ValueError, match="need 1 <= part <= parts"):
        split_fleet(default_specs(10, 1), part, parts)


# -- building --------------------------------------------------------------------------


def test_build_fleet_gives_each_station_its_interval_thresholds_and_source() -> None:
    text = (_station(id='"a"', source_kind='"sensor"', interval_s="2.0", region='"eu"',
                     thresholds="{ surge = 4 }")
            + _station(id='"b"', source_kind='"osint_news"', source='type = "synthetic"\nrate_per_s = 50'))
    specs = loads_fleet(text).stations
    world = fleet_world(specs, seed=1)
    f = build_fleet(specs, _noop_sink, world=world, t0_s=1000.0, seed=1)
    a, b = f.agents
    assert isinstance(a, StationAgent) and a.interval_s == 2.0 and a.thresholds == {"surge": 4.0}
    assert b.interval_s == 0.5 and b.info.rate_per_s == 50.0
    assert a.info.rate_per_s == 1.0  # a synthetic station without a rate gets its kind's default
    assert isinstance(b.source, SyntheticSource)
    recs = asyncio.run(b.source.poll(1000.0 + 5.0))
    assert recs and all(r["station_id"] == "b" for r in recs)
    fast = build_fleet(specs, _noop_sink, world=world, t0_s=0.0, seed=1, interval_s=0.1)
    assert [x.interval_s for x in fast.agents] == [0.1, 0.1]


def test_a_network_source_polls_for_its_own_timeout_plus_a_margin() -> None:
    text = (_station(id='"slow"', source_kind='"osint_news"',
                     source='type = "rss"\nurl = "http://127.0.0.1:9/feed"\ntimeout_s = 30')
            + _station(id='"api"', source_kind='"sensor"',
                       source='type = "json"\nurl = "http://127.0.0.1:9/api"')
            + _station(id='"syn"', source_kind='"sensor"'))
    specs = loads_fleet(text).stations
    f = build_fleet(specs, _noop_sink, world=fleet_world(specs, seed=1), t0_s=0.0, seed=1)
    slow, api, syn = f.agents
    assert slow.poll_timeout_s == 35.0  # timeout_s = 30 is in force, not cut off at 10 s
    assert getattr(slow.source, "timeout_s", None) == 30
    assert api.poll_timeout_s == 15.0  # the sources' default timeout_s is 10 s
    assert syn.poll_timeout_s == 10.0  # the agent's default for sources without a timeout


def test_a_part_of_a_fleet_samples_the_same_world_as_the_whole() -> None:
    specs = default_specs(40, 2)
    world = fleet_world(specs, seed=2, horizon_s=120)
    part = split_fleet(specs, 2, 3)
    f = build_fleet(part, _noop_sink, world=world, t0_s=0.0, seed=2)
    for agent, spec in zip(f.agents, part, strict=True):
        assert isinstance(agent.source, SyntheticSource)
        assert world is not None and world.scenario.fleet[agent.source.station].station_id == spec.station_id


def test_a_synthetic_station_needs_the_world() -> None:
    (spec,) = loads_fleet(ONE.format(extra="")).stations
    with pytest.raises(FleetError, match=r"station #1 .*not in the synthetic world"):
        build_fleet([spec], _noop_sink, world=None, t0_s=0.0, seed=0)


def test_a_source_type_missing_from_the_build_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fleet_mod._LAZY_SOURCES, "rss", ("convergence.ground_stations.no_such_module",
                                                         "RssSource"))
    spec = loads_fleet(_station(id='"n"', source_kind='"osint_news"',
                                source='type = "rss"\nurl = "https://example.org/feed"')).stations
    with pytest.raises(FleetError, match="source type 'rss' is not available in this build"):
        build_fleet(spec, _noop_sink, world=None, t0_s=0.0, seed=0)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _have("convergence.ground_stations.replay"), reason="replay source not in this build")
def test_replay_stations_get_their_file_speed_and_the_shared_start(tmp_path: Path) -> None:
    from convergence.ground_stations.replay import FileReplaySource

    csv = tmp_path / "ticks.csv"
    csv.write_text("timestamp,symbol,price\n2024-05-01T12:00:00Z,ACME,101.5\n")
    text = _station(id='"px"', source_kind='"market_price"',
                    source='type = "replay"\npath = "ticks.csv"\nspeed = "max"\nbatch_rows = 7')
    (tmp_path / "f.toml").write_text(text)
    (spec,) = load_fleet(tmp_path / "f.toml").stations
    src = build_source(spec, None, 1_800_000_000.0, 0)
    assert isinstance(src, FileReplaySource)
    assert src.speed is None and src.batch_rows == 7 and src.start_s == 1_800_000_000.0
    bad = replace(spec, source=replace(spec.source, options={**spec.source.options, "sped": 2}))
    with pytest.raises(ValueError, match=r"source\.sped: not an option of replay sources"):
        build_source(bad, None, 0.0, 0)


@pytest.mark.skipif(not _have("convergence.ground_stations.rss"), reason="rss source not in this build")
def test_rss_stations_pass_their_options_through() -> None:
    from convergence.ground_stations.rss import RssSource

    (spec,) = loads_fleet(_station(id='"n"', source_kind='"osint_news"',
                                   source='type = "rss"\nurl = "https://example.org/feed"\n'
                                          'default_category = "wire"')).stations
    src = build_source(spec, None, 0.0, 0)
    assert isinstance(src, RssSource) and src.url == "https://example.org/feed"
    assert src.default_category == "wire"


@pytest.mark.skipif(not _have("convergence.ground_stations.http_json"),
                    reason="json source not in this build")
def test_json_stations_get_their_mapping() -> None:
    from convergence.ground_stations.http_json import HttpJsonSource

    (spec,) = loads_fleet(_station(
        id='"q"', source_kind='"sensor"',
        source='type = "json"\nurl = "https://example.org/q.json"\n'
               'mapping = { category = "=quake", value = "mag" }\nitems_path = "features"')).stations
    src = build_source(spec, None, 0.0, 0)
    assert isinstance(src, HttpJsonSource) and src.mapping == {"category": "=quake", "value": "mag"}
    broken = replace(spec, source=replace(spec.source, options={**spec.source.options, "timeout_s": -1}))
    with pytest.raises(ValueError, match=r"station #1 .*json source rejected its options"):
        build_source(broken, None, 0.0, 0)


# -- property tests (hypothesis): any fleet text is a fleet or one error listing problems ----

_SCALAR = (st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
           | st.text(st.characters(codec="utf-8", exclude_characters='"\\\n\r'), max_size=12))
_KEYS = ["id", "name", "source_kind", "region", "group", "interval_s", "bogus"]
_SOURCE_KEYS = ["type", "rate_per_s", "path", "speed", "url", "fmt", "timeout_s"]


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, repr(v))
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


@st.composite
def _fleet_text(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"seed = {_toml(draw(_SCALAR))}")
    for _ in range(draw(st.integers(0, 3))):
        fields = draw(st.dictionaries(st.sampled_from(_KEYS), _SCALAR, max_size=6))
        if draw(st.booleans()):
            fields.setdefault("id", draw(st.sampled_from(["a", "b", "s-1"])))
            fields.setdefault("source_kind", draw(st.sampled_from(["sensor", "osint_news", "x"])))
        source = draw(st.dictionaries(st.sampled_from(_SOURCE_KEYS), _SCALAR, max_size=3))
        if draw(st.booleans()):
            source.setdefault("type", draw(st.sampled_from(["synthetic", "replay", "rss", "x"])))
        parts.append("[[station]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in fields.items())
                     + "[station.source]\n"
                     + "".join(f"{k} = {_toml(v)}\n" for k, v in source.items()))
    return "\n".join(parts)


def _check_fleet_error(exc: FleetError) -> None:
    assert exc.problems and all(p.strip() for p in exc.problems)
    assert str(exc).startswith("fleet.toml:")


@given(_fleet_text())
def test_any_fleet_table_loads_or_lists_its_problems(text: str) -> None:
    try:
        spec = loads_fleet(text, origin="fleet.toml")
    except FleetError as exc:
        _check_fleet_error(exc)
        return
    # what loads renders and loads again to the same stations
    assert loads_fleet(render_fleet(spec.stations, seed=spec.seed)).stations == spec.stations


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_loads_or_lists_its_problems(text: str) -> None:
    try:
        loads_fleet(text, origin="fleet.toml")
    except FleetError as exc:
        _check_fleet_error(exc)

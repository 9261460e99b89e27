"""``convergence scenarios list|show``: the scenario library as a person and a script see it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.ground_stations.scenario_library import SCENARIOS, build

runner = CliRunner()


def test_list_json_has_all_41_with_their_side_and_fleet() -> None:
    r = runner.invoke(app, ["scenarios", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 41 == len(SCENARIOS)
    assert [x["name"] for x in rows] == list(SCENARIOS)
    for x in rows:
        assert x["genuine"] == SCENARIOS[x["name"]].genuine
        assert x["stations"] >= 16 and x["ticks"] >= 256 and x["description"]


def test_list_table_counts_both_sides() -> None:
    r = runner.invoke(app, ["scenarios", "list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    genuine = sum(s.genuine for s in SCENARIOS.values())
    assert f"41 scenarios ({genuine} genuine, {41 - genuine} decoys)" in r.stdout
    assert "slow-cascade" in r.stdout and "stay quiet" in r.stdout and "alert" in r.stdout


def test_show_tells_the_story_and_the_ground_truth() -> None:
    r = runner.invoke(app, ["scenarios", "show", "two-regions", "--seed", "3"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    sc = build("two-regions", seed=3)
    assert "two-regions (genuine: must alert)" in r.stdout
    assert r.stdout.count("truth: a convergence in") == len(sc.truths()) == 2
    r = runner.invoke(app, ["scenarios", "show", "pure-noise"])
    assert "decoy: must stay quiet" in r.stdout and "any alert is a false alarm" in r.stdout


def test_show_json_lists_the_seeded_fleet() -> None:
    r = runner.invoke(app, ["scenarios", "show", "lone-surge", "--seed", "5", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    sc = build("lone-surge", seed=5)
    assert d["seed"] == 5 and d["genuine"] is False
    assert [s["station_id"] for s in d["fleet"]] == [s.station_id for s in sc.fleet]


def test_an_unknown_name_is_one_error_line_with_a_suggestion() -> None:
    r = runner.invoke(app, ["scenarios", "show", "cascade"])
    assert r.exit_code == 2
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "no scenario named 'cascade'" in errors[0]
    assert "did you mean slow-cascade" in errors[0] and "scenarios list" in errors[0]
    assert "Traceback" not in r.output

"""``convergence lasvegas run``: perturbed runs whose verdict must always be right; a
wrong run prints its seed and the exact command that reproduces it."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.ground_stations.scenario import Episode, Scenario
from convergence.simulation import lasvegas

runner = CliRunner()
PERTURB = lasvegas.perturb


def test_json_run_every_scenario_right() -> None:
    r = runner.invoke(app, ["lasvegas", "run", "--runs-per-scenario", "3", "--scenarios",
                            "osint-led,lone-surge", "--seed", "4", "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert (d["seed"], d["runs_per_scenario"], d["scenarios"], d["passed"]) == (4, 3, 2, 2)
    assert [(x["scenario"], x["right"], x["passed"]) for x in d["per_scenario"]] == [
        ("osint-led", 3, True), ("lone-surge", 3, True)]


def _blinded(name: str, seed: int, run: int) -> tuple[Scenario, lasvegas.Perturbation]:
    """Beyond the bounds on purpose: run 1's convergence region is dark the whole run."""
    sc, p = PERTURB(name, seed, run)
    if run != 1 or not sc.truths():
        return sc, p
    region = sc.truths()[0].region
    dark = tuple(i for i, s in enumerate(sc.fleet) if s.region == region)
    return replace(sc, episodes=[*sc.episodes, Episode("outage", 0.0, sc.duration_s, dark, 0.0,
                                                       None, region)]), p


def test_a_wrong_run_prints_its_seed_and_the_command_that_reproduces_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lasvegas, "perturb", _blinded)
    args = ["lasvegas", "run", "--runs-per-scenario", "3", "--scenarios", "simultaneous",
            "--seed", "21", "--workers", "1"]
    r = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == 1, r.output
    assert "FAIL simultaneous" in r.stdout and "2/3 right" in r.stdout
    (line,) = [x for x in r.stdout.splitlines() if "wrong: run" in x]
    assert "run 1 of seed 21" in line and "detected 0/1" in line
    command = line.split("reproduce: ", 1)[1].strip()
    assert command == ("convergence lasvegas run --scenarios simultaneous --seed 21 "
                       "--runs-per-scenario 3 --show-run 1")
    assert "0/1 scenarios right in every run" in r.stdout
    # the printed command, run as printed, shows that very run again
    again = runner.invoke(app, [*shlex.split(command)[1:], "--workers", "1"],
                          env={"COLUMNS": "400"})
    assert again.exit_code == 1
    assert "simultaneous run 1: WRONG: detected 0/1" in again.stdout
    assert "perturbed: " in again.stdout
    js = runner.invoke(app, [*args, "--json"])
    assert js.exit_code == 1
    fail = json.loads(js.stdout.strip().splitlines()[-1])["per_scenario"][0]["failures"][0]
    assert (fail["run"], fail["seed"], fail["reproduce"]) == (1, 21, command)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scenarios", "nope"], "unknown scenario(s) nope"),
        (["--runs-per-scenario", "2", "--scenarios", "pure-noise", "--workers", "1",
          "--show-run", "5"], "--show-run 5: pure-noise has runs 0-1"),
    ],
)
def test_user_mistakes_are_one_error_line(args: list[str], words: str) -> None:
    r = runner.invoke(app, ["lasvegas", "run", *args])
    assert r.exit_code == 2, r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert "Traceback" not in r.output

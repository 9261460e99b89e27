"""``convergence montecarlo run|list|show``: a small campaign end to end, its plots and
its summary stored in (and read back from) a real embedded SurrealDB file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app

runner = CliRunner()
FEW = "simultaneous,two-regions,lone-surge,pure-noise"


def _last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


def _without_nulls(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _without_nulls(v) for k, v in x.items() if v is not None}
    return x


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    d = tmp_path_factory.mktemp("mc")
    db = f"surrealkv://{d / 'db'}"
    r = runner.invoke(app, ["montecarlo", "run", "--runs", "4", "--scenarios", FEW, "--seed", "3",
                            "--workers", "1", "--chunk", "4", "--out", str(d / "out"), "--db", db,
                            "--json"])
    assert r.exit_code == 0, r.output
    return _last_json(r.stdout), d / "out", db


def test_json_last_line_has_the_documented_keys(campaign: tuple[dict[str, Any], Path, str]) -> None:
    s, _, _ = campaign
    for key in ("tests", "seconds", "tests_per_s", "detection_rate", "false_alarm_rate",
                "median_time_to_detect_ticks", "per_scenario", "best_params"):
        assert key in s, key
    assert s["tests"] == 16 and s["seed"] == 3 and s["campaign_id"] == "mc-3-4x4"
    assert list(s["per_scenario"]) == FEW.split(",")
    assert s["detection_rate"] == 1.0 and s["false_alarm_rate"] == 0.0
    assert s["tests_per_s"] > 0 and s["median_time_to_detect_ticks"] is not None


def test_out_writes_the_summary_calibration_and_three_pngs(
        campaign: tuple[dict[str, Any], Path, str]) -> None:
    s, out, _ = campaign
    names = sorted(p.name for p in out.iterdir())
    assert names == ["calibration.json", "detection_and_false_alarms.png", "summary.json",
                     "time_to_detect.png", "tradeoff.png"]
    assert sorted(Path(f).name for f in s["files"]) == names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["per_scenario"] == s["per_scenario"]
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["n_runs"] == 16 and "seed 3" in cal["campaign"]


def test_the_stored_summary_reads_back_with_list_and_show(
        campaign: tuple[dict[str, Any], Path, str]) -> None:
    s, _, db = campaign
    assert s["stored"] == f"campaign:mc-3-4x4 in {db}"
    r = runner.invoke(app, ["montecarlo", "list", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["campaign_id"] == "mc-3-4x4" and row["tests"] == 16
    assert row["detection_rate"] == s["detection_rate"]
    r = runner.invoke(app, ["montecarlo", "show", "mc-3-4x4", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["best_params"] == s["best_params"] and doc["tests"] == s["tests"]
    # SurrealDB keeps no null fields (a decoy has no detection rate); the rest reads back
    assert doc["per_scenario"] == _without_nulls(s["per_scenario"])
    r = runner.invoke(app, ["montecarlo", "show", "mc-3-4x4", "--db", db])
    assert r.exit_code == 0, r.output
    for name in FEW.split(","):
        assert name in r.stdout
    assert "detection 100.0%" in r.stdout and "false alarms in 0.00%" in r.stdout
    r = runner.invoke(app, ["montecarlo", "list", "--db", db])
    assert "mc-3-4x4: 16 runs, detection 100.0%" in r.stdout


def test_a_table_for_a_person_and_a_decoys_only_campaign(tmp_path: Path) -> None:
    r = runner.invoke(app, ["montecarlo", "run", "--runs", "2", "--scenarios", "pure-noise",
                            "--seed", "1", "--workers", "1", "--no-store",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "pure-noise" in r.stdout and "no genuine convergence in these scenarios" in r.stdout
    assert r.stdout.count("wrote ") == 5 and "stored" not in r.stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["run", "--runs", "2", "--scenarios", "no-such-thing"], 2,
         "unknown scenario(s) no-such-thing; `convergence scenarios list` shows them all"),
        (["run", "--runs", "2", "--kafka", "localhost:9092"], 2,
         "--kafka only applies with --cluster"),
        (["show", " "], 2, "give a campaign id"),
        (["list", "--db", "postgres://x"], 2, "surrealkv://PATH, mem://, or ws://HOST:PORT"),
    ],
)
def test_user_mistakes_are_one_error_line(args: list[str], code: int, words: str) -> None:
    r = runner.invoke(app, ["montecarlo", *args])
    assert r.exit_code == code, r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


def test_missing_database_and_campaign_are_clear_errors(tmp_path: Path) -> None:
    missing = f"surrealkv://{tmp_path / 'nothing-here'}"
    r = runner.invoke(app, ["montecarlo", "list", "--db", missing])
    assert r.exit_code == 1 and r.stderr.startswith("error:"), r.output
    assert not (tmp_path / "nothing-here").exists()
    db = f"surrealkv://{tmp_path / 'db'}"
    r = runner.invoke(app, ["montecarlo", "run", "--runs", "1", "--scenarios", "pure-noise",
                            "--workers", "1", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["montecarlo", "show", "mc-nope", "--db", db])
    assert r.exit_code == 1
    assert "error: no campaign 'mc-nope'" in r.stderr and "montecarlo list" in r.stderr


def test_out_that_is_a_file_is_an_error_saying_nothing_was_written(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    r = runner.invoke(app, ["montecarlo", "run", "--runs", "1", "--scenarios", "pure-noise",
                            "--workers", "1", "--no-store", "--out", str(f)])
    assert r.exit_code == 1
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"cannot write into {f}" in errors[0], r.stderr

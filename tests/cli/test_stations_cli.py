"""``convergence stations ...`` without a broker: parsing, fleet files, clear errors, exit codes.

Every command here either never reaches Kafka or has its Kafka call replaced; the
bootstrap points at a closed port so a command that touches Kafka by mistake fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from convergence.cli import stations as stations_cli
from convergence.cli.stations import app, parse_params
from convergence.control import Action, ControlCommand, Target
from convergence.ground_stations import fleet as fleet_mod

ENV = {"CONVERGENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "CONVERGENCE_TOPIC_PREFIX": "clitest"}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def assert_clean_failure(r: Result, code: int, *needles: str) -> None:
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code == code, out
    assert "Traceback" not in out, out
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    flat = " ".join(out.replace("│", " ").split())  # rich boxes wrap long messages
    for n in needles:
        assert n in flat, out


# -- parsers ---------------------------------------------------------------------------


def test_parse_target_accepts_the_four_forms() -> None:
    assert Target.parse("station:news-eu-west-001") == Target("station", "news-eu-west-001")
    assert Target.parse("region:mena") == Target("region", "mena")
    assert Target.parse("source_kind:sensor") == Target("source_kind", "sensor")
    assert Target.parse("all") == Target("all", "*")


@pytest.mark.parametrize(("text", "needle"), [
    ("planet:x", "is not a target"), ("station:", "names no station"), ("region", "is not a target"),
    ("source_kind:radio", "'radio' is not a source kind"), ("", "is not a target"),
])
def test_parse_target_rejects_with_the_reason(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Target.parse(text)


def test_parse_params_per_action() -> None:
    assert parse_params(Action.SET_INTERVAL, ["interval_s=0.25"]) == {"interval_s": 0.25}
    assert parse_params(Action.BURST_MODE, []) == {}
    assert parse_params(Action.SET_THRESHOLDS, ["surge=4", "min_rate=0.5"]) == {"surge": 4.0,
                                                                               "min_rate": 0.5}
    assert parse_params(Action.QUARANTINE, []) == {}


@pytest.mark.parametrize(("action", "items", "needle"), [
    (Action.SET_INTERVAL, ["interval_s=fast"], "interval_s must be a number of seconds > 0"),
    (Action.SET_INTERVAL, ["interval_s=0"], "interval_s must be a number of seconds > 0"),
    (Action.SET_INTERVAL, [], "set_interval needs interval_s=NUMBER"),
    (Action.SET_INTERVAL, ["rate=2"], "set_interval takes interval_s"),
    (Action.SET_INTERVAL, ["interval_s"], "expected NAME=NUMBER"),
    (Action.BURST_MODE, ["interval_s=-1"], "interval_s must be a number of seconds > 0"),
    (Action.BURST_MODE, ["interval_s=0"], "interval_s must be a number of seconds > 0"),
    (Action.SET_THRESHOLDS, ["surge=high"], "surge must be a finite number"),
    (Action.SET_THRESHOLDS, ["surge=inf"], "surge must be a finite number"),
    (Action.SET_THRESHOLDS, [], "needs at least one"),
    (Action.QUARANTINE, ["interval_s=1"], "quarantine takes no parameters"),
])
def test_parse_params_rejects_with_the_reason(action: Action, items: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_params(action, items)


@pytest.mark.parametrize(("text", "needle"), [("x", "expected PART/PARTS"), ("1/0", "expected PART/PARTS"),
                                              ("0/3", "between 1 and 3"), ("4/3", "between 1 and 3"),
                                              ("a/b", "expected PART/PARTS")])
def test_parse_part_rejects_with_the_reason(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        fleet_mod.parse_part(text)


# -- init and list ---------------------------------------------------------------------------


def test_init_writes_a_fleet_that_list_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    r = invoke("init", "--out", str(out), "--stations", "30", "--seed", "4")
    assert r.exit_code == 0, r.output
    assert "wrote 30 stations" in r.stdout
    listed = invoke("list", "--fleet", str(out), "--json")
    assert listed.exit_code == 0, listed.output
    doc = orjson.loads(listed.stdout)
    assert len(doc["stations"]) == 30 and doc["states"] == {"unknown": 30} and doc["kafka"] is None
    assert doc["stations"][0]["source"].startswith("synthetic ")
    human = invoke("list", "--fleet", str(out))
    assert human.exit_code == 0 and "pass --kafka BOOTSTRAP for live states" in human.stdout
    assert doc["stations"][0]["station_id"] in human.stdout


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    out.write_text("mine")
    assert_clean_failure(invoke("init", "--out", str(out)), 1, "already exists", "--force")
    assert out.read_text() == "mine"
    assert invoke("init", "--out", str(out), "--force", "--stations", "5").exit_code == 0
    assert "[[station]]" in out.read_text()


def test_init_to_stdout_is_the_default_fleet() -> None:
    r = invoke("init", "--out", "-", "--stations", "8", "--seed", "2")
    assert r.exit_code == 0 and r.stdout == fleet_mod.default_fleet_toml(8, 2)


def test_list_without_a_fleet_is_the_default_fleet() -> None:
    r = invoke("list", "--json")
    assert r.exit_code == 0, r.output
    assert len(orjson.loads(r.stdout)["stations"]) == 247


def test_list_merges_live_status_and_shows_undeclared_stations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "fleet.toml"
    out.write_text(fleet_mod.default_fleet_toml(6, 1))
    first = fleet_mod.load_fleet(out).stations[0].station_id
    seen: dict[str, Any] = {}

    def fake_read_status(bootstrap: str, topic: str, **kw: Any) -> dict[str, dict[str, Any]]:
        seen.update(bootstrap=bootstrap, topic=topic)
        return {first: {"station_id": first, "state": "quarantined", "interval_s": 0.1, "polls": 9,
                        "sent": 4, "failures": 0, "age_s": 1.5},
                "stray-1": {"station_id": "stray-1", "state": "running", "kind": "sensor",
                            "interval_s": 1.0, "polls": 1, "sent": 0, "failures": 2, "age_s": 0.5}}

    monkeypatch.setattr(stations_cli, "read_status", fake_read_status)
    r = invoke("list", "--fleet", str(out), "--kafka", "broker:9092", "--json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert seen == {"bootstrap": "broker:9092", "topic": "clitest-station-status"}
    rows = {row["station_id"]: row for row in doc["stations"]}
    assert rows[first]["state"] == "quarantined" and rows[first]["interval_s"] == 0.1
    assert rows["stray-1"]["declared"] is False
    assert doc["states"] == {"quarantined": 1, "unknown": 5, "running": 1}
    human = invoke("list", "--fleet", str(out), "--kafka", "broker:9092")
    assert "stray-1 (undeclared)" in human.stdout


def test_list_with_kafka_and_no_fleet_shows_what_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stations_cli, "read_status", lambda *a, **kw: {
        "s1": {"station_id": "s1", "state": "backing_off", "kind": "osint_news", "source": "rss",
               "interval_s": 60.0, "polls": 3, "sent": 0, "failures": 3, "age_s": 2.0}})
    r = invoke("list", "--kafka", "broker:9092", "--json")
    assert r.exit_code == 0, r.output
    (row,) = orjson.loads(r.stdout)["stations"]
    assert row["station_id"] == "s1" and row["state"] == "backing_off" and row["declared"] is None
    assert row["source"] == "rss"


def test_list_with_an_unreachable_broker_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka.errors import KafkaTimeoutError

    def boom(*a: Any, **kw: Any) -> dict[str, Any]:
        raise KafkaTimeoutError("Unable to bootstrap from ['broker:9092']")

    monkeypatch.setattr(stations_cli, "read_status", boom)
    assert_clean_failure(invoke("list", "--kafka", "broker:9092"), 1,
                         "cannot reach Kafka at broker:9092", "KafkaTimeoutError")


# -- run: everything that must fail before Kafka is touched ------------------------------------


def _fleet_file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "fleet.toml"
    p.write_text(text)
    return str(p)


def test_run_with_a_missing_fleet_file(tmp_path: Path) -> None:
    assert_clean_failure(invoke("run", "--fleet", str(tmp_path / "nope.toml")), 2, "no such file")


def test_run_with_a_bad_fleet_file_names_station_and_field(tmp_path: Path) -> None:
    f = _fleet_file(tmp_path, '[[station]]\nid = "a"\nsource_kind = "sensor"\ninterval_s = "fast"\n'
                              '[station.source]\ntype = "synthetic"\n')
    assert_clean_failure(invoke("run", "--fleet", f), 2, "station #1 (id 'a'): interval_s")


def test_run_rejects_stations_with_a_fleet(tmp_path: Path) -> None:
    f = _fleet_file(tmp_path, fleet_mod.default_fleet_toml(5, 1))
    assert_clean_failure(invoke("run", "--fleet", f, "--stations", "10"), 2, "--stations sizes the default")


@pytest.mark.parametrize(("args", "needle"), [
    (["--part", "4/3"], "between 1 and 3"), (["--part", "half"], "expected PART/PARTS"),
    (["--only", "nope-*"], "matches none"), (["--part", "1/2", "--only", "zzz"], "of part 1/2"),
])
def test_run_rejects_an_empty_or_bad_selection(tmp_path: Path, args: list[str], needle: str) -> None:
    f = _fleet_file(tmp_path, fleet_mod.default_fleet_toml(12, 1))
    assert_clean_failure(invoke("run", "--fleet", f, *args), 2, needle)


def test_run_without_a_fleet_still_checks_only() -> None:
    assert_clean_failure(invoke("run", "--only", "nope-*"), 2, "matches none")


def test_run_fails_at_once_on_a_source_type_this_build_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fleet_mod._LAZY_SOURCES, "rss", ("convergence.ground_stations.gone", "RssSource"))
    f = _fleet_file(tmp_path, '[[station]]\nid = "n1"\nsource_kind = "osint_news"\n[station.source]\n'
                              'type = "rss"\nurl = "https://example.org/feed"\n')
    assert_clean_failure(invoke("run", "--fleet", f), 2, "source type 'rss' is not available in this build")


# -- command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["set_interval", "--target", "planet:x", "--param", "interval_s=1"], "'planet:x' is not a target"),
    (["set_interval", "--target", "station:a", "--param", "interval_s=fast"],
     "interval_s must be a number of seconds > 0"),
    (["set_interval", "--target", "station:a"], "set_interval needs interval_s=NUMBER"),
    (["quarantine", "--target", "all", "--param", "x=1"], "quarantine takes no parameters"),
    (["set_thresholds", "--target", "region:eu", "-p", "surge=lots"], "surge must be a finite number"),
    (["dance", "--target", "all"], "'dance' is not one of"),
    (["resume", "--target", "all", "--ttl", "0"], "--ttl"),
    (["resume"], "Missing option '--target'"),
])
def test_command_rejects_bad_input_with_exit_2(args: list[str], needle: str) -> None:
    assert_clean_failure(invoke("command", *args), 2, needle)


class FakeIssue:
    def __init__(self, acks: list[dict[str, Any]] | Exception) -> None:
        self.acks = acks
        self.calls: list[tuple[str, str, str, ControlCommand, float]] = []

    def __call__(self, bootstrap: str, control: str, acks_topic: str, cmd: ControlCommand, *,
                 wait_s: float = 0.0) -> list[dict[str, Any]]:
        self.calls.append((bootstrap, control, acks_topic, cmd, wait_s))
        if isinstance(self.acks, Exception):
            raise self.acks
        return [dict(a, command_id=cmd.command_id) for a in self.acks]


def test_command_sends_and_prints_acks(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIssue([{"station_id": "s1", "applied": True, "detail": "interval 0.1 s"}])
    monkeypatch.setattr(stations_cli, "issue_command", fake)
    r = invoke("command", "set_interval", "--target", "station:s1", "-p", "interval_s=0.1",
               "--wait-ack", "5", "--kafka", "b:9092", "--json")
    assert r.exit_code == 0, r.output
    ((bootstrap, control, acks_topic, cmd, wait_s),) = fake.calls
    assert (bootstrap, control, acks_topic, wait_s) == ("b:9092", "clitest-control", "clitest-acks", 5.0)
    assert cmd.action == Action.SET_INTERVAL and cmd.target == Target("station", "s1")
    assert cmd.params == {"interval_s": 0.1} and cmd.expires_at_s - cmd.issued_at_s == 300.0
    doc = orjson.loads(r.stdout)
    assert doc["applied"] == 1 and doc["acks"][0]["station_id"] == "s1"
    human = invoke("command", "set_interval", "--target", "station:s1", "-p", "interval_s=0.1",
                   "--wait-ack", "5")
    assert "s1 applied: interval 0.1 s" in human.stdout


def test_command_without_wait_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIssue([])
    monkeypatch.setattr(stations_cli, "issue_command", fake)
    r = invoke("command", "burst_mode", "--target", "region:mena", "--ttl", "30")
    assert r.exit_code == 0, r.output
    assert fake.calls[0][4] == 0.0 and "sent cmd-" in r.stdout


def test_command_with_no_ack_exits_1_and_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stations_cli, "issue_command", FakeIssue([]))
    r = invoke("command", "resume", "--target", "station:s9", "--wait-ack", "2")
    assert_clean_failure(r, 1, "no station acknowledged", "within 2 s", "topic prefix 'clitest'",
                         "station:s9 names a running station")


def test_command_refused_by_a_station_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stations_cli, "issue_command", FakeIssue(
        [{"station_id": "s1", "applied": False, "detail": "expired before it arrived"}]))
    r = invoke("command", "resume", "--target", "station:s1", "--wait-ack", "2")
    assert_clean_failure(r, 1, "1 of 1 station(s) refused", "expired before it arrived")


def test_command_reports_a_missing_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stations_cli, "issue_command", FakeIssue(
        stations_cli.CommandError("control topic 'clitest-control' does not exist on b:1; is ...")))
    r = invoke("command", "resume", "--target", "all")
    assert_clean_failure(r, 1, "control topic 'clitest-control' does not exist")
    assert r.stderr.count("error:") == 1, r.stderr  # said once, not re-wrapped as a Kafka error


# -- issue 11, item 19: init writes only what the fleet loader accepts, and no FILE.tmp ------


def test_init_validates_the_interval_as_the_fleet_loader_does(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    r = CliRunner().invoke(app, ["init", "--out", str(out), "--interval", "1e9"])
    assert_clean_failure(r, 2, "--interval 1e+09", "at most 86400", "nothing was written")
    assert not out.exists() and not list(tmp_path.iterdir())
    ok = CliRunner().invoke(app, ["init", "--out", str(out), "--interval", "86400"])
    assert ok.exit_code == 0, ok.output
    listed = CliRunner().invoke(app, ["list", "--fleet", str(out), "--json"])
    assert listed.exit_code == 0, listed.output


def test_a_failed_init_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the file should go: the final rename fails
    r = CliRunner().invoke(app, ["init", "--out", str(target), "--force"])
    assert_clean_failure(r, 1, f"cannot write {target}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

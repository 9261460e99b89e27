"""End to end: `convergence run` as a user runs it, then reading its reports back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence.cli.main", "run", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_run_20s_json_summary_is_consistent() -> None:
    p = _run("--duration", "20", "--db", "mem://", "--json", "--seed", "7")
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    s = json.loads(last)
    for key in ("events", "alerts", "reports", "dead_letters", "events_per_s"):
        assert key in s
    assert s["events"] > 5000 and s["stations"] == 247
    assert s["events_per_s"] == pytest.approx(s["events"] / s["duration_s"], rel=0.01)
    assert 19.5 <= s["duration_s"] < 30
    # one report per episode, revised at each level (and at its end): revisions >= alerts
    assert s["reports"] >= s["alerts"] == len(s["alert_list"]) >= 1
    assert s["dead_letters"] > 0 and s["duplicates"] > 0
    sc = s["scenario"]
    assert sc["genuine"] == 1 and sc["detected"] == 1
    assert sc["decoys"] == 2 and sc["decoy_alerts"] == 0 and sc["false_alarms"] == 0
    assert s["store"]["pending"] == 0 and s["store"]["failures"] == 0
    assert "CONVERGED" in p.stdout or "WARNING" in p.stdout  # the live alert line


def test_bad_db_url_is_a_clear_error() -> None:
    r = runner.invoke(app, ["run", "--duration", "1", "--db", "postgres://x"])
    assert r.exit_code == 2
    assert "use surrealkv://PATH, mem://, or ws://HOST:PORT" in r.stderr


def test_bad_station_count_rejected_by_typer() -> None:
    r = runner.invoke(app, ["run", "--stations", "0"])
    assert r.exit_code == 2


def test_config_show_names_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_STATIONS", "42")
    r = runner.invoke(app, ["config", "show", "--json"])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["stations"]["value"] == "42"
    assert rows["stations"]["source"] == "env CONVERGENCE_STATIONS"
    monkeypatch.setenv("CONVERGENCE_TICK_S", "fast")
    bad = runner.invoke(app, ["config", "show"])
    assert bad.exit_code == 2 and "CONVERGENCE_TICK_S" in bad.stderr


def test_version_and_help() -> None:
    assert runner.invoke(app, ["--version"]).stdout.startswith("convergence ")
    h = runner.invoke(app, ["--help"])
    assert h.exit_code == 0 and "run" in h.stdout and "reports" in h.stdout


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_flushes_reports_that_read_back(tmp_path: Path) -> None:
    import signal
    import time

    db = f"surrealkv://{tmp_path / 'db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergence.cli.main", "run", "--db", db, "--json", "--seed", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(16.0)  # past the default scenario's genuine convergence (6-13 s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["alerts"] >= 1 and summary["store"]["pending"] == 0
    assert 10 < summary["duration_s"] < 30
    # The reports it flushed to surrealkv read back through the reports commands.
    listed = runner.invoke(app, ["reports", "list", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    stored = {r["report_id"] for r in json.loads(listed.stdout)}
    wanted = {a["report_id"] for a in summary["alert_list"]}
    assert wanted and wanted <= stored
    shown = runner.invoke(app, ["reports", "show", sorted(wanted)[0], "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "stations" in shown.stdout and "share" in shown.stdout
    as_json = runner.invoke(app, ["reports", "show", sorted(wanted)[0], "--db", db, "--json"])
    assert as_json.exit_code == 0, as_json.output
    rep = json.loads(as_json.stdout)
    assert rep["summary"] and rep["contributions"] and rep["run_id"] == summary["run_id"]


def test_too_few_stations_from_the_environment_is_a_clear_error() -> None:
    p = _run("--duration", "2", "--db", "mem://", env={"CONVERGENCE_STATIONS": "3"})
    assert p.returncode == 2
    assert "stations = 3" in p.stderr
    assert "one station of each of the 5 source kinds" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_store_that_cannot_keep_up_ends_the_run_with_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import time

    from convergence.store.surreal import StoreError, SurrealStore
    from convergence.store.writer import BatchedWriter
    from convergence.streams import embedded

    async def down(self: SurrealStore, table: str, items: Any) -> None:
        raise StoreError("connection refused (test: the database is down)")

    class QuickClose(embedded.EmbeddedRuntime):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.close_timeout_s = 0.5

    monkeypatch.setattr(SurrealStore, "upsert_many", down)
    monkeypatch.setattr(embedded, "BatchedWriter",
                        functools.partial(BatchedWriter, batch_size=1, max_pending=2))
    monkeypatch.setattr(embedded, "EmbeddedRuntime", QuickClose)
    monkeypatch.setenv("CONVERGENCE_DATA_DIR", str(tmp_path))
    t0 = time.monotonic()
    r = runner.invoke(app, ["run", "--duration", "60", "--db", "mem://", "--stations", "40"])
    assert time.monotonic() - t0 < 30  # the run ends when its consumer dies, not at --duration
    assert r.exit_code == 1, r.output
    assert "error:" in r.stderr and "records waiting" in r.stderr and "was NOT queued" in r.stderr
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


# -- issue 11: what a printed alert promises, full disks, and no tracebacks ---------------


@pytest.mark.slow
def test_an_alert_printed_before_a_sigkill_is_in_the_database(tmp_path: Path) -> None:
    """Item 8: the alert line appears once the store has the alert; SIGKILL right after
    it (no flush, no close) must not lose it or its report."""
    import asyncio
    import signal
    import time

    from convergence.store.surreal import SurrealStore

    db = f"surrealkv://{tmp_path / 'db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergence.cli.main", "run", "--db", db, "--json", "--seed", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: list[dict[str, object]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"run ended early: {proc.stderr.read() if proc.stderr else ''}"
            doc = json.loads(line)  # with --json every stdout line is JSON
            if doc.get("type") == "alert":
                printed.append(doc)
                break
        assert printed, "no alert within 90 s"
        proc.send_signal(signal.SIGKILL)  # at once: nothing gets a chance to flush
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    alert = printed[0]
    assert alert["stored"] is True
    assert "CONVERGED" in str(alert["line"]) or "WARNING" in str(alert["line"])

    async def read() -> tuple[object, object]:
        async with SurrealStore(db, "convergence", "main") as store:
            return (await store.get("alert", str(alert["alert_id"])),
                    await store.get("report", str(alert["report_id"])))

    stored_alert, stored_report = asyncio.run(read())
    assert stored_alert is not None and stored_alert["score"] == alert["score"]
    assert stored_report is not None and alert["alert_id"] in stored_report["alert_ids"]


def _small_disk() -> None:
    """In the child: files stop growing at 40 kB, as on a full disk (EFBIG, not a signal)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))


# `convergence run` itself, except that closing gives up on a dead store after 3 s, not 30
_RUN_WITH_A_QUICK_CLOSE = """
import sys
from convergence.streams import embedded
real = embedded.EmbeddedRuntime.__init__
def init(self, *args, **kwargs):
    real(self, *args, **{**kwargs, "close_timeout_s": 3.0})
embedded.EmbeddedRuntime.__init__ = init
from convergence.cli.main import main
sys.argv = ["convergence", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_run_whose_records_were_not_written_exits_non_zero_and_says_so(tmp_path: Path) -> None:
    """Item 9: a full disk is not a success; with --json stdout stays JSON only."""
    db = f"surrealkv://{tmp_path / 'db'}"
    p = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_A_QUICK_CLOSE, "run", "--db", db, "--json",
         "--duration", "12", "--seed", "7"],
        capture_output=True, text=True, timeout=180, preexec_fn=_small_disk)
    assert p.returncode == 1, p.stderr
    lines = [json.loads(x) for x in p.stdout.strip().splitlines()]  # nothing but JSON lines
    summary = lines[-1]
    assert summary["store"]["unwritten"] > 0
    assert sum(summary["store"]["unwritten_by_table"].values()) == summary["store"]["unwritten"]
    for alert in lines[:-1]:
        assert alert["type"] == "alert"
        if not alert["stored"]:
            assert alert["store_error"]
    errors = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"NOT written to {db}" in errors[0]
    assert "file size limit" in errors[0] and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["run", "--seed", "-1"], {}, "'seed' = -1"),
        (["run", "--seed", str(2**40)], {}, "31-bit seeds"),
        (["run", "--db", "surrealkv://"], {}, "needs the path"),
        (["run", "--db", ""], {}, "--db is empty"),
        (["run", "--db", "mem://anything"], {}, "takes no path"),
        (["run", "--duration", "5", "--db", "surrealkv:///proc/db"], {},
         "cannot create its lock file"),
        (["run"], {"CONVERGENCE_METER_MODEL": "meter@5"}, "meter_model = meter@5"),
        (["run"], {"CONVERGENCE_REGIME_MODEL": "regime@7"}, "regime_model = regime@7"),
        (["run"], {"CONVERGENCE_TICK_S": "inf"}, "'tick_s' = inf"),
        (["run"], {"CONVERGENCE_TICK_S": "1e-9"}, "more memory than any machine has"),
        (["reports", "show", ""], {}, "the report id is empty"),
        (["stations", "init", "--out", "-", "--seed", "-1"], {}, "'seed' = -1"),
    ],
)
def test_user_mistakes_are_one_error_line_never_a_traceback(
        args: list[str], env: dict[str, str], words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = runner.invoke(app, args)
    assert r.exit_code in (1, 2), r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    if "MODEL" in "".join(env):
        assert "convergence models list" in errors[0]


def test_config_file_mistakes_name_the_file_and_key(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "convergence.toml"
    monkeypatch.setenv("CONVERGENCE_CONFIG", str(cfg))
    for line, words in (("seed = 1e400", "fix seed in"), ("seed = 1.5", "fix seed in"),
                        ("tick_s = inf", "'tick_s' = inf (from file")):
        cfg.write_text(line + "\n")
        r = runner.invoke(app, ["run", "--duration", "1", "--db", "mem://"])
        assert r.exit_code == 2 and words in r.stderr and str(cfg) in r.stderr, r.stderr
        assert "unset CONVERGENCE" not in r.stderr


def test_an_unreachable_http_database_is_one_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = runner.invoke(app, ["run", "--duration", "5", "--stations", "10", "--db",
                            f"http://127.0.0.1:{port}"])
    assert r.exit_code == 1
    assert "server is running" in r.stderr and "TypeError" not in r.stderr


def test_quiet_prints_no_banner_and_the_banner_names_the_meter() -> None:
    quiet = runner.invoke(app, ["run", "--duration", "1", "--stations", "10", "--db", "mem://",
                                "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "running for" not in quiet.stdout and "done in" in quiet.stdout
    loud = runner.invoke(app, ["run", "--duration", "1", "--stations", "10", "--db", "mem://"])
    assert "10 stations (the demo scenario), seed 7" in loud.stdout
    assert "meter: rule-based fusion" in loud.stdout
    assert " 1 stations" not in loud.stdout


def test_reports_list_of_a_missing_database_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "db"
    r = runner.invoke(app, ["reports", "list", "--db", f"surrealkv://{missing}"])
    assert r.exit_code == 1 and "no database at" in r.stderr and str(missing) in r.stderr
    assert "no reports yet" not in r.stdout
    assert not (tmp_path / "nonexistent").exists()


def test_the_banner_and_the_json_name_the_meter_in_force(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convergence.models.meter_model import train_meter
    from convergence.models.registry import ModelRegistry

    monkeypatch.setenv("CONVERGENCE_MODELS_DIR", str(tmp_path))
    trained = train_meter(ModelRegistry(tmp_path / "scratch"), runs=2, folds=2, seed=7,
                          num_rounds=10, scenarios="two-regions,topic-only,lone-surge,pure-noise")
    reg = ModelRegistry(tmp_path)
    weak = reg.save_text("meter", trained.booster.model_to_string(),
                         {**trained.record.metadata, "status": "candidate"})
    assert weak.ref == "meter@1"  # a candidate: auto keeps the rule, and says so
    args = ["run", "--duration", "1", "--stations", "10", "--db", "mem://"]
    assert "meter: rule-based fusion" in runner.invoke(app, args).stdout
    reg.save_text("meter", trained.booster.model_to_string(),
                  {**trained.record.metadata, "status": "default"})
    assert "meter: LightGBM fusion meter@2" in runner.invoke(app, args).stdout
    as_json = runner.invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout.strip().splitlines()[-1])["meter"] == "LightGBM fusion meter@2"
    monkeypatch.setenv("CONVERGENCE_METER_MODEL", "meter@1")
    assert "meter: LightGBM fusion meter@1" in runner.invoke(app, args).stdout


@pytest.mark.slow
def test_as_fast_as_possible_gives_the_same_events_alerts_and_report_ids_every_time() -> None:
    # Issue 11, item 18: on the wall clock the same --seed gave different scores from run
    # to run; on the simulated clock two runs are the same run.
    def once() -> dict[str, object]:
        p = _run("--seed", "7", "--as-fast-as-possible", "--duration", "20", "--db", "mem://",
                 "--json", "--quiet")
        assert p.returncode == 0, p.stderr[-2000:]
        lines = p.stdout.strip().splitlines()
        s = json.loads(lines[-1])
        assert all(isinstance(json.loads(ln), dict) for ln in lines)  # --json: JSON lines only
        return {k: s[k] for k in ("events", "dead_letters", "duplicates", "late", "ticks",
                                  "alerts", "reports", "report_ids", "alert_list")}

    first, second = once(), once()
    assert first == second
    assert first["alerts"] and first["report_ids"] and first["events"] > 10_000


def _check(*args: str) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    p = _run(*args, "--db", "mem://", "--json", "--seed", "7")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    return s["scenario"], [(a["region"], a["time_s"]) for a in s["alert_list"]]


@pytest.mark.parametrize(
    ("duration", "genuine", "regions"),
    [
        # the demo's convergence (mena, 6-13 s) has not begun: nothing to detect, no alert
        ("5", 0, []),
        # cut 4 s after its onset, before the judge's grace has passed: its alert in mena
        # detects it (it used to be neither counted nor detected)
        ("10", 1, ["mena"]),
    ],
)
def test_short_fast_runs_attribute_alerts_by_region_and_time(
        duration: str, genuine: int, regions: list[str]) -> None:
    sc, alerts = _check("--duration", duration, "--as-fast-as-possible")
    assert sorted({r for r, _ in alerts}) == regions
    assert (sc["genuine"], sc["detected"], sc["false_alarms"], sc["decoy_alerts"]) == (
        genuine, genuine, 0, 0), sc


def test_two_regions_cut_short_count_each_region_it_caught() -> None:
    # mena converges from 120 s, eu-west from 128 s; the run stops at 131 s, before the
    # judge's 5 s grace after eu-west's onset: every alert is genuine, in both regions (mena
    # rises through warning to converged, an alert at each rise)
    sc, alerts = _check("--scenario", "two-regions", "--duration", "131", "--as-fast-as-possible")
    assert sorted({r for r, _ in alerts}) == ["eu-west", "mena"]
    assert (sc["genuine"], sc["detected"], sc["false_alarms"]) == (2, 2, 0), sc
    # stopped before eu-west began: only mena's convergence is there to be judged
    sc, alerts = _check("--scenario", "two-regions", "--duration", "126", "--as-fast-as-possible")
    assert {r for r, _ in alerts} == {"mena"}
    assert (sc["genuine"], sc["detected"], sc["false_alarms"]) == (1, 1, 0), sc


def test_wall_clock_run_of_10s_calls_no_genuine_alert_a_false_alarm() -> None:
    sc, alerts = _check("--duration", "10")
    assert {r for r, _ in alerts} <= {"mena"}
    assert sc["false_alarms"] == 0 and sc["detected"] == sc["genuine"] == len(sc["time_to_detect_s"])

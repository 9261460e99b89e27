"""End to end: `convergence run` as a user runs it, then reading its reports back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    from typing import Any

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

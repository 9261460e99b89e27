"""`convergence cluster up` as a user runs it: real broker, real Faust worker, real fleet."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from convergence.ground_stations.scenario import default_scenario


def _cluster(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence.cli.main", "cluster", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


@pytest.mark.kafka
def test_cluster_up_alerts_on_the_genuine_convergence(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {"CONVERGENCE_TOPIC_PREFIX": f"up{tag}", "CONVERGENCE_FAUST_APP_ID": f"up{tag}",
           "CONVERGENCE_DATA_DIR": str(tmp_path / "data"), "CONVERGENCE_STATIONS": "247",
           "CONVERGENCE_SEED": "7"}
    p = _cluster("up", "--kafka", kafka_bootstrap, "--duration", "25", "--drain", "30",
                 "--db", f"surrealkv://{tmp_path / 'db'}", "--json", env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    lines = [json.loads(x) for x in p.stdout.strip().splitlines()]
    summary, alerts = lines[-1], lines[:-1]
    assert summary["worker_exit_codes"] == [0]
    assert summary["records_sent"] > 5000 and summary["failed"] == 0
    assert summary["acked"] == summary["sent"]
    # the default scenario's genuine convergence (6-13 s) alerts; the decoys do not
    (genuine,) = [e for e in default_scenario(247, 7, 60).genuine() if e.start_s < 25]
    assert summary["alerts"] == len(alerts) >= 1
    assert {r for a in alerts for r in a["regions"]} == {genuine.region}
    # the worker stored each alert's report in the database it was given
    listed = subprocess.run([sys.executable, "-m", "convergence.cli.main", "reports", "list",
                             "--db", f"surrealkv://{tmp_path / 'db'}", "--json"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert listed.returncode == 0, listed.stderr
    assert {a["report_id"] for a in alerts} <= {r["report_id"] for r in json.loads(listed.stdout)}


def test_cluster_up_without_a_broker_fails_clearly(tmp_path: Path) -> None:
    p = _cluster("up", "--kafka", "127.0.0.1:1", "--duration", "5", "--db", "mem://",
                 env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, timeout=120)
    assert p.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in p.stderr and "convergence kafka start" in p.stderr
    assert "Traceback" not in p.stderr


# -- commands that only manage topics never load the Faust worker -------------------------


@pytest.fixture
def topics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Faust worker module cannot be imported (it pulls in faust, SurrealDB and the
    detector chain), and creating topics fails with a known ClusterError."""
    from convergence.streams import topics

    def refuse(*args: Any, **kwargs: Any) -> list[str]:
        raise topics.ClusterError("topics refused (test)")

    monkeypatch.setitem(sys.modules, "convergence.streams.faust_app", None)
    monkeypatch.setattr(topics, "ensure_topics", refuse)


def test_alerts_tail_manages_topics_without_the_faust_worker(topics_only: None) -> None:
    from typer.testing import CliRunner

    from convergence.cli.main import app

    r = CliRunner().invoke(app, ["alerts", "tail", "--kafka", "127.0.0.1:1", "--timeout", "1"])
    assert r.exit_code == 1, r.output
    assert "error: topics refused (test)" in r.stderr and "Traceback" not in r.output


def test_cluster_up_manages_topics_without_the_faust_worker(topics_only: None, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from convergence.cli.main import app

    monkeypatch.setenv("CONVERGENCE_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(app, ["cluster", "up", "--kafka", "127.0.0.1:1", "--duration", "5",
                                 "--db", "mem://"])
    assert r.exit_code == 1, r.output
    assert "cluster stopped early: topics refused (test)" in r.stderr


def test_the_fleet_on_kafka_creates_its_topics_without_the_faust_worker(topics_only: None) -> None:
    from convergence.ground_stations.fleet import build_fleet, default_specs, fleet_world
    from convergence.ground_stations.kafka_fleet import run_stations
    from convergence.settings import load_settings
    from convergence.streams.topics import ClusterError

    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, config_path=None)
    specs = default_specs(10, 1)
    fleet = build_fleet(specs, None, world=fleet_world(specs, 1, 60.0), t0_s=0.0, seed=1)

    async def main() -> Any:
        return await run_stations(s, fleet, stop=asyncio.Event(), duration_s=1.0)

    with pytest.raises(ClusterError, match="topics refused"):
        asyncio.run(main())

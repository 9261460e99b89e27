"""`convergence cluster up` as a user runs it: real broker, real Faust worker, real fleet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from convergence.ground_stations.scenario import default_scenario


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def _cluster(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return _cli("cluster", *args, env=env, timeout=timeout)


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


# -- supervised: detach, status, a worker killed with SIGKILL, down -----------------------


def _status(env: dict[str, str]) -> dict[str, Any]:
    p = _cluster("status", "--json", env=env, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _wait_for(what: str, check: Any, timeout_s: float, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


@pytest.mark.kafka
def test_a_worker_killed_under_supervision_is_restarted_and_alerts_keep_coming(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """`up --detach` with 2 workers; `status` shows who owns the events partition and its
    metrics; SIGKILL that worker: the survivor takes the partition over (failover time is
    measured), the supervisor restarts the dead one, the scenario's second genuine
    convergence (45-52 s, after the kill) alerts; `down` stops everything, twice."""
    from convergence.settings import load_settings
    from convergence.streams.metrics import MetricsError, scrape, summarise
    from convergence.streams.supervisor import ProcessRef, read_state, read_worker_infos, state_path

    tag = uuid.uuid4().hex[:8]
    env = {"CONVERGENCE_TOPIC_PREFIX": f"sv{tag}", "CONVERGENCE_FAUST_APP_ID": f"sv{tag}",
           "CONVERGENCE_DATA_DIR": str(tmp_path / "data"), "CONVERGENCE_STATIONS": "247",
           "CONVERGENCE_SEED": "1", "CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "6",
           "CONVERGENCE_CONSUMER_HEARTBEAT_S": "2", "CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "CONVERGENCE_DB": f"surrealkv://{tmp_path / 'db'}"}
    s = load_settings(env=env, config_path=None)
    scenario = default_scenario(247, 1, 120)
    first, second = [e for e in scenario.genuine() if e.start_s < 60]
    assert (first.start_s, second.start_s) == (6.0, 45.0)
    p = _cluster("up", "--detach", "--workers", "2", env=env, timeout=200)
    try:
        assert p.returncode == 0, p.stderr[-3000:]
        assert "cluster running in the background" in p.stdout
        state = read_state(state_path(s))
        assert state is not None and state["phase"] == "running" and len(state["workers"]) == 2
        t0 = time.time()

        def owner_processing() -> dict[str, Any] | None:
            st = _status(env)
            busy = [w for w in st["workers"] if w["owns"].get("events") == [0]
                    and (w["metrics"] or {}).get("events_in", 0) > 0
                    and sum((w["metrics"] or {}).get("ticks_closed", {}).values()) > 0]
            group = st["groups"].get(s.faust_app_id) or {}
            settled = (group.get("state") == "Stable" and len(group.get("members", [])) == 2
                       and (st["stations"] or {}).get("reporting") == 247)
            return st if busy and settled else None

        # a worker joining late under load rebalances the group once more: wait it out
        st = _wait_for("a settled group with one worker processing events", owner_processing, 90.0)
        assert [w["alive"] for w in st["workers"]] == [True, True]
        assert st["stations"]["by_state"] == {"running": 247}
        assert st["topics"]["events"]["messages_end"] > 0
        (owner,) = [w for w in st["workers"] if w["owns"].get("events") == [0]]
        (survivor,) = [w for w in st["workers"] if w is not owner]
        assert "events" not in survivor["owns"]  # a hot standby until the failover
        # the first genuine convergence alerts before the kill
        first_alerts = _cli("alerts", "subscribe", "--from-beginning", "--max", "1", "--json",
                                "--timeout", "40", env=env, timeout=60)
        assert first_alerts.returncode == 0, first_alerts.stderr
        assert json.loads(first_alerts.stdout)["region"] == first.region

        def events_in() -> dict[int, int]:
            counts = {}
            for pid, info in read_worker_infos(s).items():
                if pid != owner["pid"] and info.get("metrics_url"):
                    try:
                        counts[pid] = summarise(scrape(info["metrics_url"]))["events_in"]
                    except MetricsError:
                        continue
            return counts

        before = events_in()
        killed_at = time.time()
        os.kill(owner["pid"], signal.SIGKILL)

        def taken_over() -> bool:
            return any(n > before.get(pid, 0) for pid, n in events_in().items())

        _wait_for("another worker to process the events partition", taken_over, 60.0, every_s=0.2)
        failover_s = time.time() - killed_at
        print(f"\nfailover: {failover_s:.1f} s from SIGKILL until another worker processed "
              f"events (session timeout 6 s, heartbeat 2 s)")
        assert failover_s < 6.0 + 20.0

        def restarted() -> dict[str, Any] | None:
            st = read_state(state_path(s))
            ws = [w for w in (st or {}).get("workers", []) if w["name"] == owner["name"]]
            return ws[0] if ws and ws[0]["restarts"] == 1 and ProcessRef.from_dict(ws[0]).alive() else None

        back = _wait_for("the supervisor to restart the killed worker", restarted, 30.0)
        assert back["pid"] != owner["pid"]
        log = (tmp_path / "data" / "cluster" / "supervisor.log").read_text()
        assert f"{owner['name']} (pid {owner['pid']}) was killed by signal 9 (SIGKILL)" in log
        assert f"{owner['name']} restarted as pid {back['pid']}" in log

        # the cluster keeps producing alerts: the second convergence comes after the kill
        wait = max(t0 + second.end_s + 40.0 - time.time(), 10.0)
        later = _cli("alerts", "subscribe", "--from-beginning", "--region", second.region,
                         "--max", "1", "--json", "--timeout", f"{wait:.0f}", env=env, timeout=wait + 30)
        assert later.returncode == 0, later.stderr
        alert = json.loads(later.stdout)
        assert alert["time_s"] > killed_at and alert["level"] in ("warning", "converged")

        st = _status(env)
        assert [w["alive"] for w in st["workers"] if w["name"] in ("worker 0", "worker 1")] == [True, True]
        assert second.region in {a["region"] for a in st["alerts"]}
        assert sum((w["metrics"] or {}).get("alerts", 0) for w in st["workers"]) >= 1
    finally:
        down = _cluster("down", env=env, timeout=200)
    assert down.returncode == 0, down.stderr
    assert "cluster stopped" in down.stdout
    recorded = [state["supervisor"], *state["workers"], state["stations"]]
    assert not any(ProcessRef.from_dict(r).alive() for r in recorded)
    assert read_state(state_path(s)) is None
    again = _cluster("down", env=env, timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_down_with_nothing_running_is_a_no_op(tmp_path: Path) -> None:
    p = _cluster("down", env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, timeout=60)
    assert p.returncode == 0 and "no cluster is running" in p.stdout and p.stderr == ""


def test_status_without_a_broker_says_so_and_exits_1(tmp_path: Path) -> None:
    started = time.monotonic()
    p = _cluster("status", "--kafka", "127.0.0.1:1", "--timeout", "1",
                 env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, timeout=60)
    assert p.returncode == 1
    assert "broker    127.0.0.1:1 UNREACHABLE" in p.stdout
    assert p.stderr.startswith("error: cannot reach Kafka at 127.0.0.1:1") and "Traceback" not in p.stderr
    assert time.monotonic() - started < 15.0


def test_up_refuses_a_fleet_file_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text("[[station]]\nid = 3\n")
    p = _cluster("up", "--detach", "--fleet", str(bad), "--kafka", "127.0.0.1:1",
                 env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error:") and str(bad) in p.stderr
    assert not (tmp_path / "cluster" / "state.json").exists()


def test_up_detach_without_a_broker_says_why_in_one_line(tmp_path: Path) -> None:
    p = _cluster("up", "--detach", "--kafka", "127.0.0.1:1", "--db", "mem://",
                 env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("error: the cluster did not start: cannot reach Kafka at 127.0.0.1:1")
    assert len(p.stderr.strip().splitlines()) == 1 and "supervisor.log" in p.stderr
    log = (tmp_path / "cluster" / "supervisor.log").read_text()
    assert "kafka.net" not in log  # kafka-python's retry lines stay out of the log too
    assert not (tmp_path / "cluster" / "state.json").exists()

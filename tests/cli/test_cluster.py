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
def test_the_worker_owning_a_converging_region_killed_mid_episode_loses_and_repeats_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """`up --detach` with 2 workers: both run both stages for their share of the events
    and node-evidence partitions. SIGKILL the worker that owns the second genuine
    convergence's region right after its first alert: the region moves to another worker
    with its checkpointed state (failover time is measured), the supervisor restarts the
    dead one, and - reconciled against ground truth - every genuine convergence alerted
    (0 lost), no episode alerted a level twice under another id (0 duplicated; a message
    re-sent with the same id is counted, as subscribers drop it), no decoy alerted, and
    each report is stored once. `down` stops everything, twice."""
    from convergence.records import Alert
    from convergence.settings import load_settings
    from convergence.streams.kafka_client import read_topic
    from convergence.streams.metrics import MetricsError, scrape, summarise
    from convergence.streams.supervisor import ProcessRef, read_state, read_worker_infos, state_path
    from convergence.streams.topics import region_partition

    tag = uuid.uuid4().hex[:8]
    db = tmp_path / "db"
    env = {"CONVERGENCE_TOPIC_PREFIX": f"sv{tag}", "CONVERGENCE_FAUST_APP_ID": f"sv{tag}",
           "CONVERGENCE_DATA_DIR": str(tmp_path / "data"), "CONVERGENCE_STATIONS": "247",
           "CONVERGENCE_SEED": "1", "CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "6",
           "CONVERGENCE_CONSUMER_HEARTBEAT_S": "2", "CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "CONVERGENCE_DB": f"surrealkv://{db}"}
    s = load_settings(env=env, config_path=None)
    scenario = default_scenario(247, 1, 120)
    genuine = [e for e in scenario.genuine() if e.start_s < 60]
    first, second = genuine
    assert (first.start_s, second.start_s) == (6.0, 45.0) and first.region != second.region
    q = region_partition(second.region, s.partitions)
    p = _cluster("up", "--detach", "--workers", "2", env=env, timeout=200)
    try:
        assert p.returncode == 0, p.stderr[-3000:]
        assert "cluster running in the background" in p.stdout
        state = read_state(state_path(s))
        assert state is not None and state["phase"] == "running" and len(state["workers"]) == 2
        t0 = float(state["stations_t0_s"])

        def settled() -> dict[str, Any] | None:
            st = _status(env)
            group = st["groups"].get(s.faust_app_id) or {}
            ok = (group.get("state") == "Stable" and len(group.get("members", [])) == 2
                  and (st["stations"] or {}).get("reporting") == 247
                  and all(w["owns"].get("events") and (w["metrics"] or {}).get("events_in", 0) > 0
                          for w in st["workers"]))
            return st if ok else None

        # scale-out: each worker processes a share of the events partitions
        st = _wait_for("a settled group with both workers processing events", settled, 90.0)
        assert [w["alive"] for w in st["workers"]] == [True, True]
        assert sorted(p for w in st["workers"] for p in w["owns"]["events"]) == list(range(s.partitions))
        (owner,) = [w for w in st["workers"] if q in w["owns"].get("node-evidence", [])]
        assert owner["name"] in ("worker 0", "worker 1")

        # the first alert of the second convergence: the episode is under way
        hit = _cli("alerts", "subscribe", "--from-beginning", "--region", second.region, "--max", "1",
                   "--json", "--timeout", "90", env=env, timeout=120)
        assert hit.returncode == 0, hit.stderr
        assert json.loads(hit.stdout)["region"] == second.region

        def region_ticks() -> dict[int, tuple[bool, int]]:
            out = {}
            for pid, info in read_worker_infos(s).items():
                if pid != owner["pid"] and info.get("metrics_url"):
                    try:
                        m = summarise(scrape(info["metrics_url"]))
                    except MetricsError:
                        continue
                    out[pid] = m["ticks_closed"].get("region", 0)
            return out

        before = region_ticks()
        killed_at = time.time()
        os.kill(owner["pid"], signal.SIGKILL)

        def taken_over() -> bool:
            st = _status(env)
            holders = [w["pid"] for w in st["workers"] if w["alive"] and w["pid"] != owner["pid"]
                       and q in w["owns"].get("node-evidence", [])]
            now = region_ticks()
            return any(now.get(pid, 0) > before.get(pid, 0) for pid in holders)

        _wait_for(f"another worker to run region {second.region}", taken_over, 60.0, every_s=0.3)
        failover_s = time.time() - killed_at
        print(f"\nfailover: {failover_s:.1f} s from SIGKILL of the worker owning {second.region} "
              f"until another worker closed its ticks (session timeout 6 s, heartbeat 2 s)")
        assert failover_s < 6.0 + 24.0

        def restarted() -> dict[str, Any] | None:
            st = read_state(state_path(s))
            ws = [w for w in (st or {}).get("workers", []) if w["name"] == owner["name"]]
            return ws[0] if ws and ws[0]["restarts"] == 1 and ProcessRef.from_dict(ws[0]).alive() else None

        back = _wait_for("the supervisor to restart the killed worker", restarted, 30.0)
        assert back["pid"] != owner["pid"]
        log = (tmp_path / "data" / "cluster" / "supervisor.log").read_text()
        assert f"{owner['name']} (pid {owner['pid']}) was killed by signal 9 (SIGKILL)" in log
        assert f"{owner['name']} restarted as pid {back['pid']}" in log

        # let the episode play out after the failover, and a quiet minute follow it
        time.sleep(max(0.0, killed_at + (second.end_s - second.start_s) + 25.0 - time.time()))
        st = _status(env)
        assert all(w["alive"] for w in st["workers"])
    finally:
        ended = time.time()
        down = _cluster("down", env=env, timeout=200)
    assert down.returncode == 0, down.stderr
    assert "cluster stopped" in down.stdout
    recorded = [state["supervisor"], *state["workers"], state["stations"]]
    assert not any(ProcessRef.from_dict(r).alive() for r in recorded)
    assert read_state(state_path(s)) is None
    again = _cluster("down", env=env, timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout

    # what the new owner read again was recognised as re-read, never dead-lettered as late
    late = [d for d in (json.loads(r.value) for r in read_topic(kafka_bootstrap, s.topic("dead-letter")))
            if "arrived after its tick closed" in str(d.get("reason"))]
    assert late == [], late[:3]
    # reconcile the alerts topic against ground truth
    sent = [Alert.from_dict(json.loads(r.value)) for r in read_topic(kafka_bootstrap, s.topic("alerts"))]
    alerts = list({a.alert_id: a for a in sent}.values())
    resent = len(sent) - len(alerts)
    _reconcile(alerts, default_scenario(247, 1, 3600), t0, ended)
    print(f"alerts: {len(alerts)} ({resent} re-sent with the same id) over "
          f"{ended - t0:.0f} s of scenario, reconciled with ground truth: 0 lost, 0 duplicated")
    # each report once in the store
    listed = _cli("reports", "list", "--db", f"surrealkv://{db}", "--json", env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    reports = json.loads(listed.stdout)
    ids = [r["report_id"] for r in reports]
    assert len(ids) == len(set(ids))
    assert {a.report_id for a in alerts} <= set(ids)


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


def _reconcile(alerts: list[Any], scenario: Any, t0: float, ended_s: float) -> None:
    """Alerts against ground truth: each genuine episode that started at least 20 s
    before the run ended has exactly one report (0 lost, and no second report for it;
    one starting later may or may not have alerted yet), each level of a report alerted
    once (an alert re-sent with the same id is the same alert), and no report anywhere
    else (no decoy alerted)."""
    reports: dict[str, set[str]] = {}
    levels: dict[str, list[Any]] = {}
    for a in alerts:
        reports.setdefault(a.region, set()).add(a.report_id)
        levels.setdefault(a.report_id, []).append(a.level)
    run_s = ended_s - t0
    must: dict[str, int] = {}
    may: dict[str, int] = {}
    for e in scenario.genuine():
        if e.start_s <= run_s:
            may[e.region] = may.get(e.region, 0) + 1
            if e.start_s <= run_s - 20.0:
                must[e.region] = must.get(e.region, 0) + 1
    got = {r: len(ids) for r, ids in reports.items()}
    for region in set(got) | set(must):
        assert must.get(region, 0) <= got.get(region, 0) <= may.get(region, 0), \
            f"{region}: {got.get(region, 0)} alerted report(s) against {must.get(region, 0)} " \
            f"genuine episode(s) ({may.get(region, 0)} counting the last 20 s): {reports}"
    for rid, lv in levels.items():
        assert len(lv) == len(set(lv)), f"report {rid} alerted a level twice: {lv}"


# -- the broker stopped for 10 s under a running cluster ------------------------------------


@pytest.mark.kafka
def test_a_broker_stopped_for_10_s_mid_convergence_loses_nothing_and_the_convergence_alerts(
        tmp_path: Path) -> None:
    """A 2-worker cluster on its own broker; the broker is stopped for 10 s while the second
    genuine convergence happens, then started again on the same storage. Stations buffer
    and resend; workers reconnect and go on in event time: no event is dead-lettered as
    late (the idle watermark never advances while a partition cannot be reached), the
    convergence of the outage window alerts, no decoy does, and the stations lose nothing."""
    from convergence.records import Alert
    from convergence.settings import load_settings
    from convergence.streams import kafka_local
    from convergence.streams.kafka_client import read_topic
    from convergence.streams.supervisor import read_state, state_path

    tag = uuid.uuid4().hex[:8]
    with kafka_local.start(load_settings(), state_dir=tmp_path / "broker") as broker:
        env = {"CONVERGENCE_TOPIC_PREFIX": f"br{tag}", "CONVERGENCE_FAUST_APP_ID": f"br{tag}",
               "CONVERGENCE_DATA_DIR": str(tmp_path / "data"), "CONVERGENCE_STATIONS": "247",
               "CONVERGENCE_SEED": "1", "CONVERGENCE_KAFKA_BOOTSTRAP": broker.bootstrap,
               "CONVERGENCE_DB": "mem://"}
        s = load_settings(env=env, config_path=None)
        scenario = default_scenario(247, 1, 3600)
        p = _cluster("up", "--detach", "--workers", "2", env=env, timeout=200)
        marks: dict[str, float] = {}
        try:
            assert p.returncode == 0, p.stderr[-3000:]
            state = read_state(state_path(s))
            assert state is not None and state["stations_t0_s"] is not None
            t0 = float(state["stations_t0_s"])
            _wait_for("both workers processing events", lambda: all(
                (w["metrics"] or {}).get("events_in", 0) > 0 for w in _status(env)["workers"]), 90.0)
            # the next genuine convergence far enough ahead (a loaded machine starts slowly)
            second = next(e for e in scenario.genuine() if e.start_s >= time.time() - t0 + 8.0)
            # down from 3 s before the convergence until after it ends
            time.sleep(max(0.0, t0 + second.start_s - 3.0 - time.time()))
            marks["down"] = time.time()
            broker.halt()
            time.sleep(10.0)
            marks["restarting"] = time.time()
            broker.relaunch()
            marks["up"] = time.time()
            # the backlog of the outage drains, and the episode's ticks close
            def its_alert() -> bool:
                return any(a["region"] == second.region and a["time_s"] >= t0 + second.start_s
                           for a in (json.loads(r.value) for r in
                                     read_topic(broker.bootstrap, s.topic("alerts"))))

            _wait_for(f"the convergence in {second.region} to alert", its_alert, 150.0, every_s=2.0)
            marks["alert"] = time.time()
            time.sleep(10.0)  # the episode's later levels, if any
            st = _status(env)
            assert all(w["alive"] for w in st["workers"]), st["workers"]
        finally:
            marks["ended"] = time.time()
            down = _cluster("down", env=env, timeout=200)
            for log in (tmp_path / "data" / "cluster").glob("*.log"):
                lines = [x for x in log.read_text(errors="replace").splitlines()
                         if "convergence" in x or "partitions now" in x or "arrived after" in x]
                print(f"--- {log.name}", *lines[-15:], sep="\n")
        assert down.returncode == 0, down.stderr
        assert marks["restarting"] - marks["down"] >= 10.0
        assert marks["down"] < t0 + second.start_s < t0 + second.end_s < marks["up"] + 5.0

        late = [json.loads(r.value) for r in read_topic(broker.bootstrap, s.topic("dead-letter"))]
        late = [d for d in late if "arrived after its tick closed" in str(d.get("reason"))]
        alerts = {a.alert_id: a for a in (Alert.from_dict(json.loads(r.value)) for r in
                                          read_topic(broker.bootstrap, s.topic("alerts")))}
        stations = json.loads((tmp_path / "data" / "cluster" / "stations.log").read_text()
                              .strip().splitlines()[-1])
    print(f"\nbroker down {marks['up'] - marks['down']:.1f} s ({marks['up'] - marks['restarting']:.1f} s "
          f"of it starting again) over the convergence at "
          f"{second.start_s:g}-{second.end_s:g} s: {len(late)} events late, "
          f"{stations.get('sent')} records sent, {stations.get('failed')} failed; alerts "
          f"{sorted((a.region, a.level.value) for a in alerts.values())}, the convergence's first "
          f"{marks['alert'] - marks['up']:.1f} s after the broker was back")
    for a in sorted(alerts.values(), key=lambda a: a.time_s):
        print(f"  {a.time_s - t0:7.1f} s {a.region:8} {a.level.value:9} {a.report_id} {a.alert_id}")
    assert late == []
    assert stations["failed"] == 0 and stations["acked"] == stations["sent"]
    _reconcile(list(alerts.values()), scenario, t0, marks["ended"])


# -- a newcomer's own fleet on a 2-worker cluster ---------------------------------------------


@pytest.mark.kafka
def test_two_workers_watch_a_fleet_of_recorded_and_synthetic_stations(
        kafka_bootstrap: str, tmp_path: Path, mixed_fleet: Any) -> None:
    """`cluster up --fleet FILE --workers 2`: the workers learn every station's kind,
    region and group from the fleet file (recorded stations included, none unknown), the
    genuine convergences alert - the recorded stations among the evidence of the one they
    join - and the decoys do not."""
    mixed = mixed_fleet(tmp_path / "fleet", n_stations=120, seed=7, horizon_s=70.0)
    tag = uuid.uuid4().hex[:8]
    db = tmp_path / "db"
    env = {"CONVERGENCE_TOPIC_PREFIX": f"mx{tag}", "CONVERGENCE_FAUST_APP_ID": f"mx{tag}",
           "CONVERGENCE_DATA_DIR": str(tmp_path / "data")}
    p = _cluster("up", "--kafka", kafka_bootstrap, "--fleet", str(mixed.path), "--workers", "2",
                 "--duration", "62", "--drain", "40", "--db", f"surrealkv://{db}", "--json",
                 env=env, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    lines = [json.loads(x) for x in p.stdout.strip().splitlines()]
    summary, alerts = lines[-1], lines[:-1]
    assert summary["worker_exit_codes"] == [0, 0]
    assert summary["failed"] == 0 and summary["acked"] == summary["sent"]
    genuine = [e for e in mixed.scenario.genuine() if e.start_s < 55.0]
    assert {r for a in alerts for r in a["regions"]} == {e.region for e in genuine}
    (rid,) = {a["report_id"] for a in alerts if mixed.genuine.region in a["regions"]}
    shown = _cli("reports", "show", rid, "--db", f"surrealkv://{db}", "--format", "json",
                 env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    mixed.check_report(json.loads(shown.stdout))
    # no station of the fleet file was unknown to the workers
    logs = "".join(f.read_text(errors="replace")
                   for f in (tmp_path / "data" / "cluster").glob("worker-*.log"))
    assert "not in the fleet file" not in logs

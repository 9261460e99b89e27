"""``convergence dashboard`` against a real broker (``-m kafka``).

A real station fleet (``convergence stations run``) and the dashboard (``convergence
dashboard``) run as subprocesses on their own topic prefix; alerts, report revisions and
meter readings are published through the workers' own output port
(:class:`~convergence.streams.worker.TopicPort`), as a worker publishes a closed tick. The test reads the
dashboard's API as the page does and quarantines a station through the control topic.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from convergence.records import Level, Report
from convergence.settings import Settings, load_settings
from convergence.streams.pipeline import TickOutcome, outcome_records
from convergence.streams.topics import ensure_topics
from convergence.streams.worker import TopicPort

pytestmark = pytest.mark.kafka


@pytest.fixture
def prefixed(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CONVERGENCE_TOPIC_PREFIX", f"dash{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CONVERGENCE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    return load_settings(config_path=None)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still running at the end get SIGINT, then SIGKILL."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "convergence.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def api(url: str, *, token: str | None = None, method: str = "GET",
        body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def until(what: str, fn: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_the_cluster_dashboard_reads_the_topics_and_quarantines_a_station(
        prefixed: Settings, procs: list[subprocess.Popen[str]],
        make_report: Callable[..., Report], records: dict[str, Callable[..., Any]]) -> None:
    from kafka import KafkaProducer

    s = prefixed
    ensure_topics(s, ["alerts", "reports", "readings"])  # the cluster's workers would have
    fleet = start("stations", "run", "--stations", "12", "--seed", "7", "--duration", "90",
                  "--status-every", "1", "--kafka", s.kafka_bootstrap)
    procs.append(fleet)
    dash = start("dashboard", "--kafka", s.kafka_bootstrap, "--port", "0", "--db", "mem://")
    procs.append(dash)
    assert dash.stdout is not None
    line = dash.stdout.readline()
    m = re.search(r"dashboard (http://127\.0\.0\.1:\d+/)\s+control token (\S+)", line)
    assert m, line + (dash.stderr.read() if dash.poll() is not None and dash.stderr else "")
    base, token = m.group(1).rstrip("/"), m.group(2)

    # a closed tick as a worker publishes it: report revisions, the alert, every reading
    now = time.time()
    rid = "rpt-0e0e0e0e0e0e0e0e"
    revisions = [make_report(rid, n, region="eu-west", time_s=now - 2 + n) for n in (1, 2)]
    alert = records["alert"]("alt-0e0e0e0e0e0e0e0e", rid, region="eu-west", time_s=now)
    readings = [records["reading"]("eu-west", now, 82.0, Level.CONVERGED, Level.WARNING,
                                   report_id=rid),
                records["reading"]("mena", now, 12.0)]
    tick = TickOutcome(int(now), now, readings, [alert], revisions)
    port = TopicPort()
    for table, record_id, doc in outcome_records(tick, "run-test"):
        port.record(table, record_id, doc)
    port.outcome(tick)
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap.split(","))
    try:
        for emit in port.drain():
            producer.send(s.topic(emit.topic), key=emit.key, value=emit.value)
        producer.send(s.topic("alerts"), key=b"junk", value=b"not json")
        producer.send(s.topic("readings"), key=b"eu-west", value=orjson.dumps(
            {**readings[0].to_dict(), "score": "high"}))
        producer.flush(timeout=15)
    finally:
        producer.close()

    stations = until("12 running stations", lambda: [
        r for r in api(base + "/api/stations")[1] if r["state"] == "running"
    ] if len(api(base + "/api/stations")[1]) == 12 else None, 40)
    assert all(r["rate_per_s"] is None or r["rate_per_s"] >= 0 for r in stations)
    alerts = until("the alert", lambda: api(base + "/api/alerts")[1])
    assert alerts[0]["alert_id"] == alert.alert_id and alerts[0]["region"] == "eu-west"
    status, doc = api(f"{base}/api/reports/{rid}")
    assert status == 200 and doc["report"]["region"] == "eu-west" and doc["revisions"] == [1, 2]
    assert Report.from_dict(doc["report"]) == revisions[1]
    region = until("the reading", lambda: api(base + "/api/regions/eu-west")[1].get("series"))
    assert region[-1][1] == 82.0 and len(region) == 1  # the reading whose score is text: skipped
    assert api(base + "/api/regions/mena")[1]["score"] == 12.0
    health = until("the malformed messages counted", lambda: (
        h := api(base + "/api/health")[1])["rejected"] >= 2 and h)
    assert health["source"].startswith("cluster at")

    # a quarantine from the page goes out on the control topic and comes back acked
    sid = stations[0]["station_id"]
    status, err = api(f"{base}/api/stations/{sid}/quarantine", method="POST", token="nope")
    assert status == 401 and "wrong control token" in err["error"]
    status, doc = api(f"{base}/api/stations/{sid}/quarantine", method="POST", token=token,
                      body=b'{"ttl_s": 120}')
    assert status == 200, doc
    assert doc["acks"][0]["station_id"] == sid and doc["applied"] == 1
    row = until("the quarantined status", lambda: (
        r := api(f"{base}/api/stations/{sid}")[1])["state"] == "quarantined" and r)
    assert row["commands"][-1]["action"] == "quarantine"
    assert row["commands"][-1]["ack"]["applied"] is True

    dash.send_signal(signal.SIGINT)
    _, err_text = dash.communicate(timeout=30)
    assert dash.returncode == 0, err_text
    assert "in memory and holds nothing the cluster wrote" in err_text
    assert "Traceback" not in err_text

"""`montecarlo run --cluster` on the real local broker with two real workers (``-m kafka``).

Two ``convergence cluster worker`` processes are started once for the module; the tests
run in file order and the last one SIGKILLs a worker. Campaigns are small (a few
scenarios, tens of runs): the machine has 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from convergence.cli.cluster import worker_command
from convergence.settings import Settings, load_settings

TIMING = ("seconds", "tests_per_s")


@dataclass
class Workers:
    settings: Settings
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs)


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, workers: Workers) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{workers.log_tail()}")
        time.sleep(0.5)


def _shard_owners(s: Settings) -> list[list[int]]:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    try:
        info = admin.describe_groups([s.faust_app_id]).get(s.faust_app_id) or {}
    except KafkaError:  # the group coordinator may still be starting
        return []
    finally:
        admin.close()
    if info.get("group_state") != "Stable":
        return []
    return [a["partitions"] for m in info.get("members", [])
            for a in m["member_assignment"]["assigned_partitions"]
            if a["topic"] == s.topic("campaign-shards")]


def _results(s: Settings) -> list[dict[str, Any]]:
    from convergence.streams.kafka_client import read_topic

    return [orjson.loads(r.value) for r in read_topic(s.kafka_bootstrap, s.topic("campaign-results"))]


def _summary(stdout: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return {k: v for k, v in doc.items() if k not in TIMING}


@pytest.fixture(scope="module")
def workers(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    from convergence.streams.topics import ensure_topics

    tmp = tmp_path_factory.mktemp("mc-cluster")
    tag = uuid.uuid4().hex[:8]
    env = {"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap, "CONVERGENCE_TOPIC_PREFIX": f"mc{tag}",
           "CONVERGENCE_FAUST_APP_ID": f"mc{tag}", "CONVERGENCE_DATA_DIR": str(tmp / "data"),
           "CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "6", "CONVERGENCE_CONSUMER_HEARTBEAT_S": "2",
           "CONVERGENCE_METRICS_PORT": "-1"}
    s = load_settings(env=env, config_path=None)
    ensure_topics(s)
    procs, logs = [], []
    for i in range(2):
        logs.append(tmp / f"worker-{i}.log")
        with logs[-1].open("wb") as out:
            procs.append(subprocess.Popen([*worker_command(), "--no-store", "--log-level", "info"],
                                          env={**os.environ, **env}, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=tmp))
    w = Workers(s, env, procs, logs)
    try:
        # both workers in a settled group, six shard partitions each
        _wait_for("two workers sharing the shard partitions",
                  lambda: sorted(map(len, _shard_owners(s))) == [6, 6], 120.0, w)
        yield w
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


CAMPAIGN = ["montecarlo", "run", "--scenarios", "simultaneous,lone-surge,slow-cascade",
            "--runs", "40", "--chunk", "20", "--seed", "21", "--sweep", "--no-store", "--json"]


@pytest.mark.kafka
def test_the_cluster_campaign_equals_the_local_one(workers: Workers) -> None:
    from convergence.streams.campaign_shards import Shard, code_fingerprint
    from convergence.streams.kafka_client import read_topic
    from convergence.streams.topics import to_json

    s = workers.settings
    # an abandoned campaign: cancelled, then one shard for each worker; they must skip it
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    producer.send(s.topic("campaign-cancel"), key=b"gone", value=to_json({"campaign": "gone",
                                                                          "at_s": time.time()}))
    producer.flush()
    time.sleep(3.0)  # the workers' cancel readers poll every second
    from convergence.simulation.campaign import DEFAULT_DETECTOR, ParamSpace

    for i, part in enumerate((0, 6)):
        gone = Shard("gone", i, "lone-surge", 0, 5, 1, ParamSpace(), False, "cells",
                     DEFAULT_DETECTOR, code_fingerprint(), time.time() + 600)
        producer.send(s.topic("campaign-shards"), key=gone.key, value=gone.to_json(),
                      partition=part)
    producer.close()

    t0 = time.monotonic()
    cluster = _cli(*CAMPAIGN, "--cluster", env=workers.env, timeout=300)
    cluster_s = time.monotonic() - t0
    assert cluster.returncode == 0, cluster.stderr[-3000:] + workers.log_tail()
    t0 = time.monotonic()
    local = _cli(*CAMPAIGN, env=workers.env, timeout=300)
    local_s = time.monotonic() - t0
    assert local.returncode == 0, local.stderr[-3000:]
    print(f"\n{json.loads(cluster.stdout.splitlines()[-1])['tests']} tests: cluster "
          f"{cluster_s:.1f} s, local {local_s:.1f} s (wall, CLI start included)")
    assert _summary(cluster.stdout) == _summary(local.stdout)
    assert _summary(cluster.stdout)["tests"] == 120

    answers = _results(s)
    assert not [a for a in answers if a["campaign"] == "gone"]
    assert len({a["campaign"] for a in answers}) == 1
    started = {a["shard"]: a["worker"] for a in answers if a["state"] == "started"}
    assert sorted(started) == list(range(6)) and len(set(started.values())) == 2  # both worked
    assert read_topic(s.kafka_bootstrap, s.topic("campaign-cancel"))[-1].key == b"gone"


@pytest.mark.kafka
def test_no_worker_is_one_error_line(workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from convergence.cli.main import app
    from convergence.streams import campaign_client

    # the client reads its start timeout where it is defined, at each campaign
    monkeypatch.setattr(campaign_client, "START_TIMEOUT_S", 3.0)
    prefix = f"nobody{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("CONVERGENCE_TOPIC_PREFIX", prefix)
    r = CliRunner().invoke(app, ["montecarlo", "run", "--runs", "2", "--scenarios", "lone-surge",
                                 "--cluster", "--kafka", workers.settings.kafka_bootstrap,
                                 "--no-store", "--json"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (
        f"error: no cluster worker took the campaign's shards within 3 s; is `convergence "
        f"cluster up` running with the same CONVERGENCE_TOPIC_PREFIX ({prefix}) on Kafka at "
        f"{workers.settings.kafka_bootstrap}?")
    assert r.stdout == ""


@pytest.mark.kafka
def test_a_worker_killed_mid_shard_leaves_the_result_unchanged(workers: Workers) -> None:
    """SIGKILL the worker running the first shard: after the session timeout the other
    worker re-runs it (and the rest of the dead one's shards); same figures as locally."""
    from kafka import KafkaConsumer

    from convergence.simulation.campaign import run_campaign
    from convergence.streams.faust_config import pid_of_client_id
    from convergence.streams.kafka_client import assign_all

    s = workers.settings
    args = ["montecarlo", "run", "--scenarios", "simultaneous,lone-surge", "--runs", "120",
            "--chunk", "60", "--seed", "33", "--no-store", "--json", "--cluster"]
    tail = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None,
                         enable_auto_commit=False)
    assign_all(tail, s.topic("campaign-results"), start="end")
    client = subprocess.Popen([sys.executable, "-m", "convergence.cli.main", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **workers.env})
    try:
        first: dict[str, Any] = {}

        def a_shard_started() -> bool:
            for recs in tail.poll(timeout_ms=500).values():
                for r in recs:
                    doc = orjson.loads(r.value)
                    if doc["state"] == "started" and not first:
                        first.update(doc)
            return bool(first)

        _wait_for("a worker to start a shard", a_shard_started, 60.0, workers)
        who = pid_of_client_id(first["worker"], s.faust_app_id)
        assert who is not None
        victim = [p for p in workers.procs if p.pid == who[1]]
        assert victim, f"{first['worker']} is not one of this test's workers"
        os.kill(who[1], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = client.communicate(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
        tail.close()
    took_s = time.monotonic() - killed_at
    assert client.returncode == 0, err[-3000:] + workers.log_tail()
    assert victim[0].wait(timeout=10) == -signal.SIGKILL

    local = run_campaign(["simultaneous", "lone-surge"], runs=120, seed=33, chunk=60, workers=1)
    expected = json.loads(json.dumps(local.summary()))
    assert _summary(out) == {k: v for k, v in expected.items() if k not in TIMING}

    answers = [a for a in _results(s) if a["campaign"] == first["campaign"]]
    starts = [(a["shard"], a["worker"]) for a in answers if a["state"] == "started"]
    rerun_by = {w for shard, w in starts if shard == first["shard"]} - {first["worker"]}
    assert rerun_by, f"shard {first['shard']} was not re-run after the kill: {starts}"
    done_by = {a["worker"] for a in answers if a["state"] == "done" and a["shard"] == first["shard"]}
    assert first["worker"] not in done_by
    print(f"\ncampaign finished {took_s:.1f} s after SIGKILL of the worker running shard "
          f"{first['shard']} (session timeout 6 s)")

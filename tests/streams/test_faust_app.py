"""Cluster mode: a real Faust worker (``-m kafka``); the worker core alone is in ``test_worker.py``.

The real-broker tier starts ONE worker subprocess for the module, feeds it malformed
messages and the default scenario's first 20 s (compressed: produced at once, with
recent timestamps), and checks what comes out on the topics and in SurrealDB.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from convergence.cli.cluster import worker_env
from convergence.settings import Settings, env_name, fields, load_settings
from convergence.streams.topics import to_json


def _settings(**env: str) -> Settings:
    return load_settings(env=env, config_path=None)








# -- pure helpers of the Faust side ----------------------------------------------


def test_to_json_handles_numpy() -> None:
    assert orjson.loads(to_json({"a": np.float64(1.5), "b": np.int64(2),
                                 "c": np.arange(2)})) == {"a": 1.5, "b": 2, "c": [0, 1]}


def test_the_faust_app_still_exports_the_topics_and_worker_names() -> None:
    from convergence.streams import faust_app, topics, worker

    for name in faust_app.__all__:
        obj = getattr(faust_app, name)
        for home in (topics, worker):
            if hasattr(home, name):
                assert obj is getattr(home, name), name


def test_worker_env_spells_out_every_setting() -> None:
    s = _settings(CONVERGENCE_STATIONS="30", CONVERGENCE_TOPIC_PREFIX="x")
    env = worker_env(s)
    for f in fields():
        assert env_name(f.name) in env
    assert env["CONVERGENCE_STATIONS"] == "30" and env["CONVERGENCE_DB"] == s.db_url


# -- the consumer after a rebalance (real broker) -----------------------------------


@pytest.mark.kafka
def test_records_fetched_and_dropped_come_back_where_nothing_was_committed(
        kafka_bootstrap: str) -> None:
    """A rebalance in the middle of a fetched batch: Faust drops the rest of the batch
    and seeks back to the committed offsets. Where nothing was committed yet (a backlog
    whose first ticks have not closed), aiokafka leaves the position past the dropped
    records; the worker's consumer must read them again from the beginning."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    from convergence.streams.faust_app import rewind_uncommitted

    tag = uuid.uuid4().hex[:8]
    stream, changelog = f"rewind-{tag}", f"rewind-{tag}-changelog"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(stream, 1, 1), NewTopic(changelog, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(20):
        producer.send(stream, str(i).encode())
        producer.send(changelog, str(i).encode())
    producer.flush()
    producer.close()

    async def positions_after_seek(rewind: bool) -> tuple[int, int]:
        c = AIOKafkaConsumer(stream, changelog, bootstrap_servers=kafka_bootstrap,
                             group_id=f"g-{tag}-{rewind}", enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            tps = [TopicPartition(stream, 0), TopicPartition(changelog, 0)]
            got = 0
            deadline = time.monotonic() + 30.0
            while got < 40 and time.monotonic() < deadline:  # fetched: handed over
                got += sum(len(v) for v in (await c.getmany(timeout_ms=1000)).values())
            assert got == 40 and [await c.position(tp) for tp in tps] == [20, 20]
            if rewind:  # as the worker does, changelogs left to Faust's recovery
                rewind_uncommitted(c, skip=lambda tp: tp.topic == changelog)
            await c.seek_to_committed()  # what Faust does after every rebalance
            return await c.position(tps[0]), await c.position(tps[1])
        finally:
            await c.stop()

    # aiokafka alone: nothing committed, so the dropped records are skipped for good
    assert asyncio.run(positions_after_seek(rewind=False)) == (20, 20)
    # the worker's consumer reads the stream from its beginning again
    assert asyncio.run(positions_after_seek(rewind=True)) == (0, 20)


# -- a real worker on a real broker --------------------------------------------------


@dataclass
class ClusterRun:
    settings: Settings
    alerts: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    exit_code: int | None
    log: str
    report: dict[str, Any] | None = None
    stored_dead_letters: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0
    fleet: Path | None = None


def _read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[dict[str, Any]] = []
        while any(c.position(tp) < end[tp] for tp in tps):
            for recs in c.poll(timeout_ms=500).values():
                out += [orjson.loads(r.value) for r in recs]
        return out
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, feed: Any,
                start_worker: Any, wait_for_worker: Any,
                stop_worker: Any) -> ClusterRun:
    from convergence.ground_stations.kafka_sink import KafkaEventSink
    from convergence.store.surreal import SurrealStore
    from convergence.streams.topics import ensure_topics

    tmp = tmp_path_factory.mktemp("cluster")
    tag = uuid.uuid4().hex[:8]
    env = {
        "CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CONVERGENCE_TOPIC_PREFIX": f"t{tag}",
        "CONVERGENCE_FAUST_APP_ID": f"app{tag}",
        "CONVERGENCE_DB": f"surrealkv://{tmp / 'db'}",
        "CONVERGENCE_DATA_DIR": str(tmp / "data"),
    }
    # the workers learn the stations from the fleet file (the probe station included)
    from convergence.ground_stations.fleet import default_fleet_toml

    fleet = tmp / "fleet.toml"
    fleet.write_text(default_fleet_toml(_settings().stations, _settings().seed)
                     + f'\n[[station]]\nid = "{feed.probe}"\nsource_kind = "sensor"\n'
                       'region = "lab"\n[station.source]\ntype = "synthetic"\n')
    env["CONVERGENCE_FLEET"] = str(fleet)
    s = _settings(**env)
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    ensure_topics(s)
    proc, log_path = start_worker(env, tmp)
    try:
        now = time.time()
        t0 = now - 25.0
        sink = KafkaEventSink(kafka_bootstrap, s.topic("events"), wait_metadata=True)
        sink.publish(s.topic("events"), feed.probe, b"{not json")
        sink.send_records(feed.probe, feed.probe_batch(t0 + 0.2))
        for sid, recs in feed.messages(s, t0):
            sink.send_records(sid, recs)
        counters = sink.close()
        assert counters.failed == 0 and counters.acked == counters.sent
        timings["produced_s"] = time.monotonic() - t_start

        region = feed.genuine_region(s)

        def alerts() -> list[dict[str, Any]]:
            got = _read_topic(kafka_bootstrap, s.topic("alerts"))
            return got if any(region in a["regions"] for a in got) else []

        found = wait_for_worker(alerts, proc, log_path, 120.0, "alert on the alerts topic")
        timings["alert_s"] = time.monotonic() - t_start
        dls = _read_topic(kafka_bootstrap, s.topic("dead-letter"))
    finally:
        code = stop_worker(proc, 60)
    timings["stopped_s"] = time.monotonic() - t_start
    run = ClusterRun(s, found, dls, code, log_path.read_text(errors="replace"), timings=timings,
                     t0=t0, fleet=fleet)

    async def read_store() -> None:
        async with SurrealStore.from_settings(s) as store:
            run.report = await store.get("report", found[0]["report_id"])
            run.stored_dead_letters = await store.list("dead_letter", limit=1000,
                                                       order_by="received_at_s")
            run.runs = await store.list("run", limit=10, order_by="run_id")

    asyncio.run(read_store())
    return run


@pytest.mark.kafka
def test_worker_alerts_on_the_genuine_region(cluster_run: ClusterRun, feed: Any) -> None:
    region = feed.genuine_region(cluster_run.settings)
    assert cluster_run.alerts and all(a["regions"] == [region] for a in cluster_run.alerts)
    assert cluster_run.timings["alert_s"] < 90, cluster_run.timings


@pytest.mark.kafka
def test_the_same_wire_messages_in_process_give_the_same_alert_and_report_ids(
        cluster_run: ClusterRun, feed: Any) -> None:
    """Parity: the recorded wire messages the worker read from the broker, fed to the
    one-process runner (as the embedded runtime runs it), give the alerts the two-stage
    worker published on Kafka - same alert ids, same report ids, same levels."""
    from convergence.ground_stations.fleet import load_fleet
    from convergence.streams.directory import StationDirectory
    from convergence.streams.worker import WorkerCore
    from convergence.wire import encode_raw

    assert cluster_run.fleet is not None
    s = cluster_run.settings
    directory = StationDirectory([sp.info for sp in load_fleet(cluster_run.fleet).stations])
    core = WorkerCore(s, directory=directory, run_id="parity")
    t0, now = cluster_run.t0, time.time()
    emits = core.on_message(b"{not json", feed.probe.encode(), now)
    emits += core.on_message(encode_raw(feed.probe_batch(t0 + 0.2)), feed.probe.encode(), now)
    for i, (sid, recs) in enumerate(feed.messages(s, t0)):
        emits += core.on_message(encode_raw(recs), sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    emits += core.on_stop()
    in_process = {a["alert_id"]: a for a in (orjson.loads(e.value) for e in emits
                                             if e.topic == "alerts")}
    assert cluster_run.alerts
    for a in cluster_run.alerts:  # the worker stopped at its first alert: a prefix of them
        twin = in_process.get(a["alert_id"])
        assert twin is not None, (a, sorted(in_process))
        assert (twin["report_id"], twin["level"], twin["regions"]) == \
            (a["report_id"], a["level"], a["regions"])


@pytest.mark.kafka
def test_worker_stops_cleanly_on_sigterm(cluster_run: ClusterRun) -> None:
    assert cluster_run.exit_code == 0, cluster_run.log[-3000:]
    assert "Traceback" not in cluster_run.log, cluster_run.log[-3000:]
    # the installed aiokafka and Faust still expose what tells caught up and reachable
    assert "cannot read the Kafka consumer's" not in cluster_run.log, cluster_run.log[-3000:]


def test_consumer_internals_that_cannot_be_read_are_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    from convergence.streams import faust_app

    faust_app._internals_said.clear()
    with caplog.at_level(logging.WARNING, logger=faust_app.log.name):
        for _ in range(3):
            assert faust_app._fetch_view(object(), ("events", 0)) == (None, None, None)
            assert faust_app._committed_offset(object(), ("events", 0)) is None
    said = [r.getMessage() for r in caplog.records if "cannot read the Kafka consumer" in r.getMessage()]
    assert len(said) == 2 and "fetch state" in said[0] and "committed offsets" in said[1]


def test_a_batchs_table_writes_land_in_each_messages_own_partition() -> None:
    """The ingest agent writes a batch's station summaries after the batch, per partition,
    with a message of that partition as Faust's current event (Faust's tables put a write in
    the changelog partition of the current event's message)."""
    from dataclasses import dataclass

    import faust.streams

    @dataclass
    class Message:
        partition: int

    @dataclass
    class Event:  # what the agent holds: Faust's events (weak references are taken)
        message: Message

    from convergence.streams import faust_app

    faust_app._internals_said.clear()
    first, second = Event(Message(0)), Event(Message(3))
    with faust_app.as_current_event(first):
        assert faust.streams.current_event() is first
        with faust_app.as_current_event(second):
            assert faust.streams.current_event().message.partition == 3
        assert faust.streams.current_event() is first
    assert faust.streams.current_event() is None
    assert not faust_app._internals_said


@pytest.mark.kafka
def test_report_is_in_surrealdb_under_the_alerts_report_id(cluster_run: ClusterRun) -> None:
    rep = cluster_run.report
    assert rep is not None, cluster_run.log[-3000:]
    alert = cluster_run.alerts[0]
    assert rep["report_id"] == alert["report_id"] and rep["regions"] == alert["regions"]
    assert rep["title"] and rep["summary"]


@pytest.mark.kafka
def test_malformed_input_is_dead_lettered_with_reasons(cluster_run: ClusterRun, feed: Any) -> None:
    for source in (cluster_run.dead_letters, cluster_run.stored_dead_letters):
        mine = [d for d in source if d.get("station_id") == feed.probe]
        assert any(d["field"] == "message" and "not valid JSON" in d["reason"] for d in mine)
        assert any(d["field"] == "value" and "not a number" in d["reason"] for d in mine)


@pytest.mark.kafka
def test_good_events_of_a_mixed_batch_still_count(cluster_run: ClusterRun, feed: Any) -> None:
    (run,) = cluster_run.runs
    assert run["stations"][feed.probe]["events"] == 3
    assert run["stations"][feed.probe]["dead_letters"] == 2
    # The worker was stopped at the first alert, so part of the backlog may be unread.
    assert run["pipeline"]["alerts"] >= 1 and run["pipeline"]["events"] > 1_000


# -- the command line ------------------------------------------------------------------


def test_stations_only_that_matches_nothing_fails_before_touching_kafka() -> None:
    from typer.testing import CliRunner

    from convergence.cli.stations import app as stations_app

    result = CliRunner().invoke(stations_app, ["run", "--only", "nope-*"],
                                env={"CONVERGENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 2, result.output
    assert "matches none" in result.stderr and "Traceback" not in result.output


@pytest.mark.kafka
def test_alerts_tail_prints_the_alerts_of_the_run(cluster_run: ClusterRun) -> None:
    from typer.testing import CliRunner

    from convergence.cli.alerts import app as alerts_app

    s = cluster_run.settings
    env = {"CONVERGENCE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
           "CONVERGENCE_TOPIC_PREFIX": s.topic_prefix}
    runner = CliRunner()
    as_json = runner.invoke(alerts_app, ["tail", "--from-beginning", "--json", "--count", "1",
                                         "--timeout", "30"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert orjson.loads(as_json.stdout.splitlines()[0])["alert_id"] == \
        cluster_run.alerts[0]["alert_id"]
    readable = runner.invoke(alerts_app, ["tail", "--from-beginning", "--count", "1",
                                          "--timeout", "30"], env=env)
    assert readable.exit_code == 0 and cluster_run.alerts[0]["report_id"] in readable.stdout
    too_few = runner.invoke(alerts_app, ["tail", "--count", "1", "--timeout", "1"], env=env)
    assert too_few.exit_code == 3 and "only 0 of 1" in too_few.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_cluster_up_runs_workers_and_stations_and_stops_cleanly(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from convergence.cli.cluster import app as cluster_app

    tag = uuid.uuid4().hex[:8]
    env = {"CONVERGENCE_TOPIC_PREFIX": f"up{tag}", "CONVERGENCE_FAUST_APP_ID": f"up{tag}",
           "CONVERGENCE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(cluster_app, [
        "up", "--kafka", kafka_bootstrap, "--workers", "2", "--stations", "40",
        "--duration", "8", "--drain", "20", "--db", f"surrealkv://{tmp_path / 'db'}", "--json",
    ], env=env)
    logs = "\n".join(p.read_text(errors="replace")[-2000:]
                     for p in sorted((tmp_path / "data" / "cluster").glob("worker-*.log")))
    assert result.exit_code == 0, result.output + result.stderr + logs
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["worker_exit_codes"] == [0, 0], logs
    assert summary["failed"] == 0 and summary["acked"] == summary["sent"] > 0
    assert summary["stations"] == 40
    assert "Traceback" not in logs

    from convergence.store.surreal import SurrealStore

    async def runs() -> list[dict[str, Any]]:
        async with SurrealStore(f"surrealkv://{tmp_path / 'db'}", "convergence", "main") as st:
            return await st.list("run", limit=10, order_by="run_id")

    # Worker 0 owns the store; worker 1 stopped first, so its run record got there too.
    records = asyncio.run(runs())
    assert len(records) == 2, records
    assert sum(r["pipeline"]["events"] for r in records) > 0

"""Cluster mode: the worker core without a broker, then a real Faust worker (``-m kafka``).

The real-broker tier starts ONE worker subprocess for the module, feeds it malformed
messages and the default scenario's first 20 s (compressed: produced at once, with
recent timestamps), and checks what comes out on the topics and in SurrealDB.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from convergence.cli.cluster import worker_command, worker_env
from convergence.ground_stations.scenario import SyntheticWorld, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.settings import Settings, env_name, fields, load_settings
from convergence.streams.faust_app import (
    EventTimeWatermark,
    WorkerCore,
    checkpoint_stages,
    to_json,
)
from convergence.wire import encode_raw

SCENARIO_S = 20.0
SLICE_S = 0.5
PROBE = "probe-001"


def _settings(**env: str) -> Settings:
    return load_settings(env=env, config_path=None)


def scenario_messages(s: Settings, t0: float) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The default scenario's first 20 s as (station, records) messages in time order.

    Time order matters: the worker's watermark is the largest event time seen, so a
    station replayed all at once would make everyone else's events late.
    """
    sc = default_scenario(s.stations, s.seed, SCENARIO_S + 40)
    world = SyntheticWorld(sc)
    sources = [SyntheticSource(world, i, t0, s.seed) for i in range(len(sc.fleet))]
    for k in range(int(SCENARIO_S / SLICE_S)):
        for src in sources:
            recs = src.draw(k * SLICE_S, (k + 1) * SLICE_S)
            if recs:
                yield src.info.station_id, recs


def genuine_region(s: Settings) -> str:
    sc = default_scenario(s.stations, s.seed, SCENARIO_S + 40)
    (ep,) = [e for e in sc.genuine() if e.start_s < SCENARIO_S]
    assert ep.region is not None
    return ep.region


def probe_batch(t: float) -> list[dict[str, Any]]:
    """Three good events and one bad one (a value that is not a number)."""
    good = [{"station_id": PROBE, "source_kind": "sensor", "event_time_s": t + 0.1 * i,
             "category": "seismic", "value": 10.0 + i} for i in range(3)]
    bad = {"station_id": PROBE, "source_kind": "sensor", "event_time_s": t + 0.05,
           "category": "seismic", "value": "twelve"}
    return [*good[:2], bad, good[2]]


# -- the watermark: pure -------------------------------------------------------


def test_watermark_follows_the_largest_event_time_and_never_goes_back() -> None:
    wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.5)
    assert wm.observe(None, wall_s=10.0) is None  # dead letters only: nothing to close yet
    assert wm.observe(5.0, wall_s=10.0) == 5.0
    assert wm.observe(3.0, wall_s=10.1) == 5.0
    assert wm.observe(7.0, wall_s=10.2) == 7.0
    assert wm.observe(99.0, wall_s=10.3) == pytest.approx(10.8)  # clamped to wall + lead


def test_watermark_idle_advance_tracks_wall_time_only_when_quiet_and_caught_up() -> None:
    wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.5)
    assert wm.idle(100.0) is None  # nothing seen yet
    wm.observe(50.0, wall_s=100.0)
    assert wm.idle(100.9) is None
    assert wm.idle(101.5, caught_up=False) is None
    assert wm.idle(101.5) == pytest.approx(51.5)
    assert wm.idle(104.0) == pytest.approx(54.0)
    wm.observe(52.0, wall_s=104.5)  # input again: the watermark stays, the idle clock restarts
    assert wm.value == pytest.approx(54.0)
    assert wm.idle(105.0) is None
    assert wm.idle(106.0) == pytest.approx(54.0 + 1.5)


def test_watermark_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="idle_after_s"):
        EventTimeWatermark(idle_after_s=0)


# -- the worker core: pure, dict tables ------------------------------------------


@pytest.fixture(scope="module")
def core_run() -> dict[str, Any]:
    """The worker core fed the compressed scenario plus malformed input, no broker."""
    s = _settings()
    now = time.time()
    t0 = now - 25.0
    summaries: dict[str, Any] = {}
    checkpoints: dict[str, Any] = {}
    core = WorkerCore(s, summaries=summaries, checkpoints=checkpoints, run_id="run-test",
                      checkpoint_interval_s=0.1, summary_interval_s=0.1)
    emits = core.on_message(b"{not json", PROBE.encode(), now)
    emits += core.on_message(encode_raw(probe_batch(t0 + 0.2)), PROBE.encode(), now)
    for i, (sid, recs) in enumerate(scenario_messages(s, t0)):
        emits += core.on_message(encode_raw(recs), sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    tail = core.on_stop()
    return {"s": s, "core": core, "emits": emits, "tail": tail, "summaries": summaries,
            "checkpoints": checkpoints, "t0": t0}


def _values(emits: list[Any], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(e.value) for e in emits if e.topic == topic]


def test_core_alerts_on_the_genuine_episode_and_its_report_comes_first(
        core_run: dict[str, Any]) -> None:
    emits = core_run["emits"]
    alerts = _values(emits, "alerts")
    assert alerts, "no alert from the genuine convergence in the first 20 s"
    assert all(a["regions"] == [genuine_region(core_run["s"])] for a in alerts)
    assert all(a["run_id"] == "run-test" for a in alerts)
    order = [(e.topic, orjson.loads(e.value)) for e in emits if e.topic in ("alerts", "reports")]
    first_alert = next(i for i, (t, _) in enumerate(order) if t == "alerts")
    assert any(t == "reports" and v["report_id"] == alerts[0]["report_id"]
               for t, v in order[:first_alert])
    for e in emits:
        if e.topic == "alerts":
            assert e.key == orjson.loads(e.value)["alert_id"].encode()


def test_core_sends_responses_and_their_commands(core_run: dict[str, Any]) -> None:
    responses = _values(core_run["emits"], "responses")
    commands = _values(core_run["emits"], "control")
    assert responses and commands
    assert {c["command_id"] for c in commands} <= {
        r["command"]["command_id"] for r in responses if r["command"]}


def test_core_stamps_every_stored_record_with_the_run_id(core_run: dict[str, Any]) -> None:
    # The same records the embedded runtime stores (streams.pipeline.outcome_records).
    for topic in ("alerts", "reports", "responses", "dead-letter"):
        docs = _values(core_run["emits"], topic)
        assert docs and all(d["run_id"] == "run-test" for d in docs), topic


def test_core_dead_letters_carry_reasons_and_the_key_station(core_run: dict[str, Any]) -> None:
    dls = _values(core_run["emits"], "dead-letter")
    not_json = [d for d in dls if "not valid JSON" in d["reason"]]
    assert len(not_json) == 1 and not_json[0]["station_id"] == PROBE
    probe_bad = [d for d in dls if d["station_id"] == PROBE and d["field"] == "value"]
    assert len(probe_bad) == 1 and "not a number" in probe_bad[0]["reason"]
    assert core_run["core"].counters.undecodable == 1


def test_core_counts_the_good_events_of_a_mixed_batch(core_run: dict[str, Any]) -> None:
    probe = core_run["core"].stations[PROBE]
    assert probe["events"] == 3 and probe["dead_letters"] == 2
    assert probe["last_event_time_s"] == pytest.approx(core_run["t0"] + 0.4)
    assert core_run["summaries"][PROBE]["events"] == 3  # written to the table too


def test_core_checkpoints_the_learning_stages_json_safely(core_run: dict[str, Any]) -> None:
    cps = core_run["checkpoints"]
    assert cps, "no detector checkpoint written"
    cp = next(iter(cps.values()))
    stages = checkpoint_stages(core_run["core"].pipeline)
    assert set(cp["state"]) == set(stages) and {"entropy", "burst"} <= set(stages)
    assert "node" not in cp["state"]  # episode state: stale after a hand-over
    orjson.loads(orjson.dumps(cp))  # what a Faust table's JSON changelog holds


def test_core_on_stop_closes_the_rest_once(core_run: dict[str, Any]) -> None:
    core = core_run["core"]
    assert core.stopped and core.on_stop() == [] and core.on_timer(time.time() + 99) == []


def test_checkpoints_restore_into_a_fresh_pipeline() -> None:
    s = _settings()
    now = time.time()
    checkpoints: dict[str, Any] = {}
    first = WorkerCore(s, checkpoints=checkpoints, checkpoint_interval_s=0.0, table_batch=1000,
                       batch_events=500)
    msgs = list(scenario_messages(s, now - 25.0))
    for sid, recs in msgs[:3000]:
        first.on_message(encode_raw(recs), sid.encode(), now)
    first.on_message(encode_raw(msgs[3000][1]), msgs[3000][0].encode(), now)  # flush due ones
    sid = msgs[3000][0]
    idx = first.pipeline.registry.index_of(sid)
    stages = checkpoint_stages(first.pipeline)
    want = {st: first.pipeline.state[st].station(idx) for st in stages}
    assert sid in checkpoints

    second = WorkerCore(s, checkpoints=checkpoints, batch_events=1)
    second.on_message(encode_raw(msgs[3001][1] if msgs[3001][0] == sid else msgs[3000][1]),
                      sid.encode(), now)
    assert second.counters.checkpoints_restored == 1
    got = {st: second.pipeline.state[st].station(idx) for st in stages}
    for st in stages:
        for k, v in want[st].items():
            np.testing.assert_allclose(got[st][k], v)


def test_a_new_owner_with_default_batching_restores_checkpoints_before_writing_any() -> None:
    # Default micro-batching: the first message's events wait in the buffer, so the
    # fresh pipeline has learnt nothing yet - it must not checkpoint over A's state.
    s = _settings()
    now = time.time()
    checkpoints: dict[str, Any] = {}
    first = WorkerCore(s, checkpoints=checkpoints, checkpoint_interval_s=0.0, table_batch=1000,
                       batch_events=500)
    msgs = list(scenario_messages(s, now - 25.0))
    for sid, recs in msgs[:3001]:
        first.on_message(encode_raw(recs), sid.encode(), now)
    assert len(checkpoints) > 4  # more than one message's table_batch of the new owner
    written = orjson.loads(orjson.dumps(checkpoints))
    stages = checkpoint_stages(first.pipeline)
    sid, recs = msgs[3001]
    idx = first.pipeline.registry.index_of(sid)
    want = {st: first.pipeline.state[st].station(idx) for st in stages}
    assert sid in checkpoints

    second = WorkerCore(s, checkpoints=checkpoints)  # default batch_wait_s / batch_events
    assert second.batch_events > 1 and second.batch_wait_s > 0
    second.on_message(encode_raw(recs), sid.encode(), now)
    assert second.counters.checkpoints_written == 0
    assert orjson.loads(orjson.dumps(checkpoints)) == written  # still A's, every station
    second.on_timer(now + 1.0)  # the buffer is due: ingest, restore
    assert second.counters.checkpoints_restored == 1
    got = {st: second.pipeline.state[st].station(idx) for st in stages}
    for st in stages:
        for k, v in want[st].items():
            np.testing.assert_allclose(got[st][k], v)


def test_a_checkpoint_that_does_not_fit_is_ignored_not_fatal() -> None:
    s = _settings()
    now = time.time()
    sid, recs = next(scenario_messages(s, now - 25.0))
    bad = {"v": 1, "tick": int(now), "tick_s": s.tick_s,
           "state": {"entropy": {"n": [1.0, 2.0]}, "burst": {}}}
    core = WorkerCore(s, checkpoints={sid: bad}, batch_events=1)
    core.on_message(encode_raw(recs), sid.encode(), now)
    assert core.counters.checkpoints_rejected == 1
    assert core.counters.checkpoints_restored == 0


def test_ownership_change_resets_the_pipeline_but_a_same_partition_rebalance_does_not() -> None:
    s = _settings()
    now = time.time()
    core = WorkerCore(s, batch_events=1)
    assert not core.on_assignment({0})
    sid, recs = next(scenario_messages(s, now - 25.0))
    core.on_message(encode_raw(recs), sid.encode(), now)
    before = core.pipeline
    assert not core.on_assignment({0}) and core.pipeline is before
    assert core.on_assignment(set()) and core.pipeline is not before
    assert core.counters.resets == 1 and core.stations[sid]["events"] > 0  # counts survive


def test_to_json_handles_numpy() -> None:
    assert orjson.loads(to_json({"a": np.float64(1.5), "b": np.int64(2),
                                 "c": np.arange(2)})) == {"a": 1.5, "b": 2, "c": [0, 1]}


def test_worker_env_spells_out_every_setting() -> None:
    s = _settings(CONVERGENCE_STATIONS="30", CONVERGENCE_TOPIC_PREFIX="x")
    env = worker_env(s)
    for f in fields():
        assert env_name(f.name) in env
    assert env["CONVERGENCE_STATIONS"] == "30" and env["CONVERGENCE_DB"] == s.db_url


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


def _wait_for(pred: Any, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float,
              what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n"
                        + log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout_s:g} s; worker log tail:\n"
                + log_path.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
def cluster_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    from convergence.ground_stations.kafka_sink import KafkaEventSink
    from convergence.store.surreal import SurrealStore
    from convergence.streams.faust_app import ensure_topics

    tmp = tmp_path_factory.mktemp("cluster")
    tag = uuid.uuid4().hex[:8]
    env = {
        "CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CONVERGENCE_TOPIC_PREFIX": f"t{tag}",
        "CONVERGENCE_FAUST_APP_ID": f"app{tag}",
        "CONVERGENCE_DB": f"surrealkv://{tmp / 'db'}",
        "CONVERGENCE_DATA_DIR": str(tmp / "data"),
    }
    s = _settings(**env)
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    ensure_topics(s)
    log_path = tmp / "worker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([*worker_command(), "--log-level", "info"],
                                env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp)
    try:
        now = time.time()
        t0 = now - 25.0
        sink = KafkaEventSink(kafka_bootstrap, s.topic("events"), wait_metadata=True)
        sink.publish(s.topic("events"), PROBE, b"{not json")
        sink.send_records(PROBE, probe_batch(t0 + 0.2))
        for sid, recs in scenario_messages(s, t0):
            sink.send_records(sid, recs)
        counters = sink.close()
        assert counters.failed == 0 and counters.acked == counters.sent
        timings["produced_s"] = time.monotonic() - t_start

        region = genuine_region(s)

        def alerts() -> list[dict[str, Any]]:
            got = _read_topic(kafka_bootstrap, s.topic("alerts"))
            return got if any(region in a["regions"] for a in got) else []

        found = _wait_for(alerts, proc, log_path, 120.0, "alert on the alerts topic")
        timings["alert_s"] = time.monotonic() - t_start
        dls = _read_topic(kafka_bootstrap, s.topic("dead-letter"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
    timings["stopped_s"] = time.monotonic() - t_start
    run = ClusterRun(s, found, dls, code, log_path.read_text(errors="replace"), timings=timings)

    async def read_store() -> None:
        async with SurrealStore.from_settings(s) as store:
            run.report = await store.get("report", found[0]["report_id"])
            run.stored_dead_letters = await store.list("dead_letter", limit=1000,
                                                       order_by="received_at_s")
            run.runs = await store.list("run", limit=10, order_by="run_id")

    asyncio.run(read_store())
    return run


@pytest.mark.kafka
def test_worker_alerts_on_the_genuine_region(cluster_run: ClusterRun) -> None:
    region = genuine_region(cluster_run.settings)
    assert cluster_run.alerts and all(a["regions"] == [region] for a in cluster_run.alerts)
    assert cluster_run.timings["alert_s"] < 90, cluster_run.timings


@pytest.mark.kafka
def test_worker_stops_cleanly_on_sigterm(cluster_run: ClusterRun) -> None:
    assert cluster_run.exit_code == 0, cluster_run.log[-3000:]
    assert "Traceback" not in cluster_run.log, cluster_run.log[-3000:]


@pytest.mark.kafka
def test_report_is_in_surrealdb_under_the_alerts_report_id(cluster_run: ClusterRun) -> None:
    rep = cluster_run.report
    assert rep is not None, cluster_run.log[-3000:]
    alert = cluster_run.alerts[0]
    assert rep["report_id"] == alert["report_id"] and rep["regions"] == alert["regions"]
    assert rep["title"] and rep["summary"]


@pytest.mark.kafka
def test_malformed_input_is_dead_lettered_with_reasons(cluster_run: ClusterRun) -> None:
    for source in (cluster_run.dead_letters, cluster_run.stored_dead_letters):
        mine = [d for d in source if d.get("station_id") == PROBE]
        assert any(d["field"] == "message" and "not valid JSON" in d["reason"] for d in mine)
        assert any(d["field"] == "value" and "not a number" in d["reason"] for d in mine)


@pytest.mark.kafka
def test_good_events_of_a_mixed_batch_still_count(cluster_run: ClusterRun) -> None:
    (run,) = cluster_run.runs
    assert run["stations"][PROBE]["events"] == 3
    assert run["stations"][PROBE]["dead_letters"] == 2
    # The worker was stopped at the first alert, so part of the backlog may be unread.
    assert run["pipeline"]["alerts"] >= 1 and run["pipeline"]["events"] > 1_000


def test_events_wait_in_a_small_buffer_that_the_timer_drains() -> None:
    s = _settings()
    now = time.time()
    core = WorkerCore(s, batch_wait_s=1.0, batch_events=10_000)
    sid, recs = next(scenario_messages(s, now - 25.0))
    core.on_message(encode_raw(recs), sid.encode(), now)
    assert core.pipeline.counters.events == 0  # buffered, not lost
    core.on_timer(now + 0.25)
    assert core.pipeline.counters.events > 0


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


def test_a_message_that_breaks_the_worker_becomes_a_dead_letter() -> None:
    core = WorkerCore(_settings())
    emit = core.internal_error(b'{"v": 1}', b"s1", RuntimeError("boom"), time.time())
    doc = orjson.loads(emit.value)
    assert emit.topic == "dead-letter" and doc["stage"] == "worker"
    assert "RuntimeError: boom" in doc["reason"] and doc["station_id"] == "s1"
    assert core.pipeline.counters.dead_letters == 1


def test_station_status_marks_dark_stations_and_ignores_stale_or_garbage() -> None:
    s = _settings()
    core = WorkerCore(s, run_id="run-status")
    sid = core.pipeline.registry.ids()[0]
    now = 1_800_000_000.0

    def status(state: str, at_s: float) -> bytes:
        return orjson.dumps({"station_id": sid, "state": state, "at_s": at_s})

    assert core.on_station_status(status("backing_off", now - 1), now)
    assert sid in core.pipeline._dark
    assert not core.on_station_status(status("running", now - 3600), now)  # history, not news
    assert sid in core.pipeline._dark
    assert core.on_station_status(status("running", now), now)
    assert sid not in core.pipeline._dark
    assert not core.on_station_status(b"\x00garbage", now)

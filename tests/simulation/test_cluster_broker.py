"""The cluster benchmark's broker side on a real broker (``-m kafka``): the backlog as
produced is what a raw consume reads and what committed offsets count, the evidence watch
says once that evidence came, the stage figures add up the workers' records, and the
run's topics are deleted afterwards."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from convergence.settings import load_settings
from convergence.simulation.cluster_backlog import BacklogPlan, backlog_messages
from convergence.simulation.cluster_broker import (
    EvidenceWatch,
    committed_offsets,
    count_alerts,
    delete_run_topics,
    fill_backlog,
    raw_consume,
    stage_figures,
)
from convergence.simulation.cluster_figures import events_before

T0 = 1_800_000_000.0


def _groups(admin: Any) -> set[str]:
    """The consumer groups the broker knows."""
    return {g["group_id"] for g in admin.list_groups()}


@pytest.mark.kafka
def test_a_backlog_is_produced_read_raw_counted_by_commits_and_cleaned_up(kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    from convergence.streams.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap}, config_path=None).replace(
        topic_prefix=f"bcb-{tag}", faust_app_id=f"bcb-{tag}")
    ensure_topics(s, ["events", "node-evidence", "alerts", "runs"], partitions=2)
    topic = s.topic("events")
    plan = BacklogPlan(stations=20, seed=3, batch=10, events=2000, t0_s=T0)
    sent = list(backlog_messages(plan))

    fill = fill_backlog(kafka_bootstrap, topic, plan)
    offsets = fill.pop("_offsets")
    assert fill["messages"] == len(sent) and fill["events"] == sum(m.n_events for m in sent)
    assert fill["bytes"] == sum(len(m.value) for m in sent) and offsets.failed == 0
    assert sum(offsets.end.values()) == len(sent)

    raw = raw_consume(kafka_bootstrap, topic, offsets)
    assert raw["events"] == fill["events"] and raw["messages"] == fill["messages"]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    watch = EvidenceWatch(kafka_bootstrap, s.topic("node-evidence"))
    try:
        assert committed_offsets(admin, s.faust_app_id, topic) == {}  # no group yet
        # the workers' group commits three messages of partition 0
        tp = TopicPartition(topic, 0)
        group = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=s.faust_app_id,
                              enable_auto_commit=False)
        try:
            group.assign([tp])
            group.seek(tp, 3)
            group.commit()
        finally:
            group.close()
        committed = committed_offsets(admin, s.faust_app_id, topic)
        assert committed == {0: 3} and s.faust_app_id in _groups(admin)
        first_three = sorted(r for r in offsets.by_partition[0])[:3]
        assert events_before(offsets.table(), committed) == sum(n for _, n in first_three)

        assert watch.handed_on() is False  # nothing handed on yet
        # what two stopped workers leave: their counters, evidence of two ticks
        runs = [{"pipeline": {"station_ticks": 10, "station_ticks_at_baseline": 4},
                 "worker": {"messages": 7, "evidence_bytes": 50, "progress_messages": 1}},
                {"pipeline": {"station_ticks": 30, "station_ticks_at_baseline": 12},
                 "worker": {"messages": 5, "evidence_bytes": 60, "progress_messages": 2}},
                {"not": "a worker record"}]
        for r in runs:
            producer.send(s.topic("runs"), value=orjson.dumps(r))
        evidence = [orjson.dumps({"ne": {"tick": t, "stations": {f"st-{i}": {} for i in range(k)}}})
                    for t, k in ((1, 2), (1, 1), (2, 3))]
        for v in evidence:
            producer.send(s.topic("node-evidence"), value=v)
        for _ in range(2):
            producer.send(s.topic("alerts"), value=b"{}")
        producer.flush(timeout=30)
        deadline = time.monotonic() + 20.0
        seen = False
        while not seen and time.monotonic() < deadline:
            seen = watch.handed_on()
            time.sleep(0.2)
        assert seen and watch.handed_on() is False  # said once
        assert count_alerts(kafka_bootstrap, s.topic("alerts")) == 2

        st = stage_figures(kafka_bootstrap, s, workers=2)
        assert st["worker_records"] == 2 and st["messages_per_worker"] == [5, 7]
        assert st["station_ticks"] == 40 and st["station_ticks_at_baseline"] == 16
        assert st["skipped_share"] == 0.4 and st["ticks_closed"] == 2
        assert st["node_evidence_messages"] == 3 and st["station_records"] == 6
        assert st["node_evidence_bytes"] == sum(len(v) for v in evidence)
        assert st["bytes_per_tick"] == round(st["node_evidence_bytes"] / 2)
        assert st["evidence_bytes_counted"] == 110 and st["progress_messages"] == 3
    finally:
        watch.close()
        producer.close(timeout=5)
        delete_run_topics(kafka_bootstrap, s)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(s.topic_prefix)]
        assert s.faust_app_id not in _groups(admin)
    finally:
        admin.close()

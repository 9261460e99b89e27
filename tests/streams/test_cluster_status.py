"""What `cluster status` gathers: the pure pieces, then a real broker (``-m kafka``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest

from convergence.records import Alert, Level
from convergence.settings import load_settings
from convergence.streams.cluster_status import gather, lag_rows, member_owns


def test_lag_is_what_the_group_has_not_committed() -> None:
    rows = lag_rows({("p-events", 1): 10, ("p-events", 0): 50}, {("p-events", 0): 50, ("x", 0): 3})
    assert rows == [{"topic": "p-events", "partition": 0, "end": 50, "committed": 50, "lag": 0},
                    {"topic": "p-events", "partition": 1, "end": 10, "committed": None, "lag": 10}]


def test_a_members_partitions_without_faust_internals_or_empty_topics() -> None:
    member = {"member_assignment": {"assigned_partitions": [
        {"topic": "p-events", "partitions": [2, 0]}, {"topic": "p-station-status", "partitions": []},
        {"topic": "p-__assignor-__leader", "partitions": [0]}, {"topic": "elsewhere", "partitions": [1]}]}}
    assert member_owns(member, "p-") == {"elsewhere": [1], "events": [0, 2]}
    assert member_owns({"member_assignment": b"undecodable"}, "p-") == {}


def test_an_unreachable_broker_is_reported_not_raised(tmp_path: Path) -> None:
    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                           "CONVERGENCE_DATA_DIR": str(tmp_path)}, config_path=None)
    started = time.monotonic()
    st = gather(s, None, timeout_s=1.0)
    assert time.monotonic() - started < 8.0
    assert st["broker"]["reachable"] is False
    assert "cannot reach Kafka at 127.0.0.1:1" in st["broker"]["error"]
    assert st["cluster"] is None and st["workers"] == [] and st["topics"] == {}


def _alert(i: int, region: str, level: Level) -> Alert:
    return Alert(alert_id=f"alt-{i}", report_id=f"rpt-{i}", region=region, level=level,
                 score=60.0 + i, tick=100 + i, time_s=1_700_000_000.0 + i, episode_tick=100,
                 stations=("a", "b"), source_kinds=("sensor",), osint_corroborated=False)


@pytest.mark.kafka
def test_topics_group_lag_and_the_latest_alerts(kafka_bootstrap: str, tmp_path: Path) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from convergence.streams.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": f"st{tag}", "CONVERGENCE_FAUST_APP_ID": f"st{tag}",
                           "CONVERGENCE_DATA_DIR": str(tmp_path)}, config_path=None)
    ensure_topics(s, ["events", "alerts"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for _ in range(7):
        producer.send(s.topic("events"), b'{"v":1,"events":[]}', partition=0)
    for i, region in enumerate(["mena", "apac", "eu-west"]):
        producer.send(s.topic("alerts"), orjson.dumps(_alert(i, region, Level.WARNING).to_dict()))
    producer.send(s.topic("alerts"), b"not an alert")
    producer.flush()
    producer.close()
    group = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=s.faust_app_id,
                          enable_auto_commit=False)
    group.commit({TopicPartition(s.topic("events"), 0): OffsetAndMetadata(5, "", -1)})
    group.close()

    st = gather(s, None, timeout_s=10.0, recent_alerts=2)
    assert st["broker"]["reachable"] and st["broker"]["error"] is None and st["problems"] == []
    assert st["topics"]["events"] == {"name": s.topic("events"), "partitions": s.partitions,
                                       "messages_end": 7}
    lag = st["groups"][s.faust_app_id]["lag"]
    assert lag == [{"topic": "events", "partition": 0, "end": 7, "committed": 5, "lag": 2}] + [
        {"topic": "events", "partition": p, "end": 0, "committed": None, "lag": 0}
        for p in range(1, s.partitions)]
    assert st["groups"][f"{s.faust_app_id}-store"]["lag"] == []
    assert [a["region"] for a in st["alerts"]] == ["apac", "eu-west"]  # the latest two alerts
    assert st["workers"] == []

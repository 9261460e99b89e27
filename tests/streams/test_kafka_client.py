"""The kafka-python helpers: the message for a missing broker, a fast failure, then reading a
topic from a chosen start on a real broker (``-m kafka``)."""

from __future__ import annotations

import math
import time
import uuid

import pytest
from kafka.errors import KafkaError

from convergence.settings import load_settings
from convergence.streams import kafka_client


def test_unreachable_names_the_broker_the_error_and_what_to_do() -> None:
    msg = kafka_client.unreachable("k1:9092,k2:9092", ConnectionRefusedError(111, "Connection refused"))
    assert msg == ("cannot reach Kafka at k1:9092,k2:9092 (ConnectionRefusedError: [Errno 111] Connection "
                   "refused); start a broker (`convergence kafka start`) or pass --kafka HOST:PORT")


def test_a_dead_broker_fails_within_the_bootstrap_timeout() -> None:
    assert kafka_client.BOOTSTRAP_TIMEOUT_MS == 10_000  # a person is waiting
    t0 = time.monotonic()
    with pytest.raises(KafkaError, match=r"127\.0\.0\.1:1"):
        kafka_client.consumer("127.0.0.1:1", "convergence-test", bootstrap_timeout_ms=300)
    assert time.monotonic() - t0 < 5.0  # the override is passed on


@pytest.mark.kafka
def test_assign_all_starts_where_asked_and_read_to_end_stops_at_the_end(kafka_bootstrap: str) -> None:
    from kafka import KafkaProducer

    from convergence.streams.topics import ensure_topics

    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": f"kc{uuid.uuid4().hex[:8]}"}, config_path=None)
    ensure_topics(s, ["events"], partitions=2)
    topic = s.topic("events")
    base_ms = (int(time.time()) - 3600) * 1000  # an hour ago, one message a second
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for i in range(6):
            producer.send(topic, value=f"m{i}".encode(), partition=i % 2, timestamp_ms=base_ms + 1000 * i)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)

    def values(start: kafka_client.Start) -> list[str]:
        c = kafka_client.consumer(kafka_bootstrap, "convergence-test")
        try:
            tps = kafka_client.assign_all(c, topic, start=start)
            assert [tp.partition for tp in tps] == [0, 1]
            return sorted(r.value.decode() for r in kafka_client.read_to_end(c, tps, timeout_s=30))
        finally:
            c.close()

    assert values("beginning") == ["m0", "m1", "m2", "m3", "m4", "m5"]
    assert values("end") == []
    assert values(base_ms + 2500) == ["m3", "m4", "m5"]  # the first at or after, per partition
    assert values(base_ms + 2000) == ["m2", "m3", "m4", "m5"]
    assert values(base_ms + 60_000) == []  # nothing that late: the end
    by_partition: dict[int, list[str]] = {0: [], 1: []}
    for r in kafka_client.read_topic(kafka_bootstrap, topic):
        by_partition[r.partition].append(r.value.decode())
    assert by_partition == {0: ["m0", "m2", "m4"], 1: ["m1", "m3", "m5"]}  # in order within each

    missing = f"{topic}-missing"
    assert kafka_client.read_topic(kafka_bootstrap, missing) == []
    c = kafka_client.consumer(kafka_bootstrap, "convergence-test")
    try:
        t0 = time.monotonic()
        assert kafka_client.assign_all(c, missing, wait_s=0.6) == []
        assert 0.5 <= time.monotonic() - t0 < 10
        t0 = time.monotonic()
        assert kafka_client.assign_all(c, missing, wait_s=math.inf, should_stop=lambda: True) == []
        assert time.monotonic() - t0 < 5
    finally:
        c.close()

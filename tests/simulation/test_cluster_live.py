"""The cluster benchmark's live phase: the alert reader on a real broker (``-m kafka``)
notes each alert published after it started, with when it came, and skips what is not
JSON. (The whole live phase, latency included, runs in the bench's own real run in
``test_bench_cluster.py``.)"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from convergence.settings import load_settings
from convergence.simulation.cluster_live import AlertReader


@pytest.mark.kafka
def test_the_alert_reader_notes_new_alerts_and_when_they_came(kafka_bootstrap: str) -> None:
    from kafka import KafkaProducer

    from convergence.streams.topics import ensure_topics

    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": f"bcl-{uuid.uuid4().hex[:8]}"},
                      config_path=None)
    ensure_topics(s, ["alerts"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        producer.send(s.topic("alerts"), value=orjson.dumps({"region": "old"}))
        producer.flush(timeout=30)
        reader = AlertReader(kafka_bootstrap, s.topic("alerts"))  # from the end: "old" unseen
        try:
            t0 = time.time()
            for doc in ({"region": "mena", "level": "converged"}, {"region": "apac"}):
                producer.send(s.topic("alerts"), value=orjson.dumps(doc))
            producer.send(s.topic("alerts"), value=b"not json")
            producer.flush(timeout=30)
            deadline = time.monotonic() + 20.0
            while len(reader.alerts) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the bad message too has been read by now
        finally:
            reader.close()
    finally:
        producer.close(timeout=5)
    assert [d["region"] for _, d in reader.alerts] == ["mena", "apac"]
    assert all(t0 <= at <= time.time() for at, _ in reader.alerts)

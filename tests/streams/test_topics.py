from __future__ import annotations

import dataclasses
import socket
import uuid
from typing import Any

import numpy as np
import orjson
import pytest

from convergence.settings import Settings, load_settings
from convergence.streams.topics import (
    PARTITIONED,
    STATUS_MAX_AGE_S,
    STORED,
    TOPIC_CONFIGS,
    TOPIC_OF_TABLE,
    TOPIC_PARTITIONS,
    TOPICS,
    ClusterError,
    Emit,
    ensure_topics,
    to_json,
    topic_names,
)


def _settings(**env: str) -> Settings:
    return load_settings(env=env, config_path=None)


# -- names and configs --------------------------------------------------------------------------
def test_topics_are_the_fourteen_documented_ones() -> None:
    assert TOPICS == ("events", "node-evidence", "alerts", "reports", "responses", "control",
                      "acks", "dead-letter", "runs", "station-status", "readings",
                      "campaign-shards", "campaign-results", "campaign-cancel")
    assert {"events", "node-evidence"} == PARTITIONED


def test_topic_names_apply_the_prefix() -> None:
    s = _settings(CONVERGENCE_TOPIC_PREFIX="blue")
    names = topic_names(s)
    assert list(names) == list(TOPICS)
    assert names["events"] == "blue-events"
    assert names["dead-letter"] == "blue-dead-letter"
    assert names["station-status"] == "blue-station-status"
    assert len(set(names.values())) == len(TOPICS)


def test_topic_names_of_a_subset_in_the_order_given() -> None:
    s = _settings()
    assert topic_names(s, ["control", "acks"]) == {"control": "convergence-control",
                                                   "acks": "convergence-acks"}
    assert topic_names(s, (n for n in ["runs"])) == {"runs": "convergence-runs"}
    assert topic_names(s, []) == {}


def test_station_status_is_compacted_and_expires_after_a_week() -> None:
    assert set(TOPIC_CONFIGS) <= set(TOPICS)
    cfg = TOPIC_CONFIGS["station-status"]
    assert cfg == {"cleanup.policy": "compact,delete", "retention.ms": "604800000",
                   "segment.ms": "3600000"}
    assert all(isinstance(v, str) for v in cfg.values())  # the admin API wants strings
    assert STATUS_MAX_AGE_S == 120.0


def test_stored_maps_output_topics_to_tables_and_back() -> None:
    assert set(STORED) <= set(TOPICS)
    assert STORED["runs"] == ("run", "run_id")
    assert STORED["responses"] == ("response", "response_id")
    assert TOPIC_OF_TABLE == {"alert": "alerts", "report": "reports", "response": "responses",
                              "dead_letter": "dead-letter", "run": "runs"}
    assert {TOPIC_OF_TABLE[table]: (table, key) for table, key in STORED.values()} == STORED
    # input and control topics are never written to the store
    assert not {"events", "control", "acks", "station-status"} & set(STORED)


# -- messages -----------------------------------------------------------------------------------
def test_emit_is_a_frozen_value() -> None:
    e = Emit("alerts", b"a-1", b'{"n":1}')
    assert e == Emit("alerts", b"a-1", b'{"n":1}')
    assert e != Emit("alerts", b"a-2", b'{"n":1}')
    assert (e.topic, e.key, e.value) == ("alerts", b"a-1", b'{"n":1}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.key = b"other"  # type: ignore[misc]


def test_to_json_is_compact_bytes() -> None:
    out = to_json({"a": [1, 2.5, None], "b": "é", "c": True})
    assert out == b'{"a":[1,2.5,null],"b":"\xc3\xa9","c":true}'


@pytest.mark.parametrize(("value", "expected"), [
    (np.float32(0.5), 0.5),
    (np.int8(-3), -3),
    (np.bool_(True), True),
    (np.arange(3, dtype=np.int32), [0, 1, 2]),
    (np.arange(6).reshape(2, 3).T, [[0, 3], [1, 4], [2, 5]]),  # not C-contiguous: falls back
    (np.array([1, "x"], dtype=object), [1, "x"]),
    (np.float64("nan"), None),
])
def test_to_json_handles_numpy_scalars_and_arrays(value: Any, expected: Any) -> None:
    assert orjson.loads(to_json({"v": value})) == {"v": expected}


def test_to_json_refuses_unknown_objects_by_type_name() -> None:
    class Thing:
        pass

    with pytest.raises(TypeError, match="not JSON serializable: Thing"):
        to_json({"x": Thing()})


# -- ensure_topics without a broker -------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ensure_topics_without_a_broker_says_how_to_start_one() -> None:
    assert issubclass(ClusterError, RuntimeError)
    bootstrap = f"127.0.0.1:{_closed_port()}"
    s = _settings(CONVERGENCE_KAFKA_BOOTSTRAP=bootstrap)
    with pytest.raises(ClusterError) as err:
        ensure_topics(s, ["events"], timeout_s=0.5)
    msg = str(err.value)
    assert msg.startswith(f"cannot reach Kafka at {bootstrap} (")
    assert "`convergence kafka start`" in msg and "CONVERGENCE_KAFKA_BOOTSTRAP / --kafka" in msg


# -- ensure_topics on a real broker -------------------------------------------------------------
@pytest.mark.kafka
def test_ensure_topics_creates_only_the_missing_ones_with_their_configs(kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    s = _settings(CONVERGENCE_KAFKA_BOOTSTRAP=kafka_bootstrap,
                  CONVERGENCE_TOPIC_PREFIX=f"tp{uuid.uuid4().hex[:8]}")
    first = ensure_topics(s, ["events", "station-status"], partitions=2)
    assert sorted(first) == sorted([s.topic("events"), s.topic("station-status")])
    assert ensure_topics(s, ["events", "station-status"]) == []  # idempotent
    assert ensure_topics(s) == [s.topic(n) for n in TOPICS if n not in ("events", "station-status")]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        meta = admin.describe_topics([s.topic("events")])
        assert len(meta[0]["partitions"]) == 2
        # the second stage's topic is split as the first's (the partitions setting); the
        # rest have one partition
        meta = admin.describe_topics([s.topic("node-evidence"), s.topic("alerts")])
        by_name = {m.get("name", m.get("topic")): len(m["partitions"]) for m in meta}
        assert by_name == {s.topic("node-evidence"): s.partitions, s.topic("alerts"): 1}
        # campaign shards keep their own partition count whatever the workers' is
        meta = admin.describe_topics([s.topic("campaign-shards")])
        assert len(meta[0]["partitions"]) == TOPIC_PARTITIONS["campaign-shards"] == 12
        status = s.topic("station-status")
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, status)])
    finally:
        admin.close()
    modified = {k: v["value"] for k, v in res["topic"][status].items()}  # non-default configs only
    assert modified == TOPIC_CONFIGS["station-status"]

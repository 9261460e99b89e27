"""The cluster's topics: names, configs, idempotent creation, and message values.

This module owns what every cluster process (workers, station fleets, the alerts
tail) agrees on about Kafka, and nothing that needs Faust:

* :data:`TOPICS` / :data:`TOPIC_CONFIGS` and their idempotent creation
  (:func:`ensure_topics`; a Faust agent subscribed to a topic that does not exist yet
  never consumes, so topics are created before any worker starts);
* :data:`STORED` - which output topics the store sink writes to which SurrealDB table;
* :class:`Emit` and :func:`to_json` - one message to publish and its JSON value.

Topics (``settings.topic(name)``; values are JSON bytes, keys are ids):

==============  ==========================  =============================================
name            key                         value
==============  ==========================  =============================================
events          station id                  wire batch (:mod:`convergence.wire`)
alerts          alert id                    alert (``prism.build_alert``) + ``run_id``
reports         report id                   report (``prism.synthesize_report``)
responses       response id                 ``Response.to_dict()`` + ``run_id``
control         command id                  ``ControlCommand.to_dict()``
acks            station id                  ``CommandAck.to_dict()`` (from stations)
dead-letter     dead-letter id              ``DeadLetter.to_dict()`` (with its reason)
runs            run id                      a worker's counters, sent when it stops
station-status  station id                  a station agent's state (compacted)
readings        region                      ``RegionReading`` of every region, every tick
campaign-*      campaign id (and shard)     Monte Carlo shards, their results and cancels
                                            (:mod:`convergence.streams.campaign_shards`)
==============  ==========================  =============================================

Examples
--------
>>> STORED["alerts"], TOPIC_OF_TABLE["dead_letter"]
(('alert', 'alert_id'), 'dead-letter')
>>> to_json({"n": 1})
b'{"n":1}'
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from convergence.settings import Settings

#: Every topic of the cluster, by logical name (``settings.topic(name)`` is the real one).
TOPICS: tuple[str, ...] = ("events", "node-evidence", "alerts", "reports", "responses",
                           "control", "acks", "dead-letter", "runs", "station-status",
                           "readings", "campaign-shards", "campaign-results", "campaign-cancel")

#: Topics split over ``settings.partitions`` partitions: the first stage reads events by
#: station, the second node evidence by region. :data:`TOPIC_PARTITIONS` fixes others;
#: every other topic has one partition.
PARTITIONED: frozenset[str] = frozenset({"events", "node-evidence"})

#: Topic configs by logical name. Station status is compacted: the latest status of each
#: station survives, older ones are cleaned up anyway after a week.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    # the first stage's closed ticks for the second: read within seconds, replayed after a
    # failover from the last committed offset; a day covers any outage worth resuming
    "node-evidence": {"cleanup.policy": "delete", "retention.ms": str(86_400_000),
                      "segment.ms": str(3_600_000)},
    # every region's meter every tick, for dashboards: an hour is all anyone looks back
    "readings": {"cleanup.policy": "delete", "retention.ms": str(3_600_000),
                 "segment.ms": str(600_000)},
    "station-status": {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 86_400_000),
                       "segment.ms": str(3_600_000)},
    # a campaign's shards, answers and cancels matter while its client waits: a day is plenty
    "campaign-shards": {"cleanup.policy": "delete", "retention.ms": str(86_400_000)},
    "campaign-results": {"cleanup.policy": "delete", "retention.ms": str(86_400_000)},
    "campaign-cancel": {"cleanup.policy": "delete", "retention.ms": str(86_400_000)},
}

#: Topics whose partition count does not follow the worker's ``--partitions``: campaign
#: shards spread over 12 partitions, so 1, 2, 3, 4, 6 or 12 workers share them evenly;
#: every worker reads the few campaign cancels whole, from one partition.
TOPIC_PARTITIONS: dict[str, int] = {"campaign-shards": 12, "campaign-cancel": 1}

#: A station status older than this (its ``at_s``) is history, not news: a compacted
#: topic still holds the last status of stations that ran long ago.
STATUS_MAX_AGE_S = 120.0

#: Output topic -> (SurrealDB table, id field) for the store sink.
STORED: dict[str, tuple[str, str]] = {
    "alerts": ("alert", "alert_id"),
    "reports": ("report", "report_id"),
    "responses": ("response", "response_id"),
    "dead-letter": ("dead_letter", "dead_letter_id"),
    "runs": ("run", "run_id"),
}

#: SurrealDB table -> output topic (the inverse of :data:`STORED`).
TOPIC_OF_TABLE: dict[str, str] = {table: topic for topic, (table, _) in STORED.items()}


class ClusterError(RuntimeError):
    """The cluster cannot start or run; the message says what to do."""



def topic_names(settings: Settings, names: Iterable[str] = TOPICS) -> dict[str, str]:
    """Logical name -> full topic name."""
    return {n: settings.topic(n) for n in names}


def ensure_topics(settings: Settings, names: Iterable[str] = TOPICS, *,
                  partitions: int | None = None, replication: int = 1,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics (idempotent; safe when several processes race).

    :data:`PARTITIONED` topics get ``partitions`` (default ``settings.partitions``), the
    others one. Returns the full names of the topics this call created. Raises
    :class:`ClusterError` when the broker cannot be reached or refuses.
    """
    split = settings.partitions if partitions is None else partitions
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = list(topic_names(settings, names).values())
    bootstrap = settings.kafka_bootstrap
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 client_id="convergence-admin",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(min(timeout_s, 10.0) * 1000))
    except (KafkaError, OSError) as exc:
        raise ClusterError(
            f"cannot reach Kafka at {bootstrap} ({exc}); start a broker "
            "(`convergence kafka start`, or `cluster up --local-kafka`) or set "
            "CONVERGENCE_KAFKA_BOOTSTRAP / --kafka") from None
    try:
        existing = set(admin.list_topics())  # one metadata request, not one per topic
        missing = [t for t in wanted if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                by_name = {v: k for k, v in topic_names(settings, names).items()}
                admin.create_topics([NewTopic(t, TOPIC_PARTITIONS.get(
                    by_name[t], split if by_name[t] in PARTITIONED else 1),
                                              replication,
                                              topic_configs=TOPIC_CONFIGS.get(by_name[t], {}))
                                     for t in missing])
        deadline = time.monotonic() + timeout_s
        # Creation is asynchronous on the controller; wait until metadata shows every topic,
        # because a consumer that subscribes earlier ignores the missing one for good.
        while set(wanted) - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise ClusterError(f"topics {sorted(set(wanted) - set(admin.list_topics()))} "
                                   f"did not appear on {bootstrap} within {timeout_s:g} s; "
                                   "check the broker log")
            time.sleep(0.1)
        return missing
    except KafkaError as exc:
        raise ClusterError(f"Kafka at {bootstrap} refused to create topics {wanted}: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        admin.close()


def partition_count(settings: Settings, name: str, *, timeout_s: float = 30.0) -> int:
    """How many partitions the topic ``name`` has on the broker (it may have been created
    earlier with another ``partitions`` setting: the broker's count is what holds)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    topic = settings.topic(name)
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","),
                                 client_id="convergence-admin",
                                 request_timeout_ms=int(max(timeout_s, 11.0) * 1000))
    except (KafkaError, OSError) as exc:
        raise ClusterError(f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc})") from None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return len(parts)
            if time.monotonic() > deadline:
                raise ClusterError(f"topic {topic} has no partitions on "
                                   f"{settings.kafka_bootstrap}; was it created?")
            time.sleep(0.2)
    finally:
        consumer.close()


def station_partition(station_id: str, n_partitions: int) -> int:
    """The events partition of a station's messages (keyed by its id): Kafka's default
    partitioner (murmur2, as the Java client, kafka-python and aiokafka all hash keys), so
    a first-stage worker knows its stations before they send anything.

    >>> station_partition("news-eu-001", 1), 0 <= station_partition("news-eu-001", 4) < 4
    (0, True)
    """
    from kafka.partitioner.default import murmur2

    return int(murmur2(station_id.encode("utf-8")) & 0x7FFFFFFF) % max(n_partitions, 1)


def region_partition(region: str, n_partitions: int) -> int:
    """The node-evidence partition (second-stage owner) of a region: a stable hash, the
    same in every process and every run.

    >>> region_partition("mena", 4) == region_partition("mena", 4), region_partition("x", 1)
    (True, 0)
    """
    return zlib.crc32(region.encode("utf-8")) % max(n_partitions, 1)


# -- messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    """One message to publish: logical topic name, key, JSON value."""

    topic: str
    key: bytes
    value: bytes
    #: an explicit partition (``None``: by key)
    partition: int | None = None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(doc: Any) -> bytes:
    """Compact JSON for topic values (numpy scalars and arrays allowed)."""
    return orjson.dumps(doc, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


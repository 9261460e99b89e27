"""The cluster benchmark's side of the broker: filling the backlog, reading it raw,
watching the workers' progress, what crossed between their stages, and cleaning up.

Every function takes the broker's ``bootstrap`` address and talks to it with
kafka-python (the workers themselves are black boxes started by
:mod:`convergence.simulation.bench_cluster`): :func:`fill_backlog` produces the backlog as
the stations' sink would, :func:`raw_consume` is the baseline consume,
:func:`committed_offsets` and :class:`EvidenceWatch` follow the workers' drain,
:func:`stage_figures` reads their own counters once they stopped, and
:func:`delete_run_topics` removes what the run made.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import orjson

from convergence.settings import Settings
from convergence.simulation.cluster_backlog import BacklogPlan, backlog_messages
from convergence.simulation.cluster_figures import OffsetTable, events_before

__all__ = ["EvidenceWatch", "committed_offsets", "count_alerts", "delete_run_topics",
           "fill_backlog", "fleet_producer", "raw_consume", "stage_figures"]


def fleet_producer(bootstrap: str) -> Any:
    """A producer with the stations' own settings (acks=all, idempotent, linger 20 ms)."""
    from kafka import KafkaProducer

    from convergence.ground_stations.kafka_sink import pick_compression

    # the stations' own settings (ground_stations.kafka_sink.KafkaEventSink)
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), client_id="convergence-bench-fill",
                         acks="all", enable_idempotence=True, linger_ms=20,
                         batch_size=256 * 1024, compression_type=pick_compression(),
                         retry_backoff_ms=200, max_block_ms=60_000)


def fill_backlog(bootstrap: str, topic: str, plan: BacklogPlan) -> dict[str, Any]:
    """Produce the plan's backlog to ``topic``; what was sent, and (``_offsets``) the
    :class:`OffsetTable` of where each message landed. Raises :class:`RuntimeError`
    when any message was not written."""
    producer = fleet_producer(bootstrap)
    offsets = OffsetTable()
    n_msgs = n_events = n_bytes = 0
    t0 = time.perf_counter()
    try:
        producer.partitions_for(topic)
        for m in backlog_messages(plan):
            fut = producer.send(topic, key=m.key, value=m.value)
            fut.add_callback(offsets.acked, m.n_events)
            fut.add_errback(offsets.error)
            n_msgs += 1
            n_events += m.n_events
            n_bytes += len(m.value)
        producer.flush()
    finally:
        producer.close(timeout=30)
    elapsed = time.perf_counter() - t0
    if offsets.failed or sum(len(r) for r in offsets.by_partition.values()) != n_msgs:
        raise RuntimeError(f"filling the backlog: {offsets.failed} of {n_msgs} messages failed "
                           f"on {bootstrap}")
    return {"messages": n_msgs, "events": n_events, "bytes": n_bytes, "seconds": round(elapsed, 3),
            "events_per_s": round(n_events / elapsed), "_offsets": offsets}


def raw_consume(bootstrap: str, topic: str, offsets: OffsetTable) -> dict[str, Any]:
    """The baseline: a plain kafka-python consumer reads ``topic`` from its beginning to
    its end, decoding nothing; its rate in events and messages per (CPU) second."""
    from convergence.streams import kafka_client

    end = offsets.end
    table = offsets.table()
    consumer = kafka_client.consumer(bootstrap, "convergence-bench-raw-consume",
                                     auto_offset_reset="earliest")
    try:
        tps = kafka_client.assign_all(consumer, topic, start="beginning")
        msgs = 0
        t0, c0 = time.perf_counter(), time.process_time()
        pos = {tp.partition: 0 for tp in tps}
        deadline = time.monotonic() + 600.0
        while any(pos[p] < e for p, e in end.items()) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                msgs += len(records)
                pos[tp.partition] = records[-1].offset + 1
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        consumer.close()
    events = events_before(table, pos)
    return {"baseline": "kafka-python KafkaConsumer reading the events topic from its beginning to "
                        "its end (no group, no decoding)",
            "seconds": round(elapsed, 3), "messages": msgs, "events": events,
            "events_per_s": round(events / elapsed), "messages_per_s": round(msgs / elapsed),
            "cpu_s": round(cpu, 3), "events_per_cpu_s": round(events / cpu) if cpu > 0 else None}


def committed_offsets(admin: Any, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic``'s partitions ({} before it exists)."""
    try:
        got = admin.list_group_offsets(group).get(group, {})
    except Exception:  # the group does not exist yet (workers still starting)
        return {}
    return {tp.partition: int(om.offset) for tp, om in got.items()
            if tp.topic == topic and om is not None and om.offset is not None and om.offset >= 0}


class EvidenceWatch:
    """Whether the ``node-evidence`` topic holds anything yet (a first-stage worker closed
    its first ticks: it is draining); asks the broker at most twice a second, and says
    True once."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic, self.wanted = bootstrap, topic, True
        self._consumer: Any = None
        self._asked = 0.0

    def handed_on(self) -> bool:
        """True the first time the topic holds a message (then never again)."""
        if not self.wanted or time.monotonic() - self._asked < 0.5:
            return False
        self._asked = time.monotonic()
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap.split(","),
                                               group_id=None, enable_auto_commit=False)
            parts = self._consumer.partitions_for_topic(self.topic) or set()
            ends = self._consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
        except Exception:  # not there yet, or the broker is slow: ask again later
            return False
        if any(ends.values()):
            self.close()
            self.wanted = False
            return True
        return False

    def close(self) -> None:
        """Close its consumer (it can be asked again later)."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None


def count_alerts(bootstrap: str, topic: str) -> int:
    """How many messages the alerts ``topic`` holds."""
    from convergence.streams import kafka_client

    return len(kafka_client.read_topic(bootstrap, topic, timeout_s=10.0))


def stage_figures(bootstrap: str, s: Settings, workers: int) -> dict[str, Any]:
    """What crossed between the stages, from the workers' own counters (the ``runs``
    topic, one record per worker as it stopped) and the ``node-evidence`` topic."""
    from convergence.streams import kafka_client

    runs = [orjson.loads(r.value) for r in kafka_client.read_topic(bootstrap, s.topic("runs"))]
    runs = [r for r in runs if isinstance(r, dict) and isinstance(r.get("pipeline"), dict)]
    pipe = [r["pipeline"] for r in runs]
    core = [r.get("worker") or {} for r in runs]
    station_ticks = sum(int(p.get("station_ticks", 0)) for p in pipe)
    at_baseline = sum(int(p.get("station_ticks_at_baseline", 0)) for p in pipe)
    ne_bytes = ne_msgs = ne_stations = 0
    ticks: set[int] = set()
    for r in kafka_client.read_topic(bootstrap, s.topic("node-evidence"), timeout_s=30.0):
        ne_bytes += len(r.value)
        ne_msgs += 1
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            doc = orjson.loads(r.value)
            if isinstance(doc.get("ne"), dict):
                ticks.add(int(doc["ne"]["tick"]))
                ne_stations += len(doc["ne"].get("stations") or {})
    return {
        "worker_records": len(runs), "workers": workers,
        # events messages each worker took in (re-reads after a rebalance included)
        "messages_per_worker": sorted(int(c.get("messages", 0)) for c in core),
        # every closed tick of every first-stage partition, one per registered station
        "station_ticks": station_ticks, "station_ticks_at_baseline": at_baseline,
        "skipped_share": round(at_baseline / station_ticks, 4) if station_ticks else None,
        "ticks_closed": len(ticks),
        "node_evidence_messages": ne_msgs, "node_evidence_bytes": ne_bytes,
        "station_records": ne_stations,
        "bytes_per_tick": round(ne_bytes / len(ticks)) if ticks else None,
        "bytes_per_station_record": round(ne_bytes / ne_stations) if ne_stations else None,
        "evidence_bytes_counted": sum(int(c.get("evidence_bytes", 0)) for c in core),
        "progress_messages": sum(int(c.get("progress_messages", 0)) for c in core),
    }


def delete_run_topics(bootstrap: str, s: Settings, timeout_s: float = 15.0) -> None:
    """Delete the run's topics (its own and Faust's changelogs) and its consumer group,
    waiting until the broker no longer lists them; best effort."""
    from kafka import KafkaAdminClient

    def ours(names: Sequence[str]) -> list[str]:
        return [t for t in names
                if t.startswith(f"{s.topic_prefix}-") or t.startswith(f"{s.faust_app_id}-")]

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 client_id="convergence-bench-cleanup")
        try:
            names = ours(admin.list_topics())
            if names:
                admin.delete_topics(names)
            with contextlib.suppress(Exception):
                # kafka-python 3 calls it delete_groups (2.x: delete_consumer_groups)
                delete_groups = getattr(admin, "delete_groups", None) or admin.delete_consumer_groups
                delete_groups([s.faust_app_id])
            deadline = time.monotonic() + timeout_s
            while ours(admin.list_topics()) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            admin.close()
    except Exception:  # best effort: a left-over benchmark topic harms nobody
        pass

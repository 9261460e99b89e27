"""Benchmark: events/s one process of synthetic ground stations puts into Kafka, beside a raw producer.

``bench_stations`` runs two phases against a real broker, in one process:

1. **fleet** — ``stations`` :class:`~convergence.ground_stations.agent.StationAgent` s (the
   default fleet's ids, kinds and regions) on one asyncio loop, each polling a synthetic
   source as fast as the loop lets it, into one
   :class:`~convergence.ground_stations.kafka_sink.KafkaEventSink` (``acks="all"``,
   idempotent, the given ``linger_ms``/``batch_size``/compression). Each poll draws the
   next slice of scenario time from the station's synthetic world, so a poll yields about
   ``events_per_poll`` events whatever the wall clock does: the stations are limited by
   CPU only, and message sizes stay steady (a wall-clock source would make bigger and
   bigger batches once the loop falls behind). Timed from the first poll to the flush
   after which every message is acked.
2. **baseline** — a plain kafka-python ``KafkaProducer`` built from the sink producer's
   own settings (copied from its ``config``, so they cannot differ) sends as many
   messages as the fleet did, cycling through a random sample of the fleet's own encoded
   messages and keys (same sizes, same compressibility), counting acks in callbacks as
   the sink does, timed to its final flush.

``ratio_to_baseline`` = fleet events/s ÷ baseline events/s: the share of the raw
producer's throughput that the station stack (synthetic draws, agent loop, wire
encoding, sink bookkeeping) keeps. Both phases share one CPU budget with the broker when
it runs on the same machine, so the ratio is what to compare across machines.

The synthetic world has no episodes and no injected bad records or duplicates: the
figure is clean event throughput. Every message must be acked; a failure raises.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import orjson

from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.base import Source
from convergence.ground_stations.kafka_sink import KafkaEventSink
from convergence.ground_stations.scenario import Scenario, SyntheticWorld, default_fleet
from convergence.ground_stations.synthetic import SyntheticSource

#: producer settings the baseline copies from the sink's producer
SAME_SETTINGS = ("bootstrap_servers", "acks", "enable_idempotence", "linger_ms", "batch_size", "retries",
                 "compression_type", "delivery_timeout_ms", "max_block_ms", "retry_backoff_ms",
                 "max_request_size", "max_in_flight_requests_per_connection", "request_timeout_ms")
SAMPLE_MESSAGES = 2048
STEP_S = 0.01  # scenario seconds drawn per poll


class FastForwardSource(Source):
    """A synthetic source that draws the next ``step_s`` of scenario time at every poll.

    Used only here: it ignores the wall clock so a station polled in a tight loop yields
    steady batches (see module docstring).

    Examples
    --------
    >>> import asyncio
    >>> fleet = [replace(i, rate_per_s=1000.0) for i in default_fleet(5, 1)]
    >>> world = SyntheticWorld(Scenario(fleet, [], 1, bad_rate=0.0, dup_rate=0.0))
    >>> src = FastForwardSource(SyntheticSource(world, 0, t0_s=0.0, seed=1))
    >>> sizes = [len(asyncio.run(src.poll(now_s=0.0))) for _ in range(4)]  # the same clock
    >>> all(0 < n < 30 for n in sizes), src.inner.info.station_id  # ~1000/s * 0.01 s each
    (True, 'news-na-east-000')
    """

    kind = "synthetic"

    def __init__(self, inner: SyntheticSource, step_s: float = STEP_S) -> None:
        if step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.inner = inner
        self.step_s = step_s
        self._t = 0.0

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        t_from, self._t = self._t, self._t + self.step_s
        return self.inner.draw(t_from, self._t)


class _Recording:
    """Wraps the sink's producer: counts bytes and keeps a uniform sample of the messages."""

    def __init__(self, producer: Any, keep: int, seed: int) -> None:
        self._producer = producer
        self.keep = keep
        self.samples: list[tuple[bytes | None, bytes]] = []
        self.messages = 0
        self.bytes = 0
        self._rng = random.Random(seed)

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        value = value or b""
        self.messages += 1
        self.bytes += len(value)
        if len(self.samples) < self.keep:
            self.samples.append((key, value))
        else:  # reservoir sampling: every message equally likely to be kept
            j = self._rng.randrange(self.messages)
            if j < self.keep:
                self.samples[j] = (key, value)
        return self._producer.send(topic, value=value, key=key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="convergence-bench",
                             bootstrap_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        deadline = time.monotonic() + 30.0
        while set(names) - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"benchmark topics {names} did not appear on {bootstrap} within 30 s")
            time.sleep(0.1)
    finally:
        admin.close()


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="convergence-bench")
        try:
            admin.delete_topics(names)
        finally:
            admin.close()
    except Exception:  # best effort: a left-over benchmark topic harms nobody
        pass


def _fleet(stations: int, seed: int, events_per_poll: float, sink: KafkaEventSink,
           t0_s: float) -> Fleet:
    infos = [replace(i, rate_per_s=events_per_poll / STEP_S) for i in default_fleet(stations, seed)]
    world = SyntheticWorld(Scenario(infos, [], seed, bad_rate=0.0, dup_rate=0.0, max_skew_s=0.0))
    # interval 1e-4 s: the agents' own pacing never waits; each poll still yields to the loop
    return Fleet([StationAgent(info, FastForwardSource(SyntheticSource(world, i, t0_s, seed)), sink,
                               interval_s=1e-4, seed=seed) for i, info in enumerate(infos)])


def bench_stations(bootstrap: str, *, stations: int = 247, seconds: float = 10.0,
                   events_per_poll: float = 10.0, seed: int = 7, linger_ms: int = 20,
                   batch_size: int = 256 * 1024, compression: str | None = None,
                   partitions: int = 1, keep_topics: bool = False) -> dict[str, Any]:
    """Fleet events/s through ``KafkaEventSink`` vs raw kafka-python (see module docstring)."""
    if stations < 5:
        raise ValueError(f"stations must be >= 5 (the default fleet needs every kind), got {stations}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if not events_per_poll > 0:
        raise ValueError(f"events_per_poll must be > 0, got {events_per_poll}")
    tag = uuid.uuid4().hex[:10]
    fleet_topic, raw_topic = f"bench-{tag}-stations", f"bench-{tag}-raw"
    _create_topics(bootstrap, [fleet_topic, raw_topic], partitions)
    try:
        fleet_part = _fleet_phase(bootstrap, fleet_topic, stations=stations, seconds=seconds,
                                  events_per_poll=events_per_poll, seed=seed, linger_ms=linger_ms,
                                  batch_size=batch_size, compression=compression)
        base_part = _baseline_phase(bootstrap, raw_topic, fleet_part.pop("_config"),
                                    fleet_part.pop("_samples"), fleet_part["fleet_messages"])
    finally:
        if not keep_topics:
            _delete_topics(bootstrap, [fleet_topic, raw_topic])
    import kafka

    out: dict[str, Any] = {
        "benchmark": "stations", "stations": stations, "seconds": seconds,
        "events_per_poll": events_per_poll, "seed": seed, "partitions": partitions,
        **fleet_part, **base_part,
        "ratio_to_baseline": round(fleet_part["fleet_events_per_s"] / base_part["baseline_events_per_s"], 4),
        "kafka_bootstrap": bootstrap, "kafka_python": kafka.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    return out


def _fleet_phase(bootstrap: str, topic: str, *, stations: int, seconds: float, events_per_poll: float,
                 seed: int, linger_ms: int, batch_size: int, compression: str | None) -> dict[str, Any]:
    sink = KafkaEventSink(bootstrap, topic, client_id="convergence-bench-stations", linger_ms=linger_ms,
                          batch_size=batch_size, compression=compression, wait_metadata=True)
    rec = _Recording(sink.producer, SAMPLE_MESSAGES, seed)
    sink.producer = rec
    fleet = _fleet(stations, seed, events_per_poll, sink, time.time())

    async def run() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        t0 = time.perf_counter()
        await fleet.run(stop)
        sink.flush()  # blocks until every message is acked (or queued for a re-send)
        while sink.pending:  # a re-send after a delivery failure is still in the figure
            sink.flush(timeout_s=1.0)
        return time.perf_counter() - t0

    elapsed = asyncio.run(run())
    counters = sink.close()
    if counters.failed or counters.acked != counters.sent:
        raise RuntimeError(f"benchmark fleet: {counters.failed} message(s) failed, {counters.acked} of "
                           f"{counters.sent} acked, on {bootstrap}; see the log above")
    msgs, events = counters.acked, counters.records_acked
    config = {k: rec.config[k] for k in SAME_SETTINGS}
    return {
        "fleet_seconds": round(elapsed, 4),
        "fleet_messages": msgs, "fleet_events": events, "fleet_bytes": rec.bytes,
        "fleet_events_per_s": round(events / elapsed),
        "fleet_messages_per_s": round(msgs / elapsed),
        "fleet_mb_per_s": round(rec.bytes / elapsed / 1e6, 3),
        "avg_events_per_message": round(events / max(msgs, 1), 2),
        "avg_message_bytes": round(rec.bytes / max(msgs, 1)),
        "polls": sum(a.polls for a in fleet.agents),
        "stations_sending": sum(1 for a in fleet.agents if a.sent > 0),
        "retried": counters.retried,
        "producer": {"acks": "all" if config["acks"] in (-1, "all") else config["acks"],
                     "enable_idempotence": config["enable_idempotence"],
                     "linger_ms": config["linger_ms"], "batch_size": config["batch_size"],
                     "compression": config["compression_type"]},
        "_config": config, "_samples": rec.samples,
    }


def _baseline_phase(bootstrap: str, topic: str, config: dict[str, Any],
                    samples: list[tuple[bytes | None, bytes]], messages: int) -> dict[str, Any]:
    from kafka import KafkaProducer

    if not samples:
        raise RuntimeError("benchmark fleet sent no messages; nothing to compare against")
    counts = [len(orjson.loads(v)["events"]) for _, v in samples]
    producer = KafkaProducer(client_id="convergence-bench-raw", **config)
    producer.partitions_for(topic)  # metadata now, outside the timed loop (as the sink did)
    lock = threading.Lock()
    tally = {"acked": 0, "failed": 0}

    def acked(_meta: Any) -> None:
        with lock:
            tally["acked"] += 1

    def failed(_exc: BaseException) -> None:
        with lock:
            tally["failed"] += 1

    k = len(samples)
    events = 0
    t0 = time.perf_counter()
    for i in range(messages):
        key, value = samples[i % k]
        events += counts[i % k]
        fut = producer.send(topic, value=value, key=key)
        fut.add_callback(acked)
        fut.add_errback(failed)
    producer.flush()
    elapsed = time.perf_counter() - t0
    producer.close(timeout=10)
    if tally["failed"] or tally["acked"] != messages:
        raise RuntimeError(f"benchmark baseline: {tally['failed']} failed, {tally['acked']} of {messages} "
                           f"acked on {bootstrap}")
    return {
        "baseline": "kafka-python KafkaProducer.send of a sample of the fleet's own encoded "
                    "messages, same producer settings",
        "baseline_seconds": round(elapsed, 4),
        "baseline_messages": messages, "baseline_events": events,
        "baseline_events_per_s": round(events / elapsed),
        "baseline_messages_per_s": round(messages / elapsed),
        "baseline_sample_messages": k,
    }

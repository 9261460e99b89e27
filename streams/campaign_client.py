"""Campaign shards, the client's side: run a campaign's chunks on the cluster's workers.

:func:`cluster_chunk_runner` is a ``chunk_runner`` for
:func:`~convergence.simulation.campaign.run_campaign`: it publishes the campaign's shards
(:func:`make_shards`, dealt to the workers in turn: :func:`routes`), collects the
answers of its own campaign (:class:`ResultCollector`: parts joined, the first complete
answer of each shard kept, a failed shard raised as
:class:`~convergence.streams.campaign_orders.ShardFailed`), reports progress
(:class:`ClusterProgress`), and fails with one clear
:class:`~convergence.streams.topics.ClusterError` when nobody answers. A client that
gives up publishes a cancel. Kafka is behind a small :class:`Transport`
(:class:`KafkaTransport`; tests run the very same client against an in-process one). The
exchange as a whole is described in :mod:`convergence.streams.campaign_shards`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from convergence.settings import Settings
from convergence.simulation.campaign import DEFAULT_DETECTOR, ChunkResult
from convergence.streams.campaign_orders import (
    CAMPAIGN_TOPICS,
    Shard,
    ShardFailed,
    code_fingerprint,
    record_from_wire,
)
from convergence.streams.topics import ClusterError

__all__ = [
    "MIN_TTL_S", "STALL_TIMEOUT_S", "START_TIMEOUT_S", "ChunkRunner", "ClusterProgress",
    "KafkaTransport", "ResultCollector", "Transport", "cluster_chunk_runner", "make_shards",
    "routes", "run_on_cluster",
]

log = logging.getLogger(__name__)

#: How long a client waits for the first word from any worker.
START_TIMEOUT_S = 30.0
#: How long a client waits without any word while shards are unfinished: longer than a
#: failover (session timeout, then a rebalance that waits for running shards).
STALL_TIMEOUT_S = 120.0
#: Shards expire after this long at least (or one minute per shard, if more): a client
#: that died without cancelling does not keep the cluster busy for ever.
MIN_TTL_S = 6 * 3600.0


@dataclass
class ClusterProgress:
    """What a client knows while its campaign runs on the cluster (for a progress line)."""

    shards: int
    done: int = 0
    running: int = 0
    workers: int = 0
    reruns: int = 0
    waiting_s: float = 0.0

    def text(self) -> str:
        """A short line for a person.

        >>> ClusterProgress(41, done=3, running=2, workers=2, reruns=1).text()
        'cluster: 3/41 shards, 2 running on 2 workers, 1 re-run'
        >>> ClusterProgress(41, waiting_s=4.2).text()
        'cluster: waiting for a worker (4 s)'
        """
        if not self.workers:
            return f"cluster: waiting for a worker ({self.waiting_s:.0f} s)"
        out = (f"cluster: {self.done}/{self.shards} shards, {self.running} running on "
               f"{self.workers} worker{'s' if self.workers != 1 else ''}")
        if self.reruns:
            out += f", {self.reruns} re-run{'s' if self.reruns != 1 else ''}"
        return out


@dataclass
class _Parts:
    head: dict[str, Any]
    parts: dict[int, list[Any]] = field(default_factory=dict)


class ResultCollector:
    """Gathers one campaign's answers: ignores other campaigns', joins parts, keeps the
    first complete answer of each shard (a shard re-run after a failover answers twice),
    and raises :class:`ShardFailed` for a shard no worker can run.

    ``jobs`` are the campaign's chunks ``(scenario, first, count)``, shard ``i`` being
    ``jobs[i]``. :meth:`add` returns a shard's :class:`ChunkResult` once, when complete.
    """

    def __init__(self, campaign: str, jobs: Sequence[tuple[str, int, int]]) -> None:
        self.campaign = campaign
        self.jobs = list(jobs)
        self.done: set[int] = set()
        self.started_by: dict[int, str] = {}
        self.workers: set[str] = set()
        self.reruns = 0
        self.heard_at = time.monotonic()
        self._parts: dict[int, _Parts] = {}

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.jobs)

    def progress(self) -> ClusterProgress:
        running = sum(1 for s in self.started_by if s not in self.done)
        return ClusterProgress(len(self.jobs), len(self.done), running, len(self.workers),
                               self.reruns)

    def add(self, doc: Any) -> ChunkResult | None:
        """One decoded message from the results topic (see the class docstring)."""
        if not isinstance(doc, dict) or doc.get("campaign") != self.campaign:
            return None
        i, state, worker = doc.get("shard"), doc.get("state"), str(doc.get("worker", "?"))
        if not isinstance(i, int) or not 0 <= i < len(self.jobs) or i in self.done:
            return None
        self.heard_at = time.monotonic()
        self.workers.add(worker)
        scenario, first, count = self.jobs[i]
        where = f"shard {i} ({scenario} runs {first}-{first + count - 1}) on worker {worker}"
        if state in ("failed", "expired"):
            raise ShardFailed(f"{where} {state}: {doc.get('reason', 'no reason given')}")
        if state == "started":
            if i in self.started_by and self.started_by[i] != worker:
                self.reruns += 1
            self.started_by[i] = worker
            return None
        if state != "done":
            return None
        self.started_by.setdefault(i, worker)
        try:
            part, parts = int(doc["part"]), int(doc["parts"])
            got = self._parts.setdefault(i, _Parts({k: doc[k] for k in
                                                    ("station_hours", "events", "seconds")}))
            got.parts.setdefault(part, doc["records"])
            if len(got.parts) < parts:
                return None
            records = [record_from_wire(scenario, r) for k in range(parts) for r in got.parts[k]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardFailed(f"{where}: malformed answer ({type(exc).__name__}: {exc})") from None
        if [r.run for r in records] != list(range(first, first + count)):
            raise ShardFailed(f"{where}: answered runs {records[0].run if records else '-'}.."
                              f"{records[-1].run if records else '-'}, not {first}..{first + count - 1}")
        self.done.add(i)
        del self._parts[i]
        return ChunkResult(scenario, records, float(got.head["station_hours"]),
                           int(got.head["events"]), float(got.head["seconds"]))


def routes(owners: Sequence[Sequence[int]], n: int) -> list[int]:
    """The partitions shards go to, in turn, so consecutive shards land on different workers.

    ``owners`` are the shard partitions each worker of the group owns now (read from the
    group's assignment); shards are dealt to the workers in turn, and to each worker's
    partitions in turn. Owners unknown: the lower and upper halves of the ``n`` partitions
    interleaved (two workers of a fresh group own one half each). A partition that changes
    hands later still gets its shards run, by its new owner.

    >>> routes([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]], 12)[:6]
    [0, 6, 1, 7, 2, 8]
    >>> routes([], 12), routes([], 3)
    ([0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11], [0, 2, 1])
    """
    owned = [list(p) for p in owners if p]
    if owned:
        return [parts[k % len(parts)] for k in range(max(map(len, owned))) for parts in owned]
    half = (n + 1) // 2
    return [p for k in range(half) for p in (k, half + k) if p < n]


class Transport(Protocol):
    """What the client needs from Kafka (a fake one runs the client in unit tests)."""

    def publish(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None: ...
    def partitions(self, topic: str) -> int: ...
    def owners(self, topic: str) -> list[list[int]]: ...
    def flush(self) -> None: ...
    def poll(self, timeout_s: float) -> list[bytes]: ...
    def close(self) -> None: ...


class KafkaTransport:
    """The client's Kafka side: a producer, and a consumer of the results topic that starts
    at its end (so only answers to shards published after it count)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from convergence.streams import kafka_client
        from convergence.streams.topics import ensure_topics

        self.bootstrap = settings.kafka_bootstrap
        self.group = settings.faust_app_id
        ensure_topics(settings, CAMPAIGN_TOPICS, timeout_s=15.0)
        self._consumer = None
        self._producer = None
        try:
            self._consumer = kafka_client.consumer(self.bootstrap, "convergence-campaign-client")
            kafka_client.assign_all(self._consumer, settings.topic("campaign-results"),
                                    start="end", wait_s=15.0)
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","), acks="all", linger_ms=5,
                client_id="convergence-campaign-client",
                bootstrap_timeout_ms=kafka_client.BOOTSTRAP_TIMEOUT_MS)
        except (KafkaError, OSError) as exc:
            self.close()
            raise ClusterError(kafka_client.unreachable(self.bootstrap, exc)) from None

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from kafka.errors import KafkaError

        try:
            yield
        except (KafkaError, OSError) as exc:
            raise ClusterError(f"lost Kafka at {self.bootstrap} while {doing} "
                               f"({type(exc).__name__}: {exc})") from None

    def publish(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None:
        assert self._producer is not None
        with self._errors("publishing shards"):
            self._producer.send(topic, key=key, value=value, partition=partition)

    def partitions(self, topic: str) -> int:
        assert self._producer is not None
        with self._errors(f"reading {topic}'s partitions"):
            return len(self._producer.partitions_for(topic))

    def owners(self, topic: str) -> list[list[int]]:
        """The partitions of ``topic`` each member of the workers' group owns ([] if unknown)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","),
                                     client_id="convergence-campaign-client",
                                     request_timeout_ms=5000, bootstrap_timeout_ms=5000)
            try:
                info = admin.describe_groups([self.group]).get(self.group) or {}
            finally:
                admin.close()
            return [sorted(int(p) for p in a.get("partitions") or [])
                    for m in info.get("members", [])
                    for a in (m.get("member_assignment") or {}).get("assigned_partitions", [])
                    if a.get("topic") == topic and a.get("partitions")]
        except (KafkaError, OSError, AttributeError, TypeError, ValueError) as exc:
            log.info("campaign client: cannot read group %s's assignment (%s); spreading shards "
                     "over the partitions", self.group, exc)
            return []

    def flush(self) -> None:
        assert self._producer is not None
        with self._errors("publishing shards"):
            self._producer.flush(timeout=30.0)

    def poll(self, timeout_s: float) -> list[bytes]:
        assert self._consumer is not None
        with self._errors("reading results"):
            batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [r.value for records in batch.values() for r in records]

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()


ChunkRunner = Callable[[list[tuple[str, int, int]], dict[str, Any]], Iterable[ChunkResult]]


def cluster_chunk_runner(settings: Settings, *, on_progress: Callable[[ClusterProgress], None] | None = None,
                         start_timeout_s: float | None = None, stall_timeout_s: float | None = None,
                         transport: Callable[[Settings], Transport] | None = None) -> ChunkRunner:
    """A ``chunk_runner`` for :func:`~convergence.simulation.campaign.run_campaign` that
    runs the chunks on the cluster's workers (see the module docstring).

    Raises :class:`~convergence.streams.topics.ClusterError` (one line that says what to
    do) when Kafka cannot be reached, no worker answers within ``start_timeout_s``
    (default :data:`START_TIMEOUT_S`), the cluster goes silent for ``stall_timeout_s``
    (default :data:`STALL_TIMEOUT_S`) with shards unfinished, or a shard fails.

    >>> from convergence.settings import load_settings
    >>> runner = cluster_chunk_runner(load_settings(env={}, config_path=None))
    >>> callable(runner)
    True
    """

    def runner(jobs: list[tuple[str, int, int]], kw: dict[str, Any]) -> Iterator[ChunkResult]:
        return run_on_cluster(settings, jobs, kw, on_progress=on_progress,
                              start_timeout_s=START_TIMEOUT_S if start_timeout_s is None
                              else start_timeout_s,
                              stall_timeout_s=STALL_TIMEOUT_S if stall_timeout_s is None
                              else stall_timeout_s,
                              transport=transport or KafkaTransport)

    return runner


def make_shards(campaign: str, jobs: Sequence[tuple[str, int, int]], kw: Mapping[str, Any],
                now_s: float) -> list[Shard]:
    """The shards of a campaign's chunks; ``kw`` as :func:`run_campaign` passes it."""
    ttl = max(MIN_TTL_S, 60.0 * len(jobs))
    code = code_fingerprint()
    return [Shard(campaign, i, s, first, count, int(kw["seed"]), kw["space"], bool(kw["sweep"]),
                  kw.get("mode", "cells"), kw.get("detector", DEFAULT_DETECTOR), code, now_s + ttl)
            for i, (s, first, count) in enumerate(jobs)]


def run_on_cluster(settings: Settings, jobs: list[tuple[str, int, int]], kw: Mapping[str, Any], *,
                   on_progress: Callable[[ClusterProgress], None] | None = None,
                   start_timeout_s: float = START_TIMEOUT_S,
                   stall_timeout_s: float = STALL_TIMEOUT_S,
                   transport: Callable[[Settings], Transport] = KafkaTransport,
                   poll_s: float = 0.5) -> Iterator[ChunkResult]:
    """Publish the shards, yield each chunk's result as it completes (in any order)."""
    campaign = f"{kw['seed']}-{uuid.uuid4().hex[:12]}"
    shards = make_shards(campaign, jobs, kw, time.time())
    t = transport(settings)
    collector = ResultCollector(campaign, jobs)
    try:
        topic = settings.topic("campaign-shards")
        order = routes(t.owners(topic), max(1, t.partitions(topic)))
        for sh in shards:
            t.publish(topic, sh.key, sh.to_json(), order[sh.shard % len(order)])
        t.flush()
        t0 = last_note = time.monotonic()
        collector.heard_at = t0
        while not collector.complete:
            for value in t.poll(poll_s):
                try:
                    doc = orjson.loads(value or b"")
                except orjson.JSONDecodeError:
                    continue
                res = collector.add(doc)
                if res is not None:
                    yield res
            now = time.monotonic()
            if on_progress is not None and (now - last_note >= 0.5 or collector.complete):
                last_note = now
                p = collector.progress()
                p.waiting_s = now - t0
                on_progress(p)
            if not collector.workers and now - t0 > start_timeout_s:
                raise ClusterError(
                    f"no cluster worker took the campaign's shards within {start_timeout_s:g} s; "
                    f"is `convergence cluster up` running with the same CONVERGENCE_TOPIC_PREFIX "
                    f"({settings.topic_prefix}) on Kafka at {settings.kafka_bootstrap}?")
            if collector.workers and not collector.complete and now - collector.heard_at > stall_timeout_s:
                raise ClusterError(
                    f"the cluster stopped answering: {len(jobs) - len(collector.done)} of "
                    f"{len(jobs)} shards unfinished and no word from any worker for "
                    f"{stall_timeout_s:g} s; see `convergence cluster status`")
    finally:
        if not collector.complete:
            with contextlib.suppress(Exception):
                t.publish(settings.topic("campaign-cancel"), campaign.encode(),
                          orjson.dumps({"campaign": campaign, "at_s": time.time()}), None)
                t.flush()
        t.close()

"""Cluster mode: the Faust worker that runs the pipeline on a real Kafka broker.

This module owns the Faust wiring and the store, nothing else:

* :class:`StoreSink` - the one writer to SurrealDB: it consumes the alerts, reports,
  responses and dead-letter topics in its own consumer group and upserts them through
  a :class:`~convergence.store.writer.BatchedWriter`, committing offsets only after the
  store confirmed the writes (at-least-once; ids are deterministic, so upserts are
  idempotent);
* :func:`build_worker` / :func:`build_app` / :func:`run_worker` - the Faust app of one
  worker (the ingest agent, the idle timer, the station-status agent, the summary and
  checkpoint tables, the store sink) and a foreground worker.

The topics and message values live in :mod:`convergence.streams.topics`, the
worker's logic (watermark, micro-batched ingest, checkpoints, the scaling model) in
:mod:`convergence.streams.worker`; their public names are importable from here too.

Store ownership. An embedded ``surrealkv://`` file may be open in one process only,
so exactly one worker runs the :class:`StoreSink` (``store=True``); the others are
started with ``store=False``. With a SurrealDB server (``ws://``) every worker may
run one: the sinks share their consumer group's partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from convergence.settings import Settings
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter
from convergence.streams.faust_config import faust_app_options
from convergence.streams.metrics import WorkerMetrics
from convergence.streams.topics import (
    STATUS_MAX_AGE_S,
    STORED,
    TOPIC_CONFIGS,
    TOPIC_OF_TABLE,
    TOPICS,
    ClusterError,
    Emit,
    ensure_topics,
    to_json,
    topic_names,
)
from convergence.streams.worker import (
    CHECKPOINT_VERSION,
    MAX_STATIONS_IN_SUMMARY,
    NOT_CHECKPOINTED,
    CoreCounters,
    EventTimeWatermark,
    WorkerCore,
    checkpoint_stages,
)

if TYPE_CHECKING:
    import faust

__all__ = [
    "CHECKPOINT_VERSION", "MAX_STATIONS_IN_SUMMARY", "NOT_CHECKPOINTED", "STATUS_MAX_AGE_S",
    "STORED", "TOPICS", "TOPIC_CONFIGS", "TOPIC_OF_TABLE", "ClusterError", "CoreCounters", "Emit",
    "EventTimeWatermark", "StoreSink", "WorkerCore", "WorkerParts", "build_app", "build_worker",
    "checkpoint_stages", "ensure_topics", "run_worker", "to_json", "topic_names",
]

log = logging.getLogger(__name__)


# -- the store sink ----------------------------------------------------------------


class StoreSink:
    """Consumes the output topics and upserts them into SurrealDB (see module docstring).

    """

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 drain_timeout_s: float = 20.0, poll_timeout_ms: int = 500) -> None:
        self.settings = settings
        self.topics = {settings.topic(n): n for n in STORED}
        self.group_id = group_id or f"{settings.faust_app_id}-store"
        self.drain_timeout_s = drain_timeout_s
        self.poll_timeout_ms = poll_timeout_ms
        self.stored = 0
        self.skipped = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._store: SurrealStore | None = None
        self._writer: BatchedWriter | None = None
        self._router: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from convergence.store.graph import ReportGraph
        from convergence.streams.pipeline import RecordRouter

        self._store = SurrealStore.from_settings(self.settings)
        await self._store.open()
        self._writer = BatchedWriter(self._store, seed=self.settings.seed, name="cluster-store")
        graph = ReportGraph(self._writer)
        await graph.load(self._store)
        self._router = RecordRouter(self._writer, graph)
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.settings.kafka_bootstrap.split(","),
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            client_id=f"{self.group_id}-{socket.gethostname()}-{os.getpid()}")
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._run())
        log.info("store sink: %s -> %s (group %s)", sorted(self.topics), self._store.url,
                 self.group_id)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._poll(self.poll_timeout_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker hiccup: nothing was committed, just go again
                log.warning("store sink: poll failed (%s: %s); retrying in 1 s",
                            type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _poll(self, timeout_ms: int) -> int:
        assert self._consumer is not None and self._writer is not None
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        n = 0
        for msgs in batch.values():
            for m in msgs:
                n += self._submit(m.topic, m.partition, m.offset, m.value)
        if batch:
            await self._flush_then_commit()
        return n

    async def _flush_then_commit(self) -> None:
        # Commit only what the store confirmed: a crash or a dead database means the next
        # sink re-reads these records, never that they are lost. While the database is
        # down we wait here (no new fetches: backpressure), re-checking for a stop.
        assert self._consumer is not None and self._writer is not None
        while True:
            try:
                await self._writer.flush(timeout=5.0)
                break
            except StoreError as exc:
                if self._stopping:
                    raise
                log.warning("store sink: %s; nothing is committed until it is written", exc)
        await self._consumer.commit()

    def _submit(self, topic: str, partition: int, offset: int, value: bytes | None) -> int:
        assert self._writer is not None
        table, id_field = STORED[self.topics[topic]]
        try:
            doc = orjson.loads(value or b"")
            rid = doc[id_field]
            if not isinstance(rid, str) or not rid:
                raise ValueError(f"{id_field} is {rid!r}")
            self._router.submit(table, rid, doc)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # Not ours to repair; the message stays on the topic for whoever investigates.
            self.skipped += 1
            log.error("store sink: skipping %s[%d]@%d, not a valid %s record: %s", topic,
                      partition, offset, table, exc)
            return 0
        self.stored += 1
        return 1

    async def stop(self) -> None:
        """Drain the topics up to their current end, write the run record, close."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, self.poll_timeout_ms / 1000 + 5.0)
        consumer, writer = self._consumer, self._writer
        try:
            if consumer is not None and writer is not None:
                await self._drain()
                try:
                    await writer.close(timeout=self.drain_timeout_s)
                except StoreError as exc:
                    # Their offsets were never committed: the next sink writes them.
                    log.error("store sink: %s", exc)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            if self._store is not None:
                await self._store.close()
        log.info("store sink stopped: %d records stored, %d skipped", self.stored, self.skipped)

    async def _drain(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            tps = list(consumer.assignment())
            end = await consumer.end_offsets(tps) if tps else {}
            while time.monotonic() < deadline:
                behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
                if not behind:
                    return
                await self._poll(200)
            log.error("store sink: still behind on %s after %g s; those records stay on the "
                      "topics (offsets not committed) for the next sink", tps,
                      self.drain_timeout_s)
        except Exception as exc:
            log.error("store sink: draining before stop failed: %s: %s", type(exc).__name__, exc)


# -- the Faust app ------------------------------------------------------------------


@dataclass
class WorkerParts:
    """What :func:`build_app` wired together (for tests and the CLI)."""

    app: faust.App
    core: WorkerCore
    sink: StoreSink | None
    topics: dict[str, Any] = field(default_factory=dict)


def build_app(settings: Settings, *, store: bool = True, partitions: int = 1,
              core: WorkerCore | None = None, idle_interval_s: float = 0.25,
              metrics: WorkerMetrics | None = None) -> faust.App:
    """The Faust app of one worker (see :func:`build_worker` for its parts)."""
    return build_worker(settings, store=store, partitions=partitions, core=core,
                        idle_interval_s=idle_interval_s, metrics=metrics).app


def build_worker(settings: Settings, *, store: bool = True, partitions: int = 1,
                 core: WorkerCore | None = None, idle_interval_s: float = 0.25,
                 metrics: WorkerMetrics | None = None) -> WorkerParts:
    """Wire a Faust app: topics, the ingest agent, the idle timer, tables, the store sink.

    ``metrics`` (counted by the core it builds) is what the worker's Prometheus
    endpoint serves; ignored when ``core`` is given (it has its own)."""
    import faust
    from faust.types import TP
    from mode import Service

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    datadir = settings.data_dir / "faust" / settings.faust_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.faust_app_id,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,  # no HTTP port: several workers share a host without clashing
        topic_partitions=partitions,
        autodiscover=False,
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        **faust_app_options(settings),  # session/heartbeat timeouts (failover), client id
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    topics = {n: app.topic(settings.topic(n), **raw) for n in TOPICS}  # type: ignore[arg-type]
    host = f"{socket.gethostname()}-{os.getpid()}"
    run_id = f"cluster-{settings.faust_app_id}-{host}-{int(time.time())}"
    summaries = app.Table("station-summary", default=None, partitions=partitions)
    checkpoints = app.Table("detector-state", default=None, partitions=partitions)
    if core is None:
        core = WorkerCore(settings, summaries=summaries, checkpoints=checkpoints, run_id=run_id,
                          metrics=metrics)
    the_core = core
    events_topic = settings.topic("events")
    last_offset: dict[int, int] = {}
    timer_error_at = [-math.inf]

    async def publish(emits: Sequence[Emit]) -> None:
        for e in emits:
            await topics[e.topic].send(key=e.key, value=e.value)

    @app.agent(topics["events"], name="convergence-ingest")
    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            wall = time.time()
            try:
                emits = the_core.on_message(event.value, event.key, wall,
                                            partition=msg.partition)
            except Exception as exc:
                # A bug met by one message must not stop the stream (Faust would crash
                # the agent): keep the message as a dead letter and go on.
                log.exception("worker: message %s[%d]@%d raised %s; dead-lettered it and "
                              "continuing - please report this with the dead letter",
                              msg.topic, msg.partition, msg.offset, type(exc).__name__)
                emits = the_core.internal_error(event.value, event.key, exc, wall)
            last_offset[msg.partition] = msg.offset
            await publish(emits)

    @app.agent(topics["station-status"], name="convergence-station-status")
    async def station_status(stream: Any) -> None:
        async for value in stream:
            the_core.on_station_status(value, time.time())

    def caught_up() -> bool:
        # Idle advance only once the consumer has read everything in Kafka: a pause in
        # fetching (startup, rebalance, GC) must not close ticks ahead of the backlog.
        for p, off in last_offset.items():
            try:
                hw = app.consumer.highwater(TP(events_topic, p))
            except Exception:
                continue
            if hw is not None:
                the_core.metrics.lag(p, hw - off - 1)
            if hw is not None and off + 1 < hw:
                return False
        return True

    @app.timer(interval=idle_interval_s, name="convergence-idle-ticks")  # type: ignore[untyped-decorator]
    async def idle_ticks() -> None:
        try:
            emits = the_core.on_timer(time.time(), caught_up=caught_up())
        except Exception:
            # Logged at most every 30 s: this runs 4 times a second.
            now = time.monotonic()
            if now - timer_error_at[0] >= 30.0:
                timer_error_at[0] = now
                log.exception("worker: closing ticks failed; retrying every %g s",
                              idle_interval_s)
            return
        await publish(emits)

    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        mine = {tp.partition for tp in assigned if tp.topic == events_topic}
        if the_core.on_assignment(mine):
            last_offset.clear()

    async def before_shutdown(sender: Any, *args: Any, signal: Any = None,
                              **kwargs: Any) -> None:
        # Its counters go out last; the store sink (here or in another worker) stores them.
        await publish([*the_core.on_stop(), the_core.run_record()])
        log.warning("worker stopping: %s", orjson.dumps(
            {k: v for k, v in the_core.summary().items() if k != "stations"}).decode())

    # mode types connect() oddly (a union of callables); the receivers match what it calls.
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(before_shutdown)  # type: ignore[arg-type]

    from convergence.streams.campaign_shards import register_campaign_agent
    register_campaign_agent(app, settings, topics)  # `montecarlo run --cluster`'s shards

    sink = StoreSink(settings) if store else None
    if sink is not None:
        the_sink = sink

        class StoreSinkService(Service):
            """Runs the store sink as a child of the app: it stops after the app's own
            on_stop has flushed the producer, so it can drain everything emitted."""

            async def on_start(self) -> None:
                await the_sink.start()

            async def on_stop(self) -> None:
                await the_sink.stop()

        app.service(StoreSinkService)
    return WorkerParts(app, core, sink, topics)


async def _probe_store(settings: Settings) -> None:
    store = SurrealStore.from_settings(settings)
    await store.open()
    await store.close()


def run_worker(settings: Settings, *, loglevel: str = "warning", store: bool = True,
               partitions: int = 1, metrics: WorkerMetrics | None = None) -> NoReturn:
    """Run one worker in the foreground until SIGTERM/SIGINT; exits the process.

    Creates the topics first and, with ``store``, checks the database can be opened,
    so a misconfiguration fails here with one clear :class:`ClusterError` or
    :class:`~convergence.store.surreal.StoreError` instead of inside Faust.
    """
    import faust

    ensure_topics(settings, partitions=partitions)
    if store:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_probe_store(settings))
        finally:
            loop.close()
    app = build_app(settings, store=store, partitions=partitions, metrics=metrics)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # No terminal spinner: it writes cursor escapes into log files, and to spin on every
    # record it lowers the root logger to DEBUG, which costs CPU on a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()

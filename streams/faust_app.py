"""Cluster mode: the Faust worker that runs the pipeline on a real Kafka broker.

This module owns the Faust wiring and the store, nothing else:

* :class:`StoreSink` - the one writer to SurrealDB: it consumes the alerts, reports,
  responses and dead-letter topics in its own consumer group and upserts them through
  a :class:`~convergence.store.writer.BatchedWriter`, committing offsets only after the
  store confirmed the writes (at-least-once; ids are deterministic, so upserts are
  idempotent);
* :class:`StatusFollower` - every station's status, read whole by every worker (the
  station directory: kind, region, correlation group; dark stations);
* :func:`build_worker` / :func:`build_app` / :func:`run_worker` - the Faust app of one
  worker, which runs *both* stages for the partitions it owns: the first-stage agent on
  ``events`` (ingest, per-station detectors, node evidence out), the second-stage agent
  on ``node-evidence`` (per-region convergence, alerts and reports out), the idle
  timer, the tables (station summaries, detector checkpoints, first-stage progress,
  region state) and the store sink. The first stage receives the events topic's
  messages a fetch at a time (:mod:`convergence.streams.faust_batches`), not one by
  one through Faust's stream: Faust's per-message machinery cost more than the worker's
  own decoding of the events in them.

Offsets are committed only once what a message carried has been handed on: an events
message once the ticks of its events have closed and their evidence is published, a
node-evidence message once its tick is in the region state's checkpoint. A killed
worker's successor therefore reads again from there: nothing is lost; what is
published twice carries the same ids.

The topics and message values live in :mod:`convergence.streams.topics`, the
first stage's logic (watermark, micro-batched ingest, checkpoints) in
:mod:`convergence.streams.worker`, the second's in
:mod:`convergence.streams.region_core`; their public names are importable from here too.

Store ownership. An embedded ``surrealkv://`` file may be open in one process only,
so exactly one worker runs the :class:`StoreSink` (``store=True``); the others are
started with ``store=False``. With a SurrealDB server (``ws://``) every worker may
run one: the sinks share their consumer group's partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import orjson

from convergence.settings import Settings
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter
from convergence.streams.directory import StationDirectory
from convergence.streams.faust_batches import deliver_in_batches
from convergence.streams.faust_config import faust_app_options
from convergence.streams.metrics import WorkerMetrics
from convergence.streams.publisher import GuardedPublisher, quiet_faust_send_errors
from convergence.streams.region_core import RegionCore
from convergence.streams.topics import (
    STATUS_MAX_AGE_S,
    STORED,
    TOPIC_CONFIGS,
    TOPIC_OF_TABLE,
    TOPICS,
    ClusterError,
    Emit,
    ensure_topics,
    partition_count,
    to_json,
    topic_names,
)
from convergence.streams.worker import (
    CHECKPOINT_VERSION,
    MAX_STATIONS_IN_SUMMARY,
    NOT_CHECKPOINTED,
    CoreCounters,
    EventTimeWatermark,
    InMessage,
    WorkerCore,
    checkpoint_stages,
)

if TYPE_CHECKING:
    import faust

__all__ = [
    "CHECKPOINT_VERSION", "MAX_STATIONS_IN_SUMMARY", "NOT_CHECKPOINTED", "STATUS_MAX_AGE_S",
    "STORED", "TOPICS", "TOPIC_CONFIGS", "TOPIC_OF_TABLE", "ClusterError", "CoreCounters", "Emit",
    "EventTimeWatermark", "RegionCore", "StatusFollower", "StoreSink", "WorkerCore",
    "WorkerParts", "build_app", "build_worker", "checkpoint_stages", "ensure_topics",
    "rewind_uncommitted", "run_worker", "to_json", "topic_names",
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


# -- following the stations' status ---------------------------------------------------


class StatusFollower:
    """Reads the whole compacted ``station-status`` topic (every partition, no consumer
    group: every worker needs every station's facts) into the station directory, and
    hands each status to both stages (unknown stations' held events, dark stations)."""

    def __init__(self, settings: Settings, on_status: Any, *, poll_timeout_ms: int = 500) -> None:
        self.settings = settings
        self.on_status = on_status
        self.poll_timeout_ms = poll_timeout_ms
        self.read = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.settings.topic("station-status")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap.split(","), group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            client_id=f"{self.settings.faust_app_id}-status-{os.getpid()}")
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(topic) or {0}
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self._consumer.getmany(timeout_ms=self.poll_timeout_ms,
                                                     max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker hiccup: read on
                log.warning("station status: read failed (%s: %s); retrying in 1 s",
                            type(exc).__name__, exc)
                await asyncio.sleep(1.0)
                continue
            for msgs in batch.values():
                for m in msgs:
                    self.read += 1
                    try:
                        self.on_status(m.value, time.time())
                    except Exception:
                        log.exception("station status: applying %s[%d]@%d failed; skipped",
                                      m.topic, m.partition, m.offset)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


# -- the Faust app ------------------------------------------------------------------

#: a consumer that has had no fetch response for a partition this long cannot reach the
#: broker (or is paused behind a full buffer): wall time must not advance event time then
REACH_S = 5.0


def rewind_uncommitted(consumer: Any, skip: Callable[[Any], bool] | None = None) -> None:
    """Make ``consumer.seek_to_committed`` also rewind, to the beginning, every partition
    that has no committed offset (or offset 0); ``skip(tp)`` exempts partitions (Faust's
    changelogs, which recovery positions itself).

    Why. A Faust consumer takes whatever aiokafka has prefetched in one batch, and the
    fetch position moves past all of it at once. What it has fetched but not delivered
    when a rebalance starts (the rest of the batch, its stream buffers, records of
    partitions table recovery paused) it drops, relying on seeking back to the
    committed offsets afterwards. But aiokafka's
    ``seek_to_committed`` leaves a partition with no committed offset (or offset 0)
    where it is (aiokafka issue 1003, open): the dropped records are never delivered,
    their partition never commits, and its ticks never close. A worker on a pre-filled
    backlog commits only once its events' ticks close, so a rebalance in its first
    seconds (a second worker joining) met exactly that: the stall of issue 8.

    Works on Faust's consumer (``earliest_offsets`` and ``seek``) and on aiokafka's own
    (``seek_to_beginning``); ``seek_to_committed()`` returns partition -> committed
    offset (``None``: none).
    """
    original = consumer.seek_to_committed

    async def seek_to_committed() -> Any:
        committed = await original()
        fresh = [tp for tp, off in committed.items()
                 if (off is None or off <= 0) and not (skip is not None and skip(tp))]
        if fresh:
            log.debug("no committed offset for %s: reading them from the beginning",
                      sorted(f"{tp.topic}[{tp.partition}]" for tp in fresh))
            to_beginning = getattr(consumer, "seek_to_beginning", None)
            if to_beginning is not None:  # aiokafka's consumer
                await to_beginning(*fresh)
            else:  # Faust's: it seeks to offsets (and forgets what it had read there)
                for tp, offset in (await consumer.earliest_offsets(*fresh)).items():
                    await consumer.seek(tp, offset)
        return committed

    consumer.seek_to_committed = seek_to_committed


@dataclass
class WorkerParts:
    """What :func:`build_worker` wired together (for tests and the CLI)."""

    app: faust.App
    core: WorkerCore
    region: RegionCore
    sink: StoreSink | None
    directory: StationDirectory
    topics: dict[str, Any] = field(default_factory=dict)


def build_app(settings: Settings, *, store: bool = True, partitions: int | None = None,
              core: WorkerCore | None = None, idle_interval_s: float = 0.25,
              metrics: WorkerMetrics | None = None) -> faust.App:
    """The Faust app of one worker (see :func:`build_worker` for its parts)."""
    return build_worker(settings, store=store, partitions=partitions, core=core,
                        idle_interval_s=idle_interval_s, metrics=metrics).app


_internals_said: set[str] = set()


def _internals_failed(what: str, exc: Exception) -> None:
    """Say once per kind that the consumer's internals could not be read: the worker then
    treats its partitions as behind (never idle-advanced), which is safe but slow - an
    aiokafka or Faust upgrade that renamed them must not go unnoticed."""
    if what in _internals_said:
        return
    _internals_said.add(what)
    log.warning("worker: cannot read the Kafka consumer's %s (%s: %s); partitions count as "
                "behind, so ticks close only as events arrive - was aiokafka or faust-streaming "
                "upgraded? (`pip show aiokafka faust-streaming`) Report it with the versions",
                what, type(exc).__name__, exc)


def _fetch_view(app: Any, tp: Any) -> tuple[int | None, int | None, float | None]:
    """(position, highwater, last fetch response in ms) of one partition, from the
    worker's Kafka consumer; ``None`` for what it does not know (yet).

    >>> _fetch_view(object(), ("events", 0))   # no consumer there: nothing known, said once
    (None, None, None)
    """
    try:
        consumer = app.consumer._thread._ensure_consumer()
        state = consumer._subscription.subscription.assignment.state_value(tp)
        if state is None:
            return None, None, None
        position = state.position if state.has_valid_position else None
        return position, state.highwater, state.timestamp
    except Exception as exc:
        _internals_failed("fetch state", exc)
        return None, None, None


def _committed_offset(app: Any, tp: Any) -> int | None:
    """The worker's consumer group's committed offset of one partition, as the worker's
    consumer last learnt or made it (``None``: none known)."""
    try:
        value = app.consumer._committed_offset.get(tp)
        return int(value) if value is not None else None
    except Exception as exc:
        _internals_failed("committed offsets", exc)
        return None


def build_worker(settings: Settings, *, store: bool = True, partitions: int | None = None,
                 n_units: int | None = None, core: WorkerCore | None = None,
                 idle_interval_s: float = 0.25, metrics: WorkerMetrics | None = None,
                 directory: StationDirectory | None = None) -> WorkerParts:
    """Wire a Faust app: topics, both stages' agents, the idle timer, tables, the store sink.

    ``partitions``: of the events topic (default ``settings.partitions``; pass the
    broker's count, see :func:`run_worker`); ``n_units``: of the node-evidence topic
    (default the same). ``metrics`` (counted by the cores it builds) is what the
    worker's Prometheus endpoint serves; ``directory`` the station facts (default: the
    fleet file of ``settings.fleet``, then status messages).
    """
    import faust
    from faust.types import TP

    n_src = settings.partitions if partitions is None else partitions
    n_q = n_src if n_units is None else n_units
    if n_src < 1 or n_q < 1:
        raise ValueError(f"partitions must be >= 1, got {n_src} and {n_q}")
    datadir = settings.data_dir / "faust" / settings.faust_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.faust_app_id,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,  # no HTTP port: several workers share a host without clashing
        topic_partitions=n_src,
        autodiscover=False,
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        **faust_app_options(settings),  # session/heartbeat timeouts (failover), client id
    )
    # after every rebalance Faust seeks back to the committed offsets; records it fetched
    # and dropped must come back also where nothing was committed yet
    rewind_uncommitted(app.consumer, skip=lambda tp: tp.topic in app.tables.changelog_topics)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    topics = {n: app.topic(settings.topic(n), **raw) for n in TOPICS}  # type: ignore[arg-type]
    host = f"{socket.gethostname()}-{os.getpid()}"
    run_id = f"cluster-{settings.faust_app_id}-{host}-{int(time.time())}"
    directory = directory if directory is not None else StationDirectory.from_settings(settings)
    # first stage: co-partitioned with the events topic; second: with node-evidence
    summaries = app.Table("station-summary", default=None, partitions=n_src)
    checkpoints = app.Table("detector-state", default=None, partitions=n_src)
    progress = app.Table("stage1-progress", default=None, partitions=n_src)
    region_state = app.Table("region-state", default=None, partitions=n_q)
    if metrics is None:
        metrics = WorkerMetrics()
    if core is None:
        core = WorkerCore(settings, directory=directory, stations_only=True, n_sources=n_src,
                          n_units=n_q,
                          summaries=summaries, checkpoints=checkpoints, progress=progress,
                          run_id=run_id, metrics=metrics)
    the_core = core
    region = RegionCore(settings, directory, n_sources=n_src, n_units=n_q, run_id=run_id,
                        table=region_state, metrics=the_core.metrics)
    events_topic = settings.topic("events")
    evidence_topic = settings.topic("node-evidence")
    last_offset: dict[int, int] = {}
    timer_error_at = [-math.inf]
    # offsets are committed only once what a message carried is handed on: events once
    # their ticks closed (first stage), evidence once its tick is in a checkpoint (second)
    held_events: list[tuple[int, int, int, Any]] = []  # heap of (max tick, offset, partition, event)
    held_evidence: dict[int, list[tuple[int, int, Any]]] = {}  # partition -> heap (tick, offset, event)
    seq = [0]

    async def send(e: Emit) -> Any:
        # what ``topic.send`` does, keeping hold of the promise: the publisher reads its
        # outcome (a refused message is counted, and never left as an unread error)
        topic = topics[e.topic]
        promise = topic.as_future_message(key=e.key, value=e.value, partition=e.partition)
        await topic.publish_message(promise)
        return promise

    # a message the broker will never take (too large for it) is counted, logged once per
    # kind and dropped; the worker goes on (issue 11, item 3)
    publisher = GuardedPublisher(send)
    quiet_faust_send_errors()
    the_core.summary_parts["publish"] = publisher.summary

    async def publish(emits: Sequence[Emit]) -> None:
        await publisher.publish(emits)

    def ack_events() -> None:
        closed = the_core.closed_before
        while held_events and closed is not None and held_events[0][0] < closed:
            heapq.heappop(held_events)[3].ack()

    def ack_evidence(q: int) -> None:
        heap = held_evidence.get(q)
        saved = region.saved_tick(q)
        while heap and saved is not None and heap[0][0] <= saved:
            heapq.heappop(heap)[2].ack()

    # Events messages wait here and go to the core together (see ``INBOX_*``): what a
    # message costs apart from its events is then paid once per batch. The first waits
    # at most the core's ``batch_wait_s`` (a message that arrives alone, live, goes on
    # then). A rebalance empties it (nothing in it was processed or acknowledged, so Faust
    # delivers those messages again from the committed offsets).
    inbox: list[Any] = []
    inbox_bytes = [0]
    handing = asyncio.Lock()  # one batch at a time: their outputs go out in order

    async def flush_inbox() -> None:
        async with handing:
            if inbox:
                batch = inbox[:]
                inbox.clear()
                await hand_over(batch)

    flushing: set[asyncio.Future[None]] = set()

    def flush_soon() -> None:
        task = asyncio.ensure_future(flush_inbox())
        flushing.add(task)
        task.add_done_callback(flushing.discard)

    async def hand_over(batch: list[Any]) -> None:
        wall = time.time()
        ticks: list[int | None]
        try:
            latest: dict[int, Any] = {e.message.partition: e for e in batch}
            emits = the_core.on_messages(
                [InMessage(e.value, e.key, e.message.partition, e.message.offset)
                 for e in batch], wall, tables_in=lambda p: as_current_event(latest[p]))
            ticks = the_core.last_max_ticks
        except Exception as exc:
            # A bug met by these messages must not stop the stream (Faust would crash the
            # agent): keep each one as a dead letter and go on.
            first, last = batch[0].message, batch[-1].message
            log.exception("worker: %d message(s) %s[%d]@%d .. [%d]@%d raised %s; "
                          "dead-lettered them and continuing - please report this with the "
                          "dead letters", len(batch), first.topic, first.partition, first.offset,
                          last.partition, last.offset, type(exc).__name__)
            emits = []
            for e in batch:
                emits += the_core.internal_error(e.value, e.key, exc, wall)
            ticks = [None] * len(batch)
        for e in batch:
            last_offset[e.message.partition] = e.message.offset
        await publish(emits)
        for e, max_tick in zip(batch, ticks, strict=True):
            if max_tick is None:
                e.ack()
            else:
                seq[0] += 1
                heapq.heappush(held_events, (max_tick, seq[0], e.message.partition, e))
        ack_events()

    async def take(events: Sequence[Any]) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            if (event.message.generation_id != app.consumer_generation_id
                    or not app.flow_control.is_active()):
                # a rebalance came while this fetch was being handed over (a flush below
                # waits): the rest is not ours to process; nothing of it is acknowledged,
                # so Faust reads it again from the committed offsets
                return
            if not inbox:
                inbox_bytes[0] = 0
                loop.call_later(the_core.batch_wait_s, flush_soon)
            inbox.append(event)
            inbox_bytes[0] += len(event.value or b"")
            if inbox_bytes[0] >= INBOX_BYTES or len(inbox) >= INBOX_MESSAGES:
                await flush_inbox()

    @app.agent(topics["events"], name="convergence-ingest")
    async def ingest(stream: Any) -> None:
        # subscribes the events topic (assignment, co-partitioned tables); its messages
        # come to ``take`` a fetch at a time (below), through this stream only where
        # Faust's consumer is not as expected
        async for event in stream.noack().events():
            await take((event,))

    deliver_in_batches(app, {events_topic: take})

    @app.agent(topics["node-evidence"], name="convergence-regions")
    async def regions(stream: Any) -> None:
        async for event in stream.noack().events():
            msg = event.message
            try:
                emits = region.on_message(event.value, msg.partition, time.time())
            except Exception as exc:
                log.exception("worker: node evidence %s[%d]@%d raised %s; skipped it - please "
                              "report this", msg.topic, msg.partition, msg.offset,
                              type(exc).__name__)
                emits = []
            await publish(emits)
            tick = _evidence_tick(event.value)
            if tick is None:  # progress only: its effect is in every later checkpoint
                event.ack()
            else:
                seq[0] += 1
                heapq.heappush(held_evidence.setdefault(msg.partition, []),
                               (tick, seq[0], event))
            ack_evidence(msg.partition)

    def partition_states() -> tuple[dict[int, bool], dict[int, bool]]:
        # Wall time may stand in for event time only when the consumer has read everything
        # there is AND can reach the broker: a pause in fetching (startup, rebalance, a
        # broker that is down) must never close ticks ahead of the backlog. Returns
        # (caught up, reachable) per owned partition.
        now_ms = time.time() * 1000.0
        caught: dict[int, bool] = {}
        reach: dict[int, bool] = {}
        for p in the_core.owned:
            _position, hw, fetched = _fetch_view(app, TP(events_topic, p))
            if hw is not None and p in last_offset:
                the_core.metrics.lag(p, max(hw - last_offset[p] - 1, 0))
            reach[p] = hw is not None and fetched is not None and now_ms - fetched <= REACH_S * 1000.0
            if hw is None or not reach[p]:
                caught[p] = False
            elif p in last_offset:
                caught[p] = last_offset[p] + 1 >= hw
            else:
                # Nothing handed to us since the assignment. The fetch position says
                # nothing then (Faust takes a whole prefetched batch at once, so it may be
                # at the end while the records still wait in Faust's buffer): only an
                # empty partition, or one committed to its end, is caught up.
                done = _committed_offset(app, TP(events_topic, p))
                caught[p] = hw == 0 or (done is not None and done >= hw)
        return caught, reach

    @app.timer(interval=idle_interval_s, name="convergence-idle-ticks")  # type: ignore[untyped-decorator]
    async def idle_ticks() -> None:
        try:
            caught, reach = partition_states()
            emits = the_core.on_timer(time.time(), caught_up=caught, reachable=reach)
        except Exception:
            # Logged at most every 30 s: this runs 4 times a second.
            now = time.monotonic()
            if now - timer_error_at[0] >= 30.0:
                timer_error_at[0] = now
                log.exception("worker: closing ticks failed; retrying every %g s",
                              idle_interval_s)
            return
        await publish(emits)
        ack_events()

    async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        inbox.clear()
        mine = {tp.partition for tp in assigned if tp.topic == events_topic}
        if the_core.on_assignment(mine):
            last_offset.clear()
        held_events[:] = [h for h in held_events if h[2] in mine]
        heapq.heapify(held_events)
        regions_owned = {tp.partition for tp in assigned if tp.topic == evidence_topic}
        region.on_assignment(regions_owned)
        for q in [q for q in held_evidence if q not in regions_owned]:
            del held_evidence[q]

    def on_status(value: bytes | None, wall: float) -> None:
        if the_core.on_station_status(value, wall):
            with contextlib.suppress(Exception):
                doc = orjson.loads(value or b"")
                region.note_station_state(str(doc["station_id"]), str(doc["state"]))

    async def before_shutdown(sender: Any, *args: Any, signal: Any = None,
                              **kwargs: Any) -> None:
        await flush_inbox()
        # Its counters go out last; the store sink (here or in another worker) stores them.
        await publish([*the_core.on_stop(), the_core.run_record(region.summary())])
        # every open tick closed and its evidence published: the events are handed on
        while held_events:
            heapq.heappop(held_events)[3].ack()
        log.warning("worker stopping: %s", orjson.dumps(
            {k: v for k, v in the_core.summary().items() if k != "stations"}).decode())

    # mode types connect() oddly (a union of callables); the receivers match what it calls.
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(before_shutdown)  # type: ignore[arg-type]

    follower = StatusFollower(settings, on_status)
    run_with_app(app, follower, "follows station status for the app's lifetime")
    from convergence.streams.campaign_shards import register_campaign_agent
    register_campaign_agent(app, settings, topics)  # `montecarlo run --cluster`'s shards

    sink = StoreSink(settings) if store else None
    if sink is not None:
        # a child of the app: it stops after the app's own on_stop has flushed the
        # producer, so it can drain everything emitted
        run_with_app(app, sink, "runs the store sink")
    return WorkerParts(app, core, region, sink, directory, topics)


class _StartStop(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def run_with_app(app: faust.App, thing: _StartStop, what: str) -> None:
    """Start ``thing`` with the app and stop it with the app (a child service)."""
    from mode import Service

    class Lifetime(Service):
        async def on_start(self) -> None:
            await thing.start()

        async def on_stop(self) -> None:
            await thing.stop()

    Lifetime.__doc__ = what
    app.service(Lifetime)


#: the ingest agent hands the core the messages it received together, up to this many
#: bytes or messages at once (the core's per-event cost is lowest around a thousand events
#: per call: fewer pay the per-call work more often, more outgrow the CPU caches), and
#: holds the first of them at most the core's ``batch_wait_s``
INBOX_BYTES = 128 * 1024
INBOX_MESSAGES = 1000


def as_current_event(event: Any) -> contextlib.AbstractContextManager[object]:
    """Within it, Faust's current event is ``event``: a table write lands in the changelog
    partition of ``event``'s message, as when written while Faust hands over that message.

    The ingest agent writes the station summaries and checkpoints of a batch of messages
    after the batch; Faust's own current event is then the batch's last message, which may
    be of another partition. (Faust keeps it in ``faust.streams._current_event``; when that
    is gone, said once, the writes go where Faust's current event says.)
    """
    try:
        from faust.streams import _current_event
    except ImportError as exc:
        _internals_failed("current event", exc)
        return contextlib.nullcontext()
    return _current(_current_event, event)


@contextlib.contextmanager
def _current(var: Any, event: Any) -> Any:
    token = var.set(weakref.ref(event))
    try:
        yield
    finally:
        var.reset(token)


def _evidence_tick(value: bytes | None) -> int | None:
    """The tick a node-evidence message carries evidence for (``None``: progress only)."""
    try:
        doc = orjson.loads(value or b"")
        ne = doc.get("ne") if isinstance(doc, dict) else None
        return int(ne["tick"]) if isinstance(ne, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


async def _probe_store(settings: Settings) -> None:
    store = SurrealStore.from_settings(settings)
    await store.open()
    await store.close()


def run_worker(settings: Settings, *, loglevel: str = "warning", store: bool = True,
               partitions: int | None = None, metrics: WorkerMetrics | None = None) -> NoReturn:
    """Run one worker in the foreground until SIGTERM/SIGINT; exits the process.

    Creates the topics first (``partitions``, default ``settings.partitions``, for the
    events and node-evidence topics) and, with ``store``, checks the database can be
    opened, so a misconfiguration fails here with one clear :class:`ClusterError` or
    :class:`~convergence.store.surreal.StoreError` instead of inside Faust. The stages
    use the partition counts the broker has (topics created earlier keep theirs).
    """
    import faust

    from convergence.streams.logs import quiet_repeats

    # a broker away makes the clients log dozens of lines a second: summarise repeats
    quiet_repeats()
    ensure_topics(settings, partitions=partitions)
    n_src = partition_count(settings, "events")
    n_q = partition_count(settings, "node-evidence")
    want = settings.partitions if partitions is None else partitions
    if n_src != want:
        log.warning("the events topic has %d partitions (created earlier), not %d: using %d",
                    n_src, want, n_src)
    if store:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_probe_store(settings))
        finally:
            loop.close()
    app = build_worker(settings, store=store, partitions=n_src, n_units=n_q,
                       metrics=metrics).app
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # No terminal spinner: it writes cursor escapes into log files, and to spin on every
    # record it lowers the root logger to DEBUG, which costs CPU on a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()

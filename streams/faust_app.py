"""Cluster mode: the Faust worker that runs the pipeline on a real Kafka broker.

This module owns the cluster runtime and nothing else:

* the topic set and its idempotent creation (:func:`ensure_topics`; a Faust agent
  subscribed to a topic that does not exist yet never consumes, so topics are created
  before any worker starts);
* :class:`EventTimeWatermark` - when ticks close: at the largest event time seen (so
  replayed or compressed data closes ticks at once), clamped to the receiver's clock,
  and advanced with wall time once input has gone quiet and the consumer has caught up
  (so the last ticks close too);
* :class:`WorkerCore` - everything a worker does with one message or one timer tick,
  without Faust: decode (bad input -> dead letters with reasons), ingest into the
  :class:`~convergence.streams.pipeline.Pipeline` (micro-batched: decoded events wait
  at most ``batch_wait_s`` so ingest runs once per batch, not once per message), close
  ticks, and turn outcomes into messages; plus per-station summaries and detector
  checkpoints in two small tables;
* :class:`StoreSink` - the one writer to SurrealDB: it consumes the alerts, reports,
  responses and dead-letter topics in its own consumer group and upserts them through
  a :class:`~convergence.store.writer.BatchedWriter`, committing offsets only after the
  store confirmed the writes (at-least-once; ids are deterministic, so upserts are
  idempotent);
* :func:`build_app` / :func:`run_worker` - the Faust app and a foreground worker.

Topics (``settings.topic(name)``; values are JSON bytes, keys are ids):

==============  ==========================  =============================================
name            key                         value
==============  ==========================  =============================================
events          station id                  wire batch (:mod:`convergence.wire`)
alerts          alert id                    alert (``prism.build_alert``) + ``run_id``
reports         report id                   report (``prism.synthesize_report``)
responses       response id                 ``Response.to_dict()``
control         command id                  ``ControlCommand.to_dict()``
acks            station id                  ``CommandAck.to_dict()`` (from stations)
dead-letter     dead-letter id              ``DeadLetter.to_dict()`` (with its reason)
runs            run id                      a worker's counters, sent when it stops
==============  ==========================  =============================================

Scaling model. The convergence meter fuses evidence across *all* stations, so one
worker must see every station's events: the events topic has one partition by
default and the other workers of the group are hot standbys that take over on
failure (Faust rebalances the partition to them). With ``partitions > 1`` each worker
fuses only the stations of its partitions - more throughput, but convergence across
partitions is not seen; the ``node-evidence``/``convergence`` two-stage split of the
architecture is the way to lift that and is not built yet.

Store ownership. An embedded ``surrealkv://`` file may be open in one process only,
so exactly one worker runs the :class:`StoreSink` (``store=True``); the others are
started with ``store=False``. With a SurrealDB server (``ws://``) every worker may
run one: the sinks share their consumer group's partitions.

Checkpoints. The learning detector stages (:func:`checkpoint_stages`: entropy, burst,
CUSUM and periodicity baselines, the regime filter when configured; fixed-size per
station, about 2 KB of JSON) are written to the ``detector-state`` table every
``checkpoint_interval_s`` and restored the first time a worker sees a station after it
took over the partition; a checkpoint that does not fit this build (other stages,
shapes or tick length) or is older than ``max_checkpoint_age_s`` is ignored with a
warning. The node state machine and the meter are *not* restored: they describe the
current episode, which is stale after a hand-over. Open (not yet closed) ticks live
only in memory; a crash loses them - their events were already committed - and a
graceful stop closes them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import orjson

from convergence.counters import Counters
from convergence.detectors.base import ArrayState
from convergence.ground_stations.scenario import default_fleet
from convergence.schema import DeadLetter, Event, dead_letter
from convergence.settings import Settings
from convergence.stations import StationRegistry
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter
from convergence.streams.pipeline import Pipeline, TickOutcome
from convergence.wire import decode_batch

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Every topic of the cluster, by logical name (``settings.topic(name)`` is the real one).
TOPICS: tuple[str, ...] = ("events", "alerts", "reports", "responses", "control", "acks",
                           "dead-letter", "runs", "station-status")

#: Topic configs by logical name. Station status is compacted: the latest status of each
#: station survives, older ones are cleaned up anyway after a week.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "station-status": {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 86_400_000),
                       "segment.ms": str(3_600_000)},
}

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

#: Per-station summaries ride in a worker's run record up to this many stations (a
#: Kafka message is limited to about 1 MB; the table keeps them all anyway).
MAX_STATIONS_IN_SUMMARY = 2000

#: Per-station stages never checkpointed: the node state machine describes the current
#: episode, which is stale after a hand-over (see module docstring).
NOT_CHECKPOINTED: frozenset[str] = frozenset({"node"})
CHECKPOINT_VERSION = 1


def checkpoint_stages(pipeline: Pipeline) -> list[str]:
    """Names of the learning stages whose per-station state is checkpointed."""
    return [st.name for st in pipeline.chain.stages[:-1]  # the last stage is the meter
            if st.name not in NOT_CHECKPOINTED
            and isinstance(pipeline.state.get(st.name), ArrayState)]


class ClusterError(RuntimeError):
    """The cluster cannot start or run; the message says what to do."""


# -- topics ---------------------------------------------------------------------


def topic_names(settings: Settings, names: Iterable[str] = TOPICS) -> dict[str, str]:
    """Logical name -> full topic name."""
    return {n: settings.topic(n) for n in names}


def ensure_topics(settings: Settings, names: Iterable[str] = TOPICS, *, partitions: int = 1,
                  replication: int = 1, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics (idempotent; safe when several processes race).

    Returns the full names of the topics this call created. Raises
    :class:`ClusterError` when the broker cannot be reached or refuses.
    """
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
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                by_name = {v: k for k, v in topic_names(settings, names).items()}
                admin.create_topics([NewTopic(t, partitions, replication,
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


# -- the watermark ---------------------------------------------------------------


class EventTimeWatermark:
    """Event time up to which input is believed complete (see module docstring).

    Examples
    --------
    >>> wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=1.0)
    >>> wm.observe(100.0, wall_s=500.0)     # replayed data: event time far behind wall
    100.0
    >>> wm.observe(90.0, wall_s=500.1)      # an older event never moves it back
    100.0
    >>> wm.idle(500.5) is None              # not quiet long enough yet
    True
    >>> wm.idle(502.1)                      # quiet for 2 s: event time moved on by 2 s
    102.0
    >>> wm.idle(503.1, caught_up=False) is None   # backlog in Kafka: wait for it instead
    True
    >>> wm.observe(9e9, wall_s=504.0)       # a clock far in the future is clamped to wall
    505.0
    """

    def __init__(self, idle_after_s: float = 1.0, max_lead_s: float = 1.0) -> None:
        if idle_after_s <= 0 or max_lead_s < 0:
            raise ValueError(f"need idle_after_s > 0 and max_lead_s >= 0, got {idle_after_s}, "
                             f"{max_lead_s}")
        self.idle_after_s = idle_after_s
        self.max_lead_s = max_lead_s
        self.value: float | None = None
        self._input_wall_s: float | None = None
        self._value_at_input: float | None = None

    def observe(self, max_event_time_s: float | None, wall_s: float) -> float | None:
        """Input arrived at ``wall_s`` with this largest event time (``None``: no events)."""
        self._input_wall_s = wall_s
        if max_event_time_s is not None:
            # A station whose clock runs ahead must not close everyone else's ticks.
            t = min(max_event_time_s, wall_s + self.max_lead_s)
            if self.value is None or t > self.value:
                self.value = t
        self._value_at_input = self.value
        return self.value

    def idle(self, wall_s: float, caught_up: bool = True) -> float | None:
        """Advance with wall time when input is quiet; the new value, or ``None``."""
        if (self.value is None or self._input_wall_s is None or self._value_at_input is None
                or not caught_up):
            return None
        quiet_s = wall_s - self._input_wall_s
        if quiet_s < self.idle_after_s:
            return None
        t = min(self._value_at_input + quiet_s, wall_s + self.max_lead_s)
        if t <= self.value:
            return None
        self.value = t
        return t


# -- the worker core -------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    """One message to publish: logical topic name, key, JSON value."""

    topic: str
    key: bytes
    value: bytes


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(doc: Any) -> bytes:
    """Compact JSON for topic values (numpy scalars and arrays allowed)."""
    return orjson.dumps(doc, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _finite(v: Any) -> Any:
    """JSON-safe detector state: non-finite floats become strings numpy parses back."""
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # 'inf', '-inf', 'nan'; np.asarray('inf', float) == inf
    return v


@dataclass
class CoreCounters(Counters):
    messages: int = 0
    undecodable: int = 0
    checkpoints_written: int = 0
    checkpoints_restored: int = 0
    checkpoints_rejected: int = 0
    resets: int = 0


class WorkerCore:
    """A worker's logic without Faust (see module docstring); unit-testable with dicts.

    ``summaries`` and ``checkpoints`` are mutable mappings keyed by station id: Faust
    tables in a worker, plain dicts in tests. They are written only from
    :meth:`on_message` (Faust allows table writes only while processing a message),
    and only for stations whose messages came from that message's partition, so each
    changelog entry lands in its station's partition.

    Parameters
    ----------
    registry_factory: station metadata (kind, region, correlation group, background
        rate) the meter needs to judge independence. Default: the default synthetic
        fleet for ``settings.stations``/``settings.seed`` - the fleet ``stations run``
        and ``cluster up`` play. Stations outside it are registered on sight with
        region ``unknown`` (they count, but cannot corroborate a region).
    idle_after_s / max_lead_s: see :class:`EventTimeWatermark`.
    summary_interval_s / checkpoint_interval_s: how often a station's summary and
        detector checkpoint are written; ``table_batch`` caps writes per message.
    batch_events / batch_wait_s: micro-batch bounds for ingest.
    max_checkpoint_age_s: older checkpoints are ignored on restore.
    run_id: stamped on every alert, report, response and dead letter.
    """

    def __init__(self, settings: Settings, *,
                 registry_factory: Callable[[], StationRegistry] | None = None,
                 summaries: MutableMapping[str, Any] | None = None,
                 checkpoints: MutableMapping[str, Any] | None = None,
                 idle_after_s: float = 1.0, max_lead_s: float = 1.0,
                 summary_interval_s: float = 2.0, checkpoint_interval_s: float = 10.0,
                 max_checkpoint_age_s: float = 3600.0, table_batch: int = 4,
                 batch_events: int = 5000, batch_wait_s: float = 0.05,
                 run_id: str | None = None) -> None:
        self.settings = settings
        self.registry_factory = registry_factory or (
            lambda: StationRegistry(default_fleet(settings.stations, settings.seed)))
        self.summaries: MutableMapping[str, Any] = {} if summaries is None else summaries
        self.checkpoints: MutableMapping[str, Any] = {} if checkpoints is None else checkpoints
        self.idle_after_s = idle_after_s
        self.max_lead_s = max_lead_s
        self.summary_interval_s = summary_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_checkpoint_age_s = max_checkpoint_age_s
        self.run_id = run_id or f"cluster-{settings.faust_app_id}-{int(time.time())}"
        self.counters = CoreCounters()
        self.stopped = False
        self.owned: frozenset[int] = frozenset()
        # Per-station summaries survive resets: they count what this worker received.
        self.stations: dict[str, dict[str, Any]] = {}
        self._dirty: dict[int, set[str]] = {}
        self._summary_at: dict[int, float] = {}
        self._checkpoint_at: dict[int, float] = {}
        self._summary_due: dict[int, set[str]] = {}
        self._partition_of: dict[str, int] = {}
        self.table_batch = table_batch
        self.batch_events = batch_events
        self.batch_wait_s = batch_wait_s
        # Decoded events wait here (at most batch_wait_s) to be ingested in one call. They
        # survive a reset: they are valid input that this worker has already consumed.
        self._pending: list[Event] = []
        self._pending_since_s = 0.0
        self.reset()

    def on_station_status(self, value: bytes | None, wall_s: float) -> bool:
        """A station reported its state; a source gone dark becomes meter evidence.

        Returns whether the status was applied (stale or unreadable ones are ignored:
        a status is advisory, never a reason to stop the stream).
        """
        try:
            doc = orjson.loads(value or b"")
            sid, state, at_s = str(doc["station_id"]), str(doc["state"]), float(doc.get("at_s", wall_s))
        except (ValueError, KeyError, TypeError):
            log.warning("worker: unreadable station status %.200r; ignored", value)
            return False
        if wall_s - at_s > STATUS_MAX_AGE_S:
            return False
        self.pipeline.note_station_state(sid, state)
        return True

    def reset(self) -> None:
        """Fresh pipeline and watermark (a partition moved; the old state is not ours)."""
        self.pipeline = Pipeline(self.settings, self.registry_factory())
        self.watermark = EventTimeWatermark(self.idle_after_s, self.max_lead_s)
        self._restored: set[str] = set()
        self._ingested = False
        # Checkpoints describe this pipeline's state; never write the old one's after a reset.
        self._seen: dict[int, set[str]] = {}
        self._checkpoint_due: dict[int, set[str]] = {}

    def on_assignment(self, partitions: Iterable[int]) -> bool:
        """The events partitions this worker now owns; resets when ownership changed
        after data was ingested. Returns True if it reset."""
        new = frozenset(partitions)
        changed = new != self.owned
        self.owned = new
        if changed and self._ingested:
            log.warning("events partitions now %s: starting a fresh pipeline (detector "
                        "baselines come back from checkpoints)", sorted(new) or "none")
            self.counters.resets += 1
            self.reset()
            return True
        return False

    # -- input ---------------------------------------------------------------
    def on_message(self, value: bytes | None, key: bytes | None, wall_s: float,
                   partition: int = 0) -> list[Emit]:
        """Decode one message; ingest (micro-batched) and close the ticks the watermark
        passed. Returns the messages to publish."""
        self.counters.messages += 1
        pipe = self.pipeline
        events, bad = decode_batch(value if value is not None else b"", now_s=wall_s,
                                   limits=pipe.limits)
        if bad and not events and len(bad) == 1 and bad[0].field in ("message", "v", "events"):
            self.counters.undecodable += 1
        pipe.count_dead_letters(len(bad))
        key_station = key.decode("utf-8", errors="replace") if key else None
        self._account(events, bad, key_station, wall_s, partition)
        emits = [self._dead_emit(d, key_station) for d in bad]
        if events:
            if not self._pending:
                self._pending_since_s = wall_s
            self._pending.extend(events)
        if self._pending and (len(self._pending) >= self.batch_events
                              or wall_s - self._pending_since_s >= self.batch_wait_s):
            emits += self._flush(wall_s)
        self._write_tables(partition, wall_s)
        return emits

    def _flush(self, wall_s: float) -> list[Emit]:
        """Ingest the buffered events in one call and close what the watermark passed.

        One call per message would cost far more: ingest's work per call (dedup against
        every earlier chunk of an open tick) grows with the number of calls per tick.
        """
        events, self._pending = self._pending, []
        pipe = self.pipeline
        late = pipe.ingest_events(events, wall_s)
        self._ingested = True
        # After ingest (which registers new stations), before any tick closes: detector
        # state only changes when ticks close, so nothing learnt is overwritten.
        self._restore(events)
        for d in late:
            self._account_dead(d.station_id, wall_s)
        emits = [self._dead_emit(d, None) for d in late]
        wm = self.watermark.observe(max(e.event_time_s for e in events), wall_s)
        if wm is not None:
            emits += self._outcome_emits(pipe.advance(wm))
        return emits

    def on_timer(self, wall_s: float, *, caught_up: bool = True) -> list[Emit]:
        """Ingest what waits in the buffer; idle advance when input has gone quiet."""
        if self.stopped:
            return []
        emits = self._flush(wall_s) if self._pending else []
        wm = self.watermark.idle(wall_s, caught_up)
        return emits if wm is None else emits + self._outcome_emits(self.pipeline.advance(wm))

    def on_stop(self, wall_s: float | None = None) -> list[Emit]:
        """Graceful stop: ingest the buffer and close every open tick (their events are
        already committed, so they would be lost otherwise)."""
        if self.stopped:
            return []
        emits = self._flush(time.time() if wall_s is None else wall_s) if self._pending else []
        self.stopped = True
        return emits + (self._outcome_emits(self.pipeline.flush()) if self._ingested else [])

    def internal_error(self, value: bytes | None, key: bytes | None, exc: BaseException,
                       wall_s: float) -> Emit:
        """A dead letter for a message that made the worker itself fail."""
        d = dead_letter("worker", value or b"", f"internal error {type(exc).__name__}: {exc}; "
                        "this is a bug - report it with this payload", received_at_s=wall_s)
        self.pipeline.count_dead_letters(1)
        return self._dead_emit(d, key.decode("utf-8", errors="replace") if key else None)

    # -- output --------------------------------------------------------------
    def _dead_emit(self, d: DeadLetter, key_station: str | None) -> Emit:
        doc = d.to_dict()
        if doc["station_id"] is None:
            doc["station_id"] = key_station  # an undecodable message: blame the key's station
        doc["run_id"] = self.run_id
        return Emit("dead-letter", d.dead_letter_id.encode(), to_json(doc))

    def _outcome_emits(self, outcomes: Sequence[TickOutcome]) -> list[Emit]:
        out: list[Emit] = []
        for oc in outcomes:
            if oc.level != oc.prev_level:
                log.info("meter %s -> %s, score %.1f in %s (%d anomalous stations)",
                         oc.prev_level, oc.level, oc.score, oc.region, oc.anomalous_stations)
            for r in oc.responses:
                out.append(Emit("responses", r.response_id.encode(),
                                to_json({**r.to_dict(), "run_id": self.run_id})))
                if r.command is not None:
                    out.append(Emit("control", r.command.command_id.encode(),
                                    to_json(r.command.to_dict())))
            # Report before alert: whoever reacts to the alert can already fetch it.
            for rep in oc.reports:
                out.append(Emit("reports", str(rep["report_id"]).encode(),
                                to_json({**rep, "run_id": self.run_id})))
            for a in oc.alerts:
                log.warning("ALERT %s %s score %.1f in %s, report %s", a["alert_id"],
                            a["level"], a["score"], ", ".join(a["regions"]), a["report_id"])
                out.append(Emit("alerts", str(a["alert_id"]).encode(),
                                to_json({**a, "run_id": self.run_id})))
        return out

    # -- per-station summaries and checkpoints --------------------------------
    def _station(self, sid: str) -> dict[str, Any]:
        s = self.stations.get(sid)
        if s is None:
            prev = self.summaries.get(sid)  # a previous owner's counts (table changelog)
            s = dict(prev) if isinstance(prev, dict) else {
                "events": 0, "dead_letters": 0, "last_event_time_s": None, "last_seen_s": None}
            self.stations[sid] = s
        return s

    def _account(self, events: Sequence[Event], dls: Sequence[DeadLetter],
                 key_station: str | None, wall_s: float, partition: int) -> None:
        dirty = self._dirty.setdefault(partition, set())
        seen = self._seen.setdefault(partition, set())
        for e in events:
            s = self._station(e.station_id)
            s["events"] += 1
            last = s["last_event_time_s"]
            if last is None or e.event_time_s > last:
                s["last_event_time_s"] = e.event_time_s
            s["last_seen_s"] = wall_s
            dirty.add(e.station_id)
            seen.add(e.station_id)
            self._partition_of[e.station_id] = partition
        for d in dls:
            sid = d.station_id or key_station
            if sid:
                self._partition_of.setdefault(sid, partition)
                self._account_dead(sid, wall_s)

    def _account_dead(self, sid: str | None, wall_s: float) -> None:
        if not sid:
            return
        s = self._station(sid)
        s["dead_letters"] += 1
        s["last_seen_s"] = wall_s
        self._dirty.setdefault(self._partition_of.get(sid, 0), set()).add(sid)

    def _write_tables(self, partition: int, wall_s: float) -> None:
        # Writes are spread over messages (at most ``table_batch`` per message): a burst of
        # hundreds of changelog records at once stalls the stream on Faust's producer buffer.
        if wall_s - self._summary_at.get(partition, -math.inf) >= self.summary_interval_s:
            self._summary_at[partition] = wall_s
            self._summary_due.setdefault(partition, set()).update(
                self._dirty.pop(partition, set()))
        if wall_s - self._checkpoint_at.get(partition, -math.inf) >= self.checkpoint_interval_s:
            self._checkpoint_at[partition] = wall_s
            self._checkpoint_due.setdefault(partition, set()).update(
                self._seen.pop(partition, set()))
        due = self._summary_due.get(partition)
        for _ in range(min(self.table_batch, len(due or ()))):
            assert due is not None
            sid = due.pop()
            self.summaries[sid] = dict(self.stations[sid])
        due = self._checkpoint_due.get(partition)
        if due:
            reg, state = self.pipeline.registry, self.pipeline.state
            stages = checkpoint_stages(self.pipeline)
            tick = self.pipeline.acc.next_close
            for _ in range(min(self.table_batch, len(due))):
                sid = due.pop()
                idx = reg.index_of(sid)
                self.checkpoints[sid] = {
                    "v": CHECKPOINT_VERSION, "tick": tick, "tick_s": self.settings.tick_s,
                    "state": {st: {k: _finite(v) for k, v in state[st].station(idx).items()}
                              for st in stages},
                }
                self.counters.checkpoints_written += 1

    def _restore(self, events: Sequence[Event]) -> None:
        """Load checkpointed baselines for stations this pipeline has not seen yet."""
        for sid in {e.station_id for e in events} - self._restored:
            self._restored.add(sid)
            cp = self.checkpoints.get(sid)
            if not cp:
                continue
            e_time = max(e.event_time_s for e in events if e.station_id == sid)
            try:
                self._apply_checkpoint(sid, cp, e_time)
            except (KeyError, TypeError, ValueError) as exc:
                # A checkpoint from another detector version: learn afresh rather than crash.
                self.counters.checkpoints_rejected += 1
                log.warning("station %s: ignoring its detector checkpoint (%s); its baselines "
                            "start from the fleet's declared rates", sid, exc)

    def _apply_checkpoint(self, sid: str, cp: dict[str, Any], event_time_s: float) -> None:
        if cp.get("v") != CHECKPOINT_VERSION or cp.get("tick_s") != self.settings.tick_s:
            raise ValueError(f"version {cp.get('v')} / tick_s {cp.get('tick_s')} do not match")
        tick = cp.get("tick")
        if tick is None or event_time_s - tick * self.settings.tick_s > self.max_checkpoint_age_s:
            raise ValueError(f"checkpoint at tick {tick} is older than "
                             f"{self.max_checkpoint_age_s:g} s")
        pipe = self.pipeline
        idx = pipe.registry.index_of(sid)  # ingest registered it
        staged: list[tuple[str, dict[str, Any]]] = []
        stages = checkpoint_stages(pipe)
        if set(cp["state"]) != set(stages):
            raise ValueError(f"it holds stages {sorted(cp['state'])}, this build has {stages}")
        for st in stages:
            values = cp["state"][st]
            arrays = pipe.state[st]
            if set(values) != set(arrays):
                raise ValueError(f"stage {st} has fields {sorted(values)}, expected "
                                 f"{sorted(arrays)}")
            for k, v in values.items():
                if np.shape(v) != arrays[k].shape[1:]:
                    raise ValueError(f"{st}.{k} has shape {np.shape(v)}, expected "
                                     f"{arrays[k].shape[1:]}")
            staged.append((st, values))
        for st, values in staged:  # all checked first: never restore half a station
            pipe.state[st].set_station(idx, values)
        self.counters.checkpoints_restored += 1

    def summary(self) -> dict[str, Any]:
        """Counters, watermark and per-station summaries (for the run record and logs)."""
        out: dict[str, Any] = {
            "run_id": self.run_id, "app_id": self.settings.faust_app_id,
            "pipeline": self.pipeline.counters.as_dict(), "worker": self.counters.as_dict(),
            "watermark_s": self.watermark.value, "partitions": sorted(self.owned),
            "stopped": self.stopped, "stations_seen": len(self.stations)}
        if len(self.stations) <= MAX_STATIONS_IN_SUMMARY:
            out["stations"] = {k: dict(v) for k, v in sorted(self.stations.items())}
        return out

    def run_record(self) -> Emit:
        """This worker's summary as a message for the ``runs`` topic (stored as ``run``)."""
        return Emit("runs", self.run_id.encode(), to_json(self.summary()))


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

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._store = SurrealStore.from_settings(self.settings)
        await self._store.open()
        self._writer = BatchedWriter(self._store, seed=self.settings.seed, name="cluster-store")
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
            self._writer.submit(table, rid, doc)
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
              core: WorkerCore | None = None, idle_interval_s: float = 0.25) -> faust.App:
    """The Faust app of one worker (see :func:`build_worker` for its parts)."""
    return build_worker(settings, store=store, partitions=partitions, core=core,
                        idle_interval_s=idle_interval_s).app


def build_worker(settings: Settings, *, store: bool = True, partitions: int = 1,
                 core: WorkerCore | None = None, idle_interval_s: float = 0.25) -> WorkerParts:
    """Wire a Faust app: topics, the ingest agent, the idle timer, tables, the store sink."""
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
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    topics = {n: app.topic(settings.topic(n), **raw) for n in TOPICS}  # type: ignore[arg-type]
    host = f"{socket.gethostname()}-{os.getpid()}"
    run_id = f"cluster-{settings.faust_app_id}-{host}-{int(time.time())}"
    summaries = app.Table("station-summary", default=None, partitions=partitions)
    checkpoints = app.Table("detector-state", default=None, partitions=partitions)
    if core is None:
        core = WorkerCore(settings, summaries=summaries, checkpoints=checkpoints, run_id=run_id)
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
                emits = [the_core.internal_error(event.value, event.key, exc, wall)]
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
               partitions: int = 1) -> NoReturn:
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
    app = build_app(settings, store=store, partitions=partitions)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # No terminal spinner: it writes cursor escapes into log files, and to spin on every
    # record it lowers the root logger to DEBUG, which costs CPU on a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()

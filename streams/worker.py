"""A cluster worker's logic, without Faust: unit-testable with plain dicts.

This module owns what a worker does with one message or one timer tick:

* :class:`EventTimeWatermark` - when ticks close: at the largest event time seen (so
  replayed or compressed data closes ticks at once), clamped to the receiver's clock,
  and advanced with wall time once input has gone quiet and the consumer has caught up
  (so the last ticks close too);
* :class:`WorkerCore` - decode (bad input -> dead letters with reasons), ingest into the
  :class:`~convergence.streams.pipeline.Pipeline` (micro-batched: decoded events wait
  at most ``batch_wait_s`` so ingest runs once per batch, not once per message), close
  ticks, and turn outcomes into messages (:class:`~convergence.streams.topics.Emit`);
  plus per-station summaries and detector checkpoints in two small tables
  (:func:`checkpoint_stages`).

:mod:`convergence.streams.faust_app` wires it to Kafka.

Scaling model. The convergence meter fuses evidence across *all* stations, so one
worker must see every station's events: the events topic has one partition by
default and the other workers of the group are hot standbys that take over on
failure (Faust rebalances the partition to them). With ``partitions > 1`` each worker
fuses only the stations of its partitions - more throughput, but convergence across
partitions is not seen; the ``node-evidence``/``convergence`` two-stage split of the
architecture is the way to lift that and is not built yet.

Checkpoints. The learning detector stages (:func:`checkpoint_stages`: entropy, burst,
CUSUM and periodicity baselines, the regime filter when configured; fixed-size per
station, about 2 KB of JSON) are written to the ``detector-state`` table every
``checkpoint_interval_s`` and restored the first time a worker ingests a station's
events after it took over the partition. A station is checkpointed only once this
worker has ingested its events (and restored its checkpoint), so a new owner never
writes its fresh, empty state over the previous owner's. A checkpoint that does not
fit this build (other stages, shapes or tick length) or is older than
``max_checkpoint_age_s`` is ignored with a warning. The node state machine and the
meter are *not* restored: they describe the current episode, which is stale after a
hand-over. Open (not yet closed) ticks live only in memory; a crash loses them -
their events were already committed - and a graceful stop closes them first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from convergence.control import ControlCommand
from convergence.counters import Counters
from convergence.detectors.base import ArrayState
from convergence.ground_stations.scenario import default_fleet
from convergence.schema import DeadLetter, Event, EventBatch, dead_letter, valid_station_id
from convergence.settings import Settings
from convergence.stations import StationRegistry
from convergence.streams.metrics import WorkerMetrics, dead_letter_reason
from convergence.streams.pipeline import Pipeline, TickOutcome, dead_letter_record, outcome_records
from convergence.streams.topics import STATUS_MAX_AGE_S, TOPIC_OF_TABLE, Emit, to_json
from convergence.wire import decode_columns, validate_columns

log = logging.getLogger(__name__)

#: Per-station summaries ride in a worker's run record up to this many stations (a
#: Kafka message is limited to about 1 MB; the table keeps them all anyway).
MAX_STATIONS_IN_SUMMARY = 2000

#: Per-station stages never checkpointed: the node state machine describes the current
#: episode, which is stale after a hand-over (see module docstring).
NOT_CHECKPOINTED: frozenset[str] = frozenset({"node"})
CHECKPOINT_VERSION = 2


def checkpoint_stages(pipeline: Pipeline) -> list[str]:
    """Names of the learning stages whose per-station state is checkpointed."""
    return [st.name for st in pipeline.chain.stages[:-1]  # the last stage is the meter
            if st.name not in NOT_CHECKPOINTED
            and isinstance(pipeline.state.get(st.name), ArrayState)]



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


def _finite(v: Any) -> Any:
    """JSON-safe detector state: non-finite floats become strings numpy parses back."""
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # 'inf', '-inf', 'nan'; np.asarray('inf', float) == inf
    return v


# -- the output ports ---------------------------------------------------------------


class OutputPort(Protocol):
    """Where the runner's outputs go: stored records, control commands, tick outcomes.

    The runner calls these synchronously while it processes input, and ``drain()`` once
    per call it answers: a port that publishes asynchronously (Kafka topics) hands back
    what to publish; one that acts at once (the embedded store and fleet) returns nothing.
    """

    def record(self, table: str, record_id: str, doc: dict[str, Any]) -> None: ...

    def command(self, cmd: ControlCommand, response_id: str) -> None: ...

    def outcome(self, oc: TickOutcome) -> None: ...

    def drain(self) -> list[Emit]: ...


class TopicPort:
    """The cluster's port: every output becomes a message for its topic (:class:`Emit`),
    published by the Faust adapter after each call. A report revision goes out once, on the
    reports topic; the store sink keeps every revision (see ``RecordRouter``)."""

    def __init__(self) -> None:
        self._out: list[Emit] = []

    def record(self, table: str, record_id: str, doc: dict[str, Any]) -> None:
        self._out.append(Emit(TOPIC_OF_TABLE[table], record_id.encode(), to_json(doc)))

    def command(self, cmd: ControlCommand, response_id: str) -> None:
        self._out.append(Emit("control", cmd.command_id.encode(), to_json(cmd.to_dict())))

    def outcome(self, oc: TickOutcome) -> None:
        for rd in oc.readings:  # every region's meter, for dashboards (bounded: per tick)
            self._out.append(Emit("readings", rd.region.encode(), to_json(rd.to_dict())))

    def drain(self) -> list[Emit]:
        out, self._out = self._out, []
        return out


@dataclass
class CoreCounters(Counters):
    messages: int = 0
    undecodable: int = 0
    checkpoints_written: int = 0
    checkpoints_restored: int = 0
    checkpoints_rejected: int = 0
    resets: int = 0


def _key_station(key: bytes | None) -> str | None:
    """The station a message's key names, when it is a valid station id (a key of any
    other shape, e.g. 1 MB of junk, names no station and never becomes a summary key)."""
    if not key or len(key) > 64:
        return None
    return valid_station_id(key.decode("utf-8", errors="replace"))


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
    metrics: where events in, dead letters, ticks closed and alert latency are counted
        (:class:`~convergence.streams.metrics.WorkerMetrics`; default: a fresh one).

    Summaries count each event once (a re-sent event, recognised by its content id
    among at least the last :attr:`COUNTED_IDS`, is not counted again) and only under
    valid station ids.
    """

    #: how many recent event ids the summaries remember to count a re-sent event once
    COUNTED_IDS = 65_536

    def __init__(self, settings: Settings, *,
                 registry_factory: Callable[[], StationRegistry] | None = None,
                 summaries: MutableMapping[str, Any] | None = None,
                 checkpoints: MutableMapping[str, Any] | None = None,
                 idle_after_s: float = 1.0, max_lead_s: float = 1.0,
                 summary_interval_s: float = 2.0, checkpoint_interval_s: float = 10.0,
                 max_checkpoint_age_s: float = 3600.0, table_batch: int = 4,
                 batch_events: int = 5000, batch_wait_s: float = 0.05,
                 run_id: str | None = None, metrics: WorkerMetrics | None = None,
                 port: OutputPort | None = None) -> None:
        self.settings = settings
        self.port: OutputPort = port if port is not None else TopicPort()
        self.metrics = metrics if metrics is not None else WorkerMetrics()
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
        # content hashes of recent events, counted once: two generations of sets, so at
        # least the last COUNTED_IDS are remembered (and a whole batch is checked at once)
        self._counted: set[int] = set()
        self._counted_old: set[int] = set()
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
        self._pending: list[EventBatch] = []
        self._pending_events = 0
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
        self.pipeline = Pipeline(self.settings, self.registry_factory(), run_id=self.run_id)
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
        events, bad = decode_columns(value if value is not None else b"", now_s=wall_s,
                                     limits=pipe.limits)
        if bad and not len(events) and len(bad) == 1 and bad[0].field in ("message", "v", "events"):
            self.counters.undecodable += 1
        pipe.count_dead_letters(len(bad))
        self.metrics.events_in(len(events))
        key_station = _key_station(key)
        return self._take(events, bad, key_station, wall_s, partition)

    def on_records(self, records: Sequence[Any], wall_s: float, partition: int = 0) -> list[Emit]:
        """Validate untrusted records (one station agent's batch, in process) and go on as
        :meth:`on_message` does; the embedded runtime's way in."""
        self.counters.messages += 1
        good, bad = validate_columns(records, now_s=wall_s, limits=self.pipeline.limits)
        self.pipeline.count_dead_letters(len(bad))
        self.metrics.events_in(len(good))
        return self._take(good, bad, None, wall_s, partition)

    def _take(self, events: EventBatch, bad: Sequence[DeadLetter], key_station: str | None,
              wall_s: float, partition: int) -> list[Emit]:
        self._account(events, bad, key_station, wall_s, partition)
        for d in bad:
            self._dead(d, key_station)
        if len(events):
            if not self._pending:
                self._pending_since_s = wall_s
            self._pending.append(events)
            self._pending_events += len(events)
        if self._pending and (self._pending_events >= self.batch_events
                              or wall_s - self._pending_since_s >= self.batch_wait_s):
            self._flush(wall_s)
        try:
            self._write_tables(partition, wall_s)
        except Exception:
            # Summaries and checkpoints are rewritten later; the alerts, reports and
            # commands already built from this batch must still go out.
            log.exception("worker: writing station summaries/checkpoints for partition %d "
                          "failed; publishing this message's outputs anyway", partition)
        return self.port.drain()

    def _flush(self, wall_s: float) -> None:
        """Ingest the buffered events in one call and close what the watermark passed.

        One call per message would cost far more: ingest's work per call (dedup against
        every earlier chunk of an open tick) grows with the number of calls per tick.
        """
        events = EventBatch.concat(self._pending)
        self._pending, self._pending_events = [], 0
        pipe = self.pipeline
        started = time.perf_counter()
        try:
            late = pipe.ingest_columns(events, wall_s)
        except Exception as exc:
            # The buffer holds events of many messages whose offsets may already be
            # committed: keep every one as a dead letter rather than lose them.
            log.exception("worker: ingesting %d buffered event(s) raised %s; dead-lettered "
                          "them - please report this with the dead letters",
                          len(events), type(exc).__name__)
            self._ingest_failed(events.events(), exc, wall_s)
            return
        self._ingested = True
        self.metrics.stage_time("ingest", time.perf_counter() - started)
        # After ingest (which registers new stations), before any tick closes: detector
        # state only changes when ticks close, so nothing learnt is overwritten.
        stations = set(events.station_id)
        self._restore(events, stations)
        # Only now is a station's detector state this pipeline's own (ingested, and its
        # checkpoint restored): marking it seen earlier - when its message arrived but
        # its events still waited in the buffer - would checkpoint the fresh pipeline's
        # empty state over the previous owner's good one.
        for sid in stations:
            self._seen.setdefault(self._partition_of.get(sid, 0), set()).add(sid)
        for d in late:
            self._account_dead(d.station_id, wall_s)
            self._dead(d, None)
        wm = self.watermark.observe(float(events.event_time_s.max()), wall_s)
        if wm is not None:
            self._outcomes(self._advance(wm))

    def _ingest_failed(self, events: Sequence[Event], exc: Exception, wall_s: float) -> None:
        """Dead letters (one per event, with the reason) for a batch ingest rejected."""
        reason = (f"internal error {type(exc).__name__} while ingesting a batch of "
                  f"{len(events)} event(s): {exc}; this is a bug - report it with this payload")
        dls = [dead_letter("ingest", e.to_dict(), reason, received_at_s=wall_s) for e in events]
        self.pipeline.count_dead_letters(len(dls))
        for d in dls:
            self._account_dead(d.station_id, wall_s)
            self._dead(d, None)

    def on_timer(self, wall_s: float, *, caught_up: bool = True) -> list[Emit]:
        """Ingest what waits in the buffer; idle advance when input has gone quiet."""
        if self.stopped:
            return []
        if self._pending:
            self._flush(wall_s)
        wm = self.watermark.idle(wall_s, caught_up)
        if wm is not None:
            self._outcomes(self._advance(wm))
        return self.port.drain()

    def on_stop(self, wall_s: float | None = None) -> list[Emit]:
        """Graceful stop: ingest the buffer and close every open tick (their events are
        already committed, so they would be lost otherwise)."""
        if self.stopped:
            return []
        if self._pending:
            self._flush(time.time() if wall_s is None else wall_s)
        self.stopped = True
        if self._ingested:
            self._outcomes(self._advance(None))
        return self.port.drain()

    def _advance(self, watermark_s: float | None) -> list[TickOutcome]:
        """Close the ticks the watermark passed (every open one for ``None``), timed."""
        started = time.perf_counter()
        outcomes = self.pipeline.flush() if watermark_s is None else self.pipeline.advance(watermark_s)
        per_tick = (time.perf_counter() - started) / max(len(outcomes), 1)
        for _ in outcomes:
            self.metrics.tick_closed("tick", per_tick)
        return outcomes

    def internal_error(self, value: bytes | None, key: bytes | None, exc: BaseException,
                       wall_s: float) -> list[Emit]:
        """A dead letter for a message that made the worker itself fail."""
        d = dead_letter("worker", value or b"", f"internal error {type(exc).__name__}: {exc}; "
                        "this is a bug - report it with this payload", received_at_s=wall_s)
        self.pipeline.count_dead_letters(1)
        self._dead(d, _key_station(key))
        return self.port.drain()

    def manual(self, cmd: ControlCommand, wall_s: float) -> None:
        """A person's quarantine or resume of stations (from the control topic or the
        dashboard): the pipeline follows at once, as the stations do."""
        if cmd.action.value not in ("quarantine", "resume"):
            return
        reg = self.pipeline.registry
        for sid in reg.ids():
            info = reg.info(reg.index_of(sid))
            if cmd.applies_to(sid, info.kind.value, info.region):
                self.pipeline.manual(sid, cmd.action.value,
                                     cmd.expires_at_s if cmd.action.value == "quarantine" else None)

    # -- output --------------------------------------------------------------
    def _dead(self, d: DeadLetter, key_station: str | None) -> None:
        # An undecodable message names no station: blame the key's station.
        self.metrics.dead_letter(dead_letter_reason(d))
        self.port.record(*dead_letter_record(d, self.run_id, key_station))

    def _outcomes(self, outcomes: Sequence[TickOutcome]) -> None:
        for oc in outcomes:
            for rd in oc.changed:
                log.info("%s meter %s -> %s, score %.1f (%d stations counting)", rd.region,
                         rd.prev_level, rd.level, rd.score, rd.n_stations)
            commands = {r.response_id: r.command for r in oc.responses if r.command is not None}
            for table, rid, doc in outcome_records(oc, self.run_id):
                if table == "alert":
                    self.metrics.alert_latency(time.time() - float(doc["time_s"]))
                    log.info("ALERT %s %s score %.1f in %s, report %s", rid, doc["level"],
                                doc["score"], doc["region"], doc["report_id"])
                self.port.record(table, rid, doc)
                cmd = commands.get(rid) if table == "response" else None
                if cmd is not None:  # a response's command follows it to the stations
                    self.port.command(cmd, rid)
            self.port.outcome(oc)

    # -- per-station summaries and checkpoints --------------------------------
    def _station(self, sid: str) -> dict[str, Any]:
        s = self.stations.get(sid)
        if s is None:
            prev = self.summaries.get(sid)  # a previous owner's counts (table changelog)
            s = dict(prev) if isinstance(prev, dict) else {
                "events": 0, "dead_letters": 0, "last_event_time_s": None, "last_seen_s": None}
            self.stations[sid] = s
        return s

    def _account(self, events: EventBatch, dls: Sequence[DeadLetter],
                 key_station: str | None, wall_s: float, partition: int) -> None:
        dirty = self._dirty.setdefault(partition, set())
        n = len(events)
        if n:
            # a re-sent event is the same event: summaries count events, not receipts
            fresh = self._fresh(events.event_hash)
            sids, times = events.station_id, events.event_time_s
            if sids.count(sids[0]) == n:  # the usual message: one station's batch
                per_station = {sids[0]: (int(fresh.sum()), float(times.max()))}
            else:
                code = {sid: i for i, sid in enumerate(dict.fromkeys(sids))}
                c = np.fromiter(map(code.__getitem__, sids), np.int64, n)
                counts = np.bincount(c, weights=fresh, minlength=len(code))
                latest = np.full(len(code), -np.inf)
                np.maximum.at(latest, c, times)
                per_station = {sid: (int(counts[i]), float(latest[i])) for sid, i in code.items()}
            for station, (new, t_max) in per_station.items():
                s = self._station(station)
                s["events"] += new
                last = s["last_event_time_s"]
                if last is None or t_max > last:
                    s["last_event_time_s"] = t_max
                s["last_seen_s"] = wall_s
                dirty.add(station)
                self._partition_of[station] = partition
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
        tick = self.pipeline.acc.next_close
        # Nothing ingested yet (tick None): there is no state of ours to checkpoint.
        if due and tick is not None:
            reg, state = self.pipeline.registry, self.pipeline.state
            stages = checkpoint_stages(self.pipeline)
            for _ in range(min(self.table_batch, len(due))):
                sid = due.pop()
                if sid not in self._restored:  # never ingested here: not ours to write
                    continue
                idx = reg.index_of(sid)
                self.checkpoints[sid] = {
                    "v": CHECKPOINT_VERSION, "tick": tick, "tick_s": self.settings.tick_s,
                    "state": {st: {k: _finite(v) for k, v in state[st].station(idx).items()}
                              for st in stages},
                }
                self.counters.checkpoints_written += 1

    def _fresh(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Which of these events were not counted yet (remembering them from now on)."""
        hs = hashes.tolist()
        cur, old = self._counted, self._counted_old
        batch = set(hs)
        if len(batch) == len(hs) and batch.isdisjoint(cur) and batch.isdisjoint(old):
            fresh = np.ones(len(hs), dtype=bool)
            cur |= batch
        else:
            fresh = np.zeros(len(hs), dtype=bool)
            for i, h in enumerate(hs):
                fresh[i] = h not in cur and h not in old
                cur.add(h)
        if len(cur) >= self.COUNTED_IDS:
            self._counted_old, self._counted = cur, set()
        return fresh

    def _restore(self, events: EventBatch, stations: set[str]) -> None:
        """Load checkpointed baselines for stations this pipeline has not seen yet."""
        for sid in stations - self._restored:
            self._restored.add(sid)
            cp = self.checkpoints.get(sid)
            if not cp:
                continue
            e_time = max(t for s, t in zip(events.station_id, events.event_time_s.tolist(),
                                           strict=True) if s == sid)
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


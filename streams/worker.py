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

Two stages. A worker runs the pipeline's first stage for the ``events`` partitions it
owns (``stations_only``): ingest, ticks and each station's own detectors; each closed
tick's station evidence goes to the ``node-evidence`` topic, one message per
second-stage partition (regions hash to partitions, :func:`region_partition`), each
saying which first-stage partitions it speaks for and up to which tick they are
complete. The second stage (:mod:`convergence.streams.region_core`) closes a region's
tick only once every first-stage partition is past it. A first-stage partition with
nothing to say still says so: once its input is caught up and reachable (or skipped
past a long gap) it sends *progress* without evidence, so one quiet partition never
holds up the others. In one process (the embedded runtime) both stages run here,
handing the evidence over in memory.

Who the stations are (kind, region, correlation group) comes from the fleet file and
the stations' status messages (:class:`~convergence.streams.directory.StationDirectory`);
events of a station known from neither wait ``unknown_grace_s`` for its status, then
become dead letters that say so.

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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson

from convergence.control import ControlCommand
from convergence.counters import Counters
from convergence.detectors.base import ArrayState
from convergence.detectors.node_state import pad_peak
from convergence.records import NodeEvidence
from convergence.schema import DeadLetter, Event, EventBatch, dead_letter, valid_station_id
from convergence.settings import Settings
from convergence.stations import StationInfo, StationRegistry
from convergence.streams.directory import StationDirectory
from convergence.streams.metrics import WorkerMetrics, dead_letter_reason
from convergence.streams.pipeline import Pipeline, TickOutcome, dead_letter_record, outcome_records
from convergence.streams.topics import (
    STATUS_MAX_AGE_S,
    TOPIC_OF_TABLE,
    Emit,
    region_partition,
    station_partition,
    to_json,
)
from convergence.wire import decode_many, validate_columns

log = logging.getLogger(__name__)

#: Per-station summaries ride in a worker's run record up to this many stations (a
#: Kafka message is limited to about 1 MB; the table keeps them all anyway).
MAX_STATIONS_IN_SUMMARY = 2000

#: Per-station stages never checkpointed: the node state machine describes the current
#: episode, which is stale after a hand-over (see module docstring).
NOT_CHECKPOINTED: frozenset[str] = frozenset({"node"})
#: stages added after ``CHECKPOINT_VERSION`` 2 began: a checkpoint without them is
#: restored, and they start fresh (the fleet's declared rates seed the activity trend)
ADDED_STAGES: frozenset[str] = frozenset({"trend", "scale", "price_trend", "price_scale"})
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



#: after a partition was behind or cut off, each station that spoke recently holds its
#: watermark at the station's own latest event time (see :class:`PartitionWatermarks`)
RECOVER_S = 30.0
#: ... unless the station was silent for this many seconds while the partition was caught up
#: (a backlog being read may still hold what it buffered)
STATION_SILENCE_S = 30.0
#: ... or is further behind the partition's newest event than this (bounds what is held open)
STATION_HORIZON_S = 120.0
#: ... or for this many seconds while the broker could be reached, caught up or not (so a
#: station that fell silent at the start of a long backlog does not hold it for ever)
STATION_BACKLOG_SILENCE_S = 60.0
#: a station not heard from for this long (reachable seconds) is forgotten
STATION_FORGET_S = 600.0
#: when a worker starts, each partition waits for the fleet's stations on it that have not
#: spoken yet, for at most this many seconds while the broker can be reached (a station
#: process that starts late sends what it recorded since the run's start: those events
#: must not be late because a quicker station already ran the watermark ahead)
STARTUP_WAIT_S = 30.0


@dataclass
class _StationClocks:
    """One partition's stations: their latest event time and when they were last heard
    (on a clock that runs only while the broker can be reached)."""

    latest: dict[str, float] = field(default_factory=dict)
    heard: dict[str, float] = field(default_factory=dict)
    heard_caught: dict[str, float] = field(default_factory=dict)
    live_s: float = 0.0
    caught_s: float = 0.0
    pruned_s: float = 0.0
    wall_s: float | None = None
    recovering: bool = False
    caught_since: float | None = None
    #: the fleet's stations on this partition (waited for at start-up)
    expected: frozenset[str] = frozenset()

    def unheard(self) -> bool:
        """Has a station of the fleet on this partition not spoken yet?"""
        return any(sid not in self.latest for sid in self.expected)

    def tick(self, wall_s: float, caught: bool, reachable: bool) -> None:
        dt = 0.0 if self.wall_s is None else min(max(wall_s - self.wall_s, 0.0), 5.0)
        self.wall_s = wall_s
        if reachable:  # silence counts only while what a station sent could reach us
            self.live_s += dt
        if not caught:
            self.recovering, self.caught_since = True, None
            return
        self.caught_s += dt
        if self.caught_since is None:
            self.caught_since = self.live_s
        if self.recovering and self.live_s - self.caught_since >= RECOVER_S:
            self.recovering = False
        if self.live_s - self.pruned_s >= 60.0:  # once a minute of a reachable broker
            self.pruned_s = self.live_s
            old = [k for k, h in self.heard.items() if self.live_s - h > STATION_FORGET_S]
            for k in old:
                del self.heard[k], self.latest[k]
                self.heard_caught.pop(k, None)

    def observe(self, per_station: Mapping[str, float]) -> None:
        # "heard" is progress: a station whose messages no longer move its event time on
        # (old data, a clock stuck behind) must not hold the partition for ever
        for sid, t in per_station.items():
            if t > self.latest.get(sid, -math.inf):
                self.latest[sid] = t
                self.heard[sid] = self.live_s
                self.heard_caught[sid] = self.caught_s

    def hold(self) -> float | None:
        """While recovering: the latest event time of the station furthest behind among
        those that spoke recently (``None``: no hold)."""
        if not self.recovering or not self.latest:
            return None
        newest = max(self.latest.values())
        held = [t for sid, t in self.latest.items()
                if self.caught_s - self.heard_caught.get(sid, self.caught_s) <= STATION_SILENCE_S
                and self.live_s - self.heard[sid] <= STATION_BACKLOG_SILENCE_S
                and t >= newest - STATION_HORIZON_S]
        return min(held) if held else None


class PartitionWatermarks:
    """Event time up to which *every* partition's input is complete: the slowest one's.

    Partitions are read at their own pace (a consumer may deliver one partition's backlog
    before another's), so the fastest partition's event time would make the others'
    events late. Each partition has its own :class:`EventTimeWatermark`; the worker closes
    ticks at their minimum. A partition that never had an event is no constraint only
    when it is caught up (nothing there to read); otherwise it holds the others back.

    Within a partition, stations' messages interleave in the order they reached the
    broker. Normally that is event-time order within the allowed lateness; after an
    outage it is not - stations resend what they buffered while others already send
    fresh events - so, from the moment a partition is behind or cut off until it has
    been caught up for :data:`RECOVER_S`, each station that spoke recently holds the
    partition's watermark at its own latest event time (silent for
    :data:`STATION_SILENCE_S` while the broker could be reached, or more than
    :data:`STATION_HORIZON_S` behind the newest event, it no longer does).

    >>> w = PartitionWatermarks(idle_after_s=1.0, max_lead_s=1.0)
    >>> w.observe(0, 100.0, wall_s=500.0); w.observe(1, 90.0, wall_s=500.0)
    >>> w.value([0, 1], caught_up={0: True, 1: True})
    90.0
    >>> w.value([0, 1, 2], caught_up={2: False}) is None   # partition 2 unread yet
    True
    >>> w.value([0, 1, 2], caught_up={2: True})             # partition 2 empty
    90.0

    When a worker starts, a partition waits (at most :data:`STARTUP_WAIT_S` of a reachable
    broker) for the stations the fleet puts on it that have not spoken yet, and holds as
    after an outage for those that have (a station process that starts late sends what it
    recorded since the run's start all at once):

    >>> w = PartitionWatermarks(expect=lambda p: ["quick", "late"])
    >>> w.tick([0], 500.0, {0: True}); w.observe(0, 130.0, 500.0, {"quick": 130.0})
    >>> w.value([0], caught_up={0: True}) is None            # "late" has not spoken
    True
    >>> w.observe(0, 112.0, 501.0, {"late": 112.0})          # its first events are old
    >>> w.value([0], caught_up={0: True})                    # held for the rest of them
    112.0

    After an outage, a station still resending its backlog holds its partition back:

    >>> w = PartitionWatermarks()
    >>> w.tick([0], 500.0, {0: False})                     # partition 0 cut off
    >>> w.observe(0, 130.0, 501.0, {"fresh": 130.0, "resending": 112.0})
    >>> w.value([0], caught_up={0: True})
    112.0
    """

    def __init__(self, idle_after_s: float = 1.0, max_lead_s: float = 1.0, *,
                 expect: Callable[[int], Iterable[str]] | None = None,
                 startup_wait_s: float = STARTUP_WAIT_S) -> None:
        EventTimeWatermark(idle_after_s, max_lead_s)  # checks the settings
        self.idle_after_s = idle_after_s
        self.max_lead_s = max_lead_s
        self.by_partition: dict[int, EventTimeWatermark] = {}
        self.stations: dict[int, _StationClocks] = {}
        #: the stations a partition should hear from (the fleet's), for the start-up wait
        self.expect = expect
        self.startup_wait_s = startup_wait_s
        #: seconds the broker could be reached since the worker started (carried over
        #: resets: the start-up wait is once per worker, not once per rebalance)
        self.reachable_s = 0.0
        self._wall_s: float | None = None

    def _of(self, partition: int) -> EventTimeWatermark:
        w = self.by_partition.get(partition)
        if w is None:
            w = self.by_partition[partition] = EventTimeWatermark(self.idle_after_s,
                                                                  self.max_lead_s)
        return w

    def _clocks(self, partition: int) -> _StationClocks:
        c = self.stations.get(partition)
        if c is None:
            c = self.stations[partition] = _StationClocks()
            if self.expect is not None and self.starting():
                # nothing is known of the stations' progress yet: hold as after an outage
                c.expected, c.recovering = frozenset(self.expect(partition)), True
        return c

    def starting(self) -> bool:
        """Still in the worker's start-up wait (see :data:`STARTUP_WAIT_S`)?"""
        return self.expect is not None and self.reachable_s < self.startup_wait_s

    def waiting(self, partitions: Iterable[int]) -> bool:
        """Does one of ``partitions`` wait for a station that has not spoken yet?"""
        return self.starting() and any(self._clocks(p).unheard() for p in partitions)

    def observe(self, partition: int, max_event_time_s: float | None, wall_s: float,
                per_station: Mapping[str, float] | None = None) -> None:
        self._of(partition).observe(max_event_time_s, wall_s)
        if per_station:
            self._clocks(partition).observe(per_station)

    def tick(self, partitions: Iterable[int], wall_s: float, caught_up: Mapping[int, bool],
             reachable: Mapping[int, bool] | None = None) -> None:
        """The transport's word on each partition (timer): runs the stations' clocks.
        ``reachable`` (default: ``caught_up``) says the broker answers for it, behind or
        not."""
        reach = caught_up if reachable is None else reachable
        parts = list(partitions)
        if self._wall_s is not None and any(reach.get(p, False) for p in parts):
            self.reachable_s += min(max(wall_s - self._wall_s, 0.0), 5.0)
        self._wall_s = wall_s
        for p in parts:
            self._clocks(p).tick(wall_s, caught_up.get(p, False), reach.get(p, False))

    def idle(self, partitions: Iterable[int], wall_s: float,
             caught_up: Mapping[int, bool]) -> None:
        for p in partitions:
            w = self.by_partition.get(p)
            if w is not None:
                w.idle(wall_s, caught_up.get(p, False))

    def value(self, partitions: Iterable[int], caught_up: Mapping[int, bool]) -> float | None:
        vals = []
        for p in partitions:
            w = self.by_partition.get(p)
            if w is None or w.value is None:
                if caught_up.get(p, False):
                    continue
                return None
            c = self.stations.get(p)
            if c is not None and self.starting() and c.unheard():
                return None
            hold = c.hold() if c is not None else None
            vals.append(w.value if hold is None else min(w.value, hold))
        return min(vals) if vals else None

    def keep_stations(self, old: PartitionWatermarks, partitions: Iterable[int]) -> None:
        """Carry the stations' clocks of ``partitions`` over from ``old`` (a fresh
        pipeline after a rebalance reads them again from their committed offsets)."""
        self.reachable_s, self._wall_s = old.reachable_s, old._wall_s
        for p in partitions:
            c = old.stations.get(p)
            if c is not None:
                c.recovering, c.caught_since = True, None
                self.stations[p] = c


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

    def emit(self, e: Emit) -> None:
        """Any other message (the first stage's node evidence)."""
        self._out.append(e)

    def drain(self) -> list[Emit]:
        out, self._out = self._out, []
        return out


@dataclass
class CoreCounters(Counters):
    messages: int = 0
    #: calls that handed messages over together (``messages / batches``: the batch size)
    batches: int = 0
    undecodable: int = 0
    checkpoints_written: int = 0
    checkpoints_restored: int = 0
    checkpoints_rejected: int = 0
    resets: int = 0
    #: messages read again after a rebalance (offset already processed) and events of ticks
    #: a previous owner had closed: dropped as duplicates, never dead-lettered as late
    rereads: int = 0
    reread_events: int = 0
    #: events of stations known from neither the fleet file nor a status message
    unknown_station_events: int = 0
    #: what crossed to the second stage: messages, bytes, and ticks that carried evidence
    evidence_messages: int = 0
    evidence_bytes: int = 0
    progress_messages: int = 0


class InMessage(NamedTuple):
    """One events message as the transport received it (:meth:`WorkerCore.on_messages`)."""

    value: bytes | None
    key: bytes | None
    partition: int = 0
    #: its offset in the partition (``None``: not known, never a re-read)
    offset: int | None = None


#: station summaries and checkpoints written per partition per batch of messages, at most
#: (or ``table_batch``, if larger; one message at a time writes ``table_batch``)
MAX_TABLE_WRITES = 64

#: events of one unknown station held (for its first status) at most, and stations held
MAX_HELD_PER_STATION = 1000
MAX_HELD_STATIONS = 1000


def node_evidence_message(sources: Sequence[int], through: int,
                          ne: NodeEvidence | None = None) -> bytes:
    """A ``node-evidence`` message: first-stage partitions ``sources`` are complete up to
    tick ``through``; ``ne`` is that tick's evidence for one second-stage partition
    (``None``: progress only).

    >>> node_evidence_message([0, 2], 41)
    b'{"src":[0,2],"through":41}'
    """
    doc: dict[str, Any] = {"src": list(sources), "through": int(through)}
    if ne is not None:
        doc["ne"] = ne.to_dict()
    return to_json(doc)


def publish_outcomes(port: OutputPort, outcomes: Sequence[TickOutcome], run_id: str,
                     metrics: WorkerMetrics) -> None:
    """Hand closed ticks' records, commands and outcomes to ``port`` (in publication
    order: responses and their commands, report revisions, then alerts)."""
    for oc in outcomes:
        for rd in oc.changed:
            log.info("%s meter %s -> %s, score %.1f (%d stations counting)", rd.region,
                     rd.prev_level, rd.level, rd.score, rd.n_stations)
        commands = {r.response_id: r.command for r in oc.responses if r.command is not None}
        for table, rid, doc in outcome_records(oc, run_id):
            if table == "alert":
                metrics.alert_latency(time.time() - float(doc["time_s"]))
                log.info("ALERT %s %s score %.1f in %s, report %s", rid, doc["level"],
                         doc["score"], doc["region"], doc["report_id"])
            port.record(table, rid, doc)
            cmd = commands.get(rid) if table == "response" else None
            if cmd is not None:  # a response's command follows it to the stations
                port.command(cmd, rid)
        port.outcome(oc)


def _by_station(sids: Sequence[str], times: np.ndarray[Any, Any],
                count: np.ndarray[Any, Any] | None = None) -> dict[str, tuple[int, float]]:
    """Per station of events (``sids``, ``times``): how many of its rows ``count`` marks
    (all, when not given) and its latest event time; stations in order of first
    appearance."""
    n = len(sids)
    if n == 0:
        return {}
    if sids.count(sids[0]) == n:  # the usual message: one station's batch
        return {sids[0]: (n if count is None else int(count.sum()), float(times.max()))}
    code = {sid: i for i, sid in enumerate(dict.fromkeys(sids))}
    c = np.fromiter(map(code.__getitem__, sids), np.int64, n)
    counts = np.bincount(c, weights=count, minlength=len(code))
    latest = np.full(len(code), -np.inf)
    np.maximum.at(latest, c, times)
    return {sid: (int(counts[i]), float(latest[i])) for sid, i in code.items()}


def _latest_by_partition(times: np.ndarray[Any, Any], msg_of_row: np.ndarray[Any, Any],
                         parts: Sequence[int]) -> dict[int, float]:
    """The latest event time per partition (``msg_of_row``: each event's message, of
    partition ``parts[j]``)."""
    part = parts[int(msg_of_row[0])]
    if parts.count(part) == len(parts):
        return {part: float(times.max())}
    row_part = np.asarray(parts, dtype=np.int64)[msg_of_row]
    return {p: float(times[row_part == p].max()) for p in np.unique(row_part).tolist()}


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
    startup_wait_s: at start, how long (seconds of a reachable broker) a partition waits
        for the fleet's stations on it that have not spoken yet (:data:`STARTUP_WAIT_S`).
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

    Events travel in columns (:class:`~convergence.schema.EventBatch`) from the decoder
    to ingest: no Python object per event on the way (issue 8); the outcomes are the
    per-event path's, byte for byte.
    """

    #: how many recent event ids the summaries remember to count a re-sent event once
    COUNTED_IDS = 65_536

    def __init__(self, settings: Settings, *,
                 registry_factory: Callable[[], StationRegistry] | None = None,
                 directory: StationDirectory | None = None, stations_only: bool = False,
                 n_sources: int = 1, n_units: int = 1, unknown_grace_s: float = 10.0,
                 summaries: MutableMapping[str, Any] | None = None,
                 checkpoints: MutableMapping[str, Any] | None = None,
                 progress: MutableMapping[str, Any] | None = None,
                 idle_after_s: float = 1.0, max_lead_s: float = 1.0,
                 summary_interval_s: float = 2.0, checkpoint_interval_s: float = 10.0,
                 max_checkpoint_age_s: float = 3600.0, table_batch: int = 4,
                 batch_events: int = 5000, batch_wait_s: float = 0.05,
                 run_id: str | None = None, metrics: WorkerMetrics | None = None,
                 port: OutputPort | None = None, startup_wait_s: float = STARTUP_WAIT_S) -> None:
        self.settings = settings
        self.port: OutputPort = port if port is not None else TopicPort()
        if stations_only and not isinstance(self.port, TopicPort):
            raise ValueError("a first-stage worker publishes node evidence: it needs a TopicPort")
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.directory = directory
        self.stations_only = stations_only
        self.n_sources = max(int(n_sources), 1)
        self.n_units = max(int(n_units), 1)
        self.unknown_grace_s = unknown_grace_s
        self.registry_factory = registry_factory or self._default_registry
        self.summaries: MutableMapping[str, Any] = {} if summaries is None else summaries
        self.checkpoints: MutableMapping[str, Any] = {} if checkpoints is None else checkpoints
        #: per first-stage partition: ticks closed and the offset processed (``progress``
        #: table), for the next owner to tell a re-read from news
        self.progress: MutableMapping[str, Any] = {} if progress is None else progress
        self._held: dict[str, tuple[float, list[Event], int]] = {}
        self._unknown_logged: set[str] = set()
        self._unknown_said_at = -math.inf
        if directory is not None and stations_only:
            directory.on_new(self._learn)
        self.idle_after_s = idle_after_s
        self.max_lead_s = max_lead_s
        self.startup_wait_s = startup_wait_s
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
        # Decoded events wait here (at most batch_wait_s) to be ingested in one call. A
        # reset drops them: their messages are not acknowledged yet, so the transport reads
        # them again, in order, after the committed offset (see on_assignment).
        self._pending: list[EventBatch] = []
        self._pending_events = 0
        self._pending_since_s = 0.0
        #: the latest event time per partition among the buffered events
        self._pending_max: dict[int, float] = {}
        #: ... and each station's latest among them, per partition (for the recovery hold)
        self._pending_latest: dict[int, dict[str, float]] = {}
        self._late_said_at = -math.inf
        #: the last message's latest event tick (``None``: it carried no event)
        self.last_max_tick: int | None = None
        #: each message's of the last :meth:`on_messages` call
        self.last_max_ticks: list[int | None] = []
        #: more sections for :meth:`summary` from the transport around this core (e.g.
        #: ``publish``: messages the broker would not take), by name
        self.summary_parts: dict[str, Callable[[], dict[str, Any]]] = {}
        self.reset()

    def _default_registry(self) -> StationRegistry:
        if self.directory is not None:
            # the first stage holds the stations of its partitions (a silent one too: its
            # silence is evidence); in one process every known station, from the start
            return StationRegistry([i for i in self.directory.stations() if self._mine(i)]
                                   if self.stations_only else self.directory.stations())
        # tests and tools: the default synthetic fleet (a cluster always passes a directory)
        from convergence.ground_stations.scenario import default_fleet

        return StationRegistry(default_fleet(self.settings.stations, self.settings.seed))

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
        if self.directory is not None and self.directory.note_status(doc):
            self._release(sid, wall_s)
        if wall_s - at_s > STATUS_MAX_AGE_S:
            return False
        self.pipeline.note_station_state(sid, state)
        return True

    # -- who the stations are -----------------------------------------------------
    def _mine(self, info: StationInfo) -> bool:
        """Is the station's events partition one of ours (first stage)?"""
        return station_partition(info.station_id, self.n_sources) in self.owned

    def _learn(self, info: StationInfo) -> None:
        """The directory learnt a station: ours from now on if its partition is ours."""
        if self._mine(info):
            self.pipeline.registry.add(info)

    def _fleet_on(self, partition: int) -> list[str]:
        """The stations the directory puts on events partition ``partition``."""
        assert self.directory is not None
        return [i.station_id for i in self.directory.stations()
                if station_partition(i.station_id, self.n_sources) == partition]

    def _register_owned(self) -> None:
        if self.directory is None or not self.stations_only:
            return
        reg = self.pipeline.registry
        for info in self.directory.stations():
            if self._mine(info):
                reg.add(info)

    def _admit(self, events: EventBatch, msg_of_row: np.ndarray[Any, Any],
               parts: Sequence[int], wall_s: float) -> tuple[EventBatch, np.ndarray[Any, Any]]:
        """The events of stations the directory knows (registering them with its facts, in
        order of first appearance); an unknown station's events wait for its status (see
        module docstring). ``msg_of_row``: each event's message, of partition ``parts[j]``."""
        if self.directory is None or not len(events):
            return events, msg_of_row
        reg = self.pipeline.registry
        waiting: set[str] = set()
        for sid in dict.fromkeys(events.station_id):  # in order of first appearance
            if reg.get(sid) is None:
                info = self.directory.lookup(sid)
                if info is None:
                    waiting.add(sid)
                else:
                    reg.add(info)
        if not waiting:
            return events, msg_of_row
        held = [i for i, sid in enumerate(events.station_id) if sid in waiting]
        for e, j in zip(events.take(held).events(), msg_of_row[held].tolist(), strict=True):
            self._hold(e, wall_s, parts[j])
        keep = np.delete(np.arange(len(events)), held)
        return events.take(keep), msg_of_row[keep]

    def _hold(self, e: Event, wall_s: float, partition: int) -> None:
        held = self._held.get(e.station_id)
        if held is None:
            if len(self._held) >= MAX_HELD_STATIONS:
                self._unknown([e], wall_s, "too many unknown stations at once")
                return
            held = self._held[e.station_id] = (wall_s, [], partition)
        if len(held[1]) >= MAX_HELD_PER_STATION:
            self._unknown([e], wall_s, f"more than {MAX_HELD_PER_STATION} of its events "
                                       "waited for its status")
            return
        held[1].append(e)

    def _release(self, sid: str, wall_s: float) -> None:
        """A held station became known: its events go to the pipeline with the next batch."""
        held = self._held.pop(sid, None)
        if held is None:
            return
        info = self.directory.lookup(sid) if self.directory is not None else None
        if info is not None:
            self.pipeline.registry.add(info)
        if not self._pending:
            self._pending_since_s = wall_s
        if held[1]:
            self._pending.append(EventBatch.from_events(held[1]))
            self._pending_events += len(held[1])
            t = max(e.event_time_s for e in held[1])
            self._pending_max[held[2]] = max(self._pending_max.get(held[2], t), t)
            self._note_latest(held[2], sid, t)

    def _expire_held(self, wall_s: float) -> None:
        for sid in [k for k, h in self._held.items() if wall_s - h[0] >= self.unknown_grace_s]:
            evs = self._held.pop(sid)[1]
            self._unknown(evs, wall_s, f"no status message from it within "
                                       f"{self.unknown_grace_s:g} s")

    def _unknown(self, events: Sequence[Event], wall_s: float, why: str) -> None:
        where = (f"the fleet file {self.settings.fleet}" if self.settings.fleet
                 else "a fleet file (none is configured: set CONVERGENCE_FLEET)")
        reason = (f"unknown station: not in {where} and {why}; its kind, region and "
                  "correlation group are unknown, so its events cannot be fused - add it to "
                  "the fleet file the cluster runs")
        self.counters.unknown_station_events += len(events)
        sid = events[0].station_id if events else "?"
        if sid not in self._unknown_logged and len(self._unknown_logged) < 100_000:
            self._unknown_logged.add(sid)
            if len(self._unknown_logged) <= 5:
                log.warning("station %s: %s", sid, reason)
            elif time.monotonic() - self._unknown_said_at >= 30.0:
                self._unknown_said_at = time.monotonic()
                log.warning("%d unknown stations so far (latest %s); their events are "
                            "dead-lettered: add them to the fleet file the cluster runs",
                            len(self._unknown_logged), sid)
        for e in events:
            d = dead_letter("worker", e.to_dict(), reason, received_at_s=wall_s)
            self.pipeline.count_dead_letters(1)
            self._dead(d, None)

    def reset(self) -> None:
        """Fresh pipeline and watermark (a partition moved; the old state is not ours)."""
        self.pipeline = Pipeline(self.settings, self.registry_factory(), run_id=self.run_id,
                                 stations_only=self.stations_only)
        self.watermarks = PartitionWatermarks(
            self.idle_after_s, self.max_lead_s,
            expect=self._fleet_on if self.directory is not None and self.stations_only else None,
            startup_wait_s=self.startup_wait_s)
        #: the latest word from the transport on each partition: read to its end and
        #: reachable (only then may wall time stand in for event time)
        self._caught: dict[int, bool] = {}
        #: per partition: highest offset processed, and ticks a previous owner closed
        self._done_offset: dict[int, int] = {}
        self._reread_through: dict[int, int] = {}
        self._progress_checked: set[int] = set()
        self._announced: int | None = None
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
        self._register_owned()
        if changed and self._ingested:
            log.warning("events partitions now %s: starting a fresh pipeline (detector "
                        "baselines come back from checkpoints)", sorted(new) or "none")
            self.counters.resets += 1
            closed = self.pipeline.acc.next_close
            kept = {p: self._reread_through.get(p) for p in new & frozenset(self._done_offset)}
            old_marks = self.watermarks
            self.reset()
            # Buffered events are not carried into the fresh pipeline: those of kept
            # partitions come back with the re-read from the committed offset, in their
            # place (ingested first, the newest of them would run the fresh watermark ahead
            # of the older events re-read after them and make those late); those of
            # partitions gone are another worker's now.
            dropped = self._pending_events
            self._pending, self._pending_events, self._pending_max = [], 0, {}
            self._pending_latest = {}
            if dropped:
                log.info("dropped %d buffered event(s) at the reset; they are read again",
                         dropped)
            self.watermarks.keep_stations(old_marks, new & frozenset(old_marks.stations))
            # partitions kept are read again from their committed offset: events of the
            # ticks this worker already closed and handed on are re-reads, not news
            for p, before in kept.items():
                if closed is not None:
                    self._reread_through[p] = max(closed - 1, before if before is not None else -1)
                self._progress_checked.add(p)
            return True
        return False

    # -- input ---------------------------------------------------------------
    def on_message(self, value: bytes | None, key: bytes | None, wall_s: float,
                   partition: int = 0, offset: int | None = None) -> list[Emit]:
        """Decode one message; ingest (micro-batched) and close the ticks the watermark
        passed. Returns the messages to publish.

        ``offset``: the message's offset in its partition; one at or below the highest
        already processed is a re-read (after a rebalance) and dropped as a duplicate.
        :meth:`on_messages` of this one message.
        """
        emits = self.on_messages([InMessage(value, key, partition, offset)], wall_s)
        self.last_max_tick = self.last_max_ticks[0]
        return emits

    def on_messages(self, messages: Sequence[InMessage], wall_s: float, *,
                    tables_in: Callable[[int], AbstractContextManager[object]] | None = None,
                    ) -> list[Emit]:
        """Many messages received together (a transport's batch), in their order.

        The same messages to publish, in the same order, the same dead letters, ingest
        batches, watermark and ticks closed as :meth:`on_message` on each in turn at
        ``wall_s`` - but decoded, checked and hashed in one pass
        (:func:`~convergence.wire.decode_many`) and accounted per batch, so what a
        message costs apart from its events is paid once per batch. Afterwards
        :attr:`last_max_ticks` holds each message's latest event tick (``None``: no
        event; a re-read keeps the tick before it, as :meth:`on_message` leaves it):
        a message may be acknowledged once the ticks below :attr:`closed_before` include
        it. Station summaries and checkpoints are written once per partition of the
        batch, at most ``table_batch`` per message (see :meth:`_write_tables`), each
        inside ``tables_in(partition)`` (Faust: with a message of that partition as the
        current event, so its changelog entry lands in that partition).
        """
        self.counters.batches += 1
        ticks: list[int | None] = [None] * len(messages)
        taken: list[int] = []  # positions of the messages that are not re-reads
        for i, m in enumerate(messages):
            self.counters.messages += 1
            if m.offset is not None:
                done = self._done_offset.get(m.partition)
                if done is not None and m.offset <= done:
                    self.counters.rereads += 1
                    continue
                self._done_offset[m.partition] = m.offset
                self._check_progress(m.partition)
            taken.append(i)
        pipe = self.pipeline
        decoded = decode_many([messages[i].value or b"" for i in taken], now_s=wall_s,
                              limits=pipe.limits)
        events, counts = decoded.events, decoded.counts
        n_bad = 0
        for j, bad in enumerate(decoded.dead):
            if bad:
                n_bad += len(bad)
                if not counts[j] and len(bad) == 1 and bad[0].field in ("message", "v", "events"):
                    self.counters.undecodable += 1
        pipe.count_dead_letters(n_bad)
        self.metrics.events_in(len(events))
        # each message's latest event tick; a re-read leaves the one before it
        starts = np.cumsum([0, *counts])[:-1]
        full = [j for j, c in enumerate(counts) if c]
        latest = iter(np.floor(np.maximum.reduceat(events.event_time_s, starts[full])
                               / self.settings.tick_s).astype(np.int64).tolist() if full else [])
        at = dict(zip(taken, range(len(taken)), strict=True))
        tick: int | None = self.last_max_tick
        for i in range(len(messages)):
            pos = at.get(i)
            if pos is not None:
                tick = next(latest) if counts[pos] else None
            ticks[i] = tick
        self.last_max_ticks = ticks
        self.last_max_tick = tick
        parts = [messages[i].partition for i in taken]
        keys = [_key_station(messages[i].key) for i in taken]
        msg_of_row = np.repeat(np.arange(len(taken), dtype=np.int64), counts)
        events, msg_of_row = self._drop_rereads(events, msg_of_row, parts)
        events, msg_of_row = self._admit(events, msg_of_row, parts, wall_s)
        self._take(events, msg_of_row, parts, keys, decoded.dead, wall_s)
        self._write_all_tables(parts, wall_s, tables_in)
        return self.port.drain()

    @property
    def closed_before(self) -> int | None:
        """Ticks below this are closed and handed on (``None``: nothing ingested yet): a
        message whose events all fall before it may be committed."""
        return self.pipeline.acc.next_close

    def on_records(self, records: Sequence[Any], wall_s: float, partition: int = 0) -> list[Emit]:
        """Validate untrusted records (one station agent's batch, in process) and go on as
        :meth:`on_message` does; the embedded runtime's way in."""
        self.counters.messages += 1
        self.counters.batches += 1
        good, bad = validate_columns(records, now_s=wall_s, limits=self.pipeline.limits)
        self.pipeline.count_dead_letters(len(bad))
        self.metrics.events_in(len(good))
        rows = np.zeros(len(good), dtype=np.int64)
        good, rows = self._drop_rereads(good, rows, [partition])
        good, rows = self._admit(good, rows, [partition], wall_s)
        self._take(good, rows, [partition], [None], [bad], wall_s)
        self._write_all_tables([partition], wall_s, None)
        return self.port.drain()

    def _check_progress(self, partition: int) -> None:
        """The first message from a partition: how far its previous owner got. Events of
        ticks it closed were processed and handed on; reading them again is a re-read."""
        if partition in self._progress_checked:
            return
        self._progress_checked.add(partition)
        try:
            doc = self.progress.get(str(partition))
        except Exception:  # a table read failing must not stop the stream
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("closed_through"), int) \
                and doc.get("tick_s") == self.settings.tick_s:
            self._reread_through[partition] = int(doc["closed_through"])

    def _drop_rereads(self, events: EventBatch, msg_of_row: np.ndarray[Any, Any],
                      parts: Sequence[int]) -> tuple[EventBatch, np.ndarray[Any, Any]]:
        """Without the events of ticks a previous owner of their partition closed."""
        through = self._reread_through
        if not through or not len(events) or through.keys().isdisjoint(parts):
            return events, msg_of_row
        bound = np.array([through.get(p, -math.inf) for p in parts], dtype=np.float64)
        keep = np.flatnonzero(np.floor(events.event_time_s / self.settings.tick_s)
                              > bound[msg_of_row])
        if keep.size < len(events):
            self.counters.reread_events += len(events) - int(keep.size)
            return events.take(keep), msg_of_row[keep]
        return events, msg_of_row

    def _take(self, events: EventBatch, msg_of_row: np.ndarray[Any, Any], parts: Sequence[int],
              keys: Sequence[str | None], dead: Sequence[Sequence[DeadLetter]],
              wall_s: float) -> None:
        """Account, dead-letter and buffer the messages' events; ingest the buffer where
        one message at a time would have (see :meth:`_flush`)."""
        n = len(parts)
        counts = np.bincount(msg_of_row, minlength=n).tolist() if len(events) else [0] * n
        pending, buffered, since = bool(self._pending), self._pending_events, self._pending_since_s
        first = row = 0
        for j, c in enumerate(counts):
            if c:
                if not pending:
                    pending, since = True, wall_s
                buffered += c
            last = j == n - 1
            flush = pending and (buffered >= self.batch_events or wall_s - since >= self.batch_wait_s)
            if not (flush or last):
                continue
            seg = events if first == 0 and last else events.take(
                np.arange(row, row + sum(counts[first:j + 1])))
            self._segment(seg, msg_of_row[row:row + len(seg)], parts, keys, dead, first, j + 1,
                          wall_s)
            row += len(seg)
            first = j + 1
            if flush:
                self._flush(wall_s)
                pending, buffered = False, 0

    def _segment(self, events: EventBatch, msg_of_row: np.ndarray[Any, Any],
                 parts: Sequence[int], keys: Sequence[str | None],
                 dead: Sequence[Sequence[DeadLetter]], lo: int, hi: int, wall_s: float) -> None:
        """Messages ``lo:hi`` (events ``events``) up to the next ingest: accounted, their
        dead letters out, their events buffered."""
        self._account(events, msg_of_row, parts, keys, dead, lo, hi, wall_s)
        for j in range(lo, hi):
            for d in dead[j]:
                self._dead(d, keys[j])
        if not len(events):
            return
        if not self._pending:
            self._pending_since_s = wall_s
        self._pending.append(events)
        self._pending_events += len(events)
        for p, t in _latest_by_partition(events.event_time_s, msg_of_row, parts).items():
            self._pending_max[p] = max(self._pending_max.get(p, t), t)

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
        if late:
            self._say_late(late, wall_s)
        parts, self._pending_max = self._pending_max, {}
        latest, self._pending_latest = self._pending_latest, {}
        for p, t in parts.items():
            self.watermarks.observe(p, t, wall_s, latest.get(p))
        wm = self.watermarks.value(self._partitions(), self._caught)
        if wm is not None:
            self._outcomes(self._advance(wm))

    def _say_late(self, late: Sequence[DeadLetter], wall_s: float) -> None:
        """Events later than their tick are dead-lettered one by one; the log says so at
        most every 30 s, with what an on-call person needs to tell why."""
        if wall_s - self._late_said_at < 30.0:
            return
        self._late_said_at = wall_s
        stations = sorted({d.station_id for d in late if d.station_id})
        closed = self.pipeline.acc.next_close
        log.warning("%d event(s) arrived after their tick closed and were dead-lettered "
                    "(stations %s%s; ticks closed before %s, watermark %s, partitions %s "
                    "caught up %s); %d so far - a station's clock, or input delayed "
                    "beyond CONVERGENCE_ALLOWED_LATENESS_S", len(late),
                    ", ".join(stations[:3]), ", ..." if len(stations) > 3 else "", closed,
                    self.watermark_s, sorted(self.owned),
                    {p: v for p, v in sorted(self._caught.items())},
                    self.pipeline.counters.late)

    def _partitions(self) -> list[int]:
        """The partitions whose input bounds the watermark: those owned, else those seen
        (in one process: partition 0)."""
        return sorted(self.owned) if self.owned else sorted(self.watermarks.by_partition)

    @property
    def watermark_s(self) -> float | None:
        """Event time up to which every partition's input is believed complete."""
        return self.watermarks.value(self._partitions(), self._caught)

    def _ingest_failed(self, events: Sequence[Event], exc: Exception, wall_s: float) -> None:
        """Dead letters (one per event, with the reason) for a batch ingest rejected."""
        reason = (f"internal error {type(exc).__name__} while ingesting a batch of "
                  f"{len(events)} event(s): {exc}; this is a bug - report it with this payload")
        dls = [dead_letter("ingest", e.to_dict(), reason, received_at_s=wall_s) for e in events]
        self.pipeline.count_dead_letters(len(dls))
        for d in dls:
            self._account_dead(d.station_id, wall_s)
            self._dead(d, None)

    def on_timer(self, wall_s: float, *, caught_up: bool | Mapping[int, bool] = True,
                 reachable: Mapping[int, bool] | None = None) -> list[Emit]:
        """Ingest what waits in the buffer; idle advance when input has gone quiet.

        ``caught_up``: per partition (or for all), the consumer has read everything there
        is and can reach the broker (only then may wall time stand in for event time;
        behind or cut off, never). ``reachable``: per partition, the broker answers
        (behind or not; default: as ``caught_up``)."""
        if self.stopped:
            return []
        parts = self._partitions()
        self._caught = (dict(caught_up) if isinstance(caught_up, Mapping)
                        else dict.fromkeys(set(parts) | set(self.owned), bool(caught_up)))
        if self._held:
            self._expire_held(wall_s)
        if self._pending:
            self._flush(wall_s)
        self.watermarks.tick(parts, wall_s, self._caught, reachable)
        self.watermarks.idle(parts, wall_s, self._caught)
        wm = self.watermarks.value(parts, self._caught)
        if wm is not None:
            self._outcomes(self._advance(wm))
        all_caught = bool(self.owned) and all(self._caught.get(p, False) for p in self.owned)
        if (self.stations_only and all_caught and self.pipeline.acc.next_close is None
                and not self._pending and not self.watermarks.waiting(self.owned)):
            # nothing ever came on our partitions and we are caught up: say so, so the
            # second stage is not held up waiting for us
            quiet = wall_s - self.settings.allowed_lateness_s - self.idle_after_s
            self._announce(math.floor(quiet / self.settings.tick_s) - 1)
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
        n = len(outcomes) + len(self.pipeline.evidence_out)
        per_tick = (time.perf_counter() - started) / max(n, 1)
        for _ in range(n):
            self.metrics.tick_closed("tick", per_tick)
        if self.stations_only:
            self._send_evidence()
        return outcomes

    def _unit_of(self, sid: str) -> int:
        reg = self.pipeline.registry
        idx = reg.get(sid)
        region = reg.info(idx).region if idx is not None else "unknown"
        return region_partition(region, self.n_units)

    def _send_evidence(self) -> None:
        """Closed ticks to the second stage: per tick one message per second-stage
        partition (its regions' active stations), then progress if ticks closed (or a gap
        was skipped) with nothing to send."""
        evs, self.pipeline.evidence_out = self.pipeline.evidence_out, []
        src = sorted(self.owned) or [0]
        assert isinstance(self.port, TopicPort)
        for ne in evs:
            units: dict[int, list[str]] = {}
            for sid in ne.stations:
                units.setdefault(self._unit_of(sid), []).append(sid)
            for q in range(self.n_units):
                mine = set(units.get(q, ()))
                part = ne if self.n_units == 1 else ne.only(mine.__contains__)
                value = node_evidence_message(src, ne.tick, part)
                self.port.emit(Emit("node-evidence", str(q).encode(), value, partition=q))
                self.counters.evidence_messages += 1
                self.counters.evidence_bytes += len(value)
            self._announced = ne.tick
        nc = self.pipeline.acc.next_close
        if nc is not None and (self._announced is None or nc - 1 > self._announced):
            self._announce(nc - 1)

    def _announce(self, through: int) -> None:
        """Progress only: our partitions are complete up to tick ``through``."""
        if self._announced is not None and through <= self._announced:
            return
        assert isinstance(self.port, TopicPort)
        src = sorted(self.owned) or [0]
        for q in range(self.n_units):
            value = node_evidence_message(src, through)
            self.port.emit(Emit("node-evidence", str(q).encode(), value, partition=q))
            self.counters.progress_messages += 1
        self._announced = through

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
        publish_outcomes(self.port, outcomes, self.run_id, self.metrics)

    # -- per-station summaries and checkpoints --------------------------------
    def _station(self, sid: str) -> dict[str, Any]:
        s = self.stations.get(sid)
        if s is None:
            prev = self.summaries.get(sid)  # a previous owner's counts (table changelog)
            s = dict(prev) if isinstance(prev, dict) else {
                "events": 0, "dead_letters": 0, "last_event_time_s": None, "last_seen_s": None}
            self.stations[sid] = s
        return s

    def _note_latest(self, partition: int, station: str, t: float) -> None:
        """A buffered event's station and time, for the recovery hold at the next flush
        (reusing the per-station tally the summaries make anyway)."""
        per = self._pending_latest.setdefault(partition, {})
        if t > per.get(station, -math.inf):
            per[station] = t

    def _account(self, events: EventBatch, msg_of_row: np.ndarray[Any, Any],
                 parts: Sequence[int], keys: Sequence[str | None],
                 dead: Sequence[Sequence[DeadLetter]], lo: int, hi: int, wall_s: float) -> None:
        """Station summaries of messages ``lo:hi``: events (``msg_of_row``: each one's
        message) and dead letters (``dead[j]``; one without a station is the key's,
        ``keys[j]``). What message after message would give, at once: a station's rows
        are summed per station (a station on two partitions: message by message)."""
        fresh = self._fresh(events.event_hash, msg_of_row)
        dls = [(j, d.station_id or keys[j]) for j in range(lo, hi) for d in dead[j]]
        row_part = np.asarray(parts, dtype=np.int64)[msg_of_row].tolist()
        owner = dict(zip(events.station_id, row_part, strict=True))
        if (len(owner) == len(set(zip(events.station_id, row_part, strict=True)))
                and all(owner.setdefault(sid, parts[j]) == parts[j] for j, sid in dls if sid)):
            self._account_rows(events.station_id, events.event_time_s, fresh, owner, dls,
                               parts, wall_s)
            return
        for j in range(lo, hi):
            rows = np.flatnonzero(msg_of_row == j)
            sids = [events.station_id[i] for i in rows.tolist()]
            self._account_rows(sids, events.event_time_s[rows], fresh[rows],
                               dict.fromkeys(sids, parts[j]), [x for x in dls if x[0] == j],
                               parts, wall_s)

    def _account_rows(self, sids: Sequence[str], times: np.ndarray[Any, Any],
                      fresh: np.ndarray[Any, Any], owner: Mapping[str, int],
                      dls: Sequence[tuple[int, str | None]], parts: Sequence[int],
                      wall_s: float) -> None:
        # a re-sent event is the same event: summaries count events, not receipts
        for station, (new, t_max) in _by_station(sids, times, fresh).items():
            partition = owner[station]
            s = self._station(station)
            s["events"] += new
            last = s["last_event_time_s"]
            if last is None or t_max > last:
                s["last_event_time_s"] = t_max
            s["last_seen_s"] = wall_s
            self._dirty.setdefault(partition, set()).add(station)
            self._partition_of[station] = partition
            self._note_latest(partition, station, t_max)
        for j, sid in dls:
            if sid:
                self._partition_of.setdefault(sid, parts[j])
                self._account_dead(sid, wall_s)

    def _account_dead(self, sid: str | None, wall_s: float) -> None:
        if not sid:
            return
        s = self._station(sid)
        s["dead_letters"] += 1
        s["last_seen_s"] = wall_s
        self._dirty.setdefault(self._partition_of.get(sid, 0), set()).add(sid)

    def _write_all_tables(self, parts: Sequence[int], wall_s: float,
                          tables_in: Callable[[int], AbstractContextManager[object]] | None,
                          ) -> None:
        """:meth:`_write_tables` for each partition of a batch's messages ``parts``."""
        for partition, n in Counter(parts).items():
            try:
                with tables_in(partition) if tables_in is not None else nullcontext():
                    self._write_tables(partition, wall_s, min(
                        self.table_batch * n, max(self.table_batch, MAX_TABLE_WRITES)))
            except Exception:
                # Summaries and checkpoints are rewritten later; the alerts, reports and
                # commands already built from this batch must still go out.
                log.exception("worker: writing station summaries/checkpoints for partition "
                              "%d failed; publishing this batch's outputs anyway", partition)

    def _write_tables(self, partition: int, wall_s: float, budget: int) -> None:
        # Writes are spread over messages (at most ``table_batch`` per message, ``budget``
        # here): a burst of hundreds of changelog records at once stalls the stream on
        # Faust's producer buffer.
        if wall_s - self._summary_at.get(partition, -math.inf) >= self.summary_interval_s:
            self._summary_at[partition] = wall_s
            self._summary_due.setdefault(partition, set()).update(
                self._dirty.pop(partition, set()))
        if wall_s - self._checkpoint_at.get(partition, -math.inf) >= self.checkpoint_interval_s:
            self._checkpoint_at[partition] = wall_s
            closed = self.pipeline.acc.next_close
            if closed is not None and partition in self._done_offset:
                # how far this partition got: its next owner drops re-read events of these
                # ticks as duplicates (they were handed on), never as late
                self.progress[str(partition)] = {"closed_through": int(closed) - 1,
                                                 "offset": self._done_offset[partition],
                                                 "tick_s": self.settings.tick_s}
            self._checkpoint_due.setdefault(partition, set()).update(
                self._seen.pop(partition, set()))
        due = self._summary_due.get(partition)
        for _ in range(min(budget, len(due or ()))):
            assert due is not None
            sid = due.pop()
            self.summaries[sid] = dict(self.stations[sid])
        due = self._checkpoint_due.get(partition)
        tick = self.pipeline.acc.next_close
        # Nothing ingested yet (tick None): there is no state of ours to checkpoint.
        if due and tick is not None:
            reg, state = self.pipeline.registry, self.pipeline.state
            stages = checkpoint_stages(self.pipeline)
            for _ in range(min(budget, len(due))):
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

    def _fresh(self, hashes: np.ndarray[Any, Any],
               msg_of_row: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Which of these events were not counted yet (remembering them from now on);
        ``msg_of_row``: each one's message (the memory turns over between messages)."""
        if len(self._counted) + len(hashes) < self.COUNTED_IDS:
            return self._fresh_one(hashes)
        cuts = np.flatnonzero(np.diff(msg_of_row)) + 1
        return np.concatenate([np.zeros(0, dtype=bool),
                               *map(self._fresh_one, np.split(hashes, cuts))])

    def _fresh_one(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
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
        held = set(cp["state"])
        if not held <= set(stages) or set(stages) - held - ADDED_STAGES:
            raise ValueError(f"it holds stages {sorted(cp['state'])}, this build has {stages}")
        for st in stages:
            if st not in held:
                continue  # a stage added since the checkpoint was written: starts fresh
            values = dict(cp["state"][st])
            arrays = pipe.state[st]
            if "peak" in values and "peak" in arrays:
                # the station's own node verdict, from before the trend and scale evidence
                values["peak"] = pad_peak(np.asarray(values["peak"], np.float64)).tolist()
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
            "watermark_s": self.watermark_s, "partitions": sorted(self.owned),
            "stopped": self.stopped, "stations_seen": len(self.stations)}
        for name, part in self.summary_parts.items():
            out[name] = part()
        if len(self.stations) <= MAX_STATIONS_IN_SUMMARY:
            out["stations"] = {k: dict(v) for k, v in sorted(self.stations.items())}
        return out

    def run_record(self, regions: Mapping[str, Any] | None = None) -> Emit:
        """This worker's summary as a message for the ``runs`` topic (stored as ``run``).

        ``regions`` is the summary of the second stage this worker runs beside the first
        (:meth:`~convergence.streams.region_core.RegionCore.summary`): what it decided
        (alerts, reports, responses) goes into ``pipeline`` next to what the first stage
        counted, and the whole summary under ``regions``."""
        doc = self.summary()
        if regions is not None:
            decided = regions.get("pipeline", {})
            doc["pipeline"] = {**doc["pipeline"], **{k: decided.get(k, 0) for k in
                                                     ("alerts", "reports", "responses")}}
            doc["regions"] = dict(regions)
        return Emit("runs", self.run_id.encode(), to_json(doc))


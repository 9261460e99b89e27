"""The cluster's second stage without Faust: regions' convergence from node evidence.

A worker owns some partitions of the ``node-evidence`` topic; each holds the regions
that hash to it (:func:`~convergence.streams.topics.region_partition`). For each owned
partition a :class:`RegionUnit` keeps a :class:`~convergence.streams.stages.RegionStage`
(node states, meter, responses, reports of its regions' stations) and *when* it may
close a tick: the first-stage messages say which events partitions they speak for and
up to which tick those are complete; tick ``t`` closes once every events partition is
past ``t`` - so a convergence across stations on different first-stage workers is never
missed - and it closes once (a tick at or below the last closed one is dropped).

State. After every ``checkpoint_every_ticks`` closed ticks the unit's whole state goes
to a table keyed by its partition (a Faust table backed by a compacted changelog topic,
written while processing that partition's message, so it lands in the changelog
partition the new owner restores). The Faust adapter commits a message's offset only
once the ticks it carries are in such a checkpoint: after a crash the new owner restores
the checkpoint and reads the messages since, closing those ticks again. What that
republishes (alerts, report revisions) has the same ids, so the store and the alert
subscribers take it once.

Examples
--------
>>> from convergence.settings import load_settings
>>> from convergence.stations import StationInfo
>>> from convergence.streams.directory import StationDirectory
>>> s = load_settings(env={}, config_path=None)
>>> d = StationDirectory([StationInfo("news-1", "osint_news", "eu-west")])
>>> core = RegionCore(s, d, n_sources=2, n_units=1, run_id="doc")
>>> from convergence.streams.worker import node_evidence_message
>>> core.on_message(node_evidence_message([0], 10), 0, wall_s=0.0)   # partition 1 not heard
[]
>>> emits = core.on_message(node_evidence_message([1], 12), 0, wall_s=0.0)
>>> core.units[0].stage.last_tick is None   # progress alone closes no tick
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson

from convergence.records import NodeEvidence
from convergence.settings import Settings
from convergence.stations import StationInfo, StationRegistry
from convergence.streams.directory import StationDirectory
from convergence.streams.metrics import WorkerMetrics
from convergence.streams.pipeline import Pipeline
from convergence.streams.stages import PipelineCounters, RegionStage, TickOutcome
from convergence.streams.topics import Emit, region_partition
from convergence.streams.worker import OutputPort, TopicPort, publish_outcomes

__all__ = ["RegionCore", "RegionUnit"]

log = logging.getLogger(__name__)

#: pending ticks a unit holds at most while waiting for a slow first-stage partition
MAX_PENDING_TICKS = 10_000


class RegionUnit:
    """One ``node-evidence`` partition's regions (see module docstring)."""

    def __init__(self, partition: int, stage: RegionStage, n_sources: int) -> None:
        self.partition = partition
        self.stage = stage
        self.n_sources = n_sources
        #: per events partition: complete up to this tick
        self.progress: dict[int, int] = {}
        #: ticks heard of but not closable yet: tick -> evidence parts
        self.pending: dict[int, list[NodeEvidence]] = {}
        #: the last closed tick in the latest checkpoint
        self.saved_tick: int | None = None
        self.dropped_pending = 0

    def closable(self) -> int | None:
        """The latest tick every events partition has passed (``None``: not all heard)."""
        if len(self.progress) < self.n_sources:
            return None
        return min(self.progress.values())

    def take(self, doc: dict[str, Any]) -> list[TickOutcome]:
        """One message; returns the outcomes of the ticks it let close, in order."""
        through = int(doc["through"])
        ne_doc = doc.get("ne")
        if ne_doc is not None:
            ne = NodeEvidence.from_dict(ne_doc)
            last = self.stage.last_tick
            if last is None or ne.tick > last:
                self.pending.setdefault(ne.tick, []).append(ne)
        for p in doc.get("src") or ():
            p = int(p)
            if 0 <= p < self.n_sources:
                self.progress[p] = max(self.progress.get(p, through), through)
        if len(self.pending) > MAX_PENDING_TICKS:  # one partition silent for hours
            for t in sorted(self.pending)[:len(self.pending) - MAX_PENDING_TICKS]:
                del self.pending[t]
                self.dropped_pending += 1
        ready = self.closable()
        out: list[TickOutcome] = []
        if ready is None:
            return out
        for t in sorted(t for t in self.pending if t <= ready):
            oc = self.stage.step(NodeEvidence.merge(self.pending.pop(t)))
            if oc is not None:
                out.append(oc)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint: the stage and how far each events partition got - not the
        pending evidence. Its messages are not acknowledged until their ticks are in a
        checkpoint, so a new owner reads them again; kept here, the pending ticks of a
        first stage running far ahead of another made one checkpoint over a megabyte,
        more than the broker takes (the worker died in Faust's producer)."""
        return {"stage": self.stage.to_dict(), "progress": {str(k): v for k, v in self.progress.items()}}

    def load(self, d: dict[str, Any]) -> None:
        """Continue from a checkpoint. Progress is capped at the last closed tick: the
        evidence of later ticks comes back with the messages read again, and a tick must
        not close before every partition's evidence for it is back."""
        self.stage.load(d["stage"])
        last = self.stage.last_tick
        self.progress = {int(k): min(int(v), last) for k, v in (d.get("progress") or {}).items()
                         if 0 <= int(k) < self.n_sources and last is not None}
        self.pending = {}
        self.saved_tick = last


class RegionCore:
    """The second stage of one worker: every ``node-evidence`` partition it owns.

    Parameters
    ----------
    directory
        Station facts (fleet file and status messages): a unit's registry holds the
        directory's stations of its regions, quiet ones included.
    n_sources
        Partitions of the events topic (the first stage's): a tick closes when all are past it.
    n_units
        Partitions of the node-evidence topic (regions hash to them).
    table
        Where each unit's checkpoint lives, keyed by partition (a Faust table; a dict in tests).
    """

    def __init__(self, settings: Settings, directory: StationDirectory, *, n_sources: int,
                 n_units: int, run_id: str, table: MutableMapping[str, Any] | None = None,
                 port: OutputPort | None = None, metrics: WorkerMetrics | None = None,
                 checkpoint_every_ticks: int = 5) -> None:
        self.settings = settings
        self.directory = directory
        self.n_sources = max(int(n_sources), 1)
        self.n_units = max(int(n_units), 1)
        self.run_id = run_id
        self.table: MutableMapping[str, Any] = {} if table is None else table
        self.port: OutputPort = port if port is not None else TopicPort()
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.checkpoint_every_ticks = max(int(checkpoint_every_ticks), 1)
        # loads the models once (meter, regime); each unit gets its own processor
        self.template = Pipeline(settings, StationRegistry(), run_id=run_id, stations_only=True)
        self.counters = PipelineCounters()
        self.units: dict[int, RegionUnit] = {}
        self.owned: frozenset[int] = frozenset()
        self.checkpoints_written = 0
        self.checkpoints_restored = 0
        self.checkpoints_rejected = 0
        self.unreadable = 0
        directory.on_new(self._learn)

    # -- who is where ----------------------------------------------------------------
    def unit_of(self, region: str) -> int:
        return region_partition(region, self.n_units)

    def _learn(self, info: StationInfo) -> None:
        unit = self.units.get(self.unit_of(info.region))
        if unit is not None:
            unit.stage.registry.add(info)

    def _lookup(self, partition: int) -> Any:
        def lookup(sid: str) -> StationInfo | None:
            info = self.directory.lookup(sid)
            return info if info is not None and self.unit_of(info.region) == partition else None
        return lookup

    def _new_unit(self, partition: int) -> RegionUnit:
        registry = StationRegistry()
        stage = self.template.new_region_stage(registry, run_id=self.run_id,
                                               counters=self.counters,
                                               lookup=self._lookup(partition))
        unit = RegionUnit(partition, stage, self.n_sources)
        saved = self._read_table(partition)
        if saved is not None:
            try:
                unit.load(saved)
                self.checkpoints_restored += 1
                log.info("node-evidence partition %d: continuing from its checkpoint at tick %s "
                         "(%d stations)", partition, unit.stage.last_tick, len(registry))
            except (KeyError, TypeError, ValueError) as exc:
                self.checkpoints_rejected += 1
                log.warning("node-evidence partition %d: ignoring its checkpoint (%s); its "
                            "regions start afresh", partition, exc)
                registry = StationRegistry()
                stage = self.template.new_region_stage(registry, run_id=self.run_id,
                                                       counters=self.counters,
                                                       lookup=self._lookup(partition))
                unit = RegionUnit(partition, stage, self.n_sources)
        for info in self.directory.stations():
            if self.unit_of(info.region) == partition:
                registry.add(info)
        unit.stage.fit()
        return unit

    def _read_table(self, partition: int) -> dict[str, Any] | None:
        try:
            doc = self.table.get(str(partition))
        except Exception as exc:  # a table read failing must not stop the stream
            log.warning("node-evidence partition %d: cannot read its checkpoint (%s)", partition, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def on_assignment(self, partitions: Iterable[int]) -> None:
        """The node-evidence partitions this worker now owns; units of others are dropped
        (their new owner continues from the table)."""
        self.owned = frozenset(partitions)
        for q in [q for q in self.units if q not in self.owned]:
            del self.units[q]

    def unit(self, partition: int) -> RegionUnit:
        u = self.units.get(partition)
        if u is None:
            u = self.units[partition] = self._new_unit(partition)
        return u

    # -- input ------------------------------------------------------------------------
    def on_message(self, value: bytes | None, partition: int, wall_s: float) -> list[Emit]:
        """One node-evidence message: close what it lets close, publish, checkpoint."""
        try:
            doc = orjson.loads(value or b"")
            if not isinstance(doc, dict) or not isinstance(doc.get("through"), int):
                raise ValueError("not a node-evidence message")
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.unreadable += 1
            log.warning("node-evidence partition %d: unreadable message (%s); skipped",
                        partition, exc)
            return self.port.drain()
        unit = self.unit(partition)
        started = time.perf_counter()
        outcomes = unit.take(doc)
        if outcomes:
            per = (time.perf_counter() - started) / len(outcomes)
            for _ in outcomes:
                self.metrics.tick_closed("region", per)
            publish_outcomes(self.port, outcomes, self.run_id, self.metrics)
            last = unit.stage.last_tick
            if last is not None and (unit.saved_tick is None or any(oc.alerts for oc in outcomes)
                                     or last - unit.saved_tick >= self.checkpoint_every_ticks):
                self.save(partition)
        return self.port.drain()

    def save(self, partition: int) -> None:
        """Write a unit's checkpoint (call while processing that partition's message)."""
        unit = self.units.get(partition)
        if unit is None:
            return
        self.table[str(partition)] = unit.to_dict()
        unit.saved_tick = unit.stage.last_tick
        self.checkpoints_written += 1

    def saved_tick(self, partition: int) -> int | None:
        """Ticks up to this are in the partition's checkpoint: their messages may be committed."""
        unit = self.units.get(partition)
        return unit.saved_tick if unit is not None else None

    def note_station_state(self, station_id: str, state: str) -> None:
        """A station's agent changed state; ``backing_off`` makes it a dark station."""
        info = self.directory.lookup(station_id)
        if info is None:
            return
        unit = self.units.get(self.unit_of(info.region))
        if unit is None:
            return
        if state == "backing_off":
            unit.stage.dark.add(station_id)
        else:
            unit.stage.dark.discard(station_id)

    def manual(self, station_id: str, action: str, until_s: float | None = None) -> bool:
        """A person's quarantine or resume of a station whose region this worker owns."""
        info = self.directory.lookup(station_id)
        if info is None:
            return False
        unit = self.units.get(self.unit_of(info.region))
        return unit.stage.manual(station_id, action, until_s) if unit is not None else False

    def summary(self) -> dict[str, Any]:
        return {"partitions": sorted(self.owned), "pipeline": self.counters.as_dict(),
                "units": {str(q): {"last_tick": u.stage.last_tick, "saved_tick": u.saved_tick,
                              "pending_ticks": len(u.pending),
                              "waiting_for": sorted(set(range(self.n_sources)) - set(u.progress)),
                              "stations": len(u.stage.registry),
                              "regions": u.stage.registry.region_names()}
                          for q, u in sorted(self.units.items())},
                "checkpoints_written": self.checkpoints_written,
                "checkpoints_restored": self.checkpoints_restored,
                "checkpoints_rejected": self.checkpoints_rejected, "unreadable": self.unreadable}

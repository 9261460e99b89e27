"""The embedded runtime: the whole product in one process, nothing else installed.

Station agents (asyncio tasks, one per station) poll synthetic scenario sources and
put raw batches on an in-process bus (a bounded :class:`asyncio.Queue`, so a slow
pipeline slows the stations instead of growing memory). One consumer task validates
and ingests them into the :class:`~convergence.streams.pipeline.Pipeline`, closes ticks
as wall-clock time passes the allowed lateness, sends the adaptive responses' commands
back to the fleet, and writes alerts, reports, responses, dead letters and the run
summary to SurrealDB (embedded ``surrealkv://`` file by default, ``mem://`` for
throwaway runs) through a batched, retrying writer.

Stops cleanly after ``duration_s`` or when ``stop`` is set (Ctrl-C): stations stop,
the bus drains, every open tick is processed and everything is flushed to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convergence.control import CommandAck, ControlCommand
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.scenario import Scenario, SyntheticWorld, default_scenario, evaluate
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.schema import DeadLetter
from convergence.settings import Settings
from convergence.stations import StationRegistry
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter
from convergence.streams.pipeline import Pipeline, TickOutcome, dead_letter_record, outcome_records

log = logging.getLogger(__name__)

AlertHook = Callable[[dict[str, Any]], None]
LevelHook = Callable[[TickOutcome], None]
CommandHook = Callable[[ControlCommand, list[CommandAck]], None]


@dataclass
class RunSummary:
    """What a run did; ``--json`` prints :meth:`as_dict` as the last line."""

    run_id: str
    events: int
    alerts: int
    reports: int
    dead_letters: int
    events_per_s: float
    duplicates: int
    late: int
    ticks: int
    responses: int
    acks: int
    stations: int
    duration_s: float
    db: str
    bytes_per_station: int
    scenario: dict[str, Any] = field(default_factory=dict)
    alert_list: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["alert_list"] = [
            {k: a[k] for k in ("alert_id", "report_id", "level", "score", "time_s", "regions",
                               "source_kinds", "n_stations")}
            for a in self.alert_list
        ]
        return d


class EmbeddedRuntime:
    """Runs a synthetic fleet through the pipeline into SurrealDB (see module doc)."""

    #: at most this many bus batches are drained into one ingest call
    MAX_DRAIN = 2000

    def __init__(self, settings: Settings, *, duration_s: float | None = None,
                 scenario: Scenario | None = None, on_alert: AlertHook | None = None,
                 on_level: LevelHook | None = None, on_tick: LevelHook | None = None,
                 on_command: CommandHook | None = None,
                 sample_interval_s: float = 0.5, clock: Callable[[], float] = time.time,
                 close_timeout_s: float = 30.0) -> None:
        self.settings = settings
        #: how long closing waits for the store to take what is pending (a ws:// server
        #: that is down must not hold the shutdown forever)
        self.close_timeout_s = close_timeout_s
        self.duration_s = duration_s
        horizon = (duration_s or 3600.0) + 60.0
        self.scenario = scenario or default_scenario(settings.stations, settings.seed, horizon)
        self.world = SyntheticWorld(self.scenario)
        self.registry = StationRegistry(list(self.scenario.fleet))
        self.pipeline = Pipeline(settings, self.registry)
        self.on_alert = on_alert
        self.on_level = on_level
        #: every closed tick, and every command sent to the fleet with its acks (the dashboard)
        self.on_tick = on_tick
        self.on_command = on_command
        #: the running fleet (``None`` before the run starts its stations)
        self.fleet: Fleet | None = None
        self.sample_interval_s = sample_interval_s
        self.clock = clock
        self.bus: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue(maxsize=20_000)
        self.alerts: list[dict[str, Any]] = []
        self.commands: list[ControlCommand] = []
        self.run_id = f"run-{settings.seed}-{int(clock())}"
        self._source_rejects: list[DeadLetter] = []

    def _fleet(self, t0: float) -> Fleet:
        async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
            await self.bus.put((station_id, records))

        return Fleet([
            StationAgent(info, SyntheticSource(self.world, i, t0, self.settings.seed), sink,
                         interval_s=self.sample_interval_s, clock=self.clock,
                         seed=self.settings.seed, on_state=self._on_state, on_dead=self._on_dead)
            for i, info in enumerate(self.scenario.fleet)
        ])

    def _on_dead(self, dls: list[DeadLetter]) -> None:
        # sources' rejects join the pipeline's own dead letters: counted and stored
        self.pipeline.count_dead_letters(len(dls))
        self._source_rejects.extend(dls)

    def _on_state(self, station_id: str, old: str, new: str, reason: str) -> None:
        self.pipeline.note_station_state(station_id, new)
        if new in ("backing_off", "quarantined"):
            log.warning("station %s: %s -> %s (%s)", station_id, old, new, reason)

    def _handle(self, outcomes: list[TickOutcome], writer: BatchedWriter, fleet: Fleet) -> None:
        for oc in outcomes:
            if self.on_tick is not None:
                self.on_tick(oc)
            if (oc.level != oc.prev_level or oc.uncorroborated) and self.on_level is not None:
                self.on_level(oc)
            for r in oc.responses:
                if r.command is not None:
                    self.commands.append(r.command)
                    acks = fleet.dispatch(r.command, self.clock())
                    if self.on_command is not None:
                        self.on_command(r.command, acks)
            for table, rid, doc in outcome_records(oc, self.run_id):
                writer.submit(table, rid, doc)
            for alert in oc.alerts:
                self.alerts.append(alert)
                if self.on_alert is not None:
                    self.on_alert(alert)

    def _dead(self, dls: list[DeadLetter], writer: BatchedWriter) -> None:
        for d in dls:
            writer.submit(*dead_letter_record(d, self.run_id))

    async def _consume(self, writer: BatchedWriter, fleet: Fleet, stations_done: asyncio.Event) -> None:
        pipe = self.pipeline
        while True:
            records: list[dict[str, Any]] = []
            try:
                _, first = await asyncio.wait_for(self.bus.get(), timeout=0.1)
                records.extend(first)
            except TimeoutError:
                pass
            # drain whatever else is waiting: one ingest call per loop, not per station
            # (capped, so a flooded bus still lets ticks close between ingests)
            drained = 0
            while drained < self.MAX_DRAIN and not self.bus.empty():
                records.extend(self.bus.get_nowait()[1])
                drained += 1
            now = self.clock()
            if self._source_rejects:
                self._dead(self._source_rejects, writer)
                self._source_rejects = []
            if records:
                dls = pipe.ingest_raw(records, now)
                if dls:
                    self._dead(dls, writer)
            self._handle(pipe.advance(now), writer, fleet)
            if stations_done.is_set() and self.bus.empty():
                return

    async def run(self, stop: asyncio.Event | None = None) -> RunSummary:
        """Run until ``duration_s`` passes or ``stop`` is set; returns the summary.

        If the consumer fails (the store cannot keep up -
        :class:`~convergence.store.writer.StoreBackpressure` -, an ``on_alert`` hook
        raises, a pipeline bug), the stations stop, what can be flushed is flushed, the
        writer and the store are closed, and then its exception is raised. Records the
        store has not taken within ``close_timeout_s`` are logged and counted in the
        summary's ``store["unwritten"]``.
        """
        stop = stop or asyncio.Event()
        store = SurrealStore.from_settings(self.settings)
        await store.open()
        try:
            writer = BatchedWriter(store, seed=self.settings.seed, name="embedded",
                                   close_timeout_s=self.close_timeout_s)
            close_error: str | None = None
            try:
                summary, failure = await self._run(stop, writer)
            finally:
                try:
                    await writer.close()
                except StoreError as exc:
                    close_error = str(exc)
                    log.error("embedded run %s: %d record(s) NOT written to %s: %s", self.run_id,
                              writer.pending, self.settings.db_url, exc)
            summary.store = {**writer.stats(), "unwritten": writer.pending,
                             "close_error": close_error}
        finally:
            await store.close()
        if failure is not None:
            raise failure
        return summary

    async def _run(self, stop: asyncio.Event,
                   writer: BatchedWriter) -> tuple[RunSummary, BaseException | None]:
        """Stations and consumer until stopped, then flush; the summary and what failed."""
        t0 = self.clock()
        fleet = self.fleet = self._fleet(t0)
        stations_stop = asyncio.Event()
        stations_done = asyncio.Event()

        async def stations() -> None:
            try:
                await fleet.run(stations_stop)
            finally:
                stations_done.set()

        st_task = asyncio.create_task(stations())
        consumer = asyncio.create_task(self._consume(writer, fleet, stations_done))
        cancelled: asyncio.CancelledError | None = None
        stopped = asyncio.ensure_future(stop.wait())
        try:
            # A consumer that dies ends the run too: nothing else would notice it.
            await asyncio.wait([stopped, consumer], timeout=self.duration_s,
                               return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError as exc:  # shut down cleanly all the same
            cancelled = exc
        finally:
            stopped.cancel()
        stations_stop.set()
        # A dead consumer drains nothing: stations blocked on a full bus would never end.
        await asyncio.wait([st_task, consumer], return_when=asyncio.FIRST_COMPLETED)
        if consumer.done() and not st_task.done():
            st_task.cancel()
        await asyncio.wait([st_task])
        await asyncio.wait([consumer])
        consumer_error = _task_error(consumer)
        failure = cancelled or consumer_error or _task_error(st_task)
        if failure is not None and failure is not cancelled:
            log.error("embedded run %s: %s failed (%s: %s); stations stopped, %d station batch(es) "
                      "left on the bus, flushing what can be flushed", self.run_id,
                      "the pipeline" if consumer_error is not None else "the fleet",
                      type(failure).__name__, failure, self.bus.qsize())
        try:
            self._handle(self.pipeline.flush(), writer, fleet)
        except Exception as exc:
            failure = failure or exc
            log.error("embedded run %s: flushing the open ticks failed: %s: %s",
                      self.run_id, type(exc).__name__, exc)
        elapsed = max(self.clock() - t0, 1e-9)
        summary = self._summary(t0, elapsed, fleet)
        try:
            writer.submit("run", self.run_id, summary.as_dict())
        except StoreError as exc:
            log.error("embedded run %s: the run record was not queued: %s", self.run_id, exc)
        return summary, failure

    def _summary(self, t0: float, elapsed: float, fleet: Fleet) -> RunSummary:
        c = self.pipeline.counters
        return RunSummary(
            run_id=self.run_id, events=c.events, alerts=c.alerts, reports=c.reports,
            dead_letters=c.dead_letters, events_per_s=round(c.events / elapsed, 1),
            duplicates=c.duplicates, late=c.late, ticks=c.ticks, responses=c.responses,
            acks=len(fleet.acks), stations=len(self.registry), duration_s=round(elapsed, 3),
            db=self.settings.db_url, bytes_per_station=self.pipeline.bytes_per_station(),
            scenario=evaluate(self.scenario, self.alerts, t0=t0, horizon_s=elapsed,
                              window_s=self.pipeline.chain.meter.window_ticks * self.settings.tick_s),
            alert_list=list(self.alerts),
        )


def _task_error(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task died of (``None``: it returned or was cancelled)."""
    return None if task.cancelled() else task.exception()

"""The embedded runtime: the whole product in one process, nothing else installed.

Station agents (asyncio tasks, one per station) poll their sources — a library
scenario's synthetic stations by default, or any fleet file's stations (synthetic,
replay, RSS/Atom, HTTP JSON) — and put raw batches on an in-process bus (a bounded
:class:`asyncio.Queue`, so a slow pipeline slows the stations instead of growing
memory). One consumer hands them to the *runner* — the very
:class:`~convergence.streams.worker.WorkerCore` a cluster worker runs — whose output port
here is the process itself: records go to SurrealDB through a batched, retrying writer
(report revisions into the report graph), control commands to the fleet (their acks back
into the reports), tick outcomes to whoever watches (the terminal, the dashboard).

The watermark is the runner's event-time watermark: ticks close as the stations' event
time passes the allowed lateness, and on wall time only once the bus is empty. With a
:mod:`virtual clock <convergence.streams.virtual_clock>` (``--as-fast-as-possible``) the
whole runtime runs in simulated time and a seed gives the same alerts every time; a
fleet of recordings only is then delivered in steps (``step_s``: every replay station
hands over a step's rows at once, the runner takes them all in one go), which gives the
same alerts for far fewer wake-ups, so a month of recordings backtests in minutes.

Alerts reach ``on_alert`` once the store has confirmed them (so an alert a person saw
survives a crash), or after :attr:`EmbeddedRuntime.ALERT_STORE_WAIT_S` marked ``stored:
False`` with the store's error, never silently late.

Stops cleanly after ``duration_s`` or when ``stop`` is set (Ctrl-C): stations stop,
the bus drains, every open tick is processed and everything is flushed to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergence.control import CommandAck, ControlCommand
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.scenario import Scenario, SyntheticWorld, default_scenario, evaluate
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.records import AckNote, Alert
from convergence.schema import DeadLetter
from convergence.settings import Settings, redact_url
from convergence.stations import StationRegistry
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter
from convergence.streams.pipeline import RecordRouter, TickOutcome, dead_letter_record
from convergence.streams.topics import Emit
from convergence.streams.virtual_clock import settled
from convergence.streams.worker import WorkerCore

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
    alert_list: list[Alert] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    report_ids: list[str] = field(default_factory=list)
    meter: str = "rule-based fusion"
    clock: str = "wall"
    #: dead letters by cause (stage and field), each with how many and its first reason
    #: (at most :data:`MAX_DEAD_CAUSES` causes; the store holds every dead letter)
    dead_letter_causes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["alert_list"] = [
            {k: v for k, v in a.to_dict().items()
             if k in ("alert_id", "report_id", "level", "score", "time_s", "time", "region",
                      "source_kinds", "n_stations")}
            for a in self.alert_list
        ]
        return d


#: dead-letter causes a run summary lists at most (the rest are counted under "other")
MAX_DEAD_CAUSES = 10


class DeadLetterCauses:
    """Dead letters tallied by cause (stage and field), each with its first reason: what
    a person reads at the end of a run to see why input was refused (bounded).

    >>> c = DeadLetterCauses()
    >>> for line in (3, 4):
    ...     c.add("source.csv", "price", f"file t.csv line {line}: price 'x' is not a number")
    >>> c.add("ingest", "event_time_s", "too old")
    >>> [(d["stage"], d["field"], d["count"]) for d in c.causes()]
    [('source.csv', 'price', 2), ('ingest', 'event_time_s', 1)]
    >>> c.causes()[0]["example"]
    "file t.csv line 3: price 'x' is not a number"
    """

    def __init__(self, most: int = MAX_DEAD_CAUSES) -> None:
        self.most = most
        self._by: dict[tuple[str, str], list[Any]] = {}

    def add(self, stage: str, field_name: str, reason: str) -> None:
        key = (stage, field_name)
        got = self._by.get(key)
        if got is None:
            if len(self._by) >= self.most:
                key = ("other", "")
                got = self._by.get(key)
            if got is None:
                got = self._by[key] = [0, reason[:500]]
        got[0] += 1

    def causes(self) -> list[dict[str, Any]]:
        """Most frequent first."""
        return [{"stage": k[0], "field": k[1], "count": v[0], "example": v[1]}
                for k, v in sorted(self._by.items(), key=lambda kv: -kv[1][0])]


def steps_possible(fleet: Sequence[Any]) -> bool:
    """Can this fleet be delivered in steps (:class:`EmbeddedRuntime`'s ``step_s``)? Only
    if every station replays a recording in recorded time (not at speed ``"max"``).

    >>> from convergence.ground_stations.fleet import SourceSpec, StationSpec
    >>> def spec(kind: str, **options: Any) -> StationSpec:
    ...     return StationSpec("s1", "sensor", SourceSpec(kind, options), "eu")
    >>> steps_possible([spec("replay", speed=1.0)]), steps_possible([spec("replay", speed="max")])
    (True, False)
    >>> steps_possible([spec("replay", speed=1.0), spec("synthetic")]), steps_possible([])
    (False, False)
    """
    return bool(fleet) and all(sp.source.type == "replay" and sp.source.options.get("speed") != "max"
                               for sp in fleet)


class _Port:
    """The runner's output port in one process (see the module docstring)."""

    def __init__(self, rt: EmbeddedRuntime) -> None:
        self.rt = rt

    def record(self, table: str, record_id: str, doc: dict[str, Any]) -> None:
        rt = self.rt
        assert rt.router is not None
        rt.router.submit(table, record_id, doc, urgent=table == "alert")
        if table == "dead_letter":
            rt.dead_causes.add(str(doc.get("stage", "")), str(doc.get("field", "")),
                               str(doc.get("reason", "")))
        elif table == "alert":
            rt.alerts.append(Alert.from_dict(doc))
            rt.awaiting[record_id] = time.monotonic()
        elif table == "report":
            rt.report_ids.setdefault(str(doc["report_id"]), None)

    def command(self, cmd: ControlCommand, response_id: str) -> None:
        rt = self.rt
        rt.commands.append(cmd)
        if rt.fleet is None:
            return
        acks = rt.fleet.dispatch(cmd, rt.clock())
        if acks:
            rt.core.pipeline.reporter.note_acks(response_id, [
                AckNote(a.station_id, a.applied, a.at_s, a.detail) for a in acks])
        if rt.on_command is not None:
            rt.on_command(cmd, acks)

    def outcome(self, oc: TickOutcome) -> None:
        rt = self.rt
        if rt.on_tick is not None:
            rt.on_tick(oc)
        if (oc.changed or oc.uncorroborated) and rt.on_level is not None:
            rt.on_level(oc)

    def drain(self) -> list[Emit]:
        return []


class EmbeddedRuntime:
    """Runs a fleet through the runner into SurrealDB (see the module docstring).

    Parameters
    ----------
    scenario
        The synthetic story the stations play (default: the default demo scenario).
    fleet
        Station specs from a fleet file (:mod:`~convergence.ground_stations.fleet`); their
        synthetic stations play ``fleet_scenario`` of the fleet, the others read their
        sources. Exclusive with ``scenario``.
    clock
        The station and watermark clock (a virtual loop's ``time`` for
        ``--as-fast-as-possible``).
    step_s
        Deliver in steps (a backtest: every station a recording, on a simulated clock):
        the replay stations hand over every row due in ``step_s`` seconds of recorded time
        at once, and the runner takes what they all handed over at that instant in one go
        (:func:`~convergence.streams.virtual_clock.settled`) and closes every tick it
        completes in one pass. The same events, ticks, alerts and report ids as polling on
        the stations' intervals, for far fewer wake-ups; a gap in the recordings costs
        one. ``None``: poll on the intervals (a live run).
    """

    #: at most this many bus batches are handed to the runner in one go
    MAX_DRAIN = 2000
    #: how long an alert may wait for the store before it is shown as not stored (yet)
    ALERT_STORE_WAIT_S = 2.0

    def __init__(self, settings: Settings, *, duration_s: float | None = None,
                 scenario: Scenario | None = None, fleet: Sequence[Any] | None = None,
                 on_alert: AlertHook | None = None, on_level: LevelHook | None = None,
                 on_tick: LevelHook | None = None, on_command: CommandHook | None = None,
                 sample_interval_s: float = 0.5, clock: Callable[[], float] = time.time,
                 close_timeout_s: float = 30.0, t0_s: float | None = None,
                 step_s: float | None = None) -> None:
        if scenario is not None and fleet is not None:
            raise ValueError("give a scenario or a fleet, not both")
        if step_s is not None and (fleet is None or not steps_possible(fleet)):
            raise ValueError("step_s (step delivery) needs a fleet of replay stations only, "
                             "none at speed 'max': a station polled on its interval would "
                             "run the watermark ahead of rows a step holds back")
        self.step_s = step_s
        self.settings = settings
        #: how long closing waits for the store to take what is pending (a ws:// server
        #: that is down must not hold the shutdown forever)
        self.close_timeout_s = close_timeout_s
        self.duration_s = duration_s
        self.specs = list(fleet) if fleet is not None else None
        horizon = (duration_s or 3600.0) + 60.0
        if self.specs is not None:
            from convergence.ground_stations.fleet import fleet_scenario

            self.scenario: Scenario | None = fleet_scenario(self.specs, settings.seed, horizon)
            infos = [s.info for s in self.specs]
        else:
            self.scenario = scenario or default_scenario(settings.stations, settings.seed, horizon)
            infos = list(self.scenario.fleet)
        self.world = SyntheticWorld(self.scenario) if self.scenario is not None else None
        self.registry = StationRegistry(infos)
        self.on_alert = on_alert
        self.on_level = on_level
        #: every closed tick, and every command sent to the fleet with its acks (the dashboard)
        self.on_tick = on_tick
        self.on_command = on_command
        self.sample_interval_s = sample_interval_s
        self.clock = clock
        self.t0_s = t0_s
        self.run_id = f"run-{settings.seed}-{int(clock())}"
        self.core = WorkerCore(settings, registry_factory=lambda: self.registry,
                               run_id=self.run_id, port=_Port(self), batch_wait_s=0.0,
                               batch_events=1)
        self._seed_from_world()
        self.bus: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue(maxsize=20_000)
        self.alerts: list[Alert] = []
        self.commands: list[ControlCommand] = []
        self.report_ids: dict[str, None] = {}  # insertion-ordered set
        self.awaiting: dict[str, float] = {}  # alert id -> when it was queued (monotonic)
        self.fleet: Fleet | None = None
        self.graph: Any = None  # the report graph, once the store is open
        self.router: RecordRouter | None = None
        self._source_rejects: list[DeadLetter] = []
        self.dead_causes = DeadLetterCauses()
        self._scenario_t0: float | None = None

    @property
    def pipeline(self) -> Any:
        """The runner's pipeline (registry, counters, detector state, reports)."""
        return self.core.pipeline

    def _seed_from_world(self) -> None:
        """Baselines as a pipeline that had watched these synthetic stations for weeks
        holds them (the usual rate now, and by hour of day), as the simulator seeds them."""
        if self.world is None or self.specs is not None:
            return
        proc, pipe = self.core.pipeline.processor, self.core.pipeline
        tick_s = self.settings.tick_s
        usual = np.asarray(self.world.usual_rates(0.0)) * tick_s
        profile = np.asarray(self.world.daily_profile(proc.chain.periodicity.slots_per_day)) * tick_s
        proc.seed_baselines(pipe.state, usual, profile)

    # -- the fleet ---------------------------------------------------------------
    def _build_fleet(self, t0: float) -> Fleet:
        async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
            await self.bus.put((station_id, records))

        if self.specs is not None:
            from convergence.ground_stations.fleet import build_fleet

            fleet = build_fleet(self.specs, sink, world=self.world, t0_s=t0,
                                seed=self.settings.seed, clock=self.clock,
                                on_state=self._on_state)
            for a in fleet.agents:
                a.on_dead = self._on_dead
                a.step_s = self.step_s
            return fleet
        assert self.world is not None and self.scenario is not None
        return Fleet([
            StationAgent(info, SyntheticSource(self.world, i, t0, self.settings.seed), sink,
                         interval_s=self.scenario.interval_of(i) if self.scenario.intervals_s
                         else self.sample_interval_s, clock=self.clock,
                         seed=self.settings.seed, on_state=self._on_state, on_dead=self._on_dead)
            for i, info in enumerate(self.scenario.fleet)
        ])

    def _on_dead(self, dls: list[DeadLetter]) -> None:
        # sources' rejects join the pipeline's own dead letters: counted and stored
        self.core.pipeline.count_dead_letters(len(dls))
        self._source_rejects.extend(dls)

    def _on_state(self, station_id: str, old: str, new: str, reason: str) -> None:
        self.core.pipeline.note_station_state(station_id, new)
        if new in ("backing_off", "quarantined"):
            log.warning("station %s: %s -> %s (%s)", station_id, old, new, reason)

    def command(self, cmd: ControlCommand) -> list[CommandAck]:
        """A person's command (the dashboard's buttons): to the fleet, and a manual
        quarantine or resume to the pipeline at once. Returns the stations' acks."""
        self.core.manual(cmd, self.clock())
        acks = self.fleet.dispatch(cmd, self.clock()) if self.fleet is not None else []
        self.commands.append(cmd)
        if self.on_command is not None:
            self.on_command(cmd, acks)
        return acks

    # -- the store ---------------------------------------------------------------
    def _stored(self, table: str, rid: str, doc: dict[str, Any]) -> None:
        if table == "alert":
            self.awaiting.pop(rid, None)
            if self.on_alert is not None:
                self.on_alert({**doc, "stored": True})

    def _overdue(self, writer: BatchedWriter, *, all_now: bool = False,
                 error: str | None = None) -> None:
        """Alerts the store has not confirmed in time: announce them as not stored."""
        if not self.awaiting:
            return
        limit = time.monotonic() - self.ALERT_STORE_WAIT_S
        late = {rid for rid, t in self.awaiting.items() if all_now or t <= limit}
        if not late:
            return
        why = error or writer.stats()["last_error"] or (
            f"the database has not confirmed it within {self.ALERT_STORE_WAIT_S:g} s")
        for table, rid, doc in writer.unwritten():
            if table == "alert" and rid in late:
                del self.awaiting[rid]
                if self.on_alert is not None:
                    self.on_alert({**doc, "stored": False, "store_error": why})

    def _dead(self, dls: list[DeadLetter]) -> None:
        assert self.router is not None
        for d in dls:
            self.dead_causes.add(d.stage, d.field, d.reason)
            self.router.submit(*dead_letter_record(d, self.run_id))

    # -- the loop ----------------------------------------------------------------
    async def _next_batch(self, stations_done: asyncio.Event) -> list[dict[str, Any]]:
        """Step delivery: wait for the bus (or the end), then until every station due at
        this instant has handed over (no timeout: a quiet stretch costs no wake-ups)."""
        got: list[dict[str, Any]] = []
        if self.bus.empty() and not stations_done.is_set():
            getter = asyncio.ensure_future(self.bus.get())
            done = asyncio.ensure_future(stations_done.wait())
            try:
                await asyncio.wait([getter, done], return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                got = getter.result()[1]
        await settled()
        return got

    async def _consume(self, writer: BatchedWriter, stations_done: asyncio.Event) -> None:
        core = self.core
        while True:
            records: list[dict[str, Any]] = []
            if self.step_s is not None:
                records.extend(await self._next_batch(stations_done))
            else:
                try:
                    _, first = await asyncio.wait_for(self.bus.get(), timeout=0.1)
                    records.extend(first)
                except TimeoutError:
                    pass
            # drain whatever else is waiting: one runner call per loop, not per station
            # (capped, so a flooded bus still lets ticks close between calls; a step is
            # taken whole - what it holds back would be late - and is bounded by the bus)
            drained, most = 0, self.MAX_DRAIN if self.step_s is None else self.bus.maxsize
            while drained < most and not self.bus.empty():
                records.extend(self.bus.get_nowait()[1])
                drained += 1
            now = self.clock()
            if self._source_rejects:
                self._dead(self._source_rejects)
                self._source_rejects = []
            if records:
                core.on_records(records, now)
            core.on_timer(now, caught_up=self.bus.empty())
            self._overdue(writer)
            if stations_done.is_set() and self.bus.empty():
                return

    async def run(self, stop: asyncio.Event | None = None) -> RunSummary:
        """Run until ``duration_s`` passes or ``stop`` is set; returns the summary.

        ``on_alert`` hears of each alert once the store has confirmed it (``stored:
        True``; within the writer's flush interval), or, when the store refuses it or
        closing gives up on it, with ``stored: False`` and ``store_error``; an alert
        first announced unstored is announced again once stored.

        If the consumer fails (the store cannot keep up -
        :class:`~convergence.store.writer.StoreBackpressure` -, a pipeline bug), the
        stations stop, what can be flushed is flushed, the writer and the store are
        closed, and then its exception is raised. Records the store has not taken within
        ``close_timeout_s`` are logged and counted in the summary's ``store["unwritten"]``.
        """
        from convergence.store.graph import ReportGraph

        stop = stop or asyncio.Event()
        store = SurrealStore.from_settings(self.settings)
        await store.open()
        try:
            writer = BatchedWriter(store, seed=self.settings.seed, name="embedded",
                                   close_timeout_s=self.close_timeout_s,
                                   on_written=self._stored)
            self.graph = ReportGraph(writer)
            await self.graph.load(store)
            self.router = RecordRouter(writer, self.graph)
            close_error: str | None = None
            try:
                summary, failure = await self._run(stop, writer)
            finally:
                try:
                    await writer.close()
                except StoreError as exc:
                    close_error = str(exc)
                    log.error("embedded run %s: %d record(s) NOT written to %s: %s", self.run_id,
                              writer.pending, redact_url(self.settings.db_url), exc)
                    self._overdue(writer, all_now=True, error=str(exc))
            by_table: dict[str, int] = {}
            for table, _, _ in writer.unwritten():
                by_table[table] = by_table.get(table, 0) + 1
            summary.store = {**writer.stats(), "unwritten": writer.pending,
                             "unwritten_by_table": by_table, "close_error": close_error,
                             "report_graph": self.graph.stats()}
        finally:
            await store.close()
        if failure is not None:
            raise failure
        return summary

    async def _run(self, stop: asyncio.Event,
                   writer: BatchedWriter) -> tuple[RunSummary, BaseException | None]:
        """Stations and consumer until stopped, then flush; the summary and what failed."""
        t0 = self.clock() if self.t0_s is None else self.t0_s
        self._scenario_t0 = t0
        fleet = self.fleet = self._build_fleet(t0)
        stations_stop = asyncio.Event()
        stations_done = asyncio.Event()

        async def stations() -> None:
            try:
                await fleet.run(stations_stop)
            finally:
                stations_done.set()

        st_task = asyncio.create_task(stations())
        consumer = asyncio.create_task(self._consume(writer, stations_done))
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
            self.core.on_stop(self.clock())
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
        pipe = self.core.pipeline
        c = pipe.counters
        check: dict[str, Any] = {}
        if self.scenario is not None:
            synthetic = {info.region for info in self.scenario.fleet}
            alerts = [a for a in self.alerts if a.region in synthetic]
            check = evaluate(self.scenario, alerts, t0=t0, horizon_s=elapsed,
                             window_s=pipe.chain.meter.window_ticks * self.settings.tick_s)
        return RunSummary(
            run_id=self.run_id, events=c.events, alerts=c.alerts, reports=c.reports,
            dead_letters=c.dead_letters, events_per_s=round(c.events / elapsed, 1),
            duplicates=c.duplicates, late=c.late, ticks=c.ticks, responses=c.responses,
            acks=len(fleet.acks), stations=len(self.registry), duration_s=round(elapsed, 3),
            db=redact_url(self.settings.db_url), bytes_per_station=pipe.bytes_per_station(),
            scenario=check, alert_list=list(self.alerts), report_ids=list(self.report_ids),
            meter=pipe.fusion, dead_letter_causes=self.dead_causes.causes(),
        )


def _task_error(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task died of (``None``: it returned or was cancelled)."""
    return None if task.cancelled() else task.exception()

"""Feeding the dashboard from ``convergence run`` (the embedded runtime).

:class:`EmbeddedFeed` is a small adapter between today's
:class:`~convergence.streams.embedded.EmbeddedRuntime` and the
:class:`~convergence.dashboard.hub.Hub`. The runtime calls its hooks; the feed turns
what they carry into the hub's typed inputs:

* ``on_tick(TickOutcome)``, every closed tick: one :class:`RegionReading` per region
  (today's meter fuses all regions into one level: the top region gets that level, the
  others the level their own score reaches by the thresholds), then the tick's reports
  (``synthesize_report`` dicts, made :class:`Report` revisions with the episode's
  timeline and score series) and alerts. An episode that ends gets a closed revision
  with its :class:`Outcome`.
* ``on_command(cmd, acks)``: every command the adaptive responses sent, with acks.
* :meth:`EmbeddedFeed.run` samples the fleet every ``sample_s`` seconds into
  :class:`StationStatus` es (state, events sent, interval, and the pipeline's node
  state of the station).

:class:`EmbeddedCommandPort` is the page's way to the fleet: it applies the command
in-process, as a control listener would, and a ``resume`` also lifts the adaptive
responses' own quarantine of the station.

When the runtime is rebuilt as one runner with ports, it calls the hub directly:
``hub.reading`` per region per closed tick, ``hub.report`` per report revision,
``hub.alert`` per alert (after its report), ``hub.station`` per station status and
``hub.command`` per command sent (with its acks); this module then goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convergence.control import Action, CommandAck, ControlCommand
from convergence.dashboard.hub import Hub, level_of
from convergence.dashboard.legacy import ack_notes, as_alert, as_report, response_taken
from convergence.dashboard.server import DashboardServer
from convergence.records import (
    MAX_SCORE_POINTS,
    MAX_TIMELINE,
    Level,
    NodeState,
    Outcome,
    RegionReading,
    Report,
    StationState,
    StationStatus,
    TimelineEntry,
)
from convergence.responses.prism import report_id_for

if TYPE_CHECKING:
    from convergence.streams.embedded import EmbeddedRuntime, RunSummary
    from convergence.streams.pipeline import TickOutcome

__all__ = ["EmbeddedCommandPort", "EmbeddedFeed", "run_with_dashboard"]

log = logging.getLogger(__name__)

#: commands whose acks are remembered for the reports that name them
MAX_KEPT_ACKS = 500
#: node state machine codes (detectors.node_state: NORMAL, ELEVATED, ANOMALOUS, COOLING)
_NODE_STATES = (NodeState.NORMAL, NodeState.ELEVATED, NodeState.ANOMALOUS, NodeState.COOLING)


@dataclass
class _Episode:
    """What the feed knows of the open episode (today's meter has one at a time)."""

    report_id: str
    region: str
    started_s: float
    revision: int = 0
    peak: tuple[Level, float] = (Level.QUIET, 0.0)
    #: bounded as a report's lists are (the most recent kept), however long the episode
    timeline: deque[TimelineEntry] = field(default_factory=lambda: deque(maxlen=MAX_TIMELINE))
    series: deque[tuple[int, float]] = field(
        default_factory=lambda: deque(maxlen=MAX_SCORE_POINTS))
    stations: set[str] = field(default_factory=set)
    last: Report | None = None
    #: the latest revision's responses: response id -> the command id it sent
    commands: dict[str, str] = field(default_factory=dict)


class EmbeddedFeed:
    """Feeds ``hub`` from ``runtime``'s hooks (see module docstring).

    Construction attaches the hooks, keeping any the runtime already had (the command
    line's live alert lines).
    """

    def __init__(self, hub: Hub, runtime: EmbeddedRuntime, *, sample_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        if sample_s <= 0:
            raise ValueError(f"sample_s must be > 0, got {sample_s}")
        self.hub = hub
        self.runtime = runtime
        self.sample_s = sample_s
        self.clock = clock
        self._levels: dict[str, Level] = {}
        self._episode: _Episode | None = None
        #: the top region's level changes and scores since the meter left quiet (an
        #: episode's report starts at its first alert and takes these as its beginning)
        self._opening: list[TimelineEntry] = []
        self._opening_series: list[tuple[int, float]] = []
        self._report_of_region: dict[str, str] = {}
        #: acks by command id (bounded): a report revision names its responses' acks
        self._acks: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        before_tick, before_cmd = runtime.on_tick, runtime.on_command

        def on_tick(oc: TickOutcome) -> None:
            if before_tick is not None:
                before_tick(oc)
            self._guarded("a closed tick", self.on_tick, oc)

        def on_command(cmd: ControlCommand, acks: list[CommandAck]) -> None:
            if before_cmd is not None:
                before_cmd(cmd, acks)
            self._guarded("a command", self.on_command, cmd, acks)

        runtime.on_tick = on_tick
        runtime.on_command = on_command
        hub.source = hub.source or f"embedded run {runtime.run_id}"

    def _guarded(self, what: str, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)``; a failure is logged and shown on the page, never raised: the
        dashboard must not stop the run it watches."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("dashboard: could not show %s", what)
            self.hub.reject(what, f"{type(exc).__name__}: {exc}")

    # -- hooks ------------------------------------------------------------------------
    def on_tick(self, oc: TickOutcome) -> None:
        """One closed tick: readings for every region, then reports, then alerts."""
        pipe = self.runtime.pipeline
        thresholds = tuple(float(t) for t in pipe.chain.meter.thresholds)
        th: tuple[float, float, float] = (thresholds[0], thresholds[1], thresholds[2])
        names = self.runtime.registry.region_names()
        reading = pipe.last_reading or {}
        scores = list(reading.get("region_score", ()))
        osint = list(reading.get("region_osint", ()))
        kinds = list(reading.get("region_kinds", ()))
        ep = self._episode
        if ep is not None and oc.level == Level.QUIET:
            self._close_episode(ep, oc)
            ep = self._episode = None
        if oc.prev_level == Level.QUIET and oc.level != Level.QUIET:
            # the pipeline names an episode by the tick its meter left quiet
            self._report_of_region[oc.region] = report_id_for(oc.tick)
            self._opening, self._opening_series = [], []
        if oc.level != Level.QUIET and ep is None:
            self._opening_series = [*self._opening_series, (oc.tick, round(oc.score, 2))][
                -MAX_SCORE_POINTS:]
            if oc.level != oc.prev_level:
                self._opening = [*self._opening, TimelineEntry(
                    oc.tick, oc.time_s, "level", round(oc.score, 2), level=Level(oc.level))][
                    -MAX_TIMELINE:]
        for i, name in enumerate(names):
            top = name == oc.region
            score = oc.score if top else float(scores[i]) if i < len(scores) else 0.0
            # today's meter has one level (the top region's); the others read by their score
            level = Level(oc.level) if top else level_of(score, th)
            prev = self._levels.get(name, Level.QUIET)
            self._levels[name] = level
            report_id = self._report_of_region.get(name) if level > Level.QUIET else None
            if level == Level.QUIET:
                self._report_of_region.pop(name, None)
            self.hub.reading(RegionReading(
                region=name, tick=oc.tick, time_s=oc.time_s, score=round(score, 2), level=level,
                prev_level=prev,
                osint_corroborated=bool(oc.osint) if top else bool(i < len(osint) and osint[i]),
                n_kinds=oc.n_kinds if top else int(kinds[i]) if i < len(kinds) else 0,
                n_stations=oc.anomalous_stations if top else 0, report_id=report_id,
                thresholds=th, run_id=self.runtime.run_id))
            if ep is not None and name == ep.region:
                ep.series.append((oc.tick, round(score, 2)))
                if level != prev:
                    ep.timeline.append(TimelineEntry(oc.tick, oc.time_s, "level", round(score, 2),
                                                     level=level))
        for d in oc.reports:
            self._report(d, oc)
        for d in oc.alerts:
            alert = as_alert({**d, "run_id": self.runtime.run_id})
            self._report_of_region[alert.region] = alert.report_id
            self.hub.alert(alert)

    def on_command(self, cmd: ControlCommand, acks: list[CommandAck]) -> None:
        """A command the runtime sent to its fleet, with the acks. A response of the
        latest report revision that sent it gets the acks (the revision is re-published)."""
        self._acks[cmd.command_id] = [a.to_dict() for a in acks]
        while len(self._acks) > MAX_KEPT_ACKS:
            self._acks.popitem(last=False)
        self.hub.command(cmd, acks)
        ep = self._episode
        if ep is not None and ep.last is not None and cmd.command_id in ep.commands.values():
            ep.last = dataclasses.replace(ep.last, responses=tuple(
                dataclasses.replace(r, acks=ack_notes(
                    self._acks.get(ep.commands.get(r.response_id, ""), [])))
                for r in ep.last.responses))
            self.hub.report(ep.last)

    # -- reports ----------------------------------------------------------------------
    def _report(self, d: dict[str, Any], oc: TickOutcome) -> None:
        region = (d.get("regions") or [oc.region])[0]
        ep = self._episode
        if ep is None or ep.report_id != d["report_id"]:
            opening = self._opening or [TimelineEntry(oc.tick, oc.time_s, "level",
                                                      round(oc.score, 2), level=Level(oc.level))]
            ep = self._episode = _Episode(str(d["report_id"]), str(region), opening[0].time_s)
            ep.timeline.extend(opening)
            ep.series.extend(self._opening_series)
            if not ep.series or ep.series[-1][0] != oc.tick:
                ep.series.append((oc.tick, round(oc.score, 2)))
        ep.revision += 1
        level, score = Level(d["level"]), float(d["score"])
        ep.peak = max(ep.peak, (level, score))
        for n in d.get("nodes") or []:
            sid = str(n.get("station_id"))
            if sid not in ep.stations:
                ep.stations.add(sid)
                ep.timeline.append(TimelineEntry(oc.tick, oc.time_s, "joined", round(score, 2),
                                                 station_id=sid))
        ep.commands = {str(r.get("response_id")): str((r.get("command") or {}).get("command_id"))
                       for r in d.get("responses") or []}
        responses = [response_taken(r, self._acks.get(ep.commands[str(r.get("response_id"))], []))
                     for r in d.get("responses") or []]
        ep.last = as_report({**d, "run_id": self.runtime.run_id}, revision=ep.revision,
                            tick=oc.tick, peak=ep.peak, timeline=list(ep.timeline),
                            score_series=list(ep.series), responses=responses)
        self.hub.report(ep.last)

    def _close_episode(self, ep: _Episode, oc: TickOutcome) -> None:
        """The meter went quiet: the episode's last revision, closed, with its outcome."""
        if ep.last is None:
            return
        ep.revision += 1
        ep.timeline.append(TimelineEntry(oc.tick, oc.time_s, "ended", round(oc.score, 2),
                                         level=Level.QUIET))
        last = ep.last
        closed = Report.from_dict({
            **last.to_dict(), "revision": ep.revision, "status": "closed", "tick": oc.tick,
            "time_s": oc.time_s, "level": Level.QUIET.value, "score": round(oc.score, 2),
            "timeline": [t.to_dict() for t in ep.timeline],
            "score_series": list(ep.series),
            "outcome": Outcome(ep.started_s, oc.time_s, ep.peak[1], ep.peak[0]).to_dict()})
        self.hub.report(closed)

    # -- stations ---------------------------------------------------------------------
    def sample(self, station_ids: set[str] | None = None) -> int:
        """Push the status of every station (or of ``station_ids``) now; how many."""
        fleet = self.runtime.fleet
        if fleet is None:
            return 0
        pipe = self.runtime.pipeline
        reg = self.runtime.registry
        try:
            codes = pipe.state[pipe.chain.node.name]["state"]
        except (KeyError, TypeError):
            codes = None
        now = self.clock()
        n = 0
        for agent in fleet.agents:
            sid = agent.info.station_id
            if station_ids is not None and sid not in station_ids:
                continue
            idx = reg.get(sid)
            node = None
            if codes is not None and idx is not None and idx < len(codes):
                code = int(codes[idx])
                node = _NODE_STATES[code] if 0 <= code < len(_NODE_STATES) else None
            self.hub.station(StationStatus(
                station_id=sid, source_kind=agent.info.kind.value, region=agent.info.region,
                group=agent.info.correlation_group, state=StationState(agent.state), at_s=now,
                interval_s=agent.effective_interval(now), events=agent.sent, node_state=node))
            n += 1
        return n

    async def run(self, stop: asyncio.Event) -> None:
        """Sample the fleet every ``sample_s`` until ``stop`` is set, then once more."""
        while not stop.is_set():
            self._guarded("the stations' status", self.sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sample_s)
        self._guarded("the stations' status", self.sample)

    def port(self) -> EmbeddedCommandPort:
        """The command port the page's buttons use."""
        return EmbeddedCommandPort(self)


class EmbeddedCommandPort:
    """Applies the page's commands to the embedded fleet (see module docstring)."""

    def __init__(self, feed: EmbeddedFeed) -> None:
        self.feed = feed

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        """Apply ``cmd`` now; the acks come back at once (``timeout_s`` is not needed
        in-process). ``RuntimeError`` before the run has started its stations."""
        rt = self.feed.runtime
        fleet = rt.fleet
        if fleet is None:
            raise RuntimeError("the run has not started its stations yet; try again in a moment")
        acks = fleet.dispatch(cmd, self.feed.clock())
        if cmd.action == Action.RESUME:
            # the adaptive responses keep their own quarantine: a person's resume lifts it
            for ack in acks:
                idx = rt.registry.get(ack.station_id)
                if idx is not None and ack.applied:
                    rt.pipeline.responder.release(idx)
        self.feed.sample({a.station_id for a in acks})
        return acks


async def run_with_dashboard(runtime: EmbeddedRuntime, stop: asyncio.Event, *, port: int,
                             host: str = "127.0.0.1",
                             on_ready: Callable[[DashboardServer], None] | None = None,
                             hub: Hub | None = None) -> RunSummary:
    """``runtime.run(stop)`` with the dashboard served on ``host:port`` meanwhile.

    The server starts first (a port in use is a
    :class:`~convergence.dashboard.server.DashboardError` before anything runs), then
    ``on_ready(server)`` (print the address and token), then the run; when the run
    ends, the browsers are told and the server stops. ``hub``: the hub to feed (a
    new one when not given).
    """
    hub = hub if hub is not None else Hub()
    feed = EmbeddedFeed(hub, runtime)
    server = DashboardServer(hub, host=host, port=port, commands=feed.port())
    await server.start()
    sampler_stop = asyncio.Event()
    sampler = asyncio.create_task(feed.run(sampler_stop))
    try:
        if on_ready is not None:
            on_ready(server)
        return await runtime.run(stop)
    finally:
        sampler_stop.set()
        await asyncio.wait([sampler])
        hub.close(f"the run {runtime.run_id} ended")
        await server.stop()

"""Feeding the dashboard from ``convergence run`` (the embedded runtime).

A thin adapter: the runtime's outputs already are the hub's typed records.

* ``on_tick(TickOutcome)``, every closed tick: ``hub.reading`` for every region's
  :class:`~convergence.records.RegionReading`, then ``hub.report`` for each report
  revision, then ``hub.alert`` for each alert (a report is in the hub before the alert
  that names it, so a click on a fresh alert finds its report);
* ``on_command(cmd, acks)``: every command sent to the fleet, by the adaptive
  responses or by a person, with the stations' acks: ``hub.command``;
* :meth:`EmbeddedFeed.run` samples the fleet every ``sample_s`` seconds (of the run's
  clock: simulated time under ``--as-fast-as-possible``) into
  :class:`~convergence.records.StationStatus` es, with each station's verdict from the
  pipeline's node state machine (:meth:`~convergence.streams.pipeline.Pipeline.node_states`).

:class:`EmbeddedCommandPort` is the page's way to the stations:
:meth:`EmbeddedRuntime.command <convergence.streams.embedded.EmbeddedRuntime.command>`,
which applies a person's quarantine or resume to the pipeline (a resume also lifts the
adaptive responses' own quarantine of the station) and dispatches it to the fleet.

The feed never stops the run it watches: a failure in it is logged and counted on the
page.

Examples
--------
>>> from convergence.settings import load_settings
>>> from convergence.streams.embedded import EmbeddedRuntime
>>> rt = EmbeddedRuntime(load_settings(env={"CONVERGENCE_DB": "mem://"}, config_path=None))
>>> feed = EmbeddedFeed(Hub(), rt)
>>> feed.hub.source == f"embedded run {rt.run_id}", feed.sample()  # no fleet before the run
(True, 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from convergence.control import CommandAck, ControlCommand
from convergence.dashboard.hub import Hub
from convergence.dashboard.server import DashboardServer
from convergence.records import StationState, StationStatus

if TYPE_CHECKING:
    from convergence.streams.embedded import EmbeddedRuntime, RunSummary
    from convergence.streams.pipeline import TickOutcome

__all__ = ["EmbeddedCommandPort", "EmbeddedFeed", "run_with_dashboard"]

log = logging.getLogger(__name__)


class EmbeddedFeed:
    """Feeds ``hub`` from ``runtime``'s hooks (see module docstring).

    Construction attaches the hooks, keeping any the runtime already had (the command
    line's): those run first. ``clock`` (default: the runtime's) stamps station statuses.
    """

    def __init__(self, hub: Hub, runtime: EmbeddedRuntime, *, sample_s: float = 1.0,
                 clock: Callable[[], float] | None = None) -> None:
        if sample_s <= 0:
            raise ValueError(f"sample_s must be > 0, got {sample_s}")
        self.hub = hub
        self.runtime = runtime
        self.sample_s = sample_s
        self.clock = clock if clock is not None else runtime.clock
        before_tick, before_cmd = runtime.on_tick, runtime.on_command

        def on_tick(oc: TickOutcome) -> None:
            if before_tick is not None:
                before_tick(oc)
            self._guarded("a closed tick", self.on_tick, oc)

        def on_command(cmd: ControlCommand, acks: list[CommandAck]) -> None:
            if before_cmd is not None:
                before_cmd(cmd, acks)
            self._guarded("a command", self.hub.command, cmd, acks)

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

    def on_tick(self, oc: TickOutcome) -> None:
        """One closed tick: every region's reading, then report revisions, then alerts."""
        for reading in oc.readings:
            self.hub.reading(reading)
        for report in oc.reports:
            self.hub.report(report)
        for alert in oc.alerts:
            self.hub.alert(alert)

    def sample(self, station_ids: set[str] | None = None) -> int:
        """Push the status of every station (or of ``station_ids``) now; how many."""
        fleet = self.runtime.fleet
        if fleet is None:
            return 0
        verdicts = self.runtime.pipeline.node_states()
        now = self.clock()
        n = 0
        for agent in fleet.agents:
            info = agent.info
            if station_ids is not None and info.station_id not in station_ids:
                continue
            self.hub.station(StationStatus(
                station_id=info.station_id, source_kind=info.kind.value, region=info.region,
                group=info.correlation_group, state=StationState(agent.state), at_s=now,
                interval_s=agent.effective_interval(now), events=agent.sent,
                node_state=verdicts.get(info.station_id)))
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
    """The page's commands through :meth:`EmbeddedRuntime.command` (see module docstring)."""

    def __init__(self, feed: EmbeddedFeed) -> None:
        self.feed = feed

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        """Apply ``cmd`` now; the acks come back at once (``timeout_s`` is not needed
        in-process). ``RuntimeError`` before the run has started its stations."""
        rt = self.feed.runtime
        if rt.fleet is None:
            raise RuntimeError("the run has not started its stations yet; try again in a moment")
        acks = rt.command(cmd)
        self.feed.sample({a.station_id for a in acks})  # the new state shows at once
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
    server = DashboardServer(hub, host=host, port=port, commands=feed.port(),
                             clock=runtime.clock)
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

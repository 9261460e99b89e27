"""Station agents: poll a source on an interval, obey control commands, survive failures.

A :class:`StationAgent` is one asyncio task. Each cycle it polls its source and hands
the raw records to a *sink* (``async sink(station_id, records)``): the in-process bus
in the embedded runtime, a kafka-python producer in cluster mode. Hundreds run in one
process; a :class:`Fleet` starts them, routes control commands to the ones a command
targets, and collects their acknowledgements.

A source that keeps failing trips the station's circuit breaker: the agent backs off
exponentially with jitter, then sends one half-open probe. Every state change
(running, backing_off, quarantined, stopped) is reported through ``on_state`` — a
station going dark is itself a signal.

Examples
--------
>>> import asyncio
>>> from convergence.control import ControlCommand, Target
>>> from convergence.stations import StationInfo
>>> class Once(Source):
...     async def poll(self, now_s):
...         return [{"station_id": "s1", "value": now_s}]
>>> got = []
>>> async def sink(station_id, records):
...     got.extend(records)
>>> agent = StationAgent(StationInfo("s1", "sensor", "eu"), Once(), sink, interval_s=0.01,
...                      clock=lambda: 5.0)
>>> cmd = ControlCommand.create("quarantine", Target("station", "s1"), issued_at_s=0.0, ttl_s=60.0)
>>> agent.apply(cmd, now_s=0.0).applied, agent.state
(True, 'quarantined')
>>> async def main():
...     stop = asyncio.Event()
...     task = asyncio.create_task(agent.run(stop))
...     await asyncio.sleep(0.05); stop.set(); await task
>>> asyncio.run(main()); got   # quarantined: nothing is sent
[]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from convergence.breaker import BreakerState, CircuitBreaker
from convergence.control import Action, CommandAck, ControlCommand, validate_params
from convergence.ground_stations.base import Source, SourceError
from convergence.schema import DeadLetter
from convergence.stations import StationInfo

log = logging.getLogger(__name__)

Sink = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
StateHook = Callable[[str, str, str, str], None]  # station_id, old, new, reason
DeadHook = Callable[[list[DeadLetter]], None]

RUNNING, BACKING_OFF, QUARANTINED, STOPPED = "running", "backing_off", "quarantined", "stopped"
#: the longest delivery step (and the longest sleep of a station whose source is done)
MAX_STEP_S = 86_400.0
DEFAULT_BURST_INTERVAL_S = 0.25
#: how long one poll may take before the agent gives up on it (``poll_timeout_s``)
DEFAULT_POLL_TIMEOUT_S = 10.0
#: a network source's polls get its own HTTP ``timeout_s`` plus this, to handle the answer
#: (see :func:`~convergence.ground_stations.fleet.build_fleet`)
POLL_TIMEOUT_MARGIN_S = 5.0


@dataclass
class StationAgent:
    """One station: a source, a sampling interval, a breaker, and its control state."""

    info: StationInfo
    source: Source
    sink: Sink | None  # None until attached (:meth:`Fleet.attach`); run() needs one
    interval_s: float = 1.0
    clock: Callable[[], float] = time.time
    on_state: StateHook | None = None
    on_dead: DeadHook | None = None
    failure_threshold: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S
    #: deliver in steps (a backtest on a simulated clock): poll at the multiples of
    #: ``step_s`` of the station clock, handing over every row due by then, and sleep
    #: through the steps where the source says nothing is due (see :meth:`run`)
    step_s: float | None = None
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    state: str = RUNNING
    polls: int = 0
    failures: int = 0
    sent: int = 0
    rejected: int = 0
    _burst_until: float = -1.0
    _burst_interval_s: float = DEFAULT_BURST_INTERVAL_S
    _quarantine_until: float = -1.0
    _wake: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"station {self.info.station_id}: interval_s must be > 0, "
                             f"got {self.interval_s}")
        if self.step_s is not None and not (0 < self.step_s <= MAX_STEP_S):
            raise ValueError(f"station {self.info.station_id}: step_s must be > 0 and at most "
                             f"{MAX_STEP_S:g}, got {self.step_s}")
        self._rng = random.Random(f"{self.seed}:{self.info.station_id}")
        # the cool-down grows with the failures, jittered per station (seeded: reproducible)
        self.breaker = CircuitBreaker(self.failure_threshold, self.backoff_base_s,
                                      now=time.monotonic, name=f"station {self.info.station_id}",
                                      backoff_max_s=max(self.backoff_max_s, self.backoff_base_s),
                                      rng=self._rng)

    def _set_state(self, new: str, reason: str) -> None:
        if new != self.state:
            old, self.state = self.state, new
            log.info("station %s: %s -> %s (%s)", self.info.station_id, old, new, reason)
            if self.on_state is not None:
                self.on_state(self.info.station_id, old, new, reason)

    def _leave_quarantine(self, reason: str) -> None:
        """Running again, or backing off while the breaker has not closed (no poll has
        succeeded since it opened): quarantine does not make a failing source healthy."""
        if self.breaker.state is BreakerState.CLOSED:
            self._set_state(RUNNING, reason)
        else:
            self._set_state(BACKING_OFF, f"{reason}; the source's circuit breaker is still open")

    def _drain(self) -> None:
        # after every poll, good or failed: an unreadable body leaves its dead letter behind
        dls = self.source.drain_rejects()
        if dls:
            self.rejected += len(dls)
            if self.on_dead is not None:
                self.on_dead(dls)
            else:
                log.warning("station %s: %d rejected inputs and no dead-letter sink; first: %s",
                            self.info.station_id, len(dls), dls[0].reason)

    def effective_interval(self, now_s: float) -> float:
        """Sampling interval in force (burst mode samples faster until it expires)."""
        if now_s < self._burst_until:
            return min(self.interval_s, self._burst_interval_s)
        return self.interval_s

    def apply(self, cmd: ControlCommand, now_s: float) -> CommandAck:
        """Apply a control command addressed to this station and acknowledge it."""
        sid = self.info.station_id
        if cmd.expired(now_s):
            return CommandAck(cmd.command_id, sid, False, now_s, "expired before it arrived")
        try:
            # commands built without create/from_dict (or by an older producer) are checked too
            p = validate_params(cmd.action, cmd.params)
        except ValueError as exc:
            return CommandAck(cmd.command_id, sid, False, now_s, f"bad parameters: {exc}")
        if cmd.action == Action.SET_INTERVAL:
            self.interval_s = p["interval_s"]
            detail = f"interval {self.interval_s:g} s"
        elif cmd.action == Action.BURST_MODE:
            self._burst_interval_s = p.get("interval_s", DEFAULT_BURST_INTERVAL_S)
            self._burst_until = cmd.expires_at_s
            detail = f"burst mode at {self._burst_interval_s:g} s until {cmd.expires_at_s:.0f}"
        elif cmd.action == Action.SET_THRESHOLDS:
            self.thresholds.update(p)
            detail = f"thresholds {self.thresholds}"
        elif cmd.action == Action.QUARANTINE:
            self._quarantine_until = cmd.expires_at_s
            self._set_state(QUARANTINED, cmd.reason or "quarantine command")
            detail = f"quarantined until {cmd.expires_at_s:.0f}"
        else:  # RESUME
            self._quarantine_until = -1.0
            self._burst_until = -1.0
            if self.state == QUARANTINED:
                self._leave_quarantine("resume command")
            detail = "resumed"
        self.wake()
        return CommandAck(cmd.command_id, sid, True, now_s, detail)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when woken: by a command (:meth:`apply`) or by ``stop``
        (whoever watches it sets every agent's wake event)."""
        wake = self._wake
        assert wake is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await wake.wait()
        wake.clear()

    def wake(self) -> None:
        """End the current sleep now (stop requested, or a command changed the interval)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event, *, watch_stop: bool = True) -> None:
        """Poll until ``stop`` is set; then mark the station stopped.

        ``watch_stop=False`` when the caller wakes the agent (:meth:`wake`) once ``stop``
        is set, as :meth:`Fleet.run` does for all its agents with one task.
        """
        sink = self.sink
        if sink is None:
            raise RuntimeError(f"station {self.info.station_id} has no sink; attach one "
                               "(Fleet.attach) before running it")
        self._wake = asyncio.Event()
        watcher = asyncio.ensure_future(_wake_on(stop, [self])) if watch_stop else None
        try:
            while not stop.is_set():
                now = self.clock()
                if self.state == QUARANTINED:
                    if now >= self._quarantine_until:
                        self._leave_quarantine("quarantine expired")
                        continue
                    await self._sleep(min(self._quarantine_until - now, 1.0))
                    continue
                if not self.breaker.allow():
                    await self._sleep(self.breaker.retry_after())
                    continue
                deadline = asyncio.timeout(self.poll_timeout_s)
                try:
                    async with deadline:
                        records = await self.source.poll(now)
                except (SourceError, OSError, TimeoutError, ValueError) as exc:
                    self._drain()
                    self.failures += 1
                    self.breaker.record_failure()
                    reason = (self._poll_timed_out() if isinstance(exc, TimeoutError)
                              and deadline.expired() else f"{type(exc).__name__}: {exc}")
                    if self.breaker.state == BreakerState.OPEN:
                        self._set_state(BACKING_OFF, reason)
                    else:
                        log.warning("station %s: poll failed (%s)", self.info.station_id, reason)
                    await self._sleep(self.effective_interval(now))
                    continue
                self._drain()
                self.breaker.record_success()
                if self.state == BACKING_OFF:
                    self._set_state(RUNNING, "source answered again")
                self.polls += 1
                if records:
                    await sink(self.info.station_id, records)
                    self.sent += len(records)
                if self.step_s is None:
                    await self._sleep(self.effective_interval(self.clock()) - (self.clock() - now))
                    continue
                wait = self._until_next_step(now)
                if wait > 0:
                    await self._sleep(wait)
            if self.step_s is not None and self.state == RUNNING and self.breaker.allow():
                await self._last_step(sink)
        finally:
            if watcher is not None:
                watcher.cancel()
            self._set_state(STOPPED, "stop requested")
            await self.source.close()

    def _until_next_step(self, polled_at: float) -> float:
        """Step delivery: seconds until the next poll. None while the source has a row
        due already (a poll hands over at most its batch); else the step at or after both
        the next interval and the source's next row, so a gap in a recording costs one
        wake-up, not one per interval. A source that cannot tell is polled on the interval."""
        step = self.step_s
        assert step is not None
        now = self.clock()
        due = self.source.next_due_s(now)
        if due is None:  # the source cannot tell: poll it on the interval
            return self.effective_interval(now) - (now - polled_at)
        if due <= now:
            return 0.0
        at = max(polled_at + self.effective_interval(now), min(due, now + MAX_STEP_S))
        return math.ceil(at / step) * step - now

    async def _last_step(self, sink: Sink) -> None:
        """Step delivery stopping: hand over what is due by now, as a poll on the interval
        would have (the last step may lie up to ``step_s`` back)."""
        try:
            async with asyncio.timeout(self.poll_timeout_s):
                records = await self.source.poll(self.clock())
        except (SourceError, OSError, TimeoutError, ValueError) as exc:
            log.warning("station %s: the last poll before stopping failed (%s: %s)",
                        self.info.station_id, type(exc).__name__, exc)
            records = []
        self._drain()
        if records:
            await sink(self.info.station_id, records)
            self.sent += len(records)

    def _poll_timed_out(self) -> str:
        """Why a poll cut off by ``poll_timeout_s`` failed, and what to raise."""
        return (f"TimeoutError: the {self.source.kind} source's poll did not finish within "
                f"poll_timeout_s={self.poll_timeout_s:g} s; the source is slow or stuck. For an "
                "rss or json source raise timeout_s in its [station.source] table (a fleet gives "
                f"its polls timeout_s + {POLL_TIMEOUT_MARGIN_S:g} s)")

    def status(self) -> dict[str, Any]:
        return {"station_id": self.info.station_id, "kind": self.info.kind.value,
                "region": self.info.region, "state": self.state,
                "interval_s": self.effective_interval(self.clock()), "polls": self.polls,
                "failures": self.failures, "sent": self.sent, "rejected": self.rejected,
                "thresholds": dict(self.thresholds)}


@dataclass
class Fleet:
    """Many station agents in one process, plus command routing."""

    agents: list[StationAgent]
    acks: list[CommandAck] = field(default_factory=list)

    def attach(self, sink: Sink, on_state: StateHook | None = None,
               on_dead: DeadHook | None = None) -> None:
        """Send every agent's records to ``sink``; ``on_state``/``on_dead``, when given,
        replace every agent's hooks."""
        for a in self.agents:
            a.sink = sink
            if on_state is not None:
                a.on_state = on_state
            if on_dead is not None:
                a.on_dead = on_dead

    def dispatch(self, cmd: ControlCommand, now_s: float) -> list[CommandAck]:
        """Apply ``cmd`` to every agent it targets; returns (and keeps) the acks."""
        acks = [a.apply(cmd, now_s) for a in self.agents
                if cmd.applies_to(a.info.station_id, a.info.kind.value, a.info.region)]
        self.acks.extend(acks)
        return acks

    def dispatch_all(self, cmds: Iterable[ControlCommand], now_s: float) -> list[CommandAck]:
        return [ack for c in cmds for ack in self.dispatch(c, now_s)]

    async def run(self, stop: asyncio.Event) -> None:
        """Run every agent until ``stop`` is set (one task watches ``stop`` for them all)."""
        watcher = asyncio.ensure_future(_wake_on(stop, self.agents))
        try:
            await asyncio.gather(*(a.run(stop, watch_stop=False) for a in self.agents))
        finally:
            watcher.cancel()

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.agents:
            out[a.state] = out.get(a.state, 0) + 1
        return out


async def _wake_on(stop: asyncio.Event, agents: list[StationAgent]) -> None:
    """Once ``stop`` is set, wake every agent so none sleeps out its interval."""
    await stop.wait()
    for a in agents:
        a.wake()

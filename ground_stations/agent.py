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
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from convergence.breaker import BreakerState, CircuitBreaker
from convergence.control import Action, CommandAck, ControlCommand
from convergence.ground_stations.base import Source, SourceError
from convergence.schema import DeadLetter
from convergence.stations import StationInfo

log = logging.getLogger(__name__)

Sink = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
StateHook = Callable[[str, str, str, str], None]  # station_id, old, new, reason
DeadHook = Callable[[list[DeadLetter]], None]

RUNNING, BACKING_OFF, QUARANTINED, STOPPED = "running", "backing_off", "quarantined", "stopped"


@dataclass
class StationAgent:
    """One station: a source, a sampling interval, a breaker, and its control state."""

    info: StationInfo
    source: Source
    sink: Sink
    interval_s: float = 1.0
    clock: Callable[[], float] = time.time
    on_state: StateHook | None = None
    on_dead: DeadHook | None = None
    failure_threshold: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    poll_timeout_s: float = 10.0
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    state: str = RUNNING
    polls: int = 0
    failures: int = 0
    sent: int = 0
    rejected: int = 0
    _burst_until: float = -1.0
    _burst_interval_s: float = 0.25
    _quarantine_until: float = -1.0
    _wake: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"station {self.info.station_id}: interval_s must be > 0, "
                             f"got {self.interval_s}")
        self._rng = random.Random(f"{self.seed}:{self.info.station_id}")
        self.breaker = CircuitBreaker(self.failure_threshold, self.backoff_base_s,
                                      now=time.monotonic, name=f"station {self.info.station_id}")

    def _set_state(self, new: str, reason: str) -> None:
        if new != self.state:
            old, self.state = self.state, new
            log.info("station %s: %s -> %s (%s)", self.info.station_id, old, new, reason)
            if self.on_state is not None:
                self.on_state(self.info.station_id, old, new, reason)

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
        p = cmd.params
        try:
            if cmd.action == Action.SET_INTERVAL:
                iv = float(p["interval_s"])
                if iv <= 0:
                    raise ValueError("interval_s must be > 0")
                self.interval_s = iv
                detail = f"interval {iv:g} s"
            elif cmd.action == Action.BURST_MODE:
                self._burst_interval_s = float(p.get("interval_s", 0.25))
                self._burst_until = cmd.expires_at_s
                detail = f"burst mode at {self._burst_interval_s:g} s until {cmd.expires_at_s:.0f}"
            elif cmd.action == Action.SET_THRESHOLDS:
                self.thresholds.update({k: float(v) for k, v in p.items()})
                detail = f"thresholds {self.thresholds}"
            elif cmd.action == Action.QUARANTINE:
                self._quarantine_until = cmd.expires_at_s
                self._set_state(QUARANTINED, cmd.reason or "quarantine command")
                detail = f"quarantined until {cmd.expires_at_s:.0f}"
            else:  # RESUME
                self._quarantine_until = -1.0
                self._burst_until = -1.0
                if self.state == QUARANTINED:
                    self._set_state(RUNNING, "resume command")
                detail = "resumed"
        except (KeyError, TypeError, ValueError) as exc:
            return CommandAck(cmd.command_id, sid, False, now_s, f"bad parameters: {exc}")
        if self._wake is not None:
            self._wake.set()
        return CommandAck(cmd.command_id, sid, True, now_s, detail)

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        wake = self._wake
        assert wake is not None
        wake.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        _, pending = await asyncio.wait(waits, timeout=max(seconds, 0.0),
                                        return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        for w in waits:
            with contextlib.suppress(asyncio.CancelledError):
                await w

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then mark the station stopped."""
        self._wake = asyncio.Event()
        try:
            while not stop.is_set():
                now = self.clock()
                if self.state == QUARANTINED:
                    if now >= self._quarantine_until:
                        self._set_state(RUNNING, "quarantine expired")
                        continue
                    await self._sleep(min(self._quarantine_until - now, 1.0), stop)
                    continue
                if not self.breaker.allow():
                    await self._sleep(self.breaker.retry_after(), stop)
                    continue
                try:
                    records = await asyncio.wait_for(self.source.poll(now), self.poll_timeout_s)
                except (SourceError, OSError, TimeoutError, ValueError) as exc:
                    self._drain()
                    self.failures += 1
                    self.breaker.record_failure()
                    reason = f"{type(exc).__name__}: {exc}"
                    if self.breaker.state == BreakerState.OPEN:
                        n = self.breaker.consecutive_failures
                        backoff = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, n - 1))
                        backoff *= 0.5 + self._rng.random()
                        self.breaker.reset_timeout_s = backoff
                        self._set_state(BACKING_OFF, reason)
                    else:
                        log.warning("station %s: poll failed (%s)", self.info.station_id, reason)
                    await self._sleep(self.effective_interval(now), stop)
                    continue
                self._drain()
                self.breaker.record_success()
                if self.state == BACKING_OFF:
                    self._set_state(RUNNING, "source answered again")
                self.polls += 1
                if records:
                    await self.sink(self.info.station_id, records)
                    self.sent += len(records)
                await self._sleep(self.effective_interval(self.clock()) - (self.clock() - now), stop)
        finally:
            self._set_state(STOPPED, "stop requested")
            await self.source.close()

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

    def dispatch(self, cmd: ControlCommand, now_s: float) -> list[CommandAck]:
        """Apply ``cmd`` to every agent it targets; returns (and keeps) the acks."""
        acks = [a.apply(cmd, now_s) for a in self.agents
                if cmd.applies_to(a.info.station_id, a.info.kind.value, a.info.region)]
        self.acks.extend(acks)
        return acks

    def dispatch_all(self, cmds: Iterable[ControlCommand], now_s: float) -> list[CommandAck]:
        return [ack for c in cmds for ack in self.dispatch(c, now_s)]

    async def run(self, stop: asyncio.Event) -> None:
        """Run every agent until ``stop`` is set."""
        await asyncio.gather(*(a.run(stop) for a in self.agents))

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.agents:
            out[a.state] = out.get(a.state, 0) + 1
        return out

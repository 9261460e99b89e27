from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from convergence.control import Action, ControlCommand, Target
from convergence.ground_stations.agent import (
    BACKING_OFF,
    QUARANTINED,
    RUNNING,
    STOPPED,
    Fleet,
    StationAgent,
)
from convergence.ground_stations.base import Source, SourceError
from convergence.stations import StationInfo


class Flaky(Source):
    def __init__(self, fail_first: int) -> None:
        self.calls = 0
        self.fail_first = fail_first

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise SourceError("feed answered 500")
        return [{"n": self.calls}]


Changes = list[tuple[str, str, str]]


def _agent(src: Source, sid: str = "s1", region: str = "eu",
           **kw: Any) -> tuple[StationAgent, list[Any], Changes]:
    got: list[Any] = []
    changes: list[tuple[str, str, str]] = []

    async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
        got.extend(records)

    agent = StationAgent(StationInfo(sid, "sensor", region), src, sink, interval_s=0.01,
                         on_state=lambda s, old, new, why: changes.append((old, new, why)),
                         backoff_base_s=0.01, **kw)
    return agent, got, changes


async def _run_for(agents: list[StationAgent], seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(Fleet(agents).run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def test_breaker_backs_off_then_recovers_and_reports_state_changes() -> None:
    agent, got, changes = _agent(Flaky(fail_first=4), failure_threshold=2)
    asyncio.run(_run_for([agent], 0.5))
    assert agent.failures == 4 and got
    states = [c[1] for c in changes]
    assert states[0] == BACKING_OFF and RUNNING in states and states[-1] == STOPPED
    assert "500" in changes[0][2]


def test_commands_target_and_ack() -> None:
    a, _, _ = _agent(Flaky(0), "a", "eu")
    b, _, _ = _agent(Flaky(0), "b", "apac")
    fleet = Fleet([a, b])
    acks = fleet.dispatch(ControlCommand.create("set_interval", Target("region", "eu"),
                                                issued_at_s=0.0, ttl_s=1e12,
                                                params={"interval_s": 2.5}), now_s=1.0)
    assert [(k.station_id, k.applied) for k in acks] == [("a", True)]
    assert a.interval_s == 2.5 and b.interval_s == 0.01
    # built around create(), which refuses it: a station checks the parameters itself
    bad = fleet.dispatch(ControlCommand("cmd-bad", Action.SET_INTERVAL, Target("all"), 0.0, 1e12,
                                        {"interval_s": -1}), now_s=1.0)
    assert len(bad) == 2 and all(not k.applied and "interval_s" in k.detail for k in bad)
    late = fleet.dispatch(ControlCommand.create("resume", Target("all"), issued_at_s=0.0, ttl_s=1.0),
                          now_s=5.0)
    assert all(not k.applied and "expired" in k.detail for k in late)


def test_burst_mode_samples_faster_until_expiry() -> None:
    a, _, _ = _agent(Flaky(0))
    a.interval_s = 1.0
    a.apply(ControlCommand.create("burst_mode", Target("station", "s1"), issued_at_s=100.0,
                                  ttl_s=10.0, params={"interval_s": 0.1}), now_s=100.0)
    assert a.effective_interval(105.0) == 0.1 and a.effective_interval(111.0) == 1.0


@pytest.mark.parametrize("interval", [0, -5, float("nan"), "fast"])
def test_burst_mode_with_a_bad_interval_is_refused(interval: Any) -> None:
    a, _, _ = _agent(Flaky(0))
    a.interval_s = 1.0
    with pytest.raises(ValueError, match="interval_s must be a number of seconds > 0"):
        ControlCommand.create("burst_mode", Target("station", "s1"), issued_at_s=100.0,
                              ttl_s=10.0, params={"interval_s": interval})
    ack = a.apply(ControlCommand("cmd-spin", Action.BURST_MODE, Target("station", "s1"), 100.0,
                                 110.0, {"interval_s": interval}), now_s=100.0)
    assert not ack.applied
    assert "bad parameters: interval_s must be a number of seconds > 0" in ack.detail
    assert a.effective_interval(105.0) == 1.0  # no burst: the station does not spin


def test_quarantine_silences_and_resume_restores() -> None:
    agent, got, _ = _agent(Flaky(0))
    now = agent.clock()
    agent.apply(ControlCommand.create("quarantine", Target("station", "s1"), issued_at_s=now,
                                      ttl_s=60.0), now)
    assert agent.state == QUARANTINED
    asyncio.run(_run_for([agent], 0.1))
    assert got == []
    agent.apply(ControlCommand.create("resume", Target("all"), issued_at_s=now, ttl_s=60.0), now)
    asyncio.run(_run_for([agent], 0.1))
    assert got


class Rejecting(Source):
    """A source that reads fine but rejects one malformed row per poll."""

    def __init__(self) -> None:
        self.n = 0

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        self.n += 1
        return [{"ok": self.n}]

    def drain_rejects(self) -> list[Any]:
        from convergence.schema import ValidationError, dead_letter

        return [dead_letter("source.csv", "bad,row", ValidationError("value", "is not a number"),
                            received_at_s=0.0)]


def test_agent_drains_source_rejects_into_dead_letter_hook() -> None:
    got: list[Any] = []
    dead: list[Any] = []

    async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
        got.extend(records)

    agent = StationAgent(StationInfo("s1", "sensor", "eu"), Rejecting(), sink, interval_s=0.01,
                         on_dead=dead.extend)
    asyncio.run(_run_for([agent], 0.1))
    assert got and len(dead) == agent.rejected == agent.polls
    assert dead[0].reason == "is not a number" and agent.status()["rejected"] == len(dead)


def test_stop_ends_a_long_sleep_at_once_in_a_fleet_and_alone() -> None:
    fleet_agents = [_agent(Flaky(0), f"s{i}")[0] for i in range(3)]
    alone, got, _ = _agent(Flaky(0), "alone")
    for a in [*fleet_agents, alone]:
        a.interval_s = 60.0

    async def main() -> float:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(Fleet(fleet_agents).run(stop)),
                 asyncio.create_task(alone.run(stop))]  # alone: it watches stop itself
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        stop.set()
        await asyncio.gather(*tasks)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
    assert all(a.state == STOPPED and a.polls == 1 for a in [*fleet_agents, alone]) and got


def test_a_command_wakes_a_sleeping_agent() -> None:
    agent, _, _ = _agent(Flaky(0))
    agent.interval_s = 60.0

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(0.1)
        agent.apply(ControlCommand.create("set_interval", Target("all"), issued_at_s=0.0,
                                          ttl_s=1e12, params={"interval_s": 0.01}), now_s=1.0)
        await asyncio.sleep(0.3)
        stop.set()
        await task

    asyncio.run(main())
    assert agent.polls > 5  # woke from the 60 s sleep and sampled at the new interval


def test_the_breaker_cool_down_grows_with_jitter_up_to_the_cap() -> None:
    import random

    from convergence.breaker import BreakerState, CircuitBreaker

    clock = [0.0]
    b = CircuitBreaker(1, 1.0, now=lambda: clock[0], backoff_max_s=8.0, rng=random.Random(3))
    waits = []
    for _ in range(6):
        b.record_failure()
        assert b.state is BreakerState.OPEN
        waits.append(b.retry_after())
        clock[0] += waits[-1]
        assert b.allow()  # the half-open probe, which fails again next round
    caps = [min(8.0, 2.0 ** n) for n in range(6)]  # 1, 2, 4, 8, 8, 8
    assert all(0.5 * c <= w < 1.5 * c for w, c in zip(waits, caps, strict=True)), waits
    assert waits != [c for c in caps]  # jittered
    plain = CircuitBreaker(1, 1.0, now=lambda: 0.0)  # without backoff_max_s: fixed cool-down
    plain.record_failure()
    assert plain.retry_after() == 1.0


def _tripped(changes: Changes) -> StationAgent:
    """An agent whose source always fails, its breaker open for a long cool-down."""
    async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
        raise AssertionError("nothing should be sent")

    agent = StationAgent(StationInfo("s1", "sensor", "eu"), Flaky(fail_first=10**9), sink,
                         interval_s=0.01, failure_threshold=1, backoff_base_s=30.0,
                         on_state=lambda s, old, new, why: changes.append((old, new, why)))
    asyncio.run(_run_for([agent], 0.1))
    assert agent.failures == 1 and (RUNNING, BACKING_OFF) in [c[:2] for c in changes]
    return agent


def test_resume_of_a_station_whose_breaker_is_open_reports_backing_off() -> None:
    changes: Changes = []
    agent = _tripped(changes)
    now = agent.clock()
    agent.apply(ControlCommand.create("quarantine", Target("station", "s1"), issued_at_s=now,
                                      ttl_s=60.0), now)
    assert agent.state == QUARANTINED
    ack = agent.apply(ControlCommand.create("resume", Target("all"), issued_at_s=now, ttl_s=60.0), now)
    assert ack.applied and agent.state == BACKING_OFF
    assert changes[-1][:2] == (QUARANTINED, BACKING_OFF) and "breaker is still open" in changes[-1][2]


def test_quarantine_expiry_of_a_station_whose_breaker_is_open_reports_backing_off() -> None:
    changes: Changes = []
    agent = _tripped(changes)
    now = agent.clock()
    agent.apply(ControlCommand.create("quarantine", Target("station", "s1"), issued_at_s=now,
                                      ttl_s=0.05), now)
    del changes[:]
    asyncio.run(_run_for([agent], 0.3))
    assert [c[:2] for c in changes] == [(QUARANTINED, BACKING_OFF), (BACKING_OFF, STOPPED)]
    assert changes[0][2] == "quarantine expired; the source's circuit breaker is still open"
    assert agent.failures == 1  # still cooling down: the source was not polled again


class Stuck(Source):
    """A poll that takes ``delay_s``, or raises the source's own ``TimeoutError``."""

    kind = "rss"

    def __init__(self, delay_s: float = 5.0, own_timeout: bool = False) -> None:
        self.delay_s = delay_s
        self.own_timeout = own_timeout

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        if self.own_timeout:
            raise TimeoutError("read of the socket timed out")
        await asyncio.sleep(self.delay_s)
        return []


def test_a_poll_cut_off_by_poll_timeout_says_what_timed_out_and_what_to_raise() -> None:
    agent, _, changes = _agent(Stuck(), failure_threshold=1, poll_timeout_s=0.05)
    asyncio.run(_run_for([agent], 0.3))
    (why,) = [c[2] for c in changes if c[1] == BACKING_OFF]
    assert why == ("TimeoutError: the rss source's poll did not finish within poll_timeout_s=0.05 s; "
                   "the source is slow or stuck. For an rss or json source raise timeout_s in its "
                   "[station.source] table (a fleet gives its polls timeout_s + 5 s)")


def test_a_timeout_error_of_the_source_itself_keeps_its_own_message() -> None:
    agent, _, changes = _agent(Stuck(own_timeout=True), failure_threshold=1)
    asyncio.run(_run_for([agent], 0.1))
    (why,) = [c[2] for c in changes if c[1] == BACKING_OFF]
    assert why == "TimeoutError: read of the socket timed out"


class _Rows(Source):
    """Rows due at given station times (as a replay source), recording each poll's time."""

    def __init__(self, due: list[float], batch: int = 1000) -> None:
        self.due = due
        self.batch = batch
        self.polled: list[float] = []

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        self.polled.append(now_s)
        out = [t for t in self.due if t <= now_s][: self.batch]
        self.due = self.due[len(out):]
        return [{"station_id": "s1", "value": t} for t in out]

    def next_due_s(self, now_s: float) -> float | None:
        return self.due[0] if self.due else float("inf")


def _step_run(src: Source, sink: Any, seconds: float) -> None:
    """An agent delivering in 60-s steps (0.5 s interval) for ``seconds`` of simulated time."""
    from convergence.streams.virtual_clock import run_virtual, simulated_unix_time

    async def main() -> None:
        agent = StationAgent(StationInfo("s1", "sensor"), src, sink, interval_s=0.5,
                             clock=simulated_unix_time, step_s=60.0)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await task

    run_virtual(main, start_s=0.0)


def test_step_delivery_polls_on_the_steps_catches_up_and_sleeps_through_gaps() -> None:
    """A station delivering in 60-s steps polls at the multiples of 60 s, polls again at
    once while rows are due (its batch is capped), skips a gap in one sleep, and hands over
    what is due when it stops."""
    from convergence.streams.virtual_clock import simulated_unix_time

    due = [float(t) for t in range(0, 120)] + [86_400.0 + t for t in range(30)] + [90_000.5]
    src, got = _Rows(due, batch=50), []

    async def sink(station_id: str, records: list[dict[str, Any]]) -> None:
        got.append((simulated_unix_time(), [r["value"] for r in records]))

    _step_run(src, sink, 90_000.0)
    # 60 rows due at 60 s and 59 at 120 s, 50 per poll: two polls each; then the gap
    # (the gap ends on a step: the rows after it are due at 86,400..86,429 s)
    assert src.polled[:7] == [0.0, 60.0, 60.0, 120.0, 120.0, 86_400.0, 86_460.0]
    assert [len(v) for _, v in got[:5]] == [1, 50, 10, 50, 9]
    assert got[5:7] == [(86_400.0, [86_400.0]), (86_460.0, [86_400.0 + t for t in range(1, 30)])]
    # stopped at 90,000 s: what was due by then was handed over; the row due later was not
    assert src.polled[-1] == 90_000.0 and src.due == [90_000.5]
    assert sum(len(v) for _, v in got) == len(due) - 1


def test_step_delivery_polls_a_source_that_cannot_tell_on_its_interval() -> None:
    class Live(Source):
        def __init__(self) -> None:
            self.polled: list[float] = []

        async def poll(self, now_s: float) -> list[dict[str, Any]]:
            self.polled.append(now_s)
            return []

    async def discard(station_id: str, records: list[dict[str, Any]]) -> None:
        return None

    src = Live()
    _step_run(src, discard, 2.2)
    assert src.polled == [0.0, 0.5, 1.0, 1.5, 2.0, 2.2]  # and the last poll at the stop

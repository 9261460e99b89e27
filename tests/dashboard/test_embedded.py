"""The dashboard fed by a real embedded run (``run --dashboard``'s path, in-process).

Library scenarios play on the simulated clock (``--as-fast-as-possible``) into an
in-memory SurrealDB, with the dashboard served on a free port: a browser's event stream
receives the run live, the hub holds every region's meter, the alerts and their report
revisions, every station with its node verdict; the page's quarantine and resume reach
the real station agents, and a resume lifts the adaptive responses' own quarantine in
the pipeline. The browser test (``test_browser.py``) drives a real-time run through the
command line and Chromium.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from convergence.control import Action, ControlCommand, Target
from convergence.dashboard.embedded import EmbeddedFeed, run_with_dashboard
from convergence.dashboard.hub import Hub
from convergence.dashboard.server import DashboardServer
from convergence.ground_stations.scenario import Scenario
from convergence.ground_stations.scenario_library import build
from convergence.records import Level, NodeState
from convergence.settings import load_settings
from convergence.streams.embedded import EmbeddedRuntime, RunSummary
from convergence.streams.virtual_clock import SimulatedClock, run_virtual


def _runtime(duration_s: float, scenario: str | None = None) -> tuple[EmbeddedRuntime,
                                                                       Scenario | None]:
    s = load_settings(env={"CONVERGENCE_DB": "mem://", "CONVERGENCE_SEED": "7"}, config_path=None)
    if scenario is None:
        return EmbeddedRuntime(s, duration_s=duration_s), None
    story = build(scenario, seed=7)
    return EmbeddedRuntime(s, duration_s=duration_s, scenario=story,
                           clock=SimulatedClock(story.epoch_s), t0_s=story.epoch_s), story


async def _events(base: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    """Read the page's event stream (server-sent events) until the run ends."""
    async with aiohttp.ClientSession() as http, http.get(base + "/api/events") as r:
        kind = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                into.append((kind, orjson.loads(line[6:])))
                if kind == "ended":
                    return


@pytest.mark.slow
def test_a_simulated_run_is_pushed_live_and_the_page_quarantines_a_station() -> None:
    rt, story = _runtime(256.0, "two-regions")
    assert story is not None
    hub = Hub()
    pushed: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, Any] = {}

    async def during(server: DashboardServer) -> None:
        base = server.url.rstrip("/")
        headers = {"Authorization": f"Bearer {server.token}"}
        async with aiohttp.ClientSession() as http:
            while not hub.stations():  # the sampler's first pass
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)  # a few samples: rates and node states
            seen["clock_s"] = rt.clock()
            async with http.get(base + "/api/stations") as r:
                seen["stations"] = await r.json()
            sid = seen["sid"] = next(r["station_id"] for r in seen["stations"]
                                     if r["region"] == "eu-west" and r["source_kind"] == "sensor")
            async with http.post(f"{base}/api/stations/{sid}/quarantine",
                                 headers=headers, json={"ttl_s": 300}) as r:
                seen["quarantine"] = (r.status, await r.json())
            seen["agent_state"] = next(a.state for a in rt.fleet.agents  # type: ignore[union-attr]
                                       if a.info.station_id == sid)
            async with http.get(f"{base}/api/stations/{sid}") as r:
                seen["row"] = await r.json()
            async with http.post(f"{base}/api/stations/{sid}/resume",
                                 headers=headers) as r:
                seen["resume"] = (r.status, await r.json())

    async def main() -> RunSummary:
        tasks: list[asyncio.Task[None]] = []

        def ready(server: DashboardServer) -> None:
            base = server.url.rstrip("/")
            tasks.append(asyncio.create_task(_events(base, pushed)))
            tasks.append(asyncio.create_task(during(server)))

        summary = await run_with_dashboard(rt, asyncio.Event(), port=0, hub=hub, on_ready=ready)
        await asyncio.gather(*tasks)
        return summary

    summary = run_virtual(main, start_s=story.epoch_s)
    assert summary.scenario["detected"] == 2 and summary.scenario["false_alarms"] == 0

    # the browser's stream carried the run as it happened, each report before its alert
    kinds = [k for k, _ in pushed]
    assert kinds[0] == "snapshot" and kinds[-1] == "ended"
    assert not pushed[0][1]["alerts"]  # connected before anything alerted
    assert pushed[0][1]["server_time_s"] == pytest.approx(story.epoch_s, abs=30.0)
    reported: set[str] = set()
    live_alerts = []
    for kind, data in pushed:
        if kind == "report":
            reported.add(data["report_id"])
        elif kind == "alert":
            assert data["report_id"] in reported, data
            live_alerts.append(data)
    assert {a["region"] for a in live_alerts} == {"mena", "eu-west"}
    assert {a["alert_id"] for a in live_alerts} == {a.alert_id for a in summary.alert_list}
    assert kinds.count("reading") >= 2 * 200  # every region, every tick

    # stations: all of them, on the run's (simulated) clock, with the node verdicts
    rows = seen["stations"]
    assert len(rows) == len(story.fleet) and all(r["xy"] is not None for r in rows)
    assert all(abs(r["at_s"] - seen["clock_s"]) < 5 for r in rows)
    assert sum(r["rate_per_s"] is not None and r["rate_per_s"] > 0 for r in rows) > 20
    assert {r["node_state"] for r in rows} <= {s.value for s in NodeState}

    # the page's quarantine reached the real agent and came back acknowledged
    status, doc = seen["quarantine"]
    assert status == 200 and doc["applied"] == 1, doc
    assert doc["command"]["issued_at_s"] == pytest.approx(seen["clock_s"], abs=5.0)
    assert seen["agent_state"] == "quarantined"
    assert seen["row"]["state"] == "quarantined"
    assert seen["row"]["commands"][-1]["action"] == "quarantine"
    assert seen["row"]["commands"][-1]["ack"]["applied"] is True
    assert seen["resume"][0] == 200 and seen["resume"][1]["acks"][0]["detail"] == "resumed"

    # the hub: every region's meter, both alerts and their reports' revisions
    assert sorted(hub.regions()) == ["eu-west", "mena"]
    region = hub.region("mena")
    assert region is not None and len(region["series"]) >= 200
    for a in hub.alerts():
        revs = hub.revisions(a["report_id"])
        latest = hub.get_report(a["report_id"])
        assert latest is not None and revs == sorted(revs) and revs[-1] == latest.revision
        assert latest.region == a["region"] and latest.contributions and latest.score_series
        whats = {t.what for t in latest.timeline}
        assert {"joined", "level", "ended"} <= whats
        assert latest.peak_level >= Level.WARNING and a["alert_id"] in latest.alert_ids
        assert latest.status == "closed" and latest.outcome is not None  # both episodes ended
    # the adaptive responses' commands reached the station table with their acks
    cmds = [c for r in hub.stations() for c in r["commands"]
            if c["action"] not in ("quarantine", "resume")]
    assert cmds and all(c["ack"] is not None for c in cmds)


@pytest.mark.slow
def test_a_resume_from_the_page_lifts_the_responses_own_quarantine() -> None:
    """``lone-surge``: the adaptive responses quarantine the lone noisy station (its agent
    and, in the pipeline, its vote); the page's resume lifts both."""
    rt, story = _runtime(180.0, "lone-surge")
    assert story is not None
    hub = Hub()
    feed = EmbeddedFeed(hub, rt)
    port = feed.port()
    seen: dict[str, Any] = {}

    def q_until(sid: str) -> float:
        return float(rt.pipeline.state["responses"]["q_until"][rt.registry.index_of(sid)])

    async def watch() -> None:
        while rt.fleet is None or not any(a.state == "quarantined" for a in rt.fleet.agents):
            await asyncio.sleep(0.5)
        sid = seen["sid"] = next(a.info.station_id for a in rt.fleet.agents
                                 if a.state == "quarantined")
        seen["before"] = (q_until(sid), rt.clock())
        cmd = ControlCommand.create(Action.RESUME, Target("station", sid),
                                    issued_at_s=rt.clock(), ttl_s=60.0, reason="a person looked")
        seen["acks"] = await port.send(cmd, 1.0)
        seen["after"] = q_until(sid)
        seen["agent"] = next(a.state for a in rt.fleet.agents if a.info.station_id == sid)
        seen["row"] = hub.station_row(sid)

    async def main() -> RunSummary:
        sampler_stop = asyncio.Event()
        sampler = asyncio.create_task(feed.run(sampler_stop))
        watcher = asyncio.create_task(watch())
        summary = await rt.run(asyncio.Event())
        sampler_stop.set()
        await asyncio.wait_for(asyncio.gather(watcher, sampler), 1.0)
        return summary

    summary = run_virtual(main, start_s=story.epoch_s)
    assert summary.alerts == 0
    sid = seen["sid"]
    surge = story.episodes[0]
    assert surge.kind == "lone_surge" and sid == story.fleet[surge.stations[0]].station_id
    until, now = seen["before"]
    assert until > now  # the responses' quarantine was in force in the pipeline
    assert [(a.station_id, a.applied, a.detail) for a in seen["acks"]] == [(sid, True, "resumed")]
    assert seen["after"] == float("-inf")  # lifted at once, before the next tick
    assert seen["agent"] == "running"
    row = seen["row"]
    assert row is not None and row["state"] == "running"
    assert [c["action"] for c in row["commands"]][-2:] == ["quarantine", "resume"]
    assert row["commands"][-2]["ack"]["applied"] is True  # the responses' own, acked


def test_the_feed_keeps_the_hooks_the_runtime_had() -> None:
    """The command line's hooks run first, then the feed's."""
    from convergence.streams.pipeline import TickOutcome

    rt, _ = _runtime(5.0)
    called: list[str] = []
    rt.on_tick = lambda oc: called.append("cli tick")
    rt.on_command = lambda cmd, acks: called.append("cli command")
    hub = Hub()
    feed = EmbeddedFeed(hub, rt)
    assert feed.hub.source == f"embedded run {rt.run_id}"
    assert feed.clock is rt.clock
    with pytest.raises(ValueError, match="sample_s"):
        EmbeddedFeed(Hub(), rt, sample_s=0)
    assert feed.sample() == 0  # no fleet before the run starts
    assert rt.on_tick is not None and rt.on_command is not None
    rt.on_tick(TickOutcome(1, 2.0))
    cmd = ControlCommand.create(Action.QUARANTINE, Target("station", "news-mena-001"),
                                issued_at_s=0, ttl_s=60)
    rt.on_command(cmd, [])
    assert called == ["cli tick", "cli command"] and hub.rejected == 0


def test_commands_before_the_stations_start_are_refused() -> None:
    rt, _ = _runtime(5.0)
    port = EmbeddedFeed(Hub(), rt).port()
    cmd = ControlCommand.create(Action.QUARANTINE, Target("station", "news-mena-001"),
                                issued_at_s=0, ttl_s=60)
    with pytest.raises(RuntimeError, match="has not started its stations yet"):
        asyncio.run(port.send(cmd, 1.0))


def test_a_failure_in_the_feed_never_stops_the_run() -> None:
    """A hook that breaks is logged and counted on the page; the runtime goes on."""
    rt, _ = _runtime(5.0)
    hub = Hub()
    feed = EmbeddedFeed(hub, rt)

    def broken(oc: Any) -> None:
        raise KeyError("readings")

    feed.on_tick = broken  # type: ignore[method-assign]
    assert rt.on_tick is not None
    rt.on_tick(object())  # type: ignore[arg-type]
    assert hub.rejected == 1 and "a closed tick: KeyError" in hub.last_rejected

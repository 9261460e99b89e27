"""The dashboard fed by a real embedded run (``run --dashboard``'s path, in-process).

One 20-second run of the default scenario (seed 7) into an in-memory SurrealDB, with the
dashboard served on a free port: what the hub holds during and after the run, and a
quarantine sent from the page reaching a real station agent. The browser test
(``test_browser.py``) drives the same path through the command line and Chromium.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from convergence.dashboard.embedded import EmbeddedFeed, run_with_dashboard
from convergence.dashboard.hub import Hub
from convergence.dashboard.server import DashboardServer
from convergence.ground_stations.scenario import REGIONS, default_scenario
from convergence.records import Level
from convergence.settings import load_settings
from convergence.streams.embedded import EmbeddedRuntime, RunSummary


def _runtime(duration_s: float) -> EmbeddedRuntime:
    s = load_settings(env={"CONVERGENCE_DB": "mem://", "CONVERGENCE_SEED": "7"}, config_path=None)
    return EmbeddedRuntime(s, duration_s=duration_s)


@pytest.mark.slow
def test_a_run_feeds_the_hub_and_the_page_quarantines_a_station() -> None:
    rt = _runtime(20.0)
    hub = Hub()
    seen: dict[str, Any] = {}

    async def during(server: DashboardServer) -> None:
        base = server.url.rstrip("/")
        headers = {"Authorization": f"Bearer {server.token}"}
        async with aiohttp.ClientSession() as http:
            while not hub.stations():  # the sampler's first pass
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)  # a few samples: rates and node states
            async with http.get(base + "/api/stations") as r:
                seen["stations"] = await r.json()
            sid = seen["sid"] = next(r["station_id"] for r in seen["stations"]
                                     if r["region"] == "apac" and r["source_kind"] == "sensor")
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
        summary = await run_with_dashboard(
            rt, asyncio.Event(), port=0, hub=hub,
            on_ready=lambda srv: tasks.append(asyncio.create_task(during(srv))))
        await asyncio.gather(*tasks)
        return summary

    t0 = time.monotonic()
    summary = asyncio.run(main())
    assert time.monotonic() - t0 < 60
    assert summary.scenario["detected"] == 1 and summary.scenario["false_alarms"] == 0

    # stations: all of them, with rates and the pipeline's node verdicts
    rows = seen["stations"]
    assert len(rows) == 247 and all(r["xy"] is not None for r in rows)
    assert sum(r["rate_per_s"] is not None and r["rate_per_s"] > 0 for r in rows) > 200
    assert {r["node_state"] for r in rows} <= {"normal", "elevated", "anomalous", "cooling"}
    assert None not in {r["node_state"] for r in rows}

    # the page's quarantine reached the real agent and came back acknowledged
    status, doc = seen["quarantine"]
    assert status == 200 and doc["applied"] == 1, doc
    assert seen["agent_state"] == "quarantined"
    assert seen["row"]["state"] == "quarantined"
    assert seen["row"]["commands"][-1]["action"] == "quarantine"
    assert seen["row"]["commands"][-1]["ack"]["applied"] is True
    assert seen["resume"][0] == 200 and seen["resume"][1]["acks"][0]["detail"] == "resumed"

    # one reading per region per tick, the genuine region's alert and its report revisions
    assert sorted(hub.regions()) == sorted(REGIONS)
    region = hub.region("mena")
    assert region is not None and len(region["series"]) >= 15
    genuine = default_scenario(247, 7, 80.0).genuine()[0].region
    alerts = hub.alerts()
    assert alerts and {a["region"] for a in alerts} == {genuine}
    assert {a["alert_id"] for a in alerts} == {a["alert_id"] for a in summary.alert_list}
    rid = alerts[0]["report_id"]
    revs = hub.revisions(rid)
    latest = hub.get_report(rid)
    assert latest is not None and revs[-1] == latest.revision >= 1
    assert latest.region == genuine and latest.contributions and latest.score_series
    first = latest.timeline[0]  # where the meter left quiet (straight to converged, at times)
    assert first.what == "level" and first.level is not None and first.level > Level.QUIET
    assert latest.peak_level >= Level.WARNING
    assert any(t.what == "joined" for t in latest.timeline)
    if latest.status == "closed":  # the episode ended within the run
        assert latest.outcome is not None and latest.outcome.peak_level == latest.peak_level
    # the adaptive responses' commands reached the station table with their acks
    cmds = [c for r in hub.stations() for c in r["commands"] if c["action"] != "quarantine"
            and c["action"] != "resume"]
    assert cmds and all(c["ack"] is not None for c in cmds)


def test_the_feed_keeps_the_hooks_the_runtime_had() -> None:
    rt = _runtime(5.0)
    called: list[str] = []
    rt.on_tick = lambda oc: called.append("tick")
    rt.on_command = lambda cmd, acks: called.append("command")
    feed = EmbeddedFeed(Hub(), rt)
    assert feed.hub.source == f"embedded run {rt.run_id}"
    assert rt.on_command is not None
    with pytest.raises(ValueError, match="sample_s"):
        EmbeddedFeed(Hub(), rt, sample_s=0)
    assert feed.sample() == 0  # no fleet before the run starts


def test_commands_before_the_stations_start_are_refused() -> None:
    from convergence.control import ControlCommand, Target

    rt = _runtime(5.0)
    port = EmbeddedFeed(Hub(), rt).port()
    cmd = ControlCommand.create("quarantine", Target("station", "news-mena-001"), issued_at_s=0,
                                ttl_s=60)
    with pytest.raises(RuntimeError, match="has not started its stations yet"):
        asyncio.run(port.send(cmd, 1.0))


def test_a_failure_in_the_feed_never_stops_the_run() -> None:
    """A hook that breaks is logged and counted on the page; the runtime goes on."""
    rt = _runtime(5.0)
    hub = Hub()
    feed = EmbeddedFeed(hub, rt)

    def broken(oc: Any) -> None:
        raise KeyError("region_score")

    feed.on_tick = broken  # type: ignore[method-assign]
    assert rt.on_tick is not None
    rt.on_tick(object())  # type: ignore[arg-type]
    assert hub.rejected == 1 and "a closed tick: KeyError" in hub.last_rejected

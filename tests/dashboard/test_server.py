"""Every endpoint of the dashboard's server, bad input included, over real HTTP.

The server listens on a free loopback port; requests go through aiohttp's client as a
browser's would. The control buttons reach a real in-process fleet of station agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from convergence.control import CommandAck, ControlCommand
from convergence.dashboard.cluster import store_reports
from convergence.dashboard.hub import Hub
from convergence.dashboard.server import DashboardServer, ReportLookup
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.base import Source
from convergence.records import Level, Report, StationState
from convergence.responses.render import render
from convergence.stations import StationInfo
from convergence.store.graph import ReportGraph
from convergence.store.surreal import SurrealStore
from convergence.store.writer import BatchedWriter

TOKEN = "s3cret-token"
T0 = 1_700_000_000.0
Records = dict[str, Callable[..., Any]]


class Silent(Source):
    kind = "silent"

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        return []


class FleetPort:
    """A command port over a real fleet of station agents (as the embedded runtime has)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        return self.fleet.dispatch(cmd, time.time())


class DeafPort:
    """Stations that never answer (the command went out; no ack came back)."""

    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        return []


class BrokenPort:
    async def send(self, cmd: ControlCommand, timeout_s: float) -> list[CommandAck]:
        raise RuntimeError("control topic 'control' does not exist on localhost:9092")


def fleet() -> Fleet:
    infos = [StationInfo("news-mena-001", "osint_news", "mena", "wire-01"),
             StationInfo("sensor-mena-003", "sensor", "mena")]
    return Fleet([StationAgent(i, Silent(), None, interval_s=30.0) for i in infos])


def filled_hub(records: Records, make_report: Callable[..., Report]) -> Hub:
    hub = Hub(station_flush_s=0)
    for i in range(5):
        hub.reading(records["reading"]("mena", T0 + i, score=20.0 * i))
    hub.reading(records["reading"]("ops-lab", T0 + 4, score=5.0))
    hub.report(make_report("rpt-0a1b2c3d4e5f6a7b", 1))
    hub.report(make_report("rpt-0a1b2c3d4e5f6a7b", 2))
    hub.alert(records["alert"]("alt-1", time_s=T0 + 3, level=Level.WARNING))
    hub.alert(records["alert"]("alt-2", time_s=T0 + 4))
    hub.station(records["status"]("news-mena-001", at_s=T0, events=3))
    hub.station(records["status"]("sensor-mena-003", kind="sensor", at_s=T0))
    return hub


@contextlib.asynccontextmanager
async def serving(hub: Hub, **kw: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    srv = DashboardServer(hub, port=0, token=TOKEN, **kw)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield srv.url.rstrip("/"), http
    finally:
        await srv.stop()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def post(http: aiohttp.ClientSession, url: str, token: str | None = TOKEN,
               **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kw.pop("headers", {}))
    async with http.post(url, headers=headers, **kw) as r:
        return r.status, await r.json()


def test_the_page_and_its_assets(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, page = await get(http, base + "/")
            assert status == 200 and '<script src="/static/app.js">' in page
            assert "https://" not in page and "http://" not in page.replace(
                "http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
            for name, ctype in (("app.js", "javascript"), ("style.css", "text/css"),
                                ("world.json", "application/json")):
                async with http.get(f"{base}/static/{name}") as r:
                    assert r.status == 200 and ctype in r.content_type, name
            async with http.get(base + "/static/../pyproject.toml") as r:
                assert r.status in (403, 404)

    run(body)


def test_health_and_snapshot(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, health = await get(http, base + "/api/health")
            assert status == 200 and health["ok"] and health["regions"] == 2
            assert health["stations"] == 2 and health["controls"] is False
            status, snap = await get(http, base + "/api/snapshot")
            assert status == 200
            assert [a["alert_id"] for a in snap["alerts"]] == ["alt-2", "alt-1"]
            assert {r["region"]: r["box"] is None for r in snap["regions"]} == {
                "mena": False, "ops-lab": True}  # an unknown region goes to the side strip
            assert snap["reports"][0]["revision"] == 2

    run(body)


def test_regions(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, rows = await get(http, base + "/api/regions")
            assert status == 200 and [r["region"] for r in rows] == ["mena", "ops-lab"]
            assert "series" not in rows[0]
            status, mena = await get(http, base + "/api/regions/mena")
            assert status == 200 and len(mena["series"]) == 5 and mena["score"] == 80.0
            assert mena["thresholds"] == [30.0, 55.0, 75.0]
            status, err = await get(http, base + "/api/regions/atlantis")
            assert status == 404 and "no region 'atlantis'" in err["error"]
            assert "mena, ops-lab" in err["error"]
            status, err = await get(http, base + "/api/regions/not%20a%20region")
            assert status == 400 and "is not a region name" in err["error"]

    run(body)


def test_alerts(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, rows = await get(http, base + "/api/alerts?limit=1")
            assert status == 200 and [a["alert_id"] for a in rows] == ["alt-2"]
            assert rows[0]["time"] == "2023-11-14T22:13:24Z" and rows[0]["level"] == "converged"
            for bad in ("0", "abc", "5000", "1.5"):
                status, err = await get(http, base + f"/api/alerts?limit={bad}")
                assert status == 400 and "limit must be a whole number" in err["error"], bad

    run(body)


def test_reports_from_the_hub(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            rid = "rpt-0a1b2c3d4e5f6a7b"
            status, doc = await get(http, f"{base}/api/reports/{rid}")
            assert status == 200 and doc["revisions"] == [1, 2]
            assert doc["report"]["revision"] == 2 and doc["report"]["region"] == "mena"
            status, doc = await get(http, f"{base}/api/reports/{rid}?revision=1")
            assert status == 200 and doc["report"]["revision"] == 1
            status, err = await get(http, f"{base}/api/reports/{rid}?revision=9")
            assert status == 404 and "has no revision 9; known: 1, 2" in err["error"]
            for bad in ("0", "x", "-1"):
                status, err = await get(http, f"{base}/api/reports/{rid}?revision={bad}")
                assert status == 400 and "revision must be" in err["error"]
            status, err = await get(http, f"{base}/api/reports/rpt-nope")
            assert status == 404 and "no report 'rpt-nope' in this dashboard;" in err["error"]
            status, err = await get(http, f"{base}/api/reports/bad%20id")
            assert status == 400 and "is not a report id" in err["error"]
            async with http.get(f"{base}/reports/{rid}") as r:
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            status, page = await get(http, f"{base}/reports/rpt-nope")
            assert status == 404 and "no report &#x27;rpt-nope&#x27;" in page

    run(body)


def test_the_drill_down_is_the_brief_reports_show_writes(
        records: Records, make_report: Callable[..., Report]) -> None:
    """The report page is ``render(report, "html")`` with the revisions the hub holds: the
    very page ``convergence reports show --format html`` writes."""
    hub = filled_hub(records, make_report)
    rid = "rpt-0a1b2c3d4e5f6a7b"
    first, latest = hub.get_report(rid, 1), hub.get_report(rid)
    assert first is not None and latest is not None

    async def body() -> None:
        async with serving(hub) as (base, http):
            status, page = await get(http, f"{base}/reports/{rid}")
            assert status == 200 and page == render(latest, "html", revisions=[first, latest])
            status, page = await get(http, f"{base}/reports/{rid}?revision=1")
            assert status == 200 and page == render(first, "html", revisions=[first, latest])

    run(body)
    page = render(make_report(summary="<script>alert(1)</script>"), "html")
    assert "Bottom line" in page and rid in page and "<script" not in page


def test_reports_from_the_store(records: Records, make_report: Callable[..., Report]) -> None:
    """A report the hub never saw is read from the store (a real embedded SurrealDB), with
    every revision its report graph keeps; a report stored before revisions were kept is
    its one revision."""
    async def body() -> None:
        store = SurrealStore("mem://", "test", "dashboard")
        await store.open()
        try:
            async with BatchedWriter(store) as writer:
                graph = ReportGraph(writer)
                await graph.load(store)
                for rev in (1, 2, 3):
                    graph.submit(make_report("rpt-4444444444444444", rev,
                                             status="closed" if rev == 3 else "open"))
            old = make_report("rpt-1111111111111111", 4, status="closed")
            await store.upsert("report", old.report_id, old.to_dict())
            hub = filled_hub(records, make_report)
            async with serving(hub, reports=store_reports(store)) as (base, http):
                status, doc = await get(http, f"{base}/api/reports/rpt-4444444444444444")
                assert status == 200 and doc["revisions"] == [1, 2, 3]
                assert doc["report"]["revision"] == 3 and doc["report"]["status"] == "closed"
                status, doc = await get(http, f"{base}/api/reports/{old.report_id}")
                assert status == 200 and doc["report"]["status"] == "closed"
                assert doc["revisions"] == [4] and hub.get_report(old.report_id) is not None
                status, err = await get(http, f"{base}/api/reports/rpt-2222222222222222")
                assert status == 404 and "or in the store" in err["error"]
        finally:
            await store.close()

    run(body)


def test_a_store_that_fails_is_said_to_fail(records: Records,
                                           make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        store = SurrealStore("mem://", "test", "dashboard")  # never opened: every read fails
        lookup: ReportLookup = store_reports(store)
        async with serving(filled_hub(records, make_report), reports=lookup) as (base, http):
            status, err = await get(http, f"{base}/api/reports/rpt-3333333333333333")
            assert status == 503 and "the store could not be read" in err["error"]

    run(body)


def test_stations(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, rows = await get(http, base + "/api/stations")
            assert status == 200 and [r["station_id"] for r in rows] == [
                "news-mena-001", "sensor-mena-003"]
            status, row = await get(http, base + "/api/stations/news-mena-001")
            assert status == 200 and row["state"] == "running" and row["events"] == 3
            status, err = await get(http, base + "/api/stations/ghost-1")
            assert status == 404 and "no station 'ghost-1'" in err["error"]
            status, err = await get(http, base + "/api/stations/" + "x" * 80)
            assert status == 400 and "is not a station id" in err["error"]

    run(body)


def test_unknown_endpoints_methods_and_hosts(records: Records,
                                            make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        async with serving(filled_hub(records, make_report)) as (base, http):
            status, err = await get(http, base + "/api/nothing")
            assert status == 404 and "no such endpoint: GET /api/nothing" in err["error"]
            async with http.get(base + "/api/stations/news-mena-001/quarantine") as r:
                assert r.status == 405 and "GET is not allowed" in (await r.json())["error"]
            status, err = await get(http, base + "/api/health",
                                    headers={"Host": "attacker.example:80"})
            assert status == 403 and "answers to 127.0.0.1:" in err["error"]
            port = base.rsplit(":", 1)[1]
            status, _ = await get(http, base + "/api/health", headers={"Host": f"localhost:{port}"})
            assert status == 200

    run(body)


def test_control_needs_the_token(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        f = fleet()
        async with serving(filled_hub(records, make_report), commands=FleetPort(f)) as (base, http):
            url = base + "/api/stations/news-mena-001/quarantine"
            status, err = await post(http, url, token=None)
            assert status == 401 and "Authorization: Bearer TOKEN" in err["error"]
            status, err = await post(http, url, token="guess")
            assert status == 401 and "wrong control token" in err["error"]
            status, err = await post(http, url, headers={"Authorization": f"Basic {TOKEN}"},
                                     token=None)
            assert status == 401
            status, err = await post(http, url, token=TOKEN + "x")
            assert status == 401
            assert all(a.state == "running" for a in f.agents)  # nothing was sent

    run(body)


def test_control_refuses_bad_requests(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        f = fleet()
        async with serving(filled_hub(records, make_report), commands=FleetPort(f)) as (base, http):
            url = base + "/api/stations/news-mena-001/quarantine"
            status, err = await post(http, base + "/api/stations/news-mena-001/explode")
            assert status == 404 and "use quarantine or resume" in err["error"]
            status, err = await post(http, base + "/api/stations/ghost-1/quarantine")
            assert status == 404 and "no station 'ghost-1'" in err["error"]
            for data, why in ((b"{", "bad control request"), (b"[1]", "expected a JSON object"),
                              (b'{"ttl": 5}', "unknown field(s) ttl"),
                              (b'{"ttl_s": 0}', "ttl_s must be seconds"),
                              (b'{"ttl_s": true}', "ttl_s must be seconds"),
                              (b'{"reason": 5}', "reason must be text")):
                status, err = await post(http, url, data=data)
                assert status == 400 and why in err["error"], data
            status, err = await post(http, url, data=b"{" + b" " * 5000 + b"}")
            assert status == 413
            assert all(a.state == "running" for a in f.agents)

    run(body)


def test_quarantine_and_resume_reach_the_station_and_show_the_ack(
        records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        f = fleet()
        hub = filled_hub(records, make_report)
        async with serving(hub, commands=FleetPort(f)) as (base, http):
            status, doc = await post(http, base + "/api/stations/news-mena-001/quarantine",
                                     json={"ttl_s": 120, "reason": "noisy feed"})
            assert status == 200, doc
            assert doc["applied"] == 1 and doc["refused"] == 0
            assert doc["command"]["action"] == "quarantine"
            assert doc["command"]["target"] == {"type": "station", "value": "news-mena-001"}
            assert doc["command"]["expires_at_s"] - doc["command"]["issued_at_s"] == 120
            assert f.agents[0].state == StationState.QUARANTINED == "quarantined"
            assert f.agents[1].state == "running"
            _, row = await get(http, base + "/api/stations/news-mena-001")
            cmd = row["commands"][-1]
            assert cmd["action"] == "quarantine" and cmd["reason"] == "noisy feed"
            assert cmd["ack"]["applied"] is True and "quarantined until" in cmd["ack"]["detail"]
            status, doc = await post(http, base + "/api/stations/news-mena-001/resume")
            assert status == 200 and doc["acks"][0]["detail"] == "resumed"
            assert f.agents[0].state == "running"

    run(body)


def test_control_that_cannot_be_sent_or_is_not_acked(records: Records,
                                                    make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        hub = filled_hub(records, make_report)
        async with serving(hub) as (base, http):
            status, err = await post(http, base + "/api/stations/news-mena-001/quarantine")
            assert status == 503 and "no control connection" in err["error"]
        hub = filled_hub(records, make_report)
        async with serving(hub, commands=DeafPort(), command_timeout_s=0.5) as (base, http):
            status, err = await post(http, base + "/api/stations/news-mena-001/quarantine")
            assert status == 504 and "did not acknowledge it within 0.5 s" in err["error"]
            assert err["command"]["action"] == "quarantine"
            row = hub.station_row("news-mena-001")
            assert row is not None and row["commands"][-1]["ack"] is None  # shown as sent
        hub = filled_hub(records, make_report)
        async with serving(hub, commands=BrokenPort()) as (base, http):
            status, err = await post(http, base + "/api/stations/news-mena-001/resume")
            assert status == 502 and "was not sent: control topic" in err["error"]

    run(body)


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, str]]:
    """The next ``n`` server-sent events as (event, data)."""
    out: list[tuple[str, str]] = []
    kind, data = "", ""
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 5.0)).decode()
        if not line:
            break
        line = line.rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and kind:
            out.append((kind, data))
            kind, data = "", ""
    return out


def test_the_event_stream_pushes_a_snapshot_then_changes(
        records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        import json

        hub = filled_hub(records, make_report)
        async with serving(hub) as (base, http), http.get(base + "/api/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            (kind, data), = await read_events(resp, 1)
            snap = json.loads(data)
            assert kind == "snapshot" and abs(snap["server_time_s"] - time.time()) < 5
            assert len(snap["alerts"]) == 2
            hub.alert(records["alert"]("alt-live", region="mena"))
            hub.reading(records["reading"]("apac", T0 + 9, score=40.0, level=Level.WATCH))
            got = await read_events(resp, 2)
            assert [k for k, _ in got] == ["alert", "reading"]
            assert json.loads(got[0][1])["alert_id"] == "alt-live"
            assert json.loads(got[1][1])["level"] == "watch"
            hub.close("the run ended")
            (kind, data), = await read_events(resp, 1)
            assert kind == "ended" and json.loads(data)["reason"] == "the run ended"
            assert await asyncio.wait_for(resp.content.read(), 5.0) == b""  # stream closed

    run(body)


def test_too_many_browsers_are_told_so(records: Records, make_report: Callable[..., Report]) -> None:
    async def body() -> None:
        hub = Hub(max_subscribers=1)
        async with serving(hub) as (base, http), http.get(base + "/api/events") as first:
            await read_events(first, 1)
            status, err = await get(http, base + "/api/events")
            assert status == 503 and "already connected" in err["error"]

    run(body)


def test_a_port_in_use_is_a_clear_error() -> None:
    from convergence.dashboard.server import DashboardError

    async def body() -> None:
        first = DashboardServer(Hub(), port=0, token=TOKEN)
        await first.start()
        try:
            second = DashboardServer(Hub(), port=first.port, token=TOKEN)
            with pytest.raises(DashboardError, match="pick another port"):
                await second.start()
        finally:
            await first.stop()

    run(body)


def test_a_token_is_made_when_none_is_given_and_ports_are_checked() -> None:
    a, b = DashboardServer(Hub(), port=0), DashboardServer(Hub(), port=0)
    assert len(a.token) >= 20 and a.token != b.token
    with pytest.raises(ValueError, match="port must be"):
        DashboardServer(Hub(), port=70000)
    assert not DashboardServer(Hub(), host="0.0.0.0").loopback


def test_another_loopback_address_answers_to_its_own_name() -> None:
    async def body() -> None:
        srv = DashboardServer(Hub(), host="127.0.0.2", port=0, token=TOKEN)
        await srv.start()
        try:
            async with aiohttp.ClientSession() as http:
                status, health = await get(http, srv.url + "api/health")
                assert status == 200 and health["ok"]
        finally:
            await srv.stop()

    run(body)

"""The hub: what it keeps (bounded), what it skips, what browsers receive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from convergence.control import CommandAck, ControlCommand, Target
from convergence.dashboard.hub import Hub, Update, level_of
from convergence.records import Level, NodeState, Report, StationState

T0 = 1_700_000_000.0
Records = dict[str, Callable[..., Any]]


def drain(sub: Any) -> list[Update]:
    out = []
    while not sub.queue.empty():
        u = sub.queue.get_nowait()
        if u is not None:
            out.append(u)
    return out


def test_score_history_is_the_last_hour_by_the_readings_own_times(records: Records) -> None:
    hub = Hub(history_s=60.0)
    for i in range(100):
        hub.reading(records["reading"]("mena", T0 + i, score=float(i)))
    row = hub.region("mena")
    assert row is not None
    times = [t for t, _ in row["series"]]
    assert times[0] == T0 + 39 and times[-1] == T0 + 99 and len(times) == 61
    assert row["score"] == 99.0 and row["box"] is not None


def test_a_region_that_stops_reporting_ages_out_with_the_others(records: Records) -> None:
    hub = Hub(history_s=10.0)
    hub.reading(records["reading"]("apac", T0))
    hub.reading(records["reading"]("mena", T0 + 30))
    row = hub.region("apac")
    assert row is not None and row["series"] == []


def test_an_older_reading_does_not_rewind_the_chart(records: Records) -> None:
    hub = Hub()
    hub.reading(records["reading"]("mena", T0 + 5, score=50.0))
    hub.reading(records["reading"]("mena", T0 + 1, score=10.0))
    row = hub.region("mena")
    assert row is not None and row["score"] == 50.0 and len(row["series"]) == 1


def test_points_and_regions_are_bounded(records: Records) -> None:
    hub = Hub(max_points=5, max_regions=2)
    for i in range(20):
        hub.reading(records["reading"]("mena", T0 + i))
    hub.reading(records["reading"]("apac", T0 + 20))
    hub.reading(records["reading"]("eu-west", T0 + 21))
    assert hub.regions() == ["mena", "apac"]
    row = hub.region("mena")
    assert row is not None and len(row["series"]) == 5
    assert hub.rejected == 1 and "2-region bound" in hub.last_rejected


def test_the_snapshot_downsamples_long_series_keeping_peaks(records: Records) -> None:
    hub = Hub()
    for i in range(3000):
        hub.reading(records["reading"]("mena", T0 + i, score=99.0 if i == 1234 else 1.0))
    snap = hub.snapshot()["regions"][0]["series"]
    assert len(snap) == 720 and max(s for _, s in snap) == 99.0
    assert [t for t, _ in snap] == sorted(t for t, _ in snap)
    full = hub.region("mena")
    assert full is not None and len(full["series"]) == 3000


@pytest.mark.parametrize("field,value", [("region", "a b"), ("region", "x" * 65),
                                         ("region", "<script>"), ("region", "")])
def test_malformed_names_are_skipped_and_counted(records: Records, field: str, value: str) -> None:
    hub = Hub()
    hub.reading(records["reading"](value))
    hub.alert(records["alert"](region=value))
    hub.station(records["status"](region=value))
    assert hub.regions() == [] and hub.alerts() == [] and hub.stations() == []
    assert hub.rejected == 3 and "is not a plain name" in hub.last_rejected


def test_alerts_newest_first_bounded_and_replays_replace(records: Records) -> None:
    hub = Hub(max_alerts=3)
    for i in range(5):
        hub.alert(records["alert"](f"alt-{i}", time_s=T0 + i))
    assert [a["alert_id"] for a in hub.alerts()] == ["alt-4", "alt-3", "alt-2"]
    hub.alert(records["alert"]("alt-3", time_s=T0 + 3))
    assert [a["alert_id"] for a in hub.alerts()] == ["alt-3", "alt-4", "alt-2"]
    assert hub.alerts(limit=1)[0]["alert_id"] == "alt-3"


def test_reports_keep_their_last_revisions(make_report: Callable[..., Report]) -> None:
    hub = Hub(max_reports=2, max_revisions=2)
    for rev in (1, 2, 3):
        hub.report(make_report("rpt-a", rev))
    hub.report(make_report("rpt-b", 1))
    assert hub.revisions("rpt-a") == [2, 3]
    latest = hub.get_report("rpt-a")
    assert latest is not None and latest.revision == 3
    assert hub.get_report("rpt-a", 1) is None
    hub.report(make_report("rpt-c", 1))
    assert hub.get_report("rpt-a") is None  # the oldest report went
    assert [r["report_id"] for r in hub.snapshot()["reports"]] == ["rpt-b", "rpt-c"]


def test_station_rate_and_last_event_are_derived_from_event_counts(records: Records) -> None:
    hub = Hub()
    hub.station(records["status"](at_s=T0, events=0))
    hub.station(records["status"](at_s=T0 + 2, events=10))
    hub.station(records["status"](at_s=T0 + 4, events=10))
    row = hub.station_row("news-mena-001")
    assert row is not None
    assert row["rate_per_s"] == 2.5 and row["last_event_s"] == T0 + 2
    assert row["xy"] is not None  # scattered inside mena's box
    hub.station(records["status"](at_s=T0 + 1, events=99))  # older than shown: ignored
    row = hub.station_row("news-mena-001")
    assert row is not None and row["events"] == 10
    hub.station(records["status"](at_s=T0 + 5, events=11, rate_per_s=7.0, last_event_s=T0 + 4.5))
    row = hub.station_row("news-mena-001")
    assert row is not None and row["rate_per_s"] == 7.0 and row["last_event_s"] == T0 + 4.5


def test_stations_are_bounded(records: Records) -> None:
    hub = Hub(max_stations=2)
    for i in range(3):
        hub.station(records["status"](f"s-{i}"))
    assert [r["station_id"] for r in hub.stations()] == ["s-0", "s-1"]
    assert hub.rejected == 1


def test_commands_reach_the_stations_they_target_and_acks_merge(records: Records) -> None:
    hub = Hub(max_commands=2)
    hub.station(records["status"]("news-mena-001"))
    hub.station(records["status"]("sensor-mena-003", kind="sensor"))
    hub.station(records["status"]("news-apac-001", region="apac"))
    cmd = ControlCommand.create("burst_mode", Target("region", "mena"), issued_at_s=T0, ttl_s=60,
                                reason="x" * 500)
    hub.command(cmd, [])
    mena = hub.station_row("news-mena-001")
    apac = hub.station_row("news-apac-001")
    assert mena is not None and apac is not None
    assert [c["command_id"] for c in mena["commands"]] == [cmd.command_id]
    assert mena["commands"][0]["ack"] is None and len(mena["commands"][0]["reason"]) == 200
    assert apac["commands"] == []
    hub.command(cmd, [CommandAck(cmd.command_id, "news-mena-001", True, T0 + 1, "burst")])
    mena = hub.station_row("news-mena-001")
    assert mena is not None and len(mena["commands"]) == 1
    assert mena["commands"][0]["ack"] == {"applied": True, "at_s": T0 + 1, "detail": "burst"}
    for i in range(3):  # only the last max_commands are kept
        hub.command(ControlCommand.create("quarantine", Target("station", "news-mena-001"),
                                          issued_at_s=T0 + i, ttl_s=60), [])
    mena = hub.station_row("news-mena-001")
    assert mena is not None and len(mena["commands"]) == 2


def test_browsers_get_a_snapshot_then_every_change(records: Records,
                                                   make_report: Callable[..., Report]) -> None:
    async def go() -> list[Update]:
        hub = Hub(station_flush_s=0.05)
        hub.reading(records["reading"]("mena", T0))
        sub = hub.subscribe()
        hub.reading(records["reading"]("mena", T0 + 1, score=61.0, level=Level.WARNING))
        hub.report(make_report())
        hub.alert(records["alert"]())
        hub.station(records["status"](node_state=NodeState.ANOMALOUS))
        hub.station(records["status"]("sensor-mena-003", kind="sensor"))
        await asyncio.sleep(0.1)  # station changes go out together, once
        hub.close("the run ended")
        return [u async for u in sub]

    got = go_run(go())
    assert [u.kind for u in got] == ["snapshot", "reading", "report", "alert", "stations", "ended"]
    snap = got[0].data
    assert [r["region"] for r in snap["regions"]] == ["mena"] and snap["alerts"] == []
    assert got[1].data["level"] == "warning" and "series" not in got[1].data
    assert got[2].data["revision"] == 2
    assert [s["station_id"] for s in got[4].data["stations"]] == ["news-mena-001", "sensor-mena-003"]
    assert got[4].data["stations"][0]["node_state"] == "anomalous"
    assert got[5].data == {"reason": "the run ended"}


def test_a_browser_that_falls_behind_starts_over_from_a_snapshot(records: Records) -> None:
    async def go() -> tuple[list[Update], int]:
        hub = Hub(queue_size=3)
        sub = hub.subscribe()
        for i in range(10):
            hub.reading(records["reading"]("mena", T0 + i))
        return drain(sub), sub.resyncs

    got, resyncs = go_run(go())
    assert resyncs >= 1
    assert got[0].kind == "snapshot" and len(got) <= 3
    assert got[0].data["regions"][0]["series"][-1][0] <= T0 + 9


def test_subscribers_are_bounded_and_closing_ends_them(records: Records) -> None:
    async def go() -> None:
        hub = Hub(max_subscribers=1)
        sub = hub.subscribe()
        with pytest.raises(RuntimeError, match="1 dashboards are already connected"):
            hub.subscribe()
        sub.close()
        assert hub.subscribers == 0
        hub.subscribe()
        hub.close()
        hub.close()  # twice is fine
        with pytest.raises(RuntimeError, match="shutting down"):
            hub.subscribe()

    go_run(go())


def test_station_changes_without_a_loop_go_out_at_once(records: Records) -> None:
    hub = Hub()
    sub = hub.subscribe()
    hub.station(records["status"]())
    kinds = [u.kind for u in drain(sub)]
    assert kinds == ["snapshot", "stations"]


def test_a_station_change_goes_out_before_an_alert_that_follows(records: Records) -> None:
    async def go() -> list[str]:
        hub = Hub(station_flush_s=10.0)
        sub = hub.subscribe()
        hub.station(records["status"](state=StationState.QUARANTINED))
        hub.alert(records["alert"]())
        return [u.kind for u in drain(sub)]

    assert go_run(go()) == ["snapshot", "stations", "alert"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="history_s must be > 0"):
        Hub(history_s=0)
    with pytest.raises(ValueError, match="station_flush_s"):
        Hub(station_flush_s=-1)


def test_level_of_thresholds() -> None:
    th = (30.0, 55.0, 75.0)
    assert [level_of(s, th) for s in (0.0, 30.0, 54.9, 55.0, 100.0)] == [
        Level.QUIET, Level.WATCH, Level.WATCH, Level.WARNING, Level.CONVERGED]


def go_run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_flood_of_bad_records_does_not_flood_the_log(records: Records,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    with caplog.at_level("WARNING", logger="convergence.dashboard.hub"):
        for _ in range(2000):
            hub.reading(records["reading"]("bad name"))
    assert hub.rejected == 2000
    assert len(caplog.records) == 12 and "(2000 skipped so far)" in caplog.records[-1].message


def test_a_stations_first_update_is_whole_later_ones_carry_what_changes(records: Records) -> None:
    hub = Hub()
    sub = hub.subscribe()
    hub.station(records["status"](at_s=T0, events=1))
    hub.station(records["status"](at_s=T0 + 1, events=5, state=StationState.BACKING_OFF))
    first, second = [u.data["stations"][0] for u in drain(sub) if u.kind == "stations"]
    assert first["region"] == "mena" and first["xy"] is not None and "commands" in first
    assert set(second) == {"station_id", "state", "node_state", "at_s", "last_event_s",
                           "rate_per_s", "events", "interval_s", "change"}
    assert second["state"] == "backing_off" and second["events"] == 5
    late = hub.subscribe()  # a browser that comes later gets whole rows in its snapshot
    snap = drain(late)[0].data["stations"][0]
    assert snap["region"] == "mena" and snap["state"] == "backing_off"

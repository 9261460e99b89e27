"""The embedded runtime in-process: a short real run into SurrealDB, a Ctrl-C stop, the summary.

``convergence run`` end to end (alerts on the default scenario, 20 s) is in
``tests/cli/test_run_cli.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from convergence.ground_stations.fleet import load_fleet
from convergence.ground_stations.scenario import Scenario, default_fleet
from convergence.settings import Settings, load_settings
from convergence.simulation.recordings import Recording, write_recording
from convergence.store.surreal import StoreError, SurrealStore
from convergence.store.writer import BatchedWriter, StoreBackpressure
from convergence.streams import embedded
from convergence.streams.embedded import EmbeddedRuntime, RunSummary
from convergence.streams.virtual_clock import SimulatedClock, run_virtual

ALERT_KEYS = ("alert_id", "report_id", "level", "score", "time_s", "regions", "source_kinds", "n_stations")


def _settings(db: str, stations: int = 30, seed: int = 3) -> Settings:
    return load_settings(env={"CONVERGENCE_DB": db, "CONVERGENCE_STATIONS": str(stations),
                              "CONVERGENCE_SEED": str(seed)}, config_path=None)


def _summary(**over: Any) -> RunSummary:
    base: dict[str, Any] = dict(
        run_id="run-1-2", events=10, alerts=1, reports=1, dead_letters=2, events_per_s=5.0, duplicates=0,
        late=0, ticks=2, responses=0, acks=0, stations=5, duration_s=2.0, db="mem://", bytes_per_station=100)
    return RunSummary(**{**base, **over})


def test_the_summary_lists_each_alert_by_its_headline_fields_only() -> None:
    from convergence.records import Alert, Level

    alert = Alert("alt-1", "rpt-1", "mena", Level.CONVERGED, 91.0, 10, 11.0, 8, ("s1", "s2"),
                  ("osint_news", "sensor"), True, "run-1-2")
    d = _summary(alert_list=[alert], scenario={"genuine": 1}).as_dict()
    assert d["alert_list"] == [{"alert_id": "alt-1", "report_id": "rpt-1", "level": "converged",
                                "score": 91.0, "time_s": 11.0, "time": alert.time_iso,
                                "region": "mena", "source_kinds": ["osint_news", "sensor"],
                                "n_stations": 2}]
    assert d["scenario"] == {"genuine": 1} and d["store"] == {}
    assert {k: d[k] for k in ("run_id", "events", "dead_letters", "db", "bytes_per_station")} == {
        "run_id": "run-1-2", "events": 10, "dead_letters": 2, "db": "mem://", "bytes_per_station": 100}


def test_the_summary_without_alerts() -> None:
    d = _summary(alerts=0, reports=0).as_dict()
    assert d["alert_list"] == [] and set(d) == {f.name for f in dataclasses.fields(RunSummary)}


def test_a_short_run_stores_its_summary_and_every_dead_letter(tmp_path: Path) -> None:
    db = f"surrealkv://{tmp_path / 'db'}"
    s = _settings(db, stations=30, seed=3)
    # no episodes, many malformed records: a quiet world with dead letters to store (no re-sends:
    # a re-sent bad record is the same dead letter, stored once under its content id)
    scenario = Scenario(default_fleet(30, 3), [], 3, bad_rate=0.05, dup_rate=0.0)
    rt = EmbeddedRuntime(s, duration_s=2.0, scenario=scenario, sample_interval_s=0.2)
    assert rt.run_id.startswith("run-3-")
    t0 = time.monotonic()
    summary = asyncio.run(rt.run())
    assert time.monotonic() - t0 < 15
    assert summary.run_id == rt.run_id and summary.stations == 30 and summary.db == db
    assert summary.events > 0 and summary.ticks >= 1 and summary.dead_letters > 0
    assert summary.alerts == len(summary.alert_list) == len(rt.alerts)
    assert 2.0 <= summary.duration_s < 10.0
    assert summary.events_per_s == pytest.approx(summary.events / summary.duration_s, rel=0.01)
    assert summary.store["pending"] == 0 and summary.store["failures"] == 0
    assert summary.scenario["genuine"] == 0 and summary.scenario["false_alarms"] == summary.alerts

    async def read() -> tuple[dict[str, Any] | None, int]:
        async with SurrealStore.from_settings(s) as store:
            return await store.get("run", summary.run_id), await store.count("dead_letter")

    run, stored_dead = asyncio.run(read())
    assert run is not None
    expected = summary.as_dict() | {"store": {}}  # the store's own figures come after it is written
    assert {k: run[k] for k in expected} == expected
    assert stored_dead == summary.dead_letters


def test_setting_stop_ends_a_run_without_a_duration() -> None:
    rt = EmbeddedRuntime(_settings("mem://", stations=20), sample_interval_s=0.2)
    assert rt.duration_s is None

    async def main() -> RunSummary:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await asyncio.wait_for(rt.run(stop), 30.0)

    summary = asyncio.run(main())
    assert 0.5 <= summary.duration_s < 10.0 and summary.stations == 20
    assert summary.store["pending"] == 0


# -- failures: a dead consumer or a dead store never hangs the run or leaks the store -----


def _store_down(monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(self: SurrealStore, table: str, items: Any) -> None:
        raise StoreError("connection refused (test: the database is down)")

    monkeypatch.setattr(SurrealStore, "upsert_many", down)


def _run_or_fail(rt: EmbeddedRuntime, timeout_s: float = 20.0) -> RunSummary:
    """``rt.run()`` in a thread of its own: a run that hangs fails the test, not the suite."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(asyncio.run(rt.run()))
        except BaseException as exc:
            out.append(exc)

    th = threading.Thread(target=target, daemon=True, name="embedded-run")
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        pytest.fail(f"the run did not end within {timeout_s:g} s")
    if isinstance(out[0], BaseException):
        raise out[0]
    assert isinstance(out[0], RunSummary)
    return out[0]


async def _stored_run(s: Settings, run_id: str) -> dict[str, Any] | None:
    # Opening it again also proves the run released the surrealkv lock.
    async with SurrealStore.from_settings(s) as store:
        return await store.get("run", run_id)


def test_a_consumer_that_dies_ends_the_run_and_its_error_is_raised_after_closing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(f"surrealkv://{tmp_path / 'db'}", stations=20)
    rt = EmbeddedRuntime(s, sample_interval_s=0.05)  # no duration, nobody sets stop
    rt.bus = asyncio.Queue(maxsize=4)  # once nobody drains it, the stations block on put
    real = rt.core.on_records
    calls: list[int] = []

    def take(records: list[dict[str, Any]], now_s: float) -> Any:
        calls.append(len(records))
        if len(calls) >= 3:
            raise RuntimeError("runner bug")
        return real(records, now_s)

    monkeypatch.setattr(rt.core, "on_records", take)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="runner bug"):
        _run_or_fail(rt)
    assert time.monotonic() - t0 < 10
    run = asyncio.run(_stored_run(s, rt.run_id))  # flushed, written and closed all the same
    assert run is not None and run["events"] > 0


def test_backpressure_stops_the_run_with_the_stores_error_and_counts_the_unwritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    s = _settings(f"surrealkv://{tmp_path / 'db'}", stations=30)
    scenario = Scenario(default_fleet(30, 3), [], 3, bad_rate=0.2, dup_rate=0.0)
    rt = EmbeddedRuntime(s, scenario=scenario, sample_interval_s=0.1)
    rt.close_timeout_s = 0.5
    _store_down(monkeypatch)
    monkeypatch.setattr(embedded, "BatchedWriter",
                        functools.partial(BatchedWriter, batch_size=5, max_pending=20))
    with pytest.raises(StoreBackpressure, match="records waiting"):
        _run_or_fail(rt)
    assert "record(s) NOT written" in caplog.text
    monkeypatch.undo()
    assert asyncio.run(_stored_run(s, rt.run_id)) is None  # released; nothing was written


def test_closing_against_a_dead_store_is_bounded_and_the_summary_counts_the_unwritten(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    s = _settings("mem://", stations=20)
    scenario = Scenario(default_fleet(20, 3), [], 3, bad_rate=0.05, dup_rate=0.0)
    rt = EmbeddedRuntime(s, duration_s=1.0, scenario=scenario, sample_interval_s=0.2)
    rt.close_timeout_s = 1.0
    _store_down(monkeypatch)
    t0 = time.monotonic()
    summary = _run_or_fail(rt)
    assert time.monotonic() - t0 < 10
    # the run record and the dead letters: all still pending, none dropped silently
    assert summary.store["unwritten"] == summary.store["pending"] == summary.dead_letters + 1
    assert "NOT written" in summary.store["close_error"]
    assert f"{summary.store['unwritten']} record(s) NOT written" in caplog.text


# -- backtests: step delivery on a simulated clock ------------------------------------


def _backtest(rec: Recording, *, duration_s: float, step_s: float | None,
              tick_s: float = 1.0) -> tuple[RunSummary, EmbeddedRuntime]:
    """A recording run as `convergence run --fleet F --as-fast-as-possible` runs it."""
    s = load_settings(env={"CONVERGENCE_DB": "mem://", "CONVERGENCE_SEED": "5",
                           "CONVERGENCE_TICK_S": str(tick_s)}, config_path=None)
    specs = [dataclasses.replace(sp, source=dataclasses.replace(
        sp.source, options={**sp.source.options, "start_s": rec.t0_s}))
        for sp in load_fleet(rec.fleet).stations]
    rt = EmbeddedRuntime(s, duration_s=duration_s, fleet=specs, clock=SimulatedClock(rec.t0_s),
                         t0_s=rec.t0_s, step_s=step_s)
    return run_virtual(rt.run, start_s=rec.t0_s), rt


def _polls(rt: EmbeddedRuntime) -> int:
    assert rt.fleet is not None
    return sum(a.polls for a in rt.fleet.agents)


def test_a_backtest_in_steps_gives_the_alerts_and_reports_of_polling_on_the_interval(
        tmp_path: Path) -> None:
    """Rows handed over a step at a time (and the runner waiting for every station due at
    that instant) give the very events, ticks, alerts and report ids that polling every
    station on its interval gives; whatever the step, tick-aligned or not."""
    rec = write_recording(tmp_path, hours=0.3, t0_s=1_760_000_000.0, seed=2, surge_at_s=700.0)
    duration_s = rec.duration_s
    polled, rt_polled = _backtest(rec, duration_s=duration_s, step_s=None)
    assert polled.late == 0 and polled.events == rec.rows
    assert [a.level for a in polled.alert_list][-1] == "converged"
    for step in (60.0, 7.0):
        stepped, rt = _backtest(rec, duration_s=duration_s, step_s=step)
        assert [a.alert_id for a in stepped.alert_list] == [a.alert_id for a in polled.alert_list]
        assert stepped.report_ids == polled.report_ids
        assert (stepped.events, stepped.ticks, stepped.late) == (polled.events, polled.ticks, 0)
        # ... for far fewer polls: about one per step (and per command woken), not per interval
        assert _polls(rt) < 5 * 1.2 * duration_s / step < _polls(rt_polled) / 3


def test_a_day_without_rows_costs_a_backtest_nothing_and_a_bad_row_is_still_named(
        tmp_path: Path) -> None:
    """A recorder that was down for a day: the backtest crosses the gap in one step (work
    bounded by the data, not by the gap), and a bad row deep in a file is a dead letter
    naming its file and line."""
    day = 86_400.0
    rec = write_recording(tmp_path, hours=26.0, t0_s=1_760_000_000.0, seed=3,
                          surge_at_s=day + 5400.0, gap=(3600.0, 3600.0 + day),
                          bad_rows=[(0, 3000)])
    assert rec.rows < 5 * 3 * 3600 + 5 * 500
    started = time.monotonic()
    summary, rt = _backtest(rec, duration_s=rec.duration_s, step_s=60.0, tick_s=60.0)
    wall_s = time.monotonic() - started
    assert summary.events == rec.rows - 1 and summary.late == 0
    # the gap's ticks are skipped past, not closed one by one, and no station polled through it
    assert rt.pipeline.counters.skipped_ticks > day / 60 - 100
    assert _polls(rt) <= 5 * (2 * 3600 / 60 + 4)
    assert wall_s < 30.0
    assert [a.level for a in summary.alert_list][-1] == "converged"
    (cause,) = summary.dead_letter_causes
    assert cause["count"] == 1 and "rec-news-0.jsonl line 3000: value" in cause["example"]

"""The worker core without Faust or a broker: the event-time watermark, micro-batched ingest,
dead letters, per-station summaries, detector checkpoints and partition hand-overs.

The same core inside a real Faust worker on a real broker is tested in ``test_faust_app.py``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pytest

from convergence.settings import Settings, load_settings
from convergence.streams.worker import (
    ADDED_STAGES,
    CHECKPOINT_VERSION,
    EventTimeWatermark,
    WorkerCore,
    checkpoint_stages,
)
from convergence.wire import encode_raw


def _settings(**env: str) -> Settings:
    return load_settings(env=env, config_path=None)








# -- the watermark: pure -------------------------------------------------------


def test_watermark_follows_the_largest_event_time_and_never_goes_back() -> None:
    wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.5)
    assert wm.observe(None, wall_s=10.0) is None  # dead letters only: nothing to close yet
    assert wm.observe(5.0, wall_s=10.0) == 5.0
    assert wm.observe(3.0, wall_s=10.1) == 5.0
    assert wm.observe(7.0, wall_s=10.2) == 7.0
    assert wm.observe(99.0, wall_s=10.3) == pytest.approx(10.8)  # clamped to wall + lead


def test_watermark_idle_advance_tracks_wall_time_only_when_quiet_and_caught_up() -> None:
    wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.5)
    assert wm.idle(100.0) is None  # nothing seen yet
    wm.observe(50.0, wall_s=100.0)
    assert wm.idle(100.9) is None
    assert wm.idle(101.5, caught_up=False) is None
    assert wm.idle(101.5) == pytest.approx(51.5)
    assert wm.idle(104.0) == pytest.approx(54.0)
    wm.observe(52.0, wall_s=104.5)  # input again: the watermark stays, the idle clock restarts
    assert wm.value == pytest.approx(54.0)
    assert wm.idle(105.0) is None
    assert wm.idle(106.0) == pytest.approx(54.0 + 1.5)


def test_watermark_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="idle_after_s"):
        EventTimeWatermark(idle_after_s=0)


# -- the worker core: pure, dict tables ------------------------------------------


@pytest.fixture(scope="module")
def core_run(feed: Any) -> dict[str, Any]:
    """The worker core fed the compressed scenario plus malformed input, no broker."""
    s = _settings()
    now = time.time()
    t0 = now - 25.0
    summaries: dict[str, Any] = {}
    checkpoints: dict[str, Any] = {}
    core = WorkerCore(s, summaries=summaries, checkpoints=checkpoints, run_id="run-test",
                      checkpoint_interval_s=0.1, summary_interval_s=0.1)
    emits = core.on_message(b"{not json", feed.probe.encode(), now)
    emits += core.on_message(encode_raw(feed.probe_batch(t0 + 0.2)), feed.probe.encode(), now)
    for i, (sid, recs) in enumerate(feed.messages(s, t0)):
        emits += core.on_message(encode_raw(recs), sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    tail = core.on_stop()
    return {"s": s, "core": core, "emits": emits, "tail": tail, "summaries": summaries,
            "checkpoints": checkpoints, "t0": t0}


def _values(emits: list[Any], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(e.value) for e in emits if e.topic == topic]


def test_core_alerts_on_the_genuine_episode_and_its_report_comes_first(
        core_run: dict[str, Any], feed: Any) -> None:
    emits = core_run["emits"]
    alerts = _values(emits, "alerts")
    assert alerts, "no alert from the genuine convergence in the first 20 s"
    assert all(a["regions"] == [feed.genuine_region(core_run["s"])] for a in alerts)
    assert all(a["run_id"] == "run-test" for a in alerts)
    order = [(e.topic, orjson.loads(e.value)) for e in emits if e.topic in ("alerts", "reports")]
    first_alert = next(i for i, (t, _) in enumerate(order) if t == "alerts")
    assert any(t == "reports" and v["report_id"] == alerts[0]["report_id"]
               for t, v in order[:first_alert])
    for e in emits:
        if e.topic == "alerts":
            assert e.key == orjson.loads(e.value)["alert_id"].encode()


def test_core_sends_responses_and_their_commands(core_run: dict[str, Any]) -> None:
    responses = _values(core_run["emits"], "responses")
    commands = _values(core_run["emits"], "control")
    assert responses and commands
    assert {c["command_id"] for c in commands} <= {
        r["command"]["command_id"] for r in responses if r["command"]}


def test_core_stamps_every_stored_record_with_the_run_id(core_run: dict[str, Any]) -> None:
    # The same records the embedded runtime stores (streams.pipeline.outcome_records).
    for topic in ("alerts", "reports", "responses", "dead-letter"):
        docs = _values(core_run["emits"], topic)
        assert docs and all(d["run_id"] == "run-test" for d in docs), topic


def test_core_dead_letters_carry_reasons_and_the_key_station(core_run: dict[str, Any], feed: Any) -> None:
    dls = _values(core_run["emits"], "dead-letter")
    not_json = [d for d in dls if "not valid JSON" in d["reason"]]
    assert len(not_json) == 1 and not_json[0]["station_id"] == feed.probe
    probe_bad = [d for d in dls if d["station_id"] == feed.probe and d["field"] == "value"]
    assert len(probe_bad) == 1 and "not a number" in probe_bad[0]["reason"]
    assert core_run["core"].counters.undecodable == 1


def test_core_counts_the_good_events_of_a_mixed_batch(core_run: dict[str, Any], feed: Any) -> None:
    probe = core_run["core"].stations[feed.probe]
    assert probe["events"] == 3 and probe["dead_letters"] == 2
    assert probe["last_event_time_s"] == pytest.approx(core_run["t0"] + 0.4)
    assert core_run["summaries"][feed.probe]["events"] == 3  # written to the table too


def test_core_checkpoints_the_learning_stages_json_safely(core_run: dict[str, Any]) -> None:
    cps = core_run["checkpoints"]
    assert cps, "no detector checkpoint written"
    cp = next(iter(cps.values()))
    stages = checkpoint_stages(core_run["core"].pipeline)
    assert set(cp["state"]) == set(stages) and {"entropy", "burst"} <= set(stages)
    assert "node" not in cp["state"]  # episode state: stale after a hand-over
    orjson.loads(orjson.dumps(cp))  # what a Faust table's JSON changelog holds


def test_core_on_stop_closes_the_rest_once(core_run: dict[str, Any]) -> None:
    core = core_run["core"]
    assert core.stopped and core.on_stop() == [] and core.on_timer(time.time() + 99) == []


def test_checkpoints_restore_into_a_fresh_pipeline(feed: Any) -> None:
    s = _settings()
    now = time.time()
    checkpoints: dict[str, Any] = {}
    first = WorkerCore(s, checkpoints=checkpoints, checkpoint_interval_s=0.0, table_batch=1000,
                       batch_events=500)
    msgs = list(feed.messages(s, now - 25.0))
    for sid, recs in msgs[:3000]:
        first.on_message(encode_raw(recs), sid.encode(), now)
    first.on_message(encode_raw(msgs[3000][1]), msgs[3000][0].encode(), now)  # flush due ones
    sid = msgs[3000][0]
    idx = first.pipeline.registry.index_of(sid)
    stages = checkpoint_stages(first.pipeline)
    assert sid in checkpoints
    # what the new owner must get back is what was checkpointed (a station's checkpoint is
    # refreshed when its events are ingested, so it may trail the old owner by a tick)
    want = {st: {k: np.asarray(v, float) for k, v in checkpoints[sid]["state"][st].items()}
            for st in stages}

    second = WorkerCore(s, checkpoints=checkpoints, batch_events=1)
    second.on_message(encode_raw(msgs[3001][1] if msgs[3001][0] == sid else msgs[3000][1]),
                      sid.encode(), now)
    assert second.counters.checkpoints_restored == 1
    got = {st: second.pipeline.state[st].station(idx) for st in stages}
    for st in stages:
        for k, v in want[st].items():
            np.testing.assert_allclose(got[st][k], v)


def test_a_new_owner_with_default_batching_restores_checkpoints_before_writing_any(feed: Any) -> None:
    # Default micro-batching: the first message's events wait in the buffer, so the
    # fresh pipeline has learnt nothing yet - it must not checkpoint over A's state.
    s = _settings()
    now = time.time()
    checkpoints: dict[str, Any] = {}
    first = WorkerCore(s, checkpoints=checkpoints, checkpoint_interval_s=0.0, table_batch=1000,
                       batch_events=500)
    msgs = list(feed.messages(s, now - 25.0))
    for sid, recs in msgs[:3001]:
        first.on_message(encode_raw(recs), sid.encode(), now)
    assert len(checkpoints) > 4  # more than one message's table_batch of the new owner
    written = orjson.loads(orjson.dumps(checkpoints))
    stages = checkpoint_stages(first.pipeline)
    sid, recs = msgs[3001]
    idx = first.pipeline.registry.index_of(sid)
    assert sid in checkpoints
    want = {st: {k: np.asarray(v, float) for k, v in checkpoints[sid]["state"][st].items()}
            for st in stages}

    second = WorkerCore(s, checkpoints=checkpoints)  # default batch_wait_s / batch_events
    assert second.batch_events > 1 and second.batch_wait_s > 0
    second.on_message(encode_raw(recs), sid.encode(), now)
    assert second.counters.checkpoints_written == 0
    assert orjson.loads(orjson.dumps(checkpoints)) == written  # still A's, every station
    second.on_timer(now + 1.0)  # the buffer is due: ingest, restore
    assert second.counters.checkpoints_restored == 1
    got = {st: second.pipeline.state[st].station(idx) for st in stages}
    for st in stages:
        for k, v in want[st].items():
            np.testing.assert_allclose(got[st][k], v)


def test_a_checkpoint_that_does_not_fit_is_ignored_not_fatal(feed: Any) -> None:
    s = _settings()
    now = time.time()
    sid, recs = next(feed.messages(s, now - 25.0))
    bad = {"v": CHECKPOINT_VERSION, "tick": int(now), "tick_s": s.tick_s,
           "state": {"entropy": {"n": [1.0, 2.0]}, "burst": {}}}
    core = WorkerCore(s, checkpoints={sid: bad}, batch_events=1)
    core.on_message(encode_raw(recs), sid.encode(), now)
    assert core.counters.checkpoints_rejected == 1
    assert core.counters.checkpoints_restored == 0


def test_ownership_change_resets_the_pipeline_but_a_same_partition_rebalance_does_not(feed: Any) -> None:
    s = _settings()
    now = time.time()
    core = WorkerCore(s, batch_events=1)
    assert not core.on_assignment({0})
    sid, recs = next(feed.messages(s, now - 25.0))
    core.on_message(encode_raw(recs), sid.encode(), now)
    before = core.pipeline
    assert not core.on_assignment({0}) and core.pipeline is before
    assert core.on_assignment(set()) and core.pipeline is not before
    assert core.counters.resets == 1 and core.stations[sid]["events"] > 0  # counts survive


def test_events_wait_in_a_small_buffer_that_the_timer_drains(feed: Any) -> None:
    s = _settings()
    now = time.time()
    core = WorkerCore(s, batch_wait_s=1.0, batch_events=10_000)
    sid, recs = next(feed.messages(s, now - 25.0))
    core.on_message(encode_raw(recs), sid.encode(), now)
    assert core.pipeline.counters.events == 0  # buffered, not lost
    core.on_timer(now + 0.25)
    assert core.pipeline.counters.events > 0


def test_a_message_that_breaks_the_worker_becomes_a_dead_letter() -> None:
    core = WorkerCore(_settings())
    (emit,) = core.internal_error(b'{"v": 1}', b"s1", RuntimeError("boom"), time.time())
    doc = orjson.loads(emit.value)
    assert emit.topic == "dead-letter" and doc["stage"] == "worker"
    assert "RuntimeError: boom" in doc["reason"] and doc["station_id"] == "s1"
    assert core.pipeline.counters.dead_letters == 1


def test_station_status_marks_dark_stations_and_ignores_stale_or_garbage() -> None:
    s = _settings()
    core = WorkerCore(s, run_id="run-status")
    sid = core.pipeline.registry.ids()[0]
    now = 1_800_000_000.0

    def status(state: str, at_s: float) -> bytes:
        return orjson.dumps({"station_id": sid, "state": state, "at_s": at_s})

    assert core.on_station_status(status("backing_off", now - 1), now)
    assert sid in core.pipeline.region.dark
    assert not core.on_station_status(status("running", now - 3600), now)  # history, not news
    assert sid in core.pipeline.region.dark
    assert core.on_station_status(status("running", now), now)
    assert sid not in core.pipeline.region.dark
    assert not core.on_station_status(b"\x00garbage", now)


# -- more of the core: known answers --------------------------------------------------


def _event(sid: str, t: float, value: float = 1.0) -> dict[str, Any]:
    return {"station_id": sid, "source_kind": "sensor", "event_time_s": t, "category": "seismic",
            "value": value}


def test_watermark_rejects_a_negative_lead_and_names_both_settings() -> None:
    with pytest.raises(ValueError, match=r"need idle_after_s > 0 and max_lead_s >= 0, got 1.0, -0.5"):
        EventTimeWatermark(idle_after_s=1.0, max_lead_s=-0.5)
    EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.0)  # no lead at all is allowed


def test_watermark_with_only_dead_letters_never_idles_forward() -> None:
    wm = EventTimeWatermark(idle_after_s=1.0, max_lead_s=0.0)
    assert wm.observe(None, wall_s=10.0) is None
    assert wm.idle(100.0) is None and wm.value is None
    assert wm.observe(50.0, wall_s=100.0) == 50.0
    assert wm.observe(None, wall_s=101.0) == 50.0  # input again, no events: the idle clock restarts
    assert wm.idle(101.5) is None and wm.idle(103.0) == pytest.approx(52.0)


def test_summaries_are_written_a_few_per_message() -> None:
    now = time.time()
    summaries: dict[str, Any] = {}
    core = WorkerCore(_settings(), summaries=summaries, summary_interval_s=0.0, table_batch=2)
    sids = [f"probe-{i}" for i in range(5)]
    core.on_message(encode_raw([_event(sid, now - 5.0) for sid in sids]), b"probe-0", now)
    assert len(summaries) == 2  # at most table_batch per message: a burst would stall Faust
    core.on_message(b"{not json", b"probe-0", now)
    assert len(summaries) == 4
    core.on_message(b"{not json", b"probe-0", now)
    assert sorted(summaries) == sids
    assert summaries["probe-3"] == {"events": 1, "dead_letters": 0, "last_event_time_s": now - 5.0,
                                    "last_seen_s": now}
    assert core.stations["probe-0"]["dead_letters"] == 2  # blamed on the key's station


def test_a_new_owner_continues_the_previous_owners_counts() -> None:
    now = time.time()
    previous = {"probe-1": {"events": 41, "dead_letters": 2, "last_event_time_s": now - 60.0,
                            "last_seen_s": now - 50.0}}
    core = WorkerCore(_settings(), summaries=previous, summary_interval_s=0.0)
    core.on_message(encode_raw([_event("probe-1", now - 1.0)]), b"probe-1", now)
    assert previous["probe-1"] == {"events": 42, "dead_letters": 2, "last_event_time_s": now - 1.0,
                                   "last_seen_s": now}


def test_empty_and_missing_messages_are_undecodable_dead_letters() -> None:
    core = WorkerCore(_settings(), run_id="run-x")
    now = time.time()
    emits = core.on_message(None, None, now) + core.on_message(b"[]", b"s-9", now)
    assert [e.topic for e in emits] == ["dead-letter", "dead-letter"]
    docs = [orjson.loads(e.value) for e in emits]
    assert [d["field"] for d in docs] == ["message", "message"]
    assert [d["station_id"] for d in docs] == [None, "s-9"] and {d["run_id"] for d in docs} == {"run-x"}
    assert core.counters.undecodable == 2 and core.counters.messages == 2
    assert core.pipeline.counters.dead_letters == 2


def test_nothing_ingested_means_nothing_to_close() -> None:
    core = WorkerCore(_settings())
    assert core.on_timer(time.time()) == []
    assert core.on_stop(time.time()) == [] and core.stopped
    assert core.summary()["watermark_s"] is None


@pytest.mark.parametrize(("change", "reason"), [
    ({"v": 99}, "version 99 / tick_s"),
    ({"tick_s": 7.5}, "tick_s 7.5 do not match"),
    ({"tick": 0}, "older than 3600 s"),
    ({"tick": None}, "checkpoint at tick None"),
    ({"state": {"entropy": {}}}, "it holds stages ['entropy'], this build has"),
])
def test_a_checkpoint_that_does_not_fit_says_why(change: dict[str, Any], reason: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    s = _settings()
    now = time.time()
    cp = {"v": CHECKPOINT_VERSION, "tick": int(now / s.tick_s), "tick_s": s.tick_s, "state": {}} | change
    core = WorkerCore(s, checkpoints={"probe-1": cp}, batch_events=1)
    with caplog.at_level("WARNING", logger="convergence.streams.worker"):
        core.on_message(encode_raw([_event("probe-1", now - 1.0)]), b"probe-1", now)
    assert core.counters.checkpoints_rejected == 1 and core.counters.checkpoints_restored == 0
    assert "station probe-1: ignoring its detector checkpoint" in caplog.text
    assert reason in caplog.text


def test_summary_and_run_record() -> None:
    s = _settings()
    now = time.time()
    core = WorkerCore(s, run_id="run-sum", batch_events=1)
    core.on_assignment([3, 1])
    core.on_message(encode_raw([_event("probe-1", now - 2.0), _event("probe-1", now - 1.0)]),
                    b"probe-1", now, partition=1)
    doc = core.summary()
    assert (doc["run_id"], doc["app_id"], doc["partitions"], doc["stopped"]) == (
        "run-sum", s.faust_app_id, [1, 3], False)
    # partition 3 sent nothing and is not known to be read to its end: it holds time back
    assert doc["watermark_s"] is None
    core.on_timer(now, caught_up={1: True, 3: True})  # nothing there to read: no constraint
    doc = core.summary()
    assert doc["watermark_s"] == pytest.approx(now - 1.0)
    assert doc["pipeline"]["events"] == 2 and doc["worker"]["messages"] == 1
    assert doc["stations_seen"] == 1 and doc["stations"]["probe-1"]["events"] == 2
    record = core.run_record()
    assert (record.topic, record.key) == ("runs", b"run-sum")
    assert orjson.loads(record.value) == orjson.loads(orjson.dumps(core.summary()))


def test_a_default_run_id_names_the_app() -> None:
    s = _settings()
    before = int(time.time())
    run_id = WorkerCore(s).run_id
    app, _, stamp = run_id.removeprefix("cluster-").rpartition("-")
    assert run_id.startswith("cluster-") and app == s.faust_app_id
    assert before <= int(stamp) <= time.time()


# -- failures inside a batch: nothing buffered or built is lost -------------------------


def test_a_batch_that_breaks_ingest_becomes_dead_letters_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    core = WorkerCore(_settings(), run_id="run-ingest", batch_wait_s=60.0, batch_events=10_000)
    core.on_message(encode_raw([_event("probe-1", now - 5.0), _event("probe-1", now - 4.9)]),
                    b"probe-1", now)
    core.on_message(encode_raw([_event("probe-2", now - 4.8, 2.0)]), b"probe-2", now)
    assert core._pending_events == 3  # buffered across two messages

    def broken(events: Any, now_s: float) -> Any:
        raise RuntimeError("ingest bug")

    monkeypatch.setattr(core.pipeline, "ingest_columns", broken)
    emits = core.on_timer(now + 0.1)
    docs = [orjson.loads(e.value) for e in emits]
    assert [e.topic for e in emits] == ["dead-letter"] * 3
    assert all("RuntimeError" in d["reason"] and "ingest bug" in d["reason"] for d in docs)
    assert sorted(d["station_id"] for d in docs) == ["probe-1", "probe-1", "probe-2"]
    assert {d["run_id"] for d in docs} == {"run-ingest"}
    assert core._pending == [] and core.pipeline.counters.dead_letters == 3
    assert core.stations["probe-1"]["dead_letters"] == 2


def test_a_table_write_failure_still_returns_the_messages_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenTable(dict[str, Any]):
        def __setitem__(self, key: str, value: Any) -> None:
            raise RuntimeError("changelog producer buffer full")

    now = time.time()
    core = WorkerCore(_settings(), summaries=BrokenTable(), summary_interval_s=0.0, batch_wait_s=0.0)
    bad = {"station_id": "probe-1", "source_kind": "sensor", "event_time_s": now - 5.0,
           "category": "seismic", "value": "twelve"}
    emits = core.on_message(encode_raw([_event("probe-1", now - 5.0), bad]), b"probe-1", now)
    assert [e.topic for e in emits] == ["dead-letter"]  # built before the table write failed
    assert core.pipeline.counters.events == 1


# -- issue 11: oversized and invalid input stays out of summaries; receipts are not events --


def test_a_megabyte_key_or_station_id_never_becomes_a_summary_key_or_a_raw_dead_letter() -> None:
    now = time.time()
    summaries: dict[str, Any] = {}
    core = WorkerCore(_settings(), summaries=summaries, summary_interval_s=0.0, batch_wait_s=0.0)
    huge = "s" * 1_000_000
    emits = core.on_message(encode_raw([_event(huge, now - 1.0)]), huge.encode(), now)
    emits += core.on_message(b"{not json", huge.encode(), now)
    emits += core.on_message(encode_raw([_event("bad id!", now - 1.0)]), b"bad id!", now)
    emits += core.on_message(encode_raw([_event("probe-1", now - 1.0)]), b"probe-1", now)
    dead = [e for e in emits if e.topic == "dead-letter"]
    assert len(dead) == 3
    assert all(len(e.value) < 20_000 and len(e.key) <= 64 for e in dead)
    docs = [orjson.loads(e.value) for e in dead]
    assert [d["station_id"] for d in docs] == [None, None, None]
    assert docs[0]["payload_size"] > 1_000_000 and len(docs[0]["payload"]) <= 4096
    assert sorted(core.stations) == ["probe-1"] and sorted(summaries) == ["probe-1"]
    assert len(orjson.dumps(core.summary())) < 10_000


def test_summaries_count_a_re_sent_event_once() -> None:
    now = time.time()
    core = WorkerCore(_settings(), summary_interval_s=0.0, batch_wait_s=0.0)
    batch = encode_raw([_event("probe-1", now - 1.0), _event("probe-1", now - 0.5)])
    for _ in range(3):  # a producer retrying the same message
        core.on_message(batch, b"probe-1", now)
    assert core.stations["probe-1"]["events"] == 2
    assert core.pipeline.counters.events == 2 and core.pipeline.counters.duplicates == 4


def test_an_old_valid_event_first_does_not_make_one_timer_call_close_every_tick_since(
        feed: Any) -> None:
    # Issue 11, item 4: a valid event from 3 days ago arrived first after a restart and
    # one timer call closed every tick since (229,642 empty ticks, 97.8 s; heartbeats
    # expired). Work is counted in ticks closed, not wall time.
    s = _settings()
    now = time.time()
    t0 = now - 25.0
    core = WorkerCore(s, run_id="run-old", batch_wait_s=0.0)
    msgs = list(feed.messages(s, t0))
    sid, recs = msgs[0]
    old = {**recs[0], "event_time_s": now - 3 * 86_400.0}
    emits = core.on_message(encode_raw([old]), sid.encode(), now)
    assert not _values(emits, "dead-letter")  # valid, within max_age_s: accepted
    for i, (sid, recs) in enumerate(msgs):
        emits += core.on_message(encode_raw(recs), sid.encode(), now + i * 1e-4)
    before = core.pipeline.counters.ticks
    emits += core.on_timer(now + 10.0)
    pc = core.pipeline.counters
    span_ticks = (now + 10.0 - t0) / s.tick_s
    # every tick closed (the old one, 64 empty ones after it, the current ones) in this
    # run - bounded by the data, not by the three days in between
    assert pc.ticks <= 1 + 64 + span_ticks + 5, pc.as_dict()
    assert pc.ticks - before <= span_ticks + 5
    assert pc.skipped_ticks >= 3 * 86_400 / s.tick_s - 64 - span_ticks - 5
    # the current events are neither late nor lost, and the genuine convergence alerts
    assert pc.late == 0 and not [d for d in _values(emits, "dead-letter") if "late" in d["reason"]]
    # (the synthetic feed re-sends a few events and sends a few bad ones on purpose)
    assert pc.events + pc.duplicates + pc.dead_letters == 1 + sum(len(r) for _, r in msgs)
    assert any(a["regions"] == [feed.genuine_region(s)] for a in _values(emits, "alerts"))


def test_a_checkpoint_from_before_the_trend_and_scale_charts_restores(feed: Any) -> None:
    """An older build's checkpoint has no trend or scale stages and its station verdict's
    peak has seven evidence types: the rest is restored, the new charts start fresh."""
    s = _settings()
    now = time.time()
    checkpoints: dict[str, Any] = {}
    first = WorkerCore(s, checkpoints=checkpoints, checkpoint_interval_s=0.0, table_batch=1000,
                       batch_events=500)
    msgs = list(feed.messages(s, now - 25.0))
    for sid, recs in msgs[:3001]:
        first.on_message(encode_raw(recs), sid.encode(), now)
    sid, recs = msgs[3001]
    assert sid in checkpoints
    old = orjson.loads(orjson.dumps(checkpoints[sid]))
    for st in ADDED_STAGES:
        del old["state"][st]
    old["state"]["station_node"]["peak"] = old["state"]["station_node"]["peak"][:7]
    second = WorkerCore(s, checkpoints={sid: old}, batch_events=1)
    second.on_message(encode_raw(recs), sid.encode(), now)
    assert second.counters.checkpoints_restored == 1 and second.counters.checkpoints_rejected == 0
    idx = second.pipeline.registry.index_of(sid)
    assert len(second.pipeline.state["station_node"].station(idx)["peak"]) == 9
    assert second.pipeline.state["trend"]["n"][idx] >= 1  # fresh, and stepping since


# -- many messages at once ------------------------------------------------------------


def _wire_messages(feed: Any, s: Settings, t0: float, n_src: int,
                   ) -> list[tuple[bytes | None, bytes | None, int, int | None]]:
    """The feed as (value, key, partition, offset), with what a stream also carries: a
    message that is not JSON, a batch with a bad event, a station nobody knows, a message
    re-sent (new offset, same events) and one read again (same offset)."""
    from convergence.streams.topics import station_partition

    out: list[tuple[bytes | None, bytes | None, int, int | None]] = []
    offsets = [0] * n_src

    def add(value: bytes | None, key: str, offset: int | None = None) -> None:
        p = station_partition(key, n_src)
        out.append((value, key.encode(), p, offsets[p] if offset is None else offset))
        if offset is None:
            offsets[p] += 1

    for i, (sid, recs) in enumerate(feed.messages(s, t0)):
        add(encode_raw(recs), sid)
        if i == 40:
            add(b"{not json", sid)
            add(encode_raw(feed.probe_batch(recs[0]["event_time_s"])), feed.probe)
        if i == 900:
            ghost = {**recs[0], "station_id": "ghost-9"}
            add(encode_raw([ghost]), "ghost-9")
        if i in (1200, 1201):
            add(encode_raw(recs), sid)  # re-sent by its station: the same events again
        if i == 1500:
            value, key, p, off = out[-30]
            out.append((value, key, p, off))  # read again after a rebalance: same offset
    return out


def _run(s: Settings, messages: list[tuple[bytes | None, bytes | None, int, int | None]],
         sizes: list[int], now: float, *, n_src: int, at_once: bool) -> dict[str, Any]:
    """Messages in chunks of ``sizes`` (one wall-clock time per chunk): each chunk at once
    (``on_messages``), or message after message (``on_message``)."""
    from convergence.ground_stations.scenario import default_fleet
    from convergence.streams.directory import StationDirectory
    from convergence.streams.worker import InMessage

    core = WorkerCore(s, directory=StationDirectory(default_fleet(s.stations, s.seed)),
                      stations_only=n_src > 1, n_sources=n_src, n_units=2, run_id="batch",
                      batch_events=400, batch_wait_s=0.05)
    if n_src > 1:
        core.on_assignment(range(n_src))
    emits, ticks = [], []
    at, wall, k = 0, now, 0
    while at < len(messages):
        n = sizes[k % len(sizes)]
        chunk, at, k = messages[at:at + n], at + n, k + 1
        wall += 0.02
        if not at_once:
            for m in chunk:
                emits += core.on_message(m[0], m[1], wall, partition=m[2], offset=m[3])
                ticks.append(core.last_max_tick)
        else:
            emits += core.on_messages([InMessage(*m) for m in chunk], wall)
            ticks += core.last_max_ticks
        if k % 50 == 0:
            emits += core.on_timer(wall)
    emits += core.on_timer(wall + 20.0)
    emits += core.on_stop(wall + 20.0)
    # the tables are written per chunk rather than per message: when, not what
    counters = {k: v for k, v in core.counters.as_dict().items()
                if k not in ("checkpoints_written", "batches")}
    return {"emits": [(e.topic, e.key, e.value, e.partition) for e in emits], "ticks": ticks,
            "counters": counters, "pipeline": core.pipeline.counters.as_dict(),
            "stations": core.stations, "watermark": core.watermark_s}


@pytest.mark.parametrize("n_src", [1, 3])
def test_many_messages_at_once_give_what_one_at_a_time_gives(feed: Any, n_src: int) -> None:
    s = _settings()
    now = time.time()
    messages = _wire_messages(feed, s, now - 25.0, n_src)
    one = _run(s, messages, [1], now, n_src=n_src, at_once=False)
    emitted = {t for t, *_ in one["emits"]}
    assert {"dead-letter"} <= emitted and ("alerts" in emitted if n_src == 1
                                           else "node-evidence" in emitted)
    assert one["counters"]["rereads"] == 1 and one["counters"]["undecodable"] == 1
    assert one["counters"]["unknown_station_events"] == 4  # the probe's 3, the ghost's 1
    # batches of every size, flushing inside and across them (400 events or 50 ms)
    rng = np.random.default_rng(7)
    for sizes in ([len(messages)], [1, 7, 64, 300], rng.integers(1, 400, 50).tolist()):
        ref = _run(s, messages, sizes, now, n_src=n_src, at_once=False)
        many = _run(s, messages, sizes, now, n_src=n_src, at_once=True)
        for k in ref:
            assert many[k] == ref[k], (sizes[:4], k)
    assert many["pipeline"]["events"] == one["pipeline"]["events"] > 10_000

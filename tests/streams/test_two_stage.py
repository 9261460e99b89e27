"""The two-stage cluster's logic without Faust or a broker: the same wire messages through
one process (both stages handing evidence over in memory) and through first-stage workers
and second-stage units exchanging node-evidence messages give the same alerts and reports.

The same cores inside real Faust workers on a real broker are tested in
``test_cluster_two_stage.py``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from convergence.ground_stations.scenario import default_fleet
from convergence.settings import Settings, load_settings
from convergence.stations import StationInfo
from convergence.streams.directory import StationDirectory
from convergence.streams.region_core import RegionCore
from convergence.streams.topics import Emit, station_partition
from convergence.streams.worker import WorkerCore, node_evidence_message
from convergence.wire import encode_raw


def _settings() -> Settings:
    return load_settings(env={}, config_path=None)


def _directory(s: Settings) -> StationDirectory:
    return StationDirectory(default_fleet(s.stations, s.seed))


def _messages(feed: Any, s: Settings, t0: float) -> list[tuple[str, bytes]]:
    return [(sid, encode_raw(recs)) for sid, recs in feed.messages(s, t0)]


def _outputs(emits: list[Emit]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in emits:
        if e.topic in ("alerts", "reports", "responses", "dead-letter"):
            out.setdefault(e.topic, []).append(orjson.loads(e.value))
    return out


def _one_process(feed: Any, s: Settings, t0: float, now: float) -> dict[str, list[dict[str, Any]]]:
    core = WorkerCore(s, directory=_directory(s), run_id="parity")
    emits: list[Emit] = []
    for i, (sid, value) in enumerate(_messages(feed, s, t0)):
        emits += core.on_message(value, sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    emits += core.on_stop()
    return _outputs(emits)


def _two_stages(feed: Any, s: Settings, t0: float, now: float, *, n_src: int,
                n_units: int) -> tuple[dict[str, list[dict[str, Any]]], list[WorkerCore], RegionCore]:
    directory = _directory(s)
    firsts = [WorkerCore(s, directory=directory, stations_only=True, n_sources=n_src,
                         n_units=n_units, run_id="parity") for _ in range(n_src)]
    for p, core in enumerate(firsts):
        core.on_assignment([p])
    second = RegionCore(s, directory, n_sources=n_src, n_units=n_units, run_id="parity")
    second.on_assignment(range(n_units))
    out: list[Emit] = []

    def carry(emits: list[Emit]) -> None:
        for e in emits:
            if e.topic == "node-evidence":
                assert e.partition is not None
                out.extend(second.on_message(e.value, e.partition, now))
            else:
                out.append(e)

    offsets = [0] * n_src
    for i, (sid, value) in enumerate(_messages(feed, s, t0)):
        p = station_partition(sid, n_src)  # as Kafka's default partitioner puts it
        carry(firsts[p].on_message(value, sid.encode(), now + i * 1e-4, partition=p,
                                   offset=offsets[p]))
        offsets[p] += 1
    for core in firsts:
        carry(core.on_timer(now + 10.0))
    for core in firsts:
        carry(core.on_stop())
    return _outputs(out), firsts, second


def _ids(out: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[tuple[str, int]]]:
    return (sorted(a["alert_id"] for a in out.get("alerts", [])),
            sorted((r["report_id"], r["revision"]) for r in out.get("reports", [])))


@pytest.mark.parametrize(("n_src", "n_units"), [(1, 1), (3, 1), (3, 2)])
def test_one_process_and_two_stages_give_the_same_alerts_and_reports(
        feed: Any, n_src: int, n_units: int) -> None:
    s = _settings()
    now = time.time()
    t0 = now - 25.0
    single = _one_process(feed, s, t0, now)
    split, firsts, second = _two_stages(feed, s, t0, now, n_src=n_src, n_units=n_units)
    alerts, reports = _ids(single)
    assert alerts, "the default scenario's genuine convergence must alert"
    assert _ids(split) == (alerts, reports)
    # the same report content, revision by revision (content hashes chain the revisions)
    by_id = {(r["report_id"], r["revision"]): r for r in split.get("reports", [])}
    for r in single.get("reports", []):
        other = by_id[(r["report_id"], r["revision"])]
        assert other["summary"] == r["summary"] and other["score"] == r["score"]
    # most station-ticks are at baseline: nothing of theirs crossed between the stages
    at_base = sum(c.pipeline.counters.station_ticks_at_baseline for c in firsts)
    total = sum(c.pipeline.counters.station_ticks for c in firsts)
    assert total and at_base / total > 0.5
    assert second.summary()["unreadable"] == 0


def test_a_tick_closes_only_when_every_first_stage_partition_is_past_it() -> None:
    s = _settings()
    d = StationDirectory([StationInfo("news-1", "osint_news", "mena"),
                          StationInfo("social-1", "osint_social", "mena")])
    second = RegionCore(s, d, n_sources=2, n_units=1, run_id="t")
    second.on_assignment([0])
    ne = {"tick": 5, "time_s": 6.0, "stations": {"news-1": [6.0, 0, 0, 0, 0, 3, 1, -1]}}
    second.on_message(orjson.dumps({"src": [0], "through": 5, "ne": ne}), 0, 0.0)
    unit = second.units[0]
    assert unit.stage.last_tick is None and 5 in unit.pending   # partition 1 unheard
    second.on_message(node_evidence_message([1], 4), 0, 0.0)
    assert unit.stage.last_tick is None                          # partition 1 only to 4
    second.on_message(node_evidence_message([1], 5), 0, 0.0)
    assert unit.stage.last_tick == 5 and not unit.pending         # now it closes
    second.on_message(orjson.dumps({"src": [0], "through": 5, "ne": ne}), 0, 0.0)
    assert unit.stage.counters.ticks == 1                         # never twice


def test_a_quiet_first_stage_partition_says_it_is_complete_so_others_are_not_held_up() -> None:
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), stations_only=True, run_id="quiet")
    core.on_assignment([1])
    now = 1_800_000_000.0
    assert core.on_timer(now, caught_up=False) == []  # cut off or behind: says nothing
    emits = core.on_timer(now, caught_up=True)
    (e,) = emits
    doc = orjson.loads(e.value)
    assert e.topic == "node-evidence" and doc["src"] == [1] and "ne" not in doc
    assert doc["through"] < (now - s.allowed_lateness_s) / s.tick_s


def test_the_second_stage_continues_from_its_checkpoint(feed: Any) -> None:
    """A new owner restores the unit's table entry: same episode, same report id, and the
    ticks the old owner closed are not closed again."""
    s = _settings()
    now = time.time()
    t0 = now - 25.0
    out, _firsts, second = _two_stages(feed, s, t0, now, n_src=1, n_units=1)
    table = second.table
    assert "0" in table and second.checkpoints_written >= 1
    heir = RegionCore(s, _directory(s), n_sources=1, n_units=1, run_id="parity",
                      table=table)
    heir.on_assignment([0])
    unit = heir.unit(0)
    assert heir.checkpoints_restored == 1 and unit.stage.last_tick == second.units[0].saved_tick
    assert unit.stage.reporter.to_dict() == second.units[0].stage.reporter.to_dict() or \
        second.units[0].stage.last_tick != second.units[0].saved_tick
    # a re-read of a closed tick is dropped
    last = unit.stage.last_tick
    assert last is not None
    again = {"tick": last, "time_s": last + 1.0, "stations": {}}
    heir.on_message(orjson.dumps({"src": [0], "through": last, "ne": again}), 0, now)
    assert unit.stage.last_tick == last and not unit.pending
    assert out.get("alerts")


def test_an_unknown_station_waits_for_its_status_then_is_dead_lettered_with_the_reason() -> None:
    s = _settings()
    d = StationDirectory([StationInfo("news-1", "osint_news", "mena")])
    core = WorkerCore(s, directory=d, stations_only=True, run_id="unknown", unknown_grace_s=5.0)
    core.on_assignment([0])
    now = 1_800_000_000.0
    rec = {"station_id": "late-1", "source_kind": "sensor", "event_time_s": now - 1.0,
           "category": "seismic", "value": 1.0}
    core.on_message(encode_raw([rec]), b"late-1", now, partition=0, offset=0)
    assert "late-1" in core._held and core.counters.unknown_station_events == 0
    # its status arrives: its events go on, with the facts it reports
    status = {"station_id": "late-1", "kind": "sensor", "region": "eu-west", "group": "g",
              "state": "running", "at_s": now}
    core.on_station_status(orjson.dumps(status), now + 1.0)
    assert "late-1" not in core._held
    core.on_timer(now + 1.1)
    assert core.pipeline.counters.events == 1
    reg = core.pipeline.registry
    assert reg.info(reg.index_of("late-1")).region == "eu-west"
    # another never says who it is: dead-lettered after the grace, with the reason
    ghost = {**rec, "station_id": "ghost-9"}
    core.on_message(encode_raw([ghost]), b"ghost-9", now + 2.0, partition=0, offset=1)
    emits = core.on_timer(now + 8.0)
    dead = [orjson.loads(e.value) for e in emits if e.topic == "dead-letter"]
    assert len(dead) == 1 and "unknown station" in dead[0]["reason"]
    assert "fleet file" in dead[0]["reason"] and core.counters.unknown_station_events == 1


def test_a_reread_after_a_rebalance_is_a_duplicate_never_late(feed: Any) -> None:
    """Item 6 of the faults issue: messages read again after a rebalance (offsets at or
    below what was processed) are dropped as re-reads, not dead-lettered as late."""
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), stations_only=True, run_id="reread",
                      startup_wait_s=0.0)
    core.on_assignment([0])
    now = time.time()
    msgs = _messages(feed, s, now - 25.0)[:400]
    for i, (sid, value) in enumerate(msgs):
        core.on_message(value, sid.encode(), now + i * 1e-4, partition=0, offset=i)
    core.on_timer(now + 1.0)  # ingests the batch
    core.on_timer(now + 5.0)  # input quiet and caught up: the ticks close
    late_before = core.pipeline.counters.late
    for i, (sid, value) in enumerate(msgs[:300]):  # the group re-reads from an old offset
        core.on_message(value, sid.encode(), now + 6.0, partition=0, offset=i)
    assert core.counters.rereads == 300 and core.pipeline.counters.late == late_before
    # a new owner (fresh core) learns how far the partition got from the progress table
    heir = WorkerCore(s, directory=_directory(s), stations_only=True, run_id="reread",
                      progress=core.progress, startup_wait_s=0.0)
    core.progress["0"] = {"closed_through": core.closed_before - 1, "offset": 399,
                          "tick_s": s.tick_s}
    heir.on_assignment([0])
    for i, (sid, value) in enumerate(msgs[:300]):
        heir.on_message(value, sid.encode(), now + 7.0, partition=0, offset=i)
    heir.on_timer(now + 8.0)
    assert heir.counters.reread_events > 0 and heir.pipeline.counters.late == 0
    assert heir.pipeline.counters.events == 0  # every one of them was handed on before


def test_a_partition_read_ahead_of_another_never_makes_the_others_events_late(feed: Any) -> None:
    """Item 1 of the faults issue, within one worker: a consumer may deliver one
    partition's backlog before another's; ticks close at the slowest partition's event
    time, so the other's events are not late."""
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), stations_only=True, n_sources=2,
                      run_id="two-parts")
    core.on_assignment([0, 1])
    now = time.time()
    msgs = _messages(feed, s, now - 25.0)
    by_part: dict[int, list[tuple[str, bytes]]] = {0: [], 1: []}
    for sid, value in msgs:
        by_part[station_partition(sid, 2)].append((sid, value))
    wall = now
    for p in (0, 1):  # all of partition 0 first, then all of partition 1
        for i, (sid, value) in enumerate(by_part[p]):
            wall += 1e-4
            core.on_message(value, sid.encode(), wall, partition=p, offset=i)
        core.on_timer(wall, caught_up={0: p >= 0, 1: p >= 1})
    core.on_timer(wall + 5.0, caught_up={0: True, 1: True})
    assert core.pipeline.counters.late == 0
    assert core.pipeline.counters.events > 10_000


def test_after_an_outage_a_station_resending_its_backlog_is_not_late(feed: Any) -> None:
    """Item 1 of the faults issue, the part a partition's own order hides: after a broker
    outage, stations resend what they buffered while others already send fresh events,
    so within one partition event times jump back by the outage's length. Each station
    that spoke before holds the partition's watermark at its own latest event time until
    its backlog is in, so none of it is late; once caught up again, ticks close."""
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), stations_only=True, n_sources=1,
                      run_id="outage", startup_wait_s=0.0)  # the start-up wait is not tested here
    core.on_assignment([0])
    now = time.time()
    msgs = _messages(feed, s, now - 40.0)
    # a message's time: its latest valid event (the feed mixes in records a day ahead)
    times = {id(v): max((e["event_time_s"] for e in orjson.loads(v)["events"]
                         if isinstance(e.get("event_time_s"), float)
                         and e["event_time_s"] < now + 60.0), default=now) for _, v in msgs}
    before = [(sid, v) for sid, v in msgs if times[id(v)] < now - 30.0]
    during = [(sid, v) for sid, v in msgs if times[id(v)] >= now - 30.0]
    stations = sorted({sid for sid, _ in during})
    slow = set(stations[::2])  # half the stations resend their outage backlog late
    wall, offset = now - 30.0, 0
    out: list[Emit] = []

    def send(batch: list[tuple[str, bytes]], caught: bool) -> None:
        nonlocal wall, offset
        for sid, value in batch:
            wall += 1e-3
            out.extend(core.on_message(value, sid.encode(), wall, partition=0, offset=offset))
            offset += 1
            if offset % 50 == 0:
                out.extend(core.on_timer(wall, caught_up={0: caught}))

    send(before, caught=True)
    core.on_timer(wall, caught_up={0: True})
    closed_before_outage = core.closed_before
    assert closed_before_outage is not None
    # the broker is away: the consumer cannot reach it (no wall-time advance)
    for _ in range(40):
        wall += 0.25
        core.on_timer(wall, caught_up={0: False})
    # back: the quick stations' fresh events first, then the slow ones' backlog
    send([m for m in during if m[0] not in slow], caught=False)
    send([m for m in during if m[0] in slow], caught=False)
    for _ in range(4 * 40):  # 40 s caught up: past RECOVER_S
        wall += 0.25
        core.on_timer(wall, caught_up={0: True})
    assert not [e for e in out if e.topic == "dead-letter" and b"after its tick" in e.value]
    assert core.pipeline.counters.late == 0
    assert core.pipeline.counters.events > 5_000
    # and the ticks of the outage did close once the backlog was in
    assert core.closed_before is not None and core.closed_before > closed_before_outage + 20


def test_a_station_that_fell_silent_holds_nothing_once_the_broker_answered_for_a_while(
        feed: Any) -> None:
    """The other side of the recovery hold: a station that spoke once and then never
    again (here the probe station, at the start of a backlog) must not hold the
    partition's ticks for ever - after STATION_BACKLOG_SILENCE_S of a reachable broker it
    no longer counts, even while the consumer is still behind."""
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), run_id="silent")
    core.on_assignment([0])
    now = time.time()
    t0 = now - 25.0
    wall = now
    core.on_message(encode_raw(feed.probe_batch(t0 + 0.2)), feed.probe.encode(), wall, offset=0)
    for i, (sid, value) in enumerate(_messages(feed, s, t0), start=1):
        wall += 1e-3
        core.on_message(value, sid.encode(), wall, partition=0, offset=i)
        if i % 100 == 0:
            core.on_timer(wall, caught_up={0: False}, reachable={0: True})
    held = core.closed_before
    for _ in range(280):  # 70 s: behind as far as the transport can tell, but reachable
        wall += 0.25
        core.on_timer(wall, caught_up={0: False}, reachable={0: True})
    assert core.closed_before is not None and (held is None or core.closed_before > held)
    assert core.closed_before * s.tick_s > t0 + 15.0  # the ticks of the episode closed
    assert core.pipeline.counters.late == 0 and core.pipeline.counters.alerts >= 1


def test_a_reset_drops_the_buffered_events_which_are_read_again_in_their_place(feed: Any) -> None:
    """Item 6 of the faults issue, on a failover: the survivor takes the dead worker's
    partitions and starts a fresh pipeline; the transport reads its kept partitions again
    from the committed offset. Events still buffered at the reset come back with that
    re-read, in their place; ingested first, the newest of them ran the fresh watermark
    ahead and made the older re-read events late (1,300 in a cluster test)."""
    s = _settings()
    core = WorkerCore(s, directory=_directory(s), stations_only=True, n_sources=4,
                      run_id="takeover", batch_events=10**9, batch_wait_s=3600.0)
    core.on_assignment([0, 1])
    now = time.time()
    msgs = [(sid, v) for sid, v in _messages(feed, s, now - 25.0) if station_partition(sid, 4) in (0, 1)]
    wall, offsets = now, {0: 0, 1: 0}
    sent: list[tuple[str, bytes, int, int]] = []
    for sid, value in msgs:
        p = station_partition(sid, 4)
        sent.append((sid, value, p, offsets[p]))
        offsets[p] += 1
    half = len(sent) * 2 // 3
    for i, (sid, value, p, off) in enumerate(sent[:half]):
        wall += 1e-3
        core.on_message(value, sid.encode(), wall, partition=p, offset=off)
        if i % 200 == 0:
            core.on_timer(wall, caught_up={0: True, 1: True})
            if core._pending:
                core._flush(wall)  # a batch ingested now and then; the rest stays buffered
    assert core._pending_events > 0
    closed = core.closed_before
    assert closed is not None
    # the failover: more partitions, a fresh pipeline; the kept ones are read again from
    # an offset before the buffered events (nothing after it was acknowledged)
    core.on_assignment([0, 1, 2, 3])
    committed = {p: min(off for _, _, q, off in sent[half // 2:half] if q == p) for p in (0, 1)}
    for i, (sid, value, p, off) in enumerate(sent):
        if off >= committed[p]:
            wall += 1e-3
            core.on_message(value, sid.encode(), wall, partition=p, offset=off)
        if i % 50 == 0:  # the transport's timer: the taken-over partitions are empty
            core.on_timer(wall, caught_up={0: False, 1: False, 2: True, 3: True},
                          reachable={0: True, 1: True, 2: True, 3: True})
    for _ in range(60):
        wall += 0.25
        core.on_timer(wall, caught_up={0: True, 1: True, 2: True, 3: True})
    assert core.pipeline.counters.late == 0
    assert core.counters.reread_events > 0


def test_a_station_that_starts_late_is_waited_for_and_its_first_events_are_not_late(
        feed: Any) -> None:
    """The start-up race of a cluster: a station process that starts late sends what it
    recorded since the run's start at once, after quicker stations already sent fresh
    events. Each partition waits for the fleet's stations on it that have not spoken yet,
    so those first events are not late; a station that never speaks holds it at most
    ``startup_wait_s`` of a reachable broker."""
    s = _settings()
    now = time.time()
    msgs = _messages(feed, s, now - 20.0)
    stations = sorted({sid for sid, _ in msgs})
    late_ones = set(stations[::7])
    quick = [m for m in msgs if m[0] not in late_ones]
    slow = [m for m in msgs if m[0] in late_ones]
    assert quick and slow

    def run(wait_s: float) -> WorkerCore:
        core = WorkerCore(s, directory=_directory(s), stations_only=True, run_id="late-start",
                          startup_wait_s=wait_s)
        core.on_assignment([0])
        wall = now
        for i, (sid, value) in enumerate(quick):  # the quick stations' 20 s, as they come
            wall += 1e-4
            core.on_message(value, sid.encode(), wall, partition=0, offset=i)
        for _ in range(20):  # 5 s caught up and quiet: the ticks would close
            wall += 0.25
            core.on_timer(wall, caught_up={0: True})
        for i, (sid, value) in enumerate(slow):  # the late stations' first messages
            wall += 1e-4
            core.on_message(value, sid.encode(), wall, partition=0, offset=len(quick) + i)
        core.on_timer(wall + 0.1, caught_up={0: True})
        return core

    without = run(0.0)
    assert without.pipeline.counters.late > 100  # the race, without the wait
    waited = run(30.0)
    assert waited.pipeline.counters.late == 0
    assert waited.pipeline.counters.events == without.pipeline.counters.events + \
        without.pipeline.counters.late

    # a fleet station that never speaks: the wait ends after 30 s of a reachable broker,
    # and not while the broker cannot be reached
    core = WorkerCore(s, directory=_directory(s), stations_only=True, run_id="silent-one",
                      startup_wait_s=30.0)
    core.on_assignment([0])
    for i, (sid, value) in enumerate(quick):
        core.on_message(value, sid.encode(), now + i * 1e-4, partition=0, offset=i)
    wall = now + 1.0
    for _ in range(4 * 60):  # a minute cut off: nothing closes, the wait does not run out
        wall += 0.25
        core.on_timer(wall, caught_up={0: False}, reachable={0: False})
    assert core.pipeline.counters.ticks == 0
    for _ in range(4 * 29):
        wall += 0.25
        core.on_timer(wall, caught_up={0: True})
    assert core.pipeline.counters.ticks == 0  # still waiting for the silent stations
    for _ in range(4 * 2):
        wall += 0.25
        core.on_timer(wall, caught_up={0: True})
    assert core.pipeline.counters.ticks > 0

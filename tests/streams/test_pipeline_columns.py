"""Ingest from columns equals ingest from event objects (issue 8's columnar path): the
first stage's state, report samples, node evidence and dead letters, and a worker's
every output on a replay of about 50k events."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convergence.streams.worker as worker_module
from convergence.detectors.ingest import EventColumns
from convergence.detectors.processor import TickProcessor
from convergence.ground_stations.scenario import SyntheticWorld, default_fleet, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.schema import Event, EventBatch, make_event
from convergence.settings import Settings, load_settings
from convergence.stations import StationRegistry
from convergence.streams.directory import StationDirectory
from convergence.streams.pipeline import Pipeline
from convergence.streams.stages import StationStage
from convergence.streams.topics import Emit
from convergence.streams.worker import WorkerCore
from convergence.wire import Decoded, decode_batch, decode_each, encode_raw

STATIONS = ["news-1", "social-2", "sensor-3"]
EVENTS = st.lists(st.builds(
    lambda s, t, c, v, x: make_event(STATIONS[s], "osint_news", 1000.0 + t, c, v, text=x,
                                     source=None if s == 2 else f"wire-{s}"),
    st.integers(0, 2), st.floats(0, 12), st.sampled_from(["a", "b", "conflict"]),
    st.floats(-10, 10), st.one_of(st.none(), st.just(""), st.text(max_size=300))), max_size=80)


def _settings() -> Settings:
    return load_settings(env={}, config_path=None)


def _both(chunks: list[list[Event]], watermarks: list[float]) -> tuple[Any, Any]:
    """The same chunks through ``ingest_events`` and ``ingest_columns``, closing ticks to
    the watermark after each: every node evidence and every dead letter of each."""
    s = _settings()
    out = []
    for columns in (False, True):
        stage = StationStage(s, StationRegistry([]), TickProcessor())
        evidence, dead = [], []
        for chunk, wm in zip(chunks, watermarks, strict=True):
            dls = (stage.ingest_columns(EventBatch.from_events(chunk), wm) if columns
                   else stage.ingest_events(chunk, wm))
            dead += [d.to_dict() for d in dls]
            evidence += stage.close_until(wm)
        evidence += stage.flush()
        out.append((evidence, dead, stage.counters))
    return out[0], out[1]


@settings(max_examples=60, deadline=None)
@given(EVENTS, st.integers(0, 80), st.floats(995, 1015))
def test_the_first_stage_gives_the_same_evidence_and_samples_from_columns(
        events: list[Event], cut: int, wm: float) -> None:
    # a re-sent copy of some events, and a watermark between the chunks: duplicates and
    # late events take the paths they take in a stream
    chunks = [events[:cut], events[cut:] + events[: cut // 2]]
    by_objects, by_columns = _both(chunks, [wm, wm + 20.0])
    assert by_objects == by_columns


def test_a_huge_batch_keeps_the_same_most_recent_samples_from_columns() -> None:
    events = [make_event(STATIONS[i % 3], "sensor", 1000.0 + i / 1000, "c", float(i))
              for i in range(9000)]
    events += events[-30:]  # re-sent: the same events, not more of them
    a, b = (StationStage(_settings(), StationRegistry([]), TickProcessor()) for _ in range(2))
    a.ingest_events(events, 1000.0)
    b.ingest_columns(EventBatch.from_events(events), 1000.0)
    # what a closing tick quotes (from objects: kept as they come; from columns: picked then)
    everyone = dict.fromkeys(STATIONS)
    kept = {t: a._tick_samples(t, everyone) for t in range(1000, 1010)}
    assert kept == {t: b._tick_samples(t, everyone) for t in range(1000, 1010)}
    assert [t for t, x in kept.items() if x] == [1004, 1005, 1006, 1007, 1008]  # last 4096's
    assert [x.value for x in kept[1008]["news-1"]] == [8985.0, 8988.0, 8991.0, 8994.0, 8997.0]


@given(EVENTS)
def test_event_columns_from_a_batch_equal_those_from_objects(events: list[Event]) -> None:
    station = [STATIONS.index(e.station_id) for e in events]
    a = EventColumns.from_batch(EventBatch.from_events(events), station)
    b = EventColumns.from_events(events, lambda e: STATIONS.index(e.station_id))
    for name in ("station", "time_s", "value", "category_bin", "event_hash", "source_hash"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name


def test_the_pipeline_ingests_columns_as_it_ingests_events() -> None:
    s = _settings()
    fleet = default_fleet(s.stations, s.seed)
    events = [make_event(f.station_id, f.kind, 1000.0 + i / 50, "c", float(i % 7))
              for i, f in enumerate(fleet * 4)]
    a, b = Pipeline(s, StationRegistry(fleet)), Pipeline(s, StationRegistry(fleet))
    a.ingest_events(events, 1030.0)
    b.ingest_columns(EventBatch.from_events(events), 1030.0)
    oa, ob = a.advance(1030.0), b.advance(1030.0)
    assert [o.readings for o in oa] == [o.readings for o in ob] and len(oa) >= 20
    assert a.counters == b.counters


def _replay(s: Settings, t0: float, seconds: float) -> list[tuple[str, bytes]]:
    """The default scenario as Kafka-sized messages (one per station per half second)."""
    sc = default_scenario(s.stations, s.seed, seconds + 40)
    world = SyntheticWorld(sc)
    sources = [SyntheticSource(world, i, t0, s.seed) for i in range(len(sc.fleet))]
    out = []
    for k in range(int(seconds / 0.5)):
        for src in sources:
            recs = src.draw(k * 0.5, (k + 1) * 0.5)
            if recs:
                out.append((src.info.station_id, encode_raw(recs)))
    return out


def _run(s: Settings, messages: list[tuple[str, bytes]], now: float) -> list[Emit]:
    core = WorkerCore(s, directory=StationDirectory(default_fleet(s.stations, s.seed)),
                      run_id="columns")
    emits: list[Emit] = []
    for i, (sid, value) in enumerate(messages):
        emits += core.on_message(value, sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    emits += core.on_stop()
    assert core.pipeline.counters.events > 0
    return emits


def test_a_worker_replay_is_byte_for_byte_the_per_event_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """About 50k events (90 s) of the default scenario through a worker: decoded and ingested in
    columns, and through the per-event decoder and ingest; every message it publishes
    (alerts, reports, responses, dead letters) is the same, byte for byte."""
    s = _settings()
    now = time.time()
    seconds = 90.0
    messages = _replay(s, now - seconds - 5.0, seconds)
    n_events = sum(len(decode_batch(v, now_s=now)[0]) for _, v in messages)
    assert n_events >= 45_000
    by_columns = _run(s, messages, now)

    def per_event_decode(messages: list[bytes], **kw: Any) -> Decoded:
        one = [decode_each(m, **kw) for m in messages]
        return Decoded(EventBatch.from_events([e for good, _ in one for e in good]),
                       [len(good) for good, _ in one], [bad for _, bad in one])

    def per_event_ingest(self: Pipeline, batch: EventBatch, now_s: float) -> Any:
        return self.ingest_events(batch.events(), now_s)

    monkeypatch.setattr(worker_module, "decode_many", per_event_decode)
    monkeypatch.setattr(Pipeline, "ingest_columns", per_event_ingest)
    by_objects = _run(s, messages, now)
    assert any(e.topic == "alerts" for e in by_columns)
    assert [(e.topic, e.key, e.value) for e in by_columns] == \
        [(e.topic, e.key, e.value) for e in by_objects]

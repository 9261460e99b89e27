"""KafkaEventSink, ControlListener and serve_fleet: fakes first, then a real broker (``-m kafka``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from convergence.control import ControlCommand, Target
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.base import Source
from convergence.ground_stations.kafka_fleet import serve_fleet
from convergence.ground_stations.kafka_sink import ControlListener, KafkaEventSink, pick_compression
from convergence.settings import load_settings
from convergence.stations import StationInfo
from convergence.wire import decode_batch

# -- a fake producer: futures resolve on flush(), outcomes follow a plan --------------


class FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list[tuple[Any, tuple[Any, ...]]] = []
        self.errbacks: list[tuple[Any, tuple[Any, ...]]] = []

    def add_callback(self, fn: Any, *args: Any) -> FakeFuture:
        self.callbacks.append((fn, args))
        return self

    def add_errback(self, fn: Any, *args: Any) -> FakeFuture:
        self.errbacks.append((fn, args))
        return self


class FakeProducer:
    """``plan`` yields, per send: None (acked), an exception instance (delivery fails with
    it) or ("raise", exc) (``send`` itself raises). Past the plan everything is acked."""

    def __init__(self, plan: list[Any] | None = None) -> None:
        self.plan = list(plan or [])
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.pending: list[tuple[FakeFuture, Any]] = []
        self.closed = False

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        outcome = self.plan.pop(0) if self.plan else None
        if isinstance(outcome, tuple):
            raise outcome[1]
        self.sent.append((topic, key, value or b""))
        fut = FakeFuture()
        self.pending.append((fut, outcome))
        return fut

    def flush(self, timeout: float | None = None) -> None:
        while self.pending:
            fut, outcome = self.pending.pop(0)
            if outcome is None:
                for fn, args in fut.callbacks:
                    fn(*args, "metadata")
            else:
                for fn, args in fut.errbacks:
                    fn(*args, outcome)

    def close(self, timeout: float | None = None) -> None:
        self.flush()
        self.closed = True


def _sink(plan: list[Any] | None = None, **kw: Any) -> KafkaEventSink:
    kw.setdefault("retry_backoff_s", 0.0)
    return KafkaEventSink("fake:9092", "events", producer=FakeProducer(plan), **kw)


def _records(sid: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"station_id": sid, "source_kind": "sensor", "event_time_s": 1000.0 + i,
             "category": "seismic", "value": float(i), "seq": i} for i in range(start, start + n)]


def test_compression_is_lz4_when_available_else_gzip() -> None:
    from kafka.codec import has_lz4

    assert pick_compression() == ("lz4" if has_lz4() else "gzip")


def test_batches_are_keyed_by_station_and_counted_when_acked() -> None:
    sink = _sink()
    asyncio.run(sink("s1", _records("s1", 3)))
    asyncio.run(sink("s2", _records("s2", 2)))
    asyncio.run(sink("s3", []))  # nothing to send is not a message
    assert sink.pending == 2 and sink.counters.acked == 0
    counters = sink.close()
    assert counters.as_dict() == {"sent": 2, "acked": 2, "failed": 0, "retried": 0,
                                  "overflowed": 0, "records_sent": 5, "records_acked": 5,
                                  "records_failed": 0}
    producer = sink.producer
    assert [(t, k) for t, k, _ in producer.sent] == [("events", b"s1"), ("events", b"s2")]
    good, bad = decode_batch(producer.sent[0][2], now_s=1000.0)
    assert len(good) == 3 and bad == []
    assert producer.closed and sink.pending == 0


def test_a_retriable_failure_is_resent() -> None:
    sink = _sink([KafkaTimeoutError("delivery timed out")])
    sink.send_records("s1", _records("s1", 4))
    counters = sink.close()
    assert (counters.sent, counters.retried, counters.acked, counters.failed) == (1, 1, 1, 0)
    assert counters.records_acked == 4
    assert len(sink.producer.sent) == 2  # the original and the re-send


def test_send_raising_is_handled_like_a_delivery_failure() -> None:
    sink = _sink([("raise", KafkaTimeoutError("buffer full"))])
    sink.send_records("s1", _records("s1", 1))  # must not raise into the station agent
    counters = sink.close()
    assert (counters.retried, counters.acked, counters.failed) == (1, 1, 0)


def test_retries_are_bounded_and_the_give_up_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    lost: list[tuple[str, bytes | None, bytes, BaseException]] = []
    errors = [KafkaTimeoutError("down")] * 3
    sink = _sink(errors, max_retries=2,
                 on_failed=lambda t, k, v, e: lost.append((t, k, v, e)))
    with caplog.at_level(logging.ERROR, logger="convergence.ground_stations.kafka_sink"):
        sink.send_records("s1", _records("s1", 2))
        counters = sink.close()
    assert (counters.retried, counters.acked, counters.failed) == (2, 0, 1)
    assert counters.records_failed == 2
    assert len(lost) == 1 and lost[0][1] == b"s1"
    assert "gave up" in caplog.text and "3 attempt(s)" in caplog.text


def test_a_non_retriable_failure_is_not_resent() -> None:
    sink = _sink([MessageSizeTooLargeError("too big")])
    sink.send_records("s1", _records("s1", 1))
    counters = sink.close()
    assert (counters.retried, counters.failed) == (0, 1)


def test_backoff_delays_resends_until_due() -> None:
    now = [0.0]
    sink = _sink([KafkaTimeoutError("x")], retry_backoff_s=5.0, clock=lambda: now[0])
    sink.send_records("s1", _records("s1", 1))
    sink.flush()
    assert sink.pump_retries() == 0 and sink.pending == 1
    time.sleep(0.6)  # the sender thread looks too, on the same clock: still not due
    assert sink.counters.retried == 0 and sink.pending == 1
    now[0] = 5.0
    sink.flush()  # due now: queued for the re-send (by flush or the thread), sent, acked
    assert sink.counters.retried == 1 and sink.counters.acked == 1
    assert sink.close().acked == 1


def test_a_closed_sink_refuses_to_send() -> None:
    sink = _sink()
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.send_records("s1", _records("s1", 1))


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        _sink(max_retries=-1)


# -- real broker ----------------------------------------------------------------------


@pytest.mark.kafka
def test_sink_on_a_real_broker_keeps_each_station_in_one_partition_in_order(
        kafka_bootstrap: str, read_topic: Callable[..., list[Any]]) -> None:
    from convergence.streams.faust_app import ensure_topics

    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": f"sink{uuid.uuid4().hex[:8]}"},
                      config_path=None)
    ensure_topics(s, ["events"], partitions=3)
    topic = s.topic("events")
    sink = KafkaEventSink(kafka_bootstrap, topic, wait_metadata=True)
    stations = [f"st-{i:02d}" for i in range(20)]

    async def produce() -> None:
        for batch in range(5):
            for sid in stations:
                await sink(sid, _records(sid, 4, start=batch * 4))

    asyncio.run(produce())
    counters = sink.close()
    assert counters.as_dict() == {"sent": 100, "acked": 100, "failed": 0, "retried": 0,
                                  "overflowed": 0, "records_sent": 400, "records_acked": 400,
                                  "records_failed": 0}
    msgs = read_topic(kafka_bootstrap, topic)
    assert len(msgs) == 100
    partitions: dict[str, set[int]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in msgs:
        sid = m.key.decode()
        doc = orjson.loads(m.value)
        assert {e["station_id"] for e in doc["events"]} == {sid}
        partitions[sid].add(m.partition)
        seqs[sid] += [e["seq"] for e in doc["events"]]
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # keys really spread
    assert all(s == list(range(20)) for s in seqs.values())


class Silent(Source):
    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        return []


@pytest.mark.kafka
def test_commands_from_the_control_topic_are_applied_and_acked(
        kafka_bootstrap: str, read_topic: Callable[..., list[Any]]) -> None:
    from convergence.streams.faust_app import ensure_topics

    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": f"c{uuid.uuid4().hex[:8]}"},
                      config_path=None)
    ensure_topics(s, ["events", "control", "acks"])
    invalid: list[str] = []
    infos = [StationInfo("news-eu-000", "osint_news", "eu"),
             StationInfo("sensor-eu-000", "sensor", "eu"),
             StationInfo("sensor-apac-000", "sensor", "apac")]

    async def main() -> tuple[Fleet, int, ControlListener]:
        loop = asyncio.get_running_loop()
        sink = KafkaEventSink(kafka_bootstrap, s.topic("events"), wait_metadata=True)
        fleet = Fleet([StationAgent(i, Silent(), sink, interval_s=0.05) for i in infos])
        listener = ControlListener(kafka_bootstrap, s.topic("control"),
                                   on_invalid=lambda raw, why: invalid.append(why))
        await loop.run_in_executor(None, listener.start, loop)
        stop = asyncio.Event()
        task = asyncio.ensure_future(serve_fleet(fleet, sink, stop, commands=listener.queue,
                                                 acks_topic=s.topic("acks")))
        cmd = ControlCommand.create("set_interval", Target("region", "eu"),
                                    issued_at_s=time.time(), ttl_s=60.0,
                                    params={"interval_s": 2.0}, reason="test")
        sink.publish(s.topic("control"), "garbage", b"{not a command")
        sink.publish(s.topic("control"), cmd.command_id, orjson.dumps(cmd.to_dict()))
        deadline = time.monotonic() + 30.0
        while len(fleet.acks) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        published = await task
        await loop.run_in_executor(None, listener.stop)
        await loop.run_in_executor(None, sink.close)
        return fleet, published, listener

    fleet, published, listener = asyncio.run(main())
    assert published == 2 and {a.station_id for a in fleet.acks} == {"news-eu-000",
                                                                       "sensor-eu-000"}
    assert all(a.applied for a in fleet.acks)
    assert [a.interval_s for a in fleet.agents] == [2.0, 2.0, 0.05]
    assert listener.received == 1 and listener.invalid == 1 and invalid
    acks = read_topic(kafka_bootstrap, s.topic("acks"))
    assert sorted(m.key for m in acks) == [b"news-eu-000", b"sensor-eu-000"]
    assert all(orjson.loads(m.value)["applied"] for m in acks)


# -- never blocking the loop; the buffer bound -----------------------------------------


class BlockingProducer(FakeProducer):
    """``send`` blocks like kafka-python waiting for metadata during a broker restart."""

    def __init__(self, block_s: float) -> None:
        super().__init__()
        self.block_s = block_s

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        time.sleep(self.block_s)
        return super().send(topic, value, key)


def test_sending_never_blocks_the_event_loop_even_when_the_producer_does() -> None:
    sink = KafkaEventSink("fake:9092", "events", producer=BlockingProducer(0.1))

    async def main() -> float:
        started = time.perf_counter()
        for i in range(10):  # 10 x 0.1 s of blocking, if it happened on the loop
            await sink(f"s{i}", _records(f"s{i}", 2))
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.05
    counters = sink.close()
    assert (counters.acked, counters.failed) == (10, 0)
    assert [k for _, k, _ in sink.producer.sent] == [f"s{i}".encode() for i in range(10)]  # in order


def test_the_buffer_is_bounded_and_what_is_beyond_it_is_given_up_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    lost: list[tuple[bytes | None, BaseException]] = []
    sink = _sink(max_buffer_bytes=2000, on_failed=lambda t, k, v, e: lost.append((k, e)))
    size = len(orjson.dumps({"v": 1, "events": _records("s1", 3)}))
    fits = 2000 // size
    with caplog.at_level(logging.ERROR, logger="convergence.ground_stations.kafka_sink"):
        for i in range(fits + 5):  # the fake broker acknowledges nothing until flush()
            sink.send_records(f"s{i}", _records(f"s{i}", 3))
    assert sink.buffered_bytes <= 2000
    assert sink.counters.overflowed == 5 and sink.counters.records_failed == 15
    assert [k for k, _ in lost] == [f"s{i}".encode() for i in range(fits, fits + 5)]
    assert "given up" in caplog.text and "max_buffer_bytes=2000" in caplog.text
    sink.flush()  # the broker caught up: the buffer drains and takes new batches again
    assert sink.buffered_bytes == 0
    sink.send_records("late", _records("late", 3))
    counters = sink.close()
    assert (counters.acked, counters.failed, counters.overflowed) == (fits + 1, 5, 5)


# -- a broker restart: buffered, re-sent, nothing lost --------------------------------


@pytest.mark.kafka
def test_a_broker_stopped_for_10_s_loses_no_station_event(tmp_path: Any) -> None:
    """Stations keep sampling while their broker is down for 10 s; the loop never stalls,
    and afterwards every event produced is on the topic exactly once, in order per station."""
    from convergence.schema import validate_event
    from convergence.streams import kafka_client, kafka_local
    from convergence.streams.topics import ensure_topics

    with kafka_local.start(load_settings(), state_dir=tmp_path / "broker") as broker:
        s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": broker.bootstrap,
                               "CONVERGENCE_TOPIC_PREFIX": "restart"}, config_path=None)
        ensure_topics(s, ["events"], partitions=2)
        topic = s.topic("events")
        sink = KafkaEventSink(broker.bootstrap, topic, wait_metadata=True)
        stations = [f"st-{i:02d}" for i in range(20)]
        produced: dict[str, list[dict[str, Any]]] = defaultdict(list)
        t0 = time.time()

        def batch(sid: str, seq: int) -> list[dict[str, Any]]:
            return [{"station_id": sid, "source_kind": "sensor", "category": "seismic",
                     "event_time_s": t0 + seq * 0.01 + j * 0.001, "value": float(seq * 10 + j)}
                    for j in range(5)]

        async def main() -> tuple[float, dict[str, float]]:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            stall = [0.0]
            marks: dict[str, float] = {}

            async def watch_loop() -> None:
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.02)
                    stall[0] = max(stall[0], time.perf_counter() - before - 0.02)

            async def station(sid: str) -> None:
                seq = 0
                while not stop.is_set():
                    records = batch(sid, seq)
                    produced[sid] += records
                    await sink(sid, records)
                    seq += 1
                    await asyncio.sleep(0.1)

            def outage() -> None:
                time.sleep(3.0)
                marks["down"] = time.monotonic()
                broker.halt()
                time.sleep(10.0)
                marks["restarting"] = time.monotonic()
                broker.relaunch()
                marks["up"] = time.monotonic()
                time.sleep(3.0)

            tasks = [asyncio.ensure_future(station(sid)) for sid in stations]
            watcher = asyncio.ensure_future(watch_loop())
            await loop.run_in_executor(None, outage)
            stop.set()
            await asyncio.gather(*tasks, watcher)
            return stall[0], marks

        stall, marks = asyncio.run(main())
        counters = sink.close(timeout_s=120.0)
        assert marks["restarting"] - marks["down"] >= 10.0
        assert stall < 0.5, f"the event loop stalled {stall:.2f} s while the broker was away"
        assert counters.failed == 0 and counters.acked == counters.sent, counters.as_dict()
        wanted = {validate_event(r, now_s=time.time()).event_id for rs in produced.values() for r in rs}
        on_topic: list[str] = []
        order: dict[str, list[float]] = defaultdict(list)
        for rec in kafka_client.read_topic(broker.bootstrap, topic, timeout_s=60.0):
            for e in orjson.loads(rec.value)["events"]:
                on_topic.append(validate_event(e, now_s=time.time()).event_id)
                order[e["station_id"]].append(e["event_time_s"])
        print(f"\nbroker restart: down {marks['up'] - marks['down']:.1f} s (10 s stopped + "
              f"{marks['up'] - marks['restarting']:.1f} s to start); {len(wanted)} events produced, "
              f"{len(set(on_topic))} on the topic, {len(on_topic) - len(set(on_topic))} twice; "
              f"loop stall at most {stall * 1000:.0f} ms; {counters.retried} re-sends by the sink")
        assert len(wanted) == sum(len(rs) for rs in produced.values()) > 20 * 5 * 100
        assert set(on_topic) == wanted  # 0 lost
        assert len(on_topic) == len(wanted)  # and each once (idempotent producer)
        assert all(ts == sorted(ts) for ts in order.values())  # in order per station

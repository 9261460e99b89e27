"""Messages of a topic handed over a fetch at a time, on a real broker and a real Faust app."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from typing import Any

import pytest

from convergence.streams.faust_batches import _hand, deliver_in_batches


def _fill(bootstrap: str, topics: dict[str, tuple[int, int]]) -> None:
    """Create each topic with its partitions and send it its messages, round robin."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, p, 1) for t, (p, _) in topics.items()])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for t, (parts, n) in topics.items():
        for i in range(n):
            producer.send(t, str(i).encode(), key=b"k", partition=i % parts)
    producer.flush()
    producer.close()


@pytest.mark.kafka
def test_a_topics_messages_come_a_fetch_at_a_time_once_each_in_order_and_commit(
        kafka_bootstrap: str) -> None:
    import faust

    tag = uuid.uuid4().hex[:8]
    batched, other = f"batched-{tag}", f"other-{tag}"
    _fill(kafka_bootstrap, {batched: (2, 3000), other: (1, 50)})
    got: list[tuple[int, int, bytes]] = []
    sizes: list[int] = []
    streamed: list[Any] = []
    others: list[bytes] = []

    async def run() -> bool:
        app = faust.App(f"batches-{tag}", broker=f"kafka://{kafka_bootstrap}",
                        store="memory://", web_enabled=False, datadir=tempfile.mkdtemp(),
                        consumer_auto_offset_reset="earliest", topic_partitions=2)
        raw = {"key_serializer": "raw", "value_serializer": "raw"}

        @app.agent(app.topic(batched, **raw))  # type: ignore[untyped-decorator]
        async def subscriber(stream: Any) -> None:  # subscribes; must receive nothing
            async for event in stream.noack().events():
                streamed.append(event)

        @app.agent(app.topic(other, **raw))  # type: ignore[untyped-decorator]
        async def one_by_one(stream: Any) -> None:
            async for value in stream:
                others.append(value)

        async def handler(events: list[Any]) -> None:
            sizes.append(len(events))
            for e in events:
                got.append((e.message.partition, e.message.offset, e.value))
                e.ack()

        installed = deliver_in_batches(app, {batched: handler})
        await app.start()
        try:
            deadline = time.monotonic() + 90.0
            while (len(got) < 3000 or len(others) < 50) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await app.consumer.commit()
        finally:
            await app.stop()
        return installed

    assert asyncio.run(run())
    from kafka import KafkaAdminClient

    from convergence.simulation.cluster_broker import committed_offsets

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        committed = committed_offsets(admin, f"batches-{tag}", batched)
    finally:
        admin.close()
    assert len(got) == 3000 and len({(p, o) for p, o, _ in got}) == 3000  # each once
    for p in (0, 1):
        offsets = [o for q, o, _ in got if q == p]
        assert offsets == list(range(1500))  # in offset order per partition
    assert {v for _, _, v in got} == {str(i).encode() for i in range(3000)}
    assert max(sizes) > 1 and len(sizes) < 3000  # a fetch at a time, not one by one
    assert streamed == []  # the agent's stream got none of them
    assert sorted(others) == sorted(str(i).encode() for i in range(50))  # other topics as before
    # every handed-over message acknowledged: the group commits to the end
    assert committed == {0: 1500, 1: 1500}


def test_a_consumer_that_is_not_as_expected_is_said_and_left_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    class App:
        consumer = object()  # none of the internals the batched loop needs

    with caplog.at_level(logging.WARNING, logger="convergence.worker"):
        assert deliver_in_batches(App(), {"events": lambda events: asyncio.sleep(0)}) is False
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "one at a time" in said[0] and "faust-streaming" in said[0]


def test_a_handler_that_fails_stops_the_worker_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    # its messages cannot be skipped (not acknowledged: commits would stop at them): the
    # error goes up to Faust's fetcher, which stops the app; a restart reads them again
    async def broken(events: list[Any]) -> None:
        raise ValueError("bad state")

    async def cancelled_alone(events: list[Any]) -> None:
        raise asyncio.CancelledError

    with caplog.at_level(logging.CRITICAL, logger="convergence.worker"):
        with pytest.raises(ValueError):
            asyncio.run(_hand(broken, "events", [1, 2, 3]))
        # a handler cancelled on its own must not end the fetch loop silently
        with pytest.raises(RuntimeError, match="cancelled"):
            asyncio.run(_hand(cancelled_alone, "events", [1]))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "3 message(s) of events failed (ValueError: bad state)" in said[0]
    assert all("nothing is lost" in x for x in said)


def test_a_fetch_loop_being_stopped_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    async def slow(events: list[Any]) -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.ensure_future(_hand(slow, "events", [1]))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.CRITICAL, logger="convergence.worker"):
        asyncio.run(main())
    assert not caplog.records

"""The guarded publisher: a message the broker will never take is counted, logged once
per kind with its size, and dropped; the worker goes on. Anything else is raised.

On a real broker (a topic whose ``max.message.bytes`` is smaller than its messages) it is
tested in ``test_flood.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from convergence.streams.publisher import GuardedPublisher, is_too_large, quiet_faust_send_errors
from convergence.streams.topics import Emit


class MessageSizeTooLargeError(Exception):
    """Named as aiokafka's: what the producer raises for a message over its limit."""


class ProducerSendError(Exception):
    """Named as Faust's wrapper around a producer error."""


def _too_large(size: int) -> ProducerSendError:
    try:
        raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
    except MessageSizeTooLargeError as exc:
        err = ProducerSendError(f"Error while sending: {exc!r}")
        err.__cause__ = exc
        return err


def test_a_message_too_large_at_once_is_counted_logged_once_and_the_rest_goes_out(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[bytes] = []

    async def send(e: Emit) -> None:
        if len(e.value) > 1000:
            raise _too_large(len(e.value))
        sent.append(e.key)

    pub = GuardedPublisher(send)
    emits = [Emit("dead-letter", b"d%d" % i, b"x" * (2000 if i % 2 else 10)) for i in range(6)]
    with caplog.at_level(logging.ERROR, logger="convergence.streams.publisher"):
        asyncio.run(pub.publish(emits))
    assert sent == [b"d0", b"d2", b"d4"]
    assert pub.counters.as_dict() == {"unpublished": 3, "unpublished_bytes": 3 * (2000 + 2)}
    assert pub.summary()["unpublished_by_topic"] == {"dead-letter": {"messages": 3,
                                                                     "bytes": 6006}}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # once per kind, not once per message
    assert "dead-letter message of 2002 bytes" in lines[0] and "goes on" in lines[0]


def test_a_failure_reported_later_on_the_send_future_is_counted_too(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> GuardedPublisher:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []

        async def send(e: Emit) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = loop.create_future()
            futures.append(fut)
            return fut

        pub = GuardedPublisher(send)
        await pub.publish([Emit("readings", b"r", b"y" * 500), Emit("alerts", b"a", b"{}"),
                           Emit("readings", b"r", b"y" * 600)])
        futures[0].set_exception(MessageSizeTooLargeError("broker: over max.message.bytes"))
        futures[1].set_result("ok")
        futures[2].set_exception(MessageSizeTooLargeError("broker: over max.message.bytes"))
        await asyncio.sleep(0)  # done callbacks run on the loop
        return pub

    with caplog.at_level(logging.ERROR, logger="convergence.streams.publisher"):
        pub = asyncio.run(main())
    assert pub.summary()["unpublished_by_topic"] == {"readings": {"messages": 2, "bytes": 1102}}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "readings message of 501 bytes" in line


def test_an_error_a_retry_may_cure_is_raised_so_the_input_is_read_again() -> None:
    async def send(e: Emit) -> None:
        raise TimeoutError("Kafka unreachable")

    pub = GuardedPublisher(send)
    with pytest.raises(TimeoutError):
        asyncio.run(pub.publish([Emit("node-evidence", b"0", b"{}")]))
    assert pub.counters.unpublished == 0


def test_a_kind_is_said_again_after_a_while_with_the_count_since(
        caplog: pytest.LogCaptureFixture) -> None:
    pub = GuardedPublisher(lambda e: asyncio.sleep(0), relog_s=0.0)
    with caplog.at_level(logging.ERROR, logger="convergence.streams.publisher"):
        pub.gave_up("runs", 10, _too_large(10))
        pub._said[("runs", "ProducerSendError")][1] = 4  # four more were only counted
        pub.gave_up("runs", 10, _too_large(10))
    assert "(4 more since the last such line)" in caplog.records[-1].getMessage()


def test_too_large_is_recognised_through_wrappers_only() -> None:
    assert is_too_large(_too_large(5))
    assert not is_too_large(ProducerSendError("Error while sending: KafkaTimeoutError()"))


def test_faust_send_error_lines_are_filtered_once(caplog: pytest.LogCaptureFixture) -> None:
    quiet_faust_send_errors()
    quiet_faust_send_errors()
    logger = logging.getLogger("faust.topics")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="faust.topics"):
        logger.warning("_on_published error for message topic x error y message %s", "z" * 99)
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]

"""Small kafka-python helpers the command line, the stations and the tests share.

Every reader here reads a whole topic without joining a consumer group (a tail, a
``stations list`` or a station's control listener must not steal partitions from
another): :func:`consumer` makes such a consumer, :func:`assign_all` assigns it every
partition of a topic at a chosen start, :func:`read_to_end` reads what was there when
it was called. :func:`unreachable` is the one message a person reads when there is no
broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

BOOTSTRAP_TIMEOUT_MS = 10_000  # a person is waiting: a dead broker should fail in seconds

Start = Literal["end", "beginning"] | int  # an int is a timestamp, unix milliseconds


def unreachable(bootstrap: str, exc: BaseException) -> str:
    """What to tell a person when the broker at ``bootstrap`` cannot be reached.

    >>> print(unreachable("localhost:9092", OSError("refused")))  # doctest: +NORMALIZE_WHITESPACE
    cannot reach Kafka at localhost:9092 (OSError: refused); start a broker
    (`convergence kafka start`) or pass --kafka HOST:PORT
    """
    return (f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}: {exc}); start a broker "
            "(`convergence kafka start`) or pass --kafka HOST:PORT")


def consumer(bootstrap: str, client_id: str, **kw: Any) -> Any:
    """A ``KafkaConsumer`` outside any consumer group, committing nothing; ``kw`` are
    passed on (and may override ``bootstrap_timeout_ms``)."""
    from kafka import KafkaConsumer

    opts: dict[str, Any] = {"group_id": None, "enable_auto_commit": False,
                            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, **kw}
    return KafkaConsumer(bootstrap_servers=bootstrap.split(","), client_id=client_id, **opts)


def assign_all(consumer: Any, topic: str, *, start: Start = "end", wait_s: float = 0.0,
               should_stop: Callable[[], bool] | None = None) -> list[Any]:
    """Assign ``consumer`` every partition of ``topic`` and seek each to ``start``.

    ``start`` is ``"end"`` (only what comes after this call), ``"beginning"``, or a
    timestamp in unix milliseconds (the first message at or after it; the end where
    there is none). Positions are resolved before returning, so "the end" means the
    end *now*. Waits up to ``wait_s`` (``math.inf``: until ``should_stop()``) for the
    topic to exist; returns the assigned partitions, ``[]`` when it does not exist.
    """
    from kafka import TopicPartition

    deadline = time.monotonic() + wait_s
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        if time.monotonic() >= deadline or (should_stop is not None and should_stop()):
            return []
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if start == "end":
        consumer.seek_to_end(*tps)
    elif start == "beginning":
        consumer.seek_to_beginning(*tps)
    else:
        end = consumer.end_offsets(tps)
        found = consumer.offsets_for_times(dict.fromkeys(tps, int(start)))
        for tp in tps:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else end[tp])
    for tp in tps:
        consumer.position(tp)
    return tps


def read_to_end(consumer: Any, tps: list[Any], *, timeout_s: float = 15.0) -> Iterator[Any]:
    """The records of ``tps`` from the consumer's positions up to the end offsets taken
    when this is called (no waiting for silence); stops early after ``timeout_s``."""
    end = consumer.end_offsets(tps)
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            yield from records


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 15.0,
               client_id: str = "convergence-read-topic") -> list[Any]:
    """Every record on ``topic`` now, from the beginning (``[]`` if it does not exist)."""
    c = consumer(bootstrap, client_id)
    try:
        tps = assign_all(c, topic, start="beginning")
        return list(read_to_end(c, tps, timeout_s=timeout_s)) if tps else []
    finally:
        c.close()

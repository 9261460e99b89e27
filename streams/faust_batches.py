"""A topic's messages handed to one handler a fetch at a time, not one by one.

Faust hands every record it fetches through its conductor, a channel queue and the
agent's stream, one record at a time: per record two new tasks (``Service.wait_first``
around the conductor's callback), a lock, a queue, a context variable and four sensor
calls. With a first-stage worker draining a backlog at 10 events per message that was
about a third of its time (``py-spy`` of one worker, see ``docs/bench-cluster.md``),
more than the worker's own decoding, checks and hashing of the events in them.

:func:`deliver_in_batches` replaces the consumer's fetch loop (``_drain_messages``, a
background task of Faust's ``Fetcher``) with the same loop in which the messages of
chosen topics are collected per fetch and handed to their handler together, as Faust
events; every other topic's messages take Faust's own route, message by message, as
before. What a handler receives is what an agent's stream would have yielded: the
messages of the current consumer generation, while flow is active (not during a
rebalance), in offset order per partition, each tracked as unacknowledged and counted by
Faust's sensors; the handler acknowledges them (``event.ack()``) when it has handed on
what they carried, and may hold them as long as it likes (offsets commit up to the
first unacknowledged message). The topic stays subscribed through its agent, so
partition assignment (tables co-partitioned with it) and rebalancing are Faust's.

It relies on Faust's consumer internals (faust-streaming 0.11 to 0.15); when they are
not as expected it says so once and changes nothing, and the agents read message by
message as before.

>>> import faust
>>> app = faust.App("doc-batches", broker="kafka://127.0.0.1:1")
>>> topic = app.topic("doc-events", value_serializer="raw")
>>> async def handler(events): ...
>>> deliver_in_batches(app, {"doc-events": handler})
True
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = ["BatchHandler", "admit", "deliver_in_batches"]

log = logging.getLogger("convergence.worker")

#: receives the admitted events of one fetch of its topic, in offset order per partition
BatchHandler = Callable[[list[Any]], Awaitable[None]]

#: the consumer attributes the batched loop uses (all Faust's, 0.11 to 0.15)
_NEEDED = ("callback", "getmany", "_read_offset", "_commit_every", "_add_gap", "commit",
           "track_message", "suspend_flow", "wait_first", "diag", "_stopped", "sleep",
           "consumer_stopped_errors")


def deliver_in_batches(app: Any, handlers: Mapping[str, BatchHandler]) -> bool:
    """Hand the messages of the topics named in ``handlers`` to their handler a fetch at a
    time (see the module docstring). ``False`` (said once in the log) when Faust's
    consumer is not as expected: nothing was changed then."""
    fetching: Any = None
    try:
        consumer = app.consumer
        missing = [a for a in _NEEDED if not hasattr(consumer, a)]
        from faust.events import Event  # noqa: F401 - needed by admit()
        from faust.transport.consumer import CONSUMER_FETCHING as fetching
    except Exception as exc:  # an import or a property of a changed Faust
        missing, consumer = [f"{type(exc).__name__}: {exc}"], None
    if missing or consumer is None:
        log.warning("worker: Faust's consumer is not as expected (%s missing); its messages "
                    "go to the agents one at a time, which is slower - was faust-streaming "
                    "upgraded? (`pip show faust-streaming`) Report it with the version",
                    ", ".join(missing))
        return False
    table = dict(handlers)

    async def drain(self: Any, fetcher: Any) -> None:
        await _drain(self, fetcher, table, fetching)

    consumer._drain_messages = types.MethodType(drain, consumer)
    return True


async def _drain(consumer: Any, fetcher: Any, handlers: Mapping[str, BatchHandler],
                 fetching_flag: Any) -> None:
    """Faust's ``Consumer._drain_messages`` with the messages of ``handlers``' topics
    collected per fetch and handed over together after it."""
    callback = consumer.callback
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    one_by_one = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(fetching_flag)
            records = consumer.getmany(timeout=1.0)
            # getmany may be called in a loop that never gives the event loop a turn
            await consumer.sleep(0)
            if not consumer.should_stop:
                batches: dict[str, list[Any]] = {}
                async for tp, message in records:
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # read already (Faust drops it too)
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        # offsets with no message (compaction, transaction markers)
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if tp.topic in handlers:
                        batches.setdefault(tp.topic, []).append(message)
                    else:
                        one_by_one += 1
                        if one_by_one > 100:  # as Faust: a turn for others every 100
                            await asyncio.sleep(0)
                            one_by_one = 0
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    read_offset[tp] = offset
                for topic, messages in batches.items():
                    await _hand(handlers[topic], topic, await admit(consumer.app, messages))
            unset_flag(fetching_flag)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(fetching_flag)


async def _hand(handler: BatchHandler, topic: str, events: list[Any]) -> None:
    """``handler(events)``; what it raises stops the worker, said for the person on call.

    The handler runs in the fetch loop: an error there cannot be skipped (its messages
    are not acknowledged, so the partition's offsets would stop committing at them until
    the next rebalance). It goes up to Faust's fetcher, which stops the app: the worker
    exits, its supervisor starts it again, and it reads from the last committed offsets
    (nothing lost; what was published again carries the same ids). A cancellation of
    the handler alone (not of this loop) is such an error too: it must not end the fetch
    loop silently, with the worker up and consuming nothing.
    """
    try:
        await handler(events)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the loop itself is being stopped
        _said_failed(topic, len(events), exc)
        raise RuntimeError(f"handing over {topic} was cancelled") from exc
    except Exception as exc:
        _said_failed(topic, len(events), exc)
        raise


def _said_failed(topic: str, n: int, exc: BaseException) -> None:
    log.critical("worker: handing over %d message(s) of %s failed (%s: %s); stopping this "
                 "worker - its supervisor restarts it and it reads them again from the last "
                 "committed offsets (nothing is lost). If it recurs, report it with the "
                 "worker's log", n, topic, type(exc).__name__, exc)


async def admit(app: Any, messages: Sequence[Any]) -> list[Any]:
    """The events an agent's stream would yield for ``messages`` (what the conductor and
    the stream do per message, once per batch): after waiting for flow to be active
    (a rebalance holds it) and for the producer's buffer to ebb, the messages of the
    current consumer generation, each tracked as unacknowledged and counted by the
    sensors (its ``ack()`` releases it)."""
    from faust.events import Event

    # (Faust's loop also gives up waiting when its flow is suspended; this one need not:
    # flow resumes before recovery needs anything fetched, and admits nothing stale)
    await app.flow_control.acquire()
    await app.producer.buffer.wait_until_ebb()
    if not app.flow_control.is_active():
        return []
    generation = app.consumer_generation_id
    consumer = app.consumer
    inbound = app.monitor.stream_inbound_time
    now = time.monotonic()
    events: list[Any] = []
    for m in messages:
        if m.generation_id != generation:
            continue  # fetched before a rebalance: read again from the committed offset
        if not m.tracked:
            m.tracked = True
            consumer.track_message(m)
        # no ``incref``: its one holder's ``ack()`` releases a message with no references
        # just the same (the conductor counts references for messages several agents share)
        events.append(Event(app, m.key, m.value, m.headers, m))
    for tp in {e.message.tp for e in events}:
        inbound[tp] = now  # the stream-idle check of Faust's consumer reads it
    return events

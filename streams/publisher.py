"""Publishing a worker's messages so that one the broker will never take cannot stop it.

This module owns :class:`GuardedPublisher`: the worker hands it every :class:`Emit`
(dead letters, alerts, reports, node evidence, readings ...) and it sends them through
whatever transport it was given (the Faust topics in a worker; a plain function in
tests). What the broker refuses *for good* - a message over the producer's request
limit (``MessageSizeTooLargeError`` raised at once) or over the topic's
``max.message.bytes`` (the same error, reported later on the send's future) - is:

* **counted** (:attr:`GuardedPublisher.counters`: messages and bytes, and per topic in
  :meth:`GuardedPublisher.summary`, which rides in the worker's run record);
* **logged once per kind** (topic and error), with the message's size; the next ones of
  that kind are only counted, and the first of each kind again after a while says how
  many there were since;
* and the worker **goes on** with the next message.

Every other failure (a broker that cannot be reached, a timeout) is raised as before:
the message was not handed on, so its input is not acknowledged and is read again
(at-least-once), which is how a broker restart loses nothing. Only a message that can
never be published is given up.

Bounded records make this rare (a dead letter carries a 4 KiB excerpt of its input,
see :func:`convergence.schema.dead_letter`); this guard is what keeps the worker up when
a topic's limits are set lower than the records, or a record grows past them anyway.

Examples
--------
>>> import asyncio
>>> from convergence.streams.topics import Emit
>>> sent = []
>>> async def send(e):
...     if len(e.value) > 10:
...         raise RuntimeError("Error while sending: MessageSizeTooLargeError(...)")
...     sent.append(e.key)
>>> pub = GuardedPublisher(send)
>>> asyncio.run(pub.publish([Emit("readings", b"a", b"{}"), Emit("readings", b"b", b"x" * 99),
...                          Emit("readings", b"c", b"{}")]))
>>> sent, pub.counters.as_dict()
([b'a', b'c'], {'unpublished': 1, 'unpublished_bytes': 100})
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from convergence.counters import Counters
from convergence.streams.topics import Emit

__all__ = ["GuardedPublisher", "PublishCounters", "is_too_large", "quiet_faust_send_errors"]

log = logging.getLogger(__name__)

#: a kind already logged is logged again (with the count since) at most this often
RELOG_S = 300.0

#: error names that mean "this message will never be accepted", whatever is retried
_TOO_LARGE = ("MessageSizeTooLarge", "RecordTooLarge", "RecordBatchTooLarge")


@dataclass
class PublishCounters(Counters):
    """Messages given up because the broker would never accept them, and their bytes."""

    unpublished: int = 0
    unpublished_bytes: int = 0


def is_too_large(exc: BaseException) -> bool:
    """Does ``exc`` (or what it wraps) say the message is too large to publish?

    Faust wraps aiokafka's errors (``ProducerSendError("Error while sending:
    MessageSizeTooLargeError(...)")``), so the chain and the text are both looked at.

    >>> is_too_large(RuntimeError("Error while sending: MessageSizeTooLargeError('x')"))
    True
    >>> is_too_large(TimeoutError("no broker"))
    False
    """
    seen: BaseException | None = exc
    for _ in range(5):  # a short cause chain; never loop on a cyclic one
        if seen is None:
            return False
        text = f"{type(seen).__name__} {seen}"
        if any(name in text for name in _TOO_LARGE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class GuardedPublisher:
    """Sends emits one by one through ``send``; gives up (counts, logs once per kind)
    only on messages too large for the broker (see module docstring).

    ``send`` is awaited with each :class:`Emit`; it may return a future (a message
    buffered by the producer) whose later failure is handled the same way.
    """

    def __init__(self, send: Callable[[Emit], Awaitable[Any]], *,
                 relog_s: float = RELOG_S) -> None:
        self.send = send
        self.relog_s = relog_s
        self.counters = PublishCounters()
        #: per topic: [messages, bytes] given up
        self.by_topic: dict[str, list[int]] = {}
        #: per kind (topic, error): when it was last logged, and how many since
        self._said: dict[tuple[str, str], list[float]] = {}

    async def publish(self, emits: Sequence[Emit]) -> None:
        """Send every emit, in order; raise only what may succeed on a retry."""
        for e in emits:
            try:
                sent = await self.send(e)
            except Exception as exc:
                if not is_too_large(exc):
                    raise
                self.gave_up(e.topic, len(e.key) + len(e.value), exc)
                continue
            if isinstance(sent, asyncio.Future):
                sent.add_done_callback(functools.partial(self._done, e.topic,
                                                         len(e.key) + len(e.value)))

    def _done(self, topic: str, size: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()  # read, so it is never reported as an unread error
        if exc is not None:  # the producer retried what was retriable: this is final
            self.gave_up(topic, size, exc)

    def gave_up(self, topic: str, size: int, exc: BaseException) -> None:
        """Count a message that will never be published; log its kind's first one."""
        self.counters.unpublished += 1
        self.counters.unpublished_bytes += size
        t = self.by_topic.setdefault(topic, [0, 0])
        t[0] += 1
        t[1] += size
        kind = (topic, type(exc).__name__)
        now = time.monotonic()
        said = self._said.get(kind)
        if said is None or now - said[0] >= self.relog_s:
            since = "" if said is None else f" ({int(said[1])} more since the last such line)"
            log.error("could not publish a %s message of %d bytes: %s: %.300s; it is dropped "
                      "and the worker goes on (counted as 'unpublished' in its run record)%s",
                      topic, size, type(exc).__name__, exc, since)
            self._said[kind] = [now, 0]
        else:
            said[1] += 1

    def summary(self) -> dict[str, Any]:
        """Counters and the per-topic split (for the worker's run record)."""
        return {**self.counters.as_dict(),
                "unpublished_by_topic": {k: {"messages": v[0], "bytes": v[1]}
                                         for k, v in sorted(self.by_topic.items())}}


class _DropSendErrors(logging.Filter):
    """Faust logs every failed send with the whole message; :class:`GuardedPublisher`
    already counts them and logs each kind once, so those lines are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_on_published error")


_FILTER = _DropSendErrors()


def quiet_faust_send_errors() -> None:
    """Keep Faust's one-line-per-failed-send warnings (each carrying the message) out of
    the log (idempotent)."""
    logger = logging.getLogger("faust.topics")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)

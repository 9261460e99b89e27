"""Readable logs while the broker is away: repeated client messages summarised.

When the broker stops, the Kafka clients (aiokafka in the workers, kafka-python in the
stations and tools) log every failed connect, fetch, heartbeat and metadata request -
dozens of lines a second per worker; a 60 s outage left 15,000 lines in one worker's
log, burying the few that say what happened. :class:`RepeatFilter` lets the first of
each kind of message through, then at most one per ``every_s`` per kind, which carries
how many like it were held back in between::

    ... Unable connect to node with id 1: [Errno 111] Connect call failed (and 212 more
    like it in the last 30 s)

A kind is the logger, the level and the message *template* (its arguments - addresses,
offsets, error texts - vary between repeats). The filter keeps at most ``max_kinds``
kinds (least recently seen forgotten first), so its memory is bounded.

Examples
--------
>>> f = RepeatFilter(every_s=30.0, clock=iter([0.0, 1.0, 2.0, 31.0]).__next__)
>>> rec = lambda: logging.LogRecord("aiokafka", logging.ERROR, "x", 1,
...                                 "Unable connect to node %s", ("1",), None)
>>> [f.filter(r) for r in (rec(), rec(), rec())]
[True, False, False]
>>> last = rec(); f.filter(last), last.getMessage()
(True, 'Unable connect to node 1 (and 2 more like it in the last 30 s)')
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["KAFKA_LOGGERS", "RepeatFilter", "quiet_repeats"]

#: the client libraries whose loggers repeat themselves during an outage
KAFKA_LOGGERS = ("aiokafka", "kafka")


class RepeatFilter(logging.Filter):
    """Pass the first record of each kind, then one per ``every_s`` with a count."""

    def __init__(self, every_s: float = 30.0, *, max_kinds: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not every_s > 0 or max_kinds < 1:
            raise ValueError(f"need every_s > 0 and max_kinds >= 1, got {every_s}, {max_kinds}")
        self.every_s = every_s
        self.max_kinds = max_kinds
        self.clock = clock
        #: kind -> (when one was last let through, how many held back since)
        self._kinds: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = [now, 0]
            if len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
            return True
        self._kinds.move_to_end(kind)
        if now - seen[0] < self.every_s:
            seen[1] += 1
            return False
        held = int(seen[1])
        seen[0], seen[1] = now, 0
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last " \
                         f"{self.every_s:g} s)"
            record.args = None
        return True


def quiet_repeats(prefixes: Iterable[str] = KAFKA_LOGGERS, every_s: float = 30.0) -> RepeatFilter:
    """Attach one :class:`RepeatFilter` to every logger under ``prefixes`` that exists now
    (a filter on a logger sees only that logger's own records, so each gets it). The client
    libraries are imported first, so that the loggers of all their modules exist (the
    worker calls this before Faust imports aiokafka's consumer). Returns the filter."""
    for p in prefixes:
        with contextlib.suppress(ImportError):
            importlib.import_module(p)
    f = RepeatFilter(every_s)
    names = [n for n in list(logging.root.manager.loggerDict)
             if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in {*names, *prefixes}:
        logger = logging.getLogger(name)
        if f not in logger.filters:
            logger.addFilter(f)
    return f

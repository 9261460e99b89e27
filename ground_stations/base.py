"""The one small interface every source implements.

A source is polled with the station's clock and returns raw event records (plain
dicts in the wire schema). It does not retry — the station agent's circuit breaker
does. A source that cannot be read raises :class:`SourceError` with a message naming
what failed. Input it *can* read but must reject (a malformed row, an item with a
wrong type) never raises: it becomes a dead letter, kept until the agent calls
:meth:`Source.drain_rejects` after the poll. The edge of the pipeline validates again.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from convergence.schema import DeadLetter, Limits, ValidationError, dead_letter, validate_event

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source could not be read this time (network, parse, permission...)."""


class Source(ABC):
    """Something a station watches."""

    #: short kind name (``synthetic``, ``csv``, ``rss``, ``json``...)
    kind: str = "source"

    @abstractmethod
    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        """Raw event records seen since the previous poll, at station time ``now_s``."""

    def drain_rejects(self) -> list[DeadLetter]:
        """Dead letters produced since the last call (a source without any returns [])."""
        return []

    def next_due_s(self, now_s: float) -> float | None:
        """When (station clock) this source next has something to hand over, if it can
        tell: a replay file's next row (``math.inf``: never again). ``None``: it cannot
        tell, poll it on the interval (every live source)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release whatever the source holds (sockets, files)."""


class RejectBuffer:
    """Dead letters a source produced, kept until its caller drains them (bounded).

    Parameters
    ----------
    stage
        Stage name written into every dead letter, e.g. ``source.csv``.
    station_id
        The station the source belongs to.
    max_kept
        How many undrained dead letters to keep; later ones are counted in ``dropped``
        (and logged), so a caller that never drains cannot exhaust memory.

    Examples
    --------
    >>> buf = RejectBuffer("source.csv", "s1", max_kept=1)
    >>> buf.add("a,b", "price", "file x.csv line 2: 'b' is not a number", now_s=5.0)
    >>> buf.add("c,d", "price", "file x.csv line 3: 'd' is not a number", now_s=5.0)
    >>> [(d.station_id, d.reason) for d in buf.drain()], buf.dropped, buf.total
    ([('s1', "file x.csv line 2: 'b' is not a number")], 1, 2)
    """

    def __init__(self, stage: str, station_id: str, max_kept: int = 10_000) -> None:
        if max_kept < 1:
            raise ValueError(f"max_kept must be >= 1, got {max_kept}")
        self.stage = stage
        self.station_id = station_id
        self.max_kept = max_kept
        self.items: list[DeadLetter] = []
        self.dropped = 0
        self.total = 0

    def add(self, payload: Any, field: str, reason: str, *, now_s: float) -> None:
        self.total += 1
        if len(self.items) >= self.max_kept:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s station %s: %d dead letter(s) dropped because nobody drained "
                            "the source's rejects; call drain_rejects() after each poll",
                            self.stage, self.station_id, self.dropped)
            return
        dl = dead_letter(self.stage, payload, ValidationError(field, reason), received_at_s=now_s)
        self.items.append(replace(dl, station_id=self.station_id))

    def drain(self) -> list[DeadLetter]:
        out, self.items = self.items, []
        return out


class RejectingSource(Source):
    """A source that keeps its dead letters in a :class:`RejectBuffer` (``self._rejects``)."""

    _rejects: RejectBuffer

    @property
    def rejects(self) -> list[DeadLetter]:
        """Dead letters not yet drained."""
        return self._rejects.items

    @property
    def rejects_dropped(self) -> int:
        return self._rejects.dropped

    def drain_rejects(self) -> list[DeadLetter]:
        """Take the dead letters produced since the last drain."""
        return self._rejects.drain()


def check_record(rec: Mapping[str, Any], *, now_s: float, limits: Limits) -> None:
    """What the edge will check (size, then :func:`validate_event`), so a source can name the line.

    Raises :class:`~convergence.schema.ValidationError`.
    """
    try:
        size = len(orjson.dumps(dict(rec)))
    except TypeError as exc:  # e.g. an integer beyond 64 bits in a text field
        raise ValidationError("event", f"cannot be encoded as JSON ({exc})") from None
    if size > limits.max_event_bytes:
        raise ValidationError("event", f"encodes to more than {limits.max_event_bytes} bytes; "
                                       "shorten its text")
    validate_event(rec, now_s=now_s, limits=limits)

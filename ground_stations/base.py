"""The one small interface every source implements.

A source is polled with the station's clock and returns raw event records (plain
dicts in the wire schema). It does not retry — the station agent's circuit breaker
does. A source that cannot be read raises :class:`SourceError` with a message naming
what failed. Input it *can* read but must reject (a malformed row, an item with a
wrong type) never raises: it becomes a dead letter, kept until the agent calls
:meth:`Source.drain_rejects` after the poll. The edge of the pipeline validates again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from convergence.schema import DeadLetter


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

    async def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release whatever the source holds (sockets, files)."""

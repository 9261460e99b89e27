"""A tiny circuit breaker: stop hammering a dependency that keeps failing.

The breaker is a pure state machine. It never sleeps and never calls the
dependency itself; the caller asks :meth:`CircuitBreaker.allow` before an
attempt and reports the outcome with :meth:`CircuitBreaker.record_success` or
:meth:`CircuitBreaker.record_failure`. Time comes from an injectable
``now`` callable so tests drive it with a fake clock instead of sleeping.

States::

    closed  --K consecutive failures-->  open
    open    --cool-down elapsed------->  half_open (one probe allowed)
    half_open --probe succeeds-------->  closed
    half_open --probe fails----------->  open (cool-down starts again)

With ``backoff_max_s`` the cool-down grows: each opening waits
``min(backoff_max_s, reset_timeout_s * 2**(n-1))`` for ``n`` consecutive failures,
times a jitter factor in [0.5, 1.5) drawn from ``rng`` (so many breakers opened by one
outage do not all probe at once).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

__all__ = ["BreakerState", "CircuitBreaker"]

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """Where the breaker is. The string values are what ``stats()`` reports."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed / open / half-open breaker with an injectable clock.

    Args:
        failure_threshold: consecutive failures that open the breaker (K >= 1).
        reset_timeout_s: cool-down after opening before one probe is let through.
        now: monotonic clock in seconds; inject a fake one in tests.
        name: shows up in log lines so on-call can tell breakers apart.
        backoff_max_s: when given, the cool-down grows exponentially with the
            consecutive failures up to this (see module docstring).
        rng: jitter source for the growing cool-down (seed it for reproducible runs).

    Example (a fake clock, so nothing sleeps):

    >>> clock = [0.0]
    >>> b = CircuitBreaker(failure_threshold=2, reset_timeout_s=10.0, now=lambda: clock[0])
    >>> b.allow(), b.state.value
    (True, 'closed')
    >>> b.record_failure(); b.record_failure()
    >>> b.state.value, b.allow(), b.retry_after()
    ('open', False, 10.0)
    >>> clock[0] = 10.0
    >>> b.state.value, b.allow(), b.allow()  # exactly one probe in half-open
    ('half_open', True, False)
    >>> b.record_success()
    >>> b.state.value, b.consecutive_failures
    ('closed', 0)
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        *,
        now: Callable[[], float] = time.monotonic,
        name: str = "breaker",
        backoff_max_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(
                f"circuit breaker {name!r}: failure_threshold must be >= 1, got {failure_threshold}"
            )
        if reset_timeout_s < 0:
            raise ValueError(
                f"circuit breaker {name!r}: reset_timeout_s must be >= 0, got {reset_timeout_s}"
            )
        if backoff_max_s is not None and backoff_max_s < reset_timeout_s:
            raise ValueError(
                f"circuit breaker {name!r}: backoff_max_s must be >= reset_timeout_s, "
                f"got {backoff_max_s} < {reset_timeout_s}"
            )
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = float(reset_timeout_s)
        self.backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._cooldown_s = self.reset_timeout_s  # of the current opening
        self.name = name
        self._now = now
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        # When the half-open probe was handed out; None = no probe in flight.
        self._probe_started: float | None = None
        self._times_opened = 0

    # -- queries --------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker whose cool-down has elapsed reads half-open."""
        cooled = self._now() >= self._opened_at + self._cooldown()
        if self._state is BreakerState.OPEN and cooled:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an attempt may be allowed (0.0 when one may be tried now)."""
        state = self.state
        if state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._cooldown() - self._now())
        if state is BreakerState.HALF_OPEN and self._probe_in_flight():
            assert self._probe_started is not None
            return max(0.0, self._probe_started + self._cooldown() - self._now())
        return 0.0

    def stats(self) -> dict[str, Any]:
        """JSON-able snapshot for health endpoints and logs."""
        return {
            "state": self.state.value,
            "consecutive_failures": self._failures,
            "times_opened": self._times_opened,
            "retry_after_s": round(self.retry_after(), 3),
        }

    # -- the protocol -----------------------------------------------------
    def allow(self) -> bool:
        """May the caller attempt a call now? In half-open this hands out the one probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        # Half-open: a single probe at a time, so a struggling dependency sees one
        # request rather than the whole backlog. The probe's lease expires after
        # another cool-down so a caller that never reports cannot wedge the breaker.
        if self._probe_in_flight():
            return False
        self._probe_started = self._now()
        return True

    def record_success(self) -> None:
        """The attempt worked: close the breaker and forget past failures."""
        self._failures = 0
        self._probe_started = None
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The attempt failed: count it, and open the breaker when warranted."""
        self._failures += 1
        self._probe_started = None
        state = self.state
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()
        elif state is BreakerState.OPEN:
            # A failure reported while open (a call that started before opening)
            # restarts the cool-down: the dependency is evidently still unhealthy.
            self._opened_at = self._now()

    # -- internals --------------------------------------------------------
    def _cooldown(self) -> float:
        return self.reset_timeout_s if self.backoff_max_s is None else self._cooldown_s

    def _probe_in_flight(self) -> bool:
        return (
            self._probe_started is not None
            and self._now() < self._probe_started + self._cooldown()
        )

    def _open(self) -> None:
        if self.backoff_max_s is not None:
            grown = self.reset_timeout_s * 2 ** max(0, self._failures - 1)
            self._cooldown_s = min(self.backoff_max_s, grown) * (0.5 + self._rng.random())
        self._opened_at = self._now()
        self._times_opened += 1
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.HALF_OPEN:
            self._probe_started = None
        if old is not new:
            level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
            log.log(
                level,
                "circuit breaker %s: %s -> %s after %d consecutive failure(s)",
                self.name,
                old.value,
                new.value,
                self._failures,
            )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state.value}, "
            f"failures={self._failures}/{self.failure_threshold})"
        )

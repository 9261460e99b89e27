"""CircuitBreaker state machine, driven by a fake clock (nothing sleeps)."""

from __future__ import annotations

import pytest

from convergence.breaker import BreakerState, CircuitBreaker


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def state(b: CircuitBreaker) -> str:
    # A function call, so mypy does not carry narrowing of `b.state` across calls.
    return b.state.value


def make(threshold: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(failure_threshold=threshold, reset_timeout_s=reset, now=clock), clock


def test_starts_closed_and_allows() -> None:
    b, _ = make()
    assert b.state is BreakerState.CLOSED
    assert state(b) == "closed"
    assert b.allow()
    assert b.retry_after() == 0.0


def test_opens_after_k_consecutive_failures() -> None:
    b, _ = make(threshold=3)
    b.record_failure()
    b.record_failure()
    assert state(b) == "closed" and b.allow()
    b.record_failure()
    assert state(b) == "open"
    assert not b.allow()
    assert b.retry_after() == pytest.approx(10.0)


def test_success_resets_the_consecutive_count() -> None:
    b, _ = make(threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()
    assert b.consecutive_failures == 0
    b.record_failure()
    b.record_failure()
    assert state(b) == "closed"


def test_half_open_after_cool_down_allows_exactly_one_probe() -> None:
    b, clock = make(threshold=1, reset=10.0)
    b.record_failure()
    clock.advance(9.999)
    assert state(b) == "open" and not b.allow()
    assert b.retry_after() == pytest.approx(0.001)
    clock.advance(0.001)
    assert state(b) == "half_open"
    assert b.allow()  # the probe
    assert not b.allow()  # nobody else while it is in flight


def test_probe_success_closes() -> None:
    b, clock = make(threshold=1)
    b.record_failure()
    clock.advance(10)
    assert b.allow()
    b.record_success()
    assert state(b) == "closed"
    assert b.allow() and b.allow()


def test_probe_failure_reopens_and_restarts_cool_down() -> None:
    b, clock = make(threshold=2, reset=10.0)
    b.record_failure()
    b.record_failure()
    clock.advance(10)
    assert b.allow()
    b.record_failure()  # one failure in half-open is enough to reopen
    assert state(b) == "open"
    assert b.retry_after() == pytest.approx(10.0)
    clock.advance(5)
    assert not b.allow()
    clock.advance(5)
    assert state(b) == "half_open"
    assert b.stats()["times_opened"] == 2


def test_probe_lease_expires_if_caller_never_reports() -> None:
    b, clock = make(threshold=1, reset=10.0)
    b.record_failure()
    clock.advance(10)
    assert b.allow()
    clock.advance(5)
    assert not b.allow()
    assert b.retry_after() == pytest.approx(5.0)
    clock.advance(5)
    assert b.allow()  # the forgotten probe no longer blocks the breaker


def test_failure_while_open_extends_cool_down() -> None:
    b, clock = make(threshold=1, reset=10.0)
    b.record_failure()
    clock.advance(8)
    b.record_failure()  # a straggler call that started before the breaker opened
    assert b.retry_after() == pytest.approx(10.0)


def test_stats_are_json_friendly() -> None:
    b, _ = make(threshold=1)
    b.record_failure()
    assert b.stats() == {
        "state": "open",
        "consecutive_failures": 1,
        "times_opened": 1,
        "retry_after_s": 10.0,
    }
    assert "open" in repr(b)


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, -1.0)])
def test_rejects_nonsense_configuration(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="circuit breaker"):
        CircuitBreaker(failure_threshold=threshold, reset_timeout_s=reset)


def test_docstring_example_runs() -> None:
    import doctest

    from convergence import breaker

    result = doctest.testmod(breaker)
    assert result.attempted > 0 and result.failed == 0

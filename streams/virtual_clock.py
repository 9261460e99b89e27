"""A simulated clock for the embedded runtime: run as fast as possible, in event time.

``convergence run --as-fast-as-possible`` runs the very same runtime — station agents,
sources, the runner, the store writer — on an asyncio event loop whose clock is
*virtual*: when nothing is ready to run, the loop does not sleep until the next timer,
it jumps its clock there. A minute of station polling takes as long as the work does,
and because nothing depends on how fast the machine is, the same seed gives the same
events, alerts and report ids every time.

:func:`settled` waits until every task due at the current simulated instant has run (a
backtest's runner uses it to take what all the stations handed over at once).

Work handed to threads (the database engine) is waited for for real, but never holds
the clock back: the stream's results do not depend on when a write completes. Sources
that wait on the network are not deterministic and cannot run on this clock (the CLI
refuses them).

Examples
--------
>>> async def demo() -> list[float]:
...     loop = asyncio.get_running_loop()
...     await asyncio.sleep(3600.0)          # an hour, instantly
...     return [loop.time(), simulated_unix_time()]
>>> run_virtual(demo, start_s=1_000.0)
[3600.0, 4600.0]
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SimulatedClock", "VirtualClockLoop", "run_virtual", "settled", "simulated_unix_time"]

#: timers this close to the clock count as "now" for :func:`settled` (tasks that meant to
#: wake at the same simulated instant compute it with a little rounding each)
SAME_INSTANT_S = 1e-3


def simulated_unix_time() -> float:
    """The running virtual loop's simulated unix time (``RuntimeError`` outside one)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualClockLoop):
        raise RuntimeError("not on a simulated clock")
    return loop.unix_time()


class SimulatedClock:
    """A clock to hand a runtime built before its simulated loop runs: the loop's
    simulated unix time once it runs, ``start_s`` before (e.g. for a run id).

    >>> clock = SimulatedClock(1_000.0)
    >>> async def later() -> float:
    ...     await asyncio.sleep(60.0)
    ...     return clock()
    >>> clock(), run_virtual(later, start_s=1_000.0)
    (1000.0, 1060.0)
    """

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s

    def __call__(self) -> float:
        try:
            return simulated_unix_time()
        except RuntimeError:
            return self.start_s


async def settled() -> None:
    """On a simulated clock: return once every task has run as far as it can at this
    simulated instant (the clock is about to move on, or nothing is scheduled), so what
    all the stations due now hand over is taken in one go. Elsewhere: one pass of the loop.

    >>> async def demo() -> list[str]:
    ...     seen: list[str] = []
    ...     async def station(name: str) -> None:
    ...         await asyncio.sleep(60.0 + 1e-7)   # "60 s", give or take a rounding error
    ...         seen.append(name)
    ...     tasks = [asyncio.create_task(station(n)) for n in ("a", "b")]
    ...     await asyncio.sleep(60.0)      # wakes a hair before the stations...
    ...     await settled()                # ...and waits for both of them
    ...     return seen
    >>> run_virtual(demo, start_s=0.0)
    ['a', 'b']
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualClockLoop):
        await asyncio.sleep(0)
        return
    fut = loop.create_future()
    loop.settle_waiters.append(fut)
    await fut


T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that never sleeps out a timer: it moves the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled: wait for real I/O (a thread's answer)
            if self.loop is not None and self.loop.settle_waiters:
                ready = super().select(0)
                if not ready:
                    self.loop.wake_settled()
                return ready
            return super().select(None)
        if self.loop is not None and self.loop.external > 0:
            # real work in flight elsewhere (the database): wait for it, in real time
            return super().select(min(timeout, 0.05) if timeout > 0 else 0.0005)
        ready = super().select(0)
        loop = self.loop
        if ready or loop is None:
            return ready
        if loop.settle_waiters and timeout > SAME_INSTANT_S:
            loop.wake_settled()  # nothing more happens at this instant: say so first
            return ready
        if timeout > 0:
            loop.advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual: ``time()`` counts seconds from 0 (small
    numbers, as the loop's timer arithmetic needs: at unix magnitudes its clock
    resolution would vanish in rounding), :meth:`unix_time` is ``start_s`` plus that."""

    def __init__(self, start_s: float) -> None:
        sel = _JumpingSelector()
        super().__init__(sel)
        sel.loop = self
        self.start_s = float(start_s)
        self._now = 0.0
        #: awaits of real work outside the loop in flight (:func:`convergence.clock.external_work`)
        self.external = 0
        #: tasks waiting in :func:`settled`
        self.settle_waiters: list[asyncio.Future[None]] = []

    def external_begin(self) -> None:
        self.external += 1

    def external_end(self) -> None:
        self.external -= 1

    def time(self) -> float:
        return self._now

    def unix_time(self) -> float:
        """The simulated wall clock (unix seconds)."""
        return self.start_s + self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def wake_settled(self) -> None:
        """Resolve every :func:`settled` waiter: nothing more is due at this instant."""
        waiters, self.settle_waiters = self.settle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


def run_virtual(main: Callable[[], Awaitable[T]], *, start_s: float,
                debug: bool | None = None) -> T:
    """``asyncio.run(main())`` on a :class:`VirtualClockLoop` starting at ``start_s``."""

    def factory() -> Any:
        return VirtualClockLoop(start_s)

    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        return runner.run(main())  # type: ignore[arg-type]

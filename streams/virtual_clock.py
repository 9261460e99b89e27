"""A simulated clock for the embedded runtime: run as fast as possible, in event time.

``convergence run --as-fast-as-possible`` runs the very same runtime — station agents,
sources, the runner, the store writer — on an asyncio event loop whose clock is
*virtual*: when nothing is ready to run, the loop does not sleep until the next timer,
it jumps its clock there. A minute of station polling takes as long as the work does,
and because nothing depends on how fast the machine is, the same seed gives the same
events, alerts and report ids every time.

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

__all__ = ["VirtualClockLoop", "run_virtual", "simulated_unix_time"]


def simulated_unix_time() -> float:
    """The running virtual loop's simulated unix time (``RuntimeError`` outside one)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualClockLoop):
        raise RuntimeError("not on a simulated clock")
    return loop.unix_time()

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that never sleeps out a timer: it moves the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled: wait for real I/O (a thread's answer)
            return super().select(None)
        if self.loop is not None and self.loop.external > 0:
            # real work in flight elsewhere (the database): wait for it, in real time
            return super().select(min(timeout, 0.05) if timeout > 0 else 0.0005)
        ready = super().select(0)
        if not ready and timeout > 0 and self.loop is not None:
            self.loop.advance(timeout)
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


def run_virtual(main: Callable[[], Awaitable[T]], *, start_s: float,
                debug: bool | None = None) -> T:
    """``asyncio.run(main())`` on a :class:`VirtualClockLoop` starting at ``start_s``."""

    def factory() -> Any:
        return VirtualClockLoop(start_s)

    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        return runner.run(main())  # type: ignore[arg-type]

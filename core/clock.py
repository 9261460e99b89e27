"""Marking work that happens outside the event loop's clock.

A simulated clock (:mod:`convergence.streams.virtual_clock`) jumps to the next timer as
soon as nothing is ready to run. That is right for everything the stream does itself,
and wrong while the loop waits for *real* work elsewhere — a database engine answering
from its own threads: a timeout guarding it would fire before the answer could arrive.
Code that awaits such work wraps it in :func:`external_work`; on a simulated clock the
loop then waits for real until it is done, and on an ordinary loop this costs nothing.

>>> import asyncio
>>> async def demo() -> str:
...     with external_work():
...         await asyncio.sleep(0)
...     return "done"
>>> asyncio.run(demo())
'done'
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["external_work"]


@contextlib.contextmanager
def external_work() -> Iterator[None]:
    """While inside, a simulated clock does not jump past the work (see the module docstring)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        yield
        return
    begin = getattr(loop, "external_begin", None)
    end = getattr(loop, "external_end", None)
    if begin is None or end is None:
        yield
        return
    begin()
    try:
        yield
    finally:
        end()

"""Batched, retrying, never-silently-dropping writes in front of a store.

Producers (detectors, the alert router, the run recorder) must not block on the
database or lose records when it hiccups. :class:`BatchedWriter` gives them a
non-blocking :meth:`~BatchedWriter.submit`; a background task groups pending
records into batches and calls the store's ``upsert_many``.

Failure handling, in order:

* a failed batch stays pending and is retried with exponential backoff plus
  seeded jitter (so a fleet of writers does not retry in lock-step, and a test
  run is reproducible);
* after K consecutive failures a :class:`~convergence.breaker.CircuitBreaker`
  opens: no write is attempted until a cool-down passes, then a single probe
  batch decides whether to resume;
* nothing is dropped while that happens: records wait in a bounded queue, and
  when the bound is reached :meth:`~BatchedWriter.submit` raises
  :class:`StoreBackpressure` so the producer knows, instead of losing data quietly.

Writes are idempotent upserts on deterministic ids, so resubmitting a record, or
retrying a batch that half-succeeded, is harmless. Resubmitting a record that is
still pending just replaces the pending document (last write wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from convergence.breaker import CircuitBreaker
from convergence.store.surreal import StoreError

__all__ = ["BatchedWriter", "StoreBackpressure", "SupportsUpsertMany"]

log = logging.getLogger(__name__)

_Key = tuple[str, str]


class SupportsUpsertMany(Protocol):
    """Anything with an idempotent ``upsert_many`` coroutine, e.g. SurrealStore."""

    def upsert_many(
        self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> Awaitable[object]: ...


class StoreBackpressure(StoreError):
    """The write queue is full because the store is not keeping up (or is down).

    The record passed to :meth:`BatchedWriter.submit` was *not* queued. Slow the
    producer down, fail the unit of work upstream, or retry the submit later.
    """


class BatchedWriter:
    """Non-blocking, batched, retrying writer in front of ``store.upsert_many``.

    Args:
        store: the target; anything with ``async upsert_many(table, items)``. If it
            also has ``validate(table, id, doc)`` (SurrealStore does), records are
            checked at :meth:`submit` time so a bad one never enters the queue.
        batch_size: most records per ``upsert_many`` call; a full batch is written
            at once, a partial one after ``flush_interval_s``.
        flush_interval_s: longest a record waits before its batch is written.
        max_pending: bound on queued records; beyond it :meth:`submit` raises
            :class:`StoreBackpressure`.
        retry_base_s / retry_max_s: backoff after the n-th consecutive failure is
            about ``min(retry_max_s, retry_base_s * 2**(n-1))``, jittered to 50-100%.
        breaker: circuit breaker to use (default: opens after 5 consecutive
            failures, probes after 5 s).
        seed: seed of the jitter's ``random.Random`` (reproducible runs).
        name: label for logs and errors; defaults to the store's URL.
        close_timeout_s: how long :meth:`close` waits for a dead store by default
            (``None``: until everything is written - nothing is ever dropped).
        on_written: called as ``on_written(table, id, doc)`` once the store has
            confirmed a record (e.g. to tell a person an alert is stored, not just
            queued). It runs in the flush loop: keep it quick; an exception in it is
            logged and does not stop the writer.

    A record submitted to an idle writer is written within ``flush_interval_s``
    (sooner once ``batch_size`` records wait, or at once with ``urgent=True``);
    nothing waits for :meth:`close` to be written.

    Example::

        async with SurrealStore("mem://", "convergence", "main") as store:
            writer = BatchedWriter(store, batch_size=100, flush_interval_s=0.2)
            writer.submit("alert", "a-1", {"score": 0.9})
            await writer.close()  # flushes, then stops the background task
    """

    def __init__(
        self,
        store: SupportsUpsertMany,
        *,
        batch_size: int = 200,
        flush_interval_s: float = 0.5,
        max_pending: int = 10_000,
        retry_base_s: float = 0.1,
        retry_max_s: float = 10.0,
        breaker: CircuitBreaker | None = None,
        seed: int = 0,
        name: str | None = None,
        close_timeout_s: float | None = None,
        on_written: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"BatchedWriter: batch_size must be >= 1, got {batch_size}")
        if max_pending < batch_size:
            raise ValueError(
                f"BatchedWriter: max_pending ({max_pending}) must be >= batch_size ({batch_size})"
            )
        if flush_interval_s <= 0 or retry_base_s < 0 or retry_max_s < retry_base_s:
            raise ValueError(
                "BatchedWriter: need flush_interval_s > 0 and 0 <= retry_base_s <= retry_max_s"
            )
        self._store = store
        self.name = name or str(getattr(store, "url", type(store).__name__))
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=5, reset_timeout_s=5.0, name=f"store-writer {self.name}"
        )
        self._rng = random.Random(seed)
        validate = getattr(store, "validate", None)
        self._validate: Callable[[str, str, Mapping[str, Any]], object] | None = (
            validate if callable(validate) else None
        )

        # Pending records in submission order, keyed by (table, id). A record leaves
        # only after the store confirmed it, so a failed batch needs no re-queueing
        # and a newer submit of the same key simply replaces the document.
        self._pending: OrderedDict[_Key, dict[str, Any]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._closing = False
        self._closed = False
        self._attempt = 0  # consecutive failures, drives the backoff
        self._urgent = False  # an urgent record waits: skip the partial-batch pause

        self._written = 0
        self._retries = 0
        self._failures = 0
        self._batches = 0
        self._last_error: str | None = None
        self.on_written = on_written

    # -- producer side --------------------------------------------------------
    def submit(self, table: str, record_id: str, doc: Mapping[str, Any], *,
               urgent: bool = False, after_pending: bool = False) -> None:
        """Queue one record for writing and return immediately.

        It is written within ``flush_interval_s``; ``urgent`` starts a write now
        (with everything queued before it, oldest first). A record resubmitted while
        still pending keeps its place in the queue (last write wins) unless
        ``after_pending``: then it moves behind everything submitted before it, so it is
        never written ahead of them (the integrity chain's head uses this, so a crash never
        leaves a head naming revisions that were not written).

        Raises:
            ValueError: the store rejects this record outright (bad table/id/doc).
            StoreBackpressure: ``max_pending`` records are already waiting.
            StoreError: the writer is closed.
        """
        if self._closing:
            raise StoreError(
                f"store writer for {self.name} is closed; record {table}:{record_id} was not "
                "queued (submit before close(), or create a new writer)"
            )
        if self._validate is not None:
            self._validate(table, record_id, doc)
        key = (table, record_id)
        if key not in self._pending and len(self._pending) >= self.max_pending:
            raise StoreBackpressure(
                f"store writer for {self.name} has {len(self._pending)} records waiting "
                f"(limit {self.max_pending}); record {table}:{record_id} was NOT queued. "
                f"The database is not accepting writes fast enough (breaker "
                f"{self.breaker.state.value}, last error: {self._last_error or 'none'}). "
                "Check the database is up and the disk is not full; slow the producer or "
                "retry this record later."
            )
        was_idle = not self._pending
        # Copy: the producer may keep mutating its dict after submit.
        self._pending[key] = dict(doc)
        if after_pending:
            self._pending.move_to_end(key)
        self._ensure_started()
        if self._drained is not None:
            self._drained.clear()
        # An idle loop waits for a wake-up with no deadline: without this one a partial
        # batch would sit in memory until close() (and die with the process).
        if self._wake is not None and (was_idle or urgent or len(self._pending) >= self.batch_size):
            if urgent:
                self._urgent = True
            self._wake.set()

    def submit_many(self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """:meth:`submit` each item; stops at the first error (earlier items stay queued)."""
        for record_id, doc in items:
            self.submit(table, record_id, doc)

    # -- lifecycle ------------------------------------------------------------
    def _ensure_started(self) -> None:
        """Start the flush task if we are inside a running event loop."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: records wait; flush()/close() start the task
        if self._task is not None and self._task.done():
            # The loop died of a bug; surface it in logs, then start a fresh one so
            # queued records still get written.
            self._log_task_death(self._task)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        if not self._pending:
            self._drained.set()
        self._task = loop.create_task(self._run(), name=f"store-writer {self.name}")

    def _log_task_death(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("store writer %s: flush loop crashed: %r; restarting it", self.name, exc)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted so far is written.

        With ``timeout`` (seconds), give up waiting after that long and raise
        :class:`StoreError`; the records stay queued and keep being retried.
        """
        if not self._pending:
            return
        self._ensure_started()
        assert self._task is not None and self._wake is not None and self._drained is not None
        self._wake.set()
        waiter = asyncio.ensure_future(self._drained.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if waiter in done or not self._pending:
            return
        if self._task in done:
            exc = None if self._task.cancelled() else self._task.exception()
            raise StoreError(
                f"store writer for {self.name}: flush loop stopped ({exc!r}) with "
                f"{len(self._pending)} records unwritten; this is a bug, see the log"
            ) from exc
        raise StoreError(
            f"store writer for {self.name}: {len(self._pending)} records still unwritten after "
            f"{timeout}s (breaker {self.breaker.state.value}, last error: "
            f"{self._last_error or 'none'}); they remain queued and are being retried. "
            "Check the database is reachable."
        )

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting records, write everything pending, stop the task.

        ``timeout`` defaults to the ``close_timeout_s`` given to the constructor
        (``None`` = wait as long as it takes). If records are still unwritten when
        it expires, the task is stopped and :class:`StoreError` says how many;
        :meth:`unwritten` then returns them for replay or dead-lettering.
        """
        if self._closed:
            return
        self._closing = True
        failure: StoreError | None = None
        try:
            await self.flush(self.close_timeout_s if timeout is None else timeout)
        except StoreError as exc:
            failure = exc
        finally:
            self._closed = True
            await self._stop_task()
        if self._pending:
            log.error(
                "store writer %s closed with %d records unwritten", self.name, len(self._pending)
            )
            raise StoreError(
                f"store writer for {self.name} closed with {len(self._pending)} records NOT "
                f"written (breaker {self.breaker.state.value}, last error: "
                f"{self._last_error or 'none'}); get them with writer.unwritten() and replay "
                "them once the database is back"
            ) from failure

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if not self._pending and self._wake is not None:
            # Idle loop: wake it so it sees _closing and returns by itself.
            self._wake.set()
            await asyncio.wait({task}, timeout=1.0)
        if not task.done():
            # Still retrying a dead store (or stuck in a write): stop it.
            task.cancel()
            await asyncio.wait({task})

    def unwritten(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Copies of the records not yet confirmed written, oldest first, as (table, id, doc)."""
        return [(table, rid, dict(doc)) for (table, rid), doc in self._pending.items()]

    async def __aenter__(self) -> BatchedWriter:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observability ----------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records submitted but not yet confirmed written."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters for health checks: written, retries, failures, pending, breaker, ..."""
        return {
            "written": self._written,
            "retries": self._retries,
            "failures": self._failures,
            "pending": len(self._pending),
            "batches": self._batches,
            "breaker": self.breaker.state.value,
            "last_error": self._last_error,
        }

    # -- the flush loop -----------------------------------------------------------
    async def _wait_wake(self, timeout: float | None) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _run(self) -> None:
        assert self._drained is not None
        while True:
            if not self._pending:
                self._drained.set()
                if self._closing:
                    return
                await self._wait_wake(None)
                continue
            if len(self._pending) < self.batch_size and not self._closing and not self._urgent:
                # Let a partial batch fill up for a moment; flush()/a full batch wakes us.
                await self._wait_wake(self.flush_interval_s)
            self._urgent = False
            if not self.breaker.allow():
                # Breaker open: touch nothing, keep everything, wait out the cool-down.
                # Re-check at least every flush interval: allow() is cheap, and the
                # breaker's clock may be injected (tests) rather than wall time.
                wait = min(max(self.breaker.retry_after(), 0.001), self.flush_interval_s)
                await asyncio.sleep(wait)
                continue
            if self._attempt > 0:
                self._retries += 1  # this attempt re-tries records that failed before
            if await self._write_batch():
                self._attempt = 0
            else:
                self._attempt += 1
                await asyncio.sleep(self._backoff(self._attempt))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        delay = min(self.retry_max_s, self.retry_base_s * 2.0 ** (attempt - 1))
        return delay / 2 + self._rng.uniform(0, delay / 2)

    async def _write_batch(self) -> bool:
        """Write the oldest ``batch_size`` records; True if all of them landed."""
        batch = list(self._pending.items())[: self.batch_size]
        by_table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for (table, record_id), doc in batch:
            by_table.setdefault(table, []).append((record_id, doc))
        for table, items in by_table.items():
            try:
                await self._store.upsert_many(table, items)
            except Exception as exc:  # any failure is retried; nothing is dropped
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self.breaker.record_failure()
                log.warning(
                    "store writer %s: writing %d record(s) to %r failed (attempt %d, "
                    "%d pending, breaker %s): %s",
                    self.name,
                    len(items),
                    table,
                    self._attempt + 1,
                    len(self._pending),
                    self.breaker.state.value,
                    self._last_error,
                )
                return False
            self.breaker.record_success()
            self._batches += 1
            self._written += len(items)
            for record_id, doc in items:
                key = (table, record_id)
                # Only forget the record if nobody resubmitted it meanwhile;
                # a newer document must still be written.
                if self._pending.get(key) is doc:
                    del self._pending[key]
                if self.on_written is not None:
                    self._notify(self.on_written, table, record_id, doc)
        return True

    def _notify(self, hook: Callable[[str, str, dict[str, Any]], None], table: str,
                record_id: str, doc: dict[str, Any]) -> None:
        try:
            hook(table, record_id, doc)
        except Exception:  # a broken hook must not stop the records behind it
            log.exception("store writer %s: the on_written hook raised for %s:%s; writing "
                          "goes on", self.name, table, record_id)

    def __repr__(self) -> str:
        return (
            f"BatchedWriter({self.name!r}, pending={len(self._pending)}, "
            f"breaker={self.breaker.state.value})"
        )

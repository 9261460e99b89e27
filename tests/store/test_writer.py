"""BatchedWriter in front of a real embedded SurrealStore.

Failures are injected by ``Flaky``, a thin wrapper around the real store that
raises on chosen calls; everything that does get written goes to SurrealDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest

from convergence.store import (
    BatchedWriter,
    CircuitBreaker,
    StoreBackpressure,
    StoreError,
    SurrealStore,
)


class Flaky:
    """Fails the first ``fail_first`` calls (or while ``down``), else delegates.

    With ``fail_after_write`` the failing calls *do* write and then raise, like a
    commit whose acknowledgement was lost: the retry must not duplicate anything.
    """

    def __init__(
        self, inner: SurrealStore, fail_first: int = 0, *, fail_after_write: bool = False
    ) -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.fail_after_write = fail_after_write
        self.down = False
        self.calls = 0
        self.url = inner.url

    async def upsert_many(self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        self.calls += 1
        failing = self.down or self.calls <= self.fail_first
        if failing and self.fail_after_write:
            await self.inner.upsert_many(table, items)
        if failing:
            raise ConnectionError(f"injected failure #{self.calls}")
        await self.inner.upsert_many(table, items)


def quick_breaker(threshold: int = 100, reset: float = 0.01, **kw: Any) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_timeout_s=reset, **kw)


def writer_for(store: Any, **kw: Any) -> BatchedWriter:
    opts: dict[str, Any] = {
        "batch_size": 50,
        "flush_interval_s": 0.01,
        "retry_base_s": 0.001,
        "retry_max_s": 0.004,
        "breaker": quick_breaker(),
        "seed": 1,
    }
    opts.update(kw)
    return BatchedWriter(store, **opts)


class NullStore:
    """Accepts everything; for tests that never write."""

    async def upsert_many(self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        return None


def in_store(body: Callable[[SurrealStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with SurrealStore("mem://", "convergence", "test") as store:
            return await body(store)

    return asyncio.run(main())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


# -- happy path ---------------------------------------------------------------


def test_batches_everything_and_close_flushes() -> None:
    async def body(store: SurrealStore) -> tuple[int, dict[str, Any]]:
        writer = writer_for(store, batch_size=100, flush_interval_s=10.0)
        for i in range(450):
            writer.submit("alert", f"a-{i}", {"i": i})
        writer.submit("run", "run-1", {"alerts": 450})
        await writer.close()  # must not wait for the 10 s interval
        return await store.count("alert") + await store.count("run"), writer.stats()

    total, stats = in_store(body)
    assert total == 451
    assert stats["written"] == 451 and stats["pending"] == 0
    assert stats["failures"] == 0 and stats["retries"] == 0 and stats["breaker"] == "closed"


def test_partial_batch_is_written_after_flush_interval() -> None:
    async def body(store: SurrealStore) -> int:
        async with writer_for(store, batch_size=1000, flush_interval_s=0.02) as writer:
            writer.submit("report", "r-1", {"x": 1})
            await wait_until(lambda: writer.pending == 0)
            return await store.count("report")

    assert in_store(body) == 1


def test_a_record_submitted_to_an_idle_writer_is_written_without_flush_or_close() -> None:
    """Issue 11, item 8: once the loop had written everything it slept with no deadline,
    so a later partial batch waited for close() - and died with a killed process."""
    async def body(store: SurrealStore) -> list[tuple[str, str]]:
        written: list[tuple[str, str]] = []
        writer = writer_for(store, batch_size=1000, flush_interval_s=0.05,
                            on_written=lambda t, rid, doc: written.append((t, rid)))
        for i in range(3):  # each one after the loop went idle
            writer.submit("alert", f"a-{i}", {"i": i})
            await wait_until(lambda: writer.pending == 0, timeout=2.0)
            assert await store.get("alert", f"a-{i}") is not None
        await writer.close()
        return written

    assert in_store(body) == [("alert", "a-0"), ("alert", "a-1"), ("alert", "a-2")]


def test_an_urgent_record_does_not_wait_for_the_flush_interval() -> None:
    async def body(store: SurrealStore) -> float:
        loop = asyncio.get_running_loop()
        async with writer_for(store, batch_size=1000, flush_interval_s=30.0) as writer:
            writer.submit("report", "r-1", {"x": 1})
            await wait_until(lambda: writer.pending == 0, timeout=2.0)  # idle again
            writer.submit("report", "r-2", {"x": 2})  # waits up to 30 s for company...
            t0 = loop.time()
            writer.submit("alert", "a-1", {"report_id": "r-2"}, urgent=True)  # ...not now
            await wait_until(lambda: writer.pending == 0, timeout=5.0)
            return loop.time() - t0

    assert in_store(body) < 2.0


def test_a_failing_on_written_hook_is_logged_and_writing_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    def hook(table: str, rid: str, doc: dict[str, Any]) -> None:
        raise RuntimeError("printer on fire")

    async def body(store: SurrealStore) -> int:
        writer = writer_for(store, on_written=hook)
        for i in range(5):
            writer.submit("alert", f"a-{i}", {"i": i})
        await writer.close()
        return await store.count("alert")

    assert in_store(body) == 5
    assert "on_written hook raised" in caplog.text


def test_submit_outside_an_event_loop_is_written_by_the_next_flush() -> None:
    store = SurrealStore("mem://", "convergence", "test")
    writer = writer_for(store)
    writer.submit("response", "x", {"ok": True})  # no running loop: just queued
    assert writer.pending == 1

    async def main() -> int:
        async with store:
            await writer.close(timeout=5)
            return await store.count("response")

    assert asyncio.run(main()) == 1


# -- failures: retry, breaker, no loss -------------------------------------------


def test_failed_batches_are_retried_until_written() -> None:
    async def body(store: SurrealStore) -> tuple[int, dict[str, Any]]:
        flaky = Flaky(store, fail_first=3)
        writer = writer_for(flaky)
        for i in range(120):
            writer.submit("alert", f"a-{i}", {"i": i})
        await writer.close(timeout=5)
        return await store.count("alert"), writer.stats()

    count, stats = in_store(body)
    assert count == 120
    assert stats["failures"] == 3
    assert stats["retries"] >= 3
    assert stats["pending"] == 0 and stats["written"] == 120
    assert "injected failure #3" in stats["last_error"]


def test_retry_after_lost_ack_does_not_duplicate() -> None:
    async def body(store: SurrealStore) -> int:
        writer = writer_for(Flaky(store, fail_first=2, fail_after_write=True))
        for i in range(80):
            writer.submit("dead_letter", f"dl-{i}", {"i": i})
        await writer.close(timeout=5)
        return await store.count("dead_letter")

    assert in_store(body) == 80


def test_breaker_opens_and_nothing_is_attempted_or_lost_while_open() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=30.0, now=lambda: clock[0])

    async def body(store: SurrealStore) -> None:
        flaky = Flaky(store)
        flaky.down = True
        writer = writer_for(flaky, breaker=breaker)
        for i in range(75):
            writer.submit("alert", f"a-{i}", {"i": i})
        await wait_until(lambda: writer.stats()["breaker"] == "open")
        calls_when_opened = flaky.calls
        assert calls_when_opened == 3
        await asyncio.sleep(0.1)  # many loop turns; the fake clock stands still
        assert flaky.calls == calls_when_opened, "writes attempted while the breaker is open"
        assert writer.pending == 75
        with pytest.raises(StoreError, match=r"still unwritten.*breaker open"):
            await writer.flush(timeout=0.05)

        # Cool-down passes while the store is still down: one probe, which fails.
        clock[0] += 30
        await wait_until(lambda: flaky.calls == calls_when_opened + 1)
        await asyncio.sleep(0.05)
        assert flaky.calls == calls_when_opened + 1 and writer.stats()["breaker"] == "open"

        # The store recovers; the next probe closes the breaker and drains the queue.
        flaky.down = False
        clock[0] += 30
        await writer.close(timeout=5)
        assert await store.count("alert") == 75
        stats = writer.stats()
        assert stats["breaker"] == "closed" and stats["pending"] == 0 and stats["written"] == 75
        assert stats["failures"] == 4
        assert breaker.stats()["times_opened"] == 2

    in_store(body)


def test_backpressure_raises_instead_of_dropping() -> None:
    async def body(store: SurrealStore) -> None:
        flaky = Flaky(store)
        flaky.down = True
        writer = writer_for(flaky, batch_size=5, max_pending=10)
        for i in range(10):
            writer.submit("alert", f"a-{i}", {"i": i})
        # Let the background flush hit the dead store at least once, so the
        # backpressure message has a real last error to report.
        async with asyncio.timeout(5):
            while writer.stats()["failures"] == 0:
                await asyncio.sleep(0.001)
        with pytest.raises(StoreBackpressure) as err:
            writer.submit("alert", "a-10", {"i": 10})
        message = str(err.value)
        assert "mem://" in message and "a-10 was NOT queued" in message
        assert "last error: ConnectionError: injected failure #" in message
        # Replacing a record that is already queued needs no new room.
        writer.submit("alert", "a-3", {"i": 3, "v": 2})
        assert writer.pending == 10

        flaky.down = False
        await writer.flush(timeout=5)
        assert await store.count("alert") == 10
        assert await store.get("alert", "a-3") == {"id": "a-3", "i": 3, "v": 2}
        writer.submit("alert", "a-10", {"i": 10})  # room again
        await writer.close(timeout=5)
        assert await store.count("alert") == 11

    in_store(body)


def test_close_against_a_dead_store_reports_and_returns_unwritten_records() -> None:
    async def body(store: SurrealStore) -> None:
        flaky = Flaky(store)
        flaky.down = True
        writer = writer_for(flaky, close_timeout_s=0.05)
        writer.submit("alert", "a-1", {"v": 1})
        writer.submit("run", "run-1", {"v": 2})
        with pytest.raises(StoreError, match=r"closed with 2 records NOT written.*unwritten\(\)"):
            await writer.close()
        assert writer.unwritten() == [("alert", "a-1", {"v": 1}), ("run", "run-1", {"v": 2})]
        calls = flaky.calls
        await asyncio.sleep(0.05)
        assert flaky.calls == calls, "the flush task kept running after close"
        # Replaying them elsewhere is the caller's choice; here the store is back.
        flaky.down = False
        for table, rid, doc in writer.unwritten():
            await store.upsert(table, rid, doc)
        assert await store.count("alert") + await store.count("run") == 2

    in_store(body)


# -- idempotency and ordering ----------------------------------------------------


def test_resubmission_is_idempotent_and_last_write_wins() -> None:
    async def body(store: SurrealStore) -> None:
        writer = writer_for(store)
        writer.submit("alert", "a-1", {"v": 1})
        writer.submit("alert", "a-1", {"v": 2})
        writer.submit("alert", "a-1", {"v": 3})
        assert writer.pending == 1
        await writer.flush()
        for _ in range(3):  # a replay of the same records after they were written
            writer.submit("alert", "a-1", {"v": 3})
            writer.submit("alert", "a-2", {"v": 1})
            await writer.flush()
        await writer.close()
        assert await store.count("alert") == 2
        assert await store.get("alert", "a-1") == {"id": "a-1", "v": 3}

    in_store(body)


def test_newer_submit_during_an_in_flight_write_is_not_lost() -> None:
    class Gate:
        def __init__(self, inner: SurrealStore) -> None:
            self.inner = inner
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def upsert_many(
            self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]
        ) -> None:
            self.entered.set()
            await self.release.wait()
            await self.inner.upsert_many(table, items)

    async def body(store: SurrealStore) -> None:
        gate = Gate(store)
        writer = writer_for(gate)
        writer.submit("report", "r-1", {"v": "old"})
        await asyncio.wait_for(gate.entered.wait(), 5)
        writer.submit("report", "r-1", {"v": "new"})  # arrives while "old" is being written
        gate.release.set()
        await writer.close(timeout=5)
        assert await store.get("report", "r-1") == {"id": "r-1", "v": "new"}
        assert writer.stats()["written"] == 2

    in_store(body)


def test_producer_mutating_its_dict_after_submit_does_not_change_the_record() -> None:
    async def body(store: SurrealStore) -> None:
        writer = writer_for(store)
        doc = {"v": 1}
        writer.submit("alert", "a-1", doc)
        doc["v"] = 99
        await writer.close()
        assert await store.get("alert", "a-1") == {"id": "a-1", "v": 1}

    in_store(body)


# -- misuse -----------------------------------------------------------------------


def test_bad_records_fail_at_submit_not_in_the_queue() -> None:
    async def body(store: SurrealStore) -> None:
        writer = writer_for(store)
        with pytest.raises(ValueError, match="unknown store table"):
            writer.submit("alerts", "a-1", {})
        with pytest.raises(ValueError, match="different id"):
            writer.submit("alert", "a-1", {"id": "b"})
        assert writer.pending == 0
        await writer.close()

    in_store(body)


def test_submit_after_close_is_refused() -> None:
    async def body(store: SurrealStore) -> None:
        writer = writer_for(store)
        await writer.close()
        with pytest.raises(StoreError, match=r"closed.*not queued"):
            writer.submit("alert", "late", {})

    in_store(body)


def test_backoff_is_exponential_capped_and_seeded() -> None:
    def delays(seed: int) -> list[float]:
        w = BatchedWriter(NullStore(), retry_base_s=1.0, retry_max_s=8.0, seed=seed)
        return [w._backoff(n) for n in range(1, 8)]

    a, b = delays(42), delays(42)
    assert a == b and a != delays(43)
    caps = [1, 2, 4, 8, 8, 8, 8]
    for got, cap in zip(a, caps, strict=True):
        assert cap / 2 <= got <= cap


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BatchedWriter(NullStore(), batch_size=0)
    with pytest.raises(ValueError, match="max_pending"):
        BatchedWriter(NullStore(), batch_size=10, max_pending=5)


class Recording:
    """Records the (table, ids) of every upsert_many call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def upsert_many(self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        self.calls.append((table, [rid for rid, _ in items]))


def test_a_record_resubmitted_after_pending_is_never_written_ahead_of_earlier_ones() -> None:
    async def main() -> list[tuple[str, list[str]]]:
        store = Recording()
        writer = writer_for(store, batch_size=2)
        writer.submit("revision", "r1", {})
        writer.submit("chain", "head", {"seq": 1})
        writer.submit("revision", "r2", {})
        writer.submit("chain", "head", {"seq": 2}, after_pending=True)  # moves behind r2
        writer.submit("alert", "a1", {})
        writer.submit("alert", "a0", {})  # a plain resubmit keeps its place
        writer.submit("alert", "a1", {"v": 2})
        await writer.close()
        return store.calls

    calls = asyncio.run(main())
    order = [rid for _, ids in calls for rid in ids]
    assert order.index("r2") < order.index("head")  # the head naming r2 comes after it
    assert order.index("a1") < order.index("a0")
    assert calls[0] == ("revision", ["r1", "r2"])

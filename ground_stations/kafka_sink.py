"""The Kafka side of ground stations: the event sink and the control listener.

This module owns everything a station process needs to talk to a broker with
kafka-python, and nothing about what the stations observe (running a whole fleet
against a broker is :mod:`convergence.ground_stations.kafka_fleet`):

* :class:`KafkaEventSink` is a station agent's sink (``await sink(station_id, records)``).
  One wire message (:func:`convergence.wire.encode_raw`) per station batch, keyed by the
  station id so a station's events stay in one partition, in order. The producer batches
  (``linger_ms``/``batch_size``), compresses (lz4 when the ``lz4`` package is installed,
  else gzip), waits for ``acks="all"`` and is idempotent. kafka-python already retries
  retriable errors until ``delivery_timeout_ms``; a message that still fails is re-sent
  by this class up to ``max_retries`` times with backoff, and one that fails for good is
  counted, logged at ERROR and handed to ``on_failed`` - never dropped silently.
  :meth:`KafkaEventSink.close` flushes everything pending, re-sends included.
* :class:`ControlListener` reads the control topic in a background thread (kafka-python
  is blocking) and hands valid :class:`~convergence.control.ControlCommand` s to the
  event loop.

Never blocking the stations' event loop. ``KafkaProducer.send`` can block its caller
for up to ``max_block_ms`` while it waits for a topic's metadata - which is exactly
what happens during a broker restart. So the sink's ``send`` only appends to a queue;
one sender thread per sink hands the queue to the producer in order (a station's
messages keep their order), and blocks there instead of the loop.

Buffering across a broker outage. Everything not yet acknowledged by the broker - the
queue, the producer's own buffer, the messages waiting for a re-send - counts against
``max_buffer_bytes`` (64 MiB by default: the default fleet of 247 stations sends about
130 KiB/s of encoded events, so that is about 8 minutes of outage). While the broker is away, the producer
holds messages and retries them for ``delivery_timeout_ms`` (2 minutes), then this
class re-sends them ``max_retries`` more times, so nothing is lost in an outage of a few
minutes and the idempotent producer writes each message once, in order per station (a
re-send by this class, after the producer's own 2 minutes, can land after newer messages of
its station; the workers order events by event time). Beyond the bound, new
batches are given up at once instead of growing memory: counted in ``overflowed``
(and ``failed``), logged (once, then a count every 10 s) and handed to ``on_failed``.

Examples
--------
>>> class FakeProducer:  # what kafka-python's KafkaProducer.send returns, reduced
...     def __init__(self): self.sent = []
...     def send(self, topic, value=None, key=None):
...         self.sent.append((topic, key)); return _Done()
...     def flush(self, timeout=None): pass
...     def close(self, timeout=None): pass
>>> class _Done:
...     def add_callback(self, fn, *a): fn(*a, None); return self
...     def add_errback(self, fn, *a): return self
>>> sink = KafkaEventSink("unused:9092", "t-events", producer=FakeProducer())
>>> import asyncio; asyncio.run(sink("s1", [{"station_id": "s1"}]))
>>> sink.flush()  # the sender thread has handed it over and the broker acknowledged it
>>> sink.counters.as_dict()["acked"], sink.producer.sent
(1, [('t-events', b's1')])
>>> sink.close().failed
0
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from convergence.control import ControlCommand
from convergence.counters import Counters
from convergence.wire import encode_raw

log = logging.getLogger(__name__)

FailedHook = Callable[[str, bytes | None, bytes, BaseException], None]  # topic, key, value, error

#: Default bound on what one sink holds unacknowledged (see module docstring).
MAX_BUFFER_BYTES = 64 * 1024 * 1024


def pick_compression() -> str:
    """``lz4`` when the lz4 package is importable (fast, cheap on CPU), else ``gzip``."""
    try:
        from kafka.codec import has_lz4
    except ImportError:  # pragma: no cover - kafka-python always ships codec
        return "gzip"
    return "lz4" if has_lz4() else "gzip"


class BufferFullError(RuntimeError):
    """A batch was given up because the sink's buffer bound was reached."""


@dataclass
class SinkCounters(Counters):
    """Messages (and the event records inside them) through one sink."""

    sent: int = 0  # messages handed to the sink, re-sends excluded
    acked: int = 0  # messages the broker confirmed (acks=all)
    failed: int = 0  # messages given up on after every retry, or for the buffer bound
    retried: int = 0  # re-sends after a delivery failure
    overflowed: int = 0  # messages given up because max_buffer_bytes was reached (in failed)
    records_sent: int = 0
    records_acked: int = 0
    records_failed: int = 0


@dataclass
class _Pending:
    topic: str
    key: bytes | None
    value: bytes
    n_records: int
    attempt: int = 0  # 0 = first send
    not_before: float = 0.0


def _as_key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class KafkaEventSink:
    """Produce station batches to Kafka; usable as a :class:`StationAgent` sink.

    Parameters
    ----------
    bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
    topic: the events topic (``settings.topic("events")``).
    linger_ms / batch_size: producer batching; 20 ms trades a little latency for far
        fewer requests when hundreds of stations send at once.
    compression: ``lz4``, ``gzip``, ``snappy``, ``zstd``; default :func:`pick_compression`.
    delivery_timeout_ms: how long kafka-python itself keeps retrying one message.
    max_block_ms: longest the sender thread waits in ``producer.send`` (metadata); the
        caller of this sink never waits (see module docstring).
    max_retries / retry_backoff_s: re-sends by this class after kafka-python gave up;
        the n-th waits ``retry_backoff_s * 2**(n-1)``.
    max_buffer_bytes: bound on the bytes held unacknowledged (see module docstring).
    on_failed: called (from a background thread) with ``(topic, key, value, error)``
        for each message given up on, e.g. to spool it to disk.
    producer: an existing producer (tests); otherwise one is created here.
    wait_metadata: fetch the topic's metadata now, so the first message goes out at once.
    """

    def __init__(self, bootstrap: str, topic: str, *, client_id: str = "convergence-stations",
                 linger_ms: int = 20, batch_size: int = 256 * 1024,
                 compression: str | None = None, delivery_timeout_ms: int = 120_000,
                 max_block_ms: int = 5_000, max_retries: int = 3, retry_backoff_s: float = 1.0,
                 max_buffer_bytes: int = MAX_BUFFER_BYTES,
                 on_failed: FailedHook | None = None, producer: Any | None = None,
                 wait_metadata: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        if max_buffer_bytes < 1:
            raise ValueError(f"max_buffer_bytes must be >= 1, got {max_buffer_bytes}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.compression = compression or pick_compression()
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_buffer_bytes = max_buffer_bytes
        self.on_failed = on_failed
        self.clock = clock
        self.counters = SinkCounters()
        # callbacks run on kafka-python's sender thread, sends on ours, enqueues on the loop
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Pending] = deque()
        self._retry: list[_Pending] = []
        self._in_flight = 0
        self._dispatching = False  # the sender thread is inside producer.send
        self._buffered_bytes = 0
        self._closed = False
        self._stopping = False
        self._overflow_logged_at = -math.inf
        self._overflow_unlogged = 0
        if producer is None:
            from kafka import KafkaProducer  # late: unit tests inject a fake

            # acks="all" + idempotence: a broker-side retry never duplicates or reorders
            # a station's messages within the producer session.
            producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","), client_id=client_id, acks="all",
                enable_idempotence=True, linger_ms=linger_ms, batch_size=batch_size,
                compression_type=self.compression, delivery_timeout_ms=delivery_timeout_ms,
                max_block_ms=max_block_ms, retry_backoff_ms=200,
            )
        self.producer = producer
        if wait_metadata:
            self.producer.partitions_for(topic)
        self._thread = threading.Thread(target=self._pump, daemon=True,
                                        name=f"kafka-sink {topic}")
        self._thread.start()

    # -- sending -----------------------------------------------------------
    async def __call__(self, station_id: str, records: list[dict[str, Any]]) -> None:
        """Sink interface: one message for this station's batch (never blocks the loop)."""
        self.send_records(station_id, records)

    def send_records(self, station_id: str, records: list[dict[str, Any]]) -> None:
        """Encode ``records`` as one wire message keyed by ``station_id`` and queue it."""
        if not records:
            return
        self._send(_Pending(self.topic, _as_key(station_id), encode_raw(records), len(records)))

    def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Send any other message (acks, dead letters) with the same delivery guarantees."""
        self._send(_Pending(topic, _as_key(key), value, 0))

    def _send(self, item: _Pending) -> None:
        if self._closed:
            raise RuntimeError(f"KafkaEventSink for {self.topic} is closed; "
                               "create a new sink (this is a bug in the caller)")
        size = len(item.value)
        with self._cond:
            self.counters.sent += 1
            self.counters.records_sent += item.n_records
            full = self._buffered_bytes + size > self.max_buffer_bytes
            if not full:
                self._buffered_bytes += size
                self._queue.append(item)
                self._cond.notify_all()
        if full:
            self._overflow(item)

    def _pump(self) -> None:
        """The sender thread: hand queued messages to the producer, in order."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if self._due_locked(self.clock()):
                        continue
                    self._cond.wait(self._next_due_s())
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._in_flight += 1
                self._dispatching = True
            try:
                self._dispatch(item)
            finally:
                with self._cond:
                    self._dispatching = False
                    self._cond.notify_all()  # flush/close wait for the hand-over

    def _dispatch(self, item: _Pending) -> None:
        # in_flight was counted when the item left the queue
        try:
            fut = self.producer.send(item.topic, value=item.value, key=item.key)
        except Exception as exc:  # no metadata in time, closed...: same path as async errors
            self._on_error(item, exc)
            return
        fut.add_callback(self._on_ack, item)
        fut.add_errback(self._on_error, item)

    def _on_ack(self, item: _Pending, _metadata: Any) -> None:
        with self._cond:
            self._in_flight -= 1
            self._buffered_bytes -= len(item.value)
            self.counters.acked += 1
            self.counters.records_acked += item.n_records
            self._cond.notify_all()

    def _on_error(self, item: _Pending, exc: BaseException) -> None:
        retriable = getattr(exc, "retriable", False) or isinstance(exc, TimeoutError)
        with self._cond:
            self._in_flight -= 1
            if retriable and item.attempt < self.max_retries:
                item.attempt += 1
                item.not_before = self.clock() + self.retry_backoff_s * 2 ** (item.attempt - 1)
                self._retry.append(item)
                give_up = False
            else:
                self._count_failed_locked(item)
                give_up = True
            self._cond.notify_all()
        if give_up:
            key = item.key.decode(errors="replace") if item.key else "-"
            log.error(
                "kafka: gave up on a message to %s (key %s, %d records, %d bytes) after %d "
                "attempt(s): %s: %s. Check the broker at %s is up and the topic exists.",
                item.topic, key, item.n_records, len(item.value), item.attempt + 1,
                type(exc).__name__, exc, self.bootstrap)
            self._hand_over(item, exc)
        else:
            log.warning("kafka: delivery to %s failed (%s: %s); re-sending (attempt %d of %d)",
                        item.topic, type(exc).__name__, exc, item.attempt, self.max_retries)

    def _count_failed_locked(self, item: _Pending) -> None:
        self._buffered_bytes -= len(item.value)
        self.counters.failed += 1
        self.counters.records_failed += item.n_records

    def _overflow(self, item: _Pending) -> None:
        with self._cond:
            self.counters.overflowed += 1
            self.counters.failed += 1
            self.counters.records_failed += item.n_records
            self._overflow_unlogged += 1
            now = self.clock()
            say = now - self._overflow_logged_at >= 10.0
            if say:
                n, self._overflow_unlogged = self._overflow_unlogged, 0
                self._overflow_logged_at = now
        if say:
            log.error(
                "kafka: %d message(s) to %s given up: the sink already holds %d bytes the broker "
                "at %s has not acknowledged (bound max_buffer_bytes=%d). Is the broker down? "
                "Batches are given up (and counted as failed) until it catches up.",
                n, item.topic, self._buffered_bytes, self.bootstrap, self.max_buffer_bytes)
        self._hand_over(item, BufferFullError(
            f"sink buffer full ({self.max_buffer_bytes} bytes unacknowledged)"))

    def _hand_over(self, item: _Pending, exc: BaseException) -> None:
        if self.on_failed is not None:
            try:
                self.on_failed(item.topic, item.key, item.value, exc)
            except Exception:
                log.exception("kafka: on_failed hook raised")

    def _due_locked(self, now: float, *, force: bool = False) -> int:
        """Move re-sends whose backoff expired (all with ``force``) to the queue's front."""
        due = [p for p in self._retry if force or p.not_before <= now]
        if not due:
            return 0
        self._retry = [p for p in self._retry if not (force or p.not_before <= now)]
        self.counters.retried += len(due)
        self._queue.extendleft(reversed(due))  # ahead of what is not yet handed over
        self._cond.notify_all()
        return len(due)

    def _next_due_s(self) -> float:
        if not self._retry:
            return 0.5
        return min(max(min(p.not_before for p in self._retry) - self.clock(), 0.01), 0.5)

    def pump_retries(self, *, force: bool = False) -> int:
        """Queue failed messages whose backoff expired (all of them with ``force``) for a
        re-send; returns how many. The sender thread also does this on its own."""
        with self._cond:
            return self._due_locked(self.clock(), force=force)

    # -- lifecycle -----------------------------------------------------------
    @property
    def pending(self) -> int:
        """Messages not yet acked or given up on (queued, in flight, waiting to be re-sent)."""
        with self._lock:
            return len(self._queue) + self._in_flight + len(self._retry)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held that the broker has not acknowledged (bounded by ``max_buffer_bytes``)."""
        with self._lock:
            return self._buffered_bytes

    def _wait_handed_over(self, timeout_s: float | None) -> bool:
        """Wait until the sender thread has handed every queued message to the producer."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while (self._queue or self._dispatching) and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            return not self._queue and not self._dispatching

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything sent so far is acked or queued for a re-send."""
        started = time.monotonic()
        self.pump_retries()
        self._wait_handed_over(timeout_s)
        left = None if timeout_s is None else max(timeout_s - (time.monotonic() - started), 0.0)
        self.producer.flush(timeout=left)

    def close(self, timeout_s: float = 30.0) -> SinkCounters:
        """Flush everything pending (re-sends included, backoff skipped), then close.

        Whatever is still undelivered after ``timeout_s`` is counted as failed and
        logged; the counters are returned.
        """
        if self._closed:
            return self.counters
        deadline = self.clock() + timeout_s
        while True:
            self._wait_handed_over(max(deadline - self.clock(), 0.0))
            left = deadline - self.clock()
            try:
                self.producer.flush(timeout=max(left, 0.0))
            except Exception as exc:  # KafkaTimeoutError: still undelivered at the deadline
                log.warning("kafka: flush before close timed out: %s", exc)
            if not self.pump_retries(force=True) or self.clock() >= deadline:
                break
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=max(deadline - self.clock(), 1.0))
        with contextlib.suppress(Exception):
            self.producer.close(timeout=max(deadline - self.clock(), 1.0))
        with self._cond:
            left_over = [*self._queue, *self._retry]
            self._queue.clear()
            self._retry = []
            lost_in_flight, self._in_flight = self._in_flight, 0
            for item in left_over:
                self._count_failed_locked(item)
            self.counters.failed += lost_in_flight
        if left_over or lost_in_flight:
            log.error("kafka: closed the producer for %s with %d message(s) undelivered; "
                      "they are counted as failed", self.topic, len(left_over) + lost_in_flight)
        return self.counters


class ControlListener:
    """Reads the control topic in a thread and queues valid commands on the event loop.

    Every station process must see every command, so the listener does not join a
    consumer group: it assigns itself all partitions and starts at the end (commands
    are short-lived; one issued while no station process ran has mostly expired).
    An invalid command is logged, counted and passed to ``on_invalid(raw, reason)``.
    """

    def __init__(self, bootstrap: str, topic: str, *, client_id: str = "convergence-control",
                 on_invalid: Callable[[bytes, str], None] | None = None,
                 poll_timeout_ms: int = 250) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.on_invalid = on_invalid
        self.poll_timeout_ms = poll_timeout_ms
        self.received = 0
        self.invalid = 0
        self.queue: asyncio.Queue[ControlCommand] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self, loop: asyncio.AbstractEventLoop, timeout_s: float = 30.0) -> None:
        """Connect, assign every partition at its end offset, then poll in a thread."""
        from convergence.streams import kafka_client

        self.queue = asyncio.Queue()
        consumer = kafka_client.consumer(self.bootstrap, self.client_id)
        try:
            # from the end, resolved now: commands sent after start count
            tps = kafka_client.assign_all(consumer, self.topic, start="end", wait_s=timeout_s)
        except BaseException:
            consumer.close()
            raise
        if not tps:
            consumer.close()
            raise RuntimeError(f"control topic {self.topic!r} does not exist on {self.bootstrap} "
                               f"after {timeout_s:g} s; create it (the cluster creates its topics "
                               "on start) or check CONVERGENCE_TOPIC_PREFIX")
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, args=(loop,), daemon=True,
                                        name=f"control-listener {self.topic}")
        self._thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.queue is not None
        queue = self.queue
        while not self._stop.is_set():
            try:
                batches = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
            except Exception as exc:  # broker gone: keep trying, the stations keep running
                log.warning("control listener: poll on %s failed: %s; retrying", self.topic, exc)
                self._stop.wait(1.0)
                continue
            for records in batches.values():
                for rec in records:
                    cmd = self._decode(rec.value)
                    if cmd is not None:
                        self.received += 1
                        loop.call_soon_threadsafe(queue.put_nowait, cmd)

    def _decode(self, raw: bytes | None) -> ControlCommand | None:
        try:
            return ControlCommand.from_dict(orjson.loads(raw or b""))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            self.invalid += 1
            reason = f"not a valid control command: {exc}"
            log.warning("control listener: ignoring a message on %s (%s)", self.topic, reason)
            if self.on_invalid is not None:
                self.on_invalid(raw or b"", reason)
            return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()

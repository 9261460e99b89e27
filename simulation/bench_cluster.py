"""Benchmark: events/s from the broker through N real cluster workers, beside a raw consume.

:func:`bench_cluster` runs, against a real broker and in one go, for every combination of
worker count and batch size it is given:

1. **backlog** - a seeded synthetic fleet (the default fleet's ids, kinds, regions and
   correlation groups, each station at ``rate_scale`` times its declared rate, with the
   default scenario's random episodes) is drawn poll interval by poll interval; each
   station's events of one interval are one Kafka message keyed by its id, and the
   interval is chosen so the mean message holds ``batch`` events. The event stream is
   the same whatever the batch size; only its packaging differs. Produced as the
   stations' own sink produces (acks=all, idempotent, linger 20 ms, lz4 or gzip) to a
   fresh events topic.
2. **baseline** - a plain kafka-python ``KafkaConsumer`` reads that topic from the
   beginning to its end, decoding nothing: the raw consume rate.
3. **workers** - N ``convergence cluster worker`` processes, started the way
   ``convergence cluster up`` starts them (the supervisor's :func:`worker_argv` and
   :func:`worker_env`, a fleet file the workers learn the stations from; worker 0 owns
   the store, an in-memory SurrealDB), with the full detector chain in two stages:
   each worker runs the first stage (ingest, station detectors) for the events
   partitions it owns and the second (meter, responses, reports) for the
   ``node-evidence`` partitions it owns. They are a black box: the harness only feeds
   the events topic and watches the consumer group's committed offsets, until every
   event is committed.
   ``events_per_s`` is the sustained rate from the first evidence the workers hand on
   (their first ticks closed: they are draining) until :data:`SUSTAINED_SHARE` of the
   backlog is committed (startup excluded; offsets are committed every few seconds, so
   short runs are coarse; the first commit comes late, once ticks closed, so it cannot
   mark the start);
   ``tail_s`` is the rest, until the last event is committed: the backlog's last ticks
   wait for the watermark's recovery hold (a partition that was behind waits 30 s of
   caught-up time for stations still resending), the same for any number of workers.
   ``ratio_to_baseline`` compares the rate with phase 2.
4. **live** - once the backlog is consumed, the fleet goes on in real time (each
   station sends its interval's events when the interval ends) with ``live_episodes``
   genuine convergences, staggered. Alert latency is, for every alert of the live
   phase read from the alerts topic, the time from the send of the last message that
   contributed to it (a station of its region, with events before the alert's tick
   end) to the alert being read. A tick closes once events ``allowed_lateness_s``
   later have arrived, so latency includes the poll interval and the lateness: the
   price of bigger batches.
5. **stop** - the workers are stopped in waves (those without the store first); each
   sends its counters to the ``runs`` topic as it stops, from which the run reports
   the share of station-ticks skipped at ingress (stations at baseline send nothing
   to the second stage) and the ``node-evidence`` bytes per closed tick. Then the
   run's topics and consumer group are deleted, its temporary data directory removed.

The workers' settings are this process's, with the run's own topic prefix, consumer
group and data directory, the fleet file (the default fleet of ``stations``, each
station declaring the rate it really sends at: ``rate_scale`` times the default),
the rule-based meter (no trained model), and an allowed
lateness of one poll interval plus 1.5 s (a message holds events up to one interval
old). Baselines are seeded from the declared rates.

Examples
--------
>>> msgs = list(backlog_messages(BacklogPlan(stations=20, seed=3, batch=10, events=500,
...                                          t0_s=1_800_000_000.0)))
>>> sum(m.n_events for m in msgs) >= 500, msgs[0].key.decode().count("-") >= 2
(True, True)
>>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 99)
(2.5, None)
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from convergence.detectors.ingest import category_bin
from convergence.ground_stations.scenario import (
    Episode,
    Scenario,
    SyntheticWorld,
    convergence_episode,
    default_fleet,
    default_scenario,
)
from convergence.schema import OSINT_KINDS, SourceKind
from convergence.settings import Settings
from convergence.wire import WIRE_VERSION

__all__ = ["BacklogPlan", "Message", "backlog_messages", "bench_cluster", "compare", "fleet_toml",
           "percentile", "sustained_rate"]

#: how many events one message carries on average, when not told
DEFAULT_BATCH = 10
#: how much busier than declared the synthetic stations are (events per tick, per station)
DEFAULT_RATE_SCALE = 10.0
#: slack added to the allowed lateness beyond one poll interval (the setting's default)
LATENESS_SLACK_S = 1.5
#: Faust commits a worker's offsets every 2.8 s by default; the watermark may run that
#: far (and the polling period) ahead of what the harness saw committed
COMMIT_SLACK_S = 4.0
Say = Callable[[str], None]


def _quiet(_text: str) -> None:
    pass


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), ``None`` for no values."""
    if not xs:
        return None
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


# -- the backlog ----------------------------------------------------------------------


@dataclass(frozen=True)
class BacklogPlan:
    """What the synthetic fleet sends (see module docstring).

    ``events``: at least this many, in whole poll intervals; ``live_s``: seconds of
    real-time sending after them, with ``live_episodes`` genuine convergences;
    ``t0_s``: the event time of scenario second 0.
    """

    stations: int = 247
    seed: int = 7
    batch: int = DEFAULT_BATCH
    events: int = 200_000
    rate_scale: float = DEFAULT_RATE_SCALE
    t0_s: float = 0.0
    live_s: float = 0.0
    live_episodes: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1 event per message, got {self.batch}")
        if self.events < 1:
            raise ValueError(f"events must be >= 1, got {self.events}")
        if not self.rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale}")

    @property
    def fleet(self) -> list[Any]:
        return default_fleet(self.stations, self.seed)

    @property
    def events_per_s(self) -> float:
        """Events per second of event time from the whole fleet, outside episodes."""
        return float(sum(s.rate_per_s for s in self.fleet)) * self.rate_scale

    @property
    def poll_s(self) -> float:
        """Each station's poll interval: its mean message holds ``batch`` events."""
        return self.batch * self.stations / self.events_per_s

    @cached_property
    def backlog_s(self) -> float:
        """Event-time seconds of the backlog: whole poll intervals until the fleet's
        expected events (its episodes included) reach ``events``."""
        poll = self.poll_s
        world = SyntheticWorld(self._scenario(self._episodes(2.0 * self.events / self.events_per_s
                                                             + 100.0)))
        total, k = 0.0, 0
        while total < self.events:
            total += float(np.sum(world.rates((k + 0.5) * poll))) * poll
            k += 1
        return k * poll

    def _episodes(self, horizon_s: float) -> list[Episode]:
        return list(default_scenario(self.stations, self.seed, horizon_s).episodes)

    def _scenario(self, episodes: list[Episode]) -> Scenario:
        return Scenario(self.fleet, episodes, self.seed, bad_rate=0.0, dup_rate=0.0,
                        max_skew_s=0.0, name="bench-cluster",
                        duration_s=max((e.end_s for e in episodes), default=0.0) + 60.0,
                        rate_scale=(self.rate_scale,) * self.stations)

    def scenario(self) -> Scenario:
        """The scenario behind the backlog and the live phase."""
        fleet = self.fleet
        end = self.backlog_s
        horizon = end + self.live_s + 60.0
        # the default scenario's random episodes in the backlog, well clear of the live
        # phase, whose genuine convergences come one after the other in other regions
        eps: list[Episode] = [e for e in self._episodes(horizon) if e.end_s < end - 10.0]
        rng = np.random.default_rng([self.seed, 81])
        regions = sorted({s.region for s in fleet})
        for k in range(self.live_episodes):
            start = end + 2.0 + k * max(self.live_s - 4.0, 1.0) / max(self.live_episodes, 1)
            eps.append(convergence_episode(rng, fleet, start, 7.0,
                                           region=regions[(k * 2) % len(regions)]))
        return self._scenario(eps)


@dataclass(frozen=True)
class Message:
    """One Kafka message of the fleet: a station's events of one poll interval."""

    key: bytes
    value: bytes
    n_events: int
    region: str
    first_s: float  # event time of its first and last event
    last_s: float
    send_at_s: float  # event time at which the station sends it (its interval's end)


def backlog_messages(plan: BacklogPlan, *, live: bool = False) -> Iterator[Message]:
    """The fleet's messages in sending order: the backlog, or (``live``) what follows it.

    Vectorised over stations per poll interval: one rate and topic look-up per
    interval, numpy draws, one dict per event (what a station's source returns).
    """
    sc = plan.scenario()
    world = SyntheticWorld(sc)
    fleet = sc.fleet
    n = len(fleet)
    rng = np.random.default_rng([plan.seed, 82, int(live)])
    topic_names = {category_bin(e.topic): e.topic for e in sc.episodes if e.topic is not None}
    kinds = [s.kind for s in fleet]
    sids = [s.station_id for s in fleet]
    regions = [s.region for s in fleet]
    groups = [s.correlation_group for s in fleet]
    price = 100.0 * rng.uniform(0.5, 2.0, n)
    poll = plan.poll_s
    k0 = 0 if not live else round(plan.backlog_s / poll)
    k_end = round(plan.backlog_s / poll) if not live else k0 + max(math.ceil(plan.live_s / poll), 0)
    for k in range(k0, k_end):
        a, b = k * poll, (k + 1) * poll
        mid = 0.5 * (a + b)
        rates = np.asarray(world.rates(mid))
        topic_bin, share = (np.asarray(x) for x in world.topic_bins(mid))
        counts = rng.poisson(rates * poll)
        for i in np.flatnonzero(counts).tolist():
            m = int(counts[i])
            topic = topic_names.get(int(topic_bin[i])) if topic_bin[i] >= 0 else None
            cats, p = world.topic_probs(i, topic, float(share[i]))
            picks = rng.choice(len(cats), size=m, p=p)
            times = np.round(np.sort(rng.uniform(a, b, m)) + plan.t0_s, 6)
            values = _values(rng, kinds[i], topic is not None, m, price, i)
            kind = kinds[i].value
            recs: list[dict[str, Any]] = [
                {"station_id": sids[i], "source_kind": kind, "event_time_s": t,
                 "category": cats[c], "value": v, "source": groups[i]}
                for t, c, v in zip(times.tolist(), picks.tolist(), values, strict=True)]
            if kinds[i] in OSINT_KINDS:
                for r in recs:
                    r["text"] = f"{r['category']} reports from {regions[i]}"
            yield Message(sids[i].encode(), orjson.dumps({"v": WIRE_VERSION, "events": recs}),
                          m, regions[i], float(times[0]), float(times[-1]), plan.t0_s + b)


def _values(rng: np.random.Generator, kind: SourceKind, stressed: bool, m: int,
            price: np.ndarray[Any, Any], i: int) -> list[float]:
    """Values as the synthetic source draws them (``price`` walks per station)."""
    s = 1.0 if stressed else 0.0
    if kind == SourceKind.OSINT_NEWS:
        v = np.clip(rng.normal(-0.5 * s, 0.3, m), -1, 1)
    elif kind == SourceKind.OSINT_SOCIAL:
        v = np.round(rng.lognormal(3.0 + s, 1.0, m))
    elif kind == SourceKind.MARKET_PRICE:
        path = price[i] * np.exp(np.cumsum(rng.normal(0.0, 0.004 if stressed else 0.001, m)))
        price[i] = path[-1]
        v = np.round(path, 4)
    elif kind == SourceKind.MARKET_VOLUME:
        v = np.round(rng.lognormal(6.0 + s, 0.8, m))
    else:
        v = rng.normal(13.0 if stressed else 10.0, 1.0, m)
    out: list[float] = v.tolist()
    return out


# -- kafka helpers ----------------------------------------------------------------------


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    from convergence.ground_stations.kafka_sink import pick_compression

    # the stations' own settings (ground_stations.kafka_sink.KafkaEventSink)
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), client_id="convergence-bench-fill",
                         acks="all", enable_idempotence=True, linger_ms=20,
                         batch_size=256 * 1024, compression_type=pick_compression(),
                         retry_backoff_ms=200, max_block_ms=60_000)


@dataclass
class _Offsets:
    """Per partition: the events of the messages at each offset (to turn committed
    offsets into events)."""

    by_partition: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked(self, n_events: int, meta: Any) -> None:
        with self.lock:
            self.by_partition.setdefault(meta.partition, []).append((meta.offset, n_events))

    def error(self, _exc: BaseException) -> None:
        with self.lock:
            self.failed += 1

    def table(self) -> dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
        """Per partition: sorted offsets and the events before each offset (cumulative)."""
        out = {}
        for p, rows in self.by_partition.items():
            rows.sort()
            offs = np.array([o for o, _ in rows], dtype=np.int64)
            cum = np.concatenate([[0], np.cumsum([n for _, n in rows])])
            out[p] = (offs, cum)
        return out

    @property
    def end(self) -> dict[int, int]:
        return {p: max(o for o, _ in rows) + 1 for p, rows in self.by_partition.items()}


def _thin(samples: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    """At most about ``most`` evenly spaced samples, always ending with the last one.

    >>> _thin([(float(i), i) for i in range(10)], 4)[-1]
    (9.0, 9)
    """
    kept = samples[:: max(len(samples) // most, 1)]
    if samples and kept[-1] != samples[-1]:
        kept.append(samples[-1])
    return kept


#: the sustained rate is timed until this share of the backlog is committed: the last
#: ticks of a backlog close only after the watermark's recovery hold (a partition that
#: was behind waits ``RECOVER_S`` of caught-up time for stragglers), a wait that is the
#: same for any number of workers and would hide their speed
SUSTAINED_SHARE = 0.9


def sustained_rate(samples: Sequence[tuple[float, int]], total: int,
                   share: float = SUSTAINED_SHARE, *,
                   start: tuple[float, int] | None = None) -> tuple[float, int] | None:
    """``(seconds, events)`` from ``start`` (default: the first advance of the committed
    events) to the first sample with ``share`` of ``total`` committed (``None``: not
    reached, or too short).

    >>> sustained_rate([(0.0, 0), (1.0, 10), (3.0, 90), (40.0, 100)], 100)
    (2.0, 80)
    >>> sustained_rate([(0.0, 0), (1.0, 10), (3.0, 90), (40.0, 100)], 100, start=(0.5, 0))
    (2.5, 90)
    >>> sustained_rate([(0.0, 0), (1.0, 95)], 100) is None   # one sample: no interval
    True
    """
    started = start if start is not None else next(((t, e) for t, e in samples if e > 0), None)
    if started is None:
        return None
    for t, e in samples:
        if e >= share * total and t > started[0]:
            return t - started[0], e - started[1]
    return None


def quiet_since(samples: Sequence[tuple[float, int]]) -> float:
    """When the longest stretch without an advance of the committed events began (the
    backlog's tail waiting for the recovery hold; its start is about when the workers
    read their last input), on the samples' clock; the last sample's time if none.

    >>> quiet_since([(0.0, 0), (1.0, 50), (2.0, 90), (3.0, 90), (9.0, 90), (10.0, 100)])
    2.0
    """
    best, best_len, start = samples[-1][0] if samples else 0.0, -1.0, None
    for i, (t, e) in enumerate(samples):
        if i == 0 or e != samples[i - 1][1]:
            start = t
        assert start is not None
        if e > 0 and t - start > best_len:
            best, best_len = start, t - start
    return best


def _events_before(table: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
                   committed: dict[int, int]) -> int:
    total = 0
    for p, (offs, cum) in table.items():
        total += int(cum[int(np.searchsorted(offs, committed.get(p, 0), "left"))])
    return total


def _fill(bootstrap: str, topic: str, plan: BacklogPlan) -> dict[str, Any]:
    producer = _producer(bootstrap)
    offsets = _Offsets()
    n_msgs = n_events = n_bytes = 0
    t0 = time.perf_counter()
    try:
        producer.partitions_for(topic)
        for m in backlog_messages(plan):
            fut = producer.send(topic, key=m.key, value=m.value)
            fut.add_callback(offsets.acked, m.n_events)
            fut.add_errback(offsets.error)
            n_msgs += 1
            n_events += m.n_events
            n_bytes += len(m.value)
        producer.flush()
    finally:
        producer.close(timeout=30)
    elapsed = time.perf_counter() - t0
    if offsets.failed or sum(len(r) for r in offsets.by_partition.values()) != n_msgs:
        raise RuntimeError(f"filling the backlog: {offsets.failed} of {n_msgs} messages failed "
                           f"on {bootstrap}")
    return {"messages": n_msgs, "events": n_events, "bytes": n_bytes, "seconds": round(elapsed, 3),
            "events_per_s": round(n_events / elapsed), "_offsets": offsets}


def _raw_consume(bootstrap: str, topic: str, offsets: _Offsets) -> dict[str, Any]:
    from convergence.streams import kafka_client

    end = offsets.end
    table = offsets.table()
    consumer = kafka_client.consumer(bootstrap, "convergence-bench-raw-consume",
                                     auto_offset_reset="earliest")
    try:
        tps = kafka_client.assign_all(consumer, topic, start="beginning")
        msgs = 0
        t0, c0 = time.perf_counter(), time.process_time()
        pos = {tp.partition: 0 for tp in tps}
        deadline = time.monotonic() + 600.0
        while any(pos[p] < e for p, e in end.items()) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                msgs += len(records)
                pos[tp.partition] = records[-1].offset + 1
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        consumer.close()
    events = _events_before(table, pos)
    return {"baseline": "kafka-python KafkaConsumer reading the events topic from its beginning to "
                        "its end (no group, no decoding)",
            "seconds": round(elapsed, 3), "messages": msgs, "events": events,
            "events_per_s": round(events / elapsed), "messages_per_s": round(msgs / elapsed),
            "cpu_s": round(cpu, 3), "events_per_cpu_s": round(events / cpu) if cpu > 0 else None}


#: the in-process measurement of the workers' own code takes at most this many events
CORE_EVENTS = 300_000


def core_rate(s: Settings, plan: BacklogPlan, partitions: int) -> dict[str, Any]:
    """The workers' own code without Faust or a broker: the backlog's messages (at most
    :data:`CORE_EVENTS` events) through one first-stage core owning every partition and
    one second-stage core owning every region, in this process, timed in CPU seconds.
    Beside the workers' events per CPU second it says where their time goes: what this
    does not spend, Faust, aiokafka and the tables do.

    >>> import tempfile
    >>> from convergence.settings import load_settings
    >>> plan = BacklogPlan(stations=20, seed=3, events=2000, t0_s=time.time() - 3600.0)
    >>> d = tempfile.mkdtemp()
    >>> _ = (Path(d) / "fleet.toml").write_text(fleet_toml(plan))
    >>> s = load_settings(env={}, config_path=None).replace(
    ...     stations=20, seed=3, fleet=str(Path(d) / "fleet.toml"), meter_model="rules")
    >>> r = core_rate(s, plan, 2)
    >>> r["events"] > 1000, r["events_per_cpu_s"] > 0
    (True, True)
    """
    from convergence.streams.directory import StationDirectory
    from convergence.streams.region_core import RegionCore
    from convergence.streams.topics import station_partition
    from convergence.streams.worker import WorkerCore

    plan = replace(plan, events=min(plan.events, CORE_EVENTS))
    msgs = [(m.key, m.value, station_partition(m.key.decode(), partitions))
            for m in backlog_messages(plan)]
    directory = StationDirectory.from_settings(s)
    first = WorkerCore(s, directory=directory, stations_only=True, n_sources=partitions,
                       n_units=partitions, run_id="bench-core")
    first.on_assignment(range(partitions))
    second = RegionCore(s, directory, n_sources=partitions, n_units=partitions,
                        run_id="bench-core")
    second.on_assignment(range(partitions))
    now = time.time()
    offsets = [0] * partitions
    alerts = 0

    def carry(emits: Sequence[Any]) -> None:
        nonlocal alerts
        for e in emits:
            if e.topic == "node-evidence":
                alerts += sum(x.topic == "alerts" for x in second.on_message(e.value, e.partition, now))

    c0, t0 = time.process_time(), time.perf_counter()
    for key, value, p in msgs:
        carry(first.on_message(value, key, now, partition=p, offset=offsets[p]))
        offsets[p] += 1
    carry(first.on_stop(now))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    events = int(first.pipeline.counters.events)
    return {"what": "the workers' code in this process: decode, ingest, station detectors, "
                    "node evidence, meter, responses, reports (no Faust, no broker)",
            "events": events, "messages": len(msgs), "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(events / cpu) if cpu > 0 else None,
            "events_per_s": round(events / wall) if wall > 0 else None, "alerts": alerts}


def _committed(admin: Any, group: str, topic: str) -> dict[int, int]:
    try:
        got = admin.list_group_offsets(group).get(group, {})
    except Exception:  # the group does not exist yet (workers still starting)
        return {}
    return {tp.partition: int(om.offset) for tp, om in got.items()
            if tp.topic == topic and om is not None and om.offset is not None and om.offset >= 0}


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used (Linux ``/proc``), else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _delta(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else round(end - start, 2)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return f"    (no log at {path})"
    return "\n".join(f"    | {ln[:300]}" for ln in text) + f"\n    (whole log: {path})"


# -- one run --------------------------------------------------------------------------------


class _AlertReader:
    """Reads the alerts topic in a thread from where it is now, noting when each came."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from convergence.streams import kafka_client

        self._consumer = kafka_client.consumer(bootstrap, "convergence-bench-alerts")
        self._tps = kafka_client.assign_all(self._consumer, topic, start="end", wait_s=10.0)
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-alerts")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                for r in records:
                    with contextlib.suppress(ValueError):
                        self.alerts.append((now, orjson.loads(r.value)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._consumer.close()


class _EvidenceWatch:
    """Whether the ``node-evidence`` topic holds anything yet (a first-stage worker closed
    its first ticks: it is draining); asks the broker at most twice a second, and says
    True once."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic, self.wanted = bootstrap, topic, True
        self._consumer: Any = None
        self._asked = 0.0

    def handed_on(self) -> bool:
        if not self.wanted or time.monotonic() - self._asked < 0.5:
            return False
        self._asked = time.monotonic()
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap.split(","),
                                               group_id=None, enable_auto_commit=False)
            parts = self._consumer.partitions_for_topic(self.topic) or set()
            ends = self._consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
        except Exception:  # not there yet, or the broker is slow: ask again later
            return False
        if any(ends.values()):
            self.close()
            self.wanted = False
            return True
        return False

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None


def _run_once(base: Settings, bootstrap: str, plan: BacklogPlan, *, workers: int, partitions: int,
              drain_timeout_s: float, say: Say, python: str | None,
              worker_log_level: str = "warning", join_late: bool = False) -> dict[str, Any]:
    import sys

    from kafka import KafkaAdminClient

    from convergence.streams import kafka_client
    from convergence.streams.supervisor import Child, RestartPolicy, Supervisor, worker_argv, worker_env
    from convergence.streams.topics import ensure_topics

    tag = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix=f"convergence-bench-{tag}-"))
    fleet = tmp / "fleet.toml"
    fleet.write_text(fleet_toml(plan))
    s = base.replace(kafka_bootstrap=bootstrap, topic_prefix=f"bench-{tag}",
                     faust_app_id=f"bench-{tag}", data_dir=tmp, db="mem://", metrics_port=-1,
                     meter_model="rules", allowed_lateness_s=round(plan.poll_s + LATENESS_SLACK_S, 3),
                     stations=plan.stations, seed=plan.seed, fleet=str(fleet),
                     partitions=partitions)
    topic = s.topic("events")
    sup = Supervisor(say=say, policy=RestartPolicy(max_quick_failures=1))
    admin = None
    watch: _EvidenceWatch | None = None
    result: dict[str, Any] = {}
    try:
        ensure_topics(s, partitions=partitions)
        say(f"filling {topic} with {plan.events:,} events, {plan.batch} per message ...")
        fill = _fill(bootstrap, topic, plan)
        offsets = fill.pop("_offsets")
        table, end = offsets.table(), offsets.end
        say(f"raw consume of {fill['messages']:,} messages ...")
        base_r = _raw_consume(bootstrap, topic, offsets)
        say("the workers' own code in process, for comparison ...")
        core_r = core_rate(s, plan, partitions)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 client_id="convergence-bench-lag",
                                 bootstrap_timeout_ms=kafka_client.BOOTSTRAP_TIMEOUT_MS)
        py = python or sys.executable
        log_dir = tmp / "logs"
        extra = ["--partitions", str(partitions)]

        def add_worker(i: int) -> None:
            sup.add(Child(f"worker {i}", "worker",
                          [*worker_argv(log_level=worker_log_level, store=i == 0, python=py),
                           *extra], worker_env(s), log_dir / f"worker-{i}.log", store=i == 0))

        say(f"starting {workers} worker(s) ..." if not join_late or workers == 1 else
            f"starting 1 worker; {workers - 1} more once it is draining the backlog ...")
        started = time.monotonic()
        for i in range(1 if join_late else workers):
            add_worker(i)
        # the workers are draining once their first ticks closed (their evidence is on the
        # node-evidence topic); they commit a message only later, once its ticks closed
        watch = _EvidenceWatch(bootstrap, s.topic("node-evidence"))
        cpu0: dict[str, float | None] = {c.name: None for c in sup.children}
        samples: list[tuple[float, int]] = []
        first: tuple[float, int] | None = None
        done_at: float | None = None
        deadline = started + drain_timeout_s
        while time.monotonic() < deadline:
            for child in sup.poll():
                raise RuntimeError(f"{child.name} (pid {child.proc.pid if child.proc else '?'}) "
                                   f"exited during the benchmark; its log:\n{_tail(child.log_path)}")
            committed = _committed(admin, s.faust_app_id, topic)
            now = time.monotonic()
            done = _events_before(table, committed)
            if first is None and (done > 0 or watch.handed_on()):
                first = (now, done)
                cpu0 = {c.name: _cpu_s(c.proc.pid) if c.proc else None for c in sup.children}
                if len(sup.children) < workers:
                    # join_late: the first worker is draining the backlog; the others join
                    # a busy group, the rebalance lands in its fetched batches
                    say(f"the first worker hands on evidence: starting {workers - 1} more ...")
                    for i in range(1, workers):
                        add_worker(i)
                        cpu0[f"worker {i}"] = 0.0
            samples.append((now, done))
            if all(committed.get(p, 0) >= e for p, e in end.items()):
                done_at = now
                break
            time.sleep(0.25)
        # the workers read their last input about when the committed offsets last stood
        # still for long (the tail's recovery hold): their watermark runs on from there
        quiet_wall = time.time() - (time.monotonic() - quiet_since(samples))
        if done_at is None:
            logs = "\n".join(f"  {c.name} ({c.log_path}):\n{_tail(c.log_path)}" for c in sup.children)
            raise RuntimeError(f"the workers did not consume the backlog within {drain_timeout_s:g} s "
                               f"(committed {samples[-1][1] if samples else 0:,} of "
                               f"{fill['events']:,} events); their logs:\n{logs}")
        cpu = {c.name: _cpu_s(c.proc.pid) if c.proc else None for c in sup.children}
        assert first is not None
        cpu_used = {name: _delta(cpu[name], cpu0.get(name)) for name in cpu}
        # the rate: from the first evidence handed on (or the first commit, if seen first)
        # until SUSTAINED_SHARE of the backlog is committed (startup and the recovery hold
        # of the backlog's last ticks left out; both are reported beside it); the CPU:
        # from then to the last commit
        timed = sustained_rate(samples, fill["events"], start=first)
        sustained_s, sustained_events = timed if timed is not None else (0.0, 0)
        rate = sustained_events / sustained_s if sustained_s > 0 else None
        worker_r: dict[str, Any] = {
            "startup_s": round(first[0] - started, 2),
            "drain_s": round(done_at - started, 2),
            "sustained_s": round(sustained_s, 2),
            "sustained_events": sustained_events,
            "sustained_share": SUSTAINED_SHARE,
            "events_per_s": round(rate) if rate else None,
            "tail_s": round(done_at - first[0] - sustained_s, 2) if timed is not None else None,
            "events_per_s_with_startup": round(fill["events"] / (done_at - started)),
            "messages_per_s": round(fill["messages"] * sustained_events / fill["events"] / sustained_s)
            if sustained_s > 0 else None,
            "cpu_s": cpu_used,
            "events_per_cpu_s": (round((fill["events"] - first[1])
                                       / sum(v for v in cpu_used.values() if v))
                                 if any(cpu_used.values()) else None),
            "progress": [(round(t - started, 2), e) for t, e in _thin(samples, 40)],
        }
        backlog_alerts = _count_alerts(bootstrap, s.topic("alerts"))
        live = _live(bootstrap, s, plan, say, quiet_wall) if plan.live_s > 0 else None
        for child in sup.poll():
            raise RuntimeError(f"{child.name} exited during the live phase; its log:\n"
                               f"{_tail(child.log_path)}")
        result.update({
            "workers": workers, "partitions": partitions, "batch": plan.batch,
            "join_late": join_late,
            "topic_prefix": s.topic_prefix,
            "poll_s": round(plan.poll_s, 3), "allowed_lateness_s": s.allowed_lateness_s,
            "events": fill["events"], "messages": fill["messages"],
            "avg_events_per_message": round(fill["events"] / fill["messages"], 2),
            "avg_message_bytes": round(fill["bytes"] / fill["messages"]),
            "fill": {k: fill[k] for k in ("seconds", "events_per_s")},
            "baseline": base_r,
            "cluster": worker_r,
            "core": core_r,
            # the workers' CPU per event beyond their own code's: Faust, aiokafka, tables
            "framework_share_of_cpu": (round(1.0 - worker_r["events_per_cpu_s"]
                                             / core_r["events_per_cpu_s"], 3)
                                       if worker_r["events_per_cpu_s"] and core_r["events_per_cpu_s"]
                                       else None),
            "ratio_to_baseline": round(rate / base_r["events_per_s"], 4) if rate else None,
            # per CPU second: less sensitive to what else runs on the machine
            "ratio_per_cpu_s": (round(worker_r["events_per_cpu_s"] / base_r["events_per_cpu_s"], 4)
                                if worker_r["events_per_cpu_s"] and base_r["events_per_cpu_s"]
                                else None),
            "consumed_all": True,
            "alerts": {"backlog": backlog_alerts, **(live or {})},
        })
        return result
    finally:
        # as `cluster down` does: the workers without the store first
        sup.stop([c for c in sup.children if not c.store], timeout_s=60.0)
        sup.stop([c for c in sup.children if c.store], timeout_s=60.0)
        if watch is not None:
            watch.close()
        result["worker_exit_codes"] = [c.proc.returncode if c.proc else None for c in sup.children]
        if result.get("consumed_all"):
            with contextlib.suppress(Exception):  # the figures stay; only this one is missing
                result["stages"] = _stage_figures(bootstrap, s, len(sup.children))
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
        _delete_topics(bootstrap, s)
        if result.get("consumed_all"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a failed run keeps its workers' logs for whoever looks into it
            for left in tmp.iterdir():
                if left.is_dir() and left.name != "logs":
                    shutil.rmtree(left, ignore_errors=True)
                elif not left.is_dir():
                    left.unlink(missing_ok=True)


def _stage_figures(bootstrap: str, s: Settings, workers: int) -> dict[str, Any]:
    """What crossed between the stages, from the workers' own counters (the ``runs``
    topic, one record per worker as it stopped) and the ``node-evidence`` topic."""
    from convergence.streams import kafka_client

    runs = [orjson.loads(r.value) for r in kafka_client.read_topic(bootstrap, s.topic("runs"))]
    runs = [r for r in runs if isinstance(r, dict) and isinstance(r.get("pipeline"), dict)]
    pipe = [r["pipeline"] for r in runs]
    core = [r.get("worker") or {} for r in runs]
    station_ticks = sum(int(p.get("station_ticks", 0)) for p in pipe)
    at_baseline = sum(int(p.get("station_ticks_at_baseline", 0)) for p in pipe)
    ne_bytes = ne_msgs = ne_stations = 0
    ticks: set[int] = set()
    for r in kafka_client.read_topic(bootstrap, s.topic("node-evidence"), timeout_s=30.0):
        ne_bytes += len(r.value)
        ne_msgs += 1
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            doc = orjson.loads(r.value)
            if isinstance(doc.get("ne"), dict):
                ticks.add(int(doc["ne"]["tick"]))
                ne_stations += len(doc["ne"].get("stations") or {})
    return {
        "worker_records": len(runs), "workers": workers,
        # events messages each worker took in (re-reads after a rebalance included)
        "messages_per_worker": sorted(int(c.get("messages", 0)) for c in core),
        # every closed tick of every first-stage partition, one per registered station
        "station_ticks": station_ticks, "station_ticks_at_baseline": at_baseline,
        "skipped_share": round(at_baseline / station_ticks, 4) if station_ticks else None,
        "ticks_closed": len(ticks),
        "node_evidence_messages": ne_msgs, "node_evidence_bytes": ne_bytes,
        "station_records": ne_stations,
        "bytes_per_tick": round(ne_bytes / len(ticks)) if ticks else None,
        "bytes_per_station_record": round(ne_bytes / ne_stations) if ne_stations else None,
        "evidence_bytes_counted": sum(int(c.get("evidence_bytes", 0)) for c in core),
        "progress_messages": sum(int(c.get("progress_messages", 0)) for c in core),
    }


def fleet_toml(plan: BacklogPlan) -> str:
    """The fleet file the workers learn the stations from (as ``cluster up`` writes one):
    the plan's fleet, each station declaring the rate it sends at."""
    from convergence.ground_stations.fleet import SourceSpec, default_specs, render_fleet

    specs = [replace(sp, source=SourceSpec("synthetic", {
        "rate_per_s": float(sp.source.options["rate_per_s"]) * plan.rate_scale}))
        for sp in default_specs(plan.stations, plan.seed)]
    return render_fleet(specs, seed=plan.seed,
                        comment=f"convergence bench cluster: the default fleet at {plan.rate_scale:g}x "
                                "its rates")


def _count_alerts(bootstrap: str, topic: str) -> int:
    from convergence.streams import kafka_client

    return len(kafka_client.read_topic(bootstrap, topic, timeout_s=10.0))


def _live(bootstrap: str, s: Settings, plan: BacklogPlan, say: Say,
          quiet_wall: float) -> dict[str, Any]:
    """The fleet in real time after the backlog; alert latency (see module docstring).

    Since the workers read the backlog's last events (about ``quiet_wall``: committed
    offsets trail them by up to Faust's commit interval) their watermark went on with
    wall time; the live phase's event time starts that much, plus a margin, after the
    backlog's end, so none of it is late: to the detectors, some quiet seconds.
    """
    reader = _AlertReader(bootstrap, s.topic("alerts"))
    producer = _producer(bootstrap)
    topic = s.topic("events")
    sent: list[tuple[float, Message]] = []
    shift = time.time() - quiet_wall + COMMIT_SLACK_S
    plan = replace(plan, t0_s=plan.t0_s + shift)
    live_t0 = plan.t0_s + plan.backlog_s
    regions = {e.region for e in plan.scenario().episodes if e.genuine and e.start_s >= plan.backlog_s}
    say(f"live phase: {plan.live_s:g} s in real time, {plan.live_episodes} genuine convergence(s) ...")
    try:
        wall0 = time.time()
        for m in backlog_messages(plan, live=True):
            wait = wall0 + (m.send_at_s - live_t0) - time.time()
            if wait > 0:
                time.sleep(wait)
            producer.send(topic, key=m.key, value=m.value)
            sent.append((time.time(), m))
        producer.flush()
        # the last ticks close once input has been quiet (idle advance) or later events came
        time.sleep(plan.poll_s + s.allowed_lateness_s + s.tick_s + 4.0)
    finally:
        producer.close(timeout=10)
        reader.close()
    latencies: list[float] = []
    per_alert = []
    others = 0
    for got_at, doc in reader.alerts:
        t_alert = float(doc.get("time_s", 0.0))
        if t_alert <= live_t0:
            continue
        region = doc.get("region")
        if region not in regions:
            others += 1
            continue
        contrib = [at for at, m in sent if m.region == region and m.first_s < t_alert]
        if not contrib:
            continue
        lat = got_at - max(contrib)
        latencies.append(lat)
        per_alert.append({"region": region, "level": doc.get("level"),
                          "tick_end_s": round(t_alert - live_t0, 2), "latency_s": round(lat, 3)})
    return {"live": len(per_alert), "live_elsewhere": others, "live_s": plan.live_s,
            "live_regions": sorted(regions), "live_gap_s": round(shift, 2),
            "live_events": sum(m.n_events for _, m in sent),
            "latency_s": {"p50": _round(percentile(latencies, 50)),
                          "p99": _round(percentile(latencies, 99)),
                          "max": _round(max(latencies) if latencies else None),
                          "n": len(latencies)},
            "per_alert": per_alert}


def compare(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sweep side by side: per batch size, each worker count's sustained rate over
    one worker's; per worker count, each batch size's over the smallest's.

    >>> compare([{"workers": 1, "batch": 10, "cluster": {"events_per_s": 100}},
    ...          {"workers": 2, "batch": 10, "cluster": {"events_per_s": 150}}])
    {'workers_speedup': {'10': {'2': 1.5}}, 'batch_speedup': {}}
    """
    rate = {(r["workers"], r["batch"]): r["cluster"].get("events_per_s") for r in runs
            if "cluster" in r}
    by_workers: dict[str, dict[str, float]] = {}
    by_batch: dict[str, dict[str, float]] = {}
    for (w, b), v in sorted(rate.items()):
        one = rate.get((min(x for x, y in rate if y == b), b))
        if v and one and w != min(x for x, y in rate if y == b):
            by_workers.setdefault(str(b), {})[str(w)] = round(v / one, 3)
        small = rate.get((w, min(y for x, y in rate if x == w)))
        if v and small and b != min(y for x, y in rate if x == w):
            by_batch.setdefault(str(w), {})[str(b)] = round(v / small, 3)
    return {"workers_speedup": by_workers, "batch_speedup": by_batch}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _delete_topics(bootstrap: str, s: Settings, timeout_s: float = 15.0) -> None:
    """Delete the run's topics (its own and Faust's changelogs) and its consumer group,
    waiting until the broker no longer lists them; best effort."""
    from kafka import KafkaAdminClient

    def ours(names: Sequence[str]) -> list[str]:
        return [t for t in names
                if t.startswith(f"{s.topic_prefix}-") or t.startswith(f"{s.faust_app_id}-")]

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                 client_id="convergence-bench-cleanup")
        try:
            names = ours(admin.list_topics())
            if names:
                admin.delete_topics(names)
            with contextlib.suppress(Exception):
                admin.delete_consumer_groups([s.faust_app_id])
            deadline = time.monotonic() + timeout_s
            while ours(admin.list_topics()) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            admin.close()
    except Exception:  # best effort: a left-over benchmark topic harms nobody
        pass


# -- the sweep ---------------------------------------------------------------------------------


def bench_cluster(settings: Settings, bootstrap: str, *, workers: Sequence[int] = (1,),
                  batches: Sequence[int] = (DEFAULT_BATCH,), events: int = 2_000_000,
                  partitions: int | None = None, rate_scale: float = DEFAULT_RATE_SCALE,
                  live_s: float = 20.0, live_episodes: int = 2, seed: int | None = None,
                  drain_timeout_s: float = 1800.0, say: Say = _quiet,
                  python: str | None = None, worker_log_level: str = "warning",
                  join_late: bool = False) -> dict[str, Any]:
    """Throughput and alert latency of real workers for each (workers, batch) pair
    (module docstring); one run after the other on the broker at ``bootstrap``.

    ``partitions``: of the events topic (and the ``node-evidence`` topic), default
    ``settings.partitions`` as ``cluster up`` creates them; a worker owns a share.
    ``join_late``: start one worker, and the others once it hands on its first evidence
    (scaling out a busy cluster: their rebalance lands in the middle of the backlog).
    ``worker_log_level``: of the workers' logs (kept when a run fails).
    """
    if not workers or any(not 1 <= w <= 16 for w in workers):
        raise ValueError(f"workers must be between 1 and 16, got {list(workers)}")
    if not batches or any(not 1 <= b <= 5000 for b in batches):
        raise ValueError(f"batch must be between 1 and 5000 events per message, got {list(batches)}")
    if events < 1000:
        raise ValueError(f"events must be >= 1000, got {events}")
    if partitions is not None and not 1 <= partitions <= 64:
        raise ValueError(f"partitions must be between 1 and 64, got {partitions}")
    if live_s < 0 or live_episodes < 0:
        raise ValueError(f"live_s and live_episodes must be >= 0, got {live_s}, {live_episodes}")
    seed = settings.seed if seed is None else seed
    runs = []
    t_start = time.time()
    for w in workers:
        for b in batches:
            # event time: the backlog ends a little before now; the live phase continues it
            plan = BacklogPlan(stations=settings.stations, seed=seed, batch=b, events=events,
                               rate_scale=rate_scale, live_s=live_s, live_episodes=live_episodes)
            plan = replace(plan, t0_s=float(math.floor(time.time())) - plan.backlog_s - 60.0)
            say(f"run: {w} worker(s), {b} events per message")
            try:
                runs.append(_run_once(settings, bootstrap, plan, workers=w,
                                      partitions=partitions or settings.partitions,
                                      drain_timeout_s=drain_timeout_s,
                                      say=say, python=python,
                                      worker_log_level=worker_log_level,
                                      join_late=join_late))
            except RuntimeError as exc:  # the other runs still count; this one says why not
                say(f"run failed: {exc}")
                runs.append({"workers": w, "batch": b, "error": str(exc)[:4000]})
    import kafka

    return {
        "benchmark": "cluster", "stations": settings.stations, "seed": seed,
        "rate_scale": rate_scale, "events_requested": events, "live_s": live_s,
        "live_episodes": live_episodes, "runs": runs, "compare": compare(runs),
        "seconds": round(time.time() - t_start, 1), "kafka_bootstrap": bootstrap,
        "kafka_python": kafka.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }

"""The cluster benchmark's figures: committed offsets into events, and the JSON they make.

The harness sees only what the broker shows: which offsets the workers' consumer group
committed. :class:`OffsetTable` (filled as the backlog is produced) turns those offsets
into events; :func:`sustained_rate` and :func:`quiet_since` read the drain's rate and
its quiet tail from the samples; :func:`drain_figures` and :func:`run_figures` shape one
run's JSON (the field names ``convergence bench cluster --json`` prints), and
:func:`compare` sets the runs of a sweep side by side. Pure arithmetic: no Kafka, no
processes.

Examples
--------
>>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 99)
(2.5, None)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergence.settings import Settings
from convergence.simulation.cluster_backlog import BacklogPlan

__all__ = ["SUSTAINED_SHARE", "OffsetTable", "compare", "cpu_delta", "drain_figures", "events_before",
           "percentile", "quiet_since", "run_figures", "sustained_rate", "thin"]

#: the sustained rate is timed until this share of the backlog is committed: the last
#: ticks of a backlog close only after the watermark's recovery hold (a partition that
#: was behind waits ``RECOVER_S`` of caught-up time for stragglers), a wait that is the
#: same for any number of workers and would hide their speed
SUSTAINED_SHARE = 0.9


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), ``None`` for no values."""
    if not xs:
        return None
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


@dataclass
class OffsetTable:
    """Per partition: the events of the messages at each offset (to turn committed
    offsets into events)."""

    by_partition: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked(self, n_events: int, meta: Any) -> None:
        """A producer's callback: the message of ``n_events`` events is at ``meta``'s
        partition and offset."""
        with self.lock:
            self.by_partition.setdefault(meta.partition, []).append((meta.offset, n_events))

    def error(self, _exc: BaseException) -> None:
        """A producer's error callback: one message was not written."""
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
        """Per partition: the offset after the last message produced."""
        return {p: max(o for o, _ in rows) + 1 for p, rows in self.by_partition.items()}


def thin(samples: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    """At most about ``most`` evenly spaced samples, always ending with the last one.

    >>> thin([(float(i), i) for i in range(10)], 4)[-1]
    (9.0, 9)
    """
    kept = samples[:: max(len(samples) // most, 1)]
    if samples and kept[-1] != samples[-1]:
        kept.append(samples[-1])
    return kept


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


def events_before(table: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
                  committed: dict[int, int]) -> int:
    """The events of the messages before the ``committed`` offsets (per partition), from
    :meth:`OffsetTable.table`.

    >>> t = OffsetTable()
    >>> for off, n in [(0, 5), (1, 7), (2, 3)]:
    ...     t.acked(n, type("Meta", (), {"partition": 0, "offset": off}))
    >>> events_before(t.table(), {0: 2}), events_before(t.table(), {})
    (12, 0)
    """
    total = 0
    for p, (offs, cum) in table.items():
        total += int(cum[int(np.searchsorted(offs, committed.get(p, 0), "left"))])
    return total


def round3(x: float | None) -> float | None:
    """``x`` to three decimals, ``None`` stays ``None``."""
    return None if x is None else round(x, 3)


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


def cpu_delta(end: float | None, start: float | None) -> float | None:
    """CPU seconds between two readings (``None`` if either is unknown), to 0.01 s."""
    return None if end is None or start is None else round(end - start, 2)


def drain_figures(samples: list[tuple[float, int]], fill: Mapping[str, Any], *, started: float,
                  first: tuple[float, int], done_at: float,
                  cpu_used: Mapping[str, float | None]) -> tuple[dict[str, Any], float | None]:
    """The workers' drain of the backlog (the ``cluster`` part of a run's JSON) and its
    sustained rate in events per second (``None``: too short to time).

    ``samples`` are ``(monotonic time, events committed)``; ``started`` when the workers
    were started, ``first`` the first sample at which they handed on evidence (or
    committed), ``done_at`` when every event was committed; ``fill`` is what was
    produced (``events``, ``messages``); ``cpu_used`` each worker's CPU seconds since
    ``first``. The rate runs from ``first`` until :data:`SUSTAINED_SHARE` of the backlog
    is committed (start-up and the recovery hold of the backlog's last ticks left out;
    both are reported beside it); the CPU, from then to the last commit.

    >>> samples = [(0.0, 0), (2.0, 0), (4.0, 400), (6.0, 900), (40.0, 1000)]
    >>> figs, rate = drain_figures(samples, {"events": 1000, "messages": 100}, started=0.0,
    ...                            first=(2.0, 0), done_at=40.0, cpu_used={"worker 0": 5.0})
    >>> rate, figs["events_per_s"], figs["tail_s"], figs["events_per_cpu_s"]
    (225.0, 225, 34.0, 200)
    """
    timed = sustained_rate(samples, fill["events"], start=first)
    sustained_s, sustained_events = timed if timed is not None else (0.0, 0)
    rate = sustained_events / sustained_s if sustained_s > 0 else None
    figures: dict[str, Any] = {
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
        "cpu_s": dict(cpu_used),
        "events_per_cpu_s": (round((fill["events"] - first[1])
                                   / sum(v for v in cpu_used.values() if v))
                             if any(cpu_used.values()) else None),
        "progress": [(round(t - started, 2), e) for t, e in thin(samples, 40)],
    }
    return figures, rate


def run_figures(plan: BacklogPlan, s: Settings, *, workers: int, partitions: int, join_late: bool,
                fill: Mapping[str, Any], baseline: Mapping[str, Any], cluster: Mapping[str, Any],
                rate: float | None, core: Mapping[str, Any],
                alerts: Mapping[str, Any]) -> dict[str, Any]:
    """One run's JSON (its ``runs`` entry, before the stop adds the exit codes and the
    stage figures): what was sent, the raw consume (``baseline``), the workers' drain
    (``cluster``, from :func:`drain_figures`, with its sustained ``rate``), their code in
    process (``core``) and the alerts, with the ratios between them."""
    return {
        "workers": workers, "partitions": partitions, "batch": plan.batch,
        "join_late": join_late,
        "topic_prefix": s.topic_prefix,
        "poll_s": round(plan.poll_s, 3), "allowed_lateness_s": s.allowed_lateness_s,
        "events": fill["events"], "messages": fill["messages"],
        "avg_events_per_message": round(fill["events"] / fill["messages"], 2),
        "avg_message_bytes": round(fill["bytes"] / fill["messages"]),
        "fill": {k: fill[k] for k in ("seconds", "events_per_s")},
        "baseline": baseline,
        "cluster": cluster,
        "core": core,
        # the workers' CPU per event beyond their own code's: Faust, aiokafka, tables
        "framework_share_of_cpu": (round(1.0 - cluster["events_per_cpu_s"]
                                         / core["events_per_cpu_s"], 3)
                                   if cluster["events_per_cpu_s"] and core["events_per_cpu_s"]
                                   else None),
        "ratio_to_baseline": round(rate / baseline["events_per_s"], 4) if rate else None,
        # per CPU second: less sensitive to what else runs on the machine
        "ratio_per_cpu_s": (round(cluster["events_per_cpu_s"] / baseline["events_per_cpu_s"], 4)
                            if cluster["events_per_cpu_s"] and baseline["events_per_cpu_s"]
                            else None),
        "consumed_all": True,
        "alerts": dict(alerts),
    }

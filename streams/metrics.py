"""A worker's Prometheus metrics: what it counts, how it serves them, how they are read back.

This module owns three things:

* :class:`WorkerMetrics` - the counters, histograms and gauges one worker keeps, behind
  explicit methods the worker core calls (``events_in``, ``dead_letter``,
  ``tick_closed``, ``stage_time``, ``alert_latency``, ``lag``), and the HTTP endpoint
  that serves them (:meth:`WorkerMetrics.serve`, ``/metrics`` in Prometheus' text
  format, from a daemon thread, so a busy event loop never delays a scrape);
* :func:`dead_letter_reason` - the bounded set of reasons a dead letter is counted
  under (the free-text reason stays on the dead letter itself);
* :func:`scrape` / :func:`summarise` / :func:`histogram_quantile` - reading an endpoint
  back into the few numbers ``convergence cluster status`` prints.

Metrics (all prefixed ``convergence_``):

================================  =========  ==============================================
name                              type       labels (every label set is bounded)
================================  =========  ==============================================
events_in_total                   counter    -
dead_letters_total                counter    reason (:data:`DEAD_LETTER_REASONS`)
ticks_closed_total                counter    stage (at most :data:`MAX_STAGES` names)
stage_seconds                     histogram  stage: processing time per tick or batch
alert_latency_seconds             histogram  -: wall clock at publication minus the
                                             event time at the end of the alert's tick
consumer_lag                      gauge      topic, partition (<= :data:`MAX_PARTITIONS`)
worker_start_time_seconds         gauge      -
================================  =========  ==============================================

Each :class:`WorkerMetrics` has a registry of its own (not prometheus_client's global
one), so tests and several workers in one process never share counters.

Examples
--------
>>> m = WorkerMetrics()
>>> m.events_in(120); m.dead_letter("late"); m.dead_letter("no such reason")
>>> m.tick_closed("tick", 0.004); m.alert_latency(2.5); m.lag(0, 42)
>>> s = summarise(m.exposition().decode())
>>> s["events_in"], s["dead_letters"], s["ticks_closed"], s["lag_total"], s["alerts"]
(120, {'late': 1, 'other': 1}, {'tick': 1}, 42, 1)
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from convergence.schema import DeadLetter

__all__ = ["DEAD_LETTER_REASONS", "MAX_PARTITIONS", "MAX_STAGES", "MetricsError", "WorkerMetrics",
           "dead_letter_reason", "histogram_quantile", "scrape", "summarise"]

#: What a dead letter is counted under. ``other`` catches anything not listed, so a new
#: reason elsewhere in the code can never grow the label set.
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "undecodable",      # the message is not a wire batch (not JSON, wrong version, shape)
    "too_large",        # a message, an event or a field over its size limit
    "invalid_event",    # an event failed validation (types, ranges, kinds)
    "bad_time",         # event time too far in the future or the past
    "bad_station",      # the station id is malformed
    "unknown_station",  # a station no fleet file or status declared
    "late",             # arrived after its tick closed
    "duplicate",        # an event id seen before
    "internal_error",   # the worker itself failed on this input (a bug)
    "other",
)
MAX_STAGES = 16
MAX_PARTITIONS = 1024
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)
_ALERT_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_MAX_SCRAPE_BYTES = 2_000_000


class MetricsError(RuntimeError):
    """A metrics endpoint cannot be served or read; the message says which and why."""


def dead_letter_reason(d: DeadLetter) -> str:
    """The bounded reason (one of :data:`DEAD_LETTER_REASONS`) a dead letter counts under.

    >>> from convergence.schema import dead_letter, ValidationError
    >>> dead_letter_reason(dead_letter("wire", b"{", ValidationError("message",
    ...     "is not valid JSON"), received_at_s=0.0))
    'undecodable'
    >>> dead_letter_reason(dead_letter("ingest", {}, ValidationError("event_time_s",
    ...     "arrived after its tick closed (allowed lateness 1.5 s)"), received_at_s=0.0))
    'late'
    """
    reason, where = d.reason.lower(), d.field
    if d.stage == "worker" or reason.startswith("internal error"):
        return "internal_error"
    if "arrived after its tick closed" in reason:
        return "late"
    if "duplicate" in reason:
        return "duplicate"
    if "the limit is" in reason or "encodes to more than" in reason:
        return "too_large"
    if where in ("message", "v", "events"):
        return "undecodable"
    if "unknown station" in reason or "not in the fleet" in reason:
        return "unknown_station"
    if where == "station_id":
        return "bad_station"
    if where == "event_time_s":
        return "bad_time"
    return "invalid_event"


class _Bounded:
    """Label values seen so far; past ``limit`` distinct ones, new values become ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class WorkerMetrics:
    """The metrics of one worker (see module docstring); every method is cheap and
    thread-safe, and none raises on a bad value (metrics never stop a stream).

    Parameters
    ----------
    registry: where the metrics live; default a fresh registry of this object's own.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._events = Counter("convergence_events_in", "Valid events decoded by this worker.",
                               registry=r)
        self._dead = Counter("convergence_dead_letters", "Dead letters by bounded reason.",
                             ["reason"], registry=r)
        self._ticks = Counter("convergence_ticks_closed", "Ticks closed, by pipeline stage.",
                              ["stage"], registry=r)
        self._stage = Histogram("convergence_stage_seconds",
                                "Processing time of one tick (or one ingest batch) per stage.",
                                ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self._alert = Histogram("convergence_alert_latency_seconds",
                                "Wall clock at publication minus the event time at the end of "
                                "the alert's tick.", buckets=_ALERT_BUCKETS, registry=r)
        self._lag = Gauge("convergence_consumer_lag",
                          "Messages between this worker's position and the partition's end.",
                          ["topic", "partition"], registry=r)
        started = Gauge("convergence_worker_start_time_seconds",
                        "When this worker started, unix seconds.", registry=r)
        started.set(time.time())
        for reason in DEAD_LETTER_REASONS:  # every reason shows, at 0, from the first scrape
            self._dead.labels(reason=reason)
        self._stages = _Bounded(MAX_STAGES)
        self._partitions = _Bounded(MAX_PARTITIONS)
        self._topics = _Bounded(MAX_STAGES)
        self._server: Any = None
        self.port: int | None = None

    # -- what the worker core calls ---------------------------------------------------
    def events_in(self, n: int) -> None:
        """``n`` valid events were decoded."""
        if n > 0:
            self._events.inc(n)

    def dead_letter(self, reason: str) -> None:
        """One dead letter; ``reason`` is one of :data:`DEAD_LETTER_REASONS` (else ``other``)."""
        self._dead.labels(reason=reason if reason in DEAD_LETTER_REASONS else "other").inc()

    def tick_closed(self, stage: str, seconds: float) -> None:
        """``stage`` closed one tick, which took ``seconds`` of processing."""
        label = self._stage_label(stage)
        self._ticks.labels(stage=label).inc()
        if math.isfinite(seconds):
            self._stage.labels(stage=label).observe(max(seconds, 0.0))

    def stage_time(self, stage: str, seconds: float) -> None:
        """Processing time of work that is not a tick (e.g. one ingest batch)."""
        if math.isfinite(seconds):
            self._stage.labels(stage=self._stage_label(stage)).observe(max(seconds, 0.0))

    def alert_latency(self, seconds: float) -> None:
        """An alert was published ``seconds`` after the end of its tick (event time)."""
        if math.isfinite(seconds):
            self._alert.observe(max(seconds, 0.0))

    def lag(self, partition: int, n: int, topic: str = "events") -> None:
        """This worker is ``n`` messages behind the end of ``topic``'s ``partition``."""
        p = self._partitions(str(int(partition))) if partition >= 0 else "other"
        t = self._topics(topic) if _STAGE_RE.match(topic.replace("-", "_")) else "other"
        self._lag.labels(topic=t, partition=p).set(max(int(n), 0))

    def _stage_label(self, stage: str) -> str:
        return self._stages(stage) if _STAGE_RE.match(stage) else "other"

    # -- serving ----------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (what ``/metrics`` returns)."""
        return generate_latest(self.registry)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the port
        (``0`` picks a free one). Raises :class:`MetricsError` when it cannot listen."""
        if self._server is not None:
            raise MetricsError(f"metrics are already served on port {self.port}")
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(
                f"cannot serve worker metrics on {host}:{port} ({exc}); pick another port with "
                "CONVERGENCE_METRICS_PORT (0 picks a free one, -1 turns the endpoint off)") from None
        self._server = server
        self.port = int(server.server_port)
        return self.port

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- reading an endpoint back ------------------------------------------------------------


def scrape(url: str, *, timeout_s: float = 2.0) -> str:
    """The text of a metrics endpoint (at most 2 MB); :class:`MetricsError` if unreadable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body: bytes = resp.read(_MAX_SCRAPE_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise MetricsError(f"cannot read metrics at {url}: {exc}") from None
    if len(body) > _MAX_SCRAPE_BYTES:
        raise MetricsError(f"metrics at {url} are larger than {_MAX_SCRAPE_BYTES} bytes; "
                           "is that a convergence worker?")
    return body.decode("utf-8", errors="replace")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Estimate quantile ``q`` from cumulative ``(upper bound, count)`` buckets, as
    Prometheus' ``histogram_quantile`` does (linear within a bucket); ``None`` if empty.

    >>> histogram_quantile(0.5, [(1.0, 2), (2.0, 6), (math.inf, 6)])  # rank 3 of 6
    1.25
    >>> histogram_quantile(0.99, [(1.0, 0), (math.inf, 3)])  # beyond the last bound
    1.0
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _families(text: str) -> Iterable[Any]:
    try:
        yield from text_string_to_metric_families(text)
    except ValueError as exc:
        raise MetricsError(f"not Prometheus text format: {exc}") from None


def summarise(text: str) -> dict[str, Any]:
    """The numbers ``cluster status`` prints, from one scrape of a worker's endpoint.

    Keys: ``events_in``, ``dead_letters`` (reason -> count, non-zero only),
    ``dead_letters_total``, ``ticks_closed`` (stage -> count), ``stage_mean_s`` (stage ->
    mean seconds), ``alerts``, ``alert_latency_p50_s`` / ``_p99_s`` (``None`` without
    alerts), ``lag`` (``topic[partition]`` -> messages), ``lag_total``, ``started_s``.
    """
    out: dict[str, Any] = {"events_in": 0, "dead_letters": {}, "dead_letters_total": 0,
                           "ticks_closed": {}, "stage_mean_s": {}, "alerts": 0,
                           "alert_latency_p50_s": None, "alert_latency_p99_s": None,
                           "lag": {}, "lag_total": 0, "started_s": None}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    alert_buckets: list[tuple[float, float]] = []
    for fam in _families(text):
        for s in fam.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "convergence_events_in_total":
                out["events_in"] = int(value)
            elif name == "convergence_dead_letters_total" and value > 0:
                out["dead_letters"][labels.get("reason", "other")] = int(value)
            elif name == "convergence_ticks_closed_total":
                out["ticks_closed"][labels.get("stage", "other")] = int(value)
            elif name == "convergence_stage_seconds_sum":
                sums[labels.get("stage", "other")] = value
            elif name == "convergence_stage_seconds_count":
                counts[labels.get("stage", "other")] = value
            elif name == "convergence_alert_latency_seconds_bucket":
                alert_buckets.append((float(labels["le"]), value))
            elif name == "convergence_consumer_lag":
                out["lag"][f"{labels.get('topic', '?')}[{labels.get('partition', '?')}]"] = int(value)
            elif name == "convergence_worker_start_time_seconds":
                out["started_s"] = value
    out["dead_letters_total"] = sum(out["dead_letters"].values())
    out["stage_mean_s"] = {k: sums.get(k, 0.0) / n for k, n in counts.items() if n > 0}
    out["lag_total"] = sum(out["lag"].values())
    if alert_buckets:
        out["alerts"] = int(max(c for _, c in alert_buckets))
        out["alert_latency_p50_s"] = histogram_quantile(0.5, alert_buckets)
        out["alert_latency_p99_s"] = histogram_quantile(0.99, alert_buckets)
    return out

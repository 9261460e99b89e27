"""Worker metrics: what is counted, that every label set stays bounded, the HTTP endpoint,
reading it back, and the worker core counting into it.

A real worker's endpoint on a real broker, read by ``cluster status``, is tested in
``tests/cli/test_cluster.py``.
"""

from __future__ import annotations

import math
import socket
import time
import urllib.request
from typing import Any

import orjson
import pytest

from convergence.schema import ValidationError, dead_letter
from convergence.settings import load_settings
from convergence.streams.metrics import (
    DEAD_LETTER_REASONS,
    MAX_PARTITIONS,
    MAX_STAGES,
    MetricsError,
    WorkerMetrics,
    dead_letter_reason,
    histogram_quantile,
    scrape,
    summarise,
)
from convergence.streams.worker import WorkerCore
from convergence.wire import encode_raw


def _samples(m: WorkerMetrics, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.labels, s.value) for fam in text_string_to_metric_families(m.exposition().decode())
            for s in fam.samples if s.name == name]


def test_counts_go_where_they_belong() -> None:
    m = WorkerMetrics()
    m.events_in(10)
    m.events_in(0)
    m.events_in(-3)  # nonsense is ignored, never raised
    m.dead_letter("late")
    m.dead_letter("late")
    m.tick_closed("tick", 0.002)
    m.tick_closed("tick", float("nan"))  # counted as a tick, not as a duration
    m.stage_time("ingest", 0.01)
    m.alert_latency(1.5)
    m.alert_latency(-4.0)  # a clock behind the event time counts as 0
    m.lag(0, 7)
    m.lag(0, -2)  # behind the end by a negative amount: 0
    s = summarise(m.exposition().decode())
    assert s["events_in"] == 10 and s["dead_letters"] == {"late": 2}
    assert s["ticks_closed"] == {"tick": 2} and s["alerts"] == 2
    assert s["stage_mean_s"]["tick"] == pytest.approx(0.002)
    assert s["stage_mean_s"]["ingest"] == pytest.approx(0.01)
    assert s["lag"] == {"events[0]": 0} and s["lag_total"] == 0
    assert s["started_s"] == pytest.approx(time.time(), abs=60)
    # every reason is exported from the first scrape, at 0
    reasons = {labels["reason"] for labels, _ in _samples(m, "convergence_dead_letters_total")}
    assert reasons == set(DEAD_LETTER_REASONS)


def test_every_label_set_is_bounded_whatever_the_caller_passes() -> None:
    m = WorkerMetrics()
    for i in range(200):
        m.dead_letter(f"reason {i}: field x was {i!r}")
        m.tick_closed(f"stage_{i}", 0.001)
        m.lag(i * 1000, 1)
    m.tick_closed("Not A Stage Name!", 0.001)
    m.lag(-1, 1, topic="a topic with spaces")
    reasons = {labels["reason"] for labels, _ in _samples(m, "convergence_dead_letters_total")}
    assert reasons == set(DEAD_LETTER_REASONS)
    stages = {labels["stage"] for labels, _ in _samples(m, "convergence_ticks_closed_total")}
    assert len(stages) == MAX_STAGES + 1 and "other" in stages
    parts = {labels["partition"] for labels, _ in _samples(m, "convergence_consumer_lag")}
    assert len(parts) <= MAX_PARTITIONS + 1 and "other" in parts
    topics = {labels["topic"] for labels, _ in _samples(m, "convergence_consumer_lag")}
    assert topics == {"events", "other"}
    assert len(m.exposition()) < 200_000


def test_dead_letters_count_under_a_bounded_reason() -> None:
    def dl(stage: str, field: str, reason: str) -> Any:
        return dead_letter(stage, b"x", ValidationError(field, reason), received_at_s=0.0)

    cases = {
        "undecodable": dl("wire", "message", "is not valid JSON (unexpected character)"),
        "too_large": dl("wire", "message", "is 9000000 bytes; the limit is 8192000; split the batch"),
        "late": dl("ingest", "event_time_s", "arrived after its tick closed (allowed lateness 1.5 s)"),
        "bad_time": dl("wire", "event_time_s", "1.000 is 1700000000 s in the past (limit 604800 s)"),
        "bad_station": dl("wire", "station_id", "'a b' must match [A-Za-z0-9_.:-]{1,64}"),
        "invalid_event": dl("wire", "value", "'twelve' is not a number"),
        "duplicate": dl("ingest", "event_id", "duplicate of an event already counted"),
        "unknown_station": dl("ingest", "station_id", "unknown station 'x': not in the fleet"),
    }
    for want, d in cases.items():
        assert dead_letter_reason(d) == want, d.reason
    internal = dead_letter("worker", b"x", "internal error KeyError: 'a'; this is a bug",
                           received_at_s=0.0)
    assert dead_letter_reason(internal) == "internal_error"
    assert set(cases) | {"internal_error"} <= set(DEAD_LETTER_REASONS)


def test_quantiles_from_histogram_buckets() -> None:
    buckets = [(0.5, 0.0), (1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_the_endpoint_serves_prometheus_text_and_is_read_back() -> None:
    m = WorkerMetrics()
    m.events_in(5)
    port = m.serve(0)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = resp.read().decode()
        assert "convergence_events_in_total 5.0" in body
        assert summarise(scrape(url))["events_in"] == 5
        with pytest.raises(MetricsError, match="already served"):
            m.serve(0)
    finally:
        m.close()
        m.close()  # idempotent
    with pytest.raises(MetricsError, match="cannot read metrics at"):
        scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=1.0)


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match="CONVERGENCE_METRICS_PORT"):
            WorkerMetrics().serve(port)


def test_text_that_is_not_prometheus_is_refused() -> None:
    with pytest.raises(MetricsError, match="not Prometheus text format"):
        summarise("this is { not metrics\n")


# -- the worker core counts into its metrics ------------------------------------------------


def test_the_worker_core_counts_events_dead_letters_ticks_and_alerts(feed: Any) -> None:
    s = load_settings(env={}, config_path=None)
    metrics = WorkerMetrics()
    core = WorkerCore(s, run_id="metrics-test", metrics=metrics)
    now = time.time()
    t0 = now - 25.0
    emits = core.on_message(b"{not json", b"probe-001", now)
    emits += core.on_message(encode_raw(feed.probe_batch(t0 + 0.2)), b"probe-001", now)
    for i, (sid, recs) in enumerate(feed.messages(s, t0)):
        emits += core.on_message(encode_raw(recs), sid.encode(), now + i * 1e-4)
    emits += core.on_timer(now + 10.0)
    emits += core.on_stop()
    got = summarise(metrics.exposition().decode())
    pipe = core.pipeline.counters
    alerts = [orjson.loads(e.value) for e in emits if e.topic == "alerts"]
    dead = [e for e in emits if e.topic == "dead-letter"]
    assert alerts and got["alerts"] == len(alerts)
    assert got["ticks_closed"] == {"tick": pipe.ticks}
    # events in counts receipts; the station summaries count distinct events
    assert got["events_in"] == sum(st["events"] for st in core.stations.values()) + pipe.duplicates
    assert got["dead_letters_total"] == len(dead)
    assert got["dead_letters"]["undecodable"] == 1 and got["dead_letters"]["invalid_event"] >= 1
    assert got["stage_mean_s"]["ingest"] > 0 and got["stage_mean_s"]["tick"] > 0
    # replayed 25 s late: the alert went out well after its tick's event time
    assert got["alert_latency_p50_s"] is not None and got["alert_latency_p50_s"] >= 5.0

"""The cluster benchmark's arithmetic: committed offsets into events, the sustained rate and
its tail, the JSON of one run, and a sweep set side by side."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from convergence.settings import load_settings
from convergence.simulation.cluster_backlog import BacklogPlan
from convergence.simulation.cluster_figures import (
    SUSTAINED_SHARE,
    OffsetTable,
    compare,
    drain_figures,
    events_before,
    percentile,
    quiet_since,
    run_figures,
)


def test_the_sweep_is_compared_with_one_worker_and_the_smallest_batch() -> None:
    runs = [{"workers": w, "batch": b, "cluster": {"events_per_s": w * b * 10}}
            for w in (1, 2) for b in (10, 100)]
    assert compare(runs) == {"workers_speedup": {"10": {"2": 2.0}, "100": {"2": 2.0}},
                             "batch_speedup": {"1": {"100": 10.0}, "2": {"100": 10.0}}}


def test_percentiles() -> None:
    assert percentile([3.0], 99) == 3.0 and percentile([1.0, 3.0], 50) == 2.0
    assert percentile([], 50) is None


def test_committed_offsets_count_the_events_of_the_messages_before_them() -> None:
    t = OffsetTable()
    # acknowledgements come back out of order, from two partitions
    for partition, offset, n in [(0, 1, 7), (1, 0, 4), (0, 0, 5), (0, 2, 3), (1, 1, 6)]:
        t.acked(n, SimpleNamespace(partition=partition, offset=offset))
    t.error(RuntimeError("one lost"))
    assert t.failed == 1 and t.end == {0: 3, 1: 2}
    table = t.table()
    assert events_before(table, {}) == 0
    assert events_before(table, {0: 1}) == 5 and events_before(table, {0: 2, 1: 1}) == 16
    assert events_before(table, t.end) == 25


def test_the_drain_is_timed_from_the_first_evidence_to_the_sustained_share() -> None:
    # started at 0; evidence handed on at 10 s; 90 % committed at 30 s; the tail until 70 s
    samples = [(0.0, 0), (10.0, 0), (20.0, 4_000), (30.0, 9_000), (50.0, 9_000), (70.0, 10_000)]
    fill = {"events": 10_000, "messages": 1_000}
    figs, rate = drain_figures(samples, fill, started=0.0, first=(10.0, 0), done_at=70.0,
                               cpu_used={"worker 0": 20.0, "worker 1": None})
    assert rate == pytest.approx(9_000 / 20.0)
    assert figs["startup_s"] == 10.0 and figs["drain_s"] == 70.0 and figs["sustained_s"] == 20.0
    assert figs["sustained_share"] == SUSTAINED_SHARE and figs["events_per_s"] == 450
    assert figs["tail_s"] == 40.0 and figs["events_per_s_with_startup"] == round(10_000 / 70.0)
    assert figs["messages_per_s"] == 45 and figs["events_per_cpu_s"] == 500
    assert figs["progress"][-1] == (70.0, 10_000)
    # the workers' tail waits for the recovery hold: where it began
    assert quiet_since(samples) == 30.0


def test_a_drain_too_short_to_time_has_no_rate() -> None:
    figs, rate = drain_figures([(0.0, 0), (1.0, 10_000)], {"events": 10_000, "messages": 1_000},
                               started=0.0, first=(1.0, 10_000), done_at=1.0, cpu_used={"w": None})
    assert rate is None and figs["events_per_s"] is None and figs["tail_s"] is None
    assert figs["messages_per_s"] is None and figs["events_per_cpu_s"] is None


def test_a_run_is_reported_with_its_ratios_to_the_baseline_and_the_core() -> None:
    plan = BacklogPlan(stations=30, seed=5, batch=10, events=3000)
    s = load_settings(env={}, config_path=None).replace(topic_prefix="bench-x", allowed_lateness_s=2.5)
    fill = {"events": 3000, "messages": 300, "bytes": 60_000, "seconds": 1.0, "events_per_s": 3000}
    run = run_figures(plan, s, workers=2, partitions=4, join_late=False, fill=fill,
                      baseline={"events_per_s": 1000, "events_per_cpu_s": 2000},
                      cluster={"events_per_cpu_s": 500}, rate=250.0,
                      core={"events_per_cpu_s": 1000}, alerts={"backlog": 3})
    assert run["workers"] == 2 and run["partitions"] == 4 and run["batch"] == 10
    assert run["topic_prefix"] == "bench-x" and run["allowed_lateness_s"] == 2.5
    assert run["poll_s"] == round(plan.poll_s, 3) and run["avg_events_per_message"] == 10.0
    assert run["avg_message_bytes"] == 200 and run["fill"] == {"seconds": 1.0, "events_per_s": 3000}
    assert run["ratio_to_baseline"] == 0.25 and run["ratio_per_cpu_s"] == 0.25
    assert run["framework_share_of_cpu"] == 0.5
    assert run["consumed_all"] is True and run["alerts"] == {"backlog": 3}
    unknown = run_figures(plan, s, workers=1, partitions=4, join_late=True, fill=fill,
                          baseline={"events_per_s": 1000, "events_per_cpu_s": None},
                          cluster={"events_per_cpu_s": None}, rate=None,
                          core={"events_per_cpu_s": 1000}, alerts={})
    assert unknown["ratio_to_baseline"] is None and unknown["ratio_per_cpu_s"] is None
    assert unknown["framework_share_of_cpu"] is None

"""``convergence bench cluster``: argument checks without a broker, and a small real run
against the broker (``-m kafka``): the JSON's shape and that every event was
consumed - never a speed (speed is the benchmark's business, not a test's)."""

from __future__ import annotations

import orjson
import pytest
import typer
from typer.testing import CliRunner

from convergence.cli.bench import cluster

bench = typer.Typer()


@bench.callback()
def _group() -> None:
    """Mounted as the real ``bench`` sub-app mounts it."""


bench.command("cluster")(cluster)

RUN_KEYS = {"workers", "partitions", "batch", "poll_s", "allowed_lateness_s", "events", "messages",
            "avg_events_per_message", "avg_message_bytes", "fill", "baseline", "cluster",
            "ratio_to_baseline", "ratio_per_cpu_s", "consumed_all", "alerts", "topic_prefix",
            "worker_exit_codes", "core", "framework_share_of_cpu", "stages", "join_late"}
CLUSTER_KEYS = {"startup_s", "drain_s", "sustained_s", "sustained_events", "events_per_s",
                "events_per_s_with_startup", "messages_per_s", "cpu_s", "events_per_cpu_s",
                "sustained_share", "tail_s",
                "progress"}


def test_the_parts_names_are_still_importable_from_the_bench() -> None:
    # callers import the backlog's and the figures' names from the bench module
    from convergence.simulation import bench_cluster, cluster_backlog, cluster_figures

    for name in ("BacklogPlan", "Message", "backlog_messages", "fleet_toml", "DEFAULT_BATCH"):
        assert getattr(bench_cluster, name) is getattr(cluster_backlog, name)
    for name in ("compare", "percentile", "sustained_rate", "quiet_since", "SUSTAINED_SHARE"):
        assert getattr(bench_cluster, name) is getattr(cluster_figures, name)


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "1,x"], ["--batch", "0"],
                                  ["--batch", ""]])
def test_bad_lists_are_refused_with_the_option_named(args: list[str]) -> None:
    r = CliRunner().invoke(bench, ["cluster", "--kafka", "127.0.0.1:1", *args])
    assert r.exit_code == 2 and ("--workers" in r.output or "--batch" in r.output)


def test_no_broker_is_a_clear_error() -> None:
    r = CliRunner().invoke(bench, ["cluster", "--kafka", "127.0.0.1:1", "--json"])
    assert r.exit_code == 1 and "no Kafka broker answers at 127.0.0.1:1" in r.stderr
    assert "Traceback" not in r.output


@pytest.mark.kafka
@pytest.mark.slow
def test_a_small_run_consumes_every_event_and_reports_every_figure(kafka_bootstrap: str,
                                                                 read_topic: object) -> None:
    r = CliRunner().invoke(bench, ["cluster", "--kafka", kafka_bootstrap, "--events", "20000",
                                   "--workers", "1", "--batch", "10", "--live", "3",
                                   "--live-episodes", "1", "--json"])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["benchmark"] == "cluster" and doc["events_requested"] == 20_000
    (run,) = doc["runs"]
    assert set(run) >= RUN_KEYS and set(run["cluster"]) >= CLUSTER_KEYS
    # as `cluster up` creates the topics: several partitions, all owned by the one worker
    assert run["workers"] == 1 and run["partitions"] >= 2 and run["batch"] == 10
    # every event was produced, read raw, and committed by the workers' consumer group
    assert run["consumed_all"] is True
    assert run["events"] >= 15_000 and run["baseline"]["events"] == run["events"]
    assert run["baseline"]["messages"] == run["messages"] > 0
    assert run["cluster"]["progress"][-1][1] == run["events"]
    assert run["baseline"]["events_per_s"] > 0 and run["cluster"]["events_per_s_with_startup"] > 0
    alerts = run["alerts"]
    assert {"backlog", "live", "latency_s", "per_alert", "live_events", "live_false",
            "false_alarms"} <= set(alerts)
    assert alerts["live_false"] >= len(alerts["false_alarms"])
    assert set(alerts["latency_s"]) == {"p50", "p99", "max", "n"}
    assert alerts["live_events"] > 0
    # the same code in process, without Faust: the share of the workers' CPU it is not
    assert run["core"]["events"] > 0 and run["core"]["events_per_cpu_s"] > 0
    # what crossed between the stages, from the worker's own counters and the topic
    st = run["stages"]
    assert st["worker_records"] == 1 and st["station_ticks"] > 0
    assert 0.0 < st["skipped_share"] < 1.0  # some stations were active, others at baseline
    assert st["ticks_closed"] > 0 and st["bytes_per_tick"] > 0
    # the topic holds the evidence the worker counted, and its progress-only messages
    assert st["node_evidence_bytes"] >= st["evidence_bytes_counted"] > 0
    assert doc["compare"] == {"workers_speedup": {}, "batch_speedup": {}}
    # every process it started has ended, and its topics are gone
    assert run["worker_exit_codes"] and all(c is not None for c in run["worker_exit_codes"])
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(run["topic_prefix"])]
    finally:
        admin.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_a_worker_joining_a_busy_one_on_a_backlog_drains_it_with_it(kafka_bootstrap: str) -> None:
    """Scaling out: the second worker joins while the first drains a pre-filled backlog,
    so the rebalance lands in the first one's fetched batches, before some partitions
    ever committed (the stall of issue 8: those partitions never committed again)."""
    r = CliRunner().invoke(bench, ["cluster", "--kafka", kafka_bootstrap, "--events", "60000",
                                   "--workers", "2", "--batch", "10", "--live", "0",
                                   "--join-late", "--timeout", "150", "--json"])
    assert r.exit_code == 0, r.output
    (run,) = orjson.loads(r.stdout)["runs"]
    assert run["workers"] == 2 and run["join_late"] is True and run["consumed_all"] is True
    assert run["cluster"]["progress"][-1][1] == run["events"]  # every event committed
    # both workers took part: each stopped with its counters, each read events
    st = run["stages"]
    assert st["worker_records"] == 2 and min(st["messages_per_worker"]) > 0
    assert len(run["worker_exit_codes"]) == 2 and None not in run["worker_exit_codes"]

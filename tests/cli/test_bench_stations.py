"""``convergence bench stations``: argument checks without a broker, a short real run (``-m kafka``)."""

from __future__ import annotations

import orjson
import pytest
import typer
from typer.testing import CliRunner

from convergence.cli.bench_stations import stations

bench = typer.Typer()


@bench.callback()
def _group() -> None:
    """Mounted as the real ``bench`` sub-app mounts it."""


bench.command("stations")(stations)

KEYS = {"benchmark", "stations", "seconds", "events_per_poll", "fleet_seconds", "fleet_messages",
        "fleet_events", "fleet_events_per_s", "fleet_messages_per_s", "avg_events_per_message",
        "avg_message_bytes", "stations_sending", "producer", "baseline", "baseline_seconds",
        "baseline_messages", "baseline_events", "baseline_events_per_s", "ratio_to_baseline",
        "kafka_bootstrap", "python", "cpus"}


def test_kafka_and_local_kafka_together_are_refused() -> None:
    r = CliRunner().invoke(bench, ["stations", "--kafka", "b:9092", "--local-kafka"])
    assert r.exit_code == 2 and "not both" in r.stderr


def test_no_broker_is_a_clear_error() -> None:
    r = CliRunner().invoke(bench, ["stations", "--kafka", "127.0.0.1:1", "--json"])
    assert r.exit_code == 1 and "no Kafka broker answers at 127.0.0.1:1" in r.stderr
    assert "--local-kafka" in r.stderr and "Traceback" not in r.output


@pytest.mark.kafka
def test_a_short_run_against_the_broker_reports_both_figures(kafka_bootstrap: str) -> None:
    r = CliRunner().invoke(bench, ["stations", "--kafka", kafka_bootstrap, "--stations", "20",
                                   "--seconds", "1", "--json"])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert set(doc) >= KEYS
    assert doc["benchmark"] == "stations" and doc["stations"] == 20 and doc["stations_sending"] == 20
    assert doc["fleet_messages"] == doc["baseline_messages"] > 0
    assert doc["fleet_events_per_s"] > 0 and doc["baseline_events_per_s"] > 0
    assert doc["ratio_to_baseline"] > 0
    assert doc["producer"]["acks"] == "all" and doc["producer"]["enable_idempotence"] is True
    human = CliRunner().invoke(bench, ["stations", "--kafka", kafka_bootstrap, "--stations", "5",
                                       "--seconds", "0.5"])
    assert human.exit_code == 0 and "stations/raw =" in human.stdout


def test_no_broker_is_said_once() -> None:
    r = CliRunner().invoke(bench, ["stations", "--kafka", "127.0.0.1:1", "--seconds", "1"])
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: no Kafka broker answers at 127.0.0.1:1; pass --kafka HOST:PORT, or "
                      "--local-kafka to start a throwaway one"], r.stderr

"""`convergence alerts subscribe` (and its alias `tail`) as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.records import Alert, Level


def _alert(i: int, region: str, level: Level) -> dict[str, object]:
    return Alert(alert_id=f"alt-{i}", report_id=f"rpt-{i}", region=region, level=level,
                 score=60.0 + i, tick=100 + i, time_s=time.time(), episode_tick=100,
                 stations=("news-mena-001", "sensor-mena-002"), source_kinds=("osint_news", "sensor"),
                 osint_corroborated=True, run_id="r").to_dict()


@pytest.fixture(scope="module")
def published(kafka_bootstrap: str) -> str:
    """A fresh prefix whose alerts topic holds five alerts, one of them twice (as after a
    failover), and two messages that are not alerts."""
    from kafka import KafkaProducer

    from convergence.settings import load_settings
    from convergence.streams.topics import ensure_topics

    prefix = f"sub{uuid.uuid4().hex[:8]}"
    s = load_settings(env={"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                           "CONVERGENCE_TOPIC_PREFIX": prefix}, config_path=None)
    ensure_topics(s, ["alerts"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for doc in [_alert(0, "mena", Level.WARNING), _alert(1, "mena", Level.CONVERGED),
                _alert(2, "apac", Level.CONVERGED), b"{broken", {"level": "converged"},
                _alert(3, "mena", Level.CONVERGED), _alert(1, "mena", Level.CONVERGED),
                _alert(4, "eu-west", Level.WARNING)]:
        producer.send(s.topic("alerts"), doc if isinstance(doc, bytes) else orjson.dumps(doc))
    producer.flush()
    producer.close()
    return prefix


def _subscribe(bootstrap: str, prefix: str, *args: str) -> object:
    return CliRunner().invoke(app, ["alerts", "subscribe", "--kafka", bootstrap, "--from-beginning",
                                    *args], env={"CONVERGENCE_TOPIC_PREFIX": prefix})


@pytest.mark.kafka
def test_subscribe_filters_by_level_and_region(kafka_bootstrap: str, published: str) -> None:
    r = _subscribe(kafka_bootstrap, published, "--level", "converged", "--region", "mena",
                   "--json", "--max", "2", "--timeout", "20")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    lines = [json.loads(x) for x in r.stdout.splitlines()]  # type: ignore[attr-defined]
    assert [(a["alert_id"], a["level"], a["region"]) for a in lines] == [
        ("alt-1", "converged", "mena"), ("alt-3", "converged", "mena")]
    assert all(Alert.from_dict(a).report_id == a["report_id"] for a in lines)
    assert r.stderr.count("warning: skipping") == 2  # type: ignore[attr-defined]


@pytest.mark.kafka
def test_subscribe_prints_one_readable_line_per_alert_and_tail_is_an_alias(
        kafka_bootstrap: str, published: str) -> None:
    r = _subscribe(kafka_bootstrap, published, "--region", "eu-west", "--region", "APAC",
                   "--max", "2", "--timeout", "20")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    lines = r.stdout.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2
    assert "CONVERGED" in lines[0] and "apac" in lines[0] and "report rpt-2" in lines[0]
    assert "WARNING" in lines[1] and "eu-west" in lines[1] and "2 stations (news, sensors)" in lines[1]
    tail = CliRunner().invoke(app, ["alerts", "tail", "--kafka", kafka_bootstrap, "--from-beginning",
                                    "--count", "5", "--timeout", "20", "--json"],
                              env={"CONVERGENCE_TOPIC_PREFIX": published})
    assert tail.exit_code == 0
    ids = [json.loads(x)["alert_id"] for x in tail.stdout.splitlines()]
    assert ids == [f"alt-{i}" for i in range(5)]  # the repeat of alt-1 is dropped


@pytest.mark.kafka
def test_fewer_alerts_than_asked_within_the_timeout_exits_3(kafka_bootstrap: str, published: str) -> None:
    started = time.monotonic()
    r = _subscribe(kafka_bootstrap, published, "--region", "nowhere", "--max", "1", "--timeout", "3")
    assert r.exit_code == 3
    assert "only 0 of 1 alert(s)" in r.stderr and "within 3 s" in r.stderr  # type: ignore[attr-defined]
    assert time.monotonic() - started < 10.0


def test_no_broker_is_one_clear_error_within_the_timeout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENCE_KAFKA")}
    # the interpreter's own start-up on this machine now (shared and noisy): the baseline
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "convergence.cli.main", "alerts", "subscribe", "--help"],
                   capture_output=True, text=True, timeout=60, env=env)
    startup = time.monotonic() - started
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "convergence.cli.main", "alerts", "subscribe",
                        "--kafka", "127.0.0.1:1", "--timeout", "2"],
                       capture_output=True, text=True, timeout=60, env=env)
    took = time.monotonic() - started - startup
    assert p.returncode == 1
    assert p.stderr.startswith("error: cannot reach Kafka at 127.0.0.1:1"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1  # no kafka-python log lines, no traceback
    assert took < 2.0 + 2.0, f"took {took:.1f} s beyond start-up with --timeout 2"


def test_a_bad_level_is_refused_with_the_choices() -> None:
    r = CliRunner().invoke(app, ["alerts", "subscribe", "--level", "loud", "--timeout", "1"])
    assert r.exit_code == 2 and "converged" in r.output

"""`convergence kafka ...` as a user runs it: status for scripts, and a restart that keeps
the broker's topics (issue 11, items 2 and 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.settings import load_settings
from convergence.streams import kafka_client, kafka_local
from convergence.streams.kafka_local import KafkaParams

runner = CliRunner()


def test_status_exits_non_zero_when_no_broker_runs(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_CACHE_DIR", str(tmp_path))
    plain = runner.invoke(app, ["kafka", "status"])
    assert plain.exit_code == 1 and "not running" in plain.stdout
    as_json = runner.invoke(app, ["kafka", "status", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["running"] is False
    # a recorded broker whose process is gone is not running either
    params = KafkaParams.of(load_settings())
    params.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (params.run_dir / kafka_local.STATE_FILE).write_text(json.dumps(
        {"bootstrap": "127.0.0.1:1", "pid": dead.pid, "log_path": "x",
         "state_dir": str(params.run_dir)}))
    stale = runner.invoke(app, ["kafka", "status"])
    assert stale.exit_code == 1 and "NOT running" in stale.stdout


def test_start_says_it_keeps_storage_unless_fresh() -> None:
    h = runner.invoke(app, ["kafka", "start", "--help"])
    assert h.exit_code == 0 and "--fresh" in h.stdout and "kept between starts" in h.stdout


@pytest.mark.kafka
@pytest.mark.slow
def test_a_restarted_broker_keeps_its_topics_unless_fresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka import KafkaProducer

    real = KafkaParams.of(load_settings())
    kafka_local.fetch(real)
    monkeypatch.setenv("CONVERGENCE_CACHE_DIR", str(tmp_path))
    mine = KafkaParams.of(load_settings())
    mine.home.mkdir(parents=True)
    mine.libs.symlink_to(real.libs)  # the cached jars, not a second download

    def start(*flags: str) -> tuple[str, str]:
        r = runner.invoke(app, ["kafka", "start", *flags])
        assert r.exit_code == 0, r.output + r.stderr
        return r.stdout.strip(), r.stderr

    def stop() -> None:
        assert runner.invoke(app, ["kafka", "stop"]).exit_code == 0

    try:
        first, note = start()
        assert "fresh storage" in note
        producer = KafkaProducer(bootstrap_servers=first)
        producer.send("kept-topic", b"still here").get(timeout=30)
        producer.close()
        stop()
        again, note = start()
        assert again == first and "kept its storage" in note  # same address for clients
        assert [r.value for r in kafka_client.read_topic(again, "kept-topic")] == [b"still here"]
        stop()
        wiped, note = start("--fresh")
        assert "fresh storage" in note
        assert kafka_client.read_topic(wiped, "kept-topic") == []
    finally:
        stop()

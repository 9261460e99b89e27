"""A declared fleet against a real broker (``-m kafka``): 247 stations publish; a command by hand
changes one station's sampling and is acknowledged.

The fleet runs as ``convergence stations run --fleet FILE`` in a subprocess (the real command,
signals included); commands and listings go through the CLI in this process. Every test uses
its own topic prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from convergence.cli.stations import app
from convergence.ground_stations.fleet import default_specs, render_fleet
from convergence.ground_stations.kafka_fleet import STATUS_TOPIC, read_status
from convergence.settings import Settings, load_settings

pytestmark = pytest.mark.kafka


@pytest.fixture
def prefixed(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    prefix = f"fleet{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CONVERGENCE_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("CONVERGENCE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    return load_settings(config_path=None)


def write_fleet(path: Path, *, interval_s: float, rate_per_s: float | None = None) -> list[str]:
    specs = default_specs(247, 7, interval_s)
    if rate_per_s is not None:  # busier than the default so every station sends within a second
        specs = [replace(s, source=replace(s.source, options={"rate_per_s": rate_per_s})) for s in specs]
    path.write_text(render_fleet(specs, seed=7))
    return [s.station_id for s in specs]


def start_run(s: Settings, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "convergence.cli.main", "stations", "run", "--kafka", s.kafka_bootstrap,
           "--json", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    summary: dict[str, Any] = orjson.loads(out.decode().strip().splitlines()[-1])
    return summary


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running at the end get SIGTERM, then SIGKILL."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_247_stations_from_a_fleet_file_publish_to_the_broker(
        prefixed: Settings, tmp_path: Path, stopper: list[subprocess.Popen[bytes]],
        read_topic: Callable[..., list[Any]]) -> None:
    s = prefixed
    fleet = tmp_path / "fleet.toml"
    ids = write_fleet(fleet, interval_s=0.25, rate_per_s=8.0)
    t0 = time.monotonic()
    stopper.append(start_run(s, "--fleet", str(fleet), "--duration", "4", "--status-every", "1"))
    summary = finish(stopper[0])
    assert summary["stations"] == 247 and summary["failed"] == 0 and summary["retried"] == 0
    assert summary["acked"] == summary["sent"] > 247
    assert summary["states"] == {"stopped": 247}
    assert summary["control"]["failed"] == 0 and summary["control"]["acked"] == summary["status_messages"]
    msgs = read_topic(s.kafka_bootstrap, s.topic("events"))
    assert len(msgs) == summary["acked"]
    assert {m.key.decode() for m in msgs} == set(ids)
    events = sum(len(orjson.loads(m.value)["events"]) for m in msgs)
    assert events == summary["records_acked"] > 247 * 8
    status = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=120)
    assert set(status) == set(ids)
    assert {st["state"] for st in status.values()} == {"stopped"}
    assert time.monotonic() - t0 < 30


def _snapshot(s: Settings, sid: str, timeout_s: float = 20.0, min_polls: int = 0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        st = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=60).get(sid)
        if st is not None and st["state"] == "running" and st["polls"] >= min_polls:
            return st
        assert time.monotonic() < deadline, f"no running status for {sid} on {s.topic(STATUS_TOPIC)}"
        time.sleep(0.3)


def _poll_rate(a: dict[str, Any], b: dict[str, Any]) -> float:
    return float((b["polls"] - a["polls"]) / (b["at_s"] - a["at_s"]))


def test_a_command_by_hand_changes_one_stations_sampling_and_is_acked(
        prefixed: Settings, tmp_path: Path, stopper: list[subprocess.Popen[bytes]],
        read_topic: Callable[..., list[Any]]) -> None:
    s = prefixed
    fleet = tmp_path / "fleet.toml"
    ids = write_fleet(fleet, interval_s=1.0)
    target, bystander = ids[5], ids[6]
    t0 = time.monotonic()
    stopper.append(start_run(s, "--fleet", str(fleet), "--duration", "40", "--status-every", "0.5"))
    before_a = _snapshot(s, target, min_polls=1)
    time.sleep(2.0)
    before_b = _snapshot(s, target)
    rate_before = _poll_rate(before_a, before_b)
    assert before_b["interval_s"] == 1.0 and rate_before < 2.0

    runner = CliRunner()
    r = runner.invoke(app, ["command", "set_interval", "--target", f"station:{target}",
                            "--param", "interval_s=0.05", "--wait-ack", "15", "--json"])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["applied"] == 1 and doc["refused"] == 0
    (ack,) = doc["acks"]
    assert ack["station_id"] == target and ack["applied"] and ack["detail"] == "interval 0.05 s"

    time.sleep(0.6)
    after_a = _snapshot(s, target)
    time.sleep(2.0)
    after_b = _snapshot(s, target)
    rate_after = _poll_rate(after_a, after_b)
    assert after_b["interval_s"] == 0.05
    assert rate_after > 8.0 and rate_after > 5 * rate_before, (rate_before, rate_after)
    other = _snapshot(s, bystander)
    assert other["interval_s"] == 1.0  # a station:ID command touches that station only

    acks = read_topic(s.kafka_bootstrap, s.topic("acks"))
    assert [(m.key.decode(), orjson.loads(m.value)["command_id"]) for m in acks] == [
        (target, doc["command"]["command_id"])]

    listed = runner.invoke(app, ["list", "--fleet", str(fleet), "--kafka", s.kafka_bootstrap, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["station_id"]: row for row in orjson.loads(listed.stdout)["stations"]}
    assert rows[target]["state"] == "running" and rows[target]["interval_s"] == 0.05
    assert len(rows) == 247 and all(row["declared"] for row in rows.values())

    proc = stopper[0]
    proc.send_signal(signal.SIGTERM)  # Ctrl-C / SIGTERM: the fleet stops and flushes
    summary = finish(proc)
    assert summary["commands"] == 1 and summary["acks"] == 1 and summary["failed"] == 0
    assert time.monotonic() - t0 < 35


def test_a_command_nobody_answers_fails_clearly(prefixed: Settings) -> None:
    from convergence.streams.faust_app import ensure_topics

    ensure_topics(prefixed, ["control", "acks"])
    r = CliRunner().invoke(app, ["command", "resume", "--target", "station:ghost-001", "--wait-ack", "1.5"])
    assert r.exit_code == 1
    assert "no station acknowledged" in r.stderr and "ghost-001" in r.stderr


def test_a_mixed_fleet_sends_replayed_rows_and_their_dead_letters(
        prefixed: Settings, tmp_path: Path, stopper: list[subprocess.Popen[bytes]],
        read_topic: Callable[..., list[Any]]) -> None:
    s = prefixed
    (tmp_path / "ticks.csv").write_text("timestamp,symbol,price\n2024-05-01T12:00:00Z,ACME,101.5\n"
                                        "2024-05-01T12:00:01Z,ACME,oops\n2024-05-01T12:00:02Z,ACME,102\n")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[station]]\nid = "sensor-1"\nsource_kind = "sensor"\n[station.source]\n'
                     'type = "synthetic"\nrate_per_s = 20\n\n'
                     '[[station]]\nid = "px-1"\nsource_kind = "market_price"\n[station.source]\n'
                     'type = "replay"\npath = "ticks.csv"\nspeed = "max"\n')
    stopper.append(start_run(s, "--fleet", str(fleet), "--duration", "2"))
    summary = finish(stopper[0])
    assert summary["source_dead_letters"] == 1 and summary["failed"] == 0
    (dl,) = read_topic(s.kafka_bootstrap, s.topic("dead-letter"))
    doc = orjson.loads(dl.value)
    assert doc["station_id"] == "px-1" and doc["field"] == "price" and "ticks.csv line 3" in doc["reason"]
    events = [e for m in read_topic(s.kafka_bootstrap, s.topic("events"))
              if m.key == b"px-1" for e in orjson.loads(m.value)["events"]]
    assert [e["value"] for e in events] == [101.5, 102.0]
    status = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=60)
    assert status["px-1"]["rejected"] == 1 and status["px-1"]["source"] == "csv"

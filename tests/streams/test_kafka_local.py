"""The local broker: unit tests of its pieces, then real-broker tests (``-m kafka``)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convergence.cli.kafka import app
from convergence.settings import load_settings
from convergence.streams import kafka_local
from convergence.streams.kafka_local import KafkaLocalError, KafkaParams


def _fake_tool(bindir: Path, name: str, script: str = "exit 0") -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def _topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


# -- unit tests: no broker, no network ---------------------------------------


def test_missing_java_and_mvn_names_both_and_how_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(KafkaLocalError) as err:
        kafka_local.fetch(KafkaParams(tmp_path), path=str(empty))
    msg = str(err.value)
    assert "`java`" in msg and "`mvn`" in msg
    assert "openjdk-17" in msg and "apt-get install maven" in msg


def test_missing_mvn_only_is_reported_alone(tmp_path: Path) -> None:
    _fake_tool(tmp_path / "bin", "java")
    with pytest.raises(KafkaLocalError, match="`mvn`") as err:
        kafka_local.fetch(KafkaParams(tmp_path), path=str(tmp_path / "bin"))
    assert "`java`" not in str(err.value)


def test_mvn_failure_carries_the_tail_of_its_output(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "java")
    _fake_tool(bindir, "mvn", "echo '[ERROR] Could not resolve org.apache.kafka:kafka_2.13:9.9.9'\n"
               "exit 1")
    params = KafkaParams(tmp_path, version="9.9.9")
    with pytest.raises(KafkaLocalError) as err:
        kafka_local.fetch(params, path=str(bindir))
    assert "exit 1" in str(err.value) and "kafka_2.13:9.9.9" in str(err.value)
    assert not params.libs.exists()  # a failed fetch never looks complete


def test_fetch_is_a_no_op_when_the_marker_exists(tmp_path: Path) -> None:
    params = KafkaParams(tmp_path)
    params.libs.mkdir(parents=True)
    (params.libs / kafka_local.MARKER).write_text("done")
    # An empty PATH proves neither java nor mvn is consulted.
    assert kafka_local.fetch(params, path=str(tmp_path)) == params.libs


def test_pom_adds_the_logging_binding_matching_the_version(tmp_path: Path) -> None:
    v4 = kafka_local.pom_xml(KafkaParams(tmp_path, "4.1.1"))
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in v4
    assert "log4j-slf4j-impl" in v4
    assert "slf4j-reload4j" in kafka_local.pom_xml(KafkaParams(tmp_path, "3.8.1"))


def test_a_version_that_is_not_a_release_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KafkaLocalError, match="CONVERGENCE_KAFKA_VERSION"):
        kafka_local.pom_xml(KafkaParams(tmp_path, "latest"))


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    text = kafka_local.server_properties(KafkaParams(tmp_path, "4.1.1"), tmp_path, 19092, 19093)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "num.partitions"):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.dirs"] == str(tmp_path / "data")
    old = kafka_local.server_properties(KafkaParams(tmp_path, "3.8.1"), tmp_path, 1, 2)
    assert "controller.quorum.voters=1@127.0.0.1:2" in old
    assert "quorum.bootstrap" not in old


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = kafka_local.free_ports(2)
    assert len(set(ports)) == 2
    for port in ports:
        assert kafka_local.port_free(port)


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    params = KafkaParams(tmp_path)
    params.libs.mkdir(parents=True)
    (params.libs / kafka_local.MARKER).write_text("done")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(KafkaLocalError, match="already in use"):
            kafka_local.start(params, port=port, state_dir=tmp_path / "state")


@pytest.mark.skipif(not kafka_local.shutil.which("java"), reason="needs java")
def test_start_with_broken_jars_reports_the_java_output(tmp_path: Path) -> None:
    params = KafkaParams(tmp_path)
    params.libs.mkdir(parents=True)
    (params.libs / kafka_local.MARKER).write_text("done")  # "fetched", but no jars at all
    with pytest.raises(KafkaLocalError, match="StorageTool"):
        kafka_local.start(params, state_dir=tmp_path / "state")


def test_status_without_a_recorded_broker(tmp_path: Path) -> None:
    st = kafka_local.status(KafkaParams(tmp_path))
    assert not st.recorded and not st.running


def test_status_and_stop_with_a_stale_state_file(tmp_path: Path) -> None:
    params = KafkaParams(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    params.run_dir.mkdir(parents=True)
    state = {"bootstrap": "127.0.0.1:1", "pid": dead.pid, "log_path": "x", "state_dir":
             str(params.run_dir), "version": "4.1.1"}
    (params.run_dir / kafka_local.STATE_FILE).write_text(json.dumps(state))
    st = kafka_local.status(params)
    assert st.recorded and not st.running and not st.pid_alive
    kafka_local.stop(params)
    assert not (params.run_dir / kafka_local.STATE_FILE).exists()


def test_cli_errors_are_one_line_on_stderr_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENCE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    result = CliRunner().invoke(app, ["fetch"])
    assert result.exit_code == 1
    assert "error:" in result.stderr and "`mvn`" in result.stderr
    assert "Traceback" not in result.output + result.stderr


# -- real broker --------------------------------------------------------------


@pytest.mark.kafka
def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    assert host == "127.0.0.1" and kafka_local.port_open(host, int(port))
    assert kafka_local.metadata_ok(kafka_bootstrap)


@pytest.mark.kafka
def test_kafka_python_produces_and_consumes(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = _topic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, key=b"k", value=b"hello from kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}",
        auto_offset_reset="earliest", consumer_timeout_ms=30000,
    )
    try:
        msg = next(iter(consumer))
        assert (msg.key, msg.value) == (b"k", b"hello from kafka-python")
        consumer.commit()  # group coordinator + OffsetCommit, as a real app does
    finally:
        consumer.close()


@pytest.mark.kafka
def test_aiokafka_produces_and_consumes(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = _topic()

    async def roundtrip() -> tuple[bytes | None, bytes | None]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello from aiokafka", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
            await consumer.commit()
            return msg.key, msg.value
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == (b"k", b"hello from aiokafka")


@pytest.mark.kafka
def test_clients_interoperate(kafka_bootstrap: str) -> None:
    """What kafka-python writes, aiokafka (Faust) reads: both speak the broker's protocol."""
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaProducer

    topic = _topic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, value=b"cross").get(timeout=30)
    producer.close()

    async def read() -> bytes | None:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            value: bytes | None = (await asyncio.wait_for(consumer.getone(), timeout=30)).value
            return value
        finally:
            await consumer.stop()

    assert asyncio.run(read()) == b"cross"


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_start_status_stop_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The persistent broker is found by status/stop in *another* process via state.json."""
    real = KafkaParams.of(load_settings())
    kafka_local.fetch(real)
    monkeypatch.setenv("CONVERGENCE_CACHE_DIR", str(tmp_path))
    mine = KafkaParams.of(load_settings())
    mine.home.mkdir(parents=True)
    mine.libs.symlink_to(real.libs)  # reuse the cached jars, not a second download
    runner = CliRunner()
    started = runner.invoke(app, ["start"])
    assert started.exit_code == 0, started.output + started.stderr
    bootstrap = started.stdout.strip()
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "typer", "convergence.cli.kafka", "run", "status", "--json"],
            capture_output=True, text=True, env=os.environ.copy(), check=False,
        )
        assert probe.returncode == 0, probe.stderr
        st = json.loads(probe.stdout)
        assert st["running"] and st["bootstrap"] == bootstrap
        again = runner.invoke(app, ["start"])
        assert again.exit_code == 1 and "already runs" in again.stderr
    finally:
        stopped = runner.invoke(app, ["stop"])
    assert stopped.exit_code == 0 and "stopped" in stopped.stdout
    assert not kafka_local.status(mine).recorded
    assert not kafka_local.port_open("127.0.0.1", int(bootstrap.rpartition(":")[2]))


@pytest.mark.kafka
def test_cluster_id_starting_with_a_dash_still_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    # base64 of bytes starting 0xF8 begins with "-": the storage tool once read it as an option
    monkeypatch.setattr(kafka_local.uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xf8" + b"\x01" * 15))
    with kafka_local.start(load_settings()) as handle:
        assert handle.bootstrap.startswith("127.0.0.1:")

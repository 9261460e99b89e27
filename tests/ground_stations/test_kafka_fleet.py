"""The Kafka side of a fleet without a broker: station statuses and the command loop.

The broker tier (``run_stations``, ``read_status``, ``issue_command`` through the command
line) is in ``test_fleet_kafka.py``; ``serve_fleet`` against a real control topic is in
``test_kafka_sink.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import orjson

from convergence.control import ControlCommand, Target
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.base import Source
from convergence.ground_stations.kafka_fleet import (
    STATUS_TOPIC,
    CommandError,
    serve_fleet,
    station_status,
)
from convergence.ground_stations.kafka_sink import KafkaEventSink
from convergence.stations import StationInfo


class Silent(Source):
    kind = "silent"

    async def poll(self, now_s: float) -> list[dict[str, Any]]:
        return []


class _Acked:
    """A producer future that is acknowledged at once."""

    def add_callback(self, fn: Any, *args: Any) -> _Acked:
        fn(*args, "metadata")
        return self

    def add_errback(self, fn: Any, *args: Any) -> _Acked:
        return self


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> _Acked:
        self.sent.append((topic, key, value or b""))
        return _Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


INFOS = [StationInfo("news-eu-000", "osint_news", "eu", group="wire-a"),
         StationInfo("sensor-eu-000", "sensor", "eu"),
         StationInfo("sensor-apac-000", "sensor", "apac")]


def _fleet(sink: KafkaEventSink) -> Fleet:
    return Fleet([StationAgent(i, Silent(), sink, interval_s=30.0) for i in INFOS])


def _sink() -> tuple[KafkaEventSink, RecordingProducer]:
    producer = RecordingProducer()
    return KafkaEventSink("fake:9092", "events", producer=producer), producer


def test_the_status_topic_and_the_command_error() -> None:
    assert STATUS_TOPIC == "station-status"
    assert issubclass(CommandError, RuntimeError)


def test_a_station_status_is_the_agents_status_plus_where_it_runs() -> None:
    sink, _ = _sink()
    agent, ungrouped = _fleet(sink).agents[:2]
    before = time.time()
    doc = station_status(agent, "running -> backing_off: OSError: down")
    assert {k: doc[k] for k in agent.status()} == agent.status()
    assert doc["station_id"] == "news-eu-000" and doc["state"] == "running"
    assert doc["group"] == "wire-a" and doc["source"] == "silent"
    assert doc["change"] == "running -> backing_off: OSError: down"
    assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
    assert before - 0.001 <= doc["at_s"] <= time.time() + 0.001
    assert station_status(agent)["change"] is None
    assert station_status(ungrouped)["group"] == "sensor-eu-000"  # no group: a group of its own
    orjson.dumps(doc)  # what is published must be JSON


def test_serve_fleet_applies_commands_and_publishes_one_ack_per_station() -> None:
    sink, producer = _sink()
    fleet = _fleet(sink)
    cmd = ControlCommand.create("set_interval", Target("region", "eu"), issued_at_s=100.0, ttl_s=60.0,
                                params={"interval_s": 2.0}, reason="test")

    async def main() -> int:
        stop = asyncio.Event()
        commands: asyncio.Queue[ControlCommand] = asyncio.Queue()
        task = asyncio.ensure_future(serve_fleet(fleet, sink, stop, commands=commands,
                                                 acks_topic="acks", clock=lambda: 120.0))
        await commands.put(cmd)
        deadline = time.monotonic() + 10.0
        while len(producer.sent) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        return await asyncio.wait_for(task, 10.0)

    assert asyncio.run(main()) == 2
    assert [(t, k) for t, k, _ in producer.sent] == [("acks", b"news-eu-000"), ("acks", b"sensor-eu-000")]
    docs = [orjson.loads(v) for _, _, v in producer.sent]
    assert docs == [a.to_dict() for a in fleet.acks]
    assert all(d["command_id"] == cmd.command_id and d["applied"] and d["at_s"] == 120.0 for d in docs)
    assert [a.interval_s for a in fleet.agents] == [2.0, 2.0, 30.0]
    assert fleet.states() == {"stopped": 3}


def test_serve_fleet_without_commands_runs_the_fleet_until_stop() -> None:
    sink, producer = _sink()
    fleet = _fleet(sink)

    async def main() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await asyncio.wait_for(
            serve_fleet(fleet, sink, stop, commands=None, acks_topic="acks"), 10.0)

    assert asyncio.run(main()) == 0
    assert producer.sent == [] and fleet.states() == {"stopped": 3}
    assert all(a.polls == 1 for a in fleet.agents)  # one poll, then asleep until stop

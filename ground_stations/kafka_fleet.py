"""The Kafka side of a running fleet: run it, read its stations' status, steer it.

* :func:`run_stations` runs a built :class:`~convergence.ground_stations.agent.Fleet`
  against a broker: events out, control commands in, acks out, and each station's
  status on the ``station-status`` topic; :func:`serve_fleet` is its core loop.
* :func:`read_status` reads the latest status of every station.
* :func:`issue_command` sends one control command and collects the acks.

Station status: while a fleet runs it publishes, keyed by station id, one JSON object
per station (``state``, ``interval_s``, ``polls``, ``sent``, ``failures``, ``at_s``,
``host``, ``pid``...) every ``status_every_s`` seconds and at every state change (with
``change`` saying what changed and why). The topic is compacted, so the latest status
of every station survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson

from convergence.control import ControlCommand
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.kafka_sink import ControlListener, KafkaEventSink
from convergence.schema import DeadLetter, dead_letter
from convergence.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["STATUS_TOPIC", "CommandError", "issue_command", "read_status", "run_stations",
           "serve_fleet", "station_status"]

STATUS_TOPIC = "station-status"


class CommandError(RuntimeError):
    """A control command could not be sent or was not acknowledged; the message says why."""


_HOST = socket.gethostname()


def station_status(agent: StationAgent, change: str | None = None) -> dict[str, Any]:
    """What a running fleet publishes for one station (see module docstring)."""
    return {**agent.status(), "group": agent.info.correlation_group,
            "source": getattr(agent.source, "kind", "?"), "at_s": round(time.time(), 3),
            "change": change, "host": _HOST, "pid": os.getpid()}


async def run_stations(s: Settings, fleet: Fleet, *, stop: asyncio.Event,
                       duration_s: float | None = None,
                       on_started: Callable[[Fleet], None] | None = None,
                       status_every_s: float = 2.0) -> dict[str, Any]:
    """Run ``fleet`` (built without a sink) against ``s.kafka_bootstrap`` until
    ``duration_s`` or ``stop``.

    Creates the topics it uses, attaches a Kafka sink to the fleet, publishes events,
    applies control commands, publishes acks, station statuses and the sources' dead
    letters, and closes the producers (everything pending is flushed). Returns counters:
    the top-level ``sent``/``acked``/``failed``... count event messages only; ``control``
    counts the rest (statuses, acks, dead letters), which go through a producer of their
    own so the event figures mean what they say. Raises ``ClusterError`` when the topics
    cannot be created.
    """
    import kafka  # noqa: F401  (its loggers exist once imported)

    from convergence.streams.logs import quiet_repeats
    from convergence.streams.topics import ensure_topics

    quiet_repeats()  # a broker away: the client's repeated complaints, summarised
    loop = asyncio.get_running_loop()
    # Constructing the producer, admin calls and fetching metadata block: keep them off the loop.
    await loop.run_in_executor(None, lambda: ensure_topics(
        s, ["events", "control", "acks", "dead-letter", STATUS_TOPIC]))
    sink = await loop.run_in_executor(None, lambda: KafkaEventSink(
        s.kafka_bootstrap, s.topic("events"), wait_metadata=True))
    try:
        ctl = await loop.run_in_executor(None, lambda: KafkaEventSink(
            s.kafka_bootstrap, s.topic(STATUS_TOPIC), client_id="convergence-stations-control",
            wait_metadata=True))
    except BaseException:
        await loop.run_in_executor(None, sink.close)
        raise
    dl_topic, status_topic = s.topic("dead-letter"), s.topic(STATUS_TOPIC)
    published = {"status": 0, "dead_letters": 0}
    by_id = {a.info.station_id: a for a in fleet.agents}

    def publish_status(agent: StationAgent, change: str | None = None) -> None:
        ctl.publish(status_topic, agent.info.station_id, orjson.dumps(station_status(agent, change)))
        published["status"] += 1

    def on_state(sid: str, old: str, new: str, reason: str) -> None:
        publish_status(by_id[sid], f"{old} -> {new}: {reason}")

    def on_dead(dls: list[DeadLetter]) -> None:
        # the agent drains its source's rejects after every poll; they go to dead-letter
        for dl in dls:
            ctl.publish(dl_topic, dl.dead_letter_id, orjson.dumps(dl.to_dict()))
        published["dead_letters"] += len(dls)

    fleet.attach(sink, on_state=on_state, on_dead=on_dead)

    def invalid(raw: bytes, reason: str) -> None:
        dl = dead_letter("control", raw, reason, received_at_s=time.time())
        ctl.publish(dl_topic, dl.dead_letter_id, orjson.dumps(dl.to_dict()))

    async def housekeeping(fleet: Fleet) -> None:
        next_status = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_status:
                for agent in fleet.agents:
                    publish_status(agent)
                next_status = time.monotonic() + status_every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, status_every_s))

    listener = ControlListener(s.kafka_bootstrap, s.topic("control"), on_invalid=invalid)
    elapsed = 0.0
    acks = 0
    try:
        await loop.run_in_executor(None, listener.start, loop)
        if on_started is not None:
            on_started(fleet)
        timer = loop.call_later(duration_s, stop.set) if duration_s else None
        t0 = time.monotonic()
        acks, _ = await asyncio.gather(
            serve_fleet(fleet, ctl, stop, commands=listener.queue, acks_topic=s.topic("acks")),
            housekeeping(fleet))
        if timer is not None:
            timer.cancel()
        elapsed = time.monotonic() - t0
    finally:
        await loop.run_in_executor(None, listener.stop)
        counters = await loop.run_in_executor(None, sink.close)
        ctl_counters = await loop.run_in_executor(None, ctl.close)
    return {"stations": len(fleet.agents), "duration_s": round(elapsed, 3),
            "commands": listener.received, "invalid_commands": listener.invalid,
            "acks": acks, "states": fleet.states(), "status_messages": published["status"],
            "source_dead_letters": published["dead_letters"], **counters.as_dict(),
            "control": ctl_counters.as_dict()}


async def serve_fleet(fleet: Fleet, sink: KafkaEventSink, stop: asyncio.Event, *,
                      commands: asyncio.Queue[ControlCommand] | None, acks_topic: str,
                      clock: Callable[[], float] = time.time) -> int:
    """Run ``fleet`` until ``stop`` is set, applying ``commands`` as they come.

    Each acknowledgement is published to ``acks_topic`` keyed by station id. Returns the
    number of acknowledgements published.
    """
    published = 0

    async def dispatch() -> None:
        nonlocal published
        assert commands is not None
        while not stop.is_set():
            getter = asyncio.ensure_future(commands.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                return
            cmd = getter.result()
            acks = fleet.dispatch(cmd, clock())
            log.info("control: %s %s -> %d station(s)", cmd.action.value, cmd.command_id,
                     len(acks))
            for ack in acks:
                sink.publish(acks_topic, ack.station_id, orjson.dumps(ack.to_dict()))
                published += 1

    tasks = [fleet.run(stop)]
    if commands is not None:
        tasks.append(dispatch())
    await asyncio.gather(*tasks)
    return published


def read_status(bootstrap: str, topic: str, *, since_s: float = 600.0,
                timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """Latest status per station published in the last ``since_s`` seconds (``{}`` if none).

    Reads from the first message at or after ``now - since_s`` up to the end offsets taken
    when the call started; ``age_s`` is added to each status.
    """
    from convergence.streams import kafka_client

    consumer = kafka_client.consumer(bootstrap, "convergence-stations-list")
    latest: dict[str, dict[str, Any]] = {}
    try:
        tps = kafka_client.assign_all(consumer, topic, start=int((time.time() - since_s) * 1000))
        if not tps:
            return {}
        t0 = time.monotonic()
        for rec in kafka_client.read_to_end(consumer, tps, timeout_s=timeout_s):
            try:
                doc = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("station_id"), str):
                latest[doc["station_id"]] = doc
        if time.monotonic() - t0 >= timeout_s:
            log.warning("stations list: reading %s took longer than %g s; showing what was read",
                        topic, timeout_s)
    finally:
        consumer.close()
    now = time.time()
    for doc in latest.values():
        at = doc.get("at_s")
        doc["age_s"] = round(now - float(at), 1) if isinstance(at, int | float) else None
    return latest


def issue_command(bootstrap: str, control_topic: str, acks_topic: str, cmd: ControlCommand, *,
                  wait_s: float = 0.0, settle_s: float = 1.5) -> list[dict[str, Any]]:
    """Send ``cmd`` to the control topic; with ``wait_s``, return the acks that arrive.

    A command for one station returns at its first ack; otherwise acks are collected
    until none has arrived for ``settle_s`` (several station processes answer one after
    another) or ``wait_s`` is up. Raises :class:`CommandError` when a topic is missing
    or the broker does not take the command.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from convergence.streams.kafka_client import BOOTSTRAP_TIMEOUT_MS, assign_all
    from convergence.streams.kafka_client import consumer as mk_consumer

    consumer = mk_consumer(bootstrap, "convergence-command")
    acks: list[dict[str, Any]] = []
    try:
        hint = ("is `convergence stations run` running against this broker with the same "
                "CONVERGENCE_TOPIC_PREFIX?")
        if not consumer.partitions_for_topic(control_topic):
            raise CommandError(f"control topic {control_topic!r} does not exist on {bootstrap}; {hint}")
        # from the end, fixed now: acks to the command come after it
        if wait_s > 0 and not assign_all(consumer, acks_topic, start="end"):
            raise CommandError(f"acks topic {acks_topic!r} does not exist on {bootstrap}; {hint}")
        producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all",
                                 client_id="convergence-command", max_block_ms=10_000,
                                 bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
        try:
            producer.send(control_topic, key=cmd.command_id.encode(),
                          value=orjson.dumps(cmd.to_dict())).get(timeout=15)
        except KafkaError as exc:
            raise CommandError(f"the broker at {bootstrap} did not take the command: "
                               f"{type(exc).__name__}: {exc}") from None
        finally:
            producer.close(timeout=5)
        if wait_s <= 0:
            return []
        deadline = time.monotonic() + wait_s
        last = 0.0
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        doc = orjson.loads(rec.value)
                        if isinstance(doc, dict) and doc.get("command_id") == cmd.command_id:
                            acks.append(doc)
                            last = time.monotonic()
            if acks and (cmd.target.type == "station" or time.monotonic() - last >= settle_s):
                break
    finally:
        consumer.close()
    return acks

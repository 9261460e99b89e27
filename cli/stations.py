"""``convergence stations ...``: run, list, steer and declare ground stations over Kafka.

* ``run`` runs a fleet (the default synthetic one, or ``--fleet FILE``; a share of it with
  ``--only``/``--part``) against a broker: events out, control commands in, acks out,
  and each station's status on the ``station-status`` topic.
* ``list`` shows a fleet and, with ``--kafka``, each station's latest status.
* ``command`` sends one control command by hand and (``--wait-ack``) prints the acks.
* ``init`` writes the default fleet as a TOML file to edit.

The Kafka plumbing the commands share lives here as plain functions, so other commands
(``cluster up``) and tests call it without the command line: :func:`run_stations`,
:func:`read_status`, :func:`issue_command`.

Station status: while ``run`` runs it publishes, keyed by station id, one JSON object
per station (``state``, ``interval_s``, ``polls``, ``sent``, ``failures``, ``at_s``,
``host``, ``pid``...) every ``--status-every`` seconds and at every state change (with
``change`` saying what changed and why). The topic is compacted, so the latest status
of every station survives; ``list`` reads the recent part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from convergence.cli.common import console, err_console, fail, print_json, settings
from convergence.control import Action, ControlCommand, Target
from convergence.ground_stations.agent import DeadHook, Fleet, StateHook, StationAgent
from convergence.ground_stations.fleet import (
    FleetError,
    StationSpec,
    build_fleet,
    default_fleet_toml,
    default_specs,
    fleet_world,
    load_fleet,
    select,
    split_fleet,
)
from convergence.ground_stations.kafka_sink import ControlListener, KafkaEventSink, serve_fleet
from convergence.schema import DeadLetter, SourceKind, dead_letter
from convergence.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["app", "install_stop", "issue_command", "parse_params", "parse_part", "parse_target",
           "read_status", "run_stations", "select", "synthetic_fleet"]

STATUS_TOPIC = "station-status"
DEFAULT_INTERVAL_S = 0.5
BOOTSTRAP_TIMEOUT_MS = 10_000  # a person is waiting: a dead broker should fail in seconds

app = typer.Typer(help="Run, list and steer ground stations that publish to a Kafka broker.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run, list and steer ground stations that publish to a Kafka broker."""
    # A callback keeps this a command group however many commands it has, so the
    # command line reads the same however it is mounted.


class CommandError(RuntimeError):
    """A control command could not be sent or was not acknowledged; the message says why."""


# -- parsing the command line ----------------------------------------------------------


def parse_part(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: this process runs part 2 of a fleet split in 3 (1-based).

    >>> parse_part("2/3")
    (2, 3)
    >>> parse_part("3/2")
    Traceback (most recent call last):
    ...
    ValueError: --part '3/2': the part must be between 1 and 2, e.g. --part 1/2
    """
    head, sep, tail = text.partition("/")
    try:
        part, parts = int(head), int(tail)
    except ValueError:
        part = parts = 0
    if not sep or parts < 1:
        raise ValueError(f"--part {text!r}: expected PART/PARTS such as 1/3 (this process runs "
                         "the first of three parts)")
    if not 1 <= part <= parts:
        raise ValueError(f"--part {text!r}: the part must be between 1 and {parts}, e.g. --part 1/{parts}")
    return part, parts


def parse_target(text: str) -> Target:
    """``station:ID``, ``region:NAME``, ``source_kind:KIND`` or ``all``.

    >>> parse_target("region:eu-west")
    Target(type='region', value='eu-west')
    >>> parse_target("all")
    Target(type='all', value='*')
    >>> parse_target("planet:x")
    Traceback (most recent call last):
    ...
    ValueError: 'planet:x' is not a target: use station:ID, region:NAME, source_kind:KIND or all
    """
    usage = "use station:ID, region:NAME, source_kind:KIND or all"
    if text.strip() in ("all", "all:*"):
        return Target("all")
    typ, sep, value = text.partition(":")
    typ, value = typ.strip(), value.strip()
    if not sep or typ not in ("station", "region", "source_kind"):
        raise ValueError(f"{text!r} is not a target: {usage}")
    if not value:
        raise ValueError(f"{text!r} names no {typ}: {usage}")
    kinds = [k.value for k in SourceKind]
    if typ == "source_kind" and value not in kinds:
        raise ValueError(f"{text!r}: {value!r} is not a source kind ({', '.join(kinds)})")
    return Target(typ, value)


_PARAMS: dict[Action, tuple[set[str] | None, set[str]]] = {
    # action -> (allowed keys, None = any name; required keys)
    Action.SET_INTERVAL: ({"interval_s"}, {"interval_s"}),
    Action.BURST_MODE: ({"interval_s"}, set()),
    Action.SET_THRESHOLDS: (None, set()),
    Action.QUARANTINE: (set(), set()),
    Action.RESUME: (set(), set()),
}


def parse_params(action: Action, items: Sequence[str]) -> dict[str, float]:
    """``["interval_s=0.1"]`` -> ``{"interval_s": 0.1}``, checked against what ``action`` takes.

    >>> parse_params(Action.SET_INTERVAL, ["interval_s=0.1"])
    {'interval_s': 0.1}
    >>> parse_params(Action.SET_INTERVAL, ["interval_s=fast"])
    Traceback (most recent call last):
    ...
    ValueError: interval_s=fast: interval_s must be a number of seconds > 0
    """
    allowed, required = _PARAMS[action]
    out: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r}: expected NAME=NUMBER, e.g. interval_s=0.25")
        if allowed is not None and key not in allowed:
            takes = ", ".join(sorted(allowed)) if allowed else "no parameters"
            raise ValueError(f"{item}: {action.value} takes {takes}")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if key == "interval_s" and not value > 0:
            raise ValueError(f"{item}: interval_s must be a number of seconds > 0")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{item}: {key} must be a finite number")
        out[key] = value
    missing = sorted(required - set(out))
    if missing:
        raise ValueError(f"{action.value} needs --param {missing[0]}=NUMBER")
    if action == Action.SET_THRESHOLDS and not out:
        raise ValueError("set_thresholds needs at least one --param NAME=NUMBER")
    return out


# -- building fleets -------------------------------------------------------------------


def synthetic_fleet(s: Settings, sink: Callable[[str, list[dict[str, Any]]], Any], *,
                    only: str | None = None, t0_s: float | None = None,
                    horizon_s: float = 3600.0, interval_s: float = DEFAULT_INTERVAL_S,
                    clock: Callable[[], float] = time.time) -> Fleet:
    """The default synthetic fleet (``s.stations``, ``s.seed``), optionally a subset.

    Several processes running parts of one fleet (``--only``) pass the same ``t0_s``
    so they play the same scenario at the same moment. Raises ``ValueError`` when
    ``only`` matches no station.
    """
    specs = default_specs(s.stations, s.seed, interval_s)
    chosen = choose(specs, only=only, part=None)
    return build_fleet(chosen, sink, world=fleet_world(specs, s.seed, horizon_s),
                       t0_s=clock() if t0_s is None else t0_s, seed=s.seed, clock=clock)


def choose(specs: Sequence[StationSpec], *, only: str | None,
           part: tuple[int, int] | None) -> list[StationSpec]:
    """The stations this process runs; ``ValueError`` when that is none of them."""
    chosen = list(specs)
    if part is not None:
        chosen = split_fleet(chosen, *part)
        if not chosen:
            raise ValueError(f"--part {part[0]}/{part[1]} holds none of the {len(specs)} stations "
                             "(the split is by a hash of the id); use fewer parts")
    if only:
        ids = [s.station_id for s in chosen]
        chosen = [chosen[i] for i in select(ids, only)]
        if not chosen:
            where = f" of part {part[0]}/{part[1]}" if part else ""
            raise ValueError(f"--only {only!r} matches none of the {len(ids)} stations{where} "
                             f"(ids look like {', '.join(ids[:3])}); use ids or patterns "
                             "such as 'news-*,sensor-mena-*'")
    return chosen


@contextlib.contextmanager
def _quiet_kafka() -> Iterator[None]:
    """Hide kafka-python's per-retry connection log lines unless -v was given: a short-lived
    client command ends with one error saying what failed, which is what a person reads."""
    kafka_log = logging.getLogger("kafka")
    old = kafka_log.level
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(old)


async def _unbound_sink(station_id: str, records: list[dict[str, Any]]) -> None:
    raise RuntimeError(f"station {station_id} sent before its Kafka sink was attached (a bug)")


# -- the Kafka side of a running fleet ---------------------------------------------------


def ensure_status_topic(s: Settings, timeout_s: float = 30.0) -> None:
    """Create the compacted ``station-status`` topic if it is missing (idempotent)."""
    from convergence.streams.faust_app import ensure_topics

    ensure_topics(s, [STATUS_TOPIC], timeout_s=timeout_s)


def station_status(agent: StationAgent, change: str | None = None) -> dict[str, Any]:
    """What ``run`` publishes for one station (see module docstring)."""
    return {**agent.status(), "group": agent.info.correlation_group,
            "source": getattr(agent.source, "kind", "?"), "at_s": round(time.time(), 3),
            "change": change, "host": socket.gethostname(), "pid": os.getpid()}


async def run_stations(s: Settings, build: Callable[[KafkaEventSink], Fleet], *,
                       stop: asyncio.Event, duration_s: float | None = None,
                       on_started: Callable[[Fleet], None] | None = None,
                       status_every_s: float = 2.0) -> dict[str, Any]:
    """Run a fleet against ``s.kafka_bootstrap`` until ``duration_s`` or ``stop``.

    Publishes events, applies control commands, publishes acks, station statuses and
    the sources' dead letters, and closes the producers (everything pending is flushed).
    Returns counters: the top-level ``sent``/``acked``/``failed``... count event messages
    only; ``control`` counts the rest (statuses, acks, dead letters), which go through a
    producer of their own so the event figures mean what they say.
    """
    loop = asyncio.get_running_loop()
    # Constructing the producer, admin calls and fetching metadata block: keep them off the loop.
    await loop.run_in_executor(None, ensure_status_topic, s)
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

    def publish_status(agent: StationAgent, change: str | None = None) -> None:
        ctl.publish(status_topic, agent.info.station_id, orjson.dumps(station_status(agent, change)))
        published["status"] += 1

    def prepare() -> Fleet:
        fleet = build(sink)
        by_id = {a.info.station_id: a for a in fleet.agents}
        for agent in fleet.agents:
            state_before, dead_before = agent.on_state, agent.on_dead

            def on_state(sid: str, old: str, new: str, reason: str,
                         previous: StateHook | None = state_before) -> None:
                if previous is not None:
                    previous(sid, old, new, reason)
                publish_status(by_id[sid], f"{old} -> {new}: {reason}")

            def on_dead(dls: list[DeadLetter], previous: DeadHook | None = dead_before) -> None:
                # the agent drains its source's rejects after every poll; they go to dead-letter
                if previous is not None:
                    previous(dls)
                for dl in dls:
                    ctl.publish(dl_topic, dl.dead_letter_id, orjson.dumps(dl.to_dict()))
                published["dead_letters"] += len(dls)

            agent.on_state, agent.on_dead = on_state, on_dead
        return fleet

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
        fleet = prepare()
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


def install_stop(stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM set ``stop``: the fleet stops and the producer is flushed."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def read_status(bootstrap: str, topic: str, *, since_s: float = 600.0,
                timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """Latest status per station published in the last ``since_s`` seconds (``{}`` if none).

    Reads from the first message at or after ``now - since_s`` up to the end offsets taken
    when the call started; ``age_s`` is added to each status.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                             enable_auto_commit=False, client_id="convergence-stations-list",
                             bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    latest: dict[str, dict[str, Any]] = {}
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        since_ms = int((time.time() - since_s) * 1000)
        starts = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            start = starts.get(tp)
            consumer.seek(tp, start.offset if start is not None else end[tp])
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                log.warning("stations list: reading %s took longer than %g s; showing what was read",
                            topic, timeout_s)
                break
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        doc = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(doc, dict) and isinstance(doc.get("station_id"), str):
                        latest[doc["station_id"]] = doc
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
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                             enable_auto_commit=False, client_id="convergence-command",
                             bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    acks: list[dict[str, Any]] = []
    try:
        hint = ("is `convergence stations run` running against this broker with the same "
                "CONVERGENCE_TOPIC_PREFIX?")
        if not consumer.partitions_for_topic(control_topic):
            raise CommandError(f"control topic {control_topic!r} does not exist on {bootstrap}; {hint}")
        if wait_s > 0:
            parts = consumer.partitions_for_topic(acks_topic)
            if not parts:
                raise CommandError(f"acks topic {acks_topic!r} does not exist on {bootstrap}; {hint}")
            tps = [TopicPartition(acks_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # fix the start now: acks to the command come after it
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


# -- commands --------------------------------------------------------------------------


KafkaOpt = Annotated[str | None, typer.Option(
    "--kafka", help="Kafka bootstrap servers (default: setting kafka_bootstrap).")]
FleetOpt = Annotated[Path | None, typer.Option(
    "--fleet", help="Fleet file (TOML; `convergence stations init --out FILE` writes one). "
                    "Default: the synthetic fleet of --stations stations.")]


def _load_specs(fleet: Path | None, s: Settings, interval: float | None) -> tuple[list[StationSpec],
                                                                                 int | None, str]:
    if fleet is None:
        return default_specs(s.stations, s.seed, interval or DEFAULT_INTERVAL_S), s.seed, "default fleet"
    try:
        spec = load_fleet(fleet)
    except FleetError as exc:
        fail(exc, 2)
    return spec.stations, spec.seed, str(fleet)


@app.command()
def run(
    fleet: FleetOpt = None,
    kafka: KafkaOpt = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the default synthetic fleet (default 247).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the synthetic scenario (default: the fleet file's seed, else the setting).")] = None,
    only: Annotated[str | None, typer.Option(
        help="Run only these stations: comma-separated ids or patterns, e.g. 'news-*'.")] = None,
    part: Annotated[str | None, typer.Option(
        help="Run part I of a fleet split in N (I/N, e.g. 2/3): one process per part, split "
             "by a hash of the station id.")] = None,
    duration: Annotated[float | None, typer.Option(
        min=0.5, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    t0: Annotated[float | None, typer.Option(
        help="Scenario start, unix seconds (default: now). Give every process of one fleet "
             "(--part, --only) the same value so they play one scenario.")] = None,
    interval: Annotated[float | None, typer.Option(
        min=0.05, help="Sampling interval of every station, seconds (default 0.5, or each "
                       "station's interval_s from --fleet).")] = None,
    status_every: Annotated[float, typer.Option(
        min=0.2, help="Publish every station's status this often, seconds.")] = 2.0,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
) -> None:
    """Run ground stations: events to Kafka, control commands obeyed.

    Acks go to the acks topic, each station's status to the station-status topic.
    """
    from convergence.streams.faust_app import ClusterError, ensure_topics

    if fleet is not None and stations is not None:
        fail("--stations sizes the default fleet; with --fleet the file decides (use --only or "
             "--part to run fewer)", 2)
    s = settings(kafka_bootstrap=kafka, stations=stations, seed=seed)
    specs, file_seed, origin = _load_specs(fleet, s, interval)
    run_seed = seed if seed is not None else (file_seed if file_seed is not None else s.seed)
    try:
        split = parse_part(part) if part else None
        chosen = choose(specs, only=only, part=split)
    except ValueError as exc:
        fail(exc, 2)
    start = time.time() if t0 is None else t0
    world = fleet_world(specs, run_seed, (duration or 3600.0) + 60.0)
    # Build every source before touching Kafka: a bad fleet file fails at once, named.
    try:
        built = build_fleet(chosen, _unbound_sink, world=world, t0_s=start, seed=run_seed,
                            interval_s=interval)
    except FleetError as exc:
        fail(exc, 2)
    try:
        ensure_topics(s, ["events", "control", "acks", "dead-letter"])
    except ClusterError as exc:
        fail(exc)

    def build(sink: KafkaEventSink) -> Fleet:
        for agent in built.agents:
            agent.sink = sink
        return built

    def started(f: Fleet) -> None:
        if not json_out:
            until = f"for {duration:g} s" if duration else "until Ctrl-C"
            share = f", part {part}" if part else ""
            console.print(f"[bold]stations[/] {len(f.agents)} of {len(specs)} ({escape(origin)}{share}) "
                          f"publishing to {s.topic('events')} at {s.kafka_bootstrap}, running {until}")

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop(stop)
        return await run_stations(s, build, stop=stop, duration_s=duration, on_started=started,
                                  status_every_s=status_every)

    from kafka.errors import KafkaError

    try:
        out = asyncio.run(main())
    except ValueError as exc:
        fail(exc, 2)
    except (KafkaError, RuntimeError, OSError) as exc:
        fail(f"stations stopped: {type(exc).__name__}: {exc} (Kafka at {s.kafka_bootstrap})")
    failed = out["failed"] + out["control"]["failed"]
    if json_out:
        print_json(out)
    else:
        console.print(
            f"[bold]done[/] in {out['duration_s']:.1f} s: {out['sent']} event messages "
            f"({out['records_sent']} events) sent, {out['acked']} acked, {out['failed']} failed, "
            f"{out['retried']} re-sent; {out['commands']} commands, {out['acks']} acks, "
            f"{out['status_messages']} status messages.")
    if failed:
        err_console.print(f"warning: {failed} message(s) could not be delivered; "
                          "see the log above", markup=False)
        raise typer.Exit(1)


@app.command("list")
def list_(
    fleet: FleetOpt = None,
    kafka: Annotated[str | None, typer.Option(
        "--kafka", help="Read live states from this broker's station-status topic; without it "
                        "every state shows as 'unknown'.")] = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the default synthetic fleet (default 247).")] = None,
    since: Annotated[float, typer.Option(
        min=1.0, help="With --kafka: statuses older than this many seconds are ignored.")] = 600.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The fleet, one line per station, with live states from --kafka.

    With --fleet: the declared stations (plus any that report but are not declared).
    Without --fleet: with --kafka the stations that report, else the default fleet.
    """
    s = settings(kafka_bootstrap=kafka, stations=stations)
    specs: list[StationSpec] = []
    origin = "stations reporting"
    if fleet is not None or kafka is None:
        specs, _, origin = _load_specs(fleet, s, None)
    live: dict[str, dict[str, Any]] = {}
    if kafka is not None:
        from kafka.errors import KafkaError

        try:
            with _quiet_kafka():
                live = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=since)
        except KafkaError as exc:
            fail(f"cannot read station status from {s.kafka_bootstrap}: {type(exc).__name__}: {exc}; "
                 "is the broker up (`convergence kafka status`)?")
    rows: list[dict[str, Any]] = []
    for sp in specs:
        st = live.pop(sp.station_id, None)
        rows.append({"station_id": sp.station_id, "name": sp.name, "source_kind": sp.source_kind.value,
                     "region": sp.region, "group": sp.info.correlation_group,
                     "source": sp.source.describe(), "declared": True,
                     "interval_s": st["interval_s"] if st else sp.interval_s,
                     "state": st["state"] if st else "unknown",
                     **{k: (st or {}).get(k) for k in ("polls", "sent", "failures", "age_s", "host",
                                                       "pid")}})
    for sid, st in sorted(live.items()):
        rows.append({"station_id": sid, "name": "", "source_kind": st.get("kind"),
                     "region": st.get("region"), "group": st.get("group"), "source": st.get("source", "?"),
                     # without --fleet nothing is declared: whether it should be is unknown
                     "declared": False if fleet is not None else None, "interval_s": st.get("interval_s"),
                     "state": st.get("state"),
                     **{k: st.get(k) for k in ("polls", "sent", "failures", "age_s", "host", "pid")}})
    states: dict[str, int] = {}
    for r in rows:
        states[str(r["state"])] = states.get(str(r["state"]), 0) + 1
    if json_out:
        print_json({"fleet": origin, "kafka": s.kafka_bootstrap if kafka else None,
                    "status_topic": s.topic(STATUS_TOPIC) if kafka else None,
                    "states": states, "stations": rows})
        return
    # Plain aligned columns, one line per station: greppable, and never wrapped mid-id.
    cols = ("id", "kind", "region", "group", "source", "interval_s", "state", "polls", "sent",
            "failures", "seen_s_ago")
    cells = [[str(v) if v is not None else "-" for v in (
        r["station_id"] + (" (undeclared)" if r["declared"] is False else ""), r["source_kind"], r["region"],
        r["group"], r["source"], r["interval_s"], r["state"], r["polls"], r["sent"], r["failures"],
        r["age_s"])] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    console.print(f"{len(rows)} stations ({escape(origin)})", markup=True)
    for row in [list(cols), *cells]:
        console.print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
                      markup=False)
    console.print("states: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
                  + ("" if kafka else "  (pass --kafka BOOTSTRAP for live states)"))


@app.command("command")
def command(
    action: Annotated[Action, typer.Argument(help="What to do.", case_sensitive=False)],
    target: Annotated[str, typer.Option(
        "--target", help="station:ID, region:NAME, source_kind:KIND or all.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="NAME=NUMBER, repeatable: interval_s for set_interval and "
                              "burst_mode, any threshold name for set_thresholds.")] = None,
    ttl: Annotated[float, typer.Option(
        min=1.0, help="Seconds the command stays valid; for quarantine and burst_mode, how "
                      "long they last.")] = 300.0,
    reason: Annotated[str, typer.Option(help="Why (kept in the command and the logs).")] =
        "manual command from the CLI",
    kafka: KafkaOpt = None,
    wait_ack: Annotated[float | None, typer.Option(
        "--wait-ack", min=0.1, help="Wait up to this many seconds for acks and print them; "
                                    "exit 1 if none arrive.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Send one control command to running stations and, with --wait-ack, print the acks.

    Example: set_interval --target station:news-eu-west-001 --param interval_s=0.1 --wait-ack 10
    """
    try:
        tgt = parse_target(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--target") from None
    try:
        params = parse_params(action, param or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    s = settings(kafka_bootstrap=kafka)
    cmd = ControlCommand.create(action, tgt, issued_at_s=time.time(), ttl_s=ttl, params=params,
                                reason=reason)
    from kafka.errors import KafkaError

    try:
        with _quiet_kafka():
            acks = issue_command(s.kafka_bootstrap, s.topic("control"), s.topic("acks"), cmd,
                                 wait_s=wait_ack or 0.0)
    except CommandError as exc:
        fail(exc)
    except KafkaError as exc:
        fail(f"cannot reach Kafka at {s.kafka_bootstrap}: {type(exc).__name__}: {exc}; start a "
             "broker (`convergence kafka start`) or pass --kafka HOST:PORT")
    tgt_text = tgt.type if tgt.type == "all" else f"{tgt.type}:{tgt.value}"
    refused = [a for a in acks if not a.get("applied")]
    if json_out:
        print_json({"command": cmd.to_dict(), "topic": s.topic("control"), "acks": acks,
                    "applied": len(acks) - len(refused), "refused": len(refused)})
    else:
        what = " ".join([action.value, *(f"{k}={v:g}" for k, v in params.items())])
        console.print(f"sent {cmd.command_id} {escape(what)} to {escape(tgt_text)} on "
                      f"{s.topic('control')} at {s.kafka_bootstrap}")
        for a in acks:
            mark = "[green]applied[/]" if a.get("applied") else "[red]refused[/]"
            console.print(f"  {escape(str(a.get('station_id')))} {mark}: {escape(str(a.get('detail')))}")
    if wait_ack is None:
        return
    if not acks:
        fail(f"no station acknowledged {cmd.command_id} within {wait_ack:g} s: check that "
             f"`convergence stations run` is running against {s.kafka_bootstrap} with topic prefix "
             f"{s.topic_prefix!r}"
             + ("" if tgt.type == "all" else f", and that {tgt_text} names a running station")
             + " (`convergence stations list --kafka ...` shows what reports)")
    if refused:
        fail(f"{len(refused)} of {len(acks)} station(s) refused {cmd.command_id}: "
             f"{refused[0].get('detail')}")


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", help="Fleet file to write ('-' for stdout).")],
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the fleet (default: setting stations, 247).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fleet and its scenario.")] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Sampling interval of every station, s.")] =
        DEFAULT_INTERVAL_S,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write the default synthetic fleet as a fleet file, to edit and run with run --fleet."""
    s = settings(stations=stations, seed=seed)
    text = default_fleet_toml(s.stations, s.seed, interval)
    if str(out) == "-":
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        fail(f"{out} already exists; pass --force to overwrite it", 1)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)  # never leave a half-written fleet behind
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    console.print(f"wrote {s.stations} stations (seed {s.seed}) to {escape(str(out))}; run them with "
                  f"`convergence stations run --fleet {escape(str(out))}`")

"""``convergence stations ...``: run ground stations against a Kafka broker.

The fleet is built by :func:`synthetic_fleet` (the default synthetic scenario); a
fleet from a TOML file or real sources plugs in by building another
:class:`~convergence.ground_stations.agent.Fleet` and handing it to
:func:`run_stations`, which owns the Kafka side: events out through
:class:`~convergence.ground_stations.kafka_sink.KafkaEventSink`, control commands in
through :class:`~convergence.ground_stations.kafka_sink.ControlListener`, acks out.
"""

from __future__ import annotations

import asyncio
import fnmatch
import signal
import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson
import typer

from convergence.cli.common import console, err_console, fail, print_json, settings
from convergence.ground_stations.agent import Fleet, StationAgent
from convergence.ground_stations.kafka_sink import ControlListener, KafkaEventSink, serve_fleet
from convergence.ground_stations.scenario import SyntheticWorld, default_fleet, default_scenario
from convergence.ground_stations.synthetic import SyntheticSource
from convergence.schema import dead_letter
from convergence.settings import Settings

app = typer.Typer(help="Run ground stations that publish to a Kafka broker.",
                  no_args_is_help=True)



@app.callback()
def _group() -> None:
    """Run ground stations that publish to a Kafka broker."""
    # A callback keeps this a command group even with one command, so the command
    # line reads the same however it is mounted.


def select(ids: list[str], only: str | None) -> list[int]:
    """Positions of ``ids`` matching ``only``: comma-separated ids or shell patterns.

    >>> select(["news-eu-000", "news-eu-001", "sensor-apac-000"], "news-*,sensor-apac-000")
    [0, 1, 2]
    >>> select(["news-eu-000", "social-eu-000"], "social-*")
    [1]
    """
    if not only:
        return list(range(len(ids)))
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [i for i, sid in enumerate(ids) if any(fnmatch.fnmatchcase(sid, p) for p in pats)]


def synthetic_fleet(s: Settings, sink: Callable[[str, list[dict[str, Any]]], Any], *,
                    only: str | None = None, t0_s: float | None = None,
                    horizon_s: float = 3600.0, interval_s: float = 0.5,
                    clock: Callable[[], float] = time.time) -> Fleet:
    """The default synthetic fleet (``s.stations``, ``s.seed``), optionally a subset.

    Several processes running parts of one fleet (``--only``) pass the same ``t0_s``
    so they play the same scenario at the same moment. Raises ``ValueError`` when
    ``only`` matches no station.
    """
    scenario = default_scenario(s.stations, s.seed, horizon_s)
    world = SyntheticWorld(scenario)
    ids = [info.station_id for info in scenario.fleet]
    chosen = select(ids, only)
    if not chosen:
        raise ValueError(f"--only {only!r} matches none of the {len(ids)} stations "
                         f"(ids look like {', '.join(ids[:3])}); use ids or patterns "
                         "such as 'news-*,sensor-mena-*'")
    t0 = clock() if t0_s is None else t0_s
    return Fleet([
        StationAgent(scenario.fleet[i], SyntheticSource(world, i, t0, s.seed), sink,
                     interval_s=interval_s, clock=clock, seed=s.seed)
        for i in chosen
    ])


async def run_stations(s: Settings, build: Callable[[KafkaEventSink], Fleet], *,
                       stop: asyncio.Event, duration_s: float | None = None,
                       on_started: Callable[[Fleet], None] | None = None) -> dict[str, Any]:
    """Run a fleet against ``s.kafka_bootstrap`` until ``duration_s`` or ``stop``.

    Publishes events, applies control commands, publishes acks, and closes the
    producer (everything pending is flushed). Returns counters.
    """
    loop = asyncio.get_running_loop()
    # Constructing the producer and fetching metadata block: keep them off the loop.
    sink = await loop.run_in_executor(None, lambda: KafkaEventSink(
        s.kafka_bootstrap, s.topic("events"), wait_metadata=True))
    fleet = build(sink)
    dl_topic = s.topic("dead-letter")

    def invalid(raw: bytes, reason: str) -> None:
        dl = dead_letter("control", raw, reason, received_at_s=time.time())
        sink.publish(dl_topic, dl.dead_letter_id, orjson.dumps(dl.to_dict()))

    listener = ControlListener(s.kafka_bootstrap, s.topic("control"), on_invalid=invalid)
    elapsed = 0.0
    try:
        await loop.run_in_executor(None, listener.start, loop)
        if on_started is not None:
            on_started(fleet)
        timer = loop.call_later(duration_s, stop.set) if duration_s else None
        t0 = time.monotonic()
        acks = await serve_fleet(fleet, sink, stop, commands=listener.queue,
                                 acks_topic=s.topic("acks"))
        if timer is not None:
            timer.cancel()
        elapsed = time.monotonic() - t0
    finally:
        await loop.run_in_executor(None, listener.stop)
        counters = await loop.run_in_executor(None, sink.close)
    return {"stations": len(fleet.agents), "duration_s": round(elapsed, 3),
            "commands": listener.received, "invalid_commands": listener.invalid,
            "acks": acks, "states": fleet.states(), **counters.as_dict()}


def install_stop(stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM set ``stop``: the fleet stops and the producer is flushed."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@app.command()
def run(
    kafka: Annotated[str | None, typer.Option(
        help="Kafka bootstrap servers (default: setting kafka_bootstrap).")] = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the default synthetic fleet (default 247).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fleet and its scenario.")] = None,
    only: Annotated[str | None, typer.Option(
        help="Run only these stations: comma-separated ids or patterns, e.g. 'news-*'.")] = None,
    duration: Annotated[float | None, typer.Option(
        min=0.5, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    t0: Annotated[float | None, typer.Option(
        help="Scenario start, unix seconds (default: now). Give several --only processes "
             "the same value so they play one scenario.")] = None,
    interval: Annotated[float, typer.Option(
        min=0.05, help="Sampling interval of each station, seconds.")] = 0.5,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
) -> None:
    """Run the synthetic ground-station fleet, publishing events to Kafka and obeying
    control commands from the cluster (acknowledged on the acks topic)."""
    from convergence.streams.faust_app import ClusterError, ensure_topics

    s = settings(kafka_bootstrap=kafka, stations=stations, seed=seed)
    ids = [info.station_id for info in default_fleet(s.stations, s.seed)]
    if not select(ids, only):  # before touching Kafka: a typo should fail at once
        fail(f"--only {only!r} matches none of the {len(ids)} stations (ids look like "
             f"{', '.join(ids[:3])}); use ids or patterns such as 'news-*,sensor-mena-*'", 2)
    try:
        ensure_topics(s, ["events", "control", "acks", "dead-letter"])
    except ClusterError as exc:
        fail(exc)

    def build(sink: KafkaEventSink) -> Fleet:
        return synthetic_fleet(s, sink, only=only, t0_s=t0, interval_s=interval,
                               horizon_s=(duration or 3600.0) + 60.0)

    def started(fleet: Fleet) -> None:
        if not json_out:
            until = f"for {duration:g} s" if duration else "until Ctrl-C"
            console.print(f"[bold]stations[/] {len(fleet.agents)} of {s.stations} publishing to "
                          f"{s.topic('events')} at {s.kafka_bootstrap}, running {until}")

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop(stop)
        return await run_stations(s, build, stop=stop, duration_s=duration, on_started=started)

    from kafka.errors import KafkaError

    try:
        out = asyncio.run(main())
    except ValueError as exc:
        fail(exc, 2)
    except (KafkaError, RuntimeError, OSError) as exc:
        fail(f"stations stopped: {type(exc).__name__}: {exc} (Kafka at {s.kafka_bootstrap})")
    if json_out:
        print_json(out)
        return
    console.print(
        f"[bold]done[/] in {out['duration_s']:.1f} s: {out['sent']} messages "
        f"({out['records_sent']} events) sent, {out['acked']} acked, {out['failed']} failed, "
        f"{out['retried']} re-sent; {out['commands']} commands, {out['acks']} acks.")
    if out["failed"]:
        err_console.print(f"warning: {out['failed']} message(s) could not be delivered; "
                          "see the log above", markup=False)
        raise typer.Exit(1)

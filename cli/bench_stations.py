"""``convergence bench stations``: ground-station throughput into Kafka, beside a raw producer.

This file holds only the command function :func:`stations`; it is mounted on the
``bench`` sub-app (``bench.app.command("stations")(stations)``). The benchmark itself
is :func:`convergence.simulation.bench_stations.bench_stations`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from convergence.cli.common import benchmark_broker, console, fail, print_json, settings


class Codec(StrEnum):
    gzip = "gzip"
    lz4 = "lz4"
    snappy = "snappy"
    zstd = "zstd"


def stations(
    stations: Annotated[int, typer.Option(min=5, max=100_000, help="Stations in the fleet.")] = 247,
    seconds: Annotated[float, typer.Option(min=0.5, max=3600.0,
                                           help="How long the fleet sends, seconds.")] = 10.0,
    events_per_poll: Annotated[float, typer.Option(
        min=0.1, max=2000.0, help="Mean events one station poll yields (one Kafka message).")] = 10.0,
    kafka: Annotated[str | None, typer.Option(
        help="Kafka bootstrap servers (default: setting kafka_bootstrap).")] = None,
    local_kafka: Annotated[bool, typer.Option(
        "--local-kafka", help="Start a throwaway local broker for the run (needs Java and Maven).")] = False,
    linger_ms: Annotated[int, typer.Option(min=0, help="Producer linger, ms.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1024, help="Producer batch size, bytes.")] = 256 * 1024,
    compression: Annotated[Codec | None, typer.Option(
        help="Producer compression (default: lz4 when installed, else gzip).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fleet and its events.")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Events/s one process of synthetic stations puts into Kafka, beside raw kafka-python.

    The stations poll as fast as they can through the real sink (acks=all); the baseline
    sends the same number of the fleet's own encoded messages with the same producer
    settings. Both must be fully acked; the ratio is fleet/baseline.
    """
    from convergence.simulation.bench_stations import bench_stations

    if local_kafka and kafka:
        fail("give --kafka BOOTSTRAP or --local-kafka, not both", 2)
    s = settings(kafka_bootstrap=kafka)
    if compression is not None:
        from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

        have = {"gzip": has_gzip, "lz4": has_lz4, "snappy": has_snappy, "zstd": has_zstd}
        if not have[compression.value]():
            fail(f"--compression {compression.value}: kafka-python cannot find the {compression.value} "
                 f"library in this environment; install it (pip install {compression.value}) or "
                 "choose another codec", 2)
    def say(text: str) -> None:
        if not json_out:
            console.print(text, markup=False)

    with benchmark_broker(s, None if local_kafka else s.kafka_bootstrap, say,
                          missing_hint="pass --kafka HOST:PORT, or --local-kafka to start a "
                          "throwaway one") as bootstrap:
        r = bench_stations(bootstrap, stations=stations, seconds=seconds,
                           events_per_poll=events_per_poll, seed=seed, linger_ms=linger_ms,
                           batch_size=batch_size,
                           compression=compression.value if compression else None)
    if json_out:
        print_json(r)
        return
    p = r["producer"]
    console.print(
        f"stations: {r['fleet_events_per_s']:,} events/s ({r['fleet_messages_per_s']:,} messages/s, "
        f"{r['avg_events_per_message']:g} events and {r['avg_message_bytes']:,} bytes per message) from "
        f"{r['stations']} stations in one process, all {r['fleet_messages']:,} messages acked\n"
        f"raw kafka-python producer, same messages and settings: {r['baseline_events_per_s']:,} "
        f"events/s; stations/raw = {r['ratio_to_baseline']:.3f}\n"
        f"producer: acks={p['acks']}, idempotent, linger {p['linger_ms']} ms, batch {p['batch_size']:,} "
        f"bytes, {p['compression']}; broker {r['kafka_bootstrap']}")

"""``convergence kafka ...``: fetch, start, stop and inspect the local development broker.

Thin wrappers over :mod:`convergence.streams.kafka_local`; every failure becomes one
message on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from convergence.cli.common import fail, print_json, settings
from convergence.streams import kafka_local
from convergence.streams.kafka_local import KafkaLocalError

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run a local single-node Apache Kafka broker (KRaft) from the Maven Central jars.",
    no_args_is_help=True,
)


@app.command()
def fetch() -> None:
    """Download the Kafka jars with Maven into the cache (no-op when already there)."""
    s = settings()
    try:
        libs = kafka_local.fetch(s)
    except KafkaLocalError as exc:
        fail(exc)
    typer.echo(f"Kafka {s.kafka_version} (Scala {s.kafka_scala}) jars in {libs}")


@app.command()
def start(
    port: Annotated[
        int | None, typer.Option(help="Client port on 127.0.0.1; default: a free port.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker to answer metadata.")
    ] = 90.0,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Delete the broker's storage first (all topics, messages and offsets) "
                        "and start empty on new ports.")] = False,
) -> None:
    """Start the broker in the background and print its bootstrap address.

    Its storage is kept between starts: topics, messages and committed offsets survive
    `kafka stop` / `kafka start` (and a crash), on the same address. --fresh starts empty.
    """
    s = settings()
    try:
        handle = kafka_local.start(s, port=port, persistent=True, timeout=timeout, fresh=fresh)
    except KafkaLocalError as exc:
        fail(exc)
    storage = (f"kept its storage from the last run ({handle.state_dir / 'data'}; "
               "--fresh starts empty)" if handle.kept_storage
               else f"fresh storage in {handle.state_dir / 'data'}")
    # Human lines on stderr; stdout is only the address so `$(convergence kafka start)` works.
    typer.echo(
        f"Kafka {handle.version} running, pid {handle.pid}, {storage}, log {handle.log_path}\n"
        f"use it with: export CONVERGENCE_KAFKA_BOOTSTRAP={handle.bootstrap}",
        err=True,
    )
    typer.echo(handle.bootstrap)


@app.command()
def stop() -> None:
    """Stop the background broker started by `start`."""
    try:
        before = kafka_local.stop(settings())
    except KafkaLocalError as exc:
        fail(exc)
    if before.recorded and before.pid_alive:
        typer.echo(f"stopped Kafka broker pid {before.pid} at {before.bootstrap}")
    elif before.recorded:
        typer.echo(f"broker pid {before.pid} was no longer running; cleared its state")
    else:
        typer.echo("no local Kafka broker is recorded")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether the background broker's process is alive and its port answers.

    Exit code 0 when it runs, 1 when it does not (so scripts can test it).
    """
    try:
        st = kafka_local.status(settings())
    except KafkaLocalError as exc:
        fail(exc)
    if as_json:
        print_json(st.as_dict())
    elif not st.recorded:
        typer.echo("not running (no local broker recorded); start one with `convergence kafka "
                   "start`")
    else:
        state = "running" if st.running else "NOT running"
        typer.echo(
            f"{state}: bootstrap {st.bootstrap}, pid {st.pid} "
            f"(alive: {st.pid_alive}, port answers: {st.port_open}), Kafka {st.version}, "
            f"log {st.log_path}"
        )
    if not st.running:
        raise typer.Exit(1)

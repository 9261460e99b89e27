"""``convergence alerts ...``: follow convergence alerts on the cluster's alerts topic."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
import typer

from convergence.cli.common import (
    KafkaOpt,
    err_console,
    fail,
    kafka_errors,
    plural,
    print_alert,
    print_json,
    settings,
)

app = typer.Typer(help="Follow convergence alerts published by the cluster.",
                  no_args_is_help=True)



@app.callback()
def _group() -> None:
    """Follow convergence alerts published by the cluster."""
    # A callback keeps this a command group even with one command, so the command
    # line reads the same however it is mounted.


class AlertStreamError(RuntimeError):
    """The alerts topic cannot be read; the message says what to do."""


def iter_alerts(bootstrap: str, topic: str, *, from_beginning: bool = False,
                timeout_s: float | None = None, stop: threading.Event | None = None,
                ready: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """Yield alerts from ``topic`` as they arrive, until ``timeout_s`` or ``stop``.

    Reads every partition without joining a consumer group (a tail must not steal
    partitions from another tail). ``ready`` is set once the consumer sits at its
    starting offsets, so nothing published afterwards is missed.
    """
    from kafka.errors import KafkaError

    from convergence.streams import kafka_client

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bounded = {} if timeout_s is None else {
        "bootstrap_timeout_ms": max(int(min(timeout_s, kafka_client.BOOTSTRAP_TIMEOUT_MS / 1000)
                                        * 1000), 100)}
    try:
        consumer = kafka_client.consumer(bootstrap, "convergence-alerts-tail", **bounded)
    except (KafkaError, OSError) as exc:
        raise AlertStreamError(kafka_client.unreachable(bootstrap, exc)) from None
    try:
        # "from the end" means from *this* moment: positions are resolved before `ready`
        tps = kafka_client.assign_all(consumer, topic,
                                      start="beginning" if from_beginning else "end",
                                      wait_s=math.inf if timeout_s is None else timeout_s,
                                      should_stop=None if stop is None else stop.is_set)
        if not tps:
            raise AlertStreamError(
                f"topic {topic!r} does not exist on {bootstrap}; is the cluster running "
                "(`convergence cluster up`) with the same CONVERGENCE_TOPIC_PREFIX?")
        if ready is not None:
            ready.set()
        while not (stop and stop.is_set()):
            if deadline is not None and time.monotonic() > deadline:
                return
            for records in consumer.poll(timeout_ms=250).values():
                for rec in records:
                    try:
                        alert = orjson.loads(rec.value or b"")
                        if not isinstance(alert, dict):
                            raise ValueError(f"expected an object, got {type(alert).__name__}")
                    except ValueError as exc:
                        err_console.print(f"warning: skipping {topic}[{rec.partition}]@"
                                          f"{rec.offset}: not an alert ({exc})", markup=False)
                        continue
                    yield alert
    finally:
        consumer.close()


def show_alert(alert: dict[str, Any], *, as_json: bool) -> None:
    """One line per alert: JSON, or the readable line of ``convergence run``."""
    if as_json:
        print_json(alert)
        return
    try:
        print_alert(alert)
    except (KeyError, TypeError, ValueError) as exc:
        err_console.print(f"warning: alert {alert.get('alert_id', '?')} lacks {exc}; "
                          "printing it raw", markup=False)
        print_json(alert)


@app.command()
def tail(
    kafka: KafkaOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Start with the oldest alert still on the topic.")] = False,
    count: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many alerts (exit code 3 if --timeout comes first).")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
) -> None:
    """Print convergence alerts as the cluster publishes them."""
    from convergence.streams.topics import ClusterError, ensure_topics

    s = settings(kafka_bootstrap=kafka)
    topic = s.topic("alerts")
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout

    def left(cap: float) -> float:
        """Seconds a step may take: at most ``cap``, and never past --timeout."""
        return cap if deadline is None else max(min(cap, deadline - time.monotonic()), 0.1)

    # kafka_errors hides kafka-python's own retry lines (unless -v) and turns what is left
    # of a Kafka failure into one error line.
    with kafka_errors(s.kafka_bootstrap):
        try:
            # Creating it (idempotently) lets a tail start before the cluster does.
            ensure_topics(s, ["alerts"], timeout_s=left(30.0))
            for alert in iter_alerts(s.kafka_bootstrap, topic, from_beginning=from_beginning,
                                     timeout_s=None if deadline is None else left(math.inf)):
                show_alert(alert, as_json=json_out)
                seen += 1
                if count is not None and seen >= count:
                    return
        except (AlertStreamError, ClusterError) as exc:
            fail(exc)
        except KeyboardInterrupt:
            return
    if count is not None and seen < count:
        fail(f"only {seen} of {plural(count, 'alert')} on {topic} within {timeout:g} s", 3)

"""``convergence alerts ...``: subscribe to convergence alerts on the cluster's alerts topic.

``subscribe`` (``tail`` is an alias) prints each alert the cluster publishes as one
readable line (or one JSON line), filtered by level and region, until ``--max`` alerts,
``--timeout`` seconds (connecting included) or Ctrl-C.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Annotated

import orjson
import typer

from convergence.cli.common import (
    KafkaOpt,
    err_console,
    fail,
    kafka_errors,
    print_alert,
    print_json,
    settings,
)
from convergence.records import Alert, Level

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Follow convergence alerts published by the cluster.",
    no_args_is_help=True)

#: warnings about unreadable messages on the alerts topic, at most this many per command
MAX_WARNINGS = 5
#: alert ids remembered to drop repeats (a failover may publish an alert again)
MAX_REMEMBERED = 10_000


@app.callback()
def _group() -> None:
    """Follow convergence alerts published by the cluster."""
    # A callback keeps this a command group even with one command, so the command
    # line reads the same however it is mounted.


class AlertStreamError(RuntimeError):
    """The alerts topic cannot be read; the message says what to do."""


def iter_alerts(bootstrap: str, topic: str, *, from_beginning: bool = False,
                timeout_s: float | None = None, stop: threading.Event | None = None,
                ready: threading.Event | None = None) -> Iterator[Alert]:
    """Yield alerts from ``topic`` as they arrive, until ``timeout_s`` or ``stop``.

    ``timeout_s`` bounds everything, connecting included: no broker within it is an
    :class:`AlertStreamError`. Reads every partition without joining a consumer group
    (a subscriber must not steal partitions from another). ``ready`` is set once the
    consumer sits at its starting offsets, so nothing published afterwards is missed.
    A message that is not an alert (:meth:`Alert.from_dict` refuses it) is skipped
    with a warning on stderr (at most :data:`MAX_WARNINGS`, then a count at the end);
    an alert id already yielded (re-published after a failover) is skipped silently.
    """
    from kafka.errors import KafkaError

    from convergence.streams import kafka_client

    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    # A worker that takes over after a failover may publish an alert again: its id is
    # deterministic (region episode and level), so a repeat is dropped here.
    seen: OrderedDict[str, None] = OrderedDict()

    def left_ms(cap_ms: int) -> int:
        return int(max(min(cap_ms, (deadline - time.monotonic()) * 1000), 100))

    try:
        consumer = kafka_client.consumer(
            bootstrap, "convergence-alerts-subscribe",
            bootstrap_timeout_ms=left_ms(kafka_client.BOOTSTRAP_TIMEOUT_MS))
    except (KafkaError, OSError) as exc:
        within = "" if timeout_s is None else f" within {timeout_s:g} s"
        raise AlertStreamError(kafka_client.unreachable(bootstrap, exc) + within) from None
    skipped = 0
    try:
        # "from the end" means from *this* moment: positions are resolved before `ready`
        tps = kafka_client.assign_all(consumer, topic,
                                      start="beginning" if from_beginning else "end",
                                      wait_s=max(deadline - time.monotonic(), 0.0),
                                      should_stop=None if stop is None else stop.is_set)
        if not tps:
            if stop is not None and stop.is_set():
                return
            raise AlertStreamError(
                f"topic {topic!r} does not exist on {bootstrap}; is the cluster running "
                "(`convergence cluster up`) with the same CONVERGENCE_TOPIC_PREFIX?")
        if ready is not None:
            ready.set()
        while not (stop and stop.is_set()) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=left_ms(250)).values():
                for rec in records:
                    try:
                        doc = orjson.loads(rec.value or b"")
                        if not isinstance(doc, dict):
                            raise TypeError(f"expected an object, got {type(doc).__name__}")
                        alert = Alert.from_dict(doc)
                    except (ValueError, TypeError, KeyError) as exc:
                        skipped += 1
                        if skipped <= MAX_WARNINGS:
                            err_console.print(f"warning: skipping {topic}[{rec.partition}]@"
                                              f"{rec.offset}: not an alert ({str(exc)[:200]})",
                                              markup=False)
                        continue
                    if alert.alert_id in seen:
                        continue
                    seen[alert.alert_id] = None
                    if len(seen) > MAX_REMEMBERED:
                        seen.popitem(last=False)
                    yield alert
    finally:
        consumer.close()
        if skipped > MAX_WARNINGS:
            err_console.print(f"warning: skipped {skipped} messages on {topic} that were not "
                              "alerts", markup=False)


def show_alert(alert: Alert, *, as_json: bool) -> None:
    """One line per alert: JSON, or the readable line of ``convergence run``."""
    if as_json:
        print_json(alert.to_dict())
    else:
        print_alert(alert.to_dict())


def wanted(alert: Alert, *, level: Level | None, regions: list[str] | None) -> bool:
    """The alert is at ``level`` or above and in one of ``regions`` (``None``: any).

    >>> a = Alert(alert_id="a", report_id="r", region="mena", level=Level.WARNING, score=70.0,
    ...           tick=1, time_s=1.0, episode_tick=1, stations=(), source_kinds=(),
    ...           osint_corroborated=True)
    >>> wanted(a, level=Level.WARNING, regions=["MENA"]), wanted(a, level=Level.CONVERGED, regions=None)
    (True, False)
    """
    if level is not None and alert.level < level:
        return False
    return regions is None or alert.region.lower() in {r.lower() for r in regions}


@app.command()
def subscribe(
    level: Annotated[Level | None, typer.Option(
        case_sensitive=False, help="Only alerts at this level or above (warning, converged).")] = None,
    region: Annotated[list[str] | None, typer.Option(
        help="Only alerts in this region (repeat for several), e.g. --region mena.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    max_alerts: Annotated[int | None, typer.Option(
        "--max", "--count", min=1,
        help="Stop after this many alerts (exit code 3 if --timeout comes first).")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, help="Stop after this many seconds, connecting included (default: until "
                      "Ctrl-C).")] = None,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Start with the oldest alert still on the topic.")] = False,
    kafka: KafkaOpt = None,
) -> None:
    """Print convergence alerts as the cluster publishes them, one line each."""
    from convergence.streams.topics import ClusterError, ensure_topics

    s = settings(kafka_bootstrap=kafka)
    topic = s.topic("alerts")
    started = time.monotonic()
    seen = 0
    with kafka_errors(s.kafka_bootstrap):  # kafka-python's own log lines stay quiet
        try:
            # Creating it (idempotently) lets a subscriber start before the cluster does.
            ensure_topics(s, ["alerts"], timeout_s=min(timeout, 30.0) if timeout else 30.0)
            left = None if timeout is None else max(timeout - (time.monotonic() - started), 0.1)
            for alert in iter_alerts(s.kafka_bootstrap, topic, from_beginning=from_beginning,
                                     timeout_s=left):
                if not wanted(alert, level=level, regions=region):
                    continue
                show_alert(alert, as_json=json_out)
                seen += 1
                if max_alerts is not None and seen >= max_alerts:
                    return
        except (AlertStreamError, ClusterError) as exc:
            fail(exc)
        except KeyboardInterrupt:
            return
    if max_alerts is not None and seen < max_alerts:
        fail(f"only {seen} of {max_alerts} alert(s) on {topic} within {timeout:g} s", 3)


app.command("tail", help="Same as `alerts subscribe` (kept for existing scripts).")(subscribe)

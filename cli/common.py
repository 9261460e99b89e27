"""Shared CLI plumbing: settings with flag overrides, failing with a clear message, output,
the ``--kafka`` option, Kafka errors as one readable line, and Ctrl-C for asyncio commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from convergence.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

KafkaOpt = Annotated[str | None, typer.Option(
    "--kafka", help="Kafka bootstrap servers (default: setting kafka_bootstrap).")]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str | BaseException, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with ``code`` (no traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", markup=True)
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    """The effective settings, with command-line overrides (``None`` = not given)."""
    try:
        return load_settings(overrides=overrides)
    except SettingsError as exc:
        fail(exc, 2)


def print_json(obj: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def install_stop(stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM set ``stop`` (call from inside the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """``asyncio.run(main(stop))`` where Ctrl-C / SIGTERM set ``stop``, so ``main`` can
    stop cleanly (flush, close) instead of being interrupted."""

    async def runner() -> T:
        stop = asyncio.Event()
        install_stop(stop)
        return await main(stop)

    return asyncio.run(runner())


@contextlib.contextmanager
def kafka_errors(bootstrap: str) -> Iterator[None]:
    """Kafka failures inside end the command with one readable error, not a traceback.

    Hides kafka-python's per-retry connection log lines unless -v was given. A
    ``KafkaError`` or ``OSError`` says the broker cannot be reached (and how to start
    one); a ``RuntimeError`` (e.g. a missing topic) keeps its own message.
    """
    from kafka.errors import KafkaError

    from convergence.streams.kafka_client import unreachable

    with quiet_kafka_logs():
        try:
            yield
        except typer.Exit:  # a RuntimeError too: fail() inside already said what went wrong
            raise
        except (KafkaError, OSError) as exc:
            fail(unreachable(bootstrap, exc))
        except RuntimeError as exc:
            fail(f"{exc} (Kafka at {bootstrap})")


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """kafka-python's per-retry connection lines stay out of the output unless -v was
    given: the command itself says once, in words, what went wrong."""
    kafka_log = logging.getLogger("kafka")
    old = kafka_log.level
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(old)


_KIND = {"osint_news": "news", "osint_social": "social", "market_price": "prices",
         "market_volume": "volumes", "sensor": "sensors"}
ALERT_STYLE = {"watch": "yellow", "warning": "bold dark_orange", "converged": "bold red",
               "quiet": "green"}


def clock_text(t: float) -> str:
    """``HH:MM:SS`` local time of unix seconds ``t``."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def print_alert(alert: Any) -> None:
    """One readable line per alert: time, level, score, region, stations, kinds, report id.

    Takes an :class:`~convergence.records.Alert` or its dict form (as topics carry it).
    """
    from convergence.records import Alert

    a = alert if isinstance(alert, Alert) else Alert.from_dict(alert)
    lvl = a.level.value
    kinds = ", ".join(_KIND.get(k, k) for k in a.source_kinds)
    n = a.n_stations
    console.print(
        f"{clock_text(a.time_s)}  [{ALERT_STYLE.get(lvl, 'bold')}]{lvl.upper():<9}[/] "
        f"score {a.score:5.1f}  {a.region}  {n} station{'' if n == 1 else 's'} ({kinds})  "
        f"report {a.report_id}"
    )

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


@contextlib.contextmanager
def benchmark_broker(s: Settings, bootstrap: str | None, say: Callable[[str], None], *,
                     missing_hint: str) -> Iterator[str]:
    """The broker a benchmark runs against: ``bootstrap`` (it must answer; else one
    ``error:`` line ending with ``missing_hint``) or, for ``None``, a throwaway local one,
    stopped afterwards. What goes wrong inside becomes one ``error:`` line: a bad value
    exits 2, anything else 1 - never a traceback."""
    from kafka.errors import KafkaError

    from convergence.streams import kafka_local

    broker: kafka_local.BrokerHandle | None = None
    try:
        if bootstrap is None:
            say("starting a local Kafka broker for the benchmark ...")
            broker = kafka_local.start(s)
            bootstrap = broker.bootstrap
        elif not kafka_local.metadata_ok(bootstrap):
            fail(f"no Kafka broker answers at {bootstrap}; {missing_hint}", 1)
        yield bootstrap
    except typer.Exit:  # fail(): already said
        raise
    except ValueError as exc:
        fail(exc, 2)
    except kafka_local.KafkaLocalError as exc:
        fail(exc)
    except (KafkaError, RuntimeError, OSError) as exc:
        fail(f"benchmark failed: {type(exc).__name__}: {exc}")
    finally:
        if broker is not None:
            broker.stop()


def settings(**overrides: Any) -> Settings:
    """The effective settings, with command-line overrides (``None`` = not given)."""
    try:
        return load_settings(overrides=overrides)
    except SettingsError as exc:
        fail(exc, 2)


def check_models(s: Settings) -> None:
    """End the command with one clear error when a pinned model (``meter_model`` or
    ``regime_model`` set to ``NAME@N``) is not in the registry, before anything starts."""
    from convergence.models.registry import ModelRegistry, RegistryError
    from convergence.settings import MODEL_OFF, env_name, model_spec

    for name in MODEL_OFF:
        setting = f"{name}_model"
        version = model_spec(getattr(s, setting), name)
        if not isinstance(version, int):
            continue
        try:
            reg = ModelRegistry(s.models_path)
            reg.record(name, version)
            if name == "meter":  # it must also fit this version's meter features
                from convergence.models.meter_model import load_scorer

                load_scorer(reg, version)
        except RegistryError as exc:
            fail(f"{setting} = {getattr(s, setting)} ({s.source_of(setting)}) names a model that "
                 f"cannot be used: {exc}. `convergence models list` shows the models there; set "
                 f"{env_name(setting)}=auto to use the latest, or {MODEL_OFF[name]} for none", 2)


def print_json(obj: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def install_stop(stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM set ``stop`` (call from inside the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[T]], *,
                      virtual_start_s: float | None = None) -> T:
    """``asyncio.run(main(stop))`` where Ctrl-C / SIGTERM set ``stop``, so ``main`` can
    stop cleanly (flush, close) instead of being interrupted. With ``virtual_start_s``,
    on a simulated clock starting then (:mod:`convergence.streams.virtual_clock`)."""

    async def runner() -> T:
        stop = asyncio.Event()
        install_stop(stop)
        return await main(stop)

    if virtual_start_s is not None:
        from convergence.streams.virtual_clock import run_virtual

        return run_virtual(runner, start_s=virtual_start_s)
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


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 station"``, ``"2 stations"``: a count with its noun in the right number.

    >>> plural(1, "station"), plural(2, "station"), plural(0, "duplicate"), plural(3, "is", "are")
    ('1 station', '2 stations', '0 duplicates', '3 are')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def alert_text(alert: Any) -> tuple[str, str]:
    """An alert's readable line, as ``(level word, the rest)``: score, region,
    stations, kinds and report id (plain text, no markup). Takes an
    :class:`~convergence.records.Alert` or its dict form (as topics carry it)."""
    if not isinstance(alert, dict):
        alert = alert.to_dict()
    lvl = alert["level"]
    kinds = ", ".join(_KIND.get(k, k) for k in alert["source_kinds"])
    return (lvl.upper(),
            f"score {alert['score']:5.1f}  {', '.join(alert['regions'])}  "
            f"{plural(int(alert['n_stations']), 'station')} ({kinds})  report {alert['report_id']}")


def print_alert(alert: Any) -> None:
    """One readable line per alert: time, level, score, stations, kinds, report id.

    An alert that carries ``stored: False`` says so on its line (with the store's
    error), so nobody takes it for a stored one. Takes an
    :class:`~convergence.records.Alert` or its dict form.
    """
    if not isinstance(alert, dict):
        alert = alert.to_dict()
    lvl = alert["level"]
    word, rest = alert_text(alert)
    note = ""
    if alert.get("stored") is False:
        note = f"  [bold red]NOT stored yet[/] ({escape(str(alert.get('store_error', '?'))[:200])})"
    console.print(
        f"{clock_text(alert['time_s'])}  [{ALERT_STYLE.get(lvl, 'bold')}]{word:<9}[/] "
        f"{escape(rest)}{note}"
    )

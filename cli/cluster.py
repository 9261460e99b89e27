"""``convergence cluster ...``: the pipeline as Faust workers on a Kafka broker.

``worker`` runs one worker in the foreground (what a service manager or a container
starts). ``up`` is the all-in-one development cluster: an optional local broker, N
worker processes, the synthetic fleet in this process, alerts printed as they arrive,
and a clean stop after ``--duration`` or Ctrl-C.

Store ownership with several workers: an embedded ``surrealkv://`` file can be open
in one process only, so ``up`` gives the store to worker 0 and starts the others with
``--no-store``; worker 0's store sink writes what *every* worker publishes (it reads
the output topics). With a SurrealDB server URL (``ws://``...) every worker runs a sink.
On the way out the workers without a store stop first, so their last outputs are on
the topics before the store owners drain them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from convergence.cli.common import KafkaOpt, console, err_console, fail, plural, print_json, settings
from convergence.settings import Settings, env_name, fields

app = typer.Typer(help="Run the pipeline as Faust workers on a Kafka broker.",
                  no_args_is_help=True)

_SERVER_SCHEMES = ("ws", "wss", "http", "https")


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


DbOption = Annotated[str | None, typer.Option(
    help="SurrealDB URL: surrealkv://PATH (default: under the data dir), mem:// or "
         "ws://HOST:PORT.")]


@app.command()
def worker(
    kafka: KafkaOpt = None,
    db: DbOption = None,
    store: Annotated[bool, typer.Option(
        "--store/--no-store",
        help="Run the store sink (writes alerts, reports, responses and dead letters to "
             "SurrealDB). Only one process may own a surrealkv:// file.")] = True,
    partitions: Annotated[int, typer.Option(
        min=1, max=1024, help="Partitions for topics this worker creates (1 = every station "
                              "in one meter; more = scale-out without cross-partition "
                              "convergence).")] = 1,
    log_level: Annotated[LogLevel, typer.Option(help="Worker log level.")] = LogLevel.warning,
) -> None:
    """Run one Faust worker in the foreground until SIGTERM or Ctrl-C."""
    from convergence.store.surreal import StoreError
    from convergence.streams.faust_app import run_worker
    from convergence.streams.topics import ClusterError

    s = settings(kafka_bootstrap=kafka, db=db)
    err_console.print(f"convergence worker {s.faust_app_id}: kafka {s.kafka_bootstrap}, "
                      f"topics {s.topic('*')}, store {s.db_url if store else 'none'}",
                      markup=False)
    try:
        run_worker(s, loglevel=log_level.value, store=store, partitions=partitions)
    except (ClusterError, StoreError) as exc:
        fail(exc)


# -- up -----------------------------------------------------------------------------


def worker_env(s: Settings) -> dict[str, str]:
    """The environment of a worker subprocess: every effective setting, spelled out, so
    the workers run with exactly this process's configuration (flags included)."""
    env = dict(os.environ)
    for f in fields():
        env[env_name(f.name)] = str(getattr(s, f.name))
    env["CONVERGENCE_DB"] = s.db_url
    return env


def worker_command() -> list[str]:
    """argv that runs ``cluster worker`` in a fresh interpreter."""
    return [sys.executable, "-m", "convergence.cli.main", "cluster", "worker"]


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    store: bool


def _spawn(s: Settings, i: int, *, store: bool, log_dir: Path, level: LogLevel) -> _Worker:
    log_path = log_dir / f"worker-{i}.log"
    cmd = [*worker_command(), "--log-level", level.value, "--store" if store else "--no-store"]
    with log_path.open("wb") as out:
        # Own session: Ctrl-C reaches only `up`, which stops the fleet first and the
        # workers after, so the last events are still processed.
        proc = subprocess.Popen(cmd, env=worker_env(s), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return _Worker(proc, log_path, store)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _stop_workers(workers: list[_Worker], timeout_s: float) -> list[int | None]:
    """SIGTERM in two waves: workers without a store first, so what they publish while
    stopping (last ticks, their run records) is on the topics before the store owners'
    sinks drain them."""
    for wave in ([w for w in workers if not w.store], [w for w in workers if w.store]):
        for w in wave:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for w in wave:
            try:
                w.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                err_console.print(f"warning: worker pid {w.proc.pid} ignored SIGTERM for "
                                  f"{timeout_s:g} s; killing it (log {w.log_path})",
                                  markup=False)
                w.proc.kill()
                w.proc.wait()
    return [w.proc.returncode for w in workers]


def wait_caught_up(s: Settings, timeout_s: float) -> bool:
    """Wait until the workers' consumer group has committed every event in Kafka."""
    from kafka import KafkaAdminClient

    from convergence.streams import kafka_client

    topic = s.topic("events")
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap.split(","))
    consumer = kafka_client.consumer(s.kafka_bootstrap, "convergence-cluster-lag")
    try:
        tps = kafka_client.assign_all(consumer, topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            end = consumer.end_offsets(tps)
            done = admin.list_group_offsets(s.faust_app_id).get(s.faust_app_id, {})
            if all(tp in done and done[tp].offset >= end[tp] for tp in tps if end[tp] > 0):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()
        admin.close()


@app.command()
def up(
    local_kafka: Annotated[bool, typer.Option(
        "--local-kafka", help="Start a throwaway local broker (Java + Maven needed) for this "
                              "run instead of using --kafka.")] = False,
    kafka: KafkaOpt = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Faust worker processes.")] = 1,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Synthetic ground stations (default 247).")] = None,
    duration: Annotated[float | None, typer.Option(
        min=1.0, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the fleet and scenario.")] = None,
    db: DbOption = None,
    drain: Annotated[float, typer.Option(
        min=0.0, help="After the stations stop, wait up to this long for the workers to "
                      "process everything.")] = 30.0,
    log_level: Annotated[LogLevel, typer.Option(help="Workers' log level.")] = LogLevel.warning,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
) -> None:
    """Start a development cluster: \\[local Kafka,] N workers and the synthetic fleet.
    Alerts print as they arrive; everything stops cleanly after --duration or Ctrl-C."""
    from kafka.errors import KafkaError

    from convergence.cli.alerts import iter_alerts, show_alert
    from convergence.cli.common import run_until_stopped
    from convergence.ground_stations.fleet import build_fleet, default_specs, fleet_world
    from convergence.ground_stations.kafka_fleet import run_stations
    from convergence.streams import kafka_local
    from convergence.streams.topics import ClusterError, ensure_topics

    s = settings(kafka_bootstrap=kafka, stations=stations, seed=seed, db=db)
    broker: Any = None
    procs: list[_Worker] = []
    alerts: list[dict[str, Any]] = []
    stop_tail = threading.Event()
    tail_ready = threading.Event()
    tail_error: list[BaseException] = []
    crashed: list[str] = []
    out: dict[str, Any] = {}
    codes: list[int | None] = []
    try:
        if local_kafka:
            console.print("starting a local Kafka broker ...")
            broker = kafka_local.start(s)
            s = s.replace(kafka_bootstrap=broker.bootstrap)
        ensure_topics(s)
        log_dir = s.data_dir / "cluster"
        log_dir.mkdir(parents=True, exist_ok=True)
        store_all = s.db_url.split("://", 1)[0] in _SERVER_SCHEMES
        for i in range(workers):
            procs.append(_spawn(s, i, store=store_all or i == 0, log_dir=log_dir,
                                level=log_level))
        if not json_out:
            console.print(
                f"[bold]cluster[/] kafka {s.kafka_bootstrap}, {plural(workers, 'worker')} (logs in "
                f"{log_dir}), store {s.db_url} on "
                f"{'every worker' if store_all else 'worker 0'}, {plural(s.stations, 'station')}, "
                f"seed {s.seed}, running {f'for {duration:g} s' if duration else 'until Ctrl-C'}")

        def tail() -> None:
            try:
                for alert in iter_alerts(s.kafka_bootstrap, s.topic("alerts"), stop=stop_tail,
                                         ready=tail_ready):
                    alerts.append(alert)
                    show_alert(alert, as_json=json_out)
            except Exception as exc:  # reported after the run; never kills the cluster
                tail_error.append(exc)
                tail_ready.set()

        tail_thread = threading.Thread(target=tail, daemon=True, name="alerts-tail")
        tail_thread.start()
        tail_ready.wait(30.0)

        async def watch(stop: asyncio.Event) -> None:
            while not stop.is_set():
                for i, w in enumerate(procs):
                    if w.proc.poll() is not None:
                        crashed.append(f"worker {i} (pid {w.proc.pid}) exited with code "
                                       f"{w.proc.returncode}; log {w.log_path}:\n"
                                       f"{_tail(w.log_path)}")
                        stop.set()
                        return
                await asyncio.sleep(0.5)

        async def main(stop: asyncio.Event) -> dict[str, Any]:
            specs = default_specs(s.stations, s.seed)
            fleet = build_fleet(specs, None, world=fleet_world(specs, s.seed, (duration or 3600.0) + 60.0),
                                t0_s=time.time(), seed=s.seed)
            watcher = asyncio.ensure_future(watch(stop))
            try:
                result: dict[str, Any] = await run_stations(s, fleet, stop=stop, duration_s=duration)
                return result
            finally:
                watcher.cancel()

        out = run_until_stopped(main)
        if not crashed and drain > 0:
            if not json_out:
                console.print(f"stations stopped; letting the workers finish (up to {drain:g} s)")
            if wait_caught_up(s, drain):
                # The last ticks close once event time has passed them by the lateness.
                time.sleep(s.tick_s + s.allowed_lateness_s + 1.5)
    except (ClusterError, kafka_local.KafkaLocalError) as exc:
        crashed.append(str(exc))
    except (KafkaError, RuntimeError, OSError) as exc:
        crashed.append(f"{type(exc).__name__}: {exc} (Kafka at {s.kafka_bootstrap})")
    except KeyboardInterrupt:
        err_console.print("interrupted; stopping the workers", markup=False)
    except Exception as exc:  # a bug, but the workers and the broker must still be stopped
        crashed.append(f"unexpected {type(exc).__name__}: {exc}")
    finally:
        codes = _stop_workers(procs, timeout_s=60.0)
        time.sleep(0.5)  # let the tail print what the stopping workers flushed
        stop_tail.set()
        if broker is not None:
            broker.stop()
    summary = {"alerts": len(alerts), "alert_ids": [a.get("alert_id") for a in alerts],
               "worker_exit_codes": codes, "kafka": s.kafka_bootstrap, "db": s.db_url, **out}
    if crashed:
        fail("cluster stopped early: " + "\n".join(crashed))
    if json_out:
        print_json(summary)
        return
    console.print(
        f"[bold]done[/]: {plural(out.get('records_sent', 0), 'event')} in "
        f"{plural(out.get('sent', 0), 'message')} ({out.get('acked', 0)} acked, "
        f"{out.get('failed', 0)} failed), {plural(len(alerts), 'alert')}, "
        f"{plural(out.get('commands', 0), 'command')} / {plural(out.get('acks', 0), 'ack')}; "
        "workers exited "
        f"{codes}. Reports: `convergence reports list --db {s.db_url}`.")
    if tail_error:
        err_console.print(f"warning: the alerts tail failed: {tail_error[0]}", markup=False)
    if any(c not in (0, None) for c in codes):
        raise typer.Exit(1)


if __name__ == "__main__":  # `python -m convergence.cli.cluster` also works
    app()

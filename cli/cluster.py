"""``convergence cluster ...``: the pipeline as Faust workers on a Kafka broker.

``worker`` runs one worker in the foreground (what a service manager or a container
starts). ``up`` starts a supervised cluster on this host: an optional local broker, N
worker processes, the station fleet, alerts printed as they arrive; a worker that dies
is restarted (:mod:`convergence.streams.supervisor`). ``up --detach`` leaves it running
in the background; ``status`` shows it (also a cluster started otherwise, read from the
broker); ``down`` stops what ``up`` started.

Store ownership with several workers: an embedded ``surrealkv://`` file can be open
in one process only, so ``up`` gives the store to worker 0 and starts the others with
``--no-store``; worker 0's store sink writes what *every* worker publishes (it reads
the output topics). With a SurrealDB server URL (``ws://``...) every worker runs a sink.
On the way out the workers without a store stop first, so their last outputs are on
the topics before the store owners drain them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape

from convergence.cli.common import (
    KafkaOpt,
    clock_text,
    console,
    err_console,
    fail,
    kafka_errors,
    plural,
    print_json,
    quiet_kafka_logs,
    settings,
)
from convergence.records import Alert
from convergence.streams.supervisor import (
    Cluster,
    ClusterError,
    ClusterPlan,
    ProcessRef,
    cli_argv,
    cluster_dir,
    describe_exit,
    read_state,
    remove_worker_info,
    state_path,
    stop_recorded,
    worker_env,
    write_worker_info,
)

__all__ = ["app", "worker_command", "worker_env"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run the pipeline as Faust workers on a Kafka broker.",
    no_args_is_help=True)


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


DbOption = Annotated[str | None, typer.Option(
    help="SurrealDB URL: surrealkv://PATH (default: under the data dir), mem:// or "
         "ws://HOST:PORT.")]


def worker_command() -> list[str]:
    """argv that runs ``cluster worker`` in a fresh interpreter (flags appended by callers)."""
    return [*cli_argv(), "cluster", "worker"]


def _say(text: str) -> None:
    err_console.print(f"{clock_text(time.time())} {text}", markup=False)


@app.command()
def worker(
    kafka: KafkaOpt = None,
    db: DbOption = None,
    store: Annotated[bool, typer.Option(
        "--store/--no-store",
        help="Run the store sink (writes alerts, reports, responses and dead letters to "
             "SurrealDB). Only one process may own a surrealkv:// file.")] = True,
    partitions: Annotated[int | None, typer.Option(
        min=1, max=1024, help="Partitions of the events and node-evidence topics if this "
                              "worker creates them (default: the partitions setting): the "
                              "most workers that share each stage's work.")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="Worker log level.")] = LogLevel.warning,
) -> None:
    """Run one Faust worker in the foreground until SIGTERM or Ctrl-C.

    Its Prometheus metrics are served on the port of the metrics_port setting (0 picks a
    free one; `convergence cluster status` shows where)."""
    from convergence.store.surreal import StoreError
    from convergence.streams.faust_app import run_worker
    from convergence.streams.faust_config import worker_client_id
    from convergence.streams.metrics import MetricsError, WorkerMetrics
    from convergence.streams.topics import ClusterError as TopicsError

    s = settings(kafka_bootstrap=kafka, db=db)
    metrics = WorkerMetrics()
    port: int | None = None
    if s.metrics_port >= 0:
        try:
            port = metrics.serve(s.metrics_port, s.metrics_host)
        except MetricsError as exc:
            fail(exc)
    info = write_worker_info(s, metrics_port=port, client_id=worker_client_id(s.faust_app_id))
    where = f"metrics http://{s.metrics_host}:{port}/metrics" if port is not None else "no metrics endpoint"
    err_console.print(f"convergence worker {s.faust_app_id}: kafka {s.kafka_bootstrap}, "
                      f"topics {s.topic('*')}, store {s.db_url if store else 'none'}, {where}",
                      markup=False)
    try:
        run_worker(s, loglevel=log_level.value, store=store, partitions=partitions, metrics=metrics)
    except (TopicsError, StoreError) as exc:
        fail(exc)
    finally:
        remove_worker_info(info)
        metrics.close()


# -- up -----------------------------------------------------------------------------


def _validate_fleet(fleet: Path) -> Path:
    from convergence.ground_stations.fleet import FleetError, load_fleet

    try:
        load_fleet(fleet)
    except FleetError as exc:
        fail(exc, 2)
    return fleet.resolve()


def _detach(s: Any, plan: ClusterPlan, *, stations: int | None, json_out: bool,
            wait_s: float = 180.0) -> None:
    """Start ``up --supervise`` in the background and return once it runs."""
    path = state_path(s)
    old = read_state(path)
    if old is not None and ProcessRef.from_dict(old.get("supervisor") or {"pid": 0}).alive():
        fail(f"a cluster already runs from {cluster_dir(s)} (supervisor pid "
             f"{old['supervisor']['pid']}); see `convergence cluster status`, stop it with "
             "`convergence cluster down`")
    argv = [*cli_argv(), "cluster", "up", "--supervise", "--workers", str(plan.workers),
            "--drain", f"{plan.drain_s:g}", "--log-level", plan.log_level]
    argv += ["--local-kafka"] if plan.local_kafka else []
    argv += ["--fleet", str(plan.fleet)] if plan.fleet is not None else []
    argv += ["--duration", f"{plan.duration_s:g}"] if plan.duration_s is not None else []
    argv += ["--seed", str(plan.seed)] if plan.seed is not None else []
    argv += ["--stations", str(stations)] if stations is not None else []
    log_path = cluster_dir(s) / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(argv, env=worker_env(s), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + wait_s
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = read_state(path)
        if state is not None and state.get("supervisor", {}).get("pid") == proc.pid \
                and state.get("phase") == "running":
            break
        if proc.poll() is not None:
            last = _log_tail(log_path, 1)
            why = (last.removeprefix("error: ").removeprefix("cluster stopped early: ")
                   if last.startswith("error: ")
                   else f"its supervisor {describe_exit(proc.returncode)}")
            fail(f"the cluster did not start: {why} (log {log_path})")
        time.sleep(0.2)
    else:
        fail(f"the cluster did not report running within {wait_s:g} s (supervisor pid "
             f"{proc.pid}, still starting?); see {log_path}, `convergence cluster status`, "
             "`convergence cluster down`")
    assert state is not None
    if json_out:
        print_json(state)
        return
    workers = ", ".join(str(w.get("pid")) for w in state.get("workers", []))
    console.print(
        f"[bold]cluster running in the background[/]: kafka {state['settings']['kafka_bootstrap']}, "
        f"{len(state.get('workers', []))} worker(s) (pids {workers}), stations pid "
        f"{(state.get('stations') or {}).get('pid')}, supervisor pid {proc.pid}; logs in "
        f"{escape(str(cluster_dir(s)))}.\nWatch it with `convergence cluster status`, follow "
        "alerts with `convergence alerts subscribe`, stop it with `convergence cluster down`.")


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@app.command()
def up(
    local_kafka: Annotated[bool, typer.Option(
        "--local-kafka", help="Start a throwaway local broker (Java + Maven needed) for this "
                              "run instead of using --kafka.")] = False,
    kafka: KafkaOpt = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Faust worker processes.")] = 1,
    fleet: Annotated[Path | None, typer.Option(
        "--fleet", help="Fleet file for the stations (TOML; `convergence stations init` writes "
                        "one). Default: the synthetic fleet of --stations stations.")] = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Synthetic ground stations (default 247).")] = None,
    duration: Annotated[float | None, typer.Option(
        min=1.0, help="Stop after this many seconds (default: until Ctrl-C or `cluster down`).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the fleet and scenario.")] = None,
    db: DbOption = None,
    drain: Annotated[float, typer.Option(
        min=0.0, help="After the stations stop, wait up to this long for the workers to "
                      "process everything.")] = 30.0,
    log_level: Annotated[LogLevel, typer.Option(help="Workers' log level.")] = LogLevel.warning,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Leave the cluster running in the background and return; "
                         "`convergence cluster down` stops it.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
    supervise: Annotated[bool, typer.Option("--supervise", hidden=True)] = False,
) -> None:
    """Start a cluster: \\[local Kafka,] N workers and the station fleet, supervised.

    Alerts print as they arrive; a worker that dies is restarted; everything stops
    cleanly after --duration, Ctrl-C or `convergence cluster down`."""
    from kafka.errors import KafkaError

    from convergence.cli.alerts import iter_alerts, show_alert
    from convergence.streams import kafka_local
    from convergence.streams.topics import ClusterError as TopicsError

    if fleet is not None and stations is not None:
        fail("--stations sizes the default fleet; with --fleet the file decides", 2)
    s = settings(kafka_bootstrap=kafka, stations=stations, seed=seed, db=db)
    plan = ClusterPlan(workers=workers, fleet=_validate_fleet(fleet) if fleet else None,
                       local_kafka=local_kafka, duration_s=duration, drain_s=drain,
                       log_level=log_level.value, seed=seed, detached=detach or supervise)
    if detach and not supervise:
        _detach(s, plan, stations=stations, json_out=json_out)
        return
    talk = not json_out and not supervise
    cluster = Cluster(s, plan, say=_say)
    alerts: list[Alert] = []
    stop = threading.Event()
    stop_tail = threading.Event()
    tail_ready = threading.Event()
    tail_error: list[BaseException] = []
    crashed: list[str] = []
    refused: list[str] = []
    why = {"signal": ""}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        why["signal"] = signal.Signals(signum).name
        stop.set()

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def tail() -> None:
        try:
            for alert in iter_alerts(cluster.settings.kafka_bootstrap, cluster.settings.topic("alerts"),
                                     stop=stop_tail, ready=tail_ready):
                alerts.append(alert)
                show_alert(alert, as_json=json_out)
        except Exception as exc:  # reported after the run; never kills the cluster
            tail_error.append(exc)
            tail_ready.set()

    result = None
    quiet = contextlib.ExitStack()
    quiet.enter_context(quiet_kafka_logs())
    try:
        cluster.prepare()
        if not supervise:
            threading.Thread(target=tail, daemon=True, name="alerts-tail").start()
            tail_ready.wait(30.0)
        cluster.launch()
        s = cluster.settings
        if talk:
            console.print(
                f"[bold]cluster[/] kafka {s.kafka_bootstrap}, {plural(workers, 'worker')} (logs in "
                f"{escape(str(cluster.dir))}), store {s.db_url} on "
                f"{'every worker' if cluster.store_everywhere else 'worker 0'}, "
                f"{escape(str(fleet)) if fleet else f'{s.stations} stations'}, seed {s.seed}, "
                f"running {f'for {duration:g} s' if duration else 'until Ctrl-C or `cluster down`'}")
        else:
            _say(f"cluster running: kafka {s.kafka_bootstrap}, {plural(workers, 'worker')}, logs in "
                 f"{cluster.dir}")
        while not stop.is_set() and not cluster.finished and cluster.failure is None:
            cluster.step()
            stop.wait(0.5)
        if cluster.failure is not None:
            crashed.append(cluster.failure)
    except ClusterError as exc:  # another cluster runs from this data dir
        refused.append(str(exc))
    except (TopicsError, kafka_local.KafkaLocalError) as exc:
        crashed.append(str(exc))
    except (KafkaError, RuntimeError, OSError) as exc:
        crashed.append(f"{type(exc).__name__}: {exc} (Kafka at {cluster.settings.kafka_bootstrap})")
    except Exception as exc:  # a bug, but the workers and the broker must still be stopped
        crashed.append(f"unexpected {type(exc).__name__}: {exc}")
    finally:
        if why["signal"]:
            _say(f"{why['signal']} received; stopping the cluster")
        # Ctrl-C means now; SIGTERM (`cluster down`) and the end of --duration drain first.
        result = cluster.shutdown(drain=not (crashed or refused) and why["signal"] != "SIGINT")
        time.sleep(0.5)  # let the tail print what the stopping workers flushed
        stop_tail.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        quiet.close()
    out = result.stations
    codes = result.worker_exit_codes
    restarts = {k: v for k, v in result.restarts.items() if v}
    summary = {"alerts": len(alerts), "alert_ids": [a.alert_id for a in alerts],
               "worker_exit_codes": codes, "restarts": restarts,
               "kafka": cluster.settings.kafka_bootstrap, "db": cluster.settings.db_url, **out}
    if refused:
        fail(refused[0])
    if crashed:
        fail("cluster stopped early: " + "\n".join(crashed))
    if json_out:
        print_json(summary)
        return
    if supervise:
        _say(f"cluster stopped: workers exited {codes}; restarts {restarts or 'none'}")
        return
    console.print(
        f"[bold]done[/]: {out.get('records_sent', 0)} events in {out.get('sent', 0)} messages "
        f"({out.get('acked', 0)} acked, {out.get('failed', 0)} failed), {len(alerts)} alert(s), "
        f"{out.get('commands', 0)} commands / {out.get('acks', 0)} acks; workers exited "
        f"{codes}{f', restarts {restarts}' if restarts else ''}. Reports: "
        f"`convergence reports list --db {s.db_url}`.")
    if tail_error:
        err_console.print(f"warning: the alerts tail failed: {tail_error[0]}", markup=False)
    if any(c not in (0, None) for c in codes):
        raise typer.Exit(1)


# -- down ---------------------------------------------------------------------------


@app.command()
def down(
    timeout: Annotated[float, typer.Option(
        min=1.0, help="How long the supervisor may take to stop everything before what it "
                      "started is stopped directly.")] = 120.0,
) -> None:
    """Stop everything `cluster up` started (also after --detach); safe to repeat."""
    s = settings()
    path = state_path(s)
    state = stop_recorded(path, timeout_s=timeout, say=_say)
    if state is None:
        console.print(f"no cluster is running from {escape(str(cluster_dir(s)))}; nothing to stop")
        return
    n = len(state.get("workers", []))
    console.print(f"[bold]cluster stopped[/]: {n} worker(s), the station fleet"
                  f"{' and the local broker' if (state.get('broker') or {}).get('local') else ''}")


# -- status -------------------------------------------------------------------------


def _owns(owns: dict[str, list[int]]) -> str:
    # table changelogs (active or standby) are in --json; the inputs are what a person wants
    return ", ".join(f"{t}[{','.join(map(str, p))}]" for t, p in owns.items()
                     if not t.endswith("-changelog")) or "no input partition (a hot standby)"


def _metrics_line(m: dict[str, Any] | None, err: str | None) -> str:
    if err:
        return f"metrics unreadable ({err})"
    if m is None:
        return "no metrics endpoint"
    dls = ", ".join(f"{k} {v}" for k, v in sorted(m["dead_letters"].items())) or "none"
    p50 = m["alert_latency_p50_s"]
    lat = f", alert latency p50 {p50:.1f} s p99 {m['alert_latency_p99_s']:.1f} s" if p50 is not None else ""
    ticks = sum(m["ticks_closed"].values())
    return (f"{m['events_in']:,} events in, {ticks:,} ticks closed, dead letters {dls}, "
            f"{m['alerts']} alert(s){lat}, behind the end {m['lag_total']:,}")


def _print_status(st: dict[str, Any], stations: dict[str, Any] | None) -> None:
    c = st["cluster"]
    if c is None:
        console.print("cluster   not started by `cluster up` here (no state file); showing what the "
                      "broker knows")
    else:
        since = clock_text(c["started_at_s"]) if c.get("started_at_s") else "?"
        sup = (f"supervisor pid {c['supervisor_pid']} "
               f"{'alive' if c['supervisor_alive'] else 'GONE - run `convergence cluster down`'}")
        console.print(f"cluster   {c['phase']} since {since}, {sup}"
                      f"{', detached' if c['detached'] else ''}")
    b = st["broker"]
    state = "reachable" if b["reachable"] else f"UNREACHABLE: {b['error']}"
    console.print(f"broker    {b['bootstrap']} {state}", markup=False)
    if st["topics"]:
        console.print("topics    " + ", ".join(f"{n} ({t['partitions']}p, {t['messages_end']:,} msgs)"
                                               for n, t in st["topics"].items()))
    for g, info in st["groups"].items():
        lag = ", ".join(f"{r['topic']}[{r['partition']}] {r['lag']:,}" for r in info["lag"]) or "-"
        console.print(f"group     {g}: {info['state']}, {len(info['members'])} member(s); not yet "
                      f"committed {lag}", markup=False)
    for w in st["workers"]:
        alive = {True: "alive", None: "on another host",
                 False: "DEAD" + (" (the group keeps it until its session times out)"
                                  if w["in_group"] else "")}[w["alive"]]
        extra = f", restarts {w['restarts']}" if w.get("restarts") else ""
        extra += ", given up (see its log)" if w.get("given_up") else ""
        owns = f"owns {_owns(w['owns'])}" if w["in_group"] else "not in the consumer group (yet)"
        console.print(f"worker    {w['name']} pid {w['pid']} {alive}{extra}; {owns}; "
                      f"{_metrics_line(w['metrics'], w['metrics_error'])}", markup=False)
    if stations is not None:
        by = ", ".join(f"{k} {v}" for k, v in sorted(stations["by_state"].items())) or "none reporting"
        console.print(f"stations  {stations['reporting']} reporting: {by}", markup=False)
    for a in st["alerts"]:
        console.print(f"alert     {clock_text(a['time_s'])} {a['level'].upper()} score {a['score']:.1f} "
                      f"{a['region']} report {a['report_id']}", markup=False)
    if c is not None:
        for e in c["events"][-5:]:
            console.print(f"event     {e}", markup=False)
    for problem in st.get("problems", []):
        console.print(f"problem   {problem} (a broker or group still starting? try again)",
                      markup=False)


@app.command()
def status(
    kafka: KafkaOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    alerts: Annotated[int, typer.Option(min=0, max=100, help="Recent alerts to show.")] = 5,
    timeout: Annotated[float, typer.Option(min=0.5, help="Seconds the broker may take to answer.")] = 10.0,
) -> None:
    """Broker, topics, consumer lag per partition, workers (alive, partitions, metrics),
    stations by state and recent alerts. Exits 1 when the broker cannot be reached."""
    from convergence.ground_stations.kafka_fleet import STATUS_TOPIC, read_status
    from convergence.streams.cluster_status import gather
    from convergence.streams.topics import STATUS_MAX_AGE_S

    s = settings(kafka_bootstrap=kafka)
    state = read_state(state_path(s))
    if state is not None:  # the recorded cluster's broker, topics and group, unless set
        recorded = state.get("settings") or {}
        s = s.replace(**{k: recorded.get(k) for k in ("kafka_bootstrap", "topic_prefix", "faust_app_id")
                         if s.source_of(k) == "default" and isinstance(recorded.get(k), str)})
    with kafka_errors(s.kafka_bootstrap):  # quiet kafka-python's retry log lines
        st = gather(s, state, timeout_s=timeout, recent_alerts=alerts)
        stations = None
        if st["broker"]["reachable"] and STATUS_TOPIC in st["topics"]:
            latest = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=STATUS_MAX_AGE_S,
                                 timeout_s=timeout)
            by_state: dict[str, int] = {}
            for doc in latest.values():
                key = str(doc.get("state", "unknown"))[:32]
                by_state[key] = by_state.get(key, 0) + 1
            stations = {"reporting": len(latest), "by_state": by_state}
    st["stations"] = stations
    if json_out:
        print_json(st)
    else:
        _print_status(st, stations)
    if not st["broker"]["reachable"]:
        fail(st["broker"]["error"] or f"cannot reach Kafka at {s.kafka_bootstrap}")


if __name__ == "__main__":  # `python -m convergence.cli.cluster` also works
    sys.exit(app())

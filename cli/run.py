"""``convergence run``: the main job on the embedded default."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from convergence.cli.common import ALERT_STYLE as _STYLE
from convergence.cli.common import clock_text as _clock
from convergence.cli.common import (
    console,
    err_console,
    fail,
    print_alert,
    print_json,
    run_until_stopped,
    settings,
)
from convergence.schema import SOURCE_KINDS

if TYPE_CHECKING:  # the store (and its engine) load only when a command needs them
    from convergence.dashboard.server import DashboardServer
    from convergence.streams.embedded import RunSummary
    from convergence.streams.pipeline import TickOutcome

#: the dashboard's port when ``--dashboard`` is given without one
DASHBOARD_PORT = 8765


def optional_port(argv: Sequence[str]) -> list[str]:
    """``run ... --dashboard`` with no port means the default port: the command line
    parser wants a value, so it is filled in here (called by the entry point).

    >>> optional_port(["run", "--dashboard", "--duration", "5"])
    ['run', '--dashboard', '8765', '--duration', '5']
    >>> optional_port(["run", "--dashboard", "9000"]), optional_port(["alerts", "--dashboard"])
    (['run', '--dashboard', '9000'], ['alerts', '--dashboard'])
    """
    args = list(argv)
    if "run" not in args:
        return args
    for i in range(args.index("run") + 1, len(args)):
        if args[i] == "--dashboard" and (i + 1 == len(args) or not args[i + 1].isdigit()):
            args.insert(i + 1, str(DASHBOARD_PORT))
            break
    return args


def _print_dashboard(server: DashboardServer, json_out: bool) -> None:
    out = err_console if json_out else console
    out.print(f"[bold]dashboard[/] {server.url}  control token {server.token}\n"
              f"  (open {server.url}#token={server.token} to use the quarantine/resume buttons)",
              markup=True)
    out.file.flush()  # whoever waits for the address (a script, a test) sees it now


def _print_level(oc: TickOutcome) -> None:
    if oc.uncorroborated:
        where = ", ".join(f"{n['region']} {n['score']:.0f}" for n in oc.uncorroborated)
        console.print(f"[dim]{_clock(oc.time_s)}  watching {where}: no two independent OSINT "
                      "sources corroborate it, not alerting[/]")
    if oc.level == oc.prev_level:
        return
    if oc.level in ("warning", "converged") and oc.level != oc.prev_level and \
            oc.prev_level not in ("warning", "converged"):
        return  # the alert line says it
    note = ""
    if oc.level == "watch" and not oc.osint:
        note = " - no independent OSINT corroboration, not alerting"
    console.print(
        f"[dim]{_clock(oc.time_s)}  meter {oc.prev_level} -> [/][{_STYLE.get(oc.level, 'dim')}]"
        f"{oc.level}[/][dim] score {oc.score:5.1f} in {oc.region}, "
        f"{oc.anomalous_stations} anomalous stations{note}[/]"
    )


def run(
    stations: Annotated[int | None, typer.Option(help="Synthetic ground stations (default 247).",
                                                 min=5, max=100_000)] = None,
    duration: Annotated[float | None, typer.Option(
        help="Stop after this many seconds (default: run until Ctrl-C).", min=1.0)] = None,
    seed: Annotated[int | None,
                    typer.Option(help="Seed for the scenario and every random choice.")] = None,
    db: Annotated[str | None, typer.Option(
        help="SurrealDB URL: surrealkv://PATH (default: under the data dir), mem:// (throwaway) "
             "or ws://HOST:PORT.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="End with one JSON summary line on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only alerts and the summary.")] = False,
    dashboard: Annotated[int | None, typer.Option(
        "--dashboard", metavar="[PORT]", min=0, max=65535,
        help=f"Serve the live dashboard on 127.0.0.1:PORT while running (PORT defaults to "
             f"{DASHBOARD_PORT}; 0 picks a free one).")] = None,
) -> None:
    """Run the whole pipeline in one process; alerts print live as the meter fires.

    Synthetic ground stations, detectors, the convergence meter, adaptive responses and
    reports stored in SurrealDB (embedded by default: nothing else to install).
    """
    from convergence.store.surreal import StoreError
    from convergence.streams.embedded import EmbeddedRuntime

    s = settings(stations=stations, seed=seed, db=db)
    if s.stations < len(SOURCE_KINDS):  # e.g. CONVERGENCE_STATIONS=3: the flag says min=5 itself
        fail(f"stations = {s.stations} ({s.source_of('stations')}): the default fleet needs one "
             f"station of each of the {len(SOURCE_KINDS)} source kinds; use "
             f"{len(SOURCE_KINDS)} or more", 2)
    rt = EmbeddedRuntime(s, duration_s=duration, on_alert=print_alert,
                         on_level=None if quiet else _print_level)
    if not json_out:
        until = f"for {duration:g} s" if duration else "until Ctrl-C"
        console.print(f"[bold]convergence[/] {s.stations} stations, seed {s.seed}, "
                      f"db {s.db_url}, running {until}")

    errors: tuple[type[Exception], ...] = (StoreError,)
    main: Callable[[asyncio.Event], Awaitable[RunSummary]] = rt.run
    if dashboard is not None:  # the web server loads only when asked for
        from convergence.dashboard.embedded import run_with_dashboard
        from convergence.dashboard.server import DashboardError

        port = dashboard
        errors = (StoreError, DashboardError)

        def main(stop: asyncio.Event) -> Awaitable[RunSummary]:
            return run_with_dashboard(rt, stop, port=port,
                                      on_ready=lambda srv: _print_dashboard(srv, json_out))
    try:
        summary = run_until_stopped(main)
    except errors as exc:
        fail(exc)
    d = summary.as_dict()
    if json_out:
        print_json(d)
        return
    sc = d["scenario"]
    console.print(
        f"[bold]done[/] in {d['duration_s']:.1f} s: {d['events']} events "
        f"({d['events_per_s']:.0f}/s), {d['alerts']} alerts, {d['reports']} reports, "
        f"{d['dead_letters']} dead letters, {d['duplicates']} duplicates.\n"
        f"scenario check: {sc['detected']}/{sc['genuine']} genuine convergences detected, "
        f"{sc['decoy_alerts']} alerts on {sc['decoys']} decoys, {sc['false_alarms']} false alarms."
    )

"""``convergence run``: the main job on the embedded default."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convergence.cli.common import ALERT_STYLE as _STYLE
from convergence.cli.common import (
    alert_text,
    check_models,
    console,
    err_console,
    fail,
    plural,
    print_alert,
    print_json,
    run_until_stopped,
    settings,
)
from convergence.cli.common import clock_text as _clock
from convergence.schema import SOURCE_KINDS
from convergence.settings import redact_url

if TYPE_CHECKING:  # the store (and its engine) load only when a command needs them
    from convergence.dashboard.server import DashboardServer
    from convergence.ground_stations.scenario import Scenario
    from convergence.settings import Settings
    from convergence.streams.embedded import RunSummary
    from convergence.streams.pipeline import TickOutcome

#: where a simulated clock starts when the story does not say (a fixed instant, so the
#: same seed gives the same ticks, alert and report ids)
SIMULATED_START_S = 1_767_600_000.0
NETWORK_SOURCES = ("rss", "json")
#: a backtest of recordings hands over this many seconds of recorded time at once
BACKTEST_STEP_S = 60.0
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


def _what_runs(s: Settings, scenario: str | None, fleet: Path | None, speed: float | None,
               fast: bool) -> tuple[Scenario | None, list[Any] | None, float | None]:
    """The story (a library scenario, or the demo) or the fleet file's stations, and where a
    simulated clock starts; one clear error for anything that cannot run."""
    if scenario is not None and fleet is not None:
        fail("give --scenario or --fleet, not both", 2)
    if scenario is not None:
        from convergence.ground_stations.scenario_library import SCENARIOS, build

        if scenario not in SCENARIOS:
            fail(f"no scenario named {scenario!r}; `convergence scenarios list` shows the "
                 f"{len(SCENARIOS)} there are", 2)
        story = build(scenario, seed=s.seed)
        return story, None, story.epoch_s if fast else None
    if fleet is None:
        if speed is not None:
            fail("--speed sets the speed of replay stations; the demo has none (use --fleet)", 2)
        return None, None, SIMULATED_START_S if fast else None
    from convergence.ground_stations.fleet import FleetError, load_fleet

    try:
        specs = load_fleet(fleet).stations
    except FleetError as exc:
        fail(exc, 2)
    except OSError as exc:
        fail(f"cannot read fleet file {fleet}: {exc.strerror or exc}", 2)
    if fast:
        network = [sp.station_id for sp in specs if sp.source.type in NETWORK_SOURCES]
        if network:
            fail(f"--as-fast-as-possible runs on a simulated clock, but {len(network)} station(s) "
                 f"read the network ({', '.join(network[:3])}{', ...' if len(network) > 3 else ''}), "
                 "which cannot be sped up; run without it, or leave those stations out", 2)
    if speed is not None:
        specs = [_with_options(sp, speed=speed) if sp.source.type == "replay" else sp
                 for sp in specs]
    if fast:
        specs, t0 = _backtest_start(specs, s.seed)
        return None, specs, t0
    return None, specs, None


def _with_options(spec: Any, **options: Any) -> Any:
    import dataclasses

    return dataclasses.replace(spec, source=dataclasses.replace(
        spec.source, options={**spec.source.options, **options}))


def _backtest_start(specs: list[Any], seed: int) -> tuple[list[Any], float]:
    """Where a simulated clock starts for a fleet: at its recordings' first row, each
    replay station aligned on it, so a backtest runs in recorded time (alerts and reports
    carry the times of the recording) and the recordings keep their offsets to one
    another. A fleet without recordings starts at :data:`SIMULATED_START_S`."""
    from convergence.ground_stations.base import SourceError
    from convergence.ground_stations.fleet import build_source
    from convergence.ground_stations.replay import FileReplaySource

    firsts: dict[str, tuple[float, float | None]] = {}  # station: first row, speed
    for sp in specs:
        if sp.source.type != "replay" or "start_s" in sp.source.options:
            continue
        try:
            src = build_source(sp, None, SIMULATED_START_S, seed)
            t = src.first_time() if isinstance(src, FileReplaySource) else None
        except (ValueError, SourceError) as exc:
            fail(exc, 2)
        if t is not None:
            firsts[sp.station_id] = (t, src.speed if isinstance(src, FileReplaySource) else None)
    if not firsts:
        return specs, SIMULATED_START_S
    t0 = float(math.floor(min(t for t, _ in firsts.values())))
    out = []
    for sp in specs:
        if sp.station_id in firsts:
            t, speed = firsts[sp.station_id]
            sp = _with_options(sp, start_s=t0 + (t - t0) / (speed or 1.0))
        out.append(sp)
    return out, t0


def _print_level(oc: TickOutcome) -> None:
    """A line per region whose level changed (alerts print their own line) and per region
    that reached watch without OSINT corroboration."""
    if oc.uncorroborated:
        where = ", ".join(f"{r.region} {r.score:.0f}" for r in oc.uncorroborated)
        console.print(f"[dim]{_clock(oc.time_s)}  watching {where}: no two independent OSINT "
                      "sources corroborate it, not alerting[/]")
    noted = {r.region for r in oc.uncorroborated}
    for r in oc.changed:
        if r.level in ("warning", "converged") and r.level > r.prev_level:
            continue  # the alert line says it
        if r.region in noted and r.level == "watch":
            continue  # the "watching" line said it
        note = ""
        if r.level == "watch" and not r.osint_corroborated:
            note = " - no independent OSINT corroboration, not alerting"
        n = r.n_stations
        console.print(
            f"[dim]{_clock(oc.time_s)}  {r.region} meter {r.prev_level} -> [/]"
            f"[{_STYLE.get(r.level, 'dim')}]{r.level}[/][dim] score {r.score:5.1f}, "
            f"{plural(n, 'station')} counting{note}[/]"
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
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Only alerts and the summary (no banner, no meter changes).")] = False,
    scenario: Annotated[str | None, typer.Option(
        help="Play a library scenario (`convergence scenarios list`) instead of the demo.")] = None,
    fleet: Annotated[Path | None, typer.Option(
        help="Run the stations of a fleet file (synthetic, replay, RSS/Atom, HTTP JSON; see "
             "`convergence stations init`).")] = None,
    fast: Annotated[bool, typer.Option(
        "--as-fast-as-possible",
        help="Run on a simulated clock, as fast as the machine goes: the same seed gives the "
             "same events, alerts and report ids every time (synthetic and replay stations).")] = False,
    speed: Annotated[float | None, typer.Option(
        help="Replay stations' speed-up, data seconds per second (default: each station's "
             "own, as its fleet file says).", min=0.001, max=1e9)] = None,
    dashboard: Annotated[int | None, typer.Option(
        "--dashboard", metavar="[PORT]", min=0, max=65535,
        help=f"Serve the live dashboard on 127.0.0.1:PORT while running (PORT defaults to "
             f"{DASHBOARD_PORT}; 0 picks a free one).")] = None,
) -> None:
    """Run the whole pipeline in one process; alerts print live as the meter fires.

    Ground stations (the synthetic demo, a library scenario, or a fleet file's stations),
    detectors, the convergence meter, adaptive responses and reports stored in SurrealDB
    (embedded by default: nothing else to install).
    """
    from convergence.models.registry import RegistryError
    from convergence.store.surreal import StoreError
    from convergence.streams.embedded import EmbeddedRuntime, steps_possible
    from convergence.streams.virtual_clock import SimulatedClock

    s = settings(stations=stations, seed=seed, db=db)
    if s.stations < len(SOURCE_KINDS):  # e.g. CONVERGENCE_STATIONS=3: the flag says min=5 itself
        fail(f"stations = {s.stations} ({s.source_of('stations')}): the default fleet needs one "
             f"station of each of the {len(SOURCE_KINDS)} source kinds; use "
             f"{len(SOURCE_KINDS)} or more", 2)
    check_models(s)
    story, specs, t0 = _what_runs(s, scenario, fleet, speed, fast)
    if fast and duration is None:
        duration = story.duration_s if story is not None and scenario else 60.0
    stored_late: set[str] = set()

    def on_alert(alert: dict[str, Any]) -> None:
        # The runtime calls this once the store has the alert (stored=True) or has refused
        # it (stored=False); a refused one that gets stored later is said once more.
        if json_out:
            word, rest = alert_text(alert)
            print_json({"type": "alert", "line": f"{word} {rest}", **alert})
        elif alert.get("stored") is False:
            stored_late.add(alert["alert_id"])
            print_alert(alert)
        elif alert["alert_id"] in stored_late:
            console.print(f"{_clock(time.time())}  alert {alert['alert_id']} "
                          f"(report {alert['report_id']}) is now stored")
        else:
            print_alert(alert)

    # a backtest of recordings only: rows handed over in steps (the same alerts, far
    # fewer wake-ups); a station polled on its interval would run the watermark ahead
    step = BACKTEST_STEP_S if fast and specs and steps_possible(specs) else None
    try:
        rt = EmbeddedRuntime(s, duration_s=duration, on_alert=on_alert, step_s=step,
                             on_level=None if quiet or json_out else _print_level,
                             scenario=story, fleet=specs,
                             clock=SimulatedClock(t0) if fast and t0 is not None else time.time,
                             t0_s=t0)
    except RegistryError as exc:  # a pinned model that is there but cannot be read
        fail(f"cannot load a trained model: {exc}", 2)
    if not (json_out or quiet):
        until = (f"for {duration:g} s{' of simulated time' if fast else ''}" if duration
                 else "until Ctrl-C")
        what = (f"scenario {scenario}" if scenario else f"fleet {fleet}" if fleet
                else "the demo scenario")
        console.print(f"[bold]convergence[/] {plural(len(rt.registry), 'station')} ({what}), "
                      f"seed {s.seed}, db {redact_url(s.db_url)}, meter: {rt.pipeline.fusion}, "
                      f"running {until}")

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
        summary = run_until_stopped(main, virtual_start_s=t0 if fast else None)
    except errors as exc:
        fail(exc)
    d = {**summary.as_dict(), "meter": rt.pipeline.fusion, "clock": "simulated" if fast else "wall"}
    if json_out:
        print_json(d)
    else:
        sc = d["scenario"]
        console.print(
            f"[bold]done[/] in {d['duration_s']:.1f} s{' of simulated time' if fast else ''}: "
            f"{plural(d['events'], 'event')} "
            f"({d['events_per_s']:.0f}/s), {plural(d['alerts'], 'alert')}, "
            f"{plural(d['reports'], 'report revision')}, {plural(d['dead_letters'], 'dead letter')}, "
            f"{plural(d['duplicates'], 'duplicate')}.")
        causes = d.get("dead_letter_causes") or []
        if causes:
            console.print("dead letters by cause (every one is in the database's dead_letter table):")
            for c in causes[:5]:
                what = f"{c['stage']} {c['field']}".strip()
                console.print(f"  {c['count']:>9,}  {what}, e.g. {c['example']}", markup=False,
                              highlight=False)
        if sc:
            console.print(
                f"scenario check: {sc['detected']}/{sc['genuine']} genuine convergences detected, "
                f"{plural(sc['decoy_alerts'], 'alert')} on {plural(sc['decoys'], 'decoy')}, "
                f"{plural(sc['false_alarms'], 'false alarm')}.")
    unwritten = int(d["store"].get("unwritten") or 0)
    if unwritten:
        tables = ", ".join(f"{plural(n, t.replace('_', ' '))}"
                           for t, n in sorted(d["store"].get("unwritten_by_table", {}).items()))
        last = d["store"].get("last_error") or d["store"].get("close_error") or "unknown"
        fail(f"NOT written to {redact_url(s.db_url)}: {plural(unwritten, 'record')} ({tables}), "
             f"lost with this run; the store's last error: {str(last)[:300]}. Free disk space or repair "
             "the database, then run again")

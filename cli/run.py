"""``convergence run``: the main job on the embedded default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from convergence.cli.common import ALERT_STYLE as _STYLE
from convergence.cli.common import clock_text as _clock
from convergence.cli.common import (
    console,
    fail,
    print_alert,
    print_json,
    run_until_stopped,
    settings,
)
from convergence.schema import SOURCE_KINDS

if TYPE_CHECKING:  # the store (and its engine) load only when a command needs them
    from convergence.streams.pipeline import TickOutcome


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
            f"{n} station{'' if n == 1 else 's'} counting{note}[/]"
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

    try:
        summary = run_until_stopped(rt.run)
    except StoreError as exc:
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

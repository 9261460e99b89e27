"""``convergence run``: the main job on the embedded default."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convergence.cli.common import ALERT_STYLE as _STYLE
from convergence.cli.common import (
    alert_text,
    check_models,
    console,
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
    from convergence.streams.pipeline import TickOutcome


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
        f"{plural(oc.anomalous_stations, 'anomalous station')}{note}[/]"
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
) -> None:
    """Run the whole pipeline in one process; alerts print live as the meter fires.

    Synthetic ground stations, detectors, the convergence meter, adaptive responses and
    reports stored in SurrealDB (embedded by default: nothing else to install).
    """
    from convergence.models.registry import RegistryError
    from convergence.store.surreal import StoreError
    from convergence.streams.embedded import EmbeddedRuntime

    s = settings(stations=stations, seed=seed, db=db)
    if s.stations < len(SOURCE_KINDS):  # e.g. CONVERGENCE_STATIONS=3: the flag says min=5 itself
        fail(f"stations = {s.stations} ({s.source_of('stations')}): the default fleet needs one "
             f"station of each of the {len(SOURCE_KINDS)} source kinds; use "
             f"{len(SOURCE_KINDS)} or more", 2)
    check_models(s)
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

    try:
        rt = EmbeddedRuntime(s, duration_s=duration, on_alert=on_alert,
                             on_level=None if quiet or json_out else _print_level)
    except RegistryError as exc:  # a pinned model that is there but cannot be read
        fail(f"cannot load a trained model: {exc}", 2)
    if not (json_out or quiet):
        until = f"for {duration:g} s" if duration else "until Ctrl-C"
        console.print(f"[bold]convergence[/] {plural(s.stations, 'station')}, seed {s.seed}, "
                      f"db {redact_url(s.db_url)}, meter: {rt.pipeline.fusion}, running {until}")

    try:
        summary = run_until_stopped(rt.run)
    except StoreError as exc:
        fail(exc)
    d = {**summary.as_dict(), "meter": rt.pipeline.fusion}
    if json_out:
        print_json(d)
    else:
        sc = d["scenario"]
        console.print(
            f"[bold]done[/] in {d['duration_s']:.1f} s: {plural(d['events'], 'event')} "
            f"({d['events_per_s']:.0f}/s), {plural(d['alerts'], 'alert')}, "
            f"{plural(d['reports'], 'report')}, {plural(d['dead_letters'], 'dead letter')}, "
            f"{plural(d['duplicates'], 'duplicate')}.\n"
            f"scenario check: {sc['detected']}/{sc['genuine']} genuine convergences detected, "
            f"{plural(sc['decoy_alerts'], 'alert')} on {plural(sc['decoys'], 'decoy')}, "
            f"{plural(sc['false_alarms'], 'false alarm')}."
        )
    unwritten = int(d["store"].get("unwritten") or 0)
    if unwritten:
        tables = ", ".join(f"{plural(n, t.replace('_', ' '))}"
                           for t, n in sorted(d["store"].get("unwritten_by_table", {}).items()))
        last = d["store"].get("last_error") or d["store"].get("close_error") or "unknown"
        fail(f"NOT written to {redact_url(s.db_url)}: {plural(unwritten, 'record')} ({tables}), "
             f"lost with this run; the store's last error: {str(last)[:300]}. Free disk space or repair "
             "the database, then run again")

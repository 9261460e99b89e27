"""``convergence stations ...``: run, list, steer and declare ground stations over Kafka.

* ``run`` runs a fleet (the default synthetic one, or ``--fleet FILE``; a share of it with
  ``--only``/``--part``) against a broker: events out, control commands in, acks out,
  and each station's status on the ``station-status`` topic.
* ``list`` shows a fleet and, with ``--kafka``, each station's latest status.
* ``command`` sends one control command by hand and (``--wait-ack``) prints the acks.
* ``init`` writes the default fleet as a TOML file to edit.

The Kafka side of a running fleet (running it, reading its status, sending a command)
lives in :mod:`convergence.ground_stations.kafka_fleet`, which also documents the
``station-status`` messages; ``list`` reads the recent part of that topic.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from convergence.cli.common import (
    KafkaOpt,
    console,
    err_console,
    fail,
    kafka_errors,
    plural,
    print_json,
    run_until_stopped,
    settings,
)
from convergence.control import Action, ControlCommand, Target, validate_params
from convergence.ground_stations.agent import Fleet
from convergence.ground_stations.fleet import (
    DEFAULT_INTERVAL_S,
    FleetError,
    StationSpec,
    build_fleet,
    choose,
    default_fleet_toml,
    default_specs,
    fleet_world,
    load_fleet,
    loads_fleet,
    parse_part,
)
from convergence.ground_stations.kafka_fleet import (
    STATUS_TOPIC,
    CommandError,
    issue_command,
    read_status,
    run_stations,
)
from convergence.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["app", "issue_command", "parse_params", "read_status", "run_stations"]


app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run, list and steer ground stations that publish to a Kafka broker.",
    no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run, list and steer ground stations that publish to a Kafka broker."""
    # A callback keeps this a command group however many commands it has, so the
    # command line reads the same however it is mounted.


# -- parsing the command line ----------------------------------------------------------


def parse_params(action: Action, items: Sequence[str]) -> dict[str, float]:
    """``["interval_s=0.1"]`` -> ``{"interval_s": 0.1}``, checked against what ``action`` takes
    (:func:`convergence.control.validate_params`).

    >>> parse_params(Action.SET_INTERVAL, ["interval_s=0.1"])
    {'interval_s': 0.1}
    >>> parse_params(Action.SET_INTERVAL, ["interval_s=fast"])
    Traceback (most recent call last):
    ...
    ValueError: interval_s must be a number of seconds > 0, got 'fast'
    """
    raw: dict[str, float | str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r}: expected NAME=NUMBER, e.g. interval_s=0.25")
        try:
            raw[key] = float(text)
        except ValueError:
            raw[key] = text.strip()  # validate_params names it as not a number
    return validate_params(action, raw)


# -- commands --------------------------------------------------------------------------


FleetOpt = Annotated[Path | None, typer.Option(
    "--fleet", help="Fleet file (TOML; `convergence stations init --out FILE` writes one). "
                    "Default: the synthetic fleet of --stations stations.")]


def _load_specs(fleet: Path | None, s: Settings, interval: float | None) -> tuple[list[StationSpec],
                                                                                 int | None, str]:
    if fleet is None:
        return default_specs(s.stations, s.seed, interval or DEFAULT_INTERVAL_S), s.seed, "default fleet"
    try:
        spec = load_fleet(fleet)
    except FleetError as exc:
        fail(exc, 2)
    return spec.stations, spec.seed, str(fleet)


@app.command()
def run(
    fleet: FleetOpt = None,
    kafka: KafkaOpt = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the default synthetic fleet (default 247).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the synthetic scenario (default: the fleet file's seed, else the setting).")] = None,
    only: Annotated[str | None, typer.Option(
        help="Run only these stations: comma-separated ids or patterns, e.g. 'news-*'.")] = None,
    part: Annotated[str | None, typer.Option(
        help="Run part I of a fleet split in N (I/N, e.g. 2/3): one process per part, split "
             "by a hash of the station id.")] = None,
    duration: Annotated[float | None, typer.Option(
        min=0.5, help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    t0: Annotated[float | None, typer.Option(
        help="Scenario start, unix seconds (default: now). Give every process of one fleet "
             "(--part, --only) the same value so they play one scenario.")] = None,
    interval: Annotated[float | None, typer.Option(
        min=0.05, help="Sampling interval of every station, seconds (default 0.5, or each "
                       "station's interval_s from --fleet).")] = None,
    status_every: Annotated[float, typer.Option(
        min=0.2, help="Publish every station's status this often, seconds.")] = 2.0,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON summary line.")] = False,
) -> None:
    """Run ground stations: events to Kafka, control commands obeyed.

    Acks go to the acks topic, each station's status to the station-status topic.
    """
    if fleet is not None and stations is not None:
        fail("--stations sizes the default fleet; with --fleet the file decides (use --only or "
             "--part to run fewer)", 2)
    s = settings(kafka_bootstrap=kafka, stations=stations, seed=seed)
    specs, file_seed, origin = _load_specs(fleet, s, interval)
    run_seed = seed if seed is not None else (file_seed if file_seed is not None else s.seed)
    try:
        split = parse_part(part) if part else None
        chosen = choose(specs, only=only, part=split)
    except ValueError as exc:
        fail(exc, 2)
    start = time.time() if t0 is None else t0
    world = fleet_world(specs, run_seed, (duration or 3600.0) + 60.0)
    # Build every source before touching Kafka: a bad fleet file fails at once, named.
    try:
        built = build_fleet(chosen, None, world=world, t0_s=start, seed=run_seed,
                            interval_s=interval)
    except FleetError as exc:
        fail(exc, 2)

    def started(f: Fleet) -> None:
        if not json_out:
            until = f"for {duration:g} s" if duration else "until Ctrl-C"
            share = f", part {part}" if part else ""
            console.print(f"[bold]stations[/] {len(f.agents)} of {len(specs)} ({escape(origin)}{share}) "
                          f"publishing to {s.topic('events')} at {s.kafka_bootstrap}, running {until}")

    async def main(stop: asyncio.Event) -> dict[str, Any]:
        return await run_stations(s, built, stop=stop, duration_s=duration, on_started=started,
                                  status_every_s=status_every)

    try:
        with kafka_errors(s.kafka_bootstrap):
            out = run_until_stopped(main)
    except ValueError as exc:
        fail(exc, 2)
    failed = out["failed"] + out["control"]["failed"]
    if json_out:
        print_json(out)
    else:
        console.print(
            f"[bold]done[/] in {out['duration_s']:.1f} s: {plural(out['sent'], 'event message')} "
            f"({plural(out['records_sent'], 'event')}) sent, {out['acked']} acked, "
            f"{out['failed']} failed, {out['retried']} re-sent; "
            f"{plural(out['commands'], 'command')}, {plural(out['acks'], 'ack')}, "
            f"{plural(out['status_messages'], 'status message')}.")
    if failed:
        err_console.print(f"warning: {plural(failed, 'message')} could not be delivered; "
                          "see the log above", markup=False)
        raise typer.Exit(1)


@app.command("list")
def list_(
    fleet: FleetOpt = None,
    kafka: Annotated[str | None, typer.Option(
        "--kafka", help="Read live states from this broker's station-status topic; without it "
                        "every state shows as 'unknown'.")] = None,
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the default synthetic fleet (default 247).")] = None,
    since: Annotated[float, typer.Option(
        min=1.0, help="With --kafka: statuses older than this many seconds are ignored.")] = 600.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The fleet, one line per station, with live states from --kafka.

    With --fleet: the declared stations (plus any that report but are not declared).
    Without --fleet: with --kafka the stations that report, else the default fleet.
    """
    s = settings(kafka_bootstrap=kafka, stations=stations)
    specs: list[StationSpec] = []
    origin = "stations reporting"
    if fleet is not None or kafka is None:
        specs, _, origin = _load_specs(fleet, s, None)
    live: dict[str, dict[str, Any]] = {}
    if kafka is not None:
        with kafka_errors(s.kafka_bootstrap):
            live = read_status(s.kafka_bootstrap, s.topic(STATUS_TOPIC), since_s=since)
    rows: list[dict[str, Any]] = []
    for sp in specs:
        st = live.pop(sp.station_id, None)
        rows.append({"station_id": sp.station_id, "name": sp.name, "source_kind": sp.source_kind.value,
                     "region": sp.region, "group": sp.info.correlation_group,
                     "source": sp.source.describe(), "declared": True,
                     "interval_s": st["interval_s"] if st else sp.interval_s,
                     "state": st["state"] if st else "unknown",
                     **{k: (st or {}).get(k) for k in ("polls", "sent", "failures", "age_s", "host",
                                                       "pid")}})
    for sid, st in sorted(live.items()):
        rows.append({"station_id": sid, "name": "", "source_kind": st.get("kind"),
                     "region": st.get("region"), "group": st.get("group"), "source": st.get("source", "?"),
                     # without --fleet nothing is declared: whether it should be is unknown
                     "declared": False if fleet is not None else None, "interval_s": st.get("interval_s"),
                     "state": st.get("state"),
                     **{k: st.get(k) for k in ("polls", "sent", "failures", "age_s", "host", "pid")}})
    states: dict[str, int] = {}
    for r in rows:
        states[str(r["state"])] = states.get(str(r["state"]), 0) + 1
    if json_out:
        print_json({"fleet": origin, "kafka": s.kafka_bootstrap if kafka else None,
                    "status_topic": s.topic(STATUS_TOPIC) if kafka else None,
                    "states": states, "stations": rows})
        return
    # Plain aligned columns, one line per station: greppable, and never wrapped mid-id.
    cols = ("id", "kind", "region", "group", "source", "interval_s", "state", "polls", "sent",
            "failures", "seen_s_ago")
    cells = [[str(v) if v is not None else "-" for v in (
        r["station_id"] + (" (undeclared)" if r["declared"] is False else ""), r["source_kind"], r["region"],
        r["group"], r["source"], r["interval_s"], r["state"], r["polls"], r["sent"], r["failures"],
        r["age_s"])] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    console.print(f"{plural(len(rows), 'station')} ({escape(origin)})", markup=True)
    for row in [list(cols), *cells]:
        console.print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
                      markup=False)
    console.print("states: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
                  + ("" if kafka else "  (pass --kafka BOOTSTRAP for live states)"))


@app.command("command")
def command(
    action: Annotated[Action, typer.Argument(help="What to do.", case_sensitive=False)],
    target: Annotated[str, typer.Option(
        "--target", help="station:ID, region:NAME, source_kind:KIND or all.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="NAME=NUMBER, repeatable: interval_s for set_interval and "
                              "burst_mode, any threshold name for set_thresholds.")] = None,
    ttl: Annotated[float, typer.Option(
        min=1.0, help="Seconds the command stays valid; for quarantine and burst_mode, how "
                      "long they last.")] = 300.0,
    reason: Annotated[str, typer.Option(help="Why (kept in the command and the logs).")] =
        "manual command from the CLI",
    kafka: KafkaOpt = None,
    wait_ack: Annotated[float | None, typer.Option(
        "--wait-ack", min=0.1, help="Wait up to this many seconds for acks and print them; "
                                    "exit 1 if none arrive.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Send one control command to running stations and, with --wait-ack, print the acks.

    Example: set_interval --target station:news-eu-west-001 --param interval_s=0.1 --wait-ack 10
    """
    try:
        tgt = Target.parse(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--target") from None
    try:
        params = parse_params(action, param or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    s = settings(kafka_bootstrap=kafka)
    cmd = ControlCommand.create(action, tgt, issued_at_s=time.time(), ttl_s=ttl, params=params,
                                reason=reason)
    with kafka_errors(s.kafka_bootstrap):
        try:
            acks = issue_command(s.kafka_bootstrap, s.topic("control"), s.topic("acks"), cmd,
                                 wait_s=wait_ack or 0.0)
        except CommandError as exc:
            fail(exc)
    tgt_text = tgt.type if tgt.type == "all" else f"{tgt.type}:{tgt.value}"
    refused = [a for a in acks if not a.get("applied")]
    if json_out:
        print_json({"command": cmd.to_dict(), "topic": s.topic("control"), "acks": acks,
                    "applied": len(acks) - len(refused), "refused": len(refused)})
    else:
        what = " ".join([action.value, *(f"{k}={v:g}" for k, v in params.items())])
        console.print(f"sent {cmd.command_id} {escape(what)} to {escape(tgt_text)} on "
                      f"{s.topic('control')} at {s.kafka_bootstrap}")
        for a in acks:
            mark = "[green]applied[/]" if a.get("applied") else "[red]refused[/]"
            console.print(f"  {escape(str(a.get('station_id')))} {mark}: {escape(str(a.get('detail')))}")
    if wait_ack is None:
        return
    if not acks:
        fail(f"no station acknowledged {cmd.command_id} within {wait_ack:g} s: check that "
             f"`convergence stations run` is running against {s.kafka_bootstrap} with topic prefix "
             f"{s.topic_prefix!r}"
             + ("" if tgt.type == "all" else f", and that {tgt_text} names a running station")
             + " (`convergence stations list --kafka ...` shows what reports)")
    if refused:
        fail(f"{len(refused)} of {len(acks)} station(s) refused {cmd.command_id}: "
             f"{refused[0].get('detail')}")


@app.command()
def init(
    out: Annotated[Path, typer.Option("--out", help="Fleet file to write ('-' for stdout).")],
    stations: Annotated[int | None, typer.Option(
        min=5, max=100_000, help="Stations in the fleet (default: setting stations, 247).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fleet and its scenario.")] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Sampling interval of every station, s.")] =
        DEFAULT_INTERVAL_S,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write the default synthetic fleet as a fleet file, to edit and run with run --fleet."""
    s = settings(stations=stations, seed=seed)
    text = default_fleet_toml(s.stations, s.seed, interval)
    try:  # the very check `stations run/list --fleet` will make: never write a file they refuse
        loads_fleet(text, origin="the fleet to write")
    except FleetError as exc:
        first = re.sub(r"^station #\d+ \(id '[^']*'\): ", "", exc.problems[0])
        fail(f"--interval {interval:g} / --stations {s.stations}: {first}; the fleet file "
             "would be refused when loaded, so nothing was written", 2)
    if str(out) == "-":
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        fail(f"{out} already exists; pass --force to overwrite it", 1)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)  # never leave a half-written fleet behind
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # ... nor the half-written temporary file
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"wrote {plural(s.stations, 'station')} (seed {s.seed}) to {escape(str(out))}; "
                  f"run them with `convergence stations run --fleet {escape(str(out))}`")

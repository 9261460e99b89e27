"""``convergence scenarios list|show``: the scenario library."""

from __future__ import annotations

from typing import Annotated

import typer

from convergence.cli.common import console, fail, print_json

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The scenario library: genuine convergences and the decoys that must not "
         "alert, with their ground truth.", no_args_is_help=True)


@app.command("list")
def list_scenarios(
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Every scenario: name, genuine or decoy, fleet size, ticks, and what happens."""
    from rich.table import Table

    from convergence.ground_stations.scenario_library import SCENARIOS

    rows = [s.to_dict() for s in SCENARIOS.values()]
    if json_out:
        print_json(rows)
        return
    t = Table(title=f"{len(rows)} scenarios ({sum(r['genuine'] for r in rows)} genuine, "
                    f"{sum(not r['genuine'] for r in rows)} decoys); "
                    "`convergence scenarios show NAME` tells the whole story", show_lines=False)
    t.add_column("scenario", no_wrap=True)
    t.add_column("must", no_wrap=True)
    t.add_column("stations", justify="right")
    t.add_column("what happens", overflow="fold", ratio=1)
    for r in rows:
        t.add_row(r["name"], "alert" if r["genuine"] else "stay quiet", str(r["stations"]),
                  first_sentence(r["description"]))
    console.print(t)


def first_sentence(text: str, limit: int = 70) -> str:
    """The first sentence of a description, cut at a word to ``limit`` characters.

    >>> first_sentence("A market shock. Then more.")
    'A market shock.'
    >>> first_sentence("News, social media and market volume in one region turn together", 40)
    'News, social media and market volume in…'
    """
    head = text.split(". ", 1)[0].rstrip(".") + "."
    if len(head) <= limit:
        return head
    return head[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + "…"


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Scenario name (see `convergence scenarios list`).")],
    seed: Annotated[int, typer.Option(help="Seed of the story's random choices.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """One scenario: its story, fleet, episodes and ground truth."""
    from convergence.ground_stations.scenario_library import SCENARIOS

    spec = SCENARIOS.get(name)
    if spec is None:
        close = [n for n in SCENARIOS if name.lower() in n or n in name.lower()]
        fail(f"no scenario named {name!r}"
             + (f"; did you mean {', '.join(close[:3])}?" if close else "")
             + " - `convergence scenarios list` shows them all", 2)
    sc = spec.build(seed)
    d = spec.to_dict()
    if json_out:
        print_json({**d, "seed": seed,
                    "fleet": [{"station_id": s.station_id, "source_kind": s.kind.value,
                               "region": s.region, "group": s.correlation_group,
                               "rate_per_s": s.rate_per_s} for s in sc.fleet]})
        return
    console.print(f"[bold]{name}[/] ({'genuine: must alert' if spec.genuine else 'decoy: must stay quiet'})")
    console.print(spec.description)
    regions = sorted({s.region for s in sc.fleet})
    console.print(f"fleet: {len(sc.fleet)} stations in {', '.join(regions)}; "
                  f"{d['ticks']} ticks of {sc.tick_s:g} s")
    for e in sc.episodes:
        who = ", ".join(sc.fleet[i].station_id for i in e.stations[:6])
        more = f" and {len(e.stations) - 6} more" if len(e.stations) > 6 else ""
        console.print(f"  {e.start_s:7.1f}-{e.end_s:7.1f} s  {e.kind:<16} x{e.rate_mult:g} "
                      f"{e.region}: {who}{more}")
    for t in sc.truths():
        console.print(f"  truth: a convergence in {t.region} from {t.onset_s:.1f} s to "
                      f"{t.end_s:.1f} s ({len(t.stations)} stations)")
    if not sc.truths():
        console.print("  truth: no convergence; any alert is a false alarm")

"""``convergence bench ...``: benchmarks that print machine-readable JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from convergence.cli.common import console, fail, print_json

app = typer.Typer(help="Benchmarks (each reports a ratio against a baseline measured in the same run).",
                  no_args_is_help=True)


@app.command()
def detectors(
    stations: Annotated[int, typer.Option(min=5, help="Stations in the fleet.")] = 247,
    events: Annotated[int, typer.Option(min=1000, help="Events pushed through the chain.")] = 5_000_000,
    ticks: Annotated[int, typer.Option(min=1, help="One-second ticks the events span.")] = 300,
    repeats: Annotated[int, typer.Option(min=1, max=50, help="Best of this many runs.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic events.")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Events/s through the whole detector chain, beside a raw numpy bincount baseline.

    Ingest, entropy, burst, CUSUM, periodicity, patterns, node states and the meter, with
    the ratio to the baseline and the bytes of state per station.
    """
    from convergence.simulation.bench import bench_detectors

    try:
        r = bench_detectors(stations=stations, events=events, ticks=ticks, repeats=repeats, seed=seed)
    except ValueError as exc:
        fail(exc)
    if json_out:
        print_json(r)
        return
    console.print(
        f"detector chain: {r['chain_events_per_s'] / 1e6:.2f} M events/s "
        f"({r['events']:,} events, {r['stations']} stations, {r['ticks']} ticks, best of {repeats})\n"
        f"numpy bincount baseline: {r['baseline_events_per_s'] / 1e6:.1f} M events/s; "
        f"chain/baseline = {r['ratio_to_baseline']:.3f}\n"
        f"state: {r['bytes_per_station']} bytes per station"
    )

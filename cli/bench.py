"""``convergence bench ...``: benchmarks that print machine-readable JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from convergence.cli.common import console, fail, print_json

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Benchmarks (each reports a ratio against a baseline measured in the same run).",
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


@app.command()
def montecarlo(
    runs: Annotated[int, typer.Option(min=10, help="Runs per scenario for the batched figure.")] = 400,
    scenarios: Annotated[str, typer.Option(help="Scenarios to run (names, comma-separated).")] =
        "simultaneous,slow-cascade,lone-surge,pure-noise",
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: the cores).")] = None,
    serial_runs: Annotated[int, typer.Option(min=1, help="Runs per scenario one at a time.")] = 8,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Campaign tests/s (vectorised, across processes) beside the same tests run one at a
    time in the same benchmark, with the 410,000-test target extrapolated."""
    from convergence.simulation.bench import bench_montecarlo

    try:
        r = bench_montecarlo(runs=runs, scenarios=scenarios, workers=workers, serial_runs=serial_runs)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""), 2)
    if json_out:
        print_json(r)
        return
    console.print(
        f"campaign: {r['tests_per_s']:.0f} tests/s ({r['tests']} tests in {r['seconds']} s, "
        f"{r['workers']} processes)\none at a time: {r['baseline_tests_per_s']:.1f} tests/s; "
        f"batched/one-at-a-time = {r['ratio_to_baseline']:.0f}x\n"
        f"410,000 tests would take {r['target']['projected_seconds']:.0f} s (target 82 s); "
        f"time of one chunk: {r['time_share_of_one_chunk']}"
    )

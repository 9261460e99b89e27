"""``convergence bench ...``: benchmarks that print machine-readable JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from convergence.cli.cluster import LogLevel
from convergence.cli.common import benchmark_broker, console, fail, print_json, settings

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


def _ints(value: str, name: str, lo: int, hi: int) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number or a comma-separated list of numbers "
                                 f"(e.g. 1,2)", param_hint=f"--{name}") from None
    if not out or any(not lo <= x <= hi for x in out):
        raise typer.BadParameter(f"{value!r}: each value must be from {lo} to {hi}",
                                 param_hint=f"--{name}")
    return out


@app.command()
def cluster(
    workers: Annotated[str, typer.Option(
        help="Worker processes; a comma-separated list runs one after the other (e.g. 1,2).")] = "1",
    events: Annotated[int, typer.Option(min=1000, help="Events in the backlog.")] = 2_000_000,
    batch: Annotated[str, typer.Option(
        help="Mean events per Kafka message; a comma-separated list compares them (e.g. 10,100).")] = "10",
    partitions: Annotated[int | None, typer.Option(
        min=1, max=64, help="Partitions of the events and node-evidence topics (default: the "
                            "partitions setting, as `cluster up` creates them).")] = None,
    rate_scale: Annotated[float, typer.Option(
        min=0.01, help="Stations send this many times their declared rates.")] = 10.0,
    live: Annotated[float, typer.Option(
        min=0.0, help="Seconds of real-time sending after the backlog, for alert latency (0: none).")] = 20.0,
    live_episodes: Annotated[int, typer.Option(
        min=0, max=20, help="Genuine convergences in the live phase.")] = 2,
    kafka: Annotated[str | None, typer.Option(
        help="Use the broker at HOST:PORT (default: start a throwaway local one; needs Java and "
             "Maven).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fleet (default: setting seed).")] = None,
    timeout: Annotated[float, typer.Option(
        min=10.0, help="Give up when the workers have not consumed the backlog after this many "
                       "seconds.")] = 1800.0,
    join_late: Annotated[bool, typer.Option(
        help="Start one worker, and the others once it is draining the backlog (its first "
             "ticks closed): scaling out a busy cluster.")] = False,
    worker_log_level: Annotated[LogLevel, typer.Option(
        help="The workers' log level (their logs are kept when a run fails).")] = LogLevel.warning,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Events/s from the broker through N real workers with the full detector chain, beside
    the raw kafka-python consume of the same topic, and alert latency.

    Fills a fresh events topic with a seeded backlog from a synthetic fleet like the demo's,
    reads it raw, starts the workers as `cluster up` does and times them until the
    consumer group has committed every event, then sends live with genuine convergences
    and times each alert from the last event that contributed to it. Cleans up every
    process and topic it made. See `convergence.simulation.bench_cluster`.
    """
    from convergence.simulation.bench_cluster import bench_cluster

    worker_counts = _ints(workers, "workers", 1, 16)
    batches = _ints(batch, "batch", 1, 5000)
    s = settings()

    def say(text: str) -> None:
        if not json_out:
            console.print(text, markup=False)

    with benchmark_broker(s, kafka, say, missing_hint="start one (`convergence kafka start`) "
                          "or leave out --kafka to start a throwaway one") as bootstrap:
        r = bench_cluster(s, bootstrap, workers=worker_counts, batches=batches, events=events,
                          partitions=partitions, rate_scale=rate_scale, live_s=live,
                          live_episodes=live_episodes, seed=seed, drain_timeout_s=timeout, say=say,
                          worker_log_level=worker_log_level.value, join_late=join_late)
    failed = [run for run in r["runs"] if "error" in run]
    if json_out:
        print_json(r)
    else:
        _print_cluster(r)
    if failed:
        first = failed[0]["error"].splitlines()[0]
        fail(f"{len(failed)} of {len(r['runs'])} benchmark run(s) failed (the others' figures are "
             f"above); the first, {failed[0]['workers']} worker(s) at {failed[0]['batch']} events "
             f"per message: {first}")


def _print_cluster(r: dict[str, Any]) -> None:
    for run in r["runs"]:
        if "error" in run:
            console.print(f"{run['workers']} worker(s), {run['batch']} events per message: FAILED: "
                          f"{run['error']}", markup=False)
            continue
        c, b, lat = run["cluster"], run["baseline"], run["alerts"].get("latency_s") or {}
        rate = (f"{c['events_per_s']:,} events/s sustained" if c["events_per_s"]
                else f"{c['events_per_s_with_startup']:,} events/s with startup (too short to time "
                     "the sustained rate)")
        ratio = "n/a" if run["ratio_to_baseline"] is None else f"{run['ratio_to_baseline']:.3f}"
        console.print(
            f"{run['workers']} worker(s), {run['partitions']} partition(s), "
            f"{run['avg_events_per_message']:g} events per message ({run['events']:,} events): {rate} "
            f"(startup {c['startup_s']:g} s); raw kafka-python consume {b['events_per_s']:,} events/s; "
            f"cluster/raw = {ratio} (per CPU second {run['ratio_per_cpu_s']}); alert latency p50 "
            f"{lat.get('p50')} s, p99 {lat.get('p99')} s over {lat.get('n', 0)} alert(s); "
            f"{run['alerts'].get('live_false', 0)} false alarm(s) in the live phase",
            markup=False)
        core = run.get("core") or {}
        if core.get("events_per_cpu_s"):
            share = run.get("framework_share_of_cpu")
            console.print(
                f"  the workers' own code in process: {core['events_per_cpu_s']:,} events per CPU "
                f"second; the workers: {c['events_per_cpu_s'] or 'n/a'} per CPU second"
                + (f" ({share:.0%} of their CPU is Faust, aiokafka and tables)"
                   if share is not None else ""), markup=False)
        st = run.get("stages")
        if st:
            skipped = "n/a" if st["skipped_share"] is None else f"{st['skipped_share']:.1%}"
            console.print(
                f"  between the stages: {skipped} of {st['station_ticks']:,} station-ticks "
                f"skipped at ingress (at baseline); {st['bytes_per_tick']} bytes of node evidence "
                f"per closed tick over {st['ticks_closed']:,} ticks", markup=False)
    for what, table in (("workers", r["compare"]["workers_speedup"]),
                        ("batch", r["compare"]["batch_speedup"])):
        for key, row in table.items():
            base = "1 worker" if what == "workers" else "the smallest batch"
            at = f"{key} events per message" if what == "workers" else f"{key} worker(s)"
            console.print(f"{what}: at {at}, rate over {base}: "
                          + ", ".join(f"{k} -> {v:g}x" for k, v in row.items()), markup=False)

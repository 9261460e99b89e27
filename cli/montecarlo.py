"""``convergence montecarlo run|list|show`` and ``convergence lasvegas run``: campaigns."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convergence.cli.common import (
    console,
    err_console,
    fail,
    print_json,
    quiet_kafka_logs,
    settings,
)

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Monte Carlo scenario campaigns: how far to trust an alert, measured.",
    no_args_is_help=True)
lasvegas_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Las Vegas validation: perturbed runs whose verdict must always "
         "be right.", no_args_is_help=True)

DbOpt = Annotated[str | None, typer.Option(
    "--db", help="SurrealDB URL for the campaign summary (default: the embedded file).")]


def _progress(quiet: bool, what: str) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                    disable=quiet, transient=False)


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _ci(block: dict[str, Any] | None) -> str:
    if not block or block.get("ci95") is None:
        return ""
    lo, hi = block["ci95"]
    return f" [{100 * lo:.1f}-{100 * hi:.1f}]"


def _headline(summary: dict[str, Any], key: str, text: str, missing: str, digits: int) -> str:
    """One overall rate of a campaign summary with its interval, or what was not measured."""
    rate = summary.get(f"{key}_rate")
    if rate is None:
        return missing
    lo, hi = summary[f"{key}_ci95"]
    return text.format(rate=_pct(rate, digits), ci=f"{_pct(lo, digits)}-{_pct(hi, digits)}")


def print_campaign(summary: dict[str, Any]) -> None:
    """The per-scenario table and the headline figures, for a person."""
    from rich.table import Table

    t = Table(title=f"campaign {summary['campaign_id']}: {summary['tests']} runs in "
                    f"{summary['seconds']:.0f} s ({summary.get('tests_per_s') or 0:.0f} runs/s)")
    for col in ("scenario", "kind", "runs", "detected (95% CI)", "false-alarm runs (95% CI)",
                "time to detect, ticks (median / p90)"):
        t.add_column(col)
    # a summary read back from SurrealDB has lost its null fields (a decoy's detection)
    for name, r in summary["per_scenario"].items():
        ttd = r.get("time_to_detect_ticks") or {}
        t.add_row(name, r["kind"], str(r["runs"]),
                  (_pct(r.get("detection_rate")) + _ci(r["detection"])) if r.get("detection") else "-",
                  _pct(r.get("false_alarm_rate"), 2) + _ci(r.get("false_alarm")),
                  f"{ttd['median']} / {ttd['p90']}" if ttd.get("median") is not None else "-")
    console.print(t)
    parts = [
        _headline(summary, "detection", "[bold]detection[/] {rate} (95% CI {ci}) over genuine "
                  "convergences", "no genuine convergence in these scenarios (nothing to detect)", 1),
        _headline(summary, "false_alarm", "[bold]false alarms[/] in {rate} of decoy runs (95% CI "
                  "{ci})", "no decoy in these scenarios (false alarms not measured)", 2)]
    if summary.get("median_time_to_detect_ticks") is not None:
        parts.append(f"[bold]median time to detect[/] {summary['median_time_to_detect_ticks']} "
                     f"ticks (p90 {summary.get('p90_time_to_detect_ticks')})")
    console.print("; ".join(parts))
    hours = summary.get("station_hours_between_false_alarms")
    if hours:
        console.print(f"one false alarm per {hours:,.0f} station-hours of decoys")
    bp = summary["best_params"]
    console.print(f"best settings: {json.dumps(bp)}")


async def _store_summary(url_settings: Any, record_id: str, doc: dict[str, Any]) -> None:
    from convergence.store.surreal import SurrealStore

    async with SurrealStore.from_settings(url_settings) as store:
        await store.upsert("campaign", record_id, doc)


@app.command("run")
def run(
    runs: Annotated[int, typer.Option(min=1, max=1_000_000, help="Runs per scenario.")] = 100,
    scenarios: Annotated[str, typer.Option(
        help="all, genuine, decoy, or NAME,NAME,... (see `convergence scenarios list`).")] = "all",
    seed: Annotated[int | None, typer.Option(help="Campaign seed (default: settings).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=256,
                                                help="Processes (default: the cores).")] = None,
    chunk: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="Runs simulated together as one batch.")] = 500,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="Also sample the detector settings per run and report the best ones "
                        "and the trade-off curve.")] = False,
    events: Annotated[bool, typer.Option(
        "--events", help="Push individual events through the real ingest (slower; the default "
                         "draws per-tick cells).")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Directory for summary.json, calibration.json and PNG plots.")] = None,
    save_calibration: Annotated[bool, typer.Option(
        "--save-calibration", help="Make this campaign the confidence that reports quote "
                                   "(written under the data dir).")] = False,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Let the cluster's workers run the campaign's shards (one shard = "
                          "--chunk runs of one scenario); the result equals a local run's. "
                          "--workers does not apply.")] = False,
    kafka: Annotated[str | None, typer.Option("--kafka", help="Kafka bootstrap servers "
                                                              "(with --cluster).")] = None,
    db: DbOpt = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not store the summary.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON object on stdout.")] = False,
) -> None:
    """Run every selected scenario many times, judge each run against its ground truth.

    Per scenario and overall: detection rate, false-alarm rate, time to detect, each with
    a 95 % interval; with --sweep, the best detector settings and the trade-off between
    detection and false alarms. The summary is stored (`montecarlo list|show`).

    With --cluster the workers of a running cluster (`convergence cluster up`, same
    CONVERGENCE_TOPIC_PREFIX) run the campaign: each chunk is a seeded shard on the
    campaign-shards topic, and the merged result equals the local one for the same seed and
    --chunk. A worker that dies mid-shard is replaced by another after the broker's session
    timeout. Keep one shard well under 30 s (a rebalance waits for running shards): on a
    2-core machine 500 runs take 12-20 s, so with --events use --chunk 50.
    """
    import contextlib

    from convergence.simulation.campaign import run_campaign
    from convergence.streams.topics import ClusterError

    if kafka is not None and not cluster:
        fail("--kafka only applies with --cluster (a local campaign needs no broker)", 2)
    s = settings(seed=seed, db=db, kafka_bootstrap=kafka)
    try:
        with (quiet_kafka_logs() if cluster else contextlib.nullcontext(),
              _progress(json_out, "[progress.description]{task.description}") as bar):
            task = bar.add_task("monte carlo", total=None)
            runner = None
            if cluster:
                from convergence.streams.campaign_shards import ClusterProgress, cluster_chunk_runner

                def note(p: ClusterProgress) -> None:
                    bar.update(task, description=p.text())

                runner = cluster_chunk_runner(s, on_progress=note)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            res = run_campaign(scenarios, runs=runs, seed=s.seed, workers=workers, chunk=chunk,
                               sweep=sweep, mode="events" if events else "cells",
                               progress=progress, chunk_runner=runner)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""), 2)
    except ClusterError as exc:
        fail(exc)
    summary = res.summary()
    if out is not None:
        from convergence.simulation.plots import PlotError, write_plots

        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(summary, indent=1))
            (out / "calibration.json").write_text(json.dumps(res.calibration(), indent=1))
            paths = write_plots(summary, [t for r in res.records for t in r.ttd_ticks], out)
        except (OSError, PlotError) as exc:
            fail(f"cannot write into {out}: {exc}")
        summary["files"] = [str(out / "summary.json"), str(out / "calibration.json"),
                            *map(str, paths)]
    if save_calibration:
        from convergence.responses.calibration import save_calibration as save

        try:
            summary["calibration_saved"] = str(save(s, res.calibration()))
        except OSError as exc:
            fail(f"cannot save the calibration under {s.data_dir}: {exc}")
    if not no_store:
        from convergence.store.surreal import StoreError

        doc = {k: v for k, v in summary.items() if k != "tradeoff"} | {
            "tradeoff": summary["tradeoff"][:60]}
        try:
            asyncio.run(_store_summary(s, res.campaign_id, doc))
            summary["stored"] = f"campaign:{res.campaign_id} in {s.db_url}"
        except StoreError as exc:
            fail(f"the campaign ran but its summary was NOT stored: {exc} "
                 "(rerun with --no-store to skip storing, or fix the database)")
    if json_out:
        print_json(summary)
        return
    print_campaign(summary)
    for f in summary.get("files", []):
        console.print(f"wrote {f}")
    if "stored" in summary:
        console.print(f"stored {summary['stored']} (`convergence montecarlo show {res.campaign_id}`)")


async def _read(s: Any, fn: Any) -> Any:
    from convergence.store.graph import require_existing
    from convergence.store.surreal import SurrealStore

    require_existing(s.db_url)
    async with SurrealStore.from_settings(s) as store:
        return await fn(store)


@app.command("list")
def list_campaigns(
    db: DbOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Stored campaign summaries, newest first."""
    from convergence.store.surreal import StoreError

    s = settings(db=db)
    try:
        rows = asyncio.run(_read(s, lambda st: st.list("campaign", limit=limit)))
    except StoreError as exc:
        fail(exc)
    if json_out:
        print_json([{k: r.get(k) for k in ("id", "campaign_id", "tests", "detection_rate",
                                           "false_alarm_rate", "median_time_to_detect_ticks",
                                           "seconds", "seed", "sweep")} for r in rows])
        return
    if not rows:
        console.print(f"no campaigns stored in {s.db_url} yet (`convergence montecarlo run`)")
        return
    for r in rows:
        console.print(f"{r.get('campaign_id')}: {r.get('tests')} runs, detection "
                      f"{_pct(r.get('detection_rate'))}, false alarms "
                      f"{_pct(r.get('false_alarm_rate'), 2)}, median time to detect "
                      f"{r.get('median_time_to_detect_ticks')} ticks")


@app.command("show")
def show(
    campaign_id: Annotated[str, typer.Argument(help="A campaign id from `montecarlo list`.")],
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """One stored campaign: the table per scenario and the headline figures."""
    from convergence.store.surreal import StoreError

    if not campaign_id.strip():
        fail("give a campaign id (see `convergence montecarlo list`)", 2)
    s = settings(db=db)
    try:
        doc = asyncio.run(_read(s, lambda st: st.get("campaign", campaign_id)))
    except StoreError as exc:
        fail(exc)
    if doc is None:
        fail(f"no campaign {campaign_id!r} in {s.db_url}; `convergence montecarlo list` shows "
             "the stored ones")
    if json_out:
        print_json(doc)
        return
    print_campaign(doc)


@lasvegas_app.command("run")
def lasvegas_run(
    runs_per_scenario: Annotated[int, typer.Option(min=1, max=100_000,
                                                   help="Perturbed runs per scenario.")] = 100,
    scenarios: Annotated[str, typer.Option(
        help="all, genuine, decoy, or NAME,NAME,... (see `convergence scenarios list`).")] = "all",
    seed: Annotated[int | None, typer.Option(help="Seed (default: settings).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=256,
                                                help="Processes (default: the cores).")] = None,
    show_run: Annotated[int | None, typer.Option(
        help="Print the details of this run (what a failure's reproduce command uses).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON object on stdout.")] = False,
) -> None:
    """Perturb every scenario at random (dropped and duplicated events, an outage, skewed
    clocks, noise) and check each run's verdict. A scenario passes only if every run is
    right; a failing run prints its seed and the command that reproduces it."""
    from convergence.simulation.lasvegas import run_lasvegas

    s = settings(seed=seed)
    try:
        with _progress(json_out, "las vegas") as bar:
            task = bar.add_task("scenarios", total=None)
            results = run_lasvegas(scenarios, runs_per_scenario=runs_per_scenario, seed=s.seed,
                                   workers=workers,
                                   progress=lambda d, t: bar.update(task, completed=d, total=t))
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""), 2)
    passed = sum(r.passed for r in results)
    if show_run is not None:
        for r in results:
            if not 0 <= show_run < len(r.verdicts):
                fail(f"--show-run {show_run}: {r.scenario} has runs 0-{len(r.verdicts) - 1}", 2)
            v = r.verdicts[show_run]
            console.print(f"{r.scenario} run {v.run}: {'right' if v.right else 'WRONG'}: "
                          f"detected {v.detected}/{v.genuine}, {v.false_alarms} false alarm(s), "
                          f"time to detect {list(v.ttd_ticks)} ticks\n  perturbed: {v.perturbation}")
    summary = {"seed": s.seed, "runs_per_scenario": runs_per_scenario,
               "scenarios": len(results), "passed": passed,
               "per_scenario": [r.to_dict() for r in results]}
    if json_out:
        print_json(summary)
    else:
        for r in results:
            mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
            d = r.to_dict()
            console.print(f"{mark} {r.scenario:<26} {r.right}/{r.runs} right; time to detect "
                          f"median {d['median_time_to_detect_ticks']}, "
                          f"max {d['max_time_to_detect_ticks']} ticks")
            for f in r.failures[:5]:
                console.print(f"     wrong: run {f.run} of seed {f.seed} (detected {f.detected}/"
                              f"{f.genuine}, {f.false_alarms} false alarm(s); perturbed: "
                              f"{f.perturbation}); reproduce: {f.reproduce}")
        console.print(f"{passed}/{len(results)} scenarios right in every run")
    if passed < len(results):
        raise typer.Exit(1)

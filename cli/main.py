"""The ``convergence`` command: one typer app, one sub-app per command group."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from convergence import __version__
from convergence.cli import (
    alerts,
    bench,
    bench_stations,
    bench_store,
    cluster,
    config,
    evaluate,
    kafka,
    models,
    montecarlo,
    reports,
    scenarios,
    stations,
)
from convergence.cli.dashboard import dashboard
from convergence.cli.detect import detect
from convergence.cli.probe import probe
from convergence.cli.regime import regime
from convergence.cli.run import optional_port, run
from convergence.cli.train_meter import train_meter_cmd

app = typer.Typer(
    rich_markup_mode="markdown",
    name="convergence",
    help="OSINT and market convergence intelligence: ground stations, detectors, a "
         "convergence meter, alerts and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convergence {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, metavar="", show_default=False,
        help="More log output; repeat it: -v info, -vv debug.")] = 0,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Convergence command line."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


app.command("run")(run)
app.command("dashboard")(dashboard)
app.add_typer(reports.app, name="reports")
app.add_typer(config.app, name="config")
app.add_typer(kafka.app, name="kafka")
bench.app.command("stations")(bench_stations.stations)
bench.app.command("store")(bench_store.store)
stations.app.command("probe")(probe)
app.add_typer(bench.app, name="bench")
app.add_typer(cluster.app, name="cluster")
app.add_typer(alerts.app, name="alerts")
app.add_typer(stations.app, name="stations")
app.add_typer(models.app, name="models")
app.add_typer(scenarios.app, name="scenarios")
app.add_typer(montecarlo.app, name="montecarlo")
app.add_typer(montecarlo.lasvegas_app, name="lasvegas")
app.add_typer(evaluate.app, name="evaluate")
app.command("regime")(regime)
app.command("detect")(detect)
models.train_app.command("meter")(train_meter_cmd)


def main() -> None:
    """Console-script entry point."""
    try:
        app(args=optional_port(sys.argv[1:]))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # surrealdb 2.0's embedded engine leaves tokio worker threads running; if one is
    # mid-task while the interpreter finalizes, Rust aborts the process (exit 134) after
    # everything already succeeded. By now every store is closed and flushed, so leave
    # without finalizing once that engine has been loaded.
    if "surrealdb" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    main()

"""``convergence dashboard``: the live page for a running cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from convergence.cli.common import (
    KafkaOpt,
    console,
    err_console,
    fail,
    kafka_errors,
    run_until_stopped,
    settings,
)

if TYPE_CHECKING:
    from convergence.dashboard.server import DashboardServer


def _ready(server: DashboardServer) -> None:
    console.print(f"[bold]dashboard[/] {server.url}  control token {server.token}\n"
                  f"  (open {server.url}#token={server.token} to use the quarantine/resume "
                  "buttons; Ctrl-C stops)")
    console.file.flush()  # whoever waits for the address (a script, a test) sees it now


def _note(line: str) -> None:
    err_console.print(f"note: {line}", markup=False)


def dashboard(
    db: Annotated[str | None, typer.Option(
        help="SurrealDB URL of the cluster's store, for reports older than the topics' last "
             "hour (default: setting db_url).")] = None,
    kafka: KafkaOpt = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on. Anything but 127.0.0.1/localhost lets other machines see "
             "the page (the control buttons still need the token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="Port to listen on (0 picks a free one).")] = 8765,
) -> None:
    """Serve a live page for a running cluster: map, alerts, meter per region, stations.

    Reads the alerts, reports, readings, station-status, control and acks topics plus
    the store; pushes every change to the browser.
    """
    from convergence.dashboard.cluster import serve_cluster
    from convergence.dashboard.server import DashboardError, is_loopback

    s = settings(db=db, kafka_bootstrap=kafka)
    if not is_loopback(host):
        err_console.print(
            f"warning: listening on {host}: anyone who can reach this machine on port {port} "
            "sees the live picture; only holders of the printed token can send commands",
            markup=False)
    with kafka_errors(s.kafka_bootstrap):
        try:
            run_until_stopped(lambda stop: serve_cluster(s, stop, host=host, port=port,
                                                         on_ready=_ready, on_note=_note))
        except DashboardError as exc:
            fail(exc)

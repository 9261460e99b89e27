"""``convergence dashboard`` and ``convergence run --dashboard``: their errors and warnings.

The page itself is tested in ``tests/dashboard/`` (API, a real embedded run, a real
cluster, and Chromium).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.cli.run import DASHBOARD_PORT, optional_port

runner = CliRunner()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_run_dashboard_on_a_taken_port_is_one_clear_error(taken_port: int) -> None:
    r = runner.invoke(app, ["run", "--duration", "1", "--db", "mem://", "--dashboard",
                            str(taken_port)])
    assert r.exit_code == 1
    assert f"error: cannot serve the dashboard on 127.0.0.1:{taken_port}" in r.stderr
    assert "pick another port" in r.stderr and "Traceback" not in r.output


def test_run_dashboard_wants_a_port_number() -> None:
    r = runner.invoke(app, ["run", "--duration", "1", "--dashboard", "99999"])
    assert r.exit_code == 2


def test_dashboard_without_the_port_gets_the_default() -> None:
    assert optional_port(["-v", "run", "--dashboard"]) == ["-v", "run", "--dashboard",
                                                           str(DASHBOARD_PORT)]
    assert optional_port(["run", "--dashboard", "0", "--duration", "3"]) == [
        "run", "--dashboard", "0", "--duration", "3"]
    assert optional_port(["dashboard", "--port", "1"]) == ["dashboard", "--port", "1"]


@pytest.mark.slow
def test_cluster_dashboard_without_a_broker_warns_then_fails_clearly(closed_port: int) -> None:
    r = runner.invoke(app, ["dashboard", "--kafka", f"127.0.0.1:{closed_port}", "--port", "0",
                            "--host", "0.0.0.0"])
    assert r.exit_code == 1
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine" in r.stderr
    assert f"error: cannot reach Kafka at 127.0.0.1:{closed_port}" in r.stderr
    assert "Traceback" not in r.output


def test_cluster_dashboard_help_names_its_options() -> None:
    r = runner.invoke(app, ["dashboard", "--help"])
    assert r.exit_code == 0
    for opt in ("--db", "--kafka", "--host", "--port"):
        assert opt in r.output

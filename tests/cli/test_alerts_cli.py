"""`convergence alerts tail` against no broker, and the alert line (issue 11, item 17)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from typer.testing import CliRunner

from convergence.cli.alerts import show_alert
from convergence.cli.main import app
from convergence.records import Alert, Level


def test_timeout_bounds_connecting_and_no_kafka_log_lines_get_through() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "convergence.cli.main", "alerts", "tail",
                        "--kafka", f"127.0.0.1:{port}", "--timeout", "2"],
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka"), p.stderr
    assert took < 10, f"--timeout 2 took {took:.1f} s"  # the interpreter starts in ~2 s


def _alert(n_stations: int) -> Alert:
    return Alert(alert_id="alt-1", report_id="rpt-1", region="mena", level=Level.WARNING,
                 score=61.5, tick=3, time_s=1_700_000_000.0, episode_tick=2,
                 stations=tuple(f"news-{i}" for i in range(n_stations)),
                 source_kinds=("osint_news",), osint_corroborated=True)


def test_the_alert_line_counts_stations_in_good_english(capsys: Any) -> None:
    show_alert(_alert(1), as_json=False)
    show_alert(_alert(3), as_json=False)
    out = capsys.readouterr().out
    assert "1 station (news)" in out and "3 stations (news)" in out and "1 stations" not in out


def test_the_verbose_counter_reads_as_one_in_help() -> None:
    h = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    line = next(x for x in h.stdout.splitlines() if "--verbose" in x)
    assert "<int>" not in line and "[default" not in line and "-vv debug" in line

"""`convergence run --fleet FILE`: a newcomer's own stations (recorded files beside synthetic
ones) on the embedded default, on a simulated clock: the genuine convergence alerts with
the recorded stations among its evidence, the decoys do not, and the same seed gives the
same alerts and report ids every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence.cli.main", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CONVERGENCE_DATA_DIR": str(tmp / "data")})


def _summary(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    doc: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return doc


def test_a_mixed_fleet_alerts_on_its_genuine_convergence_the_same_way_every_time(
        tmp_path: Path, mixed_fleet: Any) -> None:
    mixed = mixed_fleet(tmp_path / "fleet", n_stations=120, seed=7, horizon_s=70.0)
    db = tmp_path / "db"
    args = ("run", "--fleet", str(mixed.path), "--duration", "55", "--as-fast-as-possible", "--json")
    first = _summary(_run(*args, "--db", f"surrealkv://{db}", tmp=tmp_path))
    again = _summary(_run(*args, "--db", "mem://", tmp=tmp_path))

    assert first["clock"] == "simulated" and first["stations"] == 120 + 5
    # the synthetic stations' ground truth: the genuine convergence alerts, the decoys do not
    genuine = [e for e in mixed.scenario.genuine() if e.start_s < 55.0]
    assert first["scenario"]["genuine"] == first["scenario"]["detected"] == len(genuine) >= 1
    assert first["scenario"]["false_alarms"] == first["scenario"]["decoy_alerts"] == 0
    assert {a["region"] for a in first["alert_list"]} == {e.region for e in genuine}
    # the recorded stations are watched where the fleet file puts them: their evidence is
    # in the report of the convergence they joined, and the calm ones elsewhere are not
    (rid,) = {a["report_id"] for a in first["alert_list"] if a["region"] == mixed.genuine.region}
    shown = _run("reports", "show", rid, "--db", f"surrealkv://{db}", "--format", "json", tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    mixed.check_report(json.loads(shown.stdout))
    # same seed, same clock: the same alerts and report ids
    assert [a["alert_id"] for a in again["alert_list"]] == [a["alert_id"] for a in first["alert_list"]]
    assert again["report_ids"] == first["report_ids"]


def test_a_fleet_with_a_network_station_is_refused_on_the_simulated_clock(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[station]]\nid = "feed-1"\nsource_kind = "osint_news"\nregion = "mena"\n'
                     '[station.source]\ntype = "rss"\nurl = "http://127.0.0.1:9/feed.xml"\n')
    p = _run("run", "--fleet", str(fleet), "--duration", "5", "--as-fast-as-possible", "--db", "mem://",
             tmp=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: --as-fast-as-possible runs on a simulated clock")
    assert "feed-1" in p.stderr

"""`convergence run --fleet FILE`: a newcomer's own stations (recorded files beside synthetic
ones) on the embedded default, on a simulated clock: the genuine convergence alerts with
the recorded stations among its evidence, the decoys do not, and the same seed gives the
same alerts and report ids every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from convergence.ground_stations.fleet import SourceSpec, StationSpec, render_fleet
from convergence.schema import SourceKind


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


def _recording(folder: Path, t0: float) -> Path:
    """Six recorded stations of one region, each its own source, that surge together from
    900 to 960 s after ``t0``; one file has a bad row."""
    rng = np.random.default_rng(3)
    cats = ["politics", "economy", "sport", "weather", "health", "science", "culture", "tech"]
    plan = [("news", SourceKind.OSINT_NEWS), ("social", SourceKind.OSINT_SOCIAL),
            ("px", SourceKind.MARKET_PRICE), ("vol", SourceKind.MARKET_VOLUME),
            ("news", SourceKind.OSINT_NEWS), ("social", SourceKind.OSINT_SOCIAL)]
    specs = []
    for i, (short, kind) in enumerate(plan):
        sid, rows, price = f"rec-{short}-{i}", [], 100.0
        for t in range(1200):
            hot = 900 <= t < 960
            for dt in np.sort(rng.uniform(0, 1, int(rng.poisson(8.0 if hot else 1.0)))):
                when = round(t0 + t + float(dt), 6)
                if kind == SourceKind.MARKET_PRICE:
                    price *= float(np.exp(rng.normal(0, 0.006 if hot else 0.001)))
                    rows.append({"timestamp": when, "price": round(price, 4)})
                elif kind == SourceKind.MARKET_VOLUME:
                    volume = float(rng.integers(100, 200) * (5 if hot else 1))
                    rows.append({"timestamp": when, "volume": volume})
                else:
                    cat = "unrest" if hot and rng.random() < 0.85 else cats[int(rng.integers(8))]
                    rows.append({"timestamp": when, "category": cat, "text": f"recorded {cat} item"})
        if i == 0:
            rows.insert(5, {"timestamp": t0 + 5.5, "category": "politics", "value": "many"})
        (folder / f"{sid}.jsonl").write_bytes(b"\n".join(json.dumps(r).encode() for r in rows))
        specs.append(StationSpec(sid, kind, SourceSpec("replay", {"path": f"{sid}.jsonl", "speed": 1.0}),
                                 "mena", f"own-{sid}", f"recorded {short}", 0.5))
    path = folder / "fleet.toml"
    path.write_text(render_fleet(specs, seed=1, comment="a recording to backtest"))
    return path


def test_a_backtest_of_recorded_feeds_runs_in_recorded_time(tmp_path: Path) -> None:
    """`run --fleet --as-fast-as-possible` on recordings: the simulated clock starts where
    they do, so alerts carry the recording's times. (It started on a fixed date in January
    2026 and refused every row recorded after it as "after the station clock".)"""
    t0 = float(int(time.time() // 3600 * 3600) - 40 * 86400)  # 40 days ago, on the hour
    fleet = _recording(tmp_path, t0)
    args = ("run", "--fleet", str(fleet), "--as-fast-as-possible", "--duration", "1200",
            "--db", "mem://")
    doc = _summary(_run(*args, "--json", tmp=tmp_path))
    assert doc["events"] > 9000 and doc["late"] == 0 and doc["dead_letters"] == 1
    (cause,) = doc["dead_letter_causes"]
    assert cause["count"] == 1 and "rec-news-0.jsonl line 6" in cause["example"]
    (alert,) = [a for a in doc["alert_list"] if a["level"] == "converged"]
    assert alert["region"] == "mena" and t0 + 900 <= alert["time_s"] <= t0 + 915
    # what a person reads: the alert, and why input was refused
    text = _run(*args, tmp=tmp_path)
    assert text.returncode == 0 and "CONVERGED" in text.stdout
    assert "dead letters by cause" in text.stdout and "rec-news-0.jsonl line 6: value" in text.stdout

"""Generated recordings: rows where they say, a gap without rows, bad rows on the lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convergence.ground_stations.fleet import load_fleet
from convergence.simulation.recordings import write_recording


def test_a_recording_has_its_gap_its_surge_its_bad_rows_and_a_fleet_that_plays_it(
        tmp_path: Path) -> None:
    rec = write_recording(tmp_path, hours=2.0, t0_s=1_700_000_000.0, seed=4, stations=4,
                          surge_at_s=5000.0, gap=(600.0, 4200.0), bad_rows=[(0, 10), (2, 7)])
    news = [json.loads(line) for line in rec.files[0].read_text().splitlines()]
    times = [r["timestamp"] - rec.t0_s for r in news]
    assert times == sorted(times) and not [t for t in times if 600.0 <= t < 4200.0]
    assert sum(1 for t in times if 5000.0 <= t < 5060.0) == 8 * 60  # the surge: 8 rows a second
    assert news[9].get("value") == "many"  # line 10
    px = rec.files[2].read_text().splitlines()
    assert px[0] == "timestamp,symbol,price" and px[6].endswith(",many")  # line 7
    assert rec.rows == sum(len(f.read_text().splitlines()) for f in rec.files) - 2  # two headers
    fleet = load_fleet(rec.fleet).stations
    assert [sp.station_id for sp in fleet] == ["rec-news-0", "rec-social-1", "rec-px-2", "rec-vol-3"]
    assert {sp.region for sp in fleet} == {"mena"} and all(sp.source.type == "replay" for sp in fleet)


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    a = write_recording(tmp_path / "a", hours=0.2, t0_s=1_700_000_000.0, seed=9)
    b = write_recording(tmp_path / "b", hours=0.2, t0_s=1_700_000_000.0, seed=9)
    assert [f.read_bytes() for f in a.files] == [f.read_bytes() for f in b.files]


@pytest.mark.parametrize("bad", [{"stations": 0}, {"stations": 7}, {"hours": 0.0}])
def test_impossible_recordings_are_refused(tmp_path: Path, bad: dict[str, float]) -> None:
    args = {"hours": 1.0, "t0_s": 0.0} | bad
    with pytest.raises(ValueError, match="must be"):
        write_recording(tmp_path, **args)  # type: ignore[arg-type]

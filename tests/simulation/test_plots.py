"""The campaign's PNG plots (simulation/plots.py)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from convergence.simulation.campaign import ParamSpace, run_campaign
from convergence.simulation.plots import PlotError, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


@pytest.mark.parametrize("sweep", [False, True])
def test_three_pngs_of_a_campaign(tmp_path: Path, sweep: bool) -> None:
    space = ParamSpace(warning=(50.0, 60.0), window_ticks=(8,), pattern_weight=(0.5,))
    res = run_campaign(["simultaneous", "lone-surge", "pure-noise"], runs=4, seed=1, workers=1,
                       chunk=4, sweep=sweep, space=space)
    ttd = [t for r in res.records for t in r.ttd_ticks]
    assert ttd
    paths = write_plots(res.summary(), ttd, tmp_path / "plots")
    assert [p.name for p in paths] == ["detection_and_false_alarms.png", "tradeoff.png",
                                       "time_to_detect.png"]
    for p in paths:
        w, h = _size(p)
        assert w >= 400 and h >= 200 and p.stat().st_size > 5_000
    # the per-scenario chart grows with the scenarios it lists
    assert _size(paths[0])[0] > _size(paths[1])[0]


def test_a_decoys_only_campaign_plots_with_nothing_to_detect(tmp_path: Path) -> None:
    res = run_campaign(["pure-noise"], runs=2, seed=1, workers=1)
    paths = write_plots(res.summary(), [], tmp_path)
    assert len(paths) == 3 and all(p.exists() for p in paths)


def test_without_matplotlib_the_error_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    res = run_campaign(["pure-noise"], runs=1, seed=1, workers=1)
    with pytest.raises(PlotError, match=r"pip install 'convergence\[plot\]'.*--out"):
        write_plots(res.summary(), [], tmp_path)
    assert not list(tmp_path.iterdir())

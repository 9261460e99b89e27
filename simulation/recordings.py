"""Recorded feeds to backtest: files of rows as a real recorder writes them, generated.

:func:`write_recording` writes ``hours`` of rows for a few replay stations of one region
(CSV or JSON Lines, one row a second per station by default) and the fleet file that
plays them, so a backtest (``convergence run --fleet F --as-fast-as-possible``) can be
measured on a recording of any length without committing one. The stations surge
together at ``surge_at_s`` (for ``surge_s`` seconds), so a month-long recording still has
a convergence to find; ``gap`` leaves a stretch of the recording without a row (a
recorder that was down), which a backtest must cross at no cost. Everything random
flows from ``seed``; rows are written in chunks, so a month takes little memory.

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> rec = write_recording(folder, hours=0.5, t0_s=1_700_000_000.0, seed=1)
>>> rec.rows  # 1,800 s of 5 stations, and 8 rows a second in the minute of the surge
11100
>>> [p.name for p in rec.files]
['rec-news-0.jsonl', 'rec-social-1.jsonl', 'rec-px-2.csv', 'rec-vol-3.csv', 'rec-news-4.jsonl']
>>> rec.files[2].read_text().splitlines()[:2]
['timestamp,symbol,price', '1700000000.0,ACME,100.0000']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from convergence.ground_stations.fleet import SourceSpec, StationSpec, render_fleet
from convergence.schema import SourceKind

__all__ = ["Recording", "write_recording"]

#: the stations a recording has, in order: (short name, kind, file format)
PLAN: tuple[tuple[str, SourceKind, str], ...] = (
    ("news", SourceKind.OSINT_NEWS, "jsonl"), ("social", SourceKind.OSINT_SOCIAL, "jsonl"),
    ("px", SourceKind.MARKET_PRICE, "csv"), ("vol", SourceKind.MARKET_VOLUME, "csv"),
    ("news", SourceKind.OSINT_NEWS, "jsonl"), ("social", SourceKind.OSINT_SOCIAL, "jsonl"),
)
CATEGORIES = ("politics", "economy", "sport", "weather", "health", "science", "culture", "tech")
#: rows generated (and written) per chunk
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class Recording:
    """What :func:`write_recording` wrote."""

    fleet: Path
    files: list[Path]
    rows: int
    t0_s: float
    duration_s: float


def _chunk(kind: SourceKind, t: npt.NDArray[np.float64], hot: npt.NDArray[np.bool_],
           rng: np.random.Generator, price: float, first: bool) -> tuple[bytes, float]:
    """One chunk of rows as file bytes (and the price it ends on)."""
    if kind == SourceKind.MARKET_PRICE:
        steps = rng.normal(0.0, np.where(hot, 0.006, 0.001))
        if first:
            steps[0] = 0.0  # the recording opens at the price it was given
        prices = price * np.exp(np.cumsum(steps))
        lines = [f"{a!r},ACME,{b:.4f}" for a, b in zip(t.tolist(), prices.tolist(), strict=True)]
        return ("\n".join(lines) + "\n").encode(), float(prices[-1])
    if kind == SourceKind.MARKET_VOLUME:
        vols = rng.integers(100, 200, len(t)) * np.where(hot, 5, 1)
        lines = [f"{a!r},ACME,{b}" for a, b in zip(t.tolist(), vols.tolist(), strict=True)]
        return ("\n".join(lines) + "\n").encode(), price
    cats = rng.integers(0, len(CATEGORIES), len(t))
    unrest = hot & (rng.random(len(t)) < 0.85)
    names = [("unrest" if u else CATEGORIES[c]) for c, u in zip(cats.tolist(), unrest.tolist(),
                                                                 strict=True)]
    lines = [f'{{"timestamp": {a!r}, "category": "{c}", "text": "recorded {c} item"}}'
             for a, c in zip(t.tolist(), names, strict=True)]
    return ("\n".join(lines) + "\n").encode(), price


def write_recording(folder: Path, *, hours: float, t0_s: float, seed: int = 0, stations: int = 5,
                    rows_per_s: float = 1.0, surge_at_s: float | None = None, surge_s: float = 60.0,
                    surge_factor: float = 8.0, gap: tuple[float, float] | None = None,
                    bad_rows: Sequence[tuple[int, int]] = (), region: str = "mena") -> Recording:
    """Write ``hours`` of rows for ``stations`` replay stations (at most 6) and their fleet file.

    Rows come ``rows_per_s`` a second per station, evenly spaced (``surge_factor`` times
    as many during the surge, which starts ``surge_at_s`` after ``t0_s``; default: half-way).
    ``gap`` = (start, end) seconds after ``t0_s`` with no rows. ``bad_rows`` = (station
    index, line number) pairs whose row gets a value that is not a number.
    """
    if not 1 <= stations <= len(PLAN):
        raise ValueError(f"stations must be 1..{len(PLAN)}, got {stations}")
    if hours <= 0 or rows_per_s <= 0:
        raise ValueError(f"hours and rows_per_s must be > 0, got {hours}, {rows_per_s}")
    folder.mkdir(parents=True, exist_ok=True)
    duration_s = hours * 3600.0
    surge_at = duration_s / 2 if surge_at_s is None else surge_at_s
    rng = np.random.default_rng(seed)
    specs, files, total = [], [], 0
    step = 1.0 / rows_per_s
    for i, (short, kind, fmt) in enumerate(PLAN[:stations]):
        sid = f"rec-{short}-{i}"
        path = folder / f"{sid}.{fmt}"
        bad = sorted(line for st, line in bad_rows if st == i)
        price, line_no = 100.0, 0
        with path.open("wb") as fh:
            if fmt == "csv":
                fh.write(b"timestamp,symbol,price\n" if kind == SourceKind.MARKET_PRICE
                         else b"timestamp,symbol,volume\n")
                line_no = 1
            start = 0.0
            while start < duration_s:
                end = min(start + CHUNK_ROWS * step, duration_s)
                t = np.arange(start, end, step)
                hot_n = np.arange(start, end, step / surge_factor)
                hot_n = hot_n[(hot_n >= surge_at) & (hot_n < surge_at + surge_s)]
                t = np.union1d(t, hot_n)
                if gap is not None:
                    t = t[(t < gap[0]) | (t >= gap[1])]
                start = end
                if not len(t):
                    continue
                hot = (t >= surge_at) & (t < surge_at + surge_s)
                data, price = _chunk(kind, np.round(t0_s + t, 6), hot, rng, price,
                                     first=line_no <= 1)
                lines = data.split(b"\n")[:-1]
                for n in bad:
                    k = n - line_no - 1
                    if 0 <= k < len(lines):
                        lines[k] = (lines[k].rsplit(b",", 1)[0] + b",many" if fmt == "csv"
                                    else lines[k].replace(b'"category"', b'"value": "many", "category"'))
                line_no += len(lines)
                total += len(lines)
                fh.write(b"\n".join(lines) + b"\n")
        files.append(path)
        specs.append(StationSpec(sid, kind, SourceSpec("replay", {"path": path.name, "speed": 1.0}),
                                 region, f"own-{sid}", f"recorded {short}", 0.5))
    fleet = folder / "fleet.toml"
    fleet.write_text(render_fleet(specs, seed=seed, comment=f"{hours:g} h of generated recordings"))
    return Recording(fleet, files, total, t0_s, duration_s)

#!/usr/bin/env python3
"""Regenerate the labelled development corpus: ``python3 evaluation/corpus/regenerate.py``.

One script does it all. ``timeeval-gutentag`` pins ``scipy<1.15``, which the project's
own environment must not be bound by, so on first use this script creates a side
environment (``.build/gutentag-venv``, from ``requirements.txt`` beside it: GutenTAG and
statsmodels at pinned versions) and re-runs itself there. It then

1. expands ``corpus.toml`` into a GutenTAG generation config (written beside the data as
   ``gutentag.yaml``, so what was generated can be read) and generates one labelled
   series per entry;
2. lays each series on a realistic clock: 15-minute rows with jitter, weekly
   seasonality (a weekend level), a random scale and offset, heavy-tailed noise, gaps,
   duplicate rows (re-sent and re-measured) and rows out of order;
3. adds the real public series shipped in statsmodels that have a documented break
   (the Nile's 1898 shift, the very strong El Ninos, the US recessions);
4. splits every kind into a *tune* half and a *held-out* half with a seeded shuffle and
   records the split, with what was done to each series, in ``manifest.json``.

Every random choice flows from ``seed`` in ``corpus.toml``: the same config gives the
same bytes. Output: ``evaluation/corpus/data/`` (or ``--out DIR``), one
``timestamp,value,is_anomaly`` CSV per series.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SIDE_VENV = ROOT / ".build" / "gutentag-venv"
REALISM = {
    "jitter_s": 60.0,          # sd of the sampling jitter
    "weekend_level": (0.3, 0.8),  # weekend shift, in units of the base amplitude
    "t_noise": 0.04,           # scale of Student-t(3) noise, in base amplitudes
    "gaps": (1, 3),            # number of gaps per series
    "gap_rows": (8, 120),
    "dup_share": 0.006,        # rows re-sent (same timestamp)
    "reorder_share": 0.004,    # rows that arrive up to 4 rows late
}


def _in_side_env() -> bool:
    return Path(sys.prefix).resolve() == SIDE_VENV.resolve()


def _bootstrap(argv: list[str]) -> int:
    """Create the side environment if needed and run this script inside it."""
    py = SIDE_VENV / "bin" / "python"
    stamp = SIDE_VENV / ".requirements"
    wanted = (HERE / "requirements.txt").read_text()
    if not py.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print(f"creating {SIDE_VENV} (GutenTAG pins scipy<1.15; kept apart from .venv)", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(SIDE_VENV)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
                       check=True)
        stamp.write_text(wanted)
    return subprocess.run([str(py), str(Path(__file__).resolve()), *argv], check=False).returncode


def _gutentag_config(spec: dict[str, Any], rng: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Expand corpus.toml into GutenTAG's config and one record per series."""
    entries: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    length = int(spec["length"])
    lo = int(spec["warmup_rows"])
    for kind, k in spec["kinds"].items():
        for i in range(int(spec["series_per_kind"])):
            base_name = k["bases"][i % len(k["bases"])]
            base = dict(spec["bases"][base_name])
            params = dict(k["params"][i % len(k["params"])])
            alen = int(k["lengths"][i % len(k["lengths"])])
            # noise as a share of the amplitude: some quiet, some noisy series
            base["variance"] = float(round(rng.choice([0.02, 0.05, 0.1]), 3))
            channels = 1
            if base["kind"] == "random-mode-jump":
                channels = 2
                base["random-seed"] = int(rng.integers(1, 2**31))
            start = int(rng.integers(lo, length - alen - 150))
            anomaly = {"exact-position": start, "length": alen, "channel": 0,
                       "kinds": [{"kind": kind, **_kind_params(kind, base["kind"], params)}]}
            name = f"{kind}-{base_name}-{i}"
            entries.append({"name": name, "length": length, "channels": channels,
                            "semi-supervised": False, "supervised": False,
                            "base-oscillation": base, "anomalies": [anomaly]})
            records.append({"name": name, "kind": kind, "base": base_name,
                            "anomaly": anomaly["kinds"][0], "anomaly_rows": [start, start + alen]})
    return {"timeseries": entries}, records


def _kind_params(kind: str, base_kind: str, params: dict[str, Any]) -> dict[str, Any]:
    if kind != "pattern":
        return params
    key = {"sine": "sinusoid_k", "cosine": "sinusoid_k", "square": "square_duty",
           "sawtooth": "sawtooth_width", "cylinder-bell-funnel": "cbf_pattern_factor"}[base_kind]
    return {key: params[key]}


Rows = list[tuple[int, float, int]]


def _realistic(values: Any, labels: Any, rng: Any, spec: dict[str, Any]) -> tuple[Rows, dict[str, Any]]:
    """Lay one generated series on a realistic clock; returns rows and what was done."""
    import numpy as np

    n = values.shape[0]
    t0 = dt.datetime.fromisoformat(spec["start"].replace("Z", "+00:00")).timestamp()
    t0 += int(rng.integers(0, 7)) * 86_400  # start on any weekday
    step = float(spec["sampling_s"])
    t = t0 + np.arange(n) * step + np.clip(rng.normal(0.0, REALISM["jitter_s"], n), -step / 3, step / 3)
    t = np.round(t)
    amp = max(float(np.std(values)), 1e-3)
    # weekly seasonality: weekends sit lower (Monday 00:00 UTC anchors the week)
    weekday = ((t // 86_400) + 3) % 7  # 1970-01-01 was a Thursday
    wk = rng.uniform(*REALISM["weekend_level"]) * amp
    x = values - wk * (weekday >= 5)
    x = x + REALISM["t_noise"] * amp * rng.standard_t(3, n)
    scale = float(10 ** rng.uniform(-1, 3))
    offset = float(rng.uniform(-1, 5)) * scale * amp * 10
    x = offset + scale * x
    keep = np.ones(n, bool)
    anomalous = np.flatnonzero(labels)
    a0, a1 = (int(anomalous.min()), int(anomalous.max())) if anomalous.size else (n, n)
    n_gaps = int(rng.integers(REALISM["gaps"][0], REALISM["gaps"][1] + 1))
    gaps = []
    for _ in range(n_gaps):
        g = int(rng.integers(*REALISM["gap_rows"]))
        s = int(rng.integers(50, n - g - 1))
        if s + g >= a0 - 20 and s <= a1 + 20:  # a gap never hides the anomaly
            continue
        keep[s:s + g] = False
        gaps.append([s, g])
    idx = np.flatnonzero(keep)
    rows = [(int(t[i]), float(x[i]), int(labels[i])) for i in idx]
    # duplicates: half re-sent as they were, half re-measured (same time, other value)
    n_dup = int(len(rows) * REALISM["dup_share"])
    dup_at = sorted(rng.choice(len(rows), n_dup, replace=False).tolist(), reverse=True)
    for j, d in enumerate(dup_at):
        ts, v, lab = rows[d]
        v2 = v if j % 2 == 0 else v + float(rng.normal(0.0, 0.05 * scale * amp))
        rows.insert(d + 1, (ts, v2, lab))
    n_late = int(len(rows) * REALISM["reorder_share"])
    for d in rng.choice(np.arange(5, len(rows)), n_late, replace=False).tolist():
        back = int(rng.integers(1, 5))
        rows.insert(d - back, rows.pop(d))
    done = {"scale": scale, "offset": offset, "weekend_level": wk * scale, "gaps": gaps,
            "duplicates": n_dup, "late_rows": n_late}
    return rows, done


def _real_series(name: str, cfg: dict[str, Any]) -> list[tuple[str, float, int]]:
    import statsmodels.api as sm

    data = getattr(sm.datasets, cfg["dataset"]).load_pandas().data
    if cfg["dataset"] == "nile":
        stamps = [f"{int(y)}-01-01" for y in data["year"]]
        vals = list(data[cfg["column"]])
    elif cfg["dataset"] == "elnino":
        months = list(data.columns[1:])
        stamps, vals = [], []
        for _, row in data.iterrows():
            for m, mon in enumerate(months, start=1):
                stamps.append(f"{int(row['YEAR'])}-{m:02d}-01")
                vals.append(float(row[mon]))
    else:
        stamps = [f"{int(y)}-{3 * (int(q) - 1) + 1:02d}-01" for y, q in zip(data["year"], data["quarter"],
                                                                           strict=True)]
        vals = list(data[cfg["column"]])
    spans = [(a, b) for a, b in cfg["labels"]]
    return [(s, float(v), int(any(a <= s <= b for a, b in spans))) for s, v in zip(stamps, vals, strict=True)]


def generate(out: Path) -> None:
    """Build the corpus into ``out`` (runs inside the side environment)."""
    import numpy as np
    import yaml
    from gutenTAG import GutenTAG

    spec = tomllib.loads((HERE / "corpus.toml").read_text())
    rng = np.random.default_rng(int(spec["seed"]))
    config, records = _gutentag_config(spec, rng)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.csv"):
        old.unlink()
    (out / "gutentag.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ.setdefault("TQDM_DISABLE", "1")
    gt = GutenTAG(seed=int(spec["seed"]))
    gt.load_config_dict(config)
    generated = gt.generate(return_timeseries=True) or []
    by_name = {ts.name: ts for ts in generated}
    manifest: list[dict[str, Any]] = []
    for rec in records:
        df = by_name[rec["name"]].timeseries
        values = df["value-0"].to_numpy(dtype=float)
        labels = df["is_anomaly"].to_numpy(dtype=int) if "is_anomaly" in df else df["is_anomaly-0"].to_numpy()
        rows, done = _realistic(values, labels, rng, spec)
        _write(out / f"{rec['name']}.csv", [(str(t), v, lab) for t, v, lab in rows])
        manifest.append({**rec, "file": f"{rec['name']}.csv", "rows": len(rows), "source": "GutenTAG",
                         "realism": done})
    for name, cfg in spec["real"].items():
        rows_r = _real_series(name, cfg)
        _write(out / f"real-{name}.csv", rows_r)
        manifest.append({"name": f"real-{name}", "kind": f"real-{name}", "base": "real",
                         "file": f"real-{name}.csv", "rows": len(rows_r),
                         "source": f"statsmodels.datasets.{cfg['dataset']}", "note": cfg["note"]})
    # the split: per kind (the three real series as one group), a seeded shuffle, half tune
    split_rng = np.random.default_rng(int(spec["seed"]) + 1)
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in manifest:
        groups.setdefault("real" if m["base"] == "real" else m["kind"], []).append(m)
    for members in groups.values():
        order = split_rng.permutation(len(members))
        for rank, j in enumerate(order):
            members[int(j)]["split"] = "tune" if rank < len(members) // 2 else "held-out"
    (out / "manifest.json").write_text(json.dumps(
        {"seed": spec["seed"], "generator": "evaluation/corpus/regenerate.py",
         "columns": ["timestamp", "value", "is_anomaly"], "series": manifest}, indent=1) + "\n")
    sizes = sum(p.stat().st_size for p in out.glob("*.csv"))
    print(f"wrote {len(manifest)} series ({sizes / 1e6:.2f} MB) to {out}", file=sys.stderr)


def _write(path: Path, rows: list[tuple[str, float, int]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "value", "is_anomaly"])
        for t, v, lab in rows:
            w.writerow([t, f"{v:.6g}", lab])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=HERE / "data", help="output folder")
    ns = ap.parse_args(args)
    if not _in_side_env():
        return _bootstrap(args)
    generate(ns.out.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

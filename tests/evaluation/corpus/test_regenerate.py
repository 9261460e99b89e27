"""The corpus script's own logic (GutenTAG itself runs only in its side environment)."""

from __future__ import annotations

import importlib.util
import itertools
import tomllib
from pathlib import Path
from types import ModuleType

import numpy as np

SCRIPT = Path(__file__).resolve().parents[3] / "evaluation" / "corpus" / "regenerate.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_expands_every_kind_with_anomalies_after_the_warmup() -> None:
    mod = _script()
    spec = tomllib.loads((SCRIPT.parent / "corpus.toml").read_text())
    a, recs = mod._gutentag_config(spec, np.random.default_rng(spec["seed"]))
    b, _ = mod._gutentag_config(spec, np.random.default_rng(spec["seed"]))
    assert a == b  # seeded
    assert len(a["timeseries"]) == len(spec["kinds"]) * spec["series_per_kind"]
    for ts, rec in zip(a["timeseries"], recs, strict=True):
        start, end = rec["anomaly_rows"]
        assert spec["warmup_rows"] <= start < end <= spec["length"]
        assert ts["anomalies"][0]["kinds"][0]["kind"] == rec["kind"]


def test_realism_keeps_labels_and_adds_gaps_duplicates_and_late_rows() -> None:
    mod = _script()
    spec = tomllib.loads((SCRIPT.parent / "corpus.toml").read_text())
    n = 2400
    values = np.sin(2 * np.pi * np.arange(n) / 96)
    labels = np.zeros(n, int)
    labels[1500:1600] = 1
    rows, done = mod._realistic(values, labels, np.random.default_rng(1), spec)
    stamps = [r[0] for r in rows]
    assert sum(r[2] for r in rows) >= 100  # no gap hides the anomaly; duplicates add rows
    assert done["duplicates"] > 0 and done["late_rows"] > 0 and done["gaps"]
    assert len(stamps) - len(set(stamps)) == done["duplicates"]
    assert any(b < a for a, b in itertools.pairwise(stamps))  # some out of order
    again, _ = mod._realistic(values, labels, np.random.default_rng(1), spec)
    assert again == rows

"""Running methods over a split: per-kind rows, thresholds from the tune split only."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.evaluation.corpus import LabelledSeries
from convergence.evaluation.report import evaluate, markdown_table
from convergence.models.series import Series


def _series(name: str, kind: str, split: str, seed: int, shift_at: int | None) -> LabelledSeries:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, 400)
    lab = np.zeros(400, np.int64)
    if shift_at is not None:
        x[shift_at:shift_at + 10] += 9
        lab[shift_at:shift_at + 10] = 1
    t = np.arange(400) * 900.0
    return LabelledSeries(name, kind, split, Series(t, x, tuple(map(str, t)), labels=lab))


def test_rows_per_kind_then_overall() -> None:
    corpus = [_series("a", "mean", "tune", 0, 300), _series("b", "mean", "held-out", 1, 250),
              _series("c", "extremum", "held-out", 2, 320)]
    res = evaluate(corpus, "all", ["ours", "zscore"])
    assert [r.kind for r in res.rows] == ["extremum", "mean", "overall"]
    assert [r.series for r in res.rows] == [1, 2, 3]
    overall = res.rows[-1].scores
    assert overall["ours"].events.windows == 3 and 0 <= overall["ours"].vus_pr <= 1
    table = markdown_table(res)
    assert table.count("\n") == 4 and "| **overall** | 3 |" in table
    d = res.as_dict()
    assert d["threshold_chosen_on"] == "tune" and set(d["thresholds"]) == {"ours", "zscore"}


def test_held_out_labels_never_move_the_thresholds() -> None:
    tune = [_series("a", "mean", "tune", 0, 300)]
    held = [_series("b", "mean", "held-out", 1, 250)]
    lab = np.zeros(400, np.int64)
    lab[120:130] = 1  # the same values, labelled elsewhere
    s = held[0].series
    flipped = [LabelledSeries("b", "mean", "held-out", Series(s.timestamps, s.values, s.text, labels=lab))]
    r1 = evaluate(held, "held-out", ["zscore"], tune=tune)
    r2 = evaluate(flipped, "held-out", ["zscore"], tune=tune)
    assert r1.thresholds == r2.thresholds


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        evaluate([_series("a", "mean", "tune", 0, 300)], "tune", ["nope"])

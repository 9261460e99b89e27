"""Running every method on a corpus split and tabulating both measures per anomaly kind.

VUS-PR is threshold-free and averaged over a kind's series. The event score needs an
alarm threshold per method: it is chosen **on the tune split only** (the threshold,
among the pooled tune scores' quantiles in :data:`QUANTILES`, with the best overall
event score) and then applied unchanged to the split being reported, so held-out
figures never see held-out labels. Reporting the held-out split therefore scores the
tune split too.

Examples
--------
>>> import numpy as np
>>> from convergence.models.series import Series
>>> from convergence.evaluation.corpus import LabelledSeries
>>> lab = np.zeros(300, np.int64); lab[200:210] = 1
>>> x = np.random.default_rng(1).normal(0, 1, 300) + 8 * lab
>>> s = Series(np.arange(300.0) * 900, x, tuple(map(str, range(300))), labels=lab)
>>> res = evaluate([LabelledSeries("a", "mean", "tune", s)], "tune", ["zscore"])
>>> row = res.rows[-1]
>>> row.kind, row.series, row.scores["zscore"].vus_pr > 0.5, row.scores["zscore"].detected
('overall', 1, True, 1)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergence.evaluation.corpus import LabelledSeries
from convergence.evaluation.methods import BATCHED, METHODS, Array
from convergence.evaluation.metrics import EventCounts, event_counts, sliding_window, vus_pr

__all__ = ["QUANTILES", "Evaluation", "KindRow", "MethodScore", "evaluate", "markdown_table"]

QUANTILES = (0.95, 0.97, 0.98, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9998)


@dataclass
class MethodScore:
    """One method on one kind: mean VUS-PR and event tallies at the method's threshold."""

    vus_pr: float
    events: EventCounts

    @property
    def event_score(self) -> float:
        return self.events.score()

    @property
    def detected(self) -> int:
        return self.events.detected

    def as_dict(self) -> dict[str, Any]:
        delays = self.events.delays
        return {"vus_pr": _r(self.vus_pr), "event_score": _r(self.event_score),
                "windows": self.events.windows, "detected": self.events.detected,
                "false_positives": self.events.false_positives,
                "median_delay_rows": float(np.median(delays)) if delays else None}


@dataclass
class KindRow:
    """A table row: one anomaly kind (or ``overall``) and every method's figures."""

    kind: str
    series: int
    scores: dict[str, MethodScore]


@dataclass
class Evaluation:
    """The whole result: rows per kind then ``overall``, thresholds and timings."""

    split: str
    methods: list[str]
    rows: list[KindRow]
    thresholds: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "methods": self.methods,
                "thresholds": {m: _r(t, 6) for m, t in self.thresholds.items()},
                "threshold_chosen_on": "tune",
                "seconds": {m: round(s, 2) for m, s in self.seconds.items()},
                "rows": [{"kind": r.kind, "series": r.series,
                          "methods": {m: s.as_dict() for m, s in r.scores.items()}} for r in self.rows]}


def _r(x: float, nd: int = 4) -> float | None:
    return None if not np.isfinite(x) else round(float(x), nd)


def _scores(corpus: Sequence[LabelledSeries], methods: Sequence[str],
            seconds: dict[str, float]) -> dict[str, list[Array]]:
    out: dict[str, list[Array]] = {m: [] for m in methods}
    for m in methods:
        fn = METHODS[m]
        t0 = time.perf_counter()
        if m in BATCHED:
            raw = BATCHED[m]([(s.series.values, s.series.timestamps) for s in corpus])
        else:
            raw = [fn(s.series.values, s.series.timestamps) for s in corpus]
        for sc in raw:
            out[m].append(np.nan_to_num(np.asarray(sc, np.float64), nan=0.0,
                                        posinf=np.finfo(np.float64).max))
        seconds[m] = seconds.get(m, 0.0) + time.perf_counter() - t0
    return out


def _best_threshold(corpus: Sequence[LabelledSeries], scores: list[Array]) -> float:
    pooled = np.concatenate(scores)
    best, best_t = -np.inf, float(np.quantile(pooled, QUANTILES[-1]))
    for q in QUANTILES:
        t = float(np.quantile(pooled, q))
        total = EventCounts()
        for s, sc in zip(corpus, scores, strict=True):
            total = total + event_counts(s.labels, sc >= t)
        if total.score() > best:
            best, best_t = total.score(), t
    return best_t


def evaluate(corpus: Sequence[LabelledSeries], split: str, methods: Sequence[str],
             tune: Sequence[LabelledSeries] | None = None,
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Score ``methods`` on ``corpus`` (already the split), thresholds from ``tune``.

    ``tune`` defaults to the members of ``corpus`` whose split is ``tune``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    seconds: dict[str, float] = {}
    tune_set = list(tune) if tune is not None else [s for s in corpus if s.split == "tune"]
    if progress:
        progress(f"scoring {len(corpus)} series with {', '.join(methods)}")
    scores = _scores(corpus, methods, seconds)
    if tune is None:
        tune_scores = {m: [sc for s, sc in zip(corpus, scores[m], strict=True) if s.split == "tune"]
                       for m in methods}
    else:
        if progress:
            progress(f"scoring {len(tune_set)} tune series to choose alarm thresholds")
        tune_scores = _scores(tune_set, methods, seconds)
    thresholds = {m: _best_threshold(tune_set, tune_scores[m]) if tune_set else float("nan")
                  for m in methods}
    windows = [sliding_window(s.series.values) for s in corpus]
    kinds = sorted({s.kind for s in corpus}, key=lambda k: (k.startswith("real"), k))
    rows: list[KindRow] = []
    per_series: dict[str, list[tuple[float, EventCounts]]] = {m: [] for m in methods}
    for m in methods:
        for s, sc, w in zip(corpus, scores[m], windows, strict=True):
            ev = event_counts(s.labels, sc >= thresholds[m]) if np.isfinite(thresholds[m]) else EventCounts()
            per_series[m].append((vus_pr(s.labels, sc, w), ev))
    for kind in [*kinds, "overall"]:
        idx = [i for i, s in enumerate(corpus) if kind in ("overall", s.kind)]
        row = KindRow(kind, len(idx), {})
        for m in methods:
            vus = [per_series[m][i][0] for i in idx]
            vus = [v for v in vus if np.isfinite(v)]
            ev = EventCounts()
            for i in idx:
                ev = ev + per_series[m][i][1]
            row.scores[m] = MethodScore(float(np.mean(vus)) if vus else float("nan"), ev)
        rows.append(row)
    return Evaluation(split, list(methods), rows, thresholds, seconds)


def markdown_table(ev: Evaluation) -> str:
    """The table as Markdown: per kind, VUS-PR then event score for every method."""
    ms = ev.methods
    head = (["kind", "series"] + [f"VUS-PR {m}" for m in ms] + [f"event {m}" for m in ms]
            + [f"caught {m}" for m in ms])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ev.rows:
        best_v = max((r.scores[m].vus_pr for m in ms if np.isfinite(r.scores[m].vus_pr)), default=np.nan)
        best_e = max((r.scores[m].event_score for m in ms if np.isfinite(r.scores[m].event_score)),
                     default=np.nan)
        cells = [f"**{r.kind}**" if r.kind == "overall" else r.kind, str(r.series)]
        for m in ms:
            v = r.scores[m].vus_pr
            cells.append(_cell(v, v == best_v))
        for m in ms:
            e = r.scores[m].event_score
            cells.append(_cell(e, e == best_e))
        for m in ms:
            c = r.scores[m].events
            cells.append(f"{c.detected}/{c.windows}, {c.false_positives} FP")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(x: float, best: bool) -> str:
    if not np.isfinite(x):
        return "–"
    return f"**{x:.3f}**" if best else f"{x:.3f}"

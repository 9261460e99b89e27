"""The two measures the evaluation reports: VUS-PR and an event-level score.

**VUS-PR** is the volume under the range-precision/recall surface of Paparrizos et al.
("Volume Under the Surface", VLDB 2022), exactly as the TSB-AD benchmark computes it
(``TSB_AD.evaluation.basic_metrics.basic_metricor.RangeAUC_volume_opt``, version 1.5):
labels are widened by a soft buffer of every width ``0 .. window`` (the buffer's weight
falls as ``sqrt(1 - d / w)`` with the distance ``d`` from the labelled range), a
range-aware precision and recall (recall times the share of ranges touched) are taken at
250 thresholds spread over the sorted scores, and the average precision of each width is
averaged over the widths. It is threshold-free and rewards a score that rises *near* a
labelled range, not only on it. :func:`vus_pr` is a numpy port, vectorised over the
thresholds; ``tests/evaluation/test_metrics.py`` pins it to values the TSB-AD package
itself printed. ``window`` is TSB-AD's ``find_length_rank(values, rank=1)``: the
series' dominant period from its autocorrelation (:func:`sliding_window`).

**Event score** asks what an on-call person sees when alarms (``score >= threshold``)
page them. Each labelled range opens a *window* from its first row to its last row plus
its own length again (at least ``min_tolerance_rows``), since a change is often only
certain after it has begun. The first alarm in a window earns
``1 - 0.5 * delay / window_length`` (1 at the first labelled row, 0.5 at the window's
end); a missed window earns 0. Every alarm outside all windows is a false positive and
costs ``fp_cost`` (0.11, the standard-profile false-positive weight of the Numenta
Anomaly Benchmark); an alarm that stays on outside a window pages again every
``fp_run_rows`` rows. ``score = (rewards - fp_cost * false_positives) / windows``:
1 is every window caught on its first row with no false alarm, 0 is a detector that
never alarms, below 0 costs more than it finds. Counts add across series
(:class:`EventCounts`), so a kind's score is over all its windows.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros(40, int); labels[20:25] = 1
>>> perfect = labels.astype(float)
>>> round(vus_pr(labels, perfect, window=4), 3), round(vus_pr(labels, np.zeros(40), window=4), 3)
(1.0, 0.156)
>>> alarms = np.zeros(40, bool); alarms[22] = True; alarms[5] = True
>>> c = event_counts(labels, alarms)
>>> c.windows, c.detected, c.false_positives, round(c.score(), 3)
(1, 1, 1, 0.79)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["EventCounts", "event_counts", "label_ranges", "sliding_window", "vus_pr"]

Array = npt.NDArray[np.float64]

#: false-positive weight of NAB's standard profile
FP_COST = 0.11


def label_ranges(labels: npt.ArrayLike) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` row ranges where ``labels`` is 1.

    >>> label_ranges([0, 1, 1, 0, 1])
    [(1, 2), (4, 4)]
    """
    lab = np.asarray(labels).astype(np.int8)
    d = np.diff(np.r_[0, lab, 0])
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _merged_ranges(seq: list[tuple[int, int]], n: int, window: int) -> list[tuple[int, int]]:
    """TSB-AD's ``new_sequence``: ranges widened by ``window // 2``, overlaps merged."""
    half = window // 2
    a = max(seq[0][0] - half, 0)
    out: list[tuple[int, int]] = []
    for i in range(len(seq) - 1):
        if seq[i][1] + half < seq[i + 1][0] - half:
            out.append((a, seq[i][1] + half))
            a = seq[i + 1][0] - half
    out.append((a, min(seq[-1][1] + half, n - 1)))
    return out


def _soft_labels(labels: npt.NDArray[np.int64], seq: list[tuple[int, int]], window: int) -> Array:
    """TSB-AD's ``sequencing``: labels plus a soft buffer of width ``window // 2``."""
    out = labels.astype(np.float64).copy()
    n = out.shape[0]
    half = window // 2
    for s, e in seq:
        x1 = np.arange(e + 1, min(e + half + 1, n))
        out[x1] += np.sqrt(1 - (x1 - e) / window)
        x2 = np.arange(max(s - half, 0), s)
        out[x2] += np.sqrt(1 - (s - x2) / window)
    return np.minimum(out, 1.0)


def vus_pr(labels: npt.ArrayLike, score: npt.ArrayLike, window: int, thresholds: int = 250) -> float:
    """VUS-PR of ``score`` against 0/1 ``labels`` (see the module docstring); NaN without anomalies."""
    lab = np.asarray(labels).astype(np.int64)
    sc = np.asarray(score, dtype=np.float64)
    if lab.shape != sc.shape or lab.ndim != 1:
        raise ValueError(f"labels and score must be 1-D and equally long, got {lab.shape}, {sc.shape}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    n = lab.shape[0]
    seq = label_ranges(lab)
    if not seq:
        return float("nan")
    sc = np.nan_to_num(sc, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    positives = float(lab.sum())
    in_seq = lab.astype(np.float64)
    mask_l = np.zeros(n)
    for a, b in _merged_ranges(seq, n, window):
        mask_l[a:b + 1] = 1.0
    ranked = -np.sort(-sc)
    cut = ranked[np.linspace(0, n - 1, thresholds).astype(int)]
    pred = (sc[None, :] >= cut[:, None]).astype(np.float64)  # (thresholds, n)
    n_pred = pred.sum(axis=1)
    csum = np.concatenate([np.zeros((thresholds, 1)), np.cumsum(pred, axis=1)], axis=1)
    aps = np.zeros(window + 1)
    for w in range(window + 1):
        soft = _soft_labels(lab, seq, w)
        segs = _merged_ranges(seq, n, w)
        starts = np.array([s for s, _ in segs])
        ends = np.array([e for _, e in segs])
        existence = ((csum[:, ends + 1] - csum[:, starts]) > 0).sum(axis=1)
        gain = mask_l * np.where(in_seq > 0, 1.0, soft)
        extra = mask_l * (1.0 - in_seq) * soft
        tp = pred @ gain
        n_labels = positives + pred @ extra
        p_new = (positives + n_labels) / 2.0
        recall = np.minimum(tp / p_new, 1.0)
        tpr = recall * existence / len(segs)
        precision = tp / n_pred
        tpr_all = np.r_[0.0, tpr]
        aps[w] = float(np.dot(tpr_all[1:] - tpr_all[:-1], precision))
    return float(aps.mean())


def sliding_window(values: npt.ArrayLike, *, default: int = 125) -> int:
    """TSB-AD's ``find_length_rank(values, rank=1)``: the dominant period from the ACF.

    The highest local maximum of the autocorrelation at lags 3..400 (plus 3); ``default``
    when there is none or it lies outside 3..300.

    >>> import numpy as np
    >>> sliding_window(np.sin(2 * np.pi * np.arange(2000) / 48))
    48
    """
    x = np.asarray(values, dtype=np.float64)[:20_000]
    n = x.shape[0]
    base = 3
    if n < base + 3:
        return default
    xo = x - x.mean()
    nfft = 1 << int(np.ceil(np.log2(2 * n + 1)))
    spec = np.fft.rfft(xo, nfft)
    acov = np.fft.irfft(spec * np.conj(spec), nfft)[:n] / n
    if not acov[0] > 0:
        return default
    acf = (acov / acov[0])[: 401][base:]
    inner = acf[1:-1]
    local = np.flatnonzero((inner > acf[:-2]) & (inner > acf[2:])) + 1
    if local.size == 0:
        return default
    best = int(local[np.argmax(acf[local])])
    if best < 3 or best > 300:
        return default
    return best + base


@dataclass
class EventCounts:
    """Event-level tallies that add across series (see the module docstring)."""

    windows: int = 0
    detected: int = 0
    reward: float = 0.0
    false_positives: int = 0
    delays: list[int] = field(default_factory=list)

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.windows + other.windows, self.detected + other.detected,
                           self.reward + other.reward, self.false_positives + other.false_positives,
                           self.delays + other.delays)

    def score(self, fp_cost: float = FP_COST) -> float:
        """``(rewards - fp_cost * false positives) / windows`` (NaN without windows)."""
        if self.windows == 0:
            return float("nan")
        return (self.reward - fp_cost * self.false_positives) / self.windows


def event_counts(labels: npt.ArrayLike, alarms: npt.ArrayLike, *, min_tolerance_rows: int = 4,
                 fp_run_rows: int = 24) -> EventCounts:
    """Score boolean ``alarms`` against 0/1 ``labels`` (see the module docstring)."""
    lab = np.asarray(labels).astype(np.int64)
    al = np.asarray(alarms).astype(bool)
    if lab.shape != al.shape or lab.ndim != 1:
        raise ValueError(f"labels and alarms must be 1-D and equally long, got {lab.shape}, {al.shape}")
    n = lab.shape[0]
    inside = np.zeros(n, bool)
    out = EventCounts()
    for s, e in label_ranges(lab):
        end = min(n - 1, e + max(e - s + 1, min_tolerance_rows))
        inside[s:end + 1] = True
        out.windows += 1
        hits = np.flatnonzero(al[s:end + 1])
        if hits.size:
            delay = int(hits[0])
            out.detected += 1
            out.delays.append(delay)
            out.reward += 1.0 - 0.5 * delay / (end - s + 1)
    outside = al & ~inside
    for s, e in label_ranges(outside.astype(np.int64)):
        out.false_positives += -(-(e - s + 1) // fp_run_rows)
    return out

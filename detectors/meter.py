"""The convergence meter: fuse node states into a 0–100 score that rewards independence.

Over a sliding window of ``window_ticks``, every node that was anomalous counts with a
strength from its peak evidence, fading with age. Nodes are then discounted for
*correlation*: inside one correlation group (stations on the same upstream feed or the
same market) only the strongest counts fully, the rest count ``correlated_weight`` each.
A convergence is co-located, so all of this is computed per region (market stations
belong to their exchange's region) and the meter reports the strongest region; the
summed, discounted evidence ``E`` there is scaled by *diversity*, the number of distinct
source kinds (three or more count fully). ``n_regions`` says how many regions are at
``watch`` or above at once. So

* one station surging alone scores low (one node, one kind);
* a market-wide move is many nodes but few groups and only market kinds — and unless
  at least ``min_osint_groups`` independent OSINT sources corroborate it, the score is
  capped below ``warning``;
* news, social, sensors and market volume turning together score high.

Levels ``quiet < watch < warning < converged`` rise as soon as the score crosses a
threshold and fall only after ``down_ticks`` ticks below ``threshold - hysteresis``,
so an alert does not flap. :func:`explain` breaks a live score into each node's and
each evidence type's contribution.

Vectorised over any leading dimensions: node inputs ``(..., stations)``, meter outputs
``(...)``.

Examples
--------
>>> import numpy as np
>>> from convergence.detectors.node_state import ANOMALOUS, NORMAL
>>> meter = ConvergenceMeter(window_ticks=4)
>>> kinds = np.array([0, 1, 4, 3, 2, 2]); groups = np.arange(6); regions = np.zeros(6, int)
>>> st = meter.init_state((6,))
>>> peak = np.zeros((6, 4)); peak[:, 0] = 8.0
>>> def node(mask):
...     return {"state": np.where(mask, ANOMALOUS, NORMAL), "since": np.where(mask, 0.0, 1e9),
...             "peak": peak}
>>> meta = {"kind_idx": kinds, "group_idx": groups, "region_idx": regions}
>>> lone = meter.step(st, {**node(np.array([1, 0, 0, 0, 0, 0], bool)), **meta})
>>> int(lone["level"]), float(lone["score"]) < 30
(0, True)
>>> st = meter.init_state((6,))
>>> market = meter.step(st, {**node(np.array([0, 0, 0, 1, 1, 1], bool)), **meta})
>>> LEVELS[int(market["level"])], bool(market["osint"])
('watch', False)
>>> st = meter.init_state((6,))
>>> real = meter.step(st, {**node(np.ones(6, bool)), **meta})
>>> LEVELS[int(real["level"])], bool(real["fired"])
('converged', True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_int_min,
    check_positive,
    check_unit_interval,
)
from convergence.detectors.node_state import EVIDENCE_TYPES
from convergence.schema import KIND_INDEX, MARKET_KINDS, OSINT_KINDS, SOURCE_KINDS

LEVELS = ("quiet", "watch", "warning", "converged")
#: fused features per (run, region), the input of a learned scorer (see ``scorer``)
FEATURE_NAMES = (
    "evidence", "n_kinds", "n_osint_groups", "n_nodes", "n_groups", "max_strength",
    "mean_strength", "active_share", "market_share", "rule_score", "n_regions_watch",
)
Scorer = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
QUIET, WATCH, WARNING, CONVERGED = 0, 1, 2, 3
N_KINDS = len(SOURCE_KINDS)
_OSINT_IDX = np.array(sorted(KIND_INDEX[k.value] for k in OSINT_KINDS))
_MARKET_IDX = np.array(sorted(KIND_INDEX[k.value] for k in MARKET_KINDS))
#: lookup tables by kind index: ``_IS_OSINT[kind_idx]`` instead of ``np.isin`` every tick
_IS_OSINT = np.isin(np.arange(N_KINDS), _OSINT_IDX)
_IS_MARKET = np.isin(np.arange(N_KINDS), _MARKET_IDX)


class _Layout:
    """Static (run, region, group) aggregation keys for one registry and run count.

    Built once per (runs, kind/group/region contents) and reused every tick: the
    registry does not change between ticks, so neither do these keys.
    """

    def __init__(self, n_runs: int, kind: Array, group: Array, region: Array) -> None:
        n_s = kind.shape[-1]
        self.n_runs = n_runs
        self.n_groups = n_groups = int(group.max()) + 1 if group.size else 1
        self.n_reg = n_reg = int(region.max()) + 1 if region.size else 1
        self.size = n_runs * n_reg * n_groups
        # everything is aggregated per (run, region): a convergence is co-located
        rr2 = np.arange(n_runs)[:, None] * n_reg + region[None, :]
        self.rr = rr2.ravel()
        self.gkey = (rr2 * n_groups + group[None, :]).ravel()
        self.kkey = (rr2 * N_KINDS + kind[None, :]).ravel()
        self.osint = np.broadcast_to(_IS_OSINT[kind], (n_runs, n_s)).ravel()
        self.market = np.broadcast_to(_IS_MARKET[kind], (n_runs, n_s)).ravel()
        self.per_region = np.bincount(region, minlength=n_reg).astype(np.float64)
        self.region = region
        # group maxima by contiguous segments: a stable sort of the keys, once
        self.order = np.argsort(self.gkey, kind="stable")
        keys = self.gkey[self.order]
        self.starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size \
            else np.zeros(0, np.int64)
        self.seg_keys = keys[self.starts]

    def group_max(self, wf: Array) -> Array:
        gmax = np.zeros(self.size)
        if self.starts.size:
            gmax[self.seg_keys] = np.maximum.reduceat(wf[self.order], self.starts)
        return gmax


class ConvergenceMeter(Stage):
    """Independence-weighted convergence score with hysteretic levels.

    Parameters
    ----------
    window_ticks
        Sliding window: a node counts while it was anomalous within this many ticks.
    thresholds
        Scores at which ``watch``, ``warning`` and ``converged`` begin.
    hysteresis
        A level is left only when the score is this far below its threshold...
    down_ticks
        ...for this many consecutive ticks.
    correlated_weight
        Weight of every node after the strongest inside a correlation group.
    evidence_scale
        ``E`` at which the evidence factor reaches 63 % (``1 - exp(-E / scale)``).
    enter_at
        Node evidence considered "just anomalous" (strength 0.5); strength saturates at
        three times this.
    scorer
        Optional learned fusion: a function mapping feature rows (``FEATURE_NAMES``, one
        row per run and region) to P(convergence). When given, a region's score is
        ``100 * P``; when ``None`` the transparent rule above is the score. The OSINT
        rule applies either way.
    emit_features
        Output the fused features even without a scorer (the simulator does, to make
        training data); off by default because the live path does not need them.
    min_osint_groups
        Independent OSINT groups (news wires, social accounts) that must be anomalous in
        the window; below that the score is capped under ``warning``. One OSINT feed
        echoing a market move is not corroboration. ``0`` disables the rule.
    """

    name = "meter"

    def __init__(self, window_ticks: int = 8, thresholds: Sequence[float] = (30.0, 55.0, 75.0),
                 hysteresis: float = 10.0, down_ticks: int = 3, correlated_weight: float = 0.25,
                 evidence_scale: float = 3.0, enter_at: float = 4.0,
                 min_osint_groups: int = 2, scorer: Scorer | None = None,
                 emit_features: bool = False) -> None:
        if window_ticks < 1 or down_ticks < 1:
            raise ValueError("window_ticks and down_ticks must be >= 1")
        th = tuple(float(t) for t in thresholds)
        if len(th) != 3 or not 0 < th[0] < th[1] < th[2] <= 100:
            raise ValueError(f"thresholds must be 3 increasing scores in (0, 100], got {thresholds}")
        check_positive("hysteresis", hysteresis, allow_zero=True)
        check_positive("evidence_scale", evidence_scale)
        check_positive("enter_at", enter_at)
        check_unit_interval("correlated_weight", correlated_weight)
        self.window_ticks = window_ticks
        self.thresholds = th
        self.hysteresis = hysteresis
        self.down_ticks = down_ticks
        self.correlated_weight = correlated_weight
        self.evidence_scale = evidence_scale
        self.enter_at = enter_at
        check_int_min("min_osint_groups", min_osint_groups, 0)
        self.min_osint_groups = min_osint_groups
        self.scorer = scorer
        self.emit_features = emit_features
        self._th = np.array((0.0, *th))
        self._layout_cache: tuple[Any, _Layout] | None = None

    def state_spec(self) -> Spec:
        return {"level": ((), QUIET, np.int8), "below": ((), 0, np.int32),
                "episode": ((), 0, np.int64), "peak_score": ((), 0.0)}

    def init_state(self, shape: tuple[int, ...]) -> ArrayState:
        # meter state has no station axis: one meter per leading index (per run)
        if not shape:
            raise ValueError("shape must end with the station count")
        return ArrayState.zeros(tuple(shape[:-1]), self.state_spec())

    def node_weights(self, since: Array, peak: Array, quarantined: Array | None = None,
                     peak_top: Array | None = None) -> Array:
        """Per-node strength in [0, 1]: 0 outside the window, fading with age inside it.

        ``peak_top`` (the node machine's strongest evidence type per node, ``peak.max(-1)``)
        saves the reduction over evidence types when the caller has it.
        """
        in_win = since <= self.window_ticks
        if quarantined is not None:
            in_win = in_win & ~quarantined
        top = peak.max(-1) if peak_top is None else peak_top
        strength = 0.5 + 0.5 * np.clip((top - self.enter_at) / (2.0 * self.enter_at), 0.0, 1.0)
        fade = 1.0 - 0.5 * np.minimum(since, self.window_ticks) / self.window_ticks
        return np.where(in_win, strength * fade, 0.0)

    def _features(self, lay: _Layout, wf: Array, active: Array, gsum: Array, gmax: Array,
                  evidence_r: Array, n_kinds_r: Array, n_osint_r: Array, rule_r: Array) -> Array:
        """Fused features per (run, region), shape ``(runs, regions, len(FEATURE_NAMES))``."""
        shp = (lay.n_runs, lay.n_reg)
        n_rr = lay.n_runs * lay.n_reg
        gshape = (lay.n_runs, lay.n_reg, lay.n_groups)
        act = active.astype(np.float64)
        n_nodes = np.bincount(lay.rr, weights=act, minlength=n_rr).reshape(shp)
        # weights are >= 0, so a group is on exactly when its strongest node is
        n_groups_r = (gmax > 0).reshape(gshape).sum(-1)
        mx = gmax.reshape(gshape).max(-1)
        total = gsum.reshape(gshape).sum(-1)
        n_market = np.bincount(lay.rr, weights=(lay.market & active).astype(np.float64),
                               minlength=n_rr).reshape(shp)
        watch = (rule_r >= self.thresholds[0]).sum(-1, keepdims=True)
        cols = [evidence_r, n_kinds_r, n_osint_r, n_nodes, n_groups_r, mx,
                np.divide(total, n_nodes, out=np.zeros_like(total), where=n_nodes > 0),
                n_nodes / np.maximum(lay.per_region, 1.0),
                np.divide(n_market, n_nodes, out=np.zeros_like(n_market), where=n_nodes > 0),
                rule_r, np.broadcast_to(watch, rule_r.shape)]
        return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=-1)

    def _layout(self, n_runs: int, kind: Array, group: Array, region: Array) -> _Layout:
        key = (n_runs, kind.shape, kind.tobytes(), group.tobytes(), region.tobytes())
        cache = self._layout_cache
        if cache is None or cache[0] != key:
            cache = (key, _Layout(n_runs, np.asarray(kind, np.int64), np.asarray(group, np.int64),
                                  np.asarray(region, np.int64)))
            self._layout_cache = cache
        return cache[1]

    def advance(self, state: ArrayState, score: Array) -> tuple[Array, Array, Array]:
        """Levels with hysteresis for this tick's ``score``: ``(level, prev_level, fired)``.

        Updates ``level``, ``below``, ``episode`` and ``peak_score`` in ``state``; used by
        :meth:`step` and to replay a different score series offline.
        """
        implied = (np.searchsorted(self._th, score, side="right") - 1).astype(np.int8)
        level, below = state["level"], state["below"]
        prev = level.copy()
        exit_th = self._th[prev.astype(np.int64)] - self.hysteresis
        is_below = (score < exit_th) & (prev > QUIET)
        below[...] = np.where(is_below, below + 1, 0)
        drop_to = (np.searchsorted(self._th, score + self.hysteresis, side="right") - 1)
        new = np.where(implied > prev, implied,
                       np.where(below >= self.down_ticks, np.minimum(prev, drop_to), prev)).astype(np.int8)
        below[...] = np.where(new != prev, 0, below)
        started = (prev == QUIET) & (new > QUIET)
        state["episode"][...] = state["episode"] + started
        state["peak_score"][...] = np.where(started, score, np.maximum(state["peak_score"], score))
        state["peak_score"][...] = np.where(new == QUIET, 0.0, state["peak_score"])
        level[...] = new
        fired = (new > prev) & (new >= WARNING)
        return new, prev, fired

    def cap_osint(self, score_r: Array, osint_r: Array) -> Array:
        """The OSINT rule: without enough independent OSINT groups, stay under ``warning``."""
        if self.min_osint_groups > 0:
            out: Array = np.where(osint_r, score_r, np.minimum(score_r, self.thresholds[1] - 1e-6))
            return out
        return score_r

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        since, peak = inputs["since"], inputs["peak"]
        kind, group, region = inputs["kind_idx"], inputs["group_idx"], inputs["region_idx"]
        w = self.node_weights(since, peak, inputs.get("quarantined"), inputs.get("peak_top"))
        lead = w.shape[:-1]
        n_s = w.shape[-1]
        flat = w.reshape(-1, n_s)
        n_runs = flat.shape[0]
        lay = self._layout(n_runs, kind, group, region)
        n_reg, n_groups = lay.n_reg, lay.n_groups
        wf = flat.ravel()
        gsum = np.bincount(lay.gkey, weights=wf, minlength=lay.size)
        gmax = lay.group_max(wf)
        ev_rg = (gmax + self.correlated_weight * (gsum - gmax)).reshape(n_runs, n_reg, n_groups)
        evidence_r = ev_rg.sum(-1)
        active = wf > 0
        kinds = np.zeros(n_runs * n_reg * N_KINDS, bool)
        kinds[lay.kkey[active]] = True
        n_kinds_r = kinds.reshape(n_runs, n_reg, N_KINDS).sum(-1)
        og = np.zeros(lay.size, bool)
        og[lay.gkey[lay.osint & active]] = True
        n_osint_r = og.reshape(n_runs, n_reg, n_groups).sum(-1)
        osint_r = n_osint_r >= max(self.min_osint_groups, 1)
        rule_r = (100.0 * (1.0 - np.exp(-evidence_r / self.evidence_scale))
                  * np.minimum(1.0, n_kinds_r / 3.0))
        need = self.scorer is not None or self.emit_features
        feats = (self._features(lay, wf, active, gsum, gmax, evidence_r, n_kinds_r, n_osint_r,
                                rule_r) if need
                 else np.zeros((n_runs, n_reg, len(FEATURE_NAMES))))
        if self.scorer is not None:
            p = np.asarray(self.scorer(feats.reshape(-1, feats.shape[-1])), dtype=np.float64)
            score_r = 100.0 * np.clip(p.reshape(n_runs, n_reg), 0.0, 1.0)
        else:
            score_r = rule_r
        score_r = self.cap_osint(score_r, osint_r)
        best = score_r.argmax(-1)
        pick = np.arange(n_runs)
        score = score_r[pick, best]
        best_feats = feats[pick, best]
        evidence, n_kinds, osint = evidence_r[pick, best], n_kinds_r[pick, best], osint_r[pick, best]
        n_regions_on = (score_r >= self.thresholds[0]).sum(-1)
        # only the nodes of the winning region are "involved"
        w = np.where(lay.region == best[:, None], flat, 0.0).reshape(w.shape)
        score = score.reshape(lead)
        new, prev, fired = self.advance(state, score)
        out: Outputs = {
            "score": score, "level": new, "prev_level": prev, "fired": fired,
            "evidence": evidence.reshape(lead), "n_kinds": n_kinds.reshape(lead),
            "n_regions": n_regions_on.reshape(lead), "osint": osint.reshape(lead),
            "region": best.reshape(lead),
            "region_score": score_r.reshape(lead + (n_reg,)),
            "region_osint": osint_r.reshape(lead + (n_reg,)),
            "region_kinds": n_kinds_r.reshape(lead + (n_reg,)),
            "features": best_feats.reshape(lead + (len(FEATURE_NAMES),)),
            "episode": state["episode"].copy(), "weights": w,
        }
        if need:
            out["region_features"] = feats.reshape(lead + (n_reg, len(FEATURE_NAMES)))
        return out


def explain(
    meter: ConvergenceMeter,
    reading: Mapping[str, Array],
    node: Mapping[str, Array],
    station_ids: Sequence[str],
    kind_idx: Array,
    group_idx: Array,
    region_names: Sequence[str],
    region_idx: Array,
) -> dict[str, Any]:
    """Why a live (un-batched) score is what it is.

    Returns the involved nodes with their discounted contribution (share of ``E``) and
    the split of each by evidence type, plus totals per source kind and evidence type.
    """
    w = np.asarray(reading["weights"])
    peak = np.asarray(node["peak"])
    contrib = np.zeros_like(w)
    for g in np.unique(group_idx[w > 0]):
        members = np.flatnonzero((group_idx == g) & (w > 0))
        best = members[np.argmax(w[members])]
        contrib[members] = meter.correlated_weight * w[members]
        contrib[best] = w[best]
    total = float(contrib.sum()) or 1.0
    nodes = []
    by_kind: dict[str, float] = {}
    by_type = dict.fromkeys(EVIDENCE_TYPES, 0.0)
    for i in np.flatnonzero(contrib > 0)[np.argsort(-contrib[contrib > 0])]:
        parts = peak[i]
        psum = float(parts.sum()) or 1.0
        share = float(contrib[i]) / total
        split = {t: round(share * float(parts[j]) / psum, 4) for j, t in enumerate(EVIDENCE_TYPES)}
        kind = SOURCE_KINDS[int(kind_idx[i])].value
        nodes.append({
            "station_id": station_ids[i], "source_kind": kind,
            "region": region_names[int(region_idx[i])], "share": round(share, 4),
            "peak_evidence": {t: round(float(parts[j]), 2) for j, t in enumerate(EVIDENCE_TYPES)},
            "correlated": bool(contrib[i] < w[i]), "by_type": split,
        })
        by_kind[kind] = by_kind.get(kind, 0.0) + share
        for t, v in split.items():
            by_type[t] += v
    return {
        "score": round(float(reading["score"]), 2),
        "level": LEVELS[int(reading["level"])],
        "evidence": round(float(reading["evidence"]), 3),
        "n_kinds": int(reading["n_kinds"]),
        "n_regions": int(reading["n_regions"]),
        "osint_corroborated": bool(reading["osint"]),
        "nodes": nodes,
        "by_kind": {k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "by_evidence": {k: round(v, 4) for k, v in by_type.items() if v > 0},
    }

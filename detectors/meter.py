"""The convergence meter: fuse node states into a 0–100 score per region that rewards independence.

Over a sliding window of ``window_ticks``, every node that was anomalous counts with a
strength from its peak evidence, fading with age. Nodes are then discounted for
*correlation*: inside one correlation group (stations on the same upstream feed or the
same market) only the strongest counts fully, the rest count ``correlated_weight`` each.
A convergence is co-located, so everything is computed and *kept* per region (market
stations belong to their exchange's region): the summed, discounted evidence ``E`` of a
region is scaled by *diversity*, the number of distinct source kinds there (three or
more count fully). So

* one station surging alone scores low (one node, one kind);
* a market-wide move is many nodes but few groups and only market kinds — and unless
  at least ``min_osint_groups`` independent OSINT sources corroborate it, the score is
  capped below ``warning``;
* news, social, sensors and market volume turning together score high.

Each region has its own level, hysteresis and episode: levels ``quiet < watch < warning
< converged`` rise as soon as the score crosses a threshold and fall only after
``down_ticks`` ticks below ``threshold - hysteresis``, so an alert does not flap; two
regions converging at once are two episodes and fire twice. ``episode_start`` is the
tick a region's current episode left ``quiet`` (what alert and report ids are made of).
:func:`explain` breaks a region's score into each node's and each evidence type's
contribution.

Vectorised over any leading dimensions: node inputs ``(..., stations)``, meter state and
outputs ``(..., regions)``. Per-run settings (a Monte Carlo campaign samples them) may
be given as inputs: ``thresholds`` ``(..., 3)`` and ``window_ticks`` ``(...)``.

Examples
--------
>>> import numpy as np
>>> from convergence.detectors.node_state import ANOMALOUS, NORMAL
>>> meter = ConvergenceMeter(window_ticks=4)
>>> kinds = np.array([0, 1, 4, 3, 2, 2]); groups = np.arange(6); regions = np.zeros(6, int)
>>> peak = np.zeros((6, 9)); peak[:, 0] = 12.0
>>> def node(mask):
...     return {"since": np.where(mask, 0.0, 1e9), "peak": peak}
>>> meta = {"kind_idx": kinds, "group_idx": groups, "region_idx": regions}
>>> lone = meter.step(meter.init_state((1,)), {**node(np.array([1, 0, 0, 0, 0, 0], bool)), **meta})
>>> int(lone["level"][0]), float(lone["score"][0]) < 30
(0, True)
>>> market = meter.step(meter.init_state((1,)), {**node(np.array([0, 0, 0, 1, 1, 1], bool)), **meta})
>>> LEVELS[int(market["level"][0])], bool(market["osint"][0])
('watch', False)
>>> real = meter.step(meter.init_state((1,)), {**node(np.ones(6, bool)), **meta, "tick": 40})
>>> LEVELS[int(real["level"][0])], bool(real["fired"][0]), int(real["episode_start"][0])
('converged', True, 40)

Two regions at once are two readings, each with its own level:

>>> two = meter.step(meter.init_state((2,)), {**node(np.ones(6, bool)), **meta,
...                                          "region_idx": np.array([0, 1, 0, 1, 0, 1])})
>>> [LEVELS[int(x)] for x in two["level"]]
['watch', 'watch']
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
    "mean_strength", "active_share", "market_share", "rule_score",
)
Scorer = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
QUIET, WATCH, WARNING, CONVERGED = 0, 1, 2, 3
N_KINDS = len(SOURCE_KINDS)
_OSINT_IDX = np.array(sorted(KIND_INDEX[k.value] for k in OSINT_KINDS))
_MARKET_IDX = np.array(sorted(KIND_INDEX[k.value] for k in MARKET_KINDS))
#: lookup tables by kind index: ``_IS_OSINT[kind_idx]`` instead of ``np.isin`` every tick
_IS_OSINT = np.isin(np.arange(N_KINDS), _OSINT_IDX)
_IS_MARKET = np.isin(np.arange(N_KINDS), _MARKET_IDX)
NO_EPISODE = -1
_DARK = EVIDENCE_TYPES.index("dark")
#: diversity: a third for the strongest kind; the second kind adds up to 0.47 and every
#: further kind together up to 0.2, each in full once it carries ``DIVERSITY_FULL`` of
#: evidence (one independent, fully anomalous station) and at least 1/``DIVERSITY_BALANCE``
#: of the strongest kind's. One kind alone can never reach warning (a viral storm on social
#: media is not a convergence); two kinds can (social chatter confirmed by the news, a
#: market move confirmed by OSINT); three count fully. A chance anomaly of another kind
#: next to a one-kind storm adds little: in the campaigns, counting kinds instead let 11
#: of 30 viral-storm runs alert.
DIVERSITY_STEPS = (1.0 / 3.0, 0.47, 0.2)
DIVERSITY_FULL = 1.0
DIVERSITY_BALANCE = 4.0


class _Layout:
    """Static (run, region, group) aggregation keys for one registry and run count.

    Built once per (runs, regions, kind/group/region contents) and reused every tick: the
    registry does not change between ticks, so neither do these keys.
    """

    def __init__(self, n_runs: int, n_reg: int, kind: Array, group: Array, region: Array) -> None:
        n_s = kind.shape[-1]
        self.n_runs = n_runs
        self.n_groups = n_groups = int(group.max()) + 1 if group.size else 1
        self.n_reg = n_reg
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
        # the same per (run, region, group, kind): each kind's own evidence
        self.gkkey = self.gkey * N_KINDS + np.broadcast_to(kind, (n_runs, n_s)).ravel()
        self.k_order = np.argsort(self.gkkey, kind="stable")
        kk = self.gkkey[self.k_order]
        self.k_starts = np.flatnonzero(np.r_[True, kk[1:] != kk[:-1]]) if kk.size \
            else np.zeros(0, np.int64)
        self.k_seg_keys = kk[self.k_starts]

    def group_max(self, wf: Array) -> Array:
        gmax = np.zeros(self.size)
        if self.starts.size:
            gmax[self.seg_keys] = np.maximum.reduceat(wf[self.order], self.starts)
        return gmax

    def kind_evidence(self, wf: Array, correlated_weight: float) -> Array:
        """Discounted evidence per (run, region, kind): ``(runs, regions, kinds)``."""
        size = self.size * N_KINDS
        gsum = np.bincount(self.gkkey, weights=wf, minlength=size)
        gmax = np.zeros(size)
        if self.k_starts.size:
            gmax[self.k_seg_keys] = np.maximum.reduceat(wf[self.k_order], self.k_starts)
        ev = (gmax + correlated_weight * (gsum - gmax)).reshape(
            self.n_runs, self.n_reg, self.n_groups, N_KINDS)
        out: Array = ev.sum(2)
        return out


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
                "episode": ((), 0, np.int64), "peak_score": ((), 0.0),
                "episode_start": ((), NO_EPISODE, np.int64)}

    def init_state(self, shape: tuple[int, ...]) -> ArrayState:
        """Fresh meter state for leading shape ``(..., regions)``: one meter per region."""
        if not shape or min(shape) < 1:
            raise ValueError(f"shape must end with the region count (>= 1), got {shape}")
        return ArrayState.zeros(tuple(shape), self.state_spec())

    def grow(self, state: ArrayState, n_regions: int) -> None:
        """Add quiet meters for regions that appeared (a station of a new region)."""
        if state.shape[-1] < n_regions:
            state.grow(n_regions, self.init_state(state.shape[:-1] + (n_regions,)))

    def node_weights(self, since: Array, peak: Array, quarantined: Array | None = None,
                     peak_top: Array | None = None, window_ticks: Array | None = None) -> Array:
        """Per-node strength in [0, 1]: 0 outside the window, fading with age inside it.

        ``peak_top`` (the node machine's strongest evidence type per node, ``peak.max(-1)``)
        saves the reduction over evidence types when the caller has it; ``window_ticks``
        (broadcastable to ``since``) overrides the window per run.
        """
        win: Array | int = self.window_ticks if window_ticks is None else window_ticks
        in_win = since <= win
        if quarantined is not None:
            in_win = in_win & ~quarantined
        top = peak.max(-1) if peak_top is None else peak_top
        strength = 0.5 + 0.5 * np.clip((top - self.enter_at) / (2.0 * self.enter_at), 0.0, 1.0)
        fade = 1.0 - 0.5 * np.minimum(since, win) / win
        return np.where(in_win, strength * fade, 0.0)

    def _features(self, lay: _Layout, wf: Array, active: Array, gsum: Array, gmax: Array,
                  evidence_r: Array, n_kinds_r: Array, n_osint_r: Array, rule_r: Array,
                  n_nodes: Array) -> Array:
        """Fused features per (run, region), shape ``(runs, regions, len(FEATURE_NAMES))``."""
        shp = (lay.n_runs, lay.n_reg)
        n_rr = lay.n_runs * lay.n_reg
        gshape = (lay.n_runs, lay.n_reg, lay.n_groups)
        # weights are >= 0, so a group is on exactly when its strongest node is
        n_groups_r = (gmax > 0).reshape(gshape).sum(-1)
        mx = gmax.reshape(gshape).max(-1)
        total = gsum.reshape(gshape).sum(-1)
        n_market = np.bincount(lay.rr, weights=(lay.market & active).astype(np.float64),
                               minlength=n_rr).reshape(shp)
        # nothing here looks across regions: a region's reading depends on its own stations
        # only, so regions can be processed apart (the cluster's second stage splits them)
        cols = [evidence_r, n_kinds_r, n_osint_r, n_nodes, n_groups_r, mx,
                np.divide(total, n_nodes, out=np.zeros_like(total), where=n_nodes > 0),
                n_nodes / np.maximum(lay.per_region, 1.0),
                np.divide(n_market, n_nodes, out=np.zeros_like(n_market), where=n_nodes > 0),
                rule_r]
        return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=-1)

    def _layout(self, n_runs: int, n_reg: int, kind: Array, group: Array, region: Array) -> _Layout:
        key = (n_runs, n_reg, kind.shape, kind.tobytes(), group.tobytes(), region.tobytes())
        cache = self._layout_cache
        if cache is None or cache[0] != key:
            cache = (key, _Layout(n_runs, n_reg, np.asarray(kind, np.int64),
                                  np.asarray(group, np.int64), np.asarray(region, np.int64)))
            self._layout_cache = cache
        return cache[1]

    @staticmethod
    def diversity(kind_evidence: Array) -> Array:
        """Diversity factor in [0, 1] from evidence per kind ``(..., kinds)``."""
        top = -np.sort(-kind_evidence, axis=-1)
        d1, d2, d3 = DIVERSITY_STEPS
        rest = top[..., 2:].sum(-1)
        # what "full" means grows with the strongest kind: beside a storm of ten social
        # accounts, one news station is an echo, not a second voice
        full = np.maximum(DIVERSITY_FULL, top[..., 0] / DIVERSITY_BALANCE)
        out: Array = ((top[..., 0] > 0) * d1 + d2 * np.minimum(1.0, top[..., 1] / full)
                      + d3 * np.minimum(1.0, rest / full))
        return out

    def thresholds_of(self, thresholds: Array | None, shape: tuple[int, ...]) -> Array:
        """Level thresholds ``(0, watch, warning, converged)`` broadcast to ``shape + (4,)``."""
        if thresholds is None:
            return np.broadcast_to(self._th, shape + (4,))
        th = np.asarray(thresholds, dtype=np.float64)
        th = np.concatenate([np.zeros(th.shape[:-1] + (1,)), th], axis=-1)
        # per-run thresholds (..., 4) apply to every region of the run
        return np.broadcast_to(th[..., None, :], shape + (4,))

    def advance(self, state: ArrayState, score: Array, thresholds: Array | None = None,
                tick: int | Array | None = None) -> tuple[Array, Array, Array]:
        """Levels with hysteresis for this tick's ``score`` ``(..., regions)``: returns
        ``(level, prev_level, fired)``.

        Updates ``level``, ``below``, ``episode``, ``peak_score`` and ``episode_start``
        (set to ``tick`` when a region leaves quiet) in ``state``; used by :meth:`step`
        and to replay a different score series offline. ``thresholds`` ``(..., 3)``
        override the meter's own per run.
        """
        th = self.thresholds_of(thresholds, score.shape)
        implied = ((score[..., None] >= th[..., 1:]).sum(-1)).astype(np.int8)
        level, below = state["level"], state["below"]
        prev = level.copy()
        exit_th = np.take_along_axis(th, prev.astype(np.int64)[..., None], -1)[..., 0] - self.hysteresis
        is_below = (score < exit_th) & (prev > QUIET)
        below[...] = np.where(is_below, below + 1, 0)
        drop_to = ((score + self.hysteresis)[..., None] >= th[..., 1:]).sum(-1)
        new = np.where(implied > prev, implied,
                       np.where(below >= self.down_ticks, np.minimum(prev, drop_to), prev)).astype(np.int8)
        below[...] = np.where(new != prev, 0, below)
        started = (prev == QUIET) & (new > QUIET)
        state["episode"][...] = state["episode"] + started
        if tick is not None:
            state["episode_start"][...] = np.where(started, tick, state["episode_start"])
        state["peak_score"][...] = np.where(started, score, np.maximum(state["peak_score"], score))
        state["peak_score"][...] = np.where(new == QUIET, 0.0, state["peak_score"])
        level[...] = new
        fired = (new > prev) & (new >= WARNING)
        return new, prev, fired

    def cap_osint(self, score_r: Array, osint_r: Array, thresholds: Array | None = None) -> Array:
        """The OSINT rule: without enough independent OSINT groups, stay under ``warning``."""
        if self.min_osint_groups > 0:
            warn = (self.thresholds[1] if thresholds is None
                    else self.thresholds_of(thresholds, score_r.shape)[..., 2])
            out: Array = np.where(osint_r, score_r, np.minimum(score_r, warn - 1e-6))
            return out
        return score_r

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        """One tick for every region: see the module docstring for inputs and outputs.

        Outputs per region ``(..., regions)``: ``score``, ``level``, ``prev_level``,
        ``fired`` (rose to warning or above), ``evidence``, ``n_kinds``, ``n_nodes``
        (stations counting in the window), ``osint`` (corroborated), ``episode``,
        ``episode_start``; per station ``weights`` ``(..., stations)`` (each station's
        strength in its own region's score); with a scorer or ``emit_features``,
        ``features`` ``(..., regions, len(FEATURE_NAMES))``.
        """
        since, peak = inputs["since"], inputs["peak"]
        kind, group, region = inputs["kind_idx"], inputs["group_idx"], inputs["region_idx"]
        win = inputs.get("window_ticks")
        if win is not None:
            win = np.asarray(win, dtype=np.float64)[..., None]
        w = self.node_weights(since, peak, inputs.get("quarantined"), inputs.get("peak_top"), win)
        lead = w.shape[:-1]
        n_s = w.shape[-1]
        n_reg = state.shape[-1]
        if region.size and int(region.max()) >= n_reg:
            raise ValueError(f"station region index {int(region.max())} but the meter state "
                             f"holds {n_reg} regions; grow it first")
        flat = w.reshape(-1, n_s)
        n_runs = flat.shape[0]
        lay = self._layout(n_runs, n_reg, kind, group, region)
        n_groups = lay.n_groups
        wf = flat.ravel()
        gsum = np.bincount(lay.gkey, weights=wf, minlength=lay.size)
        gmax = lay.group_max(wf)
        ev_rg = (gmax + self.correlated_weight * (gsum - gmax)).reshape(n_runs, n_reg, n_groups)
        evidence_r = ev_rg.sum(-1)
        active = wf > 0
        # a station that counts only because its source went dark says nothing about what
        # is happening: it adds evidence, never a source kind or an OSINT voice
        top = peak.max(-1) if inputs.get("peak_top") is None else inputs["peak_top"]
        dark_only = (peak[..., _DARK] > 0) & (peak[..., _DARK] >= top)
        voice = active & ~np.broadcast_to(dark_only, w.shape).reshape(-1)
        kinds = np.zeros(n_runs * n_reg * N_KINDS, bool)
        kinds[lay.kkey[voice]] = True
        n_kinds_r = kinds.reshape(n_runs, n_reg, N_KINDS).sum(-1)
        og = np.zeros(lay.size, bool)
        og[lay.gkey[lay.osint & voice]] = True
        n_osint_r = og.reshape(n_runs, n_reg, n_groups).sum(-1)
        osint_r = n_osint_r >= max(self.min_osint_groups, 1)
        n_nodes = np.bincount(lay.rr, weights=active.astype(np.float64),
                              minlength=n_runs * n_reg).reshape(n_runs, n_reg)
        rule_r = (100.0 * (1.0 - np.exp(-evidence_r / self.evidence_scale))
                  * self.diversity(lay.kind_evidence(np.where(voice, wf, 0.0), self.correlated_weight)))
        th_in = inputs.get("thresholds")
        th_flat = None if th_in is None else np.asarray(th_in, np.float64).reshape(n_runs, 3)
        need = self.scorer is not None or self.emit_features
        feats = None
        if need:
            feats = self._features(lay, wf, active, gsum, gmax, evidence_r, n_kinds_r,
                                   n_osint_r, rule_r, n_nodes)
        if self.scorer is not None:
            assert feats is not None
            p = np.asarray(self.scorer(feats.reshape(-1, feats.shape[-1])), dtype=np.float64)
            score_r = 100.0 * np.clip(p.reshape(n_runs, n_reg), 0.0, 1.0)
        else:
            score_r = rule_r
        score_r = self.cap_osint(score_r, osint_r, th_flat)
        score = score_r.reshape(lead + (n_reg,))
        th_lead = None if th_flat is None else th_flat.reshape(lead + (3,))
        new, prev, fired = self.advance(state, score, th_lead, inputs.get("tick"))
        out: Outputs = {
            "score": score, "level": new, "prev_level": prev, "fired": fired,
            "evidence": evidence_r.reshape(lead + (n_reg,)),
            "n_kinds": n_kinds_r.reshape(lead + (n_reg,)),
            "n_nodes": n_nodes.reshape(lead + (n_reg,)),
            "osint": osint_r.reshape(lead + (n_reg,)),
            "episode": state["episode"].copy(), "episode_start": state["episode_start"].copy(),
            "weights": w,
        }
        if feats is not None:
            out["features"] = feats.reshape(lead + (n_reg, len(FEATURE_NAMES)))
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
    region: int,
    group_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Why one region's live (un-batched) score is what it is.

    Returns the involved nodes of region ``region`` with their discounted contribution
    (share of ``E``), the stronger station each correlated one was discounted against,
    and the split of each by evidence type, plus totals per source kind and evidence type.
    """
    w = np.where(np.asarray(region_idx) == region, np.asarray(reading["weights"]), 0.0)
    peak = np.asarray(node["peak"])
    contrib = np.zeros_like(w)
    stronger: dict[int, int] = {}
    for g in np.unique(group_idx[w > 0]):
        members = np.flatnonzero((group_idx == g) & (w > 0))
        best = members[np.argmax(w[members])]
        contrib[members] = meter.correlated_weight * w[members]
        contrib[best] = w[best]
        for m in members:
            if m != best:
                stronger[int(m)] = int(best)
    total = float(contrib.sum()) or 1.0
    nodes = []
    by_kind: dict[str, float] = {}
    by_type = dict.fromkeys(EVIDENCE_TYPES, 0.0)
    for i in np.flatnonzero(contrib > 0)[np.argsort(-contrib[contrib > 0], kind="stable")]:
        parts = peak[i]
        psum = float(parts.sum()) or 1.0
        share = float(contrib[i]) / total
        split = {t: round(share * float(parts[j]) / psum, 4) for j, t in enumerate(EVIDENCE_TYPES)}
        kind = SOURCE_KINDS[int(kind_idx[i])].value
        correlated = int(i) in stronger
        nodes.append({
            "station_id": station_ids[i], "source_kind": kind,
            "region": region_names[int(region_idx[i])], "share": round(share, 4),
            "peak_evidence": {t: round(float(parts[j]), 2) for j, t in enumerate(EVIDENCE_TYPES)},
            "correlated": correlated,
            "correlated_with": station_ids[stronger[int(i)]] if correlated else None,
            "group": group_names[int(group_idx[i])] if group_names is not None else "",
            "by_type": split,
        })
        by_kind[kind] = by_kind.get(kind, 0.0) + share
        for t, v in split.items():
            by_type[t] += v
    return {
        "region": region_names[region] if 0 <= region < len(region_names) else "unknown",
        "score": round(float(reading["score"][region]), 2),
        "level": LEVELS[int(reading["level"][region])],
        "evidence": round(float(reading["evidence"][region]), 3),
        "n_kinds": int(reading["n_kinds"][region]),
        "osint_corroborated": bool(reading["osint"][region]),
        "nodes": nodes,
        "by_kind": {k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "by_evidence": {k: round(v, 4) for k, v in by_type.items() if v > 0},
    }

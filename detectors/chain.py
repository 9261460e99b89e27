"""The detector chain: closed tick cells in, node verdicts and a meter reading out.

One object wires the stages in their fixed order and owns nothing but their
configuration::

    entropy ─┐
    burst ───┤
    cusum ───┼─▶ node state (hysteresis) ─▶ convergence meter
    periodicity ┤
    trend, scale (activity; price too on price stations) ┤
    regime (optional, with a trained HMM) ┤
    patterns (optional) ──────────────────┘

The trend and scale charts (:class:`~convergence.detectors.trend.TrendDetector`,
:class:`~convergence.detectors.scale.ScaleDetector`, the very stages ``convergence
detect`` runs) read each station's log activity ``log1p(count)`` and, on stations of a
kind in ``value_kinds`` (market prices), its log price ``value_last`` (a tick without
events has no price: no evidence, no learning). A station's ``trend_z`` is the larger
of its activity climbing (falling activity is not evidence, as for the burst chart) and
its price trending either way; its ``scale_z`` the larger of its activity's and its
price's change in spread.

Its state is a dict of each stage's :class:`~convergence.detectors.base.ArrayState`
(plus the pattern matcher's own small state); the meter's state has a region axis
instead of the station axis (one meter per region). The tick processor
(:mod:`convergence.detectors.processor`) wraps it with the adaptive responses; the
embedded runtime, a Faust worker and the Monte Carlo simulator (leading ``runs`` axis)
all call the very same step, temporal patterns included: a simulated run sees exactly
the evidence a live one would.

Per-run settings (:class:`RunParams`: meter thresholds, window length, weight of
temporal-pattern evidence) may be given as arrays over the leading axes, so one
vectorised batch of Monte Carlo runs can sample them.

Examples
--------
>>> import numpy as np
>>> chain = DetectorChain()
>>> meta = StationMeta(kind_idx=np.array([0, 0, 1, 1, 4]), group_idx=np.arange(5),
...                    region_idx=np.zeros(5, int))
>>> state = chain.init_state((5,), n_regions=1)
>>> rng = np.random.default_rng(0)
>>> for t in range(30):
...     counts = rng.poisson(3.0, 5).astype(float)
...     if t >= 20:
...         counts *= 8
...     hist = np.zeros((5, 16)); hist[:, 0] = counts
...     out = chain.step(state, {"count": counts, "hist": hist}, meta, tick=t)
>>> LEVELS[int(out["meter"]["level"][0])]  # five independent stations, three kinds at once
'converged'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array
from convergence.detectors.burst import BurstDetector
from convergence.detectors.cusum import CusumDetector
from convergence.detectors.entropy import EntropyDetector
from convergence.detectors.evidence import evidence_floor, evidence_scale, settle
from convergence.detectors.meter import LEVELS, ConvergenceMeter
from convergence.detectors.node_state import ANOMALOUS, NodeStateMachine
from convergence.detectors.patterns import (
    DEFAULT_PATTERNS,
    Pattern,
    PatternMatcher,
    compile_patterns,
)
from convergence.detectors.periodicity import PeriodicityDetector
from convergence.detectors.regime import DEFAULT_VOL_WINDOW, RegimeFilter
from convergence.detectors.regime_features import RegimeFeatures
from convergence.detectors.scale import ScaleDetector
from convergence.detectors.trend import TrendDetector
from convergence.schema import KIND_INDEX

__all__ = ["DEFAULT_PATTERNS", "LEVELS", "ChainState", "DetectorChain", "RunParams", "StationMeta"]

ChainState = dict[str, Any]
_MATCHER = "patterns"
#: state key of the station's own node verdict (first stage)
STATION_NODE = "station_node"


@dataclass
class StationMeta:
    """Per-station facts the meter needs (positions match the state's station axis)."""

    kind_idx: npt.NDArray[np.int64]
    group_idx: npt.NDArray[np.int64]
    region_idx: npt.NDArray[np.int64]
    quarantined: npt.NDArray[np.bool_] | None = None
    threshold_scale: npt.NDArray[np.float64] | None = None

    @property
    def n_regions(self) -> int:
        return int(self.region_idx.max()) + 1 if self.region_idx.size else 1

    @classmethod
    def from_registry(cls, registry: Any, quarantined: Array | None = None,
                      threshold_scale: Array | None = None) -> StationMeta:
        return cls(registry.kind_idx, registry.group_idx, registry.region_idx, quarantined,
                   threshold_scale)


@dataclass(frozen=True)
class RunParams:
    """Settings that may differ per run, as arrays over the leading (runs) axes.

    ``thresholds`` ``(..., 3)``: watch, warning and converged scores; ``window_ticks``
    ``(...)``: the meter's window; ``pattern_weight`` ``(...)``: the node machine's weight
    of temporal-pattern evidence. ``None`` keeps the stage's own setting.
    """

    thresholds: Array | None = None
    window_ticks: Array | None = None
    pattern_weight: Array | None = None


#: kinds whose ``value_last`` is a price the trend and scale charts read
VALUE_KINDS = ("market_price",)
#: floor of a one-tick change of log activity and of log price (see ScaleDetector):
#: far below one event more or less at a busy station, and a 0.01 % price move
ACTIVITY_CHANGE_FLOOR, PRICE_CHANGE_FLOOR = 0.01, 1e-4


def log_count_var(rate: Array, max_support: int = 4096) -> Array:
    """Variance of ``log1p(N)`` for ``N ~ Poisson(rate)`` (exact sum over the pmf;
    the delta method's ``rate / (1 + rate)^2`` beyond ``max_support`` events a tick).

    What the activity trend chart's noise is for a station with a declared rate.

    >>> import numpy as np
    >>> log_count_var(np.array([0.0, 0.2, 4.0, 1e5])).round(4).tolist()
    [0.0, 0.083, 0.2012, 0.0]
    """
    lam = np.asarray(rate, np.float64)
    # a fleet has few distinct rates (a campaign repeats them over its runs): once each,
    # in blocks, so the pmf table stays small
    uniq, back = np.unique(np.maximum(lam.ravel(), 0.0), return_inverse=True)
    out = uniq / (1.0 + uniq) ** 2
    small = np.flatnonzero(uniq <= max_support / 2.0)
    for block in np.array_split(small, max(1, -(-small.size // 256))):
        if not block.size:
            continue
        lm = uniq[block]
        top = int(np.ceil(lm.max() + 12.0 * np.sqrt(lm.max()) + 20.0))
        k = np.arange(top + 1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = (k[None, :] * np.log(lm[:, None]) - lm[:, None]
                    - np.cumsum(np.log(np.maximum(k, 1.0)))[None, :])
        p = np.where(lm[:, None] > 0, np.exp(np.nan_to_num(logp, nan=-np.inf)), (k == 0)[None, :])
        y = np.log1p(k)[None, :]
        m = (p * y).sum(-1)
        out[block] = np.maximum((p * y * y).sum(-1) - m * m, 0.0)
    res: Array = out[back].reshape(lam.shape)
    return res


#: a station leans towards a category (concentration z at least this) to count in a
#: region's topic agreement; at least ``AGREE_MIN`` independent groups must agree
AGREE_Z, AGREE_MIN = 1.5, 3
#: subtracted from the pooled z: the best of a region's categories was picked, and only
#: stations already leaning were pooled
AGREE_BIAS = 2.0


def topic_agreement(conc_z: Array, conc_bin: Array, region_idx: Array, group_idx: Array,
                    n_bins: int) -> Array:
    """Evidence for stations of one region converging on the *same* category.

    One station reporting mostly on one topic is weak evidence (a slow feed has few
    events); several independent stations of a region leaning towards the same category
    at once is strong. Per (run, region, category), the stations leaning that way (at
    least ``AGREE_Z``, one voice per correlation group: its strongest station) are
    pooled (Stouffer: a sum of z over the square root of their number); with
    ``AGREE_MIN`` or more groups agreeing, each leaning station gets the pooled z less
    ``AGREE_BIAS``. Shape as ``conc_z``; vectorised over leading axes.

    The pool a station gets is taken *at its own strength*: every voice counts at most
    as much as the station's own z (``sum(min(z_j, z_s)) / sqrt(k)``), i.e. the evidence
    that ``k`` groups lean on this category at least as hard as this station does. Where
    the stations lean alike (a story every feed picks up) that is the plain pooled z; a
    station that only just leans, beside a few that lean hard, cannot borrow their
    strength. (Four social stations deep in a story, and a news station whose usual mix
    happens to put three events in a row on that category: the news station is not
    news covering the story, and crediting it with the social stations' z would make a
    second source kind out of chance; the plain pool gave it 34.49.)

    >>> import numpy as np
    >>> z = np.array([2.5, 2.5, 2.5, 2.5, 3.0]); b = np.array([3, 3, 3, 3, 7])
    >>> topic_agreement(z, b, np.zeros(5, int), np.arange(5), 16).round(2).tolist()
    [3.0, 3.0, 3.0, 3.0, 0.0]
    >>> z = np.array([20.0, 20.0, 20.0, 20.0, 1.6]); b = np.full(5, 3)
    >>> topic_agreement(z, b, np.zeros(5, int), np.arange(5), 16).round(2).tolist()
    [34.49, 34.49, 34.49, 34.49, 1.58]
    """
    z = np.asarray(conc_z, np.float64)
    n_s = z.shape[-1]
    flat = z.reshape(-1, n_s)
    n_runs = flat.shape[0]
    n_reg = int(region_idx.max()) + 1 if region_idx.size else 1
    n_grp = int(group_idx.max()) + 1 if group_idx.size else 1
    lean = flat >= AGREE_Z
    if not lean.any():
        return np.zeros_like(z)
    b = np.asarray(conc_bin, np.int64).reshape(-1, n_s)
    key = ((np.arange(n_runs)[:, None] * n_reg + region_idx[None, :]) * n_bins + b)  # (R, S)
    size = n_runs * n_reg * n_bins
    # one voice per correlation group: its strongest station
    gkey = key * n_grp + group_idx[None, :]
    zl = np.where(lean, flat, 0.0)
    gbest = np.zeros(size * n_grp)
    np.maximum.at(gbest, gkey[lean], zl[lean])
    k = np.bincount(np.flatnonzero(gbest > 0) // n_grp, minlength=size)
    out = np.zeros_like(flat)
    # only stations whose category has enough groups agreeing get anything
    who = lean & (k[key] >= AGREE_MIN)
    if who.any():
        zs = flat[who]
        voices = gbest.reshape(size, n_grp)[key[who]]  # (stations, groups); 0: not leaning
        pooled = np.minimum(voices, zs[:, None]).sum(-1) / np.sqrt(k[key[who]])
        out[who] = np.maximum(pooled - AGREE_BIAS, 0.0)
    return out.reshape(z.shape)


class DetectorChain:
    """All stages, stepped one tick at a time (see module docstring).

    Parameters
    ----------
    patterns
        Compiled temporal patterns (or TOML text); ``None`` disables the matcher.
        Default: :data:`~convergence.detectors.patterns.DEFAULT_PATTERNS`.
    regime
        A :class:`~convergence.detectors.regime.RegimeFilter` built from a trained HMM.
    regime_kind, regime_vol_window
        The feature transform the HMM was trained on: ``"price"`` models read each
        station's last value (returns and realised volatility are scale-free, so one
        model serves every symbol); ``"count"`` models read the tick's event count.
    regime_sources
        Source kinds the regime model applies to (default: ``market_price`` for price
        models, every kind for count models); other stations get no regime evidence.
    tick_s
        Tick length, for the pattern matcher's ``within_s`` windows.
    trend, scale
        The activity trend and scale charts; ``price_trend`` and ``price_scale`` the
        price ones, on stations of a kind in ``value_kinds``.
    """

    def __init__(self, entropy: EntropyDetector | None = None, burst: BurstDetector | None = None,
                 node: NodeStateMachine | None = None, meter: ConvergenceMeter | None = None,
                 cusum: CusumDetector | None = None,
                 periodicity: PeriodicityDetector | None = None,
                 regime: RegimeFilter | None = None,
                 patterns: list[Pattern] | str | None = DEFAULT_PATTERNS,
                 tick_s: float = 1.0, regime_kind: str = "price",
                 regime_vol_window: int = DEFAULT_VOL_WINDOW,
                 regime_sources: tuple[str, ...] | None = None,
                 trend: TrendDetector | None = None, scale: ScaleDetector | None = None,
                 price_trend: TrendDetector | None = None,
                 price_scale: ScaleDetector | None = None,
                 value_kinds: tuple[str, ...] = VALUE_KINDS) -> None:
        self.entropy = entropy or EntropyDetector()
        self.burst = burst or BurstDetector()
        self.cusum = cusum or CusumDetector()
        self.periodicity = periodicity or PeriodicityDetector()
        self.regime = regime
        self.regime_features = RegimeFeatures(regime_kind, regime_vol_window) if regime else None
        default_sources = ("market_price",) if regime_kind == "price" else tuple(KIND_INDEX)
        # kind index -> does the regime model apply (a lookup, not an isin every tick)
        self._regime_applies = np.zeros(len(KIND_INDEX), bool)
        self._regime_applies[[KIND_INDEX[k] for k in (regime_sources or default_sources)]] = True
        # the charts ``convergence detect`` runs: on log activity, whose spread is seeded
        # from the declared rate and then learns slowly and winsorised at 2 spreads (at
        # detect's 0.005 and 4, a ramp quadrupling a station's activity over an hour
        # widened the spread fivefold while it lasted and hid itself: z 3 where 7 was due) ...
        self.trend = trend or TrendDetector(fast_alpha=0.2, slow_alpha=0.02, spread_alpha=0.002,
                                            threshold=4.0, huber=2.0)
        self.scale = scale or ScaleDetector(floor=ACTIVITY_CHANGE_FLOOR)
        # ... and on a price station's log price
        self.price_trend = price_trend or TrendDetector(fast_alpha=0.2, slow_alpha=0.02,
                                                        spread_alpha=0.005, threshold=4.0)
        self.price_scale = price_scale or ScaleDetector(floor=PRICE_CHANGE_FLOOR)
        self.trend.name, self.scale.name = "trend", "scale"
        self.price_trend.name, self.price_scale.name = "price_trend", "price_scale"
        self._value_applies = np.zeros(len(KIND_INDEX), bool)
        self._value_applies[[KIND_INDEX[k] for k in value_kinds]] = True
        self.node = node or NodeStateMachine()
        # the station's own verdict from its own evidence (no region, pattern or response
        # input): what the entropy stage needs to slow its learning while the station is
        # anomalous, known where the station's events are, in the first stage
        self.station_node = NodeStateMachine(
            self.node.enter_at, self.node.min_ticks, self.node.strong_at, self.node.elevate_at,
            self.node.calm_at, self.node.cooldown_ticks, self.node.entropy_weight,
            self.node.weights, self.node.corroboration)
        self.station_node.name = STATION_NODE
        self.meter = meter or ConvergenceMeter(enter_at=self.node.enter_at)
        self.floor = evidence_floor(self.node)
        self.floor_scale = evidence_scale(self.node)
        if self.floor >= AGREE_Z:
            raise ValueError(f"the node machine's evidence floor {self.floor:.2f} would hide "
                             f"stations leaning on a topic (at {AGREE_Z}); raise calm_at")
        self.patterns = compile_patterns(patterns) if isinstance(patterns, str) else patterns
        self.tick_s = tick_s
        self._matcher: PatternMatcher | None = None
        self._matcher_meta: tuple[bytes, bytes, bytes] | None = None

    def regime_applies(self, kind_idx: Array) -> Array:
        """Which stations (by kind index) the regime model applies to."""
        out: Array = self._regime_applies[kind_idx]
        return out

    @property
    def station_stages(self) -> tuple[Any, ...]:
        """The first stage's per-station stages: each reads only its own station's cells."""
        per_station = [self.entropy, self.burst, self.cusum, self.periodicity, self.trend,
                       self.scale, self.price_trend, self.price_scale]
        if self.regime is not None and self.regime_features is not None:
            per_station += [self.regime_features, self.regime]
        return (*per_station, self.station_node)

    @property
    def stages(self) -> tuple[Any, ...]:
        """Per-station stages (state with a station axis), then the meter."""
        return (*self.station_stages, self.node, self.meter)

    def station_keys(self) -> tuple[str, ...]:
        """State keys of the first stage (per station, station-local)."""
        return tuple(s.name for s in self.station_stages)

    def region_keys(self) -> tuple[str, ...]:
        """State keys of the second stage (node machine, meter, pattern matcher)."""
        return (self.node.name, self.meter.name) + ((_MATCHER,) if self.patterns else ())

    def init_state(self, shape: tuple[int, ...], n_regions: int = 1) -> ChainState:
        """Fresh state for leading shape ``(..., stations)`` and ``n_regions`` regions."""
        state: ChainState = {s.name: s.init_state(shape) for s in self.stages[:-1]}
        state[self.meter.name] = self.meter.init_state(tuple(shape[:-1]) + (max(n_regions, 1),))
        if self.patterns:
            state[_MATCHER] = None  # built on the first step, when station facts are known
        return state

    def grow(self, state: ChainState, n_stations: int, n_regions: int = 1) -> None:
        """Widen every per-station state to ``n_stations`` and the meter to ``n_regions``
        (a station, perhaps of a new region, appeared)."""
        for s in self.stages[:-1]:
            st = state.get(s.name)  # a stage's state holds only its own keys
            if st is not None and st.shape[-1] < n_stations:
                st.grow(n_stations, s.init_state(st.shape[:-1] + (n_stations,)))
        if self.meter.name in state:
            self.meter.grow(state[self.meter.name], n_regions)
        # the pattern matcher pads its own state when it next steps (``_check_state``)

    def seed_baselines(self, state: ChainState, expected_counts: Array) -> None:
        """Start activity baselines at known per-tick rates (``<= 0`` = unknown, learn it).

        A fleet that declares its stations' background rates needs no warm-up for the
        burst, CUSUM and activity signals; the category-entropy baseline still learns.
        """
        exp = np.asarray(expected_counts, dtype=np.float64)
        known = exp > 0
        for stage in self.stages[:-1]:
            if stage.name in state:
                stage.seed(state[stage.name], exp, known)
        if self.trend.name in state:
            # the activity trend chart reads log1p(count): its level and noise at that rate
            self.trend.seed_level(state[self.trend.name], np.log1p(np.maximum(exp, 0.0)),
                                  log_count_var(exp), known)

    def seed_profile(self, state: ChainState, expected_by_slot: Array, *, seen: float = 30.0,
                     day_to_day_cv: float = 0.25) -> None:
        """Start the daily profile at known per-tick counts per slot of the day
        ``(..., stations, slots_per_day)`` (``<= 0``: unknown), as if ``seen`` days of
        each slot had been learnt: a station whose rhythm is known is judged against it
        from the first tick. The variance is Poisson plus ``day_to_day_cv`` of the level
        (no feed is as regular as a Poisson process from one day to the next: with
        minute ticks and a hundred events a tick, a Poisson-only profile calls a 30 %
        busier day a 3-sigma departure)."""
        exp = np.asarray(expected_by_slot, dtype=np.float64)
        if self.periodicity.name not in state:
            return
        st = state[self.periodicity.name]
        if exp.shape[-1] != st["mu"].shape[-1]:
            raise ValueError(f"profile has {exp.shape[-1]} slots, the periodicity stage "
                             f"{st['mu'].shape[-1]}")
        known = exp > 0
        st["mu"][...] = np.where(known, exp, st["mu"])
        var = exp + (day_to_day_cv * exp) ** 2
        st["var"][...] = np.where(known, np.maximum(var, 1.0), st["var"])
        st["seen"][...] = np.where(known, np.maximum(st["seen"], seen), st["seen"])

    def nbytes_per_station(self, state: ChainState) -> int:
        return sum(state[s.name].nbytes_per_station() for s in self.stages[:-1] if s.name in state)

    def _matcher_for(self, meta: StationMeta) -> PatternMatcher:
        # keyed on the contents, as the meter's layout is: same size is not same fleet
        key = (meta.kind_idx.tobytes(), meta.region_idx.tobytes(), meta.group_idx.tobytes())
        if self._matcher is None or self._matcher_meta != key:
            assert self.patterns
            self._matcher = PatternMatcher(self.patterns, meta.kind_idx, meta.region_idx,
                                           self.tick_s, group_idx=meta.group_idx)
            self._matcher_meta = key
        return self._matcher

    def step_stations(self, state: ChainState, cells: Mapping[str, Array], *,
                      tick: int | None = None) -> tuple[dict[str, Array], dict[str, Any]]:
        """The first stage: every station's detectors on its own closed tick cells.

        ``cells`` needs ``count`` and ``hist``; ``slot`` (the tick's slot of the day)
        enables the periodicity check; ``value_last`` feeds a price regime model and,
        with ``kind_idx`` (each station's kind index), the price trend and scale charts.
        Returns the station evidence (:data:`~convergence.detectors.evidence.EVIDENCE_Z`,
        ``concentration_bin``, the pattern flags and ``regime`` when a model runs; not yet
        settled) and each stage's outputs.
        """
        count = cells["count"]
        local = state[self.station_node.name]
        anomalous = local["state"] == ANOMALOUS
        out: dict[str, Any] = {}
        ent_in: dict[str, Array] = {"count": count, "hist": cells["hist"], "anomalous": anomalous}
        per = None
        if "slot" in cells:
            per = self.periodicity.step(state[self.periodicity.name],
                                        {"count": count, "slot": cells["slot"]})
            out["periodicity"] = per
            # the daily profile, where trusted, is the seasonal activity baseline
            ent_in["seasonal_mu"] = per["periodicity_expected"]
            ent_in["seasonal_var"] = per["periodicity_var"]
            ent_in["seasonal_judged"] = per["periodicity_judged"]
        out["entropy"] = ent = self.entropy.step(state[self.entropy.name], ent_in)
        out["burst"] = bur = self.burst.step(state[self.burst.name], {"count": count})
        out["cusum"] = cus = self.cusum.step(state[self.cusum.name], {"count": count})
        trend_z, scale_z = self._trend_and_scale(state, cells, out)
        zero = np.zeros(np.shape(count))
        ev: dict[str, Array] = {
            "burst_z": bur["burst_z"], "concentration_z": ent["concentration_z"],
            "cusum_z": cus["cusum_z"],
            "periodicity_z": per["periodicity_z"] if per is not None else zero,
            "regime_z": zero, "concentration_bin": ent["concentration_bin"],
            "burst": bur["burst"], "change_level": cus["change_level"],
            "change_variance": cus["change_variance"],
            "periodicity_break": (per["periodicity_break"] if per is not None
                                  else np.zeros(np.shape(count), bool)),
            "trend_z": trend_z, "scale_z": scale_z,
        }
        if self.regime is not None and self.regime_features is not None:
            price = self.regime_features.kind == "price"
            feat_in = ({"value": cells["value_last"], "missing": count <= 0} if price
                       else {"value": count})
            feats = self.regime_features.step(state[self.regime_features.name], feat_in)["features"]
            reg = self.regime.step(state[self.regime.name], {"features": feats})
            out["regime"] = reg
            ev["regime_z"] = reg["regime_z"]
            ev["regime"] = reg["regime"]
        # the station's own verdict, for the next tick's entropy learning
        self.station_node.step(local, {"burst_z": ev["burst_z"],
                                       "entropy_drop_z": ev["concentration_z"],
                                       "cusum_z": ev["cusum_z"],
                                       "periodicity_z": ev["periodicity_z"],
                                       "regime_z": ev["regime_z"],
                                       "trend_z": ev["trend_z"], "scale_z": ev["scale_z"]})
        return ev, out

    def _trend_and_scale(self, state: ChainState, cells: Mapping[str, Array],
                         out: dict[str, Any]) -> tuple[Array, Array]:
        """Each station's trend and scale evidence (see the module docstring)."""
        count = np.asarray(cells["count"], np.float64)
        act = np.log1p(np.maximum(count, 0.0))
        out["trend"] = tr = self.trend.step(state[self.trend.name], {"value": act})
        out["scale"] = sc = self.scale.step(state[self.scale.name], {"value": act})
        trend_z, scale_z = np.maximum(tr["trend_z"], 0.0), np.maximum(sc["scale_z"], 0.0)
        value, kind = cells.get("value_last"), cells.get("kind_idx")
        if value is not None and kind is not None:
            v = np.asarray(value, np.float64)
            with np.errstate(all="ignore"):
                k = np.asarray(kind, np.int64)
                applies = self._value_applies[np.clip(k, 0, None)] & (k >= 0)  # -1: no kind
                priced = applies & (count > 0) & (v > 0)
                lv = np.where(priced, np.log(np.where(priced, v, 1.0)), np.nan)
            out["price_trend"] = ptr = self.price_trend.step(state[self.price_trend.name],
                                                             {"value": lv})
            out["price_scale"] = psc = self.price_scale.step(state[self.price_scale.name],
                                                             {"value": lv})
            trend_z = np.maximum(trend_z, np.abs(ptr["trend_z"]))
            scale_z = np.maximum(scale_z, psc["scale_z"])
        return trend_z, scale_z

    def step_regions(self, state: ChainState, ev: Mapping[str, Array], meta: StationMeta, *,
                     tick: int | None = None, params: RunParams | None = None,
                     dark_z: Array | None = None) -> dict[str, Any]:
        """The second stage: a region's settled station evidence in; topic agreement,
        temporal patterns, node states and the meter out.

        ``ev`` is what :meth:`step_stations` returned, settled
        (:func:`~convergence.detectors.evidence.settle`); ``dark_z`` is evidence for
        stations whose source went dark. Only the stations' own region matters to any of
        these: regions may be stepped apart or together, with the same result.
        """
        node_state = state[self.node.name]["state"]
        anomalous = node_state == ANOMALOUS
        out: dict[str, Any] = {}
        conc_z = ev["concentration_z"]
        topic_z = topic_agreement(conc_z, ev["concentration_bin"], meta.region_idx,
                                  meta.group_idx, self.entropy.n_bins)
        out["topic_z"] = topic_z
        # the node's topic evidence is the calibrated concentration test (and the region's
        # agreement on a topic); the entropy-drop z of a few events a tick is too heavy-tailed
        # to convict a station (in pure noise it passed 4 sd 50 times as often as a normal z)
        node_in: dict[str, Array] = {"burst_z": ev["burst_z"],
                                     "entropy_drop_z": np.maximum(conc_z, topic_z),
                                     "cusum_z": ev["cusum_z"],
                                     "periodicity_z": ev["periodicity_z"],
                                     "trend_z": ev["trend_z"], "scale_z": ev["scale_z"]}
        if self.regime is not None:
            applies = self._regime_applies[meta.kind_idx]
            node_in["regime_z"] = np.where(applies, ev["regime_z"], 0.0)
        matches: list[Any] = []
        if _MATCHER in state:
            matcher = self._matcher_for(meta)
            if state[_MATCHER] is None:
                state[_MATCHER] = matcher.init_state(tuple(np.shape(conc_z)[:-1]))
            signals = {"burst": ev["burst"], "change_level": ev["change_level"],
                       "change_variance": ev["change_variance"], "anomalous": anomalous,
                       "periodicity_break": ev["periodicity_break"]}
            mo = matcher.step(state[_MATCHER], signals)
            pz = mo.pattern_z
            if params is not None and params.pattern_weight is not None:
                # the node machine weighs pattern evidence by its own weight: rescale per run
                rel = np.asarray(params.pattern_weight, np.float64) / max(
                    self.node.weights["pattern"], 1e-12)
                pz = pz * rel[..., None]
            node_in["pattern_z"] = pz
            matches = mo.matches
        out["matches"] = matches
        if dark_z is not None:
            node_in["dark_z"] = dark_z
        if meta.quarantined is not None:
            node_in["quarantined"] = meta.quarantined
        if meta.threshold_scale is not None:
            node_in["threshold_scale"] = meta.threshold_scale
        out["node"] = node = self.node.step(state[self.node.name], node_in)
        meter_in: dict[str, Array] = {"since": node["since"], "peak": node["peak"],
                                      "peak_top": node["peak_top"],
                                      "kind_idx": meta.kind_idx, "group_idx": meta.group_idx,
                                      "region_idx": meta.region_idx}
        if meta.quarantined is not None:
            meter_in["quarantined"] = meta.quarantined
        if tick is not None:
            meter_in["tick"] = np.asarray(tick, np.int64)
        if params is not None:
            if params.thresholds is not None:
                meter_in["thresholds"] = params.thresholds
            if params.window_ticks is not None:
                meter_in["window_ticks"] = params.window_ticks
        out["meter"] = self.meter.step(state[self.meter.name], meter_in)
        return out

    def step(self, state: ChainState, cells: Mapping[str, Array], meta: StationMeta, *,
             tick: int | None = None, params: RunParams | None = None) -> dict[str, Any]:
        """Advance one tick for every station (and every leading index): both stages, with
        the station evidence settled in between exactly as it crosses between them.

        ``cells`` needs ``count`` and ``hist``; ``slot`` (the tick's slot of the day)
        enables the periodicity check; ``dark_z`` is evidence for stations whose source
        went dark (the runtime knows, from the station agents). ``tick`` names the tick
        (episodes record where they began); ``params`` overrides settings per run.
        """
        ev, det = self.step_stations(state, cells, tick=tick)
        settled, _ = settle(ev, self.floor, self.floor_scale)
        out = self.step_regions(state, settled, meta, tick=tick, params=params,
                                dark_z=cells.get("dark_z"))
        return {**det, **out, "evidence": settled}

"""The tick processor: closed tick cells in; evidence, node states, meter and responses out.

One pure, vectorised step that every runtime calls — the embedded runtime and the Faust
worker (through :class:`~convergence.streams.pipeline.Pipeline`, which adds validation,
ingest and report synthesis around it) and the Monte Carlo simulator (directly, on
``(runs, stations)`` arrays)::

    cells ──▶ detectors (entropy, burst, CUSUM, periodicity, regime, patterns)
          ──▶ node states ──▶ per-region meter ──▶ adaptive responses
                  ▲                                        │
                  └──── quarantine, sensitivity ◀──────────┘ (next tick)

What the responses decide feeds back into the next tick: a quarantined station is held
at ``normal`` and ignored by the meter, a region under warning has more sensitive node
thresholds. A station whose source went dark (its agent's breaker opened) gets
:data:`DARK_Z` of evidence. A person's ``quarantine``/``resume`` reaches the response
state through :meth:`TickProcessor.apply_manual`.

The state (:class:`ProcessorState`, a dict of every stage's arrays plus the pattern
matcher's) is explicit; :func:`state_to_dict` / :func:`state_from_dict` checkpoint it.

Examples
--------
>>> import numpy as np
>>> proc = TickProcessor()
>>> meta = StationMeta(kind_idx=np.array([0, 1, 1, 4]), group_idx=np.arange(4),
...                    region_idx=np.zeros(4, int))
>>> state = proc.init_state((4,), n_regions=1)
>>> rng = np.random.default_rng(0)
>>> levels = []
>>> for t in range(40):
...     counts = rng.poisson(3.0, 4).astype(float) * (8 if t >= 30 else 1)
...     hist = np.zeros((4, 16)); hist[:, 0] = counts
...     out = proc.step(state, {"count": counts, "hist": hist}, meta, tick=t, time_s=t + 1.0)
...     levels.append(int(out.meter["level"][0]))
>>> LEVELS[max(levels)], bool(out.bursting.all())   # responded: every station samples fast
('warning', True)
>>> state_from_dict(state_to_dict(state)).keys() == state.keys()
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergence.detectors.base import Array, ArrayState
from convergence.detectors.chain import ChainState, DetectorChain, RunParams, StationMeta
from convergence.detectors.evidence import settle
from convergence.detectors.meter import LEVELS
from convergence.detectors.patterns import Match, MatcherState
from convergence.detectors.periodicity import slot_of
from convergence.detectors.responses import ResponsePolicy, ResponseStage

__all__ = ["DARK_Z", "LEVELS", "ProcessorState", "RunParams", "StationMeta", "TickOutput",
           "TickProcessor", "state_from_dict", "state_to_dict"]

#: evidence (sd) of a station whose source keeps failing: enough to make it an anomalous
#: node, so several going dark together in a region converge like any signal (one kind
#: going dark alone stays below warning: the meter needs several kinds and OSINT)
DARK_Z = 6.0

ProcessorState = ChainState
_RESPONSES = "responses"
_MATCHER = "patterns"


@dataclass
class TickOutput:
    """What one tick produced, with the leading shape of the state.

    ``meter`` arrays are per region ``(..., regions)``; ``node`` and the masks per station
    ``(..., stations)``; ``responses`` holds this tick's decisions (see
    :class:`~convergence.detectors.responses.ResponseStage`); ``quarantined``,
    ``threshold_scale`` and ``bursting`` are what was in force during the tick.
    """

    detectors: dict[str, Any]
    node: dict[str, Array]
    meter: dict[str, Array]
    responses: dict[str, Array]
    matches: list[Match]
    quarantined: Array
    threshold_scale: Array
    bursting: Array


class TickProcessor:
    """Detectors, node states, the per-region meter and responses, stepped per tick.

    Parameters
    ----------
    chain
        The detector chain (detectors, patterns, node machine, meter); default settings
        when omitted.
    responses
        The adaptive-response stage; pass ``ResponseStage(policy)`` to tune it.
    """

    def __init__(self, chain: DetectorChain | None = None,
                 responses: ResponseStage | None = None) -> None:
        self.chain = chain or DetectorChain()
        self.responses = responses or ResponseStage(ResponsePolicy())

    @property
    def tick_s(self) -> float:
        return self.chain.tick_s

    def init_state(self, shape: tuple[int, ...], n_regions: int = 1) -> ProcessorState:
        """Fresh state for leading shape ``(..., stations)`` and ``n_regions`` regions."""
        state = self.chain.init_state(shape, n_regions)
        state[_RESPONSES] = self.responses.init_state(shape)
        return state

    def init_station_state(self, shape: tuple[int, ...]) -> ProcessorState:
        """Fresh state of the first (station) stage only."""
        keys = set(self.station_keys())
        return {k: v for k, v in self.chain.init_state(shape, 1).items() if k in keys}

    def init_region_state(self, shape: tuple[int, ...], n_regions: int = 1) -> ProcessorState:
        """Fresh state of the second (region) stage only."""
        keys = set(self.region_keys())
        return {k: v for k, v in self.init_state(shape, n_regions).items() if k in keys}

    def grow(self, state: ProcessorState, n_stations: int, n_regions: int) -> None:
        """Widen the state for stations (and regions) that appeared (either stage's
        state, or both together)."""
        self.chain.grow(state, n_stations, n_regions)
        st = state.get(_RESPONSES)
        if st is not None and st.shape[-1] < n_stations:
            st.grow(n_stations, self.responses.init_state(st.shape[:-1] + (n_stations,)))

    def seed_baselines(self, state: ProcessorState, expected_counts: Array,
                       profile: Array | None = None) -> None:
        """Start activity baselines at known per-tick counts (``<= 0``: learn them), and
        the daily profile at known counts per slot of the day when ``profile`` is given."""
        self.chain.seed_baselines(state, expected_counts)
        if profile is not None:
            self.chain.seed_profile(state, profile)

    def apply_manual(self, state: ProcessorState, *, quarantine_until: Array | None = None,
                     resume: Array | None = None) -> None:
        """A person's quarantine (until a time; NaN = none) or resume, per station."""
        self.responses.apply_manual(state[_RESPONSES], quarantine_until=quarantine_until,
                                    resume=resume)

    def nbytes_per_station(self, state: ProcessorState) -> int:
        resp = state.get(_RESPONSES)
        return int(self.chain.nbytes_per_station(state)
                   + (resp.nbytes_per_station() if resp is not None else 0))

    def station_keys(self) -> tuple[str, ...]:
        """State keys of the first (station) stage."""
        return self.chain.station_keys()

    def region_keys(self) -> tuple[str, ...]:
        """State keys of the second (region) stage, the responses included."""
        return (*self.chain.region_keys(), _RESPONSES)

    def step_stations(self, state: ProcessorState, cells: Mapping[str, Array], *,
                      tick: int) -> tuple[dict[str, Array], dict[str, Any]]:
        """The first stage for one closed tick: each station's detectors on its own cells.

        Returns the raw station evidence (settle it with :meth:`settle` before the second
        stage) and each stage's outputs. ``cells`` needs ``count`` and ``hist``; the
        tick's slot of the day is added when missing.
        """
        c = dict(cells)
        if "slot" not in c:
            c["slot"] = slot_of(tick * self.tick_s, self.chain.periodicity.slots_per_day)
        return self.chain.step_stations(state, c, tick=tick)

    def settle(self, ev: Mapping[str, Array]) -> tuple[dict[str, Array], Array]:
        """Station evidence as it crosses to the second stage (see
        :func:`~convergence.detectors.evidence.settle`), and the mask of active stations."""
        return settle(ev, self.chain.floor, self.chain.floor_scale)

    def step_regions(self, state: ProcessorState, ev: Mapping[str, Array], meta: StationMeta,
                     *, tick: int, time_s: float | Array, dark: Array | None = None,
                     params: RunParams | None = None) -> TickOutput:
        """The second stage for one closed tick: settled station evidence of the regions'
        stations in; node states, the per-region meter and responses out."""
        quarantined, scale, bursting = self.responses.effects(state[_RESPONSES], time_s)
        meta_t = dataclasses.replace(meta, quarantined=quarantined, threshold_scale=scale)
        dark_z = None if dark is None else np.where(dark, DARK_Z, 0.0)
        out = self.chain.step_regions(state, ev, meta_t, tick=tick, params=params, dark_z=dark_z)
        node, meter = out["node"], out["meter"]
        decided = self.responses.step(state[_RESPONSES], {
            "node_state": node["state"], "weights": meter["weights"],
            "region_idx": meta.region_idx, "level": meter["level"],
            "prev_level": meter["prev_level"], "time_s": np.asarray(time_s, np.float64),
            **({} if dark is None else {"dark": dark})})
        return TickOutput({**out, "evidence": dict(ev)}, node, meter, decided, out["matches"],
                          quarantined, scale, bursting)

    def step(self, state: ProcessorState, cells: Mapping[str, Array], meta: StationMeta, *,
             tick: int, time_s: float | Array, dark: Array | None = None,
             params: RunParams | None = None) -> TickOutput:
        """Advance one tick (``time_s``: the tick's end, event time): both stages, the
        station evidence settled in between exactly as it crosses between them.

        ``cells`` needs ``count`` and ``hist`` (``value_last`` with a price regime model);
        the tick's slot of the day is added when missing. ``dark`` marks stations whose
        source went dark; ``params`` overrides settings per run.
        """
        ev, det = self.step_stations(state, cells, tick=tick)
        settled, _ = self.settle(ev)
        out = self.step_regions(state, settled, meta, tick=tick, time_s=time_s, dark=dark,
                                params=params)
        out.detectors = {**det, **out.detectors}
        return out


def state_to_dict(state: ProcessorState) -> dict[str, Any]:
    """A JSON-able checkpoint of a processor state (every stage, the matcher included)."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        if isinstance(v, ArrayState):
            out[k] = {"arrays": v.to_dict()}
        elif isinstance(v, MatcherState):
            out[k] = {"matcher": v.to_dict()}
        elif v is None:
            out[k] = None
        else:  # pragma: no cover - a new kind of state must be taught here
            raise TypeError(f"cannot checkpoint state {k!r} of type {type(v).__name__}")
    return out


def state_from_dict(d: Mapping[str, Any]) -> ProcessorState:
    """The state :func:`state_to_dict` saved."""
    state: ProcessorState = {}
    for k, v in d.items():
        if v is None:
            state[k] = None
        elif "arrays" in v:
            state[k] = ArrayState.from_dict(v["arrays"])
        else:
            state[k] = MatcherState.from_dict(v["matcher"])
    return state

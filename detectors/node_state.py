"""Per-station node state with hysteresis: normal → elevated → anomalous → cooling.

The node machine turns noisy per-tick evidence into a steady per-station verdict the
convergence meter can fuse. Entering ``anomalous`` needs the evidence at or above
``enter_at`` for ``min_ticks`` consecutive ticks (or one tick at ``strong_at``);
leaving it needs ``cooldown_ticks`` ticks below ``calm_at``. Between those
thresholds the state holds, so a node does not flap.

Each station also keeps, for the current episode, its peak evidence split by type
(burst, entropy) so every meter score can say *why* a node counted, and
``ticks_since`` — ticks since it was last anomalous (the meter's sliding window).
A quarantined station is held at ``normal``; an optional ``threshold_scale`` input
(per station) scales ``enter_at`` and ``strong_at`` — the adaptive responses use it.

Examples
--------
>>> import numpy as np
>>> m = NodeStateMachine(enter_at=4.0, min_ticks=2, calm_at=2.0, cooldown_ticks=2)
>>> st = m.init_state((1,))
>>> ev = [0, 5, 5, 6, 1, 1, 1, 0]
>>> [NODE_STATES[int(m.step(st, {"burst_z": np.array([e]), "entropy_drop_z": np.zeros(1)})["state"][0])]
...  for e in ev]
['normal', 'elevated', 'anomalous', 'anomalous', 'cooling', 'normal', 'normal', 'normal']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convergence.detectors.base import (
    Array,
    ArrayState,
    Outputs,
    Spec,
    Stage,
    check_positive,
    check_unit_interval,
    fuse_top2,
)

NORMAL, ELEVATED, ANOMALOUS, COOLING = 0, 1, 2, 3
#: default weights of the trend and scale charts' evidence: corroborators (see
#: ``NodeStateMachine``'s ``weights``)
TREND_WEIGHT, SCALE_WEIGHT = 0.3, 0.3
NODE_STATES = ("normal", "elevated", "anomalous", "cooling")
#: evidence types; new ones are appended (a checkpoint's per-type peak of an older build
#: is padded with zeros for them: :func:`pad_peak`)
EVIDENCE_TYPES = ("burst", "entropy", "regime", "change", "periodicity", "pattern", "dark",
                  "trend", "scale")
#: input name and default weight of each evidence type, in ``EVIDENCE_TYPES`` order
EVIDENCE_INPUTS = (("burst_z", 1.0), ("entropy_drop_z", 1.0), ("regime_z", 1.0),
                   ("cusum_z", 0.3), ("periodicity_z", 0.8), ("pattern_z", 0.5), ("dark_z", 1.0),
                   ("trend_z", TREND_WEIGHT), ("scale_z", SCALE_WEIGHT))
#: the family of each evidence type, in ``EVIDENCE_TYPES`` order: types of one family
#: measure the same thing (the burst chart and the daily-profile check both read this
#: tick's count against its expectation; the trend and scale charts read the count's
#: slope and swings), so they never corroborate each other
EVIDENCE_FAMILIES = ("activity", "topic", "regime", "change", "activity", "pattern", "dark",
                     "activity", "activity")
NEVER = 1e9


def pad_peak(peak: Array) -> Array:
    """A per-type peak (last axis: evidence types) from an older build, with zeros for
    the types added since (they are appended to ``EVIDENCE_TYPES``).

    >>> import numpy as np
    >>> pad_peak(np.ones((2, 7))).shape, pad_peak(np.ones((2, len(EVIDENCE_TYPES)))).shape
    ((2, 9), (2, 9))
    """
    p = np.asarray(peak)
    short = len(EVIDENCE_TYPES) - p.shape[-1]
    if short < 0:
        raise ValueError(f"peak has {p.shape[-1]} evidence types, this build knows "
                         f"{len(EVIDENCE_TYPES)}")
    if short == 0:
        return p
    out: Array = np.concatenate([p, np.zeros(p.shape[:-1] + (short,), p.dtype)], axis=-1)
    return out


class NodeStateMachine(Stage):
    """Hysteresis over fused node evidence.

    Parameters
    ----------
    enter_at
        Evidence (in baseline standard deviations) that counts towards anomalous.
    min_ticks
        Consecutive ticks at ``enter_at`` needed to enter anomalous.
    strong_at
        Evidence that makes a node anomalous in a single tick.
    elevate_at
        Evidence that lifts a normal node to elevated.
    calm_at
        Below this a node starts calming down.
    cooldown_ticks
        Ticks below ``calm_at`` before cooling returns to normal.
    entropy_weight
        Weight of the entropy-drop z in the fused evidence.
    weights
        Optional weight per evidence type (``EVIDENCE_TYPES`` names). CUSUM change
        evidence defaults to 0.3, a corroborator only: it holds its alarm value for
        the ticks its baseline re-learns, and at weight 0.9 it raised the runs with a
        false alarm from 0 to 10 of 200 in simulation (``simulation/``), for +4
        detections of 91. Temporal-pattern evidence defaults to 0.5 for the same reason:
        a completed pattern lowers the bar for the stations in it (a pattern at the
        matcher's ``match_z`` of 6 adds 3, so a participant needs about 2.5 of its own)
        but cannot make a station anomalous alone. At 1.0 it revived stations whose
        burst was long over, chance cascades of noise bursts met the OSINT rule, and
        the runs with a false alarm rose from 6 to 16 of 600 simulated runs for +1
        detection of 318 (``simulation/``, 60 one-second ticks, 247 stations).
        Trend and scale evidence (the trend and scale charts on a station's activity
        and, for a market price, its price) default to 0.3 and belong to the *activity*
        family: on most stations they read the same count the burst chart reads (a
        burst lifts the fast average of the trend chart and makes a big one-tick
        change), so they must not corroborate it. They count where they are a
        station's strongest activity evidence (a ramp the burst chart's baseline
        follows) and corroborate the other families. In the seed-11 campaign (100 runs
        of 41 scenarios), as their own families they added a daily-cycle false alarm
        and no detection; at 0.5 (trend) they added 8 false-alarm runs (slow-drift,
        daily-peak, daily-cycle), at 0.75 (both) 42: a region-wide slow ramp is what a
        trend on activity sees.
    corroboration
        Share of the second-strongest evidence *family* added to the strongest: two
        detectors agreeing count for more than either alone, but only when they read
        different things (``EVIDENCE_FAMILIES``). The burst chart and the daily-profile
        check are one family, the tick's activity: when they were fused as two, one
        chance count spike (7 events where 1.3 were expected) corroborated itself, a
        burst of 3.2 sd became 4.5, and a lone social station turned anomalous beside a
        market move (the Las Vegas false alarm in ``docs/campaigns.md``).
    """

    name = "node"

    def __init__(self, enter_at: float = 4.0, min_ticks: int = 2, strong_at: float = 9.0,
                 elevate_at: float = 2.5, calm_at: float = 2.0, cooldown_ticks: int = 3,
                 entropy_weight: float = 1.0, weights: Mapping[str, float] | None = None,
                 corroboration: float = 0.5) -> None:
        for nm, v in (("enter_at", enter_at), ("strong_at", strong_at),
                      ("elevate_at", elevate_at), ("calm_at", calm_at)):
            check_positive(nm, v)
        if not calm_at <= elevate_at <= enter_at <= strong_at:
            raise ValueError("need calm_at <= elevate_at <= enter_at <= strong_at, got "
                             f"{calm_at}, {elevate_at}, {enter_at}, {strong_at}")
        if min_ticks < 1 or cooldown_ticks < 1:
            raise ValueError("min_ticks and cooldown_ticks must be >= 1")
        check_positive("entropy_weight", entropy_weight, allow_zero=True)
        self.enter_at = enter_at
        self.min_ticks = min_ticks
        self.strong_at = strong_at
        self.elevate_at = elevate_at
        self.calm_at = calm_at
        self.cooldown_ticks = cooldown_ticks
        self.entropy_weight = entropy_weight
        w = {t: dw for t, (_, dw) in zip(EVIDENCE_TYPES, EVIDENCE_INPUTS, strict=True)}
        w["entropy"] = entropy_weight
        for name, val in (weights or {}).items():
            if name not in w:
                raise ValueError(f"unknown evidence type {name!r}; use {', '.join(EVIDENCE_TYPES)}")
            check_positive(f"weights[{name!r}]", val, allow_zero=True)
            w[name] = float(val)
        self.weights = w
        check_unit_interval("corroboration", corroboration)
        self.corroboration = corroboration

    def state_spec(self) -> Spec:
        return {
            "state": ((), NORMAL, np.int8),
            "run": ((), 0, np.int32),
            "calm": ((), 0, np.int32),
            "since": ((), NEVER),
            "peak": ((len(EVIDENCE_TYPES),), 0.0),
            "peak_top": ((), 0.0),
            "onset": ((), 0.0),
        }

    def fuse(self, inputs: Mapping[str, Array]) -> tuple[Array, Array]:
        """Fused evidence and its per-type parts, shape ``(..., len(EVIDENCE_TYPES))``."""
        ev, parts, _ = self._fuse(inputs)
        return ev, parts

    def _fuse(self, inputs: Mapping[str, Array]) -> tuple[Array, Array, Array]:
        """Fused evidence, per-type parts and the strongest part (top-two tracked in one pass)."""
        burst = inputs["burst_z"]
        parts = np.zeros(burst.shape + (len(EVIDENCE_TYPES),))
        family: dict[str, Array] = {}  # the strongest part of each family present
        for j, (t, (name, _), fam) in enumerate(zip(EVIDENCE_TYPES, EVIDENCE_INPUTS,
                                                   EVIDENCE_FAMILIES, strict=True)):
            x = inputs.get(name)
            if x is not None:
                # only activity above the daily profile is evidence: a whole region falling
                # quiet (a holiday lull) is not a convergence, and a source that goes dark
                # has evidence of its own (``dark_z``)
                x = np.maximum(x, 0.0)
                wx = self.weights[t] * x
                parts[..., j] = wx
                wx = np.broadcast_to(wx, burst.shape)
                seen = family.get(fam)
                family[fam] = wx if seen is None else np.maximum(seen, wx)
        ev, top = fuse_top2(family.values(), self.corroboration)
        return ev, parts, top

    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        ev, parts, top = self._fuse(inputs)
        q = inputs.get("quarantined")
        if q is not None:
            ev = np.where(q, 0.0, ev)
            parts = np.where(q[..., None], 0.0, parts)
            top = np.where(q, 0.0, top)
        # adaptive sensitivity: a region under watch may lower its bar (scale < 1)
        scale = inputs.get("threshold_scale")
        enter_at = self.enter_at if scale is None else self.enter_at * scale
        strong_at = self.strong_at if scale is None else self.strong_at * scale
        s, run, calm = state["state"], state["run"], state["calm"]
        run[...] = np.where(ev >= enter_at, run + 1, 0)
        enter = (run >= self.min_ticks) | (ev >= strong_at)
        quiet = ev < self.calm_at
        calm[...] = np.where(quiet, calm + 1, 0)
        new = s.copy()  # the pre-step state ``s`` is still read below
        new[(s == NORMAL) & (ev >= self.elevate_at)] = ELEVATED
        new[(s == ELEVATED) & quiet] = NORMAL
        new[(s == ANOMALOUS) & quiet] = COOLING
        new[(s == COOLING) & (calm >= self.cooldown_ticks)] = NORMAL
        new[((s == NORMAL) | (s == ELEVATED) | (s == COOLING)) & enter] = ANOMALOUS
        onset = (new == ANOMALOUS) & (s != ANOMALOUS) & (s != COOLING)
        state["peak"][...] = np.where(onset[..., None], parts,
                                      np.maximum(state["peak"], parts * (new == ANOMALOUS)[..., None]))
        # the strongest single evidence type of the episode, max over ``peak`` kept as it
        # grows (the meter reads it every tick; checkpoints from before it existed rebuild it)
        if "peak_top" not in state:
            state["peak_top"] = state["peak"].max(-1)
        peak_top = state["peak_top"]
        peak_top[...] = np.where(onset, top, np.maximum(peak_top, top * (new == ANOMALOUS)))
        state["onset"][...] = np.where(onset, 0.0, state["onset"] + 1.0)
        s[...] = new
        since = state["since"]
        since[...] = np.where(new == ANOMALOUS, 0.0, np.minimum(since + 1.0, NEVER))
        return {"state": new, "evidence": ev, "since": since.copy(),
                "peak": state["peak"].copy(), "peak_top": peak_top.copy()}

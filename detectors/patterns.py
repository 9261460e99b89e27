"""Temporal patterns (TETH): declarative cross-station sequences, matched as a stream.

A *pattern* says "this kind of station signals, then that kind, within so many
seconds, then ...". Patterns are written in TOML and compiled once by
:func:`~convergence.detectors.pattern_language.compile_patterns` (the language and its
errors live in :mod:`convergence.detectors.pattern_language`; its names are re-exported
here), then run by :class:`PatternMatcher`, a streaming automaton stepped once per tick.

Semantics, precisely
--------------------
*Events.* The matcher is fed, per tick, one boolean array per signal (``(stations,)``).
A signal *fires* at a station on its rising edge — the tick it turns true — so a burst
lasting five ticks is one event, not five (``onsets=False`` counts every true tick,
for inputs that are already one-tick events). An *event for step j* in key ``K`` is
the set of stations whose kind is step j's kind, whose key is ``K`` and at which step
j's signal fired this tick; stations firing together in one tick are one event, so a
step of a :class:`Match` can hold several stations.

*Keys.* With ``same = ["region"]`` the key of a station is ``(region_idx,)``; every
step of a match has the first step's key. Without ``same`` the key is ``()``: any
stations may combine.

*Windows.* Step j+1 at tick ``t'`` may follow step j at tick ``t`` iff
``0 < t' - t`` and ``(t' - t) * tick_s <= within_s``: steps are strictly ordered
(stations signalling in the same tick have no order, and co-occurrence is the
convergence meter's business), and the window is inclusive. A partial match whose
window has passed is dropped (counted as ``expired``).

*Starts.* Every event for step 1 starts a new partial match, under every strategy.

Skip strategies (after SASE / Flink CEP)
----------------------------------------
``skip_till_next_match`` (default)
    Events that do not continue a partial match are ignored; it binds the *first*
    event for its next step and moves on. Each start yields at most one match.
``strict_contiguity``
    The next step must come at the very next tick, after the partial match's last
    step, at which anything *relevant* happens in its key — relevant meaning an event
    for any step of the pattern. If that tick brings relevant events but none for the
    next step, the partial match dies (counted as ``killed``). So social → social →
    news kills the first social's match (the second social intervened) and keeps the
    second's.
``skip_till_any_match``
    Every event for the next step within the window extends a *copy* of the partial
    match, and the original keeps waiting for later ones: all combinations are
    reported (matches can multiply; the memory cap bounds them).

Memory
------
At most ``max_partial`` partial matches are kept per pattern and key; beyond that
the one with the earliest start is evicted (counted as ``evicted``). With ``R``
distinct keys there are at most ``patterns * R * max_partial`` partial matches, each
a few small tuples (the stations and tick of each bound step), whatever the input
rate. State (:class:`MatcherState`) is plain data with :meth:`MatcherState.to_dict`
and :meth:`MatcherState.from_dict`.

Leading dimensions
------------------
Inputs may be one live batch ``(stations,)`` or many independent runs ``(runs,
stations)`` (any leading shape works; it is flattened, and a match's ``run`` is the
flat index). Runs never mix: in a batched state every key is prefixed with its run,
so windows, skip strategies and the memory cap apply per run and key exactly as they
would to that run alone, and a batched step gives the same matches as stepping each
run separately. Rising edges, the held ``pattern_z`` and the search for this tick's
events are array operations over every run at once; per-partial bookkeeping is done
only for keys with an event this tick or a partial match whose window has just
closed, so a quiet tick costs almost nothing however many partial matches wait.
Counters are summed over runs.

Evidence for the node-state machine: ``pattern_z`` is ``match_z`` (default 6.0) at
every station that took part in a match completed this tick, held for ``hold_ticks``
ticks (default 2, so the node machine's default ``min_ticks=2`` at ``enter_at=4``
makes those stations anomalous), else 0.

Examples
--------
>>> import numpy as np
>>> patterns = compile_patterns(DEFAULT_PATTERNS)
>>> kinds = np.array([KIND_INDEX[k] for k in ("osint_social", "osint_news", "market_volume")])
>>> matcher = PatternMatcher(patterns, kinds, np.zeros(3, int), tick_s=60.0)
>>> state = matcher.init_state()
>>> def tick(*stations):
...     burst = np.zeros(3, bool); burst[list(stations)] = True
...     return matcher.step(state, {"burst": burst})
>>> out = tick(0); out = tick(); out = tick(1)    # social at 0, news at 2 (2 min later)
>>> [tick() for _ in range(5)][-1].matches
[]
>>> out = tick(2)                                 # market volume at 8 (6 min after news)
>>> out.matches
[Match(pattern='social-news-market', key=(0,), stations=((0,), (1,), (2,)), ticks=(0, 2, 8))]
>>> out.pattern_z.tolist(), tick().pattern_z.tolist(), tick().pattern_z.tolist()
([6.0, 6.0, 6.0], [6.0, 6.0, 6.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.pattern_language import (
    _COUNTERS,
    DEFAULT_PATTERNS,
    MAX_STEPS,
    SAME_ATTRIBUTES,
    SIGNALS,
    Pattern,
    SkipStrategy,
    Step,
    compile_patterns,
)
from convergence.schema import KIND_INDEX

__all__ = [
    "DEFAULT_PATTERNS",
    "MAX_STEPS",
    "SAME_ATTRIBUTES",
    "SIGNALS",
    "Match",
    "MatcherOutput",
    "MatcherState",
    "Partial",
    "Pattern",
    "PatternMatcher",
    "SkipStrategy",
    "Step",
    "compile_patterns",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Match:
    """A completed pattern: its key, the stations and tick of each step.

    ``run`` is the (flat) run index when the matcher was stepped with a leading runs
    axis, ``None`` for a live ``(stations,)`` batch.
    """

    pattern: str
    key: tuple[int, ...]
    stations: tuple[tuple[int, ...], ...]
    ticks: tuple[int, ...]
    run: int | None = None

    def __repr__(self) -> str:
        run = "" if self.run is None else f", run={self.run}"
        return (f"Match(pattern={self.pattern!r}, key={self.key!r}, stations={self.stations!r}, "
                f"ticks={self.ticks!r}{run})")

    @property
    def start_tick(self) -> int:
        return self.ticks[0]

    @property
    def end_tick(self) -> int:
        return self.ticks[-1]

    @property
    def all_stations(self) -> tuple[int, ...]:
        """Every station that took part, sorted, each once."""
        return tuple(sorted({s for step in self.stations for s in step}))


@dataclass(frozen=True)
class Partial:
    """A partial match: steps bound so far (the next step is ``len(ticks)``)."""

    seq: int  # creation order; breaks ties between equally old partial matches
    key: tuple[int, ...]
    stations: tuple[tuple[int, ...], ...]
    ticks: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "key": list(self.key),
                "stations": [list(s) for s in self.stations], "ticks": list(self.ticks)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Partial:
        return cls(int(d["seq"]), tuple(int(k) for k in d["key"]),
                   tuple(tuple(int(x) for x in s) for s in d["stations"]),
                   tuple(int(t) for t in d["ticks"]))


Key = tuple[int, ...]


@dataclass
class MatcherState:
    """Everything a :class:`PatternMatcher` remembers between ticks.

    ``lead`` is the leading shape the state was made for (``()`` for one live batch,
    ``(runs,)`` for a batch of runs); ``partial[pattern][key]`` lists the live partial
    matches, oldest first (in a batched state each key starts with its flat run index);
    ``prev[signal]`` is last tick's input (for rising edges), shape ``(*lead,
    stations)``; ``hold`` is the number of ticks each station's ``pattern_z`` stays on;
    ``counters[pattern]`` counts ``started``, ``matched``, ``expired``, ``killed`` and
    ``evicted`` partial matches (summed over runs). ``due`` is a cache the matcher
    keeps: per key, the last tick before its oldest window closes (rebuilt after
    :meth:`from_dict`).
    """

    tick: int = 0
    next_seq: int = 0
    partial: dict[str, dict[Key, list[Partial]]] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    prev: dict[str, BoolArray] = field(default_factory=dict)
    hold: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    lead: tuple[int, ...] = ()
    due: dict[str, dict[Key, int]] | None = field(default=None, repr=False, compare=False)

    def n_partial(self, pattern: str | None = None) -> int:
        """Live partial matches of one pattern (or of all), over every run."""
        names = [pattern] if pattern is not None else list(self.partial)
        return sum(len(runs) for n in names for runs in self.partial.get(n, {}).values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (plain lists and ints); see :meth:`from_dict`."""
        return {
            "tick": self.tick,
            "next_seq": self.next_seq,
            "lead": list(self.lead),
            "partial": {name: [r.to_dict() for key in sorted(by_key) for r in by_key[key]]
                        for name, by_key in self.partial.items()},
            "counters": {name: dict(c) for name, c in self.counters.items()},
            "prev": {sig: a.astype(bool).tolist() for sig, a in self.prev.items()},
            "hold": self.hold.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MatcherState:
        partial: dict[str, dict[Key, list[Partial]]] = {}
        for name, runs in d["partial"].items():
            by_key: dict[Key, list[Partial]] = {}
            for r in runs:
                p = Partial.from_dict(r)
                by_key.setdefault(p.key, []).append(p)
            partial[name] = by_key
        lead = tuple(int(x) for x in d.get("lead", ()))
        hold = np.asarray(d["hold"], dtype=np.int64)
        n = hold.shape[-1] if hold.size else 0
        return cls(
            tick=int(d["tick"]),
            next_seq=int(d["next_seq"]),
            partial=partial,
            counters={name: {k: int(v) for k, v in c.items()} for name, c in d["counters"].items()},
            prev={sig: np.asarray(a, dtype=bool).reshape(*lead, n) for sig, a in d["prev"].items()},
            hold=hold.reshape(*lead, n),
            lead=lead,
        )


@dataclass(frozen=True)
class MatcherOutput:
    """One tick's result: completed matches and per-station evidence ``(stations,)``."""

    matches: list[Match]
    pattern_z: FloatArray


@dataclass(frozen=True)
class _Compiled:
    """Per-pattern lookups the matcher precomputes."""

    kind: tuple[int, ...]  # kind index per step
    window: tuple[int, ...]  # window in ticks per step (step 0 unused)
    keys: list[Key]  # key per station
    kind_mask: tuple[BoolArray, ...]  # stations of each step's kind, (stations,) per step

    def due(self, run: Partial) -> int:
        """The last tick at which ``run`` may still take its next step."""
        return run.ticks[-1] + self.window[len(run.ticks)]


class PatternMatcher:
    """Streaming automaton over compiled patterns, for ``(stations,)`` or ``(runs, stations)``.

    Parameters
    ----------
    patterns
        Output of :func:`compile_patterns`.
    kind_idx, region_idx
        Per-station source-kind index (:data:`convergence.schema.KIND_INDEX`) and region
        index, shape ``(stations,)``.
    tick_s
        Length of one tick in seconds (turns ``within_s`` into ticks; a window shorter
        than one tick could never match and is rejected).
    group_idx
        Per-station correlation group, needed only by patterns with ``same = ["group"]``.
    max_partial
        Cap on partial matches per pattern and key; the oldest is evicted beyond it.
    match_z
        ``pattern_z`` of a station that took part in a completed match.
    hold_ticks
        Ticks ``pattern_z`` stays at ``match_z`` (the completing tick included).
    onsets
        Count a signal on its rising edge only (default); ``False`` counts every true tick.

    When the fleet grows, build a new matcher with the longer attribute arrays; an
    existing :class:`MatcherState` carries over (its per-station arrays are padded).

    Examples
    --------
    >>> import numpy as np
    >>> text = '''
    ... [[pattern]]
    ... name = "news-then-price"
    ... skip = "strict_contiguity"
    ... [[pattern.step]]
    ... kind = "osint_news"
    ... signal = "burst"
    ... [[pattern.step]]
    ... kind = "market_price"
    ... signal = "change_level"
    ... within_s = 120
    ... '''
    >>> kinds = np.array([KIND_INDEX["osint_news"], KIND_INDEX["market_price"]])
    >>> m = PatternMatcher(compile_patterns(text), kinds, np.array([0, 1]), tick_s=60.0)
    >>> st = m.init_state()
    >>> def fire(news: bool, price: bool) -> MatcherOutput:
    ...     return m.step(st, {"burst": np.array([news, False]),
    ...                        "change_level": np.array([False, price])})
    >>> [len(fire(*x).matches) for x in [(True, False), (False, False), (False, True)]]
    [0, 0, 1]
    >>> fire(False, False).pattern_z.tolist()  # held for a second tick
    [6.0, 6.0]
    >>> st.counters["news-then-price"]
    {'started': 1, 'matched': 1, 'expired': 0, 'killed': 0, 'evicted': 0}
    """

    name = "patterns"

    def __init__(self, patterns: Sequence[Pattern], kind_idx: npt.ArrayLike,
                 region_idx: npt.ArrayLike, tick_s: float, *,
                 group_idx: npt.ArrayLike | None = None, max_partial: int = 64,
                 match_z: float = 6.0, hold_ticks: int = 2, onsets: bool = True) -> None:
        kinds = np.asarray(kind_idx, dtype=np.int64)
        regions = np.asarray(region_idx, dtype=np.int64)
        if kinds.ndim != 1 or regions.shape != kinds.shape:
            raise ValueError("kind_idx and region_idx must be 1-D arrays of equal length "
                             f"(stations,), got shapes {kinds.shape} and {regions.shape}")
        groups = None if group_idx is None else np.asarray(group_idx, dtype=np.int64)
        if groups is not None and groups.shape != kinds.shape:
            raise ValueError(f"group_idx must have shape {kinds.shape}, got {groups.shape}")
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be > 0 seconds, got {tick_s!r}")
        if max_partial < 1:
            raise ValueError(f"max_partial must be >= 1, got {max_partial!r}")
        if not (math.isfinite(match_z) and match_z > 0):
            raise ValueError(f"match_z must be > 0, got {match_z!r}")
        if hold_ticks < 1:
            raise ValueError(f"hold_ticks must be >= 1, got {hold_ticks!r}")
        names = [p.name for p in patterns]
        if len(set(names)) != len(names):
            raise ValueError(f"pattern names must be unique, got {names}")
        self.patterns = tuple(patterns)
        self.kind_idx = kinds
        self.region_idx = regions
        self.group_idx = groups
        self.tick_s = float(tick_s)
        self.max_partial = max_partial
        self.match_z = match_z
        self.hold_ticks = hold_ticks
        self.onsets = onsets
        attrs: dict[str, IntArray | None] = {"region": regions, "group": groups}
        self._compiled: list[_Compiled] = []
        for p in self.patterns:
            window = [0]
            for j, step in enumerate(p.steps[1:], start=1):
                assert step.within_s is not None  # compile_patterns guarantees it
                # a tiny epsilon so 600 s / 60 s is 10 ticks despite float rounding
                w = math.floor(step.within_s / self.tick_s + 1e-9)
                if w < 1:
                    raise ValueError(f"pattern {p.name!r} step {j + 1}: within_s="
                                     f"{step.within_s:g} is shorter than one tick "
                                     f"({self.tick_s:g} s), so it could never match")
                window.append(w)
            cols = []
            for a in p.same:
                arr = attrs.get(a)
                if arr is None:
                    raise ValueError(f"pattern {p.name!r} needs same={a!r}; pass {a}_idx")
                cols.append(arr)
            keys: list[tuple[int, ...]] = (
                [tuple(int(v) for v in row) for row in np.stack(cols, axis=1)] if cols
                else [()] * len(kinds))
            kind = tuple(KIND_INDEX[s.kind.value] for s in p.steps)
            self._compiled.append(_Compiled(kind=kind, window=tuple(window), keys=keys,
                                            kind_mask=tuple(kinds == k for k in kind)))
        self.signals_used: tuple[str, ...] = tuple(sorted({s.signal for p in self.patterns
                                                           for s in p.steps}))

    @property
    def n_stations(self) -> int:
        return int(self.kind_idx.shape[0])

    def init_state(self, lead: tuple[int, ...] = ()) -> MatcherState:
        """Fresh state for inputs of shape ``(*lead, stations)``: nothing seen yet."""
        shape = (*lead, self.n_stations)
        return MatcherState(
            partial={p.name: {} for p in self.patterns},
            counters={p.name: dict.fromkeys(_COUNTERS, 0) for p in self.patterns},
            prev={sig: np.zeros(shape, bool) for sig in self.signals_used},
            hold=np.zeros(shape, np.int64),
            lead=tuple(lead),
            due={p.name: {} for p in self.patterns},
        )

    def _check_state(self, state: MatcherState) -> None:
        have, want = sorted(state.partial), sorted(p.name for p in self.patterns)
        if have != want:
            raise ValueError(f"state was made for patterns {have}, this matcher runs {want}")
        n = self.n_stations
        if state.hold.shape[-1] > n:
            raise ValueError(f"state has {state.hold.shape[-1]} stations, this matcher {n}")
        state.hold = _pad_last(state.hold, n)  # the fleet grew: new stations start quiet
        for sig in self.signals_used:
            state.prev[sig] = _pad_last(state.prev.get(sig, np.zeros((*state.lead, 0), bool)), n)
        if state.due is None:  # restored from a dict: rebuild the window cache
            state.due = {p.name: {key: min(cp.due(r) for r in runs)
                                  for key, runs in state.partial[p.name].items() if runs}
                         for p, cp in zip(self.patterns, self._compiled, strict=True)}

    def step(self, state: MatcherState, signals: Mapping[str, npt.ArrayLike]) -> MatcherOutput:
        """Advance one tick; update ``state`` in place.

        ``signals`` maps each signal the patterns use (:attr:`signals_used`) to a bool
        array ``(*lead, stations)`` with the state's leading shape; pass all-False for a
        detector that is not wired.
        """
        n = self.n_stations
        cur: dict[str, BoolArray] = {}
        for sig in self.signals_used:
            if sig not in signals:
                raise ValueError(f"signal {sig!r} is missing from the inputs; the patterns use "
                                 f"{', '.join(self.signals_used)} (pass all-False if not wired)")
            a = np.asarray(signals[sig]).astype(bool, copy=False)
            if a.ndim == 0 or a.shape[-1] != n or a.shape[:-1] != state.lead:
                raise ValueError(f"signal {sig!r} has shape {a.shape}; this matcher has {n} "
                                 f"stations and the state leading shape {state.lead}, so it "
                                 f"takes {(*state.lead, n)}")
            cur[sig] = a
        self._check_state(state)
        fired: dict[str, BoolArray] = {}
        for sig, a in cur.items():
            f = a & ~state.prev[sig] if self.onsets else a.copy()
            fired[sig] = f.reshape(-1, n)  # (flat runs, stations): one row for a live batch
            state.prev[sig] = a.copy()

        t = state.tick
        batched = bool(state.lead)
        matches: list[Match] = []
        for p, cp in zip(self.patterns, self._compiled, strict=True):
            matches += self._advance(state, p, cp, fired, t, batched)

        hold = state.hold.reshape(-1, n)  # a view: state.hold is contiguous
        for m in matches:
            hold[m.run or 0, list(m.all_stations)] = self.hold_ticks
        pattern_z = np.where(state.hold > 0, self.match_z, 0.0)
        np.subtract(state.hold, 1, out=state.hold, where=state.hold > 0)
        state.tick = t + 1
        return MatcherOutput(matches, pattern_z)

    def _events(self, p: Pattern, cp: _Compiled, fired: Mapping[str, BoolArray],
                batched: bool) -> list[dict[Key, tuple[int, ...]]]:
        """This tick's events per step, grouped by key (run first when batched)."""
        events: list[dict[Key, tuple[int, ...]]] = []
        for step, mask in zip(p.steps, cp.kind_mask, strict=True):
            runs, stations = np.nonzero(fired[step.signal] & mask)
            grouped: dict[Key, list[int]] = {}
            for r, s in zip(runs.tolist(), stations.tolist(), strict=True):
                grouped.setdefault((r, *cp.keys[s]) if batched else cp.keys[s], []).append(s)
            events.append({k: tuple(v) for k, v in grouped.items()})
        return events

    def _advance(self, state: MatcherState, p: Pattern, cp: _Compiled,
                 fired: Mapping[str, BoolArray], t: int, batched: bool) -> list[Match]:
        """One tick of one pattern: extend, expire or kill partial matches, then start new ones.

        Only keys with an event this tick, or whose oldest window closed before this
        tick, are visited; every other partial match is untouched by this tick anyway.
        """
        assert state.due is not None  # _check_state built it
        events = self._events(p, cp, fired, batched)
        relevant = {k for ev in events for k in ev}
        by_key = state.partial[p.name]
        due = state.due[p.name]
        counters = state.counters[p.name]
        last = len(p.steps)
        matches: list[Match] = []

        visit = sorted({k for k in relevant if k in by_key} | {k for k, d in due.items() if d < t})
        for key in visit:
            kept: list[Partial] = []
            branches: list[Partial] = []
            for run in by_key[key]:
                j = len(run.ticks)
                if t - run.ticks[-1] > cp.window[j]:
                    counters["expired"] += 1
                    continue
                stations = events[j].get(key)
                if stations is None:
                    if p.skip is SkipStrategy.STRICT_CONTIGUITY and key in relevant:
                        counters["killed"] += 1
                    else:
                        kept.append(run)
                    continue
                any_match = p.skip is SkipStrategy.SKIP_TILL_ANY_MATCH
                seq = state.next_seq if any_match else run.seq
                if any_match:
                    state.next_seq += 1
                    kept.append(run)  # the original keeps waiting for later events
                ext = Partial(seq, key, (*run.stations, stations), (*run.ticks, t))
                if j + 1 == last:
                    counters["matched"] += 1
                    matches.append(Match(p.name, key[1:] if batched else key, ext.stations,
                                         ext.ticks, run=key[0] if batched else None))
                elif any_match:
                    branches.append(ext)
                else:
                    kept.append(ext)
            by_key[key] = kept + branches

        for key, stations in sorted(events[0].items()):
            counters["started"] += 1
            by_key.setdefault(key, []).append(Partial(state.next_seq, key, (stations,), (t,)))
            state.next_seq += 1

        for key in set(visit) | events[0].keys():
            runs = by_key[key]
            while len(runs) > self.max_partial:
                # evict the earliest start: it has had the longest to complete
                del runs[_oldest(runs)]
                counters["evicted"] += 1
            if runs:
                due[key] = min(cp.due(r) for r in runs)
            else:
                del by_key[key]
                due.pop(key, None)
        return matches


def _pad_last(a: npt.NDArray[Any], n: int) -> npt.NDArray[Any]:
    """``a`` widened with zeros (False) along its last axis to length ``n``."""
    if a.shape[-1] >= n:
        return a
    return np.concatenate([a, np.zeros((*a.shape[:-1], n - a.shape[-1]), a.dtype)], axis=-1)


def _oldest(runs: Sequence[Partial]) -> int:
    """Position of the partial match with the earliest start (then lowest ``seq``)."""
    return min(range(len(runs)), key=lambda i: (runs[i].ticks[0], runs[i].seq))

"""The two stages of the live pipeline: station evidence, then convergence per region.

:class:`StationStage` (the first stage) takes validated events, buckets them into ticks
(dedup, lateness, bounded gaps) and runs each station's own detectors when a tick closes;
what it hands on is one :class:`~convergence.records.NodeEvidence` per closed tick: the
*settled* evidence of the stations that are not at baseline, and a few of their events
for the report (:mod:`convergence.detectors.evidence`).

:class:`RegionStage` (the second stage) takes those, in tick order, for the stations of
its regions: topic agreement, temporal patterns, node states, the per-region meter,
adaptive responses and report synthesis, and makes the tick's typed records
(:class:`TickOutcome`: readings, alerts, report revisions, responses).

In one process (:class:`~convergence.streams.pipeline.Pipeline`, the embedded runtime)
the record is handed over in memory; in a cluster it crosses the ``node-evidence`` topic,
keyed by region, so first-stage workers own stations and second-stage workers own
regions. Either way it is the same record, so both give the same alerts and reports.

Examples
--------
>>> from convergence.settings import load_settings
>>> from convergence.stations import StationInfo, StationRegistry
>>> from convergence.detectors.processor import TickProcessor
>>> s = load_settings(env={}, config_path=None)
>>> reg = StationRegistry([StationInfo("news-1", "osint_news", "eu", rate_per_s=2.0)])
>>> first = StationStage(s, reg, TickProcessor())
>>> from convergence.schema import Event, SourceKind
>>> e = Event("00000000000000a1", "news-1", SourceKind.OSINT_NEWS, 100.2, "politics", 1.0)
>>> late = first.ingest_events([e], 100.3)
>>> [ne.tick for ne in first.close_until(104.5)], first.counters.events
([100, 101, 102], 1)
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergence.counters import Counters
from convergence.detectors.base import Array
from convergence.detectors.chain import StationMeta
from convergence.detectors.evidence import EVIDENCE_FLAGS, EVIDENCE_Z, keep_evidence
from convergence.detectors.ingest import EventColumns, TickAccumulator
from convergence.detectors.meter import FEATURE_NAMES, LEVELS
from convergence.detectors.node_state import pad_peak
from convergence.detectors.processor import (
    TickOutput,
    TickProcessor,
    state_from_dict,
    state_to_dict,
)
from convergence.records import (
    MAX_EVIDENCE_PER_STATION,
    Alert,
    EvidenceSample,
    Level,
    NodeEvidence,
    PatternNote,
    RegionReading,
    Report,
)
from convergence.responses.actions import Response, responses_from
from convergence.responses.reports import Reporter
from convergence.schema import DeadLetter, Event, EventBatch, ValidationError, dead_letter
from convergence.settings import Settings
from convergence.stations import StationInfo, StationRegistry

__all__ = ["MAX_GAP_TICKS", "EvidenceRing", "PipelineCounters", "RegionStage", "StationStage",
           "TickOutcome", "pack_evidence", "unpack_evidence"]

#: at most this many ticks with no event from any station are closed in a row
MAX_GAP_TICKS = 64
#: a station silent for ``k`` ticks while its baseline expects ``mu`` events a tick pauses
#: once ``k * mu`` reaches this: its silence is then about as unlikely as 1 in 10,000
#: under its own Poisson rate (``exp(-k * mu)``), an outage of its feed, not a quiet spell
IMPLAUSIBLE_SILENCE = 9.2
#: version of :meth:`RegionStage.to_dict` (a checkpoint of another is not restored)
REGION_STATE_VERSION = 1


@dataclass
class PipelineCounters(Counters):
    events: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    ticks: int = 0
    alerts: int = 0
    reports: int = 0
    responses: int = 0
    #: ticks of a long gap with no event at all, skipped past (see ``MAX_GAP_TICKS``)
    skipped_ticks: int = 0
    #: station-ticks closed, and those at baseline (nothing crossed to the second stage)
    station_ticks: int = 0
    station_ticks_at_baseline: int = 0


@dataclass
class TickOutcome:
    """What one closed tick produced: every region's reading and the records to publish."""

    tick: int
    time_s: float
    readings: list[RegionReading] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    #: regions that just reached ``watch`` without OSINT corroboration (decoys a person can see)
    uncorroborated: list[RegionReading] = field(default_factory=list)

    @property
    def changed(self) -> list[RegionReading]:
        """Readings of the regions whose level changed this tick."""
        return [r for r in self.readings if r.changed]


# -- the record between the stages -------------------------------------------------


_FLAG_BITS = {k: 1 << i for i, k in enumerate(EVIDENCE_FLAGS)}
#: z values before the category bin, flags and regime in a row; the rest come after them
#: (added later: an older first stage's row of eight still reads, without them)
_FIRST_Z = 5


def pack_evidence(settled: Mapping[str, Array], i: int) -> tuple[float | int, ...]:
    """Station ``i``'s settled evidence as a :class:`NodeEvidence` row."""
    flags = sum(bit for k, bit in _FLAG_BITS.items() if bool(settled[k][i]))
    regime = int(settled["regime"][i]) if "regime" in settled else -1
    return (*(float(settled[k][i]) for k in EVIDENCE_Z[:_FIRST_Z]),
            int(settled["concentration_bin"][i]), flags, regime,
            *(float(settled[k][i]) for k in EVIDENCE_Z[_FIRST_Z:]))


def unpack_evidence(ne: NodeEvidence, index_of: Callable[[str], int | None],
                    n: int) -> tuple[dict[str, Array], list[str]]:
    """Arrays over ``n`` stations from a :class:`NodeEvidence` (zero where absent), and
    the ids of listed stations ``index_of`` does not know."""
    ev: dict[str, Array] = {k: np.zeros(n) for k in EVIDENCE_Z}
    ev["concentration_bin"] = np.zeros(n, np.int64)
    ev["regime"] = np.full(n, -1, np.int64)
    for k in EVIDENCE_FLAGS:
        ev[k] = np.zeros(n, bool)
    unknown = []
    for sid, row in ne.stations.items():
        i = index_of(sid)
        if i is None or i >= n:
            unknown.append(sid)
            continue
        for j, k in enumerate(EVIDENCE_Z[:_FIRST_Z]):
            ev[k][i] = float(row[j])
        ev["concentration_bin"][i] = int(row[_FIRST_Z])
        for k, bit in _FLAG_BITS.items():
            ev[k][i] = bool(int(row[_FIRST_Z + 1]) & bit)
        ev["regime"][i] = int(row[_FIRST_Z + 2])
        for j, k in enumerate(EVIDENCE_Z[_FIRST_Z:], start=_FIRST_Z + 3):
            ev[k][i] = float(row[j]) if len(row) > j else 0.0
    return ev, unknown


class EvidenceRing:
    """The last few events of every station, for the evidence a report quotes.

    Bounded: at most ``per_station`` samples per station, so memory grows with stations,
    never with time.
    """

    def __init__(self, per_station: int = MAX_EVIDENCE_PER_STATION) -> None:
        self.per_station = per_station
        self._ring: dict[str, collections.deque[EvidenceSample]] = {}

    def add(self, samples: Mapping[str, Sequence[EvidenceSample]]) -> None:
        for sid, xs in samples.items():
            ring = self._ring.get(sid)
            if ring is None:
                ring = self._ring[sid] = collections.deque(maxlen=self.per_station)
            ring.extend(xs)

    def of(self, station_ids: Sequence[str]) -> list[EvidenceSample]:
        out: list[EvidenceSample] = []
        for sid in station_ids[:25]:
            out.extend(self._ring.get(sid, ()))
        return out

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {sid: [x.to_dict() for x in ring] for sid, ring in self._ring.items()}

    def load(self, d: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self._ring = {}
        self.add({str(sid): [EvidenceSample.from_dict(x) for x in xs] for sid, xs in d.items()})


def _sample(e: Event) -> EvidenceSample:
    return EvidenceSample(e.station_id, e.event_time_s, e.category, e.value,
                          e.text[:280] if e.text else None, e.url, e.source)


# -- the first stage ------------------------------------------------------------------


class StationStage:
    """Events in; one :class:`NodeEvidence` per closed tick out (see module docstring).

    ``registry`` maps station ids to array positions (shared with the second stage in
    one process; a first-stage worker's own otherwise).
    """

    def __init__(self, settings: Settings, registry: StationRegistry, processor: TickProcessor,
                 *, counters: PipelineCounters | None = None,
                 max_gap_ticks: int = MAX_GAP_TICKS, count_ticks: bool = False) -> None:
        self.settings = settings
        self.registry = registry
        self.processor = processor
        self.tick_s = settings.tick_s
        self.counters = counters if counters is not None else PipelineCounters()
        #: count closed ticks in ``counters.ticks`` (when no second stage here counts them)
        self.count_ticks = count_ticks
        n = max(len(registry), 1)
        self.acc = TickAccumulator(n_stations=n, tick_s=self.tick_s,
                                   allowed_lateness_s=settings.allowed_lateness_s,
                                   max_gap_ticks=max_gap_ticks)
        self.state = processor.init_station_state((n,))
        if len(registry):
            processor.seed_baselines(self.state, registry.rates * self.tick_s)
        self._n = n
        #: the first ``_n`` stations were seeded (an empty registry's placeholder was not)
        self._seeded = bool(len(registry))
        #: per station: the last tick it had an event (-inf: none yet)
        self._last_event = np.full(n, -np.inf)
        #: per open tick, per station: its events by id (bounded), for the report
        self._samples: dict[int, dict[str, dict[str, EvidenceSample]]] = {}
        #: per open tick, from batches in columns: (batch, rows, station index) of each
        #: station's candidates; samples are made when the tick closes, for the stations
        #: that are active then (most are at baseline: their samples are never needed)
        self._sample_rows: dict[int, list[tuple[EventBatch, Array, Array]]] = {}
        #: the last closed tick's stage outputs (detector internals, for tests and tools)
        self.last: dict[str, Any] | None = None

    def fit(self) -> None:
        """Widen the arrays to the registry (new stations appeared); a new station with a
        declared background rate starts its baselines there, as the first ones did."""
        n = len(self.registry)
        if n > self._n:
            old = self._n if self._seeded else 0
            self.processor.grow(self.state, n, 1)
            self.acc.grow(n)
            self._n = n
            exp = np.asarray(self.registry.rates, np.float64) * self.tick_s
            exp[:old] = 0.0  # only the new ones: the others have learnt since
            if (exp > 0).any():
                self.processor.seed_baselines(self.state, exp)
            self._seeded = True

    def ingest_events(self, events: Sequence[Event], now_s: float) -> list[DeadLetter]:
        """Ingest validated events; events later than the allowed lateness come back as
        dead letters."""
        if not events:
            return []
        reg = self.registry
        cols = EventColumns.from_events(events, lambda e: reg.ensure(e.station_id, e.source_kind))
        late = self._add(cols)
        drop = set(late.tolist())
        self._keep_samples([e for i, e in enumerate(events) if i not in drop])
        return self._late([events[int(i)] for i in late], now_s)

    def ingest_columns(self, batch: EventBatch, now_s: float) -> list[DeadLetter]:
        """:meth:`ingest_events` for events in columns (a worker's decoded messages): the
        same state, samples and dead letters, without an object per event.

        >>> from convergence.settings import load_settings
        >>> from convergence.detectors.processor import TickProcessor
        >>> from convergence.schema import make_event
        >>> s = load_settings(env={}, config_path=None)
        >>> evs = [make_event("news-1", "osint_news", 100.2 + i / 10, "politics", 1.0)
        ...        for i in range(5)]
        >>> a = StationStage(s, StationRegistry([]), TickProcessor())
        >>> b = StationStage(s, StationRegistry([]), TickProcessor())
        >>> a.ingest_columns(EventBatch.from_events(evs), 101.0), b.ingest_events(evs, 101.0)
        ([], [])
        >>> a.close_until(102.0) == b.close_until(102.0), a.counters.events
        (True, 5)
        """
        if not len(batch):
            return []
        station = self.registry.ensure_many(batch.station_id, batch.kind)
        late = self._add(EventColumns.from_batch(batch, station))
        keep = np.delete(np.arange(len(batch)), late) if late.size else np.arange(len(batch))
        self._keep_sample_columns(batch, station, keep)
        return self._late(batch.take(late).events() if late.size else [], now_s)

    def _add(self, cols: EventColumns) -> Array:
        """Bucket the events into open ticks; the positions of those that came too late."""
        self.fit()
        res = self.acc.add(cols)
        self.counters.events += res.accepted
        self.counters.duplicates += res.duplicates
        self.counters.late += int(res.late_idx.size)
        return np.asarray(res.late_idx, dtype=np.int64)

    def _late(self, events: Sequence[Event], now_s: float) -> list[DeadLetter]:
        dls = [
            dead_letter("ingest", e.to_dict(), ValidationError(
                "event_time_s",
                f"arrived after its tick closed (allowed lateness "
                f"{self.settings.allowed_lateness_s:g} s); check the station's clock or raise "
                "CONVERGENCE_ALLOWED_LATENESS_S"), received_at_s=now_s)
            for e in events
        ]
        self.counters.dead_letters += len(dls)
        return dls

    def _keep_samples(self, events: Sequence[Event]) -> None:
        for e in events[-4096:]:  # a huge batch: its most recent events are what matters
            tick = math.floor(e.event_time_s / self.tick_s)
            self._keep_sample(tick, e.station_id, e.event_id, _sample(e))

    def _keep_sample(self, tick: int, sid: str, event_id: str, sample: EvidenceSample) -> None:
        k = MAX_EVIDENCE_PER_STATION
        d = self._samples.setdefault(tick, {}).setdefault(sid, {})
        d[event_id] = sample
        if len(d) > 4 * k:
            keep = sorted(d.items(), key=lambda kv: (kv[1].time_s, kv[0]))[-k:]
            d.clear()
            d.update(keep)

    def _keep_sample_columns(self, batch: EventBatch, station: Array, rows: Array) -> None:
        """:meth:`_keep_samples` for the events at ``rows`` of a batch. A tick keeps each
        station's last ``MAX_EVIDENCE_PER_STATION`` distinct events by (time, id), so only
        those of the batch can matter: samples are built for them alone."""
        rows = rows[-4096:]  # a huge batch: its most recent events are what matters
        if not rows.size:
            return
        times = batch.event_time_s[rows]
        ticks = np.floor(times / self.tick_s).astype(np.int64)
        st, h = station[rows], batch.event_hash[rows]
        order = np.lexsort((h, times, st, ticks))  # by tick, station, time, id
        ticks, st, times, h, rows = ticks[order], st[order], times[order], h[order], rows[order]
        # distinct events only (a re-sent one has the same id, hence time and station)
        new = np.r_[True, (ticks[1:] != ticks[:-1]) | (st[1:] != st[:-1]) | (h[1:] != h[:-1])]
        ticks, st, rows = ticks[new], st[new], rows[new]
        # each (tick, station) group's last k: its rank from the group's end
        end = np.r_[(ticks[1:] != ticks[:-1]) | (st[1:] != st[:-1]), True]
        last = np.flatnonzero(end)
        group_end = np.repeat(last, np.diff(np.r_[-1, last]))
        chosen = group_end - np.arange(rows.size) < MAX_EVIDENCE_PER_STATION
        ticks, st, rows = ticks[chosen], st[chosen], rows[chosen]
        cuts = np.flatnonzero(ticks[1:] != ticks[:-1]) + 1
        for t, s_t, r_t in zip(np.split(ticks, cuts), np.split(st, cuts), np.split(rows, cuts),
                               strict=True):
            self._sample_rows.setdefault(int(t[0]), []).append((batch, r_t, s_t))

    def _take_sample_rows(self, tick: int, active: Mapping[str, Any],
                          ) -> dict[str, dict[str, EvidenceSample]]:
        """The column candidates of ``tick`` for the ``active`` stations: the last
        ``MAX_EVIDENCE_PER_STATION`` distinct events of each by (time, id), as samples."""
        chunks = self._sample_rows.pop(tick, [])
        for t in [t for t in self._sample_rows if t < tick]:  # late ticks' leftovers
            del self._sample_rows[t]
        if not chunks or not active:
            return {}
        want = np.asarray([i for i in map(self.registry.get, active) if i is not None],
                          dtype=np.int64)
        picked = [(k, np.flatnonzero(np.isin(st, want))) for k, (_, _, st) in enumerate(chunks)]
        picked = [(k, sel) for k, sel in picked if sel.size]
        if not picked:
            return {}
        which = np.concatenate([np.full(sel.size, k, dtype=np.int64) for k, sel in picked])
        rows = np.concatenate([chunks[k][1][sel] for k, sel in picked])
        st = np.concatenate([chunks[k][2][sel] for k, sel in picked])
        times = np.concatenate([chunks[k][0].event_time_s[chunks[k][1][sel]] for k, sel in picked])
        h = np.concatenate([chunks[k][0].event_hash[chunks[k][1][sel]] for k, sel in picked])
        order = np.lexsort((h, times, st))  # by station, time, id
        which, rows, st, h = which[order], rows[order], st[order], h[order]
        new = np.r_[True, (st[1:] != st[:-1]) | (h[1:] != h[:-1])]  # a re-sent event once
        which, rows, st = which[new], rows[new], st[new]
        last = np.flatnonzero(np.r_[st[1:] != st[:-1], True])
        group_end = np.repeat(last, np.diff(np.r_[-1, last]))
        chosen = np.flatnonzero(group_end - np.arange(st.size) < MAX_EVIDENCE_PER_STATION)
        out: dict[str, dict[str, EvidenceSample]] = {}
        for k, r in zip(which[chosen].tolist(), rows[chosen].tolist(), strict=True):
            b = chunks[k][0]
            sid, text = b.station_id[r], b.text[r]
            out.setdefault(sid, {})[f"{int(b.event_hash[r]):016x}"] = EvidenceSample(
                sid, float(b.event_time_s[r]), b.category[r], float(b.value[r]),
                text[:280] if text else None, b.url[r] if b.url is not None else None,
                b.source[r])
        return out

    def close_until(self, watermark_s: float) -> list[NodeEvidence]:
        """Close and process every tick the watermark has passed."""
        closed = self.acc.close_until(watermark_s)
        self.counters.skipped_ticks = self.acc.skipped_ticks
        return [self._close(t, cells) for t, cells in closed]

    def flush(self) -> list[NodeEvidence]:
        """Close and process every open tick (end of input)."""
        closed = self.acc.flush()
        self.counters.skipped_ticks = self.acc.skipped_ticks
        return [self._close(t, cells) for t, cells in closed]

    def _close(self, tick: int, cells: dict[str, Array]) -> NodeEvidence:
        if self.count_ticks:
            self.counters.ticks += 1
        # A station's detectors run from its first event on and pause after
        # ``max_gap_ticks`` empty ticks in a row, or sooner once its silence is
        # implausible for its own rate (``IMPLAUSIBLE_SILENCE``), until it sends again:
        # a feed that stopped teaches nothing (a busy station's baselines and its daily
        # profile would otherwise learn a rate of zero, and its return would read as a
        # burst - everywhere at once when a whole fleet comes back), and its silence is
        # no evidence (a source gone dark is told by its status, ``dark_z``). What a
        # station learns never depends on which other stations share its pipeline (one
        # process, or one of many first-stage partitions), so every topology sees the
        # same evidence.
        n = self._n
        if self._last_event.size < n:
            self._last_event = np.concatenate(
                [self._last_event, np.full(n - self._last_event.size, -np.inf)])
        self._last_event[np.asarray(cells["count"])[:n] > 0] = tick
        silent = tick - self._last_event
        expected = np.asarray(self.state[self.processor.chain.burst.name]["mu"])[:n]
        with np.errstate(invalid="ignore"):  # never sent (inf) times no rate yet (0) is NaN
            live = ((silent <= self.acc.max_gap_ticks)
                    & ~(silent * expected >= IMPLAUSIBLE_SILENCE))
        paused = np.flatnonzero(~live)
        saved: list[tuple[Any, str, Array]] = []
        if paused.size:
            for st in self.state.values():
                for k in st:
                    saved.append((st, k, st[k][paused].copy()))
        kinds = self.registry.kind_idx
        if kinds.size < n:  # an empty registry's placeholder station: no kind, no price
            kinds = np.concatenate([kinds, np.full(n - kinds.size, -1, np.int64)])
        cells = {**cells, "kind_idx": kinds[:n]}
        ev, det = self.processor.step_stations(self.state, cells, tick=tick)
        for st, k, values in saved:
            st[k][paused] = values
        settled, active = self.processor.settle(ev)
        if paused.size:
            settled, active = keep_evidence(settled, active & live)
        self.last = {"tick": tick, "evidence": settled, "detectors": det}
        ids = self.registry.ids()
        idx = np.flatnonzero(active)
        self.counters.station_ticks += int(active.size)
        self.counters.station_ticks_at_baseline += int(active.size - idx.size)
        stations = {ids[i]: pack_evidence(settled, i) for i in idx.tolist() if i < len(ids)}
        return NodeEvidence(tick, (tick + 1) * self.tick_s, stations,
                            self._tick_samples(tick, stations))

    def _tick_samples(self, tick: int, stations: Mapping[str, Any],
                      ) -> dict[str, tuple[EvidenceSample, ...]]:
        """A closing tick's samples of ``stations``: each one's last
        ``MAX_EVIDENCE_PER_STATION`` distinct events by (time, id); the tick's (and any
        older tick's) candidates are dropped."""
        by_station = self._samples.pop(tick, {})
        for t in [t for t in self._samples if t < tick]:  # late ticks' leftovers
            del self._samples[t]
        for sid, xs in self._take_sample_rows(tick, stations).items():
            by_station[sid] = {**by_station.get(sid, {}), **xs}
        k = MAX_EVIDENCE_PER_STATION
        return {sid: tuple(x for _, x in sorted(by_station[sid].items(),
                                                key=lambda kv: (kv[1].time_s, kv[0]))[-k:])
                for sid in stations if sid in by_station}


# -- the second stage -----------------------------------------------------------------


class RegionStage:
    """:class:`NodeEvidence` in, tick by tick; :class:`TickOutcome` out (module docstring).

    ``registry`` holds the stations of the stage's regions (all of them, quiet ones too:
    the meter weighs a region's anomalous share); ``lookup`` names the facts of a station
    first met in the evidence (``None``: not known, its evidence is dropped and counted).
    """

    def __init__(self, settings: Settings, registry: StationRegistry, processor: TickProcessor,
                 reporter: Reporter, *, counters: PipelineCounters | None = None,
                 lookup: Callable[[str], StationInfo | None] | None = None,
                 regime_names: Sequence[str] = ()) -> None:
        self.settings = settings
        self.registry = registry
        self.processor = processor
        self.chain = processor.chain
        self.reporter = reporter
        self.tick_s = settings.tick_s
        self.counters = counters if counters is not None else PipelineCounters()
        self.lookup = lookup
        self.regime_names = tuple(regime_names)
        n = max(len(registry), 1)
        self.state = processor.init_region_state((n,), max(len(registry.region_names()), 1))
        self._n = n
        self.evidence = EvidenceRing()
        self.dark: set[str] = set()
        self._region_watch: set[str] = set()
        self._meta: StationMeta | None = None
        self._meta_version = -1
        self.last_tick: int | None = None
        self.last_output: TickOutput | None = None
        #: evidence for stations nobody described (not in the fleet, no status seen)
        self.unknown_evidence = 0

    def fit(self) -> None:
        """Widen the arrays to the registry (stations, or regions, appeared)."""
        n = len(self.registry)
        if n > self._n:
            self.processor.grow(self.state, n, max(len(self.registry.region_names()), 1))
            self._n = n
        else:  # a region may have appeared with a station registered earlier
            self.processor.grow(self.state, self._n, max(len(self.registry.region_names()), 1))

    def _station_meta(self) -> StationMeta:
        """The registry's arrays, taken once per registry version."""
        if self._meta is None or self._meta_version != self.registry.version:
            self._meta = StationMeta.from_registry(self.registry)
            self._meta_version = self.registry.version
        return self._meta

    def _index(self, sid: str) -> int | None:
        idx = self.registry.get(sid)
        if idx is None and self.lookup is not None:
            info = self.lookup(sid)
            if info is not None:
                idx = self.registry.add(info)
        return idx

    def _dark_mask(self) -> np.ndarray[Any, Any] | None:
        if not self.dark:
            return None
        mask = np.zeros(self._n, bool)
        for sid in self.dark:
            idx = self.registry.get(sid)
            if idx is not None and idx < self._n:
                mask[idx] = True
        return mask

    def manual(self, station_id: str, action: str, until_s: float | None = None) -> bool:
        """A person quarantined (until ``until_s``) or resumed a station: the meter and the
        node machine follow at once. Returns False for a station the stage does not hold."""
        idx = self.registry.get(station_id)
        if idx is None:
            return False
        self.fit()
        n = self._n
        if action == "resume":
            mask = np.zeros(n, bool)
            mask[idx] = True
            self.processor.apply_manual(self.state, resume=mask)
        elif action == "quarantine":
            until = np.full(n, np.nan)
            until[idx] = np.inf if until_s is None else until_s
            self.processor.apply_manual(self.state, quarantine_until=until)
        else:
            raise ValueError(f"manual action must be quarantine or resume, got {action!r}")
        return True

    def step(self, ne: NodeEvidence) -> TickOutcome | None:
        """Process one closed tick's evidence (``None``: that tick was processed already -
        a tick never closes twice)."""
        if self.last_tick is not None and ne.tick <= self.last_tick:
            return None
        known = [sid for sid in ne.stations if self._index(sid) is not None]
        if len(known) < len(ne.stations):
            self.unknown_evidence += len(ne.stations) - len(known)
        if not len(self.registry):  # no station in these regions (yet): nothing to judge
            self.last_tick = ne.tick
            return TickOutcome(ne.tick, ne.time_s)
        self.fit()
        ev, _ = unpack_evidence(ne, self.registry.get, self._n)
        self.evidence.add(ne.samples)
        self.last_tick = ne.tick
        return self._process(ne.tick, ne.time_s, ev)

    def _regimes(self, ev: Mapping[str, Array]) -> dict[str, str]:
        if not self.regime_names:
            return {}
        ids = self.registry.ids()
        regime = np.asarray(ev["regime"])
        return {ids[i]: self.regime_names[int(regime[i])] for i in np.flatnonzero(regime >= 0)
                if i < len(ids) and int(regime[i]) < len(self.regime_names)}

    def _process(self, tick: int, time_s: float, ev: dict[str, Array]) -> TickOutcome:
        reg = self.registry
        out = self.processor.step_regions(self.state, ev, self._station_meta(), tick=tick,
                                          time_s=time_s, dark=self._dark_mask())
        self.last_output = out
        self.counters.ticks += 1
        names = reg.region_names()
        meter = out.meter
        levels = [LEVELS[int(x)] for x in meter["level"]]
        responses = responses_from(out.responses, reg, tick=tick, time_s=time_s, levels=levels,
                                   policy=self.processor.responses.policy)
        if out.matches:
            ids = reg.ids()
            notes, where = [], []
            for m in out.matches:
                stations = tuple(ids[i] for i in m.all_stations if i < len(ids))
                # the matcher counts its own steps; a match completes at this tick, so its
                # steps are placed back on the pipeline's ticks from the end
                span = m.end_tick - m.start_tick
                notes.append(PatternNote(m.pattern, tick - span, tick, stations))
                first = m.all_stations[0] if m.all_stations else 0
                where.append(names[int(reg.region_idx[first])] if stations else "unknown")
            self.reporter.note_patterns(notes, where)
        self.reporter.note_responses(responses)
        feats = meter.get("features")
        alerts, reports = self.reporter.on_tick(
            tick, time_s, meter, out.node, reg, evidence=self.evidence.of,
            regimes=self._regimes(ev), dark=sorted(self.dark),
            features=feats, feature_names=FEATURE_NAMES if feats is not None else ())
        th = self.chain.meter.thresholds
        readings = [
            RegionReading(names[r] if r < len(names) else "unknown", tick, time_s,
                          round(float(meter["score"][r]), 2), Level.from_rank(int(meter["level"][r])),
                          Level.from_rank(int(meter["prev_level"][r])), bool(meter["osint"][r]),
                          int(meter["n_kinds"][r]), int(meter["n_nodes"][r]),
                          self.reporter.episodes[names[r]].report_id
                          if r < len(names) and names[r] in self.reporter.episodes else None,
                          th)
            # a stage with no station yet has a placeholder region: nothing to read
            for r in range(len(meter["level"])) if r < len(names)]
        oc = TickOutcome(tick, time_s, readings, alerts, reports, responses)
        oc.uncorroborated = self._uncorroborated(readings)
        self.counters.alerts += len(alerts)
        self.counters.reports += len(reports)
        self.counters.responses += len(responses)
        return oc

    # -- checkpoint -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything this stage knows, as JSON-able data (a changelog-backed table keeps
        it, so a worker that takes the partition over continues the same episodes)."""
        return {
            "v": REGION_STATE_VERSION, "tick_s": self.tick_s, "last_tick": self.last_tick,
            "stations": [[i.station_id, i.kind.value, i.region, i.group, i.name, i.rate_per_s]
                         for i in self.registry.stations],
            "state": state_to_dict(self.state), "reporter": self.reporter.to_dict(),
            "evidence": self.evidence.to_dict(), "dark": sorted(self.dark),
            "watch": sorted(self._region_watch), "unknown_evidence": self.unknown_evidence,
        }

    def load(self, d: Mapping[str, Any]) -> None:
        """Continue from :meth:`to_dict` (raises ``ValueError`` for a checkpoint this build
        cannot use; nothing is changed then). The stage's registry must be new."""
        if d.get("v") != REGION_STATE_VERSION or d.get("tick_s") != self.tick_s:
            raise ValueError(f"region state version {d.get('v')} / tick_s {d.get('tick_s')} "
                             f"does not fit this build ({REGION_STATE_VERSION}, {self.tick_s})")
        infos = [StationInfo(str(x[0]), str(x[1]), str(x[2]), str(x[3]), str(x[4]), float(x[5]))
                 for x in d["stations"]]
        state = state_from_dict(d["state"])
        if set(state) != set(self.state):
            raise ValueError(f"region state holds {sorted(state)}, this build {sorted(self.state)}")
        node = state[self.chain.node.name]
        # a checkpoint from before the trend and scale evidence: no peak of either yet
        node["peak"] = pad_peak(node["peak"])
        if len(self.registry) and [i.station_id for i in self.registry.stations[:len(infos)]] \
                != [i.station_id for i in infos][:len(self.registry)]:
            raise ValueError("the stage's registry is not new")
        for info in infos:
            self.registry.add(info)
        self.state = state
        self._n = max(len(infos), 1)
        self.fit()
        self.reporter.restore(d.get("reporter") or {})
        self.evidence.load(d.get("evidence") or {})
        self.dark = set(d.get("dark") or ())
        self._region_watch = set(d.get("watch") or ())
        self.last_tick = d.get("last_tick")
        self.unknown_evidence = int(d.get("unknown_evidence") or 0)

    def _uncorroborated(self, readings: Sequence[RegionReading]) -> list[RegionReading]:
        """Regions entering ``watch`` whose score the OSINT rule holds below ``warning``."""
        now = {r.region for r in readings if r.level >= Level.WATCH}
        notes = [r for r in readings if r.region in now - self._region_watch
                 and not r.osint_corroborated]
        self._region_watch = now
        return notes

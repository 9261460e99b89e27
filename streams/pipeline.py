"""The pipeline every live runtime drives: validate → bucket → tick processor → records.

:class:`Pipeline` wraps the pure :class:`~convergence.detectors.processor.TickProcessor`
(detectors, node states, the per-region meter and the adaptive responses — the very
step the simulator calls) with what a live stream needs around it: edge validation,
ingest into open ticks (dedup, lateness), the station registry, a small ring of recent
events per station (report evidence), and the translation of each closed tick into
typed records: :class:`~convergence.records.RegionReading` for every region,
:class:`~convergence.records.Alert` s and :class:`~convergence.records.Report` revisions
(:class:`~convergence.responses.reports.Reporter`) and
:class:`~convergence.responses.actions.Response` s with their control commands.

It owns no transport and no clock: runtimes hand it raw records or events together
with the receiver's time, and a *watermark* (the event time up to which they believe
input is complete); it hands back dead letters and, for every tick that closed, a
:class:`TickOutcome`. The embedded runtime and the Faust worker call exactly this code.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from convergence.counters import Counters
from convergence.detectors.chain import DetectorChain, StationMeta
from convergence.detectors.ingest import EventColumns, TickAccumulator
from convergence.detectors.meter import FEATURE_NAMES, LEVELS, ConvergenceMeter
from convergence.detectors.processor import TickOutput, TickProcessor
from convergence.records import (
    MAX_EVIDENCE_PER_STATION,
    Alert,
    EvidenceSample,
    Level,
    MeterMethod,
    PatternNote,
    RegionReading,
    Report,
)
from convergence.responses.actions import Response, responses_from
from convergence.responses.reports import Calibration, Reporter
from convergence.schema import DeadLetter, Event, EventBatch, Limits, ValidationError, dead_letter
from convergence.settings import Settings, model_spec
from convergence.stations import StationRegistry
from convergence.wire import validate_columns

if TYPE_CHECKING:
    from convergence.models.regime import RegimeModel
    from convergence.models.registry import ModelRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")


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


#: A record for the store: (table, id, document).
Record = tuple[str, str, dict[str, Any]]


def outcome_records(oc: TickOutcome, run_id: str) -> list[Record]:
    """What one tick outcome stores, in publication order, every document stamped with
    ``run_id``: responses, then report revisions, then alerts (a report is out before the
    alert that refers to it, so whoever reacts to the alert can already fetch it).

    A ``report`` record is one *revision* of a report (its ``revision`` says which); the
    store keeps every revision and the newest as the report itself (see
    :class:`~convergence.store.graph.ReportGraph`, which :class:`RecordRouter` hands them
    to). Every runtime stores outcomes through this function, so the embedded store and
    the cluster's topics hold the same documents. Control commands are not records: how
    they reach the stations is the runtime's business.
    """
    out: list[Record] = [("response", r.response_id, {**r.document(), "run_id": run_id})
                         for r in oc.responses]
    # a revision carries the run id its reporter was given: part of its chained content,
    # it must not differ between a writer and whoever replays its input
    out += [("report", rep.report_id, rep.to_dict()) for rep in oc.reports]
    out += [("alert", a.alert_id, {**a.to_dict(), "run_id": run_id}) for a in oc.alerts]
    return out


class RecordRouter:
    """Where each record goes in the store: report revisions into the report graph (every
    revision kept, chained for integrity), everything else straight to the writer.

    Both runtimes store through one of these (the embedded runtime directly, the cluster's
    store sink from the topics), so the database looks the same whichever wrote it.
    """

    def __init__(self, writer: Any, graph: Any) -> None:
        self.writer = writer
        self.graph = graph

    def submit(self, table: str, record_id: str, doc: dict[str, Any], **kw: Any) -> None:
        """Queue one record (``kw`` goes to the writer, e.g. ``urgent``)."""
        if table == "report":
            self.graph.submit(Report.from_dict(doc))
        else:
            self.writer.submit(table, record_id, doc, **kw)


def dead_letter_record(d: DeadLetter, run_id: str, station_id: str | None = None) -> Record:
    """A dead letter as a stored record; ``station_id`` blames a station when the dead
    letter itself names none (e.g. an undecodable message, by its Kafka key)."""
    doc = d.to_dict()
    if doc.get("station_id") is None:
        doc["station_id"] = station_id
    doc["run_id"] = run_id
    return "dead_letter", d.dead_letter_id, doc


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


class EvidenceRing:
    """The last few events of every station, for the evidence a report quotes.

    Bounded: at most ``per_station`` samples per station (text cut to 280 characters),
    so memory grows with stations, never with time.
    """

    def __init__(self, per_station: int = MAX_EVIDENCE_PER_STATION) -> None:
        self.per_station = per_station
        self._ring: dict[str, collections.deque[EvidenceSample]] = {}

    def add(self, events: Sequence[Event]) -> None:
        last: dict[str, list[Event]] = {}
        for e in events[-4096:]:  # a huge batch: its most recent events are what matters
            q = last.setdefault(e.station_id, [])
            q.append(e)
            if len(q) > self.per_station:
                del q[0]
        for sid, evs in last.items():
            ring = self._ring.get(sid)
            if ring is None:
                ring = self._ring[sid] = collections.deque(maxlen=self.per_station)
            for e in evs:
                ring.append(EvidenceSample(
                    sid, e.event_time_s, e.category, e.value,
                    e.text[:280] if e.text else None, getattr(e, "url", None), e.source))

    def add_columns(self, batch: EventBatch, station: np.ndarray[Any, Any]) -> None:
        """:meth:`add` for a batch in columns (``station``: each event's station position):
        the same samples, built only for the events the ring keeps."""
        n = len(batch)
        lo = max(n - 4096, 0)  # a huge batch: its most recent events are what matters
        st = station[lo:]
        order = np.argsort(st, kind="stable")  # by station, then arrival
        grouped = st[order]
        last = np.r_[np.flatnonzero(grouped[1:] != grouped[:-1]), grouped.size - 1]
        group_end = np.repeat(last, np.diff(np.r_[-1, last]))
        kept = np.sort(order[group_end - np.arange(grouped.size) < self.per_station]) + lo
        sids, times, values = batch.station_id, batch.event_time_s, batch.value
        for i in kept.tolist():
            sid = sids[i]
            ring = self._ring.get(sid)
            if ring is None:
                ring = self._ring[sid] = collections.deque(maxlen=self.per_station)
            text = batch.text[i]
            ring.append(EvidenceSample(sid, float(times[i]), batch.category[i], float(values[i]),
                                       text[:280] if text else None, None, batch.source[i]))

    def of(self, station_ids: Sequence[str]) -> list[EvidenceSample]:
        out: list[EvidenceSample] = []
        for sid in station_ids[:25]:
            out.extend(self._ring.get(sid, ()))
        return out


class Pipeline:
    """Stateful wiring of the pure stages for one stream of events (see module doc)."""

    def __init__(self, settings: Settings, registry: StationRegistry,
                 chain: DetectorChain | None = None,
                 processor: TickProcessor | None = None,
                 calibration: Calibration | None = None, run_id: str = "") -> None:
        self.settings = settings
        self.registry = registry
        self.limits = Limits.from_settings(settings)
        self.tick_s = settings.tick_s
        self.method = MeterMethod()
        self.regime_ref: str | None = None
        self.regime_names: tuple[str, ...] = ()
        if processor is None:
            chain = chain or DetectorChain(meter=self._meter(settings), tick_s=settings.tick_s,
                                           **self._regime(settings))
            processor = TickProcessor(chain)
        self.processor = processor
        self.chain = processor.chain
        n = max(len(registry), 1)
        self.acc = TickAccumulator(n_stations=n, tick_s=self.tick_s,
                                   allowed_lateness_s=settings.allowed_lateness_s)
        self.state = processor.init_state((n,), max(len(registry.region_names()), 1))
        if len(registry):
            processor.seed_baselines(self.state, registry.rates * self.tick_s)
        self.counters = PipelineCounters()
        if calibration is None:
            from convergence.responses.calibration import load_calibration

            calibration = load_calibration(settings)
        self.reporter = Reporter(window_ticks=self.chain.meter.window_ticks, tick_s=self.tick_s,
                                 meter=self.chain.meter, method=self.method,
                                 calibration=calibration, run_id=run_id)
        self.evidence = EvidenceRing()
        self.last_output: TickOutput | None = None
        self._dark: set[str] = set()
        self._region_watch: set[str] = set()
        self._meta: StationMeta | None = None
        self._meta_version = -1
        self._n_state = n

    @property
    def fusion(self) -> str:
        """The fusion in force, in words (``rule-based fusion``, ``LightGBM fusion meter@3``)."""
        return self.method.label

    def _load_optional(self, settings: Settings, name: str,
                       loader: Callable[[ModelRegistry, int | None], T], what: str) -> T | None:
        """A trained model per ``settings.<name>_model``, or ``None`` to run without it.

        ``auto``: the latest version, ``None`` when none is trained or it is unusable
        (logged with ``what`` happens instead); pinned ``NAME@N``: that version, and a
        missing one is an error; off: ``None``.
        """
        version = model_spec(getattr(settings, f"{name}_model"), name)
        if version == "off":
            return None
        from convergence.models.registry import ModelNotFound, ModelRegistry, RegistryError

        try:
            return loader(ModelRegistry(settings.models_path), version)
        except ModelNotFound:
            if version is not None:
                raise
            return None
        except RegistryError as exc:
            log.warning("%s model unusable (%s); %s", name, exc, what)
            return None

    def _meter(self, settings: Settings) -> ConvergenceMeter:
        """The rule-based meter, or the learned one when a trained model is available."""
        def load(reg: ModelRegistry, version: int | None) -> Callable[..., Any]:
            from convergence.models.meter_model import load_scorer  # only when one is wanted

            return load_scorer(reg, version)

        scorer = self._load_optional(settings, "meter", load, "using the rule-based fusion")
        if scorer is None:
            # features ride in every report: an analyst's label makes it a training row
            return ConvergenceMeter(window_ticks=settings.window_ticks, emit_features=True)
        self.method = MeterMethod("lightgbm", str(getattr(scorer, "ref", settings.meter_model)))
        return ConvergenceMeter(window_ticks=settings.window_ticks, scorer=scorer,
                                emit_features=True)

    def _regime(self, settings: Settings) -> dict[str, Any]:
        """Chain arguments for a trained price-kind regime HMM, if one is to be used."""
        def load(reg: ModelRegistry, version: int | None) -> RegimeModel:
            from convergence.models.regime import load_regime  # only when one is wanted

            return load_regime(reg, version=version)

        model = self._load_optional(settings, "regime", load, "running without regime evidence")
        if model is None:
            return {}
        if model.kind != "price":
            log.warning("regime model %s is a %s model; the stream applies price models to "
                        "market price stations only, so it is not used", model.ref, model.kind)
            return {}
        self.regime_ref = model.ref
        self.regime_names = tuple(model.names)
        return {"regime": model.filter(), "regime_kind": "price",
                "regime_vol_window": model.vol_window}

    # -- input --------------------------------------------------------------
    def ingest_raw(self, records: Iterable[Any], now_s: float) -> list[DeadLetter]:
        """Validate untrusted records and ingest the good ones; returns dead letters."""
        good, bad = validate_columns(records, now_s=now_s, limits=self.limits)
        self.counters.dead_letters += len(bad)
        return bad + self.ingest_columns(good, now_s)

    def ingest_events(self, events: Sequence[Event], now_s: float) -> list[DeadLetter]:
        """Ingest validated events; events later than the allowed lateness come back."""
        return self.ingest_columns(EventBatch.from_events(events), now_s)

    def ingest_columns(self, batch: EventBatch, now_s: float) -> list[DeadLetter]:
        """Ingest validated events given as columns (no object per event); events later
        than the allowed lateness come back as dead letters."""
        if not len(batch):
            return []
        station = self.registry.ensure_many(batch.station_id, batch.kind)
        cols = EventColumns.from_batch(batch, station)
        self._fit_registry()
        res = self.acc.add(cols)
        self.counters.events += res.accepted
        self.counters.duplicates += res.duplicates
        self.counters.late += int(res.late_idx.size)
        self.evidence.add_columns(batch, station)
        late = batch.take(res.late_idx).events() if res.late_idx.size else []
        dls = [
            dead_letter("ingest", e.to_dict(), ValidationError(
                "event_time_s",
                f"arrived after its tick closed (allowed lateness "
                f"{self.settings.allowed_lateness_s:g} s); check the station's clock or raise "
                "CONVERGENCE_ALLOWED_LATENESS_S"), received_at_s=now_s)
            for e in late
        ]
        self.counters.dead_letters += len(dls)
        return dls

    def _fit_registry(self) -> None:
        """Widen every per-station array (and the meter's regions) to the registry."""
        n = len(self.registry)
        if n > self._n_state:
            self.processor.grow(self.state, n, max(len(self.registry.region_names()), 1))
            self.acc.grow(n)
            self._n_state = n

    def _station_meta(self) -> StationMeta:
        """The registry's arrays, taken once per registry version."""
        if self._meta is None or self._meta_version != self.registry.version:
            self._meta = StationMeta.from_registry(self.registry)
            self._meta_version = self.registry.version
        return self._meta

    def note_station_state(self, station_id: str, state: str) -> None:
        """A station's agent changed state; ``backing_off`` means its source went dark."""
        if state == "backing_off":
            self._dark.add(station_id)
        else:
            self._dark.discard(station_id)

    def manual(self, station_id: str, action: str, until_s: float | None = None) -> bool:
        """A person quarantined (until ``until_s``) or resumed a station: the meter and the
        node machine follow at once. Returns False for a station the pipeline never saw."""
        idx = self.registry.get(station_id)
        if idx is None:
            return False
        self._fit_registry()
        n = self._n_state
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

    def count_dead_letters(self, n: int) -> None:
        """Record dead letters produced upstream (e.g. undecodable messages)."""
        self.counters.dead_letters += n

    # -- ticks --------------------------------------------------------------
    def advance(self, watermark_s: float) -> list[TickOutcome]:
        """Close and process every tick the watermark has passed."""
        return [self._process(t, cells) for t, cells in self.acc.close_until(watermark_s)]

    def flush(self) -> list[TickOutcome]:
        """Close and process every open tick (end of input)."""
        return [self._process(t, cells) for t, cells in self.acc.flush()]

    def _dark_mask(self) -> np.ndarray[Any, Any] | None:
        if not self._dark:
            return None
        mask = np.zeros(self._n_state, bool)
        for sid in self._dark:
            idx = self.registry.get(sid)
            if idx is not None:
                mask[idx] = True
        return mask

    def _regimes(self, out: TickOutput) -> dict[str, str]:
        reg = out.detectors.get("regime")
        if reg is None or not self.regime_names:
            return {}
        state = np.asarray(reg["regime"])
        ids = self.registry.ids()
        applies = self.chain.regime_applies(self.registry.kind_idx)
        return {ids[i]: self.regime_names[int(state[i])]
                for i in np.flatnonzero(applies) if i < len(ids) and i < state.shape[-1]}

    def _process(self, tick: int, cells: dict[str, Any]) -> TickOutcome:
        # Every array is already as wide as the registry: ingest_events grew them.
        time_s = (tick + 1) * self.tick_s
        reg = self.registry
        out = self.processor.step(self.state, cells, self._station_meta(), tick=tick,
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
                notes.append(PatternNote(m.pattern, m.start_tick, m.end_tick, stations))
                first = m.all_stations[0] if m.all_stations else 0
                where.append(names[int(reg.region_idx[first])] if stations else "unknown")
            self.reporter.note_patterns(notes, where)
        self.reporter.note_responses(responses)
        feats = meter.get("features")
        alerts, reports = self.reporter.on_tick(
            tick, time_s, meter, out.node, reg, evidence=self.evidence.of,
            regimes=self._regimes(out), dark=sorted(self._dark),
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
            for r in range(len(meter["level"]))]
        oc = TickOutcome(tick, time_s, readings, alerts, reports, responses)
        oc.uncorroborated = self._uncorroborated(readings)
        self.counters.alerts += len(alerts)
        self.counters.reports += len(reports)
        self.counters.responses += len(responses)
        return oc

    def _uncorroborated(self, readings: Sequence[RegionReading]) -> list[RegionReading]:
        """Regions entering ``watch`` whose score the OSINT rule holds below ``warning``."""
        now = {r.region for r in readings if r.level >= Level.WATCH}
        notes = [r for r in readings if r.region in now - self._region_watch
                 and not r.osint_corroborated]
        self._region_watch = now
        return notes

    def bytes_per_station(self) -> int:
        return self.processor.nbytes_per_station(self.state)

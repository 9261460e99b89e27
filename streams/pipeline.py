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

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from convergence.detectors.chain import DetectorChain
from convergence.detectors.ingest import TickAccumulator
from convergence.detectors.meter import ConvergenceMeter
from convergence.detectors.node_state import NODE_STATES
from convergence.detectors.processor import TickOutput, TickProcessor
from convergence.records import MeterMethod, NodeEvidence, NodeState, Report
from convergence.responses.reports import Calibration, Reporter
from convergence.schema import DeadLetter, Event, EventBatch, Limits
from convergence.settings import Settings, model_spec
from convergence.stations import StationInfo, StationRegistry
from convergence.streams.stages import (
    EvidenceRing,
    PipelineCounters,
    RegionStage,
    StationStage,
    TickOutcome,
)
from convergence.wire import validate_many

if TYPE_CHECKING:
    from convergence.models.regime import RegimeModel
    from convergence.models.registry import ModelRegistry

__all__ = ["EvidenceRing", "Pipeline", "PipelineCounters", "Record", "RecordRouter",
           "TickOutcome", "dead_letter_record", "outcome_records"]

log = logging.getLogger(__name__)

T = TypeVar("T")


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


class Pipeline:
    """Both stages in one process (see module doc): events in, tick outcomes out.

    ``stations_only``: run the first stage alone (a cluster's first-stage worker), whose
    closed ticks come out as :class:`~convergence.records.NodeEvidence` in
    :attr:`evidence_out` for the transport to carry to the second stage.
    """

    def __init__(self, settings: Settings, registry: StationRegistry,
                 chain: DetectorChain | None = None,
                 processor: TickProcessor | None = None,
                 calibration: Calibration | None = None, run_id: str = "",
                 stations_only: bool = False) -> None:
        self.settings = settings
        self.registry = registry
        self.limits = Limits.from_settings(settings)
        self.tick_s = settings.tick_s
        self.method = MeterMethod()
        self.regime_ref: str | None = None
        self.regime_names: tuple[str, ...] = ()
        self._scorer: Any = None
        self._chain_kwargs: dict[str, Any] = {}
        self._built = processor is None and chain is None
        if processor is None:
            if chain is None:
                meter = self._meter(settings)
                self._chain_kwargs = self._regime(settings)
                chain = DetectorChain(meter=meter, tick_s=settings.tick_s, **self._chain_kwargs)
            processor = TickProcessor(chain)
        self._template = processor
        self.processor = processor
        self.chain = processor.chain
        self.counters = PipelineCounters()
        self.station = StationStage(settings, registry, processor, counters=self.counters,
                                    count_ticks=stations_only)
        self.region: RegionStage | None = None
        #: closed ticks' evidence not yet taken by a transport (``stations_only``)
        self.evidence_out: list[NodeEvidence] = []
        self._calibration = calibration
        if not stations_only:
            self.region = self.new_region_stage(registry, run_id=run_id, processor=processor,
                                                counters=self.counters)

    def new_processor(self) -> TickProcessor:
        """A fresh tick processor with this pipeline's models (its own caches)."""
        if not self._built:  # given one: its copy (stages hold configuration only)
            return copy.deepcopy(self._template)
        meter = ConvergenceMeter(window_ticks=self.settings.window_ticks, scorer=self._scorer,
                                 emit_features=True)
        return TickProcessor(DetectorChain(meter=meter, tick_s=self.settings.tick_s,
                                           **self._chain_kwargs))

    def new_region_stage(self, registry: StationRegistry, *, run_id: str = "",
                         processor: TickProcessor | None = None,
                         counters: PipelineCounters | None = None,
                         lookup: Callable[[str], StationInfo | None] | None = None) -> RegionStage:
        """A second stage for ``registry``'s stations with this pipeline's models and
        calibration (a cluster's second-stage worker makes one per partition it owns)."""
        processor = processor or self.new_processor()
        if self._calibration is None:
            from convergence.responses.calibration import load_calibration

            self._calibration = load_calibration(self.settings)
        reporter = Reporter(window_ticks=processor.chain.meter.window_ticks, tick_s=self.tick_s,
                            meter=processor.chain.meter, method=self.method,
                            calibration=self._calibration, run_id=run_id)
        return RegionStage(self.settings, registry, processor, reporter, counters=counters,
                           lookup=lookup, regime_names=self.regime_names)

    @property
    def acc(self) -> TickAccumulator:
        return self.station.acc

    @property
    def state(self) -> dict[str, Any]:
        """Both stages' state (the same arrays: changing one changes the stage's)."""
        return {**self.station.state, **(self.region.state if self.region else {})}

    @property
    def reporter(self) -> Reporter:
        assert self.region is not None, "a stations-only pipeline makes no reports"
        return self.region.reporter

    @property
    def last_output(self) -> TickOutput | None:
        return self.region.last_output if self.region is not None else None

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
        self._scorer = scorer
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
        good, bad = validate_many(records, now_s=now_s, limits=self.limits)
        self.counters.dead_letters += len(bad)
        return bad + self.ingest_events(good, now_s)

    def ingest_events(self, events: Sequence[Event], now_s: float) -> list[DeadLetter]:
        """Ingest validated events; events later than the allowed lateness come back."""
        late = self.station.ingest_events(events, now_s)
        if self.region is not None:
            self.region.fit()
        return late

    def ingest_columns(self, batch: EventBatch, now_s: float) -> list[DeadLetter]:
        """:meth:`ingest_events` for validated events in columns (no object per event):
        the same outcomes, byte for byte."""
        late = self.station.ingest_columns(batch, now_s)
        if self.region is not None:
            self.region.fit()
        return late

    def note_station_state(self, station_id: str, state: str) -> None:
        """A station's agent changed state; ``backing_off`` means its source went dark."""
        if self.region is None:
            return
        if state == "backing_off":
            self.region.dark.add(station_id)
        else:
            self.region.dark.discard(station_id)

    def manual(self, station_id: str, action: str, until_s: float | None = None) -> bool:
        """A person quarantined (until ``until_s``) or resumed a station: the meter and the
        node machine follow at once. Returns False for a station the pipeline never saw."""
        return self.region.manual(station_id, action, until_s) if self.region else False

    def node_states(self) -> dict[str, NodeState]:
        """Every registered station's verdict from the node state machine, as of the last
        closed tick (read-only: for whoever shows stations, e.g. the dashboard). Empty for
        a stations-only pipeline, which holds no verdicts."""
        if self.region is None:
            return {}
        codes = self.region.state[self.chain.node.name]["state"].tolist()
        return {sid: NodeState(NODE_STATES[c]) for sid, c in zip(self.registry.ids(), codes,
                                                                  strict=False)}

    def count_dead_letters(self, n: int) -> None:
        """Record dead letters produced upstream (e.g. undecodable messages)."""
        self.counters.dead_letters += n

    # -- ticks --------------------------------------------------------------
    def advance(self, watermark_s: float) -> list[TickOutcome]:
        """Close and process every tick the watermark has passed."""
        return self._hand_over(self.station.close_until(watermark_s))

    def flush(self) -> list[TickOutcome]:
        """Close and process every open tick (end of input)."""
        return self._hand_over(self.station.flush())

    def _hand_over(self, evidence: list[NodeEvidence]) -> list[TickOutcome]:
        if self.region is None:
            self.evidence_out.extend(evidence)
            return []
        out = []
        for ne in evidence:
            oc = self.region.step(ne)
            if oc is not None:
                out.append(oc)
        return out

    def bytes_per_station(self) -> int:
        return self.processor.nbytes_per_station(self.state)

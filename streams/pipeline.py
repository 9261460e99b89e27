"""The pipeline every runtime drives: validate → bucket → detect → respond → report.

:class:`Pipeline` is the one place where the pure stages are wired together. It
owns no transport and no clock: runtimes hand it raw records or events together
with the receiver's time, and a *watermark* (the event time up to which they believe
input is complete); it hands back dead letters and, for every tick that closed,
a :class:`TickOutcome` with the meter reading, alerts, reports and responses.
The embedded runtime and the Faust worker call exactly this code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from convergence.counters import Counters
from convergence.detectors.chain import ChainState, DetectorChain, StationMeta
from convergence.detectors.ingest import EventColumns, TickAccumulator
from convergence.detectors.meter import LEVELS, QUIET, ConvergenceMeter, explain
from convergence.detectors.periodicity import slot_of
from convergence.responses.axon import AdaptiveResponder, Response
from convergence.responses.prism import build_alert, synthesize_report
from convergence.schema import DeadLetter, Event, Limits, ValidationError, dead_letter
from convergence.settings import Settings, model_spec
from convergence.stations import StationRegistry
from convergence.wire import validate_many

if TYPE_CHECKING:
    from convergence.models.regime import RegimeModel
    from convergence.models.registry import ModelRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class TickOutcome:
    """What one closed tick produced."""

    tick: int
    time_s: float
    score: float
    level: str
    prev_level: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    anomalous_stations: int = 0
    region: str = ""
    osint: bool = False
    n_kinds: int = 0
    #: regions that just reached ``watch`` without corroboration (decoys a person can see)
    uncorroborated: list[dict[str, Any]] = field(default_factory=list)


#: A record for the store: (table, id, document).
Record = tuple[str, str, dict[str, Any]]


def outcome_records(oc: TickOutcome, run_id: str) -> list[Record]:
    """What one tick outcome stores, in publication order, every document stamped with
    ``run_id``: responses, then reports, then alerts (a report is out before the alert
    that refers to it, so whoever reacts to the alert can already fetch it).

    Every runtime stores outcomes through this function, so the embedded store and the
    cluster's topics hold the same documents. Control commands are not records: how
    they reach the stations is the runtime's business.
    """
    out: list[Record] = [("response", r.response_id, {**r.to_dict(), "run_id": run_id})
                         for r in oc.responses]
    out += [("report", str(rep["report_id"]), {**rep, "run_id": run_id}) for rep in oc.reports]
    out += [("alert", str(a["alert_id"]), {**a, "run_id": run_id}) for a in oc.alerts]
    return out


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


class Pipeline:
    """Stateful wiring of the pure stages for one stream of events (see module doc)."""

    def __init__(self, settings: Settings, registry: StationRegistry,
                 chain: DetectorChain | None = None,
                 responder: AdaptiveResponder | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.limits = Limits.from_settings(settings)
        self.tick_s = settings.tick_s
        self.fusion = "rule-based fusion"
        self.regime_ref: str | None = None
        self.chain = chain or DetectorChain(meter=self._meter(settings), tick_s=settings.tick_s,
                                            **self._regime(settings))
        self.responder = responder or AdaptiveResponder()
        n = max(len(registry), 1)
        self.acc = TickAccumulator(n_stations=n, tick_s=self.tick_s,
                                   allowed_lateness_s=settings.allowed_lateness_s)
        self.state: ChainState = self.chain.init_state((n,))
        if len(registry):
            self.chain.seed_baselines(self.state, registry.rates * self.tick_s)
        self.counters = PipelineCounters()
        self._episode_tick: int | None = None
        self._episode_responses: list[dict[str, Any]] = []
        self._episode_patterns: list[dict[str, Any]] = []
        self.last_reading: dict[str, Any] = {}
        self._dark: dict[str, str] = {}
        self._region_watch: set[int] = set()
        self._scale = np.ones(n)
        self._scale_until = np.full(n, -np.inf)
        self._meta: StationMeta | None = None
        self._meta_version = -1

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
            return ConvergenceMeter()
        self.fusion = f"lightgbm {getattr(scorer, 'ref', settings.meter_model)}"
        return ConvergenceMeter(scorer=scorer)

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
        if not events:
            return []
        reg = self.registry
        cols = EventColumns.from_events(events, lambda e: reg.ensure(e.station_id, e.source_kind))
        if len(reg) > self._scale.shape[0]:
            self._grow(len(reg))
        res = self.acc.add(cols)
        self.counters.events += res.accepted
        self.counters.duplicates += res.duplicates
        self.counters.late += int(res.late_idx.size)
        dls = [
            dead_letter("ingest", events[int(i)].to_dict(), ValidationError(
                "event_time_s",
                f"arrived after its tick closed (allowed lateness "
                f"{self.settings.allowed_lateness_s:g} s); check the station's clock or raise "
                "CONVERGENCE_ALLOWED_LATENESS_S"), received_at_s=now_s)
            for i in res.late_idx
        ]
        self.counters.dead_letters += len(dls)
        return dls

    def _grow(self, n: int) -> None:
        """Widen every per-station array to ``n`` stations (new stations registered):
        detector state, open ticks, and the sensitivity scale (1, never expiring)."""
        self.chain.grow(self.state, n)
        self.acc.grow(n)
        pad = n - self._scale.shape[0]
        if pad > 0:
            self._scale = np.concatenate([self._scale, np.ones(pad)])
            self._scale_until = np.concatenate([self._scale_until, np.full(pad, -np.inf)])

    def _station_meta(self, quarantined: Any, scale: Any) -> StationMeta:
        """This tick's station facts; the registry's arrays are taken once per version."""
        if self._meta is None or self._meta_version != self.registry.version:
            self._meta = StationMeta.from_registry(self.registry)
            self._meta_version = self.registry.version
        return dataclasses.replace(self._meta, quarantined=quarantined, threshold_scale=scale)

    #: evidence (sd) of a station whose source keeps failing: enough to make it an
    #: anomalous node, so several going dark together in a region converge like any signal
    DARK_Z = 6.0

    def note_station_state(self, station_id: str, state: str) -> None:
        """A station's agent changed state; ``backing_off`` means its source went dark."""
        if state == "backing_off":
            self._dark[station_id] = state
        else:
            self._dark.pop(station_id, None)

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

    def _process(self, tick: int, cells: dict[str, Any]) -> TickOutcome:
        # Every array is already as wide as the registry: ingest_events grew them.
        n = len(self.registry)
        time_s = (tick + 1) * self.tick_s
        q = self.responder.quarantined(time_s, n)
        scale = np.where(self._scale_until > time_s, self._scale, 1.0)
        meta = self._station_meta(q, scale)
        cells = {**cells, "slot": slot_of(tick * self.tick_s, self.chain.periodicity.slots_per_day)}
        if self._dark:
            dark = np.zeros(n)
            for sid in self._dark:
                idx = self.registry.get(sid)
                if idx is not None:
                    dark[idx] = self.DARK_Z
            cells["dark_z"] = dark
        out = self.chain.step(self.state, cells, meta)
        ids = self.registry.ids() if out["matches"] else ()
        for m in out["matches"]:
            self._episode_patterns.append({
                "pattern": m.pattern, "start_tick": m.start_tick, "end_tick": m.end_tick,
                "stations": [ids[i] for i in m.all_stations if i < len(ids)]})
        reading, node = out["meter"], out["node"]
        self.last_reading = reading
        self.counters.ticks += 1
        level, prev = int(reading["level"]), int(reading["prev_level"])
        outcome = TickOutcome(tick, time_s, float(reading["score"]), LEVELS[level], LEVELS[prev],
                              anomalous_stations=int((reading["weights"] > 0).sum()),
                              region=self._region_name(int(reading["region"])),
                              osint=bool(reading["osint"]), n_kinds=int(reading["n_kinds"]))
        outcome.uncorroborated = self._uncorroborated(reading)
        if prev == QUIET and level > QUIET:
            self._episode_tick = tick
            self._episode_responses = []
            # a cascade that completed just before the meter woke up belongs to the episode
            horizon = tick - self.chain.meter.window_ticks
            self._episode_patterns = [p for p in self._episode_patterns if p["end_tick"] >= horizon]
        responses = self.responder.decide(tick=tick, time_s=time_s, level=level, prev_level=prev,
                                          node_state=node["state"], weights=reading["weights"],
                                          registry=self.registry)
        outcome.responses = responses
        self._apply_sensitivity(responses)
        self.counters.responses += len(responses)
        self._episode_responses.extend(r.to_dict() for r in responses)
        if bool(reading["fired"]):
            expl = explain(self.chain.meter, reading, node, self.registry.ids(),
                           self.registry.kind_idx, self.registry.group_idx,
                           self.registry.region_names(), self.registry.region_idx)
            ep = self._episode_tick if self._episode_tick is not None else tick
            alert = build_alert(episode_tick=ep, tick=tick, time_s=time_s, explanation=expl)
            report = synthesize_report(alert, expl, self._episode_responses,
                                       patterns=self._episode_patterns,
                                       window_ticks=self.chain.meter.window_ticks,
                                       tick_s=self.tick_s, method=self.fusion)
            outcome.alerts.append(alert)
            outcome.reports.append(report)
            self.counters.alerts += 1
            self.counters.reports += 1
        if level == QUIET:
            self._episode_tick = None
            horizon = tick - self.chain.meter.window_ticks
            self._episode_patterns = [p for p in self._episode_patterns if p["end_tick"] >= horizon]
        return outcome

    def _uncorroborated(self, reading: dict[str, Any]) -> list[dict[str, Any]]:
        """Regions entering ``watch`` whose score the OSINT rule holds below ``warning``."""
        watch_at = self.chain.meter.thresholds[0]
        scores = np.asarray(reading["region_score"])
        now = {int(r) for r in np.flatnonzero(scores >= watch_at)}
        notes = [{"region": self._region_name(r), "score": round(float(scores[r]), 1),
                  "n_kinds": int(reading["region_kinds"][r])}
                 for r in sorted(now - self._region_watch) if not bool(reading["region_osint"][r])]
        self._region_watch = now
        return notes

    def _region_name(self, idx: int) -> str:
        names = self.registry.region_names()
        return names[idx] if 0 <= idx < len(names) else "unknown"

    def _apply_sensitivity(self, responses: Sequence[Response]) -> None:
        # threshold commands also tune the meter's own nodes: a region under warning
        # needs less evidence per station to count as corroboration
        regions = self.registry.region_names()
        for r in responses:
            cmd = r.command
            if cmd is None or cmd.action.value != "set_thresholds" or cmd.target.type != "region":
                continue
            if cmd.target.value not in regions:
                continue
            mask = self.registry.region_idx == regions.index(cmd.target.value)
            self._scale[mask] = float(cmd.params.get("scale", 1.0))
            self._scale_until[mask] = cmd.expires_at_s

    def bytes_per_station(self) -> int:
        return self.chain.nbytes_per_station(self.state)

"""Typed records that cross module lines: meter readings, alerts, reports, station status.

Every runtime (embedded, cluster, simulation), the store, the CLI and the dashboard
exchange these, never ad-hoc dicts: a misspelled optional key is a ``TypeError`` at
construction, not a feature silently switched off. Each record has ``to_dict()`` (plain
JSON-able values, what topics and the store carry) and ``from_dict()`` (which ignores
unknown keys, so a newer writer never breaks an older reader, and fills defaults for
missing optional ones).

Levels and states are :class:`~enum.StrEnum` s: they compare equal to their plain
names (``Level.WARNING == "warning"``) and order by :attr:`Level.rank`.

Times are unix seconds (``time_s``) in records; :func:`iso_time` renders them as
ISO 8601 UTC for people.

Examples
--------
>>> Level.from_rank(2), Level.WARNING.rank, Level.WATCH < Level.CONVERGED
(<Level.WARNING: 'warning'>, 2, True)
>>> a = Alert(alert_id="alt-1", report_id="rpt-1", region="mena", level=Level.CONVERGED,
...           score=91.5, tick=1700000010, time_s=1700000011.0, episode_tick=1700000004,
...           stations=("news-mena-001", "sensor-mena-002"), source_kinds=("osint_news", "sensor"),
...           osint_corroborated=True)
>>> Alert.from_dict(a.to_dict()) == a
True
>>> a.time_iso
'2023-11-14T22:13:31Z'
>>> iso_time(0.0)
'1970-01-01T00:00:00Z'
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self, TypeVar

__all__ = [
    "NODE_EVIDENCE_FIELDS",
    "AckNote",
    "Alert",
    "Confidence",
    "Contribution",
    "EvidenceSample",
    "Label",
    "Level",
    "MeterMethod",
    "NodeEvidence",
    "NodeState",
    "Outcome",
    "PatternNote",
    "RegionReading",
    "Report",
    "ResponseTaken",
    "StationState",
    "StationStatus",
    "TimelineEntry",
    "Verdict",
    "iso_time",
]

R = TypeVar("R")

#: bounds on what a report carries (everything stored is size-bounded)
MAX_EVIDENCE_PER_STATION = 5
MAX_SCORE_POINTS = 600
MAX_TIMELINE = 200
MAX_CONTRIBUTIONS = 50


def iso_time(time_s: float) -> str:
    """ISO 8601 UTC of unix seconds, to the second (``...Z``); ``""`` for a non-finite time."""
    if not math.isfinite(time_s):
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time_s))


class Level(StrEnum):
    """The convergence meter's levels, lowest first."""

    QUIET = "quiet"
    WATCH = "watch"
    WARNING = "warning"
    CONVERGED = "converged"

    @property
    def rank(self) -> int:
        return _LEVEL_ORDER.index(self)

    @classmethod
    def from_rank(cls, rank: int) -> Level:
        return _LEVEL_ORDER[int(rank)]

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank >= other.rank


_LEVEL_ORDER: tuple[Level, ...] = (Level.QUIET, Level.WATCH, Level.WARNING, Level.CONVERGED)


class NodeState(StrEnum):
    """A station's verdict from the node state machine."""

    NORMAL = "normal"
    ELEVATED = "elevated"
    ANOMALOUS = "anomalous"
    COOLING = "cooling"


class StationState(StrEnum):
    """What a station agent is doing (``dark``: its source keeps failing)."""

    RUNNING = "running"
    BACKING_OFF = "backing_off"
    QUARANTINED = "quarantined"
    STOPPED = "stopped"


def _build(cls: type[R], d: Mapping[str, Any], **convert: Any) -> R:
    """``cls(**known keys of d)``, each converted by ``convert[name]`` when given."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k not in names:
            continue
        fn = convert.get(k)
        kw[k] = fn(v) if fn is not None and v is not None else v
    return cls(**kw)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, StrEnum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


class _Record:
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(self)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        return _build(cls, d)


# -- the meter ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegionReading(_Record):
    """One region's convergence meter at one closed tick.

    ``report_id`` names the region's current episode (``None`` while quiet);
    ``thresholds`` are the scores at which watch, warning and converged begin.
    """

    region: str
    tick: int
    time_s: float
    score: float
    level: Level
    prev_level: Level
    osint_corroborated: bool
    n_kinds: int
    n_stations: int
    report_id: str | None = None
    thresholds: tuple[float, float, float] = (30.0, 55.0, 75.0)
    run_id: str = ""

    @property
    def changed(self) -> bool:
        return self.level != self.prev_level

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegionReading:
        return _build(cls, d, level=Level, prev_level=Level, thresholds=tuple)


# -- alerts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert(_Record):
    """The meter of one region rose to ``warning`` or ``converged``.

    Ids are deterministic per region episode and level, so a replay or a restarted
    worker upserts the same alert.
    """

    alert_id: str
    report_id: str
    region: str
    level: Level
    score: float
    tick: int
    time_s: float
    episode_tick: int
    stations: tuple[str, ...]
    source_kinds: tuple[str, ...]
    osint_corroborated: bool
    run_id: str = ""

    @property
    def n_stations(self) -> int:
        return len(self.stations)

    @property
    def time_iso(self) -> str:
        return iso_time(self.time_s)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # readers of the earlier dict form (topics, the store) find what they used
        d["regions"] = [self.region]
        d["n_stations"] = self.n_stations
        d["time"] = self.time_iso
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        d = dict(d)
        if "region" not in d and d.get("regions"):
            d["region"] = d["regions"][0]
        return _build(cls, d, level=Level, stations=tuple, source_kinds=tuple)


# -- reports ------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterMethod(_Record):
    """Which fusion produced the score: ``rule`` or ``lightgbm`` (with its model ref)."""

    kind: str = "rule"
    ref: str | None = None

    @property
    def label(self) -> str:
        return "rule-based fusion" if self.kind == "rule" else f"LightGBM fusion {self.ref or ''}".strip()


@dataclass(frozen=True)
class Confidence(_Record):
    """Calibrated P(genuine convergence) at this level and score, from a campaign."""

    probability: float
    campaign: str
    n_runs: int
    basis: str = ""


@dataclass(frozen=True)
class Contribution(_Record):
    """One station's part in a region's score.

    ``share`` is its share of the region's discounted evidence; ``correlated`` says it
    was discounted because ``correlated_with`` (a stronger station of its correlation
    ``group``) already counts fully.
    """

    station_id: str
    source_kind: str
    region: str
    share: float
    peak_evidence: dict[str, float]
    by_type: dict[str, float]
    group: str = ""
    correlated: bool = False
    correlated_with: str | None = None
    joined_tick: int | None = None


@dataclass(frozen=True)
class TimelineEntry(_Record):
    """Something that happened in an episode: a level change, a station joining or
    leaving, the end. ``what`` is ``level``, ``joined``, ``left`` or ``ended``."""

    tick: int
    time_s: float
    what: str
    score: float
    level: Level | None = None
    station_id: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TimelineEntry:
        return _build(cls, d, level=Level)


@dataclass(frozen=True)
class EvidenceSample(_Record):
    """One event a contributing station saw (a bounded sample per station)."""

    station_id: str
    time_s: float
    category: str
    value: float
    text: str | None = None
    link: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The generic document, built directly (every node-evidence record and region
        checkpoint holds hundreds of these; the dataclass walk was a worker's hot spot)."""
        return {"station_id": self.station_id, "time_s": self.time_s, "category": self.category,
                "value": self.value, "text": self.text, "link": self.link, "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvidenceSample:
        """The inverse of :meth:`to_dict` (unknown keys ignored, as for every record).

        >>> x = EvidenceSample("st-1", 12.5, "news", 1.0, text="Port closed")
        >>> EvidenceSample.from_dict(x.to_dict()) == x
        True
        """
        return cls(d["station_id"], d["time_s"], d["category"], d["value"], d.get("text"),
                   d.get("link"), d.get("source"))


#: per station in a :class:`NodeEvidence`: burst, concentration, CUSUM, periodicity and
#: regime z, then the concentration's category bin, the pattern flags (bits: burst,
#: level change, variance change, periodicity break), the regime state (-1: none), and
#: the trend and scale z (added later, at the end: a row of the first eight, from an
#: older first stage, reads as no trend and no scale evidence)
NODE_EVIDENCE_FIELDS = ("burst_z", "concentration_z", "cusum_z", "periodicity_z", "regime_z",
                        "concentration_bin", "flags", "regime", "trend_z", "scale_z")


@dataclass(frozen=True)
class NodeEvidence(_Record):
    """One closed tick's station evidence, from the first stage to the second.

    Only *active* stations are listed (see :mod:`convergence.detectors.evidence`):
    ``stations`` maps a station id to its :data:`NODE_EVIDENCE_FIELDS` values, ``samples``
    to the newest events it saw in the tick (at most ``MAX_EVIDENCE_PER_STATION``), for
    the report. Bounded by the number of active stations, which are few: a station at
    baseline sends nothing.

    >>> ne = NodeEvidence(7, 8.0, {"news-1": (5.0, 0.0, 0.0, 0.0, 0.0, 3, 1, -1, 4.5, 0.0)})
    >>> NodeEvidence.from_dict(ne.to_dict()) == ne
    True
    """

    tick: int
    time_s: float
    stations: dict[str, tuple[float | int, ...]] = field(default_factory=dict)
    samples: dict[str, tuple[EvidenceSample, ...]] = field(default_factory=dict)

    def only(self, keep: Callable[[str], bool]) -> NodeEvidence:
        """The evidence of the stations ``keep`` accepts (e.g. one partition's regions)."""
        return NodeEvidence(self.tick, self.time_s,
                            {k: v for k, v in self.stations.items() if keep(k)},
                            {k: v for k, v in self.samples.items() if keep(k)})

    @classmethod
    def merge(cls, parts: Sequence[NodeEvidence]) -> NodeEvidence:
        """One tick's evidence from several first-stage partitions (disjoint stations)."""
        stations: dict[str, tuple[float | int, ...]] = {}
        samples: dict[str, tuple[EvidenceSample, ...]] = {}
        for p in parts:
            stations.update(p.stations)
            samples.update(p.samples)
        return cls(parts[0].tick, parts[0].time_s, stations, samples)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`_Record.to_dict`'s document, built directly: a worker sends one per
        closed tick and second-stage partition, with hundreds of stations and samples
        (the generic walk over dataclass fields was the first stage's largest cost)."""
        return {
            "tick": self.tick, "time_s": self.time_s,
            "stations": {str(k): list(v) for k, v in self.stations.items()},
            "samples": {str(k): [x.to_dict() for x in v] for k, v in self.samples.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeEvidence:
        return cls(int(d["tick"]), float(d["time_s"]),
                   {str(k): tuple(v) for k, v in (d.get("stations") or {}).items()},
                   {str(k): tuple(EvidenceSample.from_dict(x) for x in v)
                    for k, v in (d.get("samples") or {}).items()})


@dataclass(frozen=True)
class PatternNote(_Record):
    """A temporal pattern that completed during the episode."""

    pattern: str
    start_tick: int
    end_tick: int
    stations: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatternNote:
        return _build(cls, d, stations=tuple)


@dataclass(frozen=True)
class AckNote(_Record):
    """A station's answer to a response's command."""

    station_id: str
    applied: bool
    at_s: float
    detail: str = ""


@dataclass(frozen=True)
class ResponseTaken(_Record):
    """An adaptive response: what was done, to whom, until when, and who acknowledged."""

    response_id: str
    action: str
    target: str
    params: dict[str, float]
    issued_at_s: float
    # defaults: the store drops a field whose value is None, so a response without an
    # expiry must still read back
    expires_at_s: float | None = None
    reason: str = ""
    acks: tuple[AckNote, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResponseTaken:
        return _build(cls, d, acks=lambda xs: tuple(AckNote.from_dict(x) for x in xs))


@dataclass(frozen=True)
class Outcome(_Record):
    """How an episode ended (the final revision carries it)."""

    started_s: float
    ended_s: float
    peak_score: float
    peak_level: Level

    @property
    def duration_s(self) -> float:
        return self.ended_s - self.started_s

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outcome:
        return _build(cls, d, peak_level=Level)


@dataclass(frozen=True)
class Report(_Record):
    """A synthesized report on one region's episode, as of one revision.

    A report is revised as its episode evolves (each level change, and at the end);
    every revision is kept (``report_id`` + ``revision``), and the final one
    (``status == "closed"``) carries the :class:`Outcome`. Lists are bounded (see the
    ``MAX_*`` constants), so a report never grows without limit.
    """

    report_id: str
    revision: int
    region: str
    episode_tick: int
    tick: int
    time_s: float
    level: Level
    peak_level: Level
    score: float
    peak_score: float
    status: str  # "open" | "closed"
    title: str
    summary: str
    method: MeterMethod = field(default_factory=MeterMethod)
    confidence: Confidence | None = None
    contributions: tuple[Contribution, ...] = ()
    by_kind: dict[str, float] = field(default_factory=dict)
    by_evidence: dict[str, float] = field(default_factory=dict)
    timeline: tuple[TimelineEntry, ...] = ()
    score_series: tuple[tuple[int, float], ...] = ()
    evidence: tuple[EvidenceSample, ...] = ()
    regimes: dict[str, str] = field(default_factory=dict)
    patterns: tuple[PatternNote, ...] = ()
    dark_stations: tuple[str, ...] = ()
    responses: tuple[ResponseTaken, ...] = ()
    checks: tuple[str, ...] = ()
    outcome: Outcome | None = None
    alert_ids: tuple[str, ...] = ()
    #: the meter's fused features of the region at this revision (``FEATURE_NAMES`` of
    #: :mod:`convergence.detectors.meter`): an analyst's label on the report makes it a
    #: training row for the learned meter
    features: dict[str, float] = field(default_factory=dict)
    tick_s: float = 1.0
    window_s: float = 8.0
    run_id: str = ""

    @property
    def revision_id(self) -> str:
        """Id of this revision's record (``<report_id>-r<revision, 3 digits>``)."""
        return f"{self.report_id}-r{self.revision:03d}"

    @property
    def time_iso(self) -> str:
        return iso_time(self.time_s)

    @property
    def stations(self) -> tuple[str, ...]:
        return tuple(c.station_id for c in self.contributions)

    @property
    def source_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({c.source_kind for c in self.contributions}))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["revision_id"] = self.revision_id
        d["time"] = self.time_iso
        d["regions"] = [self.region]
        d["stations"] = list(self.stations)
        d["source_kinds"] = list(self.source_kinds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        def many(sub: Any) -> Any:
            return lambda xs: tuple(sub.from_dict(x) for x in xs)

        return _build(
            cls, d, level=Level, peak_level=Level,
            method=MeterMethod.from_dict, confidence=Confidence.from_dict,
            contributions=many(Contribution), timeline=many(TimelineEntry),
            score_series=lambda xs: tuple((int(t), float(s)) for t, s in xs),
            evidence=many(EvidenceSample), patterns=many(PatternNote),
            dark_stations=tuple, responses=many(ResponseTaken), checks=tuple,
            outcome=Outcome.from_dict, alert_ids=tuple)


# -- analysts' feedback -------------------------------------------------------------

#: longest note an analyst can attach to a label (characters)
MAX_LABEL_NOTE = 1000


class Verdict(StrEnum):
    """An analyst's verdict on a report."""

    GENUINE = "genuine"
    FALSE_ALARM = "false-alarm"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Label(_Record):
    """An analyst's verdict on a report: what, who, when, and why (``note``).

    A report may be labelled more than once (a second look); the newest label is the
    verdict. ``revision`` is the report revision the analyst read. Labelled reports'
    ``features`` are training rows for the learned meter.
    """

    label_id: str
    report_id: str
    verdict: Verdict
    by: str
    at_s: float
    note: str = ""
    revision: int = 0

    @property
    def at_iso(self) -> str:
        return iso_time(self.at_s)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Label:
        return _build(cls, d, verdict=Verdict)


# -- stations -----------------------------------------------------------------------


@dataclass(frozen=True)
class StationStatus(_Record):
    """A station's latest state, as its agent reports it (the compacted status topic)."""

    station_id: str
    source_kind: str
    region: str
    group: str
    state: StationState
    at_s: float
    interval_s: float | None = None
    last_event_s: float | None = None
    events: int = 0
    rate_per_s: float | None = None
    lat: float | None = None
    lon: float | None = None
    change: str | None = None
    #: the pipeline's verdict on the station, when whoever publishes the status knows it
    #: (the embedded runtime does; a remote station agent does not)
    node_state: NodeState | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StationStatus:
        d = dict(d)
        d.setdefault("source_kind", d.get("kind", ""))
        d.setdefault("group", d.get("correlation_group", ""))
        return _build(cls, d, state=StationState, node_state=NodeState)


def bounded(items: Sequence[R], limit: int) -> tuple[R, ...]:
    """The last ``limit`` items (reports keep the most recent history)."""
    return tuple(items[-limit:]) if limit > 0 else ()

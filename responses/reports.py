"""Alerts and report revisions from the per-region meter (PRISM, in the source documents).

A region's *episode* begins when its meter leaves ``quiet`` and ends when it returns
there. :class:`Reporter` keeps, per region, the live account of its episode
(:class:`EpisodeLog`: when each level was reached, which stations joined when, the
score series, the responses taken and their acknowledgements, the temporal patterns
that completed) and turns it into records:

* an :class:`~convergence.records.Alert` when a region's meter rises to ``warning`` or
  ``converged``;
* a :class:`~convergence.records.Report` *revision* at that moment and at every later
  level change, and a final, closed revision when the episode ends (its outcome:
  duration, peak, how it ended). Every revision is kept; the report's id stays the
  episode's.

Ids are deterministic: an episode is named by its region and the tick its meter left
``quiet``; an alert by its episode and level; a revision by its report and number. A
replay or a restarted worker upserts the same records instead of duplicating them.

The words are for a duty analyst at 3 a.m.: a title that says what and where, a
bottom line up front, each station's part (and which were discounted as correlated,
with whom), what the sources actually said, what was done, and what would confirm or
refute it. A calibrated confidence comes from a campaign's results
(:class:`Calibration`), with the campaign named.

Examples
--------
>>> import numpy as np
>>> from convergence.stations import StationInfo, StationRegistry
>>> reg = StationRegistry([StationInfo("news-eu-1", "osint_news", "eu", "wire-a"),
...                        StationInfo("social-eu-2", "osint_social", "eu"),
...                        StationInfo("sensor-eu-3", "sensor", "eu")])
>>> rep = Reporter(window_ticks=8, tick_s=1.0)
>>> peak = np.zeros((3, 9)); peak[:, 0] = 9.0  # per station and evidence type
>>> def meter(level, prev, score):
...     return {"score": np.array([score]), "level": np.array([level]),
...             "prev_level": np.array([prev]), "evidence": np.array([3.0]),
...             "n_kinds": np.array([3]), "osint": np.array([True]), "n_nodes": np.array([3]),
...             "weights": np.array([1.0, 1.0, 1.0]), "episode_start": np.array([100])}
>>> _ = rep.on_tick(100, 101.0, meter(1, 0, 40.0), {"peak": peak}, reg)
>>> alerts, reports = rep.on_tick(101, 102.0, meter(3, 1, 90.0), {"peak": peak}, reg)
>>> alerts[0].level, alerts[0].region, reports[0].revision, reports[0].status
(<Level.CONVERGED: 'converged'>, 'eu', 1, 'open')
>>> reports[0].title
'CONVERGED in eu: 3 stations across news, social media and sensors (score 90)'
>>> _, final = rep.on_tick(140, 141.0, meter(0, 3, 5.0), {"peak": peak}, reg)
>>> final[0].status, final[0].revision, final[0].outcome.peak_level
('closed', 2, <Level.CONVERGED: 'converged'>)
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergence.detectors.base import Array
from convergence.detectors.meter import ConvergenceMeter, explain
from convergence.ids import hash_id
from convergence.records import (
    MAX_CONTRIBUTIONS,
    MAX_SCORE_POINTS,
    MAX_TIMELINE,
    AckNote,
    Alert,
    Confidence,
    Contribution,
    EvidenceSample,
    Level,
    MeterMethod,
    Outcome,
    PatternNote,
    Report,
    ResponseTaken,
    TimelineEntry,
    iso_time,
)
from convergence.responses.render import duration, probability
from convergence.schema import OSINT_KINDS, SOURCE_KINDS
from convergence.stations import StationRegistry

__all__ = ["KIND_LABEL", "Calibration", "EpisodeLog", "Reporter", "alert_id_for",
           "report_id_for"]

KIND_LABEL = {
    "osint_news": "news", "osint_social": "social media", "market_price": "market prices",
    "market_volume": "market volumes", "sensor": "sensors",
}
EVIDENCE_LABEL = {
    "burst": "a burst of activity", "entropy": "reporting concentrating on one topic",
    "regime": "a market regime shift", "change": "a lasting change in level or variance",
    "periodicity": "activity far above its usual level for this time of day",
    "pattern": "a completed temporal pattern", "dark": "the source going dark",
    "trend": "activity (or, for a market price, the price) climbing steadily",
    "scale": "swinging harder from one tick to the next than it usually does (volatility)",
}


def report_id_for(region: str, episode_tick: int) -> str:
    """Deterministic report id of ``region``'s episode that began at ``episode_tick``."""
    return hash_id("rpt", region, episode_tick)


def alert_id_for(region: str, episode_tick: int, level: str) -> str:
    """Deterministic alert id: one per region episode and level."""
    return hash_id("alt", region, episode_tick, level)


def _join(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class Calibration:
    """P(genuine convergence) by level and score band, measured by a campaign.

    ``table`` maps a level to rows ``(score_lo, score_hi, p_genuine, n)``; ``campaign``
    names the campaign (its id, seed and size) so a report can say where its confidence
    comes from. :meth:`confidence` looks up the band of a score.
    """

    campaign: str
    n_runs: int
    table: Mapping[str, Sequence[tuple[float, float, float, int]]]

    def confidence(self, level: str, score: float) -> Confidence | None:
        rows = self.table.get(str(level), ())
        for lo, hi, p, n in rows:
            if lo <= score < hi or (hi >= 100.0 and score >= lo):
                band = f"of {lo:g} or more" if hi >= 100.0 else f"in [{lo:g}, {hi:g})"
                return Confidence(round(float(p), 4), self.campaign, self.n_runs,
                                  f"{_plural(int(n), 'alert')} at {level} with a score {band} "
                                  f"in that campaign; {p:.0%} of them were "
                                  "genuine convergences")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "n_runs": self.n_runs,
                "table": {k: [list(r) for r in v] for k, v in self.table.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(str(d["campaign"]), int(d["n_runs"]),
                   {str(k): [tuple(r) for r in v] for k, v in d["table"].items()})


#: an episode already reported gets a revision when stations join it, at most this often
JOIN_REVISION_TICKS = 5


@dataclass
class EpisodeLog:
    """One region's current episode: everything its report revisions are made of.

    Plain data (:meth:`to_dict` / :meth:`from_dict`), so a cluster worker can keep it in
    a changelog-backed table and a new owner continues the same report.
    """

    region: str
    start_tick: int
    start_s: float
    report_id: str
    revision: int = 0
    peak_score: float = 0.0
    peak_level: int = 0
    last_level: int = 0
    timeline: list[TimelineEntry] = field(default_factory=list)
    scores: list[tuple[int, float]] = field(default_factory=list)
    joined: dict[str, int] = field(default_factory=dict)
    responses: list[ResponseTaken] = field(default_factory=list)
    patterns: list[PatternNote] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    #: the explanation behind the latest revision
    last_explanation: dict[str, Any] | None = None
    #: the explanation, evidence samples and OSINT corroboration of the revision written at
    #: the episode's peak level: the final revision summarises the episode with them (by
    #: the end, the stations still moving are the stragglers, not what made the alert)
    peak_explanation: dict[str, Any] | None = None
    peak_samples: list[EvidenceSample] = field(default_factory=list)
    peak_osint: bool = False
    #: tick of the latest revision (joins revise at most every JOIN_REVISION_TICKS)
    revised_tick: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region, "start_tick": self.start_tick, "start_s": self.start_s,
            "report_id": self.report_id, "revision": self.revision,
            "peak_score": self.peak_score, "peak_level": self.peak_level,
            "last_level": self.last_level,
            "timeline": [t.to_dict() for t in self.timeline], "scores": self.scores,
            "joined": self.joined, "responses": [r.to_dict() for r in self.responses],
            "patterns": [p.to_dict() for p in self.patterns], "alert_ids": self.alert_ids,
            "last_explanation": self.last_explanation,
            "peak_explanation": self.peak_explanation,
            "peak_samples": [x.to_dict() for x in self.peak_samples],
            "peak_osint": self.peak_osint, "revised_tick": self.revised_tick,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpisodeLog:
        return cls(
            d["region"], int(d["start_tick"]), float(d["start_s"]), d["report_id"],
            int(d["revision"]), float(d["peak_score"]), int(d["peak_level"]),
            int(d["last_level"]), [TimelineEntry.from_dict(t) for t in d["timeline"]],
            [(int(t), float(s)) for t, s in d["scores"]], dict(d["joined"]),
            [ResponseTaken.from_dict(r) for r in d["responses"]],
            [PatternNote.from_dict(p) for p in d["patterns"]], list(d["alert_ids"]),
            d.get("last_explanation"), d.get("peak_explanation"),
            [EvidenceSample.from_dict(x) for x in d.get("peak_samples") or ()],
            bool(d.get("peak_osint", False)),
            int(d["revised_tick"]) if d.get("revised_tick") is not None else None)

    def note(self, entry: TimelineEntry) -> None:
        self.timeline.append(entry)
        if len(self.timeline) > MAX_TIMELINE:
            # keep the level changes; drop the oldest join notes first
            joins = [i for i, e in enumerate(self.timeline) if e.what == "joined"]
            del self.timeline[joins[0] if joins else 0]


EvidenceLookup = Callable[[Sequence[str]], Sequence[EvidenceSample]]


class Reporter:
    """Per-region episodes → alerts and report revisions (see the module docstring).

    Parameters
    ----------
    window_ticks, tick_s
        The meter's window and the tick length, for the words.
    meter
        The meter whose readings are explained (default settings when omitted).
    method
        Which fusion scored (rule or a learned model), stated in every report.
    calibration
        Confidence by level and score from a campaign, when one is available.
    run_id
        Stamped on every record.
    """

    def __init__(self, *, window_ticks: int, tick_s: float, meter: ConvergenceMeter | None = None,
                 method: MeterMethod | None = None, calibration: Calibration | None = None,
                 run_id: str = "") -> None:
        self.window_ticks = window_ticks
        self.tick_s = tick_s
        self.meter = meter or ConvergenceMeter(window_ticks=window_ticks)
        self.method = method or MeterMethod()
        self.calibration = calibration
        self.run_id = run_id
        self.episodes: dict[str, EpisodeLog] = {}
        # responses taken in the tick a region's episode begins (noted before the episode
        # exists; :meth:`on_tick` hands them to it and forgets the rest)
        self._starting_responses: dict[str, list[ResponseTaken]] = {}
        # patterns that completed shortly before a region's meter woke up
        self._recent_patterns: collections.deque[PatternNote] = collections.deque(maxlen=64)

    # -- state ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"episodes": {k: e.to_dict() for k, e in self.episodes.items()},
                "recent_patterns": [p.to_dict() for p in self._recent_patterns]}

    def restore(self, d: Mapping[str, Any]) -> None:
        self.episodes = {k: EpisodeLog.from_dict(e) for k, e in d.get("episodes", {}).items()}
        self._recent_patterns.clear()
        self._recent_patterns.extend(PatternNote.from_dict(p) for p in d.get("recent_patterns", ()))

    # -- inputs ------------------------------------------------------------------
    def note_patterns(self, patterns: Sequence[PatternNote], regions: Sequence[str]) -> None:
        """Temporal patterns that completed this tick, with the region of each."""
        for p, region in zip(patterns, regions, strict=True):
            ep = self.episodes.get(region)
            if ep is not None:
                ep.patterns = (ep.patterns + [p])[-20:]
            else:
                self._recent_patterns.append(PatternNote(p.pattern, p.start_tick, p.end_tick,
                                                         (region, *p.stations)))

    def note_responses(self, responses: Sequence[Any]) -> None:
        """Responses taken this tick (:class:`~convergence.responses.actions.Response`)."""
        for r in responses:
            if r.action == "quarantine":
                continue
            ep = self.episodes.get(r.region)
            if ep is not None:
                ep.responses = (ep.responses + [r.taken()])[-50:]
            else:  # the region's meter woke up this tick: its episode begins in on_tick
                self._starting_responses.setdefault(r.region, []).append(r.taken())

    def note_acks(self, response_id: str, acks: Sequence[AckNote]) -> None:
        """Stations acknowledged a response's command; later revisions list the acks."""
        for ep in self.episodes.values():
            for i, r in enumerate(ep.responses):
                if r.response_id == response_id:
                    merged = {a.station_id: a for a in (*r.acks, *acks)}
                    ep.responses[i] = ResponseTaken(r.response_id, r.action, r.target, r.params,
                                                    r.issued_at_s, r.expires_at_s, r.reason,
                                                    tuple(list(merged.values())[:100]))
                    return

    # -- the tick -----------------------------------------------------------------
    def on_tick(self, tick: int, time_s: float, meter_out: Mapping[str, Array],
                node: Mapping[str, Array], registry: StationRegistry, *,
                evidence: EvidenceLookup | None = None,
                regimes: Mapping[str, str] | None = None,
                dark: Sequence[str] = (), features: Array | None = None,
                feature_names: Sequence[str] = ()) -> tuple[list[Alert], list[Report]]:
        """Update every region's episode with one live tick's meter outputs (no runs
        axis); returns this tick's alerts and report revisions."""
        alerts: list[Alert] = []
        reports: list[Report] = []
        names = registry.region_names()
        level_a, prev_a = meter_out["level"], meter_out["prev_level"]
        ids = registry.ids()
        w = np.asarray(meter_out["weights"])
        for r in range(len(level_a)):
            level, prev = int(level_a[r]), int(prev_a[r])
            region = names[r] if r < len(names) else "unknown"
            ep = self.episodes.get(region)
            if ep is None and level == 0:
                continue
            score = round(float(meter_out["score"][r]), 2)
            if ep is None:
                start = int(meter_out["episode_start"][r]) if "episode_start" in meter_out else tick
                start = tick if start < 0 else start
                ep = EpisodeLog(region, start, time_s - self.tick_s, report_id_for(region, start))
                horizon = tick - self.window_ticks
                ep.patterns = [PatternNote(p.pattern, p.start_tick, p.end_tick, p.stations[1:])
                               for p in self._recent_patterns
                               if p.stations and p.stations[0] == region and p.end_tick >= horizon]
                ep.responses = self._starting_responses.pop(region, [])[-50:]
                self.episodes[region] = ep
            ep.scores = (ep.scores + [(tick, score)])[-MAX_SCORE_POINTS:]
            ep.peak_score = max(ep.peak_score, score)
            ep.peak_level = max(ep.peak_level, level)
            joined_now = False
            for i in np.flatnonzero((registry.region_idx == r) & (w > 0)):
                sid = ids[int(i)]
                if sid not in ep.joined:
                    ep.joined[sid] = tick
                    ep.note(TimelineEntry(tick, time_s, "joined", score, None, sid))
                    joined_now = True
            changed = level != prev
            if changed:
                ep.note(TimelineEntry(tick, time_s, "level", score, Level.from_rank(level)))
            fired = level > prev and level >= 2
            if fired:
                alert = self._alert(ep, tick, time_s, level, score, meter_out, node, registry, r)
                ep.alert_ids = (ep.alert_ids + [alert.alert_id])[-10:]
                alerts.append(alert)
            ep.last_level = level
            has_report = ep.revision > 0
            # stations joining an episode already reported revise it too, at most every
            # JOIN_REVISION_TICKS: the analyst sees who came in without a flood of revisions
            joins_due = (joined_now and has_report and level > 0 and ep.revised_tick is not None
                         and tick - ep.revised_tick >= JOIN_REVISION_TICKS)
            if fired or (changed and has_report) or joins_due:
                feats = ({n: round(float(v), 4) for n, v in zip(feature_names, features[r],
                                                                 strict=True)}
                         if features is not None and feature_names else {})
                reports.append(self._revise(ep, tick, time_s, level, score, meter_out, node,
                                            registry, r, evidence=evidence, regimes=regimes,
                                            dark=dark, features=feats,
                                            closed=level == 0))
            if level == 0:
                del self.episodes[region]
        self._starting_responses.clear()
        return alerts, reports

    # -- records ------------------------------------------------------------------
    def _alert(self, ep: EpisodeLog, tick: int, time_s: float, level: int, score: float,
               meter_out: Mapping[str, Array], node: Mapping[str, Array],
               registry: StationRegistry, r: int) -> Alert:
        w = np.asarray(meter_out["weights"])
        members = np.flatnonzero((registry.region_idx == r) & (w > 0))
        members = members[np.argsort(-w[members], kind="stable")]
        ids = registry.ids()
        kinds = sorted({SOURCE_KINDS[int(registry.kind_idx[i])].value for i in members})
        lvl = Level.from_rank(level)
        return Alert(alert_id_for(ep.region, ep.start_tick, lvl.value), ep.report_id, ep.region,
                     lvl, score, tick, time_s, ep.start_tick,
                     tuple(ids[int(i)] for i in members), tuple(kinds),
                     bool(meter_out["osint"][r]), self.run_id)

    def _revise(self, ep: EpisodeLog, tick: int, time_s: float, level: int, score: float,
                meter_out: Mapping[str, Array], node: Mapping[str, Array],
                registry: StationRegistry, r: int, *, evidence: EvidenceLookup | None,
                regimes: Mapping[str, str] | None, dark: Sequence[str],
                features: dict[str, float], closed: bool) -> Report:
        ep.revision += 1
        ep.revised_tick = tick
        if closed:
            ep.note(TimelineEntry(tick, time_s, "ended", score, Level.QUIET))
        expl = explain(self.meter, meter_out, node, registry.ids(), registry.kind_idx,
                       registry.group_idx, registry.region_names(), registry.region_idx, r,
                       group_names=registry.group_names())
        osint = bool(meter_out["osint"][r])
        samples_now: list[EvidenceSample] | None = None
        if closed or not expl["nodes"]:
            # the final revision explains the episode as it stood at its peak
            expl = ep.peak_explanation or ep.last_explanation or expl
            osint = ep.peak_osint if ep.peak_explanation is not None else osint
        else:
            ep.last_explanation = expl
            if level >= ep.peak_level:
                samples_now = list(evidence([n["station_id"] for n in
                                             expl["nodes"][:MAX_CONTRIBUTIONS]])) if evidence else []
                ep.peak_explanation, ep.peak_samples, ep.peak_osint = expl, samples_now, osint
        contributions = tuple(
            Contribution(n["station_id"], n["source_kind"], n["region"], n["share"],
                         n["peak_evidence"], n["by_type"], n.get("group", ""), n["correlated"],
                         n.get("correlated_with"), ep.joined.get(n["station_id"]))
            for n in expl["nodes"][:MAX_CONTRIBUTIONS])
        lvl, peak_lvl = Level.from_rank(level), Level.from_rank(ep.peak_level)
        shown = lvl if not closed else peak_lvl
        kinds = [KIND_LABEL.get(k, k) for k in expl["by_kind"]]
        n_st = len(contributions)
        title = (f"{shown.value.upper()} in {ep.region}: {_plural(n_st, 'station')} across "
                 f"{_join(kinds) or 'no source kinds'} (score "
                 f"{(score if not closed else ep.peak_score):.0f})")
        if closed:
            title = f"ENDED - {title}"
        if samples_now is not None:
            samples = tuple(samples_now)
        elif closed and ep.peak_explanation is not None:
            samples = tuple(ep.peak_samples)
        else:
            samples = tuple(evidence([c.station_id for c in contributions])) if evidence else ()
        region_regimes = {sid: st for sid, st in (regimes or {}).items()
                          if sid in {c.station_id for c in contributions}
                          or registry.info(registry.index_of(sid)).region == ep.region}
        region_dark = tuple(d for d in dark if registry.get(d) is not None
                            and registry.info(registry.index_of(d)).region == ep.region)
        conf = (self.calibration.confidence(shown.value, ep.peak_score if closed else score)
                if self.calibration is not None else None)
        outcome = (Outcome(ep.start_s, time_s, ep.peak_score, peak_lvl) if closed else None)
        report = Report(
            report_id=ep.report_id, revision=ep.revision, region=ep.region,
            episode_tick=ep.start_tick, tick=tick, time_s=time_s, level=lvl,
            peak_level=peak_lvl, score=score, peak_score=ep.peak_score,
            status="closed" if closed else "open", title=title,
            summary=self._summary(ep, expl, contributions, lvl, score, conf, closed, time_s),
            method=self.method, confidence=conf, contributions=contributions,
            by_kind=dict(expl["by_kind"]), by_evidence=dict(expl["by_evidence"]),
            timeline=tuple(ep.timeline), score_series=tuple(ep.scores), evidence=samples,
            regimes=dict(region_regimes), patterns=tuple(ep.patterns), dark_stations=region_dark,
            responses=tuple(ep.responses),
            checks=tuple(self._checks(expl, contributions, registry, r, region_dark, osint,
                                      closed)),
            outcome=outcome, alert_ids=tuple(ep.alert_ids), features=features,
            tick_s=self.tick_s, window_s=self.window_ticks * self.tick_s, run_id=self.run_id)
        return report

    def _summary(self, ep: EpisodeLog, expl: Mapping[str, Any],
                 contributions: Sequence[Contribution], level: Level, score: float,
                 conf: Confidence | None, closed: bool, time_s: float) -> str:
        kinds = [KIND_LABEL.get(k, k) for k in expl["by_kind"]]
        independent = [c for c in contributions if not c.correlated]
        def peak(c: Contribution) -> tuple[str, float]:
            return max(c.peak_evidence.items(), key=lambda kv: kv[1]) if c.peak_evidence \
                else ("burst", 0.0)

        # the three that count most towards the score, named strongest first by the
        # evidence each is quoted with (13.5, 11.4, 10.8 sd, never 13.5, 10.8, 11.4)
        top = sorted(sorted(contributions, key=lambda c: -c.share)[:3], key=lambda c: -peak(c)[1])

        def strongest(c: Contribution) -> str:
            ev, sd = peak(c)
            return f"{c.station_id} ({KIND_LABEL.get(c.source_kind, c.source_kind)}: " \
                   f"{EVIDENCE_LABEL.get(ev, ev)}, {sd:.1f} sd)"

        since = iso_time(ep.start_s)
        if closed:
            dur = time_s - ep.start_s
            head = (f"The episode in {ep.region} that began at {since} ended after {duration(dur)}; "
                    f"it peaked at {Level.from_rank(ep.peak_level).value} (score "
                    f"{ep.peak_score:.0f}).")
        else:
            head = (f"Since {since}, {_plural(len(independent), 'independent stream')} in "
                    f"{ep.region} turned anomalous together ({_join(kinds)}); the meter is at "
                    f"{level.value} (score {score:.0f}).")
        parts = [head]
        if top:
            parts.append("Strongest: " + "; ".join(strongest(c) for c in top) + ".")
        corr = [c for c in contributions if c.correlated]
        if corr:
            parts.append(f"{_plural(len(corr), 'station')} "
                         f"{'shares' if len(corr) == 1 else 'share'} an upstream feed or market "
                         f"with a stronger one and {'was' if len(corr) == 1 else 'were'} discounted.")
        parts.append("Independent OSINT sources corroborate it." if expl["osint_corroborated"]
                     else "No two independent OSINT sources corroborate it.")
        if conf is not None:
            parts.append(f"Confidence {probability(conf.probability)} that this is a genuine "
                         "convergence "
                         f"(campaign {conf.campaign}).")
        return " ".join(parts)

    def _checks(self, expl: Mapping[str, Any], contributions: Sequence[Contribution],
                registry: StationRegistry, r: int, dark: Sequence[str], osint: bool,
                closed: bool = False) -> list[str]:
        """What would confirm or refute the convergence, in plain words."""
        out: list[str] = []
        moved = {c.source_kind for c in contributions}
        present = {SOURCE_KINDS[int(k)].value
                   for k in np.unique(registry.kind_idx[registry.region_idx == r])}
        quiet = sorted(present - moved)
        if quiet:
            out.append("Confirm: " + (
                "look at " + _join([KIND_LABEL.get(k, k) for k in quiet]) + f" in {expl['region']}, "
                "which did not move during the episode; a move there would have corroborated it."
                if closed else
                "watch " + _join([KIND_LABEL.get(k, k) for k in quiet]) + f" in {expl['region']}, "
                "which have not moved yet; a move there would corroborate it."))
        by_group: dict[str, list[str]] = collections.defaultdict(list)
        for c in contributions:
            if c.correlated and c.correlated_with:
                by_group[c.correlated_with].append(c.station_id)
        for lead, others in list(by_group.items())[:3]:
            out.append(f"Check independently: {_join([lead, *others])} share one upstream "
                       "source; confirm with an outlet outside it.")
        osint_groups = {c.group or c.station_id for c in contributions
                        if c.source_kind in {k.value for k in OSINT_KINDS}}
        if not osint_groups:
            out.append("Refute: no news or social media station took part; a move seen only in "
                       "markets or sensors can have a local cause (a feed glitch, one trader, one "
                       "faulty sensor).")
        elif len(osint_groups) == 1:
            out.append("Refute: it rests on one independent OSINT source; if it turns out to echo "
                       "a market feed or another outlet, treat it as unconfirmed.")
        elif len(osint_groups) == 2:
            out.append("Refute: it rests on two independent OSINT sources; if either turns out to "
                       "echo the other, or a market feed, treat it as unconfirmed.")
        if dark:
            out.append(f"Refute: {_join(list(dark))} went dark; their silence counts as "
                       "evidence - check whether it is a local failure before acting on it.")
        types = {t for c in contributions for t, v in c.by_type.items() if v > 0}
        if types and types <= {"dark"}:
            out.append("Refute: the evidence is only sources going dark, not activity: look for a "
                       "shared outage (power, network, provider).")
        if not osint and osint_groups:
            out.append("Refute: the OSINT stations that moved do not corroborate each other "
                       "independently; until a second outlet reports it, treat it as unconfirmed.")
        return out[:8]

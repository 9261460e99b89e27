"""Today's alert and report dicts as the typed records the hub takes.

The pipeline still produces alerts with ``prism.build_alert`` and reports with
``prism.synthesize_report`` (plain dicts; they are what the ``alerts`` and ``reports``
topics and the store hold today). The lead is rewriting it to produce
:class:`~convergence.records.Report` revisions; until then the dashboard reads both
forms through :func:`as_report` and :func:`as_alert`, so the embedded run, the cluster's
topics and the store all reach the hub as records. Once every producer writes records,
this module reduces to ``Report.from_dict`` / ``Alert.from_dict``.

Examples
--------
>>> legacy = {"report_id": "rpt-1", "alert_id": "alt-1", "episode_tick": 100,
...           "time_s": 1700000000.0, "level": "warning", "score": 61.0,
...           "title": "WARNING: 2 stations ...", "summary": "Two kinds moved.",
...           "regions": ["mena"], "source_kinds": ["osint_news", "sensor"],
...           "nodes": [{"station_id": "news-mena-001", "source_kind": "osint_news",
...                      "region": "mena", "share": 0.7, "peak_evidence": {"burst": 6.0},
...                      "correlated": False, "by_type": {"burst": 0.7}}],
...           "by_kind": {"osint_news": 0.7, "sensor": 0.3}, "responses": [],
...           "method": "rule-based fusion", "window_s": 8.0}
>>> rep = as_report(legacy)
>>> rep.region, rep.revision, rep.level, rep.contributions[0].station_id, rep.method.kind
('mena', 1, <Level.WARNING: 'warning'>, 'news-mena-001', 'rule')
>>> as_report(rep.to_dict()) == rep
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from convergence.records import (
    AckNote,
    Alert,
    Contribution,
    Level,
    MeterMethod,
    PatternNote,
    Report,
    ResponseTaken,
    TimelineEntry,
    bounded,
)

__all__ = ["ack_notes", "as_alert", "as_report", "is_record", "response_taken"]

MAX_CONTRIBUTIONS = 50


def is_record(d: Mapping[str, Any]) -> bool:
    """Whether ``d`` is a :class:`Report` in dict form (it has revisions and a status)."""
    return "revision" in d and "status" in d and "region" in d


def as_alert(d: Mapping[str, Any]) -> Alert:
    """An alert from either form (``Alert.from_dict`` reads both); ``ValueError`` when
    something it needs is missing or malformed."""
    try:
        return Alert.from_dict(d)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"not an alert ({type(exc).__name__}: {exc})") from None


def ack_notes(acks: Sequence[Mapping[str, Any]]) -> tuple[AckNote, ...]:
    """``CommandAck.to_dict()`` s (the acks topic) as a response's ack notes."""
    return tuple(AckNote(str(a["station_id"]), bool(a["applied"]), float(a["at_s"]),
                         str(a.get("detail", ""))) for a in acks)


def response_taken(d: Mapping[str, Any], acks: Sequence[Mapping[str, Any]] = ()) -> ResponseTaken:
    """A ``Response.to_dict()`` (the ``responses`` topic and table) as a record."""
    cmd = d.get("command") or {}
    target = cmd.get("target") or {}
    stations = d.get("stations") or []
    where = (f"{target.get('type')}:{target.get('value')}" if target
             else ", ".join(map(str, stations[:5])) or "-")
    taken = ResponseTaken.from_dict({
        "response_id": str(d.get("response_id", "")), "action": str(d.get("action", "")),
        "target": where, "params": dict(cmd.get("params") or {}),
        "issued_at_s": float(cmd.get("issued_at_s", d.get("time_s", 0.0))),
        "expires_at_s": cmd.get("expires_at_s"), "reason": str(d.get("reason", "")),
    })
    return dataclasses.replace(taken, acks=ack_notes(acks))


def as_report(d: Mapping[str, Any], *, revision: int = 1, tick: int | None = None,
              peak: tuple[Level, float] | None = None, status: str = "open",
              timeline: Sequence[TimelineEntry] = (),
              score_series: Sequence[tuple[int, float]] = (),
              responses: Sequence[ResponseTaken] | None = None) -> Report:
    """A report from either form. A record (:func:`is_record`) is read as it is; a
    ``synthesize_report`` dict becomes revision ``revision`` with what the caller knows
    of the episode (its tick, peak, status, timeline, score series, responses with
    acks). ``ValueError`` when something it needs is missing or malformed."""
    try:
        if is_record(d):
            return Report.from_dict(d)
        level = Level(d["level"])
        score = float(d["score"])
        regions = d.get("regions") or ["unknown"]
        peak_level, peak_score = peak if peak is not None else (level, score)
        method = str(d.get("method", "rule-based fusion"))
        nodes = list(d.get("nodes") or [])[:MAX_CONTRIBUTIONS]
        return Report(
            report_id=str(d["report_id"]), revision=revision, region=str(regions[0]),
            episode_tick=int(d["episode_tick"]),
            tick=int(tick if tick is not None else d.get("tick", d["episode_tick"])),
            time_s=float(d["time_s"]), level=level, peak_level=max(peak_level, level),
            score=score, peak_score=max(peak_score, score), status=status,
            title=str(d["title"]), summary=str(d["summary"]),
            method=(MeterMethod("rule") if method.startswith("rule")
                    else MeterMethod("lightgbm", method)),
            contributions=tuple(Contribution.from_dict(
                {**n, "peak_evidence": dict(n.get("peak_evidence") or {}),
                 "by_type": dict(n.get("by_type") or {})}) for n in nodes),
            by_kind={str(k): float(v) for k, v in (d.get("by_kind") or {}).items()},
            by_evidence={str(k): float(v) for k, v in (d.get("by_evidence") or {}).items()},
            timeline=tuple(timeline), score_series=bounded(list(score_series), 600),
            patterns=tuple(PatternNote.from_dict(p) for p in d.get("patterns") or []),
            responses=tuple(responses) if responses is not None else tuple(
                response_taken(r) for r in d.get("responses") or []),
            alert_ids=(str(d["alert_id"]),) if d.get("alert_id") else (),
            window_s=float(d.get("window_s", 8.0)), run_id=str(d.get("run_id", "")),
        )
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"not a report ({type(exc).__name__}: {exc})") from None

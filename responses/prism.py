"""PRISM: alert records and synthesized reports.

When the meter fires, :func:`build_alert` makes the alert record that is printed,
published and stored, and :func:`synthesize_report` writes the report: a title, a
plain-language summary a person can act on at 3 a.m., the findings behind the score
(which stations, which source kinds, which evidence), and the responses taken.

Ids are deterministic: an episode is named by the tick at which the meter left
``quiet``, an alert by its episode and level, and a report by its episode — so a
replay or a restarted worker upserts the same records instead of duplicating them.

Examples
--------
>>> expl = {"score": 82.0, "level": "converged", "evidence": 6.1, "n_kinds": 3, "n_regions": 1,
...         "osint_corroborated": True,
...         "nodes": [{"station_id": "news-eu-1", "source_kind": "osint_news", "region": "eu",
...                    "share": 0.6, "peak_evidence": {"burst": 9.0}, "correlated": False,
...                    "by_type": {"burst": 0.6}},
...                   {"station_id": "sensor-eu-2", "source_kind": "sensor", "region": "eu",
...                    "share": 0.4, "peak_evidence": {"burst": 6.0}, "correlated": False,
...                    "by_type": {"burst": 0.4}}],
...         "by_kind": {"osint_news": 0.6, "sensor": 0.4}, "by_evidence": {"burst": 1.0}}
>>> alert = build_alert(episode_tick=1000, tick=1003, time_s=1004.0, explanation=expl)
>>> alert["alert_id"] == build_alert(episode_tick=1000, tick=1003, time_s=1004.0,
...                                  explanation=expl)["alert_id"]
True
>>> report = synthesize_report(alert, expl, responses=[], window_ticks=8, tick_s=1.0)
>>> report["title"]
'CONVERGED: 2 stations across 2 source kinds in eu (score 82)'
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

_KIND_LABEL = {
    "osint_news": "news", "osint_social": "social media", "market_price": "market prices",
    "market_volume": "market volumes", "sensor": "sensors",
}


def hash_id(prefix: str, *parts: Any) -> str:
    """Deterministic id ``<prefix>-<16 hex>`` from ``parts`` (replays give the same ids).

    >>> hash_id("rpt", 12), hash_id("rpt", 12) == report_id_for(12)
    ('rpt-6b7a09e188c630e3', True)
    """
    return f"{prefix}-" + hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def report_id_for(episode_tick: int) -> str:
    """Deterministic report id of the episode that began at ``episode_tick``."""
    return hash_id("rpt", episode_tick)


def build_alert(*, episode_tick: int, tick: int, time_s: float,
                explanation: Mapping[str, Any]) -> dict[str, Any]:
    """The alert record for a meter that just rose to ``explanation['level']``."""
    nodes = explanation["nodes"]
    kinds = sorted({n["source_kind"] for n in nodes})
    regions = sorted({n["region"] for n in nodes})
    level = explanation["level"]
    return {
        "alert_id": hash_id("alt", episode_tick, level),
        "report_id": report_id_for(episode_tick),
        "episode_tick": episode_tick,
        "tick": tick,
        "time_s": time_s,
        "level": level,
        "score": explanation["score"],
        "stations": [n["station_id"] for n in nodes],
        "n_stations": len(nodes),
        "source_kinds": kinds,
        "regions": regions,
        "osint_corroborated": explanation["osint_corroborated"],
    }


def synthesize_report(alert: Mapping[str, Any], explanation: Mapping[str, Any],
                      responses: Sequence[Mapping[str, Any]], *, window_ticks: int,
                      tick_s: float, method: str = "rule-based fusion",
                      patterns: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Write the report for an alert (see module docstring)."""
    nodes = explanation["nodes"]
    kinds = alert["source_kinds"]
    regions = alert["regions"] or ["an unknown region"]
    where = ", ".join(regions)
    title = (f"{alert['level'].upper()}: {alert['n_stations']} stations across "
             f"{len(kinds)} source kinds in {where} (score {alert['score']:.0f})")
    kind_words = ", ".join(_KIND_LABEL.get(k, k) for k in explanation["by_kind"])
    top = nodes[:3]
    strongest = "; ".join(
        f"{n['station_id']} ({_KIND_LABEL.get(n['source_kind'], n['source_kind'])}, "
        f"{max(n['peak_evidence'].items(), key=lambda kv: kv[1])[0]} "
        f"{max(n['peak_evidence'].values()):.1f} sd)" for n in top)
    correlated = sum(1 for n in nodes if n["correlated"])
    summary = (
        f"Within {window_ticks * tick_s:.0f} s, {alert['n_stations']} independent-looking "
        f"streams in {where} turned anomalous together: {kind_words}. "
        f"Strongest evidence: {strongest}. "
        + (f"{correlated} of them share an upstream feed or market with a stronger station "
           "and were discounted. " if correlated else "")
        + ("OSINT sources corroborate the move." if alert["osint_corroborated"]
           else "No OSINT source corroborates it; treat as a market-only move.")
    )
    findings = [
        f"{_KIND_LABEL.get(k, k)} contributes {share * 100:.0f}% of the evidence"
        for k, share in explanation["by_kind"].items()
    ] + [
        f"{ev} evidence accounts for {share * 100:.0f}%"
        for ev, share in explanation.get("by_evidence", {}).items()
    ]
    findings += [
        f"temporal pattern {p['pattern']} completed over ticks {p['start_tick']}-{p['end_tick']} "
        f"({', '.join(p['stations'][:6])}{', ...' if len(p['stations']) > 6 else ''})"
        for p in patterns
    ]
    actions = [r.get("reason", r.get("action", "")) for r in responses]
    return {
        "report_id": alert["report_id"],
        "alert_id": alert["alert_id"],
        "episode_tick": alert["episode_tick"],
        "time_s": alert["time_s"],
        "level": alert["level"],
        "score": alert["score"],
        "title": title,
        "summary": summary,
        "findings": findings,
        "regions": alert["regions"],
        "source_kinds": kinds,
        "nodes": list(nodes[:25]),
        "by_kind": dict(explanation["by_kind"]),
        "by_evidence": dict(explanation.get("by_evidence", {})),
        "responses": list(responses),
        "actions_taken": actions,
        "patterns": list(patterns),
        "method": method,
        "window_s": window_ticks * tick_s,
    }

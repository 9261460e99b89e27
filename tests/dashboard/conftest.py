"""Fixtures for the dashboard tests: realistic records, built the way producers build them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from convergence.records import (
    AckNote,
    Alert,
    Confidence,
    Contribution,
    EvidenceSample,
    Level,
    MeterMethod,
    Outcome,
    PatternNote,
    RegionReading,
    Report,
    ResponseTaken,
    StationState,
    StationStatus,
    TimelineEntry,
)

T0 = 1_700_000_000.0


def full_report(report_id: str = "rpt-0a1b2c3d4e5f6a7b", revision: int = 2, *,
                region: str = "mena", status: str = "open", **over: Any) -> Report:
    """A report with every section filled, as the per-region pipeline will write it."""
    tick = int(T0) + 12
    fields: dict[str, Any] = dict(
        report_id=report_id, revision=revision, region=region, episode_tick=tick - 6,
        tick=tick, time_s=T0 + 13, level=Level.CONVERGED, peak_level=Level.CONVERGED,
        score=91.5, peak_score=93.0, status=status,
        title=f"CONVERGED: 3 stations across 3 source kinds in {region} (score 92)",
        summary="Within 8 s, 3 independent streams in mena turned anomalous together.",
        method=MeterMethod("lightgbm", "meter@3"),
        confidence=Confidence(0.87, "mc-2026-12-01", 600, "converged at score >= 90"),
        contributions=(
            Contribution("news-mena-001", "osint_news", region, 0.5, {"burst": 9.1, "entropy": 2.0},
                         {"burst": 0.4, "entropy": 0.1}, group="wire-01", joined_tick=tick - 5),
            Contribution("news-mena-002", "osint_news", region, 0.2, {"burst": 7.0},
                         {"burst": 0.2}, group="wire-01", correlated=True,
                         correlated_with="news-mena-001", joined_tick=tick - 4),
            Contribution("sensor-mena-003", "sensor", region, 0.3, {"cusum": 6.5},
                         {"cusum": 0.3}, group="sensor-mena-003", joined_tick=tick - 3),
        ),
        by_kind={"osint_news": 0.7, "sensor": 0.3},
        by_evidence={"burst": 0.6, "cusum": 0.3, "entropy": 0.1},
        timeline=(TimelineEntry(tick - 6, T0 + 7, "level", 33.0, level=Level.WATCH),
                  TimelineEntry(tick - 5, T0 + 8, "joined", 35.0, station_id="news-mena-001"),
                  TimelineEntry(tick - 2, T0 + 11, "level", 61.0, level=Level.WARNING),
                  TimelineEntry(tick, T0 + 13, "level", 91.5, level=Level.CONVERGED)),
        score_series=tuple((tick - 6 + i, s) for i, s in
                           enumerate((33.0, 35.0, 44.0, 52.0, 61.0, 80.0, 91.5))),
        evidence=(EvidenceSample("news-mena-001", T0 + 9, "conflict", 1.0,
                                 text="Explosion reported near <port>", link="https://example.org/a",
                                 source="wire"),
                  EvidenceSample("news-mena-002", T0 + 9.5, "conflict", 1.0,
                                 text="Scripted link", link="javascript:alert(1)"),
                  EvidenceSample("sensor-mena-003", T0 + 10, "seismic", 4.7)),
        regimes={"price-mena-001": "high volatility"},
        patterns=(PatternNote("news-then-market", tick - 5, tick - 1,
                              ("news-mena-001", "sensor-mena-003")),),
        dark_stations=("sensor-mena-009",),
        responses=(ResponseTaken("rsp-1", "burst_mode", "region:mena", {"interval_s": 0.25},
                                 T0 + 11, T0 + 131, "warning in mena: sample faster",
                                 acks=(AckNote("news-mena-001", True, T0 + 11.1, "burst"),
                                       AckNote("sensor-mena-003", False, T0 + 11.2, "expired"))),),
        checks=("a second wire service reports the same port incident",),
        outcome=(Outcome(T0 + 7, T0 + 40, 93.0, Level.CONVERGED) if status == "closed" else None),
        alert_ids=("alt-1",), run_id="run-7-1700000000",
    )
    fields.update(over)
    return Report(**fields)


@pytest.fixture
def make_report() -> Callable[..., Report]:
    return full_report


def alert(alert_id: str = "alt-0a1b2c3d4e5f6a7b", report_id: str = "rpt-0a1b2c3d4e5f6a7b", *,
          region: str = "mena", level: Level = Level.CONVERGED, score: float = 91.5,
          time_s: float = T0 + 13) -> Alert:
    return Alert(alert_id, report_id, region, level, score, int(time_s) - 1, time_s,
                 int(T0) + 6, ("news-mena-001", "sensor-mena-003"), ("osint_news", "sensor"), True)


def reading(region: str = "mena", time_s: float = T0, score: float = 10.0,
            level: Level = Level.QUIET, prev: Level = Level.QUIET, **over: Any) -> RegionReading:
    return RegionReading(region, int(time_s) - 1, time_s, score, level, prev, True, 2, 3, **over)


def status(station_id: str = "news-mena-001", *, region: str = "mena", at_s: float = T0,
           events: int = 0, state: StationState = StationState.RUNNING,
           kind: str = "osint_news", **over: Any) -> StationStatus:
    return StationStatus(station_id, kind, region, "wire-01", state, at_s, events=events, **over)


@pytest.fixture
def records() -> dict[str, Callable[..., Any]]:
    """Builders: ``alert``, ``reading``, ``status`` (keyword overrides)."""
    return {"alert": alert, "reading": reading, "status": status}

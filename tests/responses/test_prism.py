from __future__ import annotations

from typing import Any

from convergence.responses.prism import build_alert, report_id_for, synthesize_report


def _expl(osint: bool = True) -> dict[str, Any]:
    node = {"station_id": "n1", "source_kind": "osint_news", "region": "eu", "share": 0.5,
            "peak_evidence": {"burst": 7.5, "entropy": 2.0}, "correlated": False,
            "by_type": {"burst": 0.4, "entropy": 0.1}}
    node2 = dict(node, station_id="n2", correlated=True, share=0.2)
    node3 = dict(node, station_id="v1", source_kind="market_volume", share=0.3)
    return {"score": 77.7, "level": "converged", "evidence": 4.0, "n_kinds": 2, "n_regions": 1,
            "osint_corroborated": osint, "nodes": [node, node3, node2],
            "by_kind": {"osint_news": 0.7, "market_volume": 0.3},
            "by_evidence": {"burst": 0.8, "entropy": 0.2}}


def test_alert_fields_and_deterministic_ids() -> None:
    a = build_alert(episode_tick=10, tick=12, time_s=13.0, explanation=_expl())
    assert a["report_id"] == report_id_for(10)
    assert a["alert_id"] != build_alert(episode_tick=10, tick=12, time_s=13.0,
                                        explanation={**_expl(), "level": "warning"})["alert_id"]
    assert a["source_kinds"] == ["market_volume", "osint_news"] and a["n_stations"] == 3


def test_report_explains_itself() -> None:
    a = build_alert(episode_tick=10, tick=12, time_s=13.0, explanation=_expl())
    r = synthesize_report(a, _expl(), [{"action": "escalate", "reason": "page on-call"}],
                          window_ticks=8, tick_s=1.0)
    assert r["title"].startswith("CONVERGED: 3 stations across 2 source kinds in eu")
    assert "n1 (news, burst 7.5 sd)" in r["summary"]
    assert "1 of them share an upstream feed" in r["summary"]
    assert "OSINT sources corroborate" in r["summary"]
    assert "news contributes 70% of the evidence" in r["findings"]
    assert r["actions_taken"] == ["page on-call"] and r["report_id"] == a["report_id"]
    r2 = synthesize_report(a | {"osint_corroborated": False}, _expl(False), [], window_ticks=8,
                           tick_s=1.0)
    assert "market-only move" in r2["summary"]

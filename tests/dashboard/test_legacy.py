"""Today's alert and report dicts read as records."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from convergence.dashboard.legacy import as_alert, as_report, is_record, response_taken
from convergence.records import Level, Report
from convergence.responses.prism import build_alert, synthesize_report

EXPL = {"score": 82.0, "level": "converged", "evidence": 6.1, "n_kinds": 2, "n_regions": 1,
        "osint_corroborated": True,
        "nodes": [{"station_id": "news-eu-west-1", "source_kind": "osint_news", "region": "eu-west",
                   "share": 0.6, "peak_evidence": {"burst": 9.0}, "correlated": False,
                   "by_type": {"burst": 0.6}},
                  {"station_id": "sensor-eu-west-2", "source_kind": "sensor", "region": "eu-west",
                   "share": 0.4, "peak_evidence": {"cusum": 6.0}, "correlated": True,
                   "by_type": {"cusum": 0.4}}],
        "by_kind": {"osint_news": 0.6, "sensor": 0.4}, "by_evidence": {"burst": 0.6, "cusum": 0.4}}
RESPONSE = {"response_id": "rsp-1", "action": "burst_mode", "reason": "warning in eu-west",
            "level": "warning", "tick": 1003, "time_s": 1004.0, "stations": [],
            "command": {"command_id": "cmd-1", "action": "burst_mode",
                        "target": {"type": "region", "value": "eu-west"}, "issued_at_s": 1004.0,
                        "expires_at_s": 1124.0, "params": {"interval_s": 0.25}, "reason": "x"}}


def test_a_pipeline_alert_and_report_become_records() -> None:
    alert_d = build_alert(episode_tick=1000, tick=1003, time_s=1004.0, explanation=EXPL)
    report_d = synthesize_report(alert_d, EXPL, [RESPONSE], window_ticks=8, tick_s=1.0,
                                 patterns=[{"pattern": "p", "start_tick": 999, "end_tick": 1002,
                                            "stations": ["news-eu-west-1"]}])
    a = as_alert(alert_d)
    assert (a.region, a.level, a.report_id) == ("eu-west", Level.CONVERGED, alert_d["report_id"])
    rep = as_report(report_d, revision=3, tick=1003, peak=(Level.CONVERGED, 90.0), status="closed")
    assert rep.revision == 3 and rep.status == "closed" and rep.region == "eu-west"
    assert rep.peak_score == 90.0 and rep.score == 82.0 and rep.tick == 1003
    assert [c.station_id for c in rep.contributions] == ["news-eu-west-1", "sensor-eu-west-2"]
    assert rep.contributions[1].correlated and rep.by_evidence == {"burst": 0.6, "cusum": 0.4}
    assert rep.responses[0].target == "region:eu-west" and rep.responses[0].params == {"interval_s": 0.25}
    assert rep.responses[0].expires_at_s == 1124.0
    assert rep.patterns[0].stations == ("news-eu-west-1",)
    assert rep.alert_ids == (alert_d["alert_id"],) and rep.method.kind == "rule"
    assert not is_record(report_d) and is_record(rep.to_dict())


def test_a_record_passes_through(make_report: Callable[..., Report]) -> None:
    rep = make_report(status="closed")
    assert as_report(rep.to_dict(), revision=99) == rep


def test_acks_join_a_response() -> None:
    r = response_taken(RESPONSE, [{"station_id": "news-eu-west-1", "applied": True, "at_s": 1004.5}])
    assert r.acks[0].station_id == "news-eu-west-1" and r.acks[0].applied


@pytest.mark.parametrize("bad", [{}, {"report_id": "r", "level": "loud", "score": 1},
                                 {"report_id": "r", "level": "watch", "score": "x"}])
def test_malformed_reports_are_a_value_error(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a report"):
        as_report(bad)


def test_malformed_alerts_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an alert"):
        as_alert({"alert_id": "a"})

"""Records added for analysts' feedback, and records reading back what the store keeps."""

from __future__ import annotations

import pytest

from convergence.records import Label, ResponseTaken, Verdict


def test_label_round_trips_and_refuses_an_unknown_verdict() -> None:
    lb = Label("rpt-1-l001", "rpt-1", Verdict.FALSE_ALARM, "ann", 1_773_457_920.0, "decoy feed", 3)
    d = lb.to_dict()
    assert d["verdict"] == "false-alarm" and Label.from_dict(d) == lb
    assert lb.at_iso == "2026-03-14T03:12:00Z"
    assert Label.from_dict({**d, "from_a_newer_writer": 1}) == lb
    assert Verdict("genuine") is Verdict.GENUINE
    with pytest.raises(ValueError):
        Label.from_dict({**d, "verdict": "maybe"})


def test_a_response_without_expiry_reads_back_when_the_store_dropped_its_none_fields() -> None:
    r = ResponseTaken("rsp-1", "escalate", "on-call analyst", {}, 10.0, None, "page")
    stored = {k: v for k, v in r.to_dict().items() if v is not None}  # what SurrealDB keeps
    assert "expires_at_s" not in stored and ResponseTaken.from_dict(stored) == r

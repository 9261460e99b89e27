"""Records added for analysts' feedback, records reading back what the store keeps, and
the node evidence's own document (the same as the generic one)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.records import (
    EvidenceSample,
    Label,
    NodeEvidence,
    ResponseTaken,
    Verdict,
    _Record,
)


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


@given(st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.tuples(st.lists(st.one_of(st.floats(allow_nan=False), st.integers(-1, 9)), min_size=8,
                       max_size=8),
              st.lists(st.builds(EvidenceSample, st.text(max_size=8), st.floats(0, 1e9),
                                 st.text(max_size=8), st.floats(allow_nan=False),
                                 st.one_of(st.none(), st.text(max_size=20)), st.none(),
                                 st.one_of(st.none(), st.text(max_size=8))), max_size=5)),
    max_size=6), st.integers(0, 10**9))
def test_node_evidence_documents_are_the_generic_records_documents(
        rows: dict[str, tuple[list[float | int], list[EvidenceSample]]], tick: int) -> None:
    ne = NodeEvidence(tick, tick + 1.0, {k: tuple(v) for k, (v, _) in rows.items()},
                      {k: tuple(x) for k, (_, x) in rows.items() if x})
    assert ne.to_dict() == _Record.to_dict(ne)
    assert orjson.dumps(ne.to_dict()) == orjson.dumps(_Record.to_dict(ne))  # same bytes on the topic
    assert NodeEvidence.from_dict(ne.to_dict()) == ne

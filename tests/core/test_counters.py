from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convergence.counters import Counters


@dataclass
class Seen(Counters):
    events: int = 0
    dropped: int = 0
    _cursor: int = 0  # private bookkeeping, not a counter


def test_as_dict_reports_fields_in_declaration_order() -> None:
    c = Seen(events=3)
    c.dropped += 2
    out = c.as_dict()
    assert out == {"events": 3, "dropped": 2}
    assert list(out) == ["events", "dropped"]


def test_private_fields_are_left_out() -> None:
    c = Seen(_cursor=99)
    assert "_cursor" not in c.as_dict()
    assert c.as_dict() == {"events": 0, "dropped": 0}


def test_values_come_out_as_plain_ints() -> None:
    c = Seen(events=np.int64(5))  # type: ignore[arg-type]
    out = c.as_dict()
    assert out == {"events": 5, "dropped": 0}
    assert type(out["events"]) is int


def test_as_dict_is_a_snapshot_not_a_view() -> None:
    c = Seen()
    snap = c.as_dict()
    c.events += 1
    snap["dropped"] = 7
    assert snap["events"] == 0 and c.dropped == 0
    assert c.as_dict() == {"events": 1, "dropped": 0}


def test_subclass_of_a_counter_reports_inherited_and_own_fields() -> None:
    @dataclass
    class More(Seen):
        retried: int = 0

    assert More(events=1, retried=4).as_dict() == {"events": 1, "dropped": 0, "retried": 4}


def test_slots_dataclass_counters_are_reported() -> None:
    @dataclass(slots=True)
    class Slotted(Counters):
        sent: int = 0
        acked: int = 0

    assert Slotted(sent=2, acked=1).as_dict() == {"sent": 2, "acked": 1}

from __future__ import annotations

import pytest

from convergence.control import Action, ControlCommand, Target


def test_deterministic_ids_and_round_trip() -> None:
    a = ControlCommand.create("quarantine", Target("station", "s1"), issued_at_s=5.0, ttl_s=10.0)
    b = ControlCommand.create(Action.QUARANTINE, Target("station", "s1"), issued_at_s=5.0, ttl_s=10.0)
    assert a.command_id == b.command_id and a.expires_at_s == 15.0
    assert ControlCommand.from_dict(a.to_dict()) == a
    assert a.expired(15.0) and not a.expired(14.9)


@pytest.mark.parametrize(
    ("target", "hits"),
    [(Target("all"), 3), (Target("region", "eu"), 2), (Target("source_kind", "sensor"), 1),
     (Target("station", "b"), 1)],
)
def test_targeting(target: Target, hits: int) -> None:
    c = ControlCommand.create("resume", target, issued_at_s=0.0, ttl_s=1.0)
    stations = [("a", "osint_news", "eu"), ("b", "sensor", "eu"), ("c", "osint_news", "apac")]
    assert sum(c.applies_to(*s) for s in stations) == hits


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="target type"):
        Target("planet", "x")
    with pytest.raises(ValueError, match="not a valid control command"):
        ControlCommand.from_dict({"action": "dance"})

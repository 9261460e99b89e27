from __future__ import annotations

import pytest

from convergence.control import Action, ControlCommand, Target, validate_params


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


@pytest.mark.parametrize(("action", "params", "needle"), [
    ("burst_mode", {"interval_s": 0}, "interval_s must be a number of seconds > 0"),
    ("burst_mode", {"interval_s": -5}, "interval_s must be a number of seconds > 0"),
    ("set_interval", {"interval_s": float("inf")}, "interval_s must be a number of seconds > 0"),
    ("set_interval", {}, "set_interval needs interval_s"),
    ("set_thresholds", {"surge": float("nan")}, "surge must be a finite number"),
    ("set_thresholds", {"surge": "4"}, "surge must be a finite number"),
    ("set_thresholds", {"surge": True}, "surge must be a finite number"),
    ("set_thresholds", {}, "needs at least one"),
    ("quarantine", {"interval_s": 1}, "quarantine takes no parameters"),
    ("resume", ["x"], "params must be an object"),
])
def test_params_are_checked_everywhere(action: str, params: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        validate_params(action, params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=needle):
        ControlCommand.create(action, Target("all"), issued_at_s=0.0, ttl_s=1.0,
                              params=params)  # type: ignore[arg-type]
    raw = {"command_id": "cmd-x", "action": action, "target": {"type": "all"},
           "issued_at_s": 0.0, "expires_at_s": 1.0, "params": params}
    with pytest.raises(ValueError, match="not a valid control command.*" + needle):
        ControlCommand.from_dict(raw)


def test_valid_params_become_floats() -> None:
    assert validate_params("burst_mode", {}) == {}
    assert validate_params("burst_mode", {"interval_s": 1}) == {"interval_s": 1.0}
    c = ControlCommand.create("set_thresholds", Target("all"), issued_at_s=0.0, ttl_s=1.0,
                              params={"surge": 4})
    assert c.params == {"surge": 4.0} and ControlCommand.from_dict(c.to_dict()) == c

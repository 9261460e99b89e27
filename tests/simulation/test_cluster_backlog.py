"""The cluster benchmark's synthetic backlog: valid station messages in time order, seeded,
the same stream in fewer messages for bigger batches, and the fleet file the workers read."""

from __future__ import annotations

import pytest

from convergence.ground_stations.fleet import loads_fleet
from convergence.simulation.cluster_backlog import BacklogPlan, backlog_messages, fleet_toml
from convergence.wire import decode_each

T0 = 1_800_000_000.0


def test_the_backlog_is_the_demo_fleet_in_valid_station_messages_in_time_order() -> None:
    plan = BacklogPlan(stations=30, seed=5, batch=10, events=3000, t0_s=T0, live_s=5.0,
                       live_episodes=1)
    msgs = list(backlog_messages(plan))
    assert sum(m.n_events for m in msgs) == pytest.approx(3000, rel=0.25)
    assert [m.send_at_s for m in msgs] == sorted(m.send_at_s for m in msgs)
    for m in msgs[:50]:
        good, bad = decode_each(m.value, now_s=T0 + 10_000)
        assert bad == [] and len(good) == m.n_events
        assert {e.station_id for e in good} == {m.key.decode()}
        assert m.first_s <= min(e.event_time_s for e in good) <= m.last_s <= m.send_at_s
        assert m.send_at_s - m.first_s <= plan.poll_s + 1e-6  # a message is one poll interval
    again = list(backlog_messages(plan))
    assert [m.value for m in again] == [m.value for m in msgs]  # seeded
    live = list(backlog_messages(plan, live=True))
    assert live and live[0].first_s >= T0 + plan.backlog_s - 1e-6
    assert live[-1].last_s <= T0 + plan.backlog_s + plan.live_s + plan.poll_s
    genuine = [e for e in plan.scenario().episodes if e.genuine and e.start_s >= plan.backlog_s]
    assert len(genuine) == 1


def test_bigger_batches_are_the_same_stream_in_fewer_messages() -> None:
    small = BacklogPlan(stations=30, seed=5, batch=5, events=4000, t0_s=T0)
    big = BacklogPlan(stations=30, seed=5, batch=50, events=4000, t0_s=T0)
    assert big.poll_s == pytest.approx(10 * small.poll_s)
    n_small = len(list(backlog_messages(small)))
    n_big = len(list(backlog_messages(big)))
    assert n_big < n_small / 4


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch": 0}, "batch"), ({"events": 0}, "events"), ({"rate_scale": 0.0}, "rate_scale")])
def test_a_bad_plan_names_the_bad_value(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BacklogPlan(**kwargs)  # type: ignore[arg-type]


def test_the_workers_fleet_declares_the_rates_the_stations_send_at() -> None:
    plan = BacklogPlan(stations=30, seed=5, rate_scale=4.0)
    declared = {s.station_id: s.info for s in loads_fleet(fleet_toml(plan)).stations}
    assert [i.station_id for i in plan.fleet] == list(declared)
    for info in plan.fleet:
        d = declared[info.station_id]
        assert (d.region, d.group, d.kind) == (info.region, info.group, info.kind)
        assert d.rate_per_s == pytest.approx(4.0 * info.rate_per_s)
